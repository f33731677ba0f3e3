"""The pretrain stage on a handful of rendered hands: weights that the train stage can start from,
a clear error where they do not fit, and an 'off' switch."""

import dataclasses
import json
import os

import numpy as np
import pytest
import torch
import yaml

from pipeline.checkpoint import (
    PRETRAINED_WEIGHTS,
    CheckpointError,
    load_checkpoint,
    load_pretrained_weights,
)
from pipeline.data import concat_splits
from pipeline.params import PretrainParams, TrainParams
from pipeline.pretraining import DISABLED_MARKER, pretrain, rehearsal_split, render_split
from pipeline.sources.synthetic import RANDOM_POSE
from pipeline.training import fit

TRAIN = TrainParams(
    pretrained="none",
    image_size=32,
    epochs=1,
    batch_size=4,
    device="cpu",
    threads=2,
    head="integral",
    loss="l1",
)
PRETRAIN = PretrainParams(
    num_images=6, validation_images=2, width=96, height=72, num_subjects=3, epochs=1, batch_size=4,
    workers=1,
)  # fmt: skip


def test_renders_carry_their_true_landmarks():
    split, left_out = render_split(PRETRAIN, 3, 0, 32, "squash", "train")
    assert left_out == []  # the truth labels every render
    assert split.images.shape == (3, 3, 32, 32) and split.images.dtype == torch.uint8
    assert split.true_landmarks is None  # the truth IS the label here
    xy = split.landmarks[..., :2]
    assert ((xy > 0) & (xy < 1)).all() and (split.landmarks[..., 2] == 0).all()
    again, _ = render_split(PRETRAIN, 3, 0, 32, "squash", "train")
    assert torch.equal(split.images, again.images)  # deterministic
    other, _ = render_split(PRETRAIN, 3, 3, 32, "squash", "validation")
    assert not np.allclose(other.landmarks, split.landmarks)
    # the crop layout: the hand's crop, cut wider by the context, landmarks in the render's units
    crops, _ = render_split(PRETRAIN, 3, 0, 32, "crop", "train", 1.5, 1.25)
    assert crops.images.shape == (3, 3, 40, 40) and crops.squares.shape == (3, 3)
    np.testing.assert_allclose(crops.landmarks, split.landmarks)  # the same hands
    inside = (
        crops.frames().scale[:, None, :] * crops.landmarks[..., :2]
        + crops.frames().offset[:, None, :]
    )
    # the hand fills 1 / (margin * context) of the crop, around its centre
    assert inside.min() > 0.5 - 0.5 / 1.875 - 1e-9 and inside.max() < 0.5 + 0.5 / 1.875 + 1e-9


def test_random_poses_join_the_gestures_and_leave_their_renders_as_they_were():
    only_gestures = dataclasses.replace(PRETRAIN, random_poses=0.0)
    gestures, _ = render_split(only_gestures, 12, 0, 32, "squash", "train")
    mixed, _ = render_split(dataclasses.replace(PRETRAIN, random_poses=0.5), 12, 0, 32, "squash",
                            "train")  # fmt: skip
    is_random = (mixed.table["class_name"] == RANDOM_POSE).to_numpy()
    assert 0 < is_random.sum() < 12
    assert (gestures.table["class_name"] != RANDOM_POSE).all()
    # a render in a gesture is the same hand, byte for byte, whatever the fraction
    assert torch.equal(mixed.images[~is_random], gestures.images[~is_random])
    np.testing.assert_array_equal(mixed.landmarks[~is_random], gestures.landmarks[~is_random])
    # a random pose is another hand: other joints at every such index
    moved = np.abs(mixed.landmarks[is_random] - gestures.landmarks[is_random]).max(axis=(1, 2))
    assert (moved > 0.01).all()
    everything, _ = render_split(dataclasses.replace(PRETRAIN, random_poses=1.0), 4, 0, 32,
                                 "squash", "train")  # fmt: skip
    assert (everything.table["class_name"] == RANDOM_POSE).all()


def test_contact_poses_take_their_share_and_leave_the_other_renders_as_they_were():
    from pipeline.sources.synthetic import CONTACT_POSE

    without, _ = render_split(PRETRAIN, 12, 0, 32, "squash", "train")
    mixed, _ = render_split(dataclasses.replace(PRETRAIN, contact_poses=0.4), 12, 0, 32,
                            "squash", "train")  # fmt: skip
    is_contact = (mixed.table["class_name"] == CONTACT_POSE).to_numpy()
    assert 0 < is_contact.sum() < 12
    assert (without.table["class_name"] != CONTACT_POSE).all()
    assert torch.equal(mixed.images[~is_contact], without.images[~is_contact])
    np.testing.assert_array_equal(mixed.landmarks[~is_contact], without.landmarks[~is_contact])


def test_closeups_show_the_hand_as_a_crop_of_a_close_up_photo_does():
    plain, _ = render_split(dataclasses.replace(PRETRAIN, closeups=0.0), 6, 0, 32, "crop",
                            "train", 1.5, 1.25)  # fmt: skip
    framed = dataclasses.replace(PRETRAIN, closeups=1.0)
    close, _ = render_split(framed, 6, 0, 32, "crop", "train", 1.5, 1.25)
    np.testing.assert_array_equal(close.landmarks, plain.landmarks)  # the same hands
    assert (close.images <= plain.images).all()  # the photo's edges only take pixels away

    def black(split):  # the fraction of each crop that is black, past the picture's edges
        return (split.images == 0).all(dim=1).flatten(1).float().mean(dim=1)

    # the hand fills the photo (0.95-1.6 of its size) and the crop is 1.875 of it: black around
    assert (black(close) > black(plain) + 0.2).all()
    some, _ = render_split(dataclasses.replace(PRETRAIN, closeups=0.5), 6, 0, 32, "crop",
                           "train", 1.5, 1.25)  # fmt: skip
    is_close = [not torch.equal(a, b) for a, b in zip(some.images, plain.images, strict=True)]
    assert 0 < sum(is_close) < 6  # the others are the plain renders, byte for byte
    for index, close_up in enumerate(is_close):
        if close_up:
            assert torch.equal(some.images[index], close.images[index])


def test_rehearsal_renders_join_the_train_split_without_depth(tmp_path):
    crop = dataclasses.replace(TRAIN, input_layout="crop")
    rehearsed = rehearsal_split(PRETRAIN, crop, 4)
    assert rehearsed.images.shape == (4, 3, 40, 40)  # cut as training crops: context 1.25
    assert np.isnan(rehearsed.landmarks[..., 2]).all()  # no depth to learn
    assert np.isfinite(rehearsed.landmarks[..., :2]).all()
    assert rehearsed.presence.all() and rehearsed.teaches_presence.all()
    np.testing.assert_array_equal(rehearsed.true_landmarks, rehearsed.landmarks[..., :2])
    # the renders after pre-training's own (6 + 2), not those again
    pretrained_on, _ = render_split(PRETRAIN, 8, 0, 32, "crop", "train", 1.5, 1.25)
    after, _ = render_split(PRETRAIN, 4, 8, 32, "crop", "train", 1.5, 1.25)
    assert torch.equal(rehearsed.images, after.images)
    assert not any(torch.equal(rehearsed.images[0], image) for image in pretrained_on.images)

    # joined to a split of the data set's kind (other renders stand for it), with its weights
    data_set, _ = render_split(PRETRAIN, 6, 50, 32, "crop", "train", 1.5, 1.25)
    data_set.weights = np.full(6, 2.0)
    joined = concat_splits(data_set, rehearsed)
    assert len(joined) == 10 and joined.images.shape == (10, 3, 40, 40)
    np.testing.assert_array_equal(joined.weights, [2.0] * 6 + [1.0] * 4)
    np.testing.assert_array_equal(joined.landmarks[6:], rehearsed.landmarks)
    validation, _ = render_split(PRETRAIN, 2, 60, 32, "crop", "validation", 1.5)
    result = fit(joined, validation, crop, tmp_path / "student", log=lambda _: None)
    assert np.isfinite(result.best_val["mpjpe_px"])  # NaN depth did not reach the weights
    with pytest.raises(ValueError, match="to a squash one"):
        concat_splits(joined, render_split(PRETRAIN, 2, 0, 32, "squash", "train")[0])


def test_pretrain_stage_writes_weights_the_train_stage_starts_from(tmp_path, monkeypatch):
    from stages import pretrain as stage

    monkeypatch.chdir(tmp_path)
    params = {"pretrain": dataclasses.asdict(PRETRAIN), "train": dataclasses.asdict(TRAIN)}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    stage.main([])
    weights = load_pretrained_weights(PRETRAINED_WEIGHTS, PRETRAIN, TRAIN)
    checkpoint = load_checkpoint(PRETRAINED_WEIGHTS)
    assert checkpoint["train_params"]["z_weight"] == 0  # renders have no depth

    messages = []
    tuned = dataclasses.replace(TRAIN, pretrained="synthetic")
    # crops of other rendered hands stand for the teacher-labelled training crops
    margin, context = TRAIN.crop_margin, TRAIN.crop_context
    crops, _ = render_split(PRETRAIN, 6, 50, 32, "crop", "train", margin, context)
    validation, _ = render_split(PRETRAIN, 2, 60, 32, "crop", "validation", margin)
    fit(crops, validation, tuned, tmp_path / "student", log=messages.append,
        initial_weights=weights)  # fmt: skip
    assert any("initial weights:" in m for m in messages)
    # a resumed run must start from the same initial weights: they are in the fingerprint
    changed = {k: v + 1 if v.is_floating_point() else v for k, v in weights.items()}
    messages.clear()
    fit(crops, validation, tuned, tmp_path / "student", log=messages.append,
        initial_weights=changed)  # fmt: skip
    assert any("training from scratch" in m for m in messages)

    with pytest.raises(CheckpointError, match="head differ"):
        load_pretrained_weights(
            PRETRAINED_WEIGHTS, PRETRAIN, dataclasses.replace(TRAIN, head="simcc")
        )
    with pytest.raises(CheckpointError, match="epochs differ"):
        load_pretrained_weights(PRETRAINED_WEIGHTS, dataclasses.replace(PRETRAIN, epochs=2), TRAIN)
    # execution-only keys do not make it another run
    load_pretrained_weights(PRETRAINED_WEIGHTS, PRETRAIN, dataclasses.replace(TRAIN, threads=1))

    # off: a marker, and train.pretrained=synthetic says how to switch it on
    params["pretrain"]["num_images"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    stage.main([])
    assert not PRETRAINED_WEIGHTS.exists()
    assert "off" in json.loads(DISABLED_MARKER.read_text())["pretraining"]
    with pytest.raises(CheckpointError, match="pretrain.num_images"):
        load_pretrained_weights(PRETRAINED_WEIGHTS, PRETRAIN, TRAIN)
    assert os.path.isdir(tmp_path / "models" / "pretrain")


def test_pretraining_uses_the_train_recipe_with_its_own_schedule():
    from pipeline.params import pretrain_params_for

    params = pretrain_params_for(PRETRAIN, dataclasses.replace(TRAIN, pretrained="synthetic"))
    assert (params.epochs, params.lr, params.batch_size) == (1, PRETRAIN.lr, 4)
    assert params.pretrained == "none" and params.z_weight == 0 and params.head == "integral"
    assert pretrain is not None
    # one process, so a DDP train section does not impose its batch minimum on pre-training
    ddp_train = dataclasses.replace(TRAIN, processes=4, batch_size=64)
    assert pretrain_params_for(PRETRAIN, ddp_train).processes == 1


def test_teacher_labels_are_the_teachers_answer_and_what_it_misses_is_counted(
    teacher_model, tmp_path
):
    from pipeline.params import LandmarksParams
    from pipeline.pretraining import TEACHER_FOUND_NONE, TEACHER_FOUND_SEVERAL
    from pipeline.sources.synthetic import GESTURE_CLASSES

    # renders big enough for the palm detector, every gesture; enough for two worker processes
    settings = dataclasses.replace(
        PRETRAIN, width=320, height=240, labels="teacher", random_poses=0.5
    )
    count = 32
    assert count // 16 >= 2 and count >= len(GESTURE_CLASSES)
    teacher = (teacher_model, LandmarksParams())
    labelled, left_out = render_split(settings, count, 0, 32, "squash", "train", teacher=teacher)
    truth, _ = render_split(settings, count, 0, 32, "squash", "train")
    # every render is labelled or left out, with its name and why
    assert len(labelled) + len(left_out) == count and len(labelled) >= count // 2
    names = set(labelled.table.path)
    assert names.isdisjoint(r["render"] for r in left_out)
    assert all(r["reason"] in (TEACHER_FOUND_NONE, TEACHER_FOUND_SEVERAL) for r in left_out)
    # the labels are the teacher's reading of the same hands: not the truth, but near it
    same = truth.table.path.isin(names).to_numpy(copy=True)
    assert torch.equal(labelled.images, truth.images[torch.from_numpy(same)])
    xy, true_xy = labelled.landmarks[..., :2], truth.landmarks[same][..., :2]
    hand_size = (true_xy.max(1) - true_xy.min(1)).max(1)
    error = np.linalg.norm(xy - true_xy, axis=-1).mean(1) / hand_size
    assert (error > 0).all() and np.median(error) < 0.25
    assert (labelled.landmarks[..., 2] == 0).all()  # depth is not pretrained
    # worker processes (each with its own landmarker) give the same labels as this one
    pooled, pooled_left_out = render_split(
        dataclasses.replace(settings, workers=2), count, 0, 32, "squash", "train",
        teacher=teacher,
    )  # fmt: skip
    assert pooled_left_out == left_out
    np.testing.assert_array_equal(pooled.landmarks, labelled.landmarks)

    # the stage's report counts them, per split
    metrics_path = tmp_path / "pretrain.json"
    pretrain(
        dataclasses.replace(settings, num_images=count, validation_images=2),
        TRAIN, tmp_path / "out", log=lambda _: None, teacher_model=teacher_model,
        metrics_path=metrics_path,
    )  # fmt: skip
    report = json.loads(metrics_path.read_text())
    assert report["labels"] == "teacher"
    in_random_poses = int((labelled.table["class_name"] == RANDOM_POSE).sum())
    assert 0 < in_random_poses < len(labelled)  # about half the renders
    assert report["train"] == {
        "rendered": count, "labelled": len(labelled), "left_out": len(left_out),
        "labelled_in_random_poses": in_random_poses,
    }  # fmt: skip
    assert len(report["renders_left_out"]) == len(left_out) + report["validation"]["left_out"]


def test_too_few_teacher_labels_stop_the_stage_saying_why(teacher_model, tmp_path):
    from pipeline.params import LandmarksParams
    from pipeline.pretraining import TEACHER_FOUND_NONE, PretrainingError

    # a teacher that trusts nothing finds no hand in any render
    blind = LandmarksParams(min_hand_detection_confidence=1.0, min_hand_presence_confidence=1.0)
    settings = dataclasses.replace(PRETRAIN, num_images=4, validation_images=1, labels="teacher")
    metrics_path = tmp_path / "pretrain.json"
    with pytest.raises(PretrainingError, match="only 0 of the training renders have a label"):
        pretrain(
            settings, TRAIN, tmp_path / "out", log=lambda _: None, landmarks=blind,
            teacher_model=teacher_model, metrics_path=metrics_path,
        )  # fmt: skip
    report = json.loads(metrics_path.read_text())
    assert [r["reason"] for r in report["renders_left_out"]] == [TEACHER_FOUND_NONE] * 5
    assert not (tmp_path / "out" / "best.pt").exists()
