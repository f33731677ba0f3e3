"""The top-down student on tiny data: training samples (oracle crops, crops that miss the hand,
empty frames), both passes, presence, tracking through a video the test writes, the evaluate
stage's end-to-end and oracle-crop numbers, and the ONNX export of both networks."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.checkpoint import BEST, CheckpointError, load_checkpoint, set_crop_margin
from pipeline.crops import crop_image, crop_square, square_corners
from pipeline.data import TEACHES_PRESENCE
from pipeline.evaluation import calibrate_finder_margin, evaluate_outputs, run_student
from pipeline.export import export_student
from pipeline.inference import Network, flip_test_choice, load_networks_from
from pipeline.keypoints import NUM_JOINTS
from pipeline.model import ModelConfig
from pipeline.params import FinderParams, TrainParams, finder_params_for
from pipeline.predict import predict_path
from pipeline.samples import (
    WIDE_ZOOM,
    finder_negatives,
    hand_samples,
    known_empty,
    oracle_squares,
    split_samples,
    training_splits,
)
from pipeline.schema import DATASET, LANDMARK_COLUMNS, TRUTH_COLUMNS
from pipeline.student import (
    FINDER_VETO,
    MARGIN_SCALE_LIMITS,
    TopDownStudent,
    _batch,
    find_squares,
    keep_surest_pass,
    load_student,
    square_settled,
    squares_from_landmarks,
)
from pipeline.training import fit
from tests.conftest import noise_image, write_png
from tests.tiny import skeleton_photos

WIDTH, HEIGHT = 160, 120
TRAIN = TrainParams(
    pretrained="none", image_size=32, epochs=2, batch_size=8, device="cpu", threads=2
)
FINDER = FinderParams(image_size=32, epochs=2, batch_size=8)


def photo_table(folder, count: int, empty: int, seed: int) -> tuple[pd.DataFrame, list]:
    """Skeleton photos with their landmarks as the teacher's, and empty frames (no hand)."""
    photos, points = skeleton_photos(count, seed=seed, width=WIDTH, height=HEIGHT)
    images = list(photos) + [noise_image(100 + i, HEIGHT, WIDTH) // 3 for i in range(empty)]
    rows = []
    for i, rgb in enumerate(images):
        write_png(folder / f"frame{seed}-{i:02d}.png", rgb)
        rows.append({"path": f"frame{seed}-{i:02d}.png", "width": WIDTH, "height": HEIGHT,
                     "class_name": "A" if i < count else "none", "num_hands": int(i < count),
                     "handedness_score": 0.9 if i < count else np.nan})  # fmt: skip
    table = pd.DataFrame(rows)
    landmarks = np.full((len(images), 21, 3), np.nan)
    landmarks[:count, :, :2] = points / (WIDTH, HEIGHT)
    landmarks[:count, :, 2] = 0.0
    table[LANDMARK_COLUMNS] = landmarks.reshape(len(images), -1)
    table["has_hand"] = table["num_hands"] > 0
    return table, images


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("top-down")
    parts = []
    for split, (count, empty, seed) in {
        "train": (16, 4, 1), "validation": (4, 2, 2), "test": (6, 2, 3)
    }.items():  # fmt: skip
        table, _ = photo_table(root, count, empty, seed)
        parts.append(table.assign(split=split))
    table = pd.concat(parts, ignore_index=True)
    finder_params = finder_params_for(FINDER, TRAIN)
    frames = training_splits(table, root, finder_params, "frame")
    fit(*frames, finder_params, root / "finder", log=lambda _: None, role="finder")
    crops = training_splits(table, root, TRAIN, "hand")
    fit(*crops, TRAIN, root / "student", log=lambda _: None)
    return root, table


@pytest.fixture(scope="module")
def student(trained) -> TopDownStudent:
    root, _ = trained
    return load_student(root / "student" / BEST, "cpu", finder=root / "finder" / BEST)


def test_training_samples_are_oracle_crops_misses_and_empty_frames(tmp_path):
    table, _ = photo_table(tmp_path, 12, 3, seed=5)
    samples = hand_samples(table, margin=1.5, miss_fraction=0.5, seed=0)
    oracle = samples[samples["sample"] == "oracle"]
    assert len(oracle) == 12 and oracle["presence"].all()
    points = table[LANDMARK_COLUMNS].to_numpy().reshape(-1, 21, 3)[:12, :, :2] * (WIDTH, HEIGHT)
    np.testing.assert_allclose(
        oracle[["crop_x", "crop_y", "crop_side"]].to_numpy(), crop_square(points, 1.5)
    )
    empty = samples[samples["sample"] == "empty"]
    assert len(empty) == 3 and not empty["presence"].any()
    misses = samples[samples["sample"] == "miss"]
    assert 1 <= len(misses) <= 11 and not misses["presence"].any()
    for _, miss in misses.iterrows():  # a miss shows none of its hand
        hand = points[int(miss["path"].split("-")[1][:2])]
        x0, y0, x1, y1 = square_corners(miss[["crop_x", "crop_y", "crop_side"]].to_numpy(float))
        inside = (hand[:, 0] > x0) & (hand[:, 0] < x1) & (hand[:, 1] > y0) & (hand[:, 1] < y1)
        assert not inside.any()
    again = hand_samples(table, margin=1.5, miss_fraction=0.5, seed=0)
    pd.testing.assert_frame_equal(samples, again)  # the same every time


def test_wide_crops_hold_the_whole_hand_small_and_leave_the_other_samples_alone(tmp_path):
    table, _ = photo_table(tmp_path, 12, 3, seed=5)
    plain = hand_samples(table, margin=1.5, miss_fraction=0.5, seed=0)
    samples = hand_samples(table, margin=1.5, miss_fraction=0.5, seed=0, wide_fraction=0.6)
    wide = samples[samples["sample"] == "wide"]
    assert 1 <= len(wide) <= 11 and wide["presence"].all()
    # they teach the landmarks, not the presence; every other sample teaches both
    assert not wide[TEACHES_PRESENCE].any()
    assert samples.loc[samples["sample"] != "wide", TEACHES_PRESENCE].all()
    # the oracle, miss and empty samples are exactly those made without wide ones
    assert set(samples["sample"]) == set(plain["sample"]) | {"wide"}
    pd.testing.assert_frame_equal(
        samples[samples["sample"] != "wide"].reset_index(drop=True), plain
    )
    points = table[LANDMARK_COLUMNS].to_numpy().reshape(-1, 21, 3)[:12, :, :2] * (WIDTH, HEIGHT)
    low, high = WIDE_ZOOM
    for _, crop in wide.iterrows():
        hand = points[int(crop["path"].split("-")[1][:2])]
        square = crop[["crop_x", "crop_y", "crop_side"]].to_numpy(float)
        zoom = square[2] / crop_square(hand[None], 1.5)[0, 2]
        assert low - 1e-9 <= zoom <= high + 1e-9
        x0, y0, x1, y1 = square_corners(square)
        assert (hand[:, 0] >= x0).all() and (hand[:, 0] <= x1).all()
        assert (hand[:, 1] >= y0).all() and (hand[:, 1] <= y1).all()
    # off centre: not every wide crop is centred on its hand's box
    centres = np.array([crop_square(points[int(p.split("-")[1][:2])][None], 1.5)[0, :2]
                        for p in wide["path"]])  # fmt: skip
    assert np.abs(wide[["crop_x", "crop_y"]].to_numpy(float) - centres).max() > 1.0
    # validation measures the crop model where it must be precise: no wide crops there
    params = replace(TRAIN, wide_fraction=0.6)
    assert "wide" not in set(split_samples(table, params, "hand", 1, training=False)["sample"])
    assert "wide" in set(split_samples(table, params, "hand")["sample"])


def _rendered(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` as a rendered data set: its truth the teacher's landmarks (none drawn where the
    teacher found no hand)."""
    truth = table[LANDMARK_COLUMNS].to_numpy().reshape(len(table), 21, 3)[..., :2]
    truth_table = pd.DataFrame(truth.reshape(len(table), -1), columns=TRUTH_COLUMNS)
    return pd.concat([table.reset_index(drop=True), truth_table], axis=1)


def _photos(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` as photos: truth columns, empty, as the landmarks stage writes a photo's row."""
    empty = pd.DataFrame(np.nan, index=range(len(table)), columns=TRUTH_COLUMNS)
    rows = table.drop(columns=TRUTH_COLUMNS, errors="ignore").reset_index(drop=True)
    return pd.concat([rows, empty], axis=1)


def test_only_a_rendered_data_set_knows_its_empty_frames(tmp_path):
    rendered = _rendered(photo_table(tmp_path, 4, 2, seed=5)[0]).assign(**{DATASET: "renders"})
    photos = _photos(photo_table(tmp_path, 3, 2, seed=6)[0]).assign(**{DATASET: "photos"})
    both = pd.concat([rendered, photos], ignore_index=True)
    # the renders' two frames without a drawn hand; not the photos the teacher found none in
    expected = np.array([False] * 4 + [True] * 2 + [False] * 5)
    np.testing.assert_array_equal(known_empty(both), expected)
    np.testing.assert_array_equal(known_empty(rendered.drop(columns=DATASET)), expected[:6])
    assert not known_empty(photos.drop(columns=DATASET)).any()
    assert not known_empty(photos.drop(columns=TRUTH_COLUMNS)).any()


def test_finder_negatives_are_its_squares_on_the_known_empty_frames(trained):
    root, table = trained
    train = _rendered(table[table["split"] == "train"])
    finder = load_networks_from(root / "finder" / BEST, "cpu")["landmarks"]
    negatives = finder_negatives(finder, train, root)
    empty = train[~train["has_hand"]].reset_index(drop=True)
    assert list(negatives["path"]) == list(empty["path"])  # 4 frames, no hand drawn
    assert not negatives["presence"].any() and negatives[TEACHES_PRESENCE].all()
    assert set(negatives["sample"]) == {"finder_empty"}
    rgbs = [cv2.cvtColor(cv2.imread(str(root / p)), cv2.COLOR_BGR2RGB) for p in empty["path"]]
    squares, _ = find_squares(finder, rgbs)
    np.testing.assert_array_equal(negatives[["crop_x", "crop_y", "crop_side"]].to_numpy(), squares)
    # photos: the teacher's empty frames may show a hand, so none of them is a negative
    assert finder_negatives(finder, _photos(train), root).empty
    # the train split takes them as more samples without a hand; validation is unchanged
    rows = pd.concat([train, _rendered(table[table["split"] == "validation"])], ignore_index=True)
    plain_train, plain_validation = training_splits(rows, root, TRAIN, "hand")
    hard_train, hard_validation = training_splits(rows, root, TRAIN, "hand", None, negatives)
    assert len(hard_train) == len(plain_train) + 4
    assert (~hard_train.presence).sum() == (~plain_train.presence).sum() + 4
    assert len(hard_validation) == len(plain_validation)
    assert (hard_train.images[: len(plain_train)] == plain_train.images).all()


def test_both_passes_find_the_hand_then_read_it_in_the_crop(trained, student):
    root, table = trained
    test = table[table["split"] == "test"].reset_index(drop=True)
    rgbs = [cv2.cvtColor(cv2.imread(str(root / p)), cv2.COLOR_BGR2RGB) for p in test["path"]]
    result = student.predict_images(rgbs, batch_size=3)
    assert result.landmarks.shape == (len(test), 21, 3) and result.presence.shape == (len(test),)
    # the crop is the finder's landmarks' square, and the landmarks are the crop pass on it
    # (in the same batches: a CPU's kernels may round a batch of 3 and one of 8 differently)
    finder_squares, finder_presence = student.find(rgbs, batch_size=3)
    np.testing.assert_allclose(result.squares, finder_squares)
    landmarks, crop_presence = student.crop_pass(rgbs, finder_squares, batch_size=3)
    np.testing.assert_allclose(result.landmarks[..., 0], landmarks[..., 0] * WIDTH, atol=1e-9)
    # the finder overrules the crop pass only where it is sure there is no hand
    expected = np.where(finder_presence < FINDER_VETO, finder_presence, crop_presence)
    np.testing.assert_allclose(result.presence, expected)
    assert ((result.presence >= 0) & (result.presence <= 1)).all()


def test_the_finders_margin_is_calibrated_to_the_teachers_squares(trained, tmp_path):
    root, table = trained
    validation = table[table["split"] == "validation"]
    finder_file = tmp_path / "finder.pt"
    shutil.copy(root / "finder" / BEST, finder_file)
    before = load_student(root / "student" / BEST, "cpu", finder=finder_file)
    calibration = calibrate_finder_margin(before.finder, validation, root, TRAIN.crop_margin)
    hands = validation[validation["has_hand"]].reset_index(drop=True)
    rgbs = [cv2.cvtColor(cv2.imread(str(root / p)), cv2.COLOR_BGR2RGB) for p in hands["path"]]
    old, _ = before.find(rgbs)
    # the median ratio of the teacher's squares to the finder's, held within the limits
    oracle = oracle_squares(hands, TRAIN.crop_margin)
    assert calibration["frames"] == len(hands) == 4
    assert calibration["measured"] == pytest.approx(np.median(oracle[:, 2] / old[:, 2]))
    assert calibration["scale"] == pytest.approx(
        np.clip(calibration["measured"], *MARGIN_SCALE_LIMITS)
    )
    assert calibration["crop_margin"] == pytest.approx(TRAIN.crop_margin * calibration["scale"])
    set_crop_margin(finder_file, calibration["crop_margin"], calibration)
    assert load_checkpoint(finder_file)["margin_calibration"] == calibration
    after = load_student(root / "student" / BEST, "cpu", finder=finder_file)
    assert after.finder.crop_margin == pytest.approx(calibration["crop_margin"])
    assert after.margin == before.margin == TRAIN.crop_margin  # the crop passes' own margin
    new, _ = after.find(rgbs)
    np.testing.assert_allclose(new[:, :2], old[:, :2])  # the same centres, wider (or narrower)
    unclamped = old[:, 2] > 1.0  # crop_square's sides are at least 1 px
    np.testing.assert_allclose(new[unclamped, 2], old[unclamped, 2] * calibration["scale"])
    wider = calibration["scale"] >= 1
    assert ((new[:, 2] >= old[:, 2]) if wider else (new[:, 2] <= old[:, 2])).all()
    # the export carries it to the ONNX finder
    export_student(root / "student" / BEST, tmp_path / "export", finder_file)
    onnx = load_student(tmp_path / "export" / "student.onnx", "cpu")
    assert onnx.finder.crop_margin == pytest.approx(calibration["crop_margin"])


def test_the_last_crop_pass_counts_unless_it_lost_the_hand():
    landmarks = [np.full((3, 21, 3), float(k)) for k in range(3)]  # pass k says k everywhere
    squares = [np.full((3, 3), 10.0 * k) for k in range(3)]
    presence = [np.array([0.9, 0.8, 0.2]), np.array([0.7, 0.3, 0.1]), np.array([0.6, 0.1, 0.05])]
    picked, sure, where = keep_surest_pass(list(zip(landmarks, presence, squares)), 0.5)
    # image 0: the last pass still sees the hand; 1 and 2: lost, the surest pass (the first)
    np.testing.assert_array_equal(picked[:, 0, 0], [2, 0, 0])
    np.testing.assert_array_equal(sure, [0.6, 0.8, 0.2])
    np.testing.assert_array_equal(where[:, 0], [20, 0, 0])


def test_image_mode_reports_the_pass_it_keeps(trained):
    root, table = trained
    test = table[table["split"] == "test"].reset_index(drop=True)
    rgbs = [cv2.cvtColor(cv2.imread(str(root / p)), cv2.COLOR_BGR2RGB) for p in test["path"]]
    student = load_student(root / "student" / BEST, "cpu", finder=root / "finder" / BEST, refine=2)
    student.settle = 0.0  # every image gets both refinements (the settling: the test below)
    width, height = np.full(len(rgbs), WIDTH), np.full(len(rgbs), HEIGHT)
    squares, _ = student.find(rgbs, batch_size=4)
    passes = []
    for _ in range(3):  # the first crop pass and two refinements, in predict_images' batches
        landmarks, presence = student.crop_pass(rgbs, squares, batch_size=4)
        passes.append((landmarks, presence, squares))
        squares = squares_from_landmarks(landmarks, width, height, student.margin)
    last = passes[-1][1]
    for min_presence in (0.0, float(np.median(last)), float(last.max()) + 1e-3):
        student.min_presence = min_presence
        result = student.predict_images(rgbs, batch_size=4)
        landmarks, _, squares = keep_surest_pass(passes, min_presence)
        np.testing.assert_array_equal(result.squares, squares)
        np.testing.assert_array_equal(result.landmarks[..., 1], landmarks[..., 1] * HEIGHT)


def test_the_settling_tolerance_runs_every_refinement_or_only_the_first(trained):
    root, table = trained
    test = table[table["split"] == "test"].reset_index(drop=True)
    rgbs = [cv2.cvtColor(cv2.imread(str(root / p)), cv2.COLOR_BGR2RGB) for p in test["path"]]
    student = load_student(root / "student" / BEST, "cpu", finder=root / "finder" / BEST, refine=3)
    student.settle = 0.0
    every = student.predict_images(rgbs, batch_size=4)
    assert (every.crop_passes == 4).all()
    student.settle = np.inf  # every square counts as settled: the first refinement alone
    student.min_presence = 0.0  # the last pass counts
    two = student.predict_images(rgbs, batch_size=4)
    assert (two.crop_passes == 2).all()
    squares, _ = student.find(rgbs, batch_size=4)
    landmarks, _ = student.crop_pass(rgbs, squares, batch_size=4)
    squares = squares_from_landmarks(
        landmarks, np.full(len(rgbs), WIDTH), np.full(len(rgbs), HEIGHT), student.margin
    )
    landmarks, _ = student.crop_pass(rgbs, squares, batch_size=4)
    np.testing.assert_array_equal(two.squares, squares)
    np.testing.assert_array_equal(two.landmarks[..., 0], landmarks[..., 0] * WIDTH)


class HalfwayNetwork(Network):
    """A stand-in network for the refinement loop alone: on a crop of image k (a picture of the
    value k, ``widths[k]`` wide) it returns landmarks whose square lies halfway from the crop's
    square to ``target``, so each pass halves the distance, as a network that sees part of the
    hand and points towards the rest would."""

    def __init__(self, target: tuple[float, float, float], widths: list[int], margin=1.5):
        super().__init__(Path("halfway"), SimpleNamespace(image_size=16), None, 0, "landmarks",
                         margin)  # fmt: skip
        self.target, self.widths = np.array(target), np.array(widths, np.float64)

    def predict(self, images, frames, batch_size=32):
        image = images[:, 0, images.shape[2] // 2, images.shape[3] // 2].numpy()
        width = self.widths[image]
        side = width / frames.scale[:, 0]  # crop_frames, inverted
        height = frames.scale[:, 1] * side
        shown = np.column_stack([(0.5 - frames.offset) * side[:, None], side])
        following = (shown + self.target) / 2
        spread = np.linspace(-0.5, 0.5, NUM_JOINTS) * following[:, 2:] / self.crop_margin
        x, y = following[:, :1] + spread, following[:, 1:2] + spread / 2
        landmarks = np.stack([x / width[:, None], y / height[:, None], np.zeros_like(x)], -1)
        return landmarks, np.full(len(images), 0.9)


def test_refinement_stops_once_the_square_settles():
    target = (40.0, 30.0, 24.0)
    sizes = [(160, 120), (80, 60), (64, 48), (100, 75)]
    network = HalfwayNetwork(target, [w for w, _ in sizes])
    student = TopDownStudent(network, network, min_presence=0.5, refine=4)
    student.settle = 0.05
    rgbs = [np.full((h, w, 3), k, np.uint8) for k, (w, h) in enumerate(sizes)]
    result = student.predict_images(rgbs, batch_size=4)
    for (w, h), passes, square in zip(sizes, result.crop_passes, result.squares):
        shown = (np.array([w / 2, h / 2, max(w, h)]) + target) / 2  # the finder's square
        expected = 1
        while expected < 5:  # the first crop pass and up to 4 refinements
            following = (shown + target) / 2
            # the first refinement runs whatever the change (the crop model's own square)
            if expected > 1 and square_settled(shown[None], following[None], 0.05)[0]:
                break
            shown, expected = following, expected + 1
        assert passes == expected
        np.testing.assert_allclose(square, shown)
    assert len(set(result.crop_passes)) > 1  # the images settle after different passes
    student.settle = 0.0
    assert (student.predict_images(rgbs, batch_size=4).crop_passes == 5).all()


def test_square_settled_measures_the_centre_by_the_side_and_the_side_by_its_factor():
    previous = np.array([[100.0, 100.0, 50.0]] * 4)
    following = np.array(
        [[102.0, 100.0, 50.0], [103.0, 100.0, 50.0], [100.0, 100.0, 52.0], [100.0, 100.0, 53.0]]
    )
    # 2/50 = 0.04 < 0.05; 3/50 = 0.06; log(52/50) = 0.039; log(53/50) = 0.058
    np.testing.assert_array_equal(
        square_settled(previous, following, 0.05), [True, False, True, False]
    )


def test_evaluation_reports_end_to_end_oracle_crop_and_presence(trained, student):
    root, table = trained
    test = table[table["split"] == "test"]
    outputs = run_student(student, test, root, 4)
    evaluation = evaluate_outputs(outputs, 0.5)
    metrics = evaluation.metrics
    assert metrics["images"] == 8 and metrics["images_with_hand"] == 6
    assert {"student_vs_teacher", "oracle_crop", "presence"} <= set(metrics)
    for key in ("presence_recall", "presence_precision", "no_hand_agreement"):
        assert key in metrics["presence"]
    # the oracle crop is the teacher's landmarks' square, read by the same crop pass
    hands = test[test["has_hand"]].reset_index(drop=True)
    rgbs = [cv2.cvtColor(cv2.imread(str(root / p)), cv2.COLOR_BGR2RGB) for p in hands["path"]]
    teacher = hands[LANDMARK_COLUMNS].to_numpy().reshape(-1, 21, 3)
    squares = squares_from_landmarks(teacher, hands["width"], hands["height"], TRAIN.crop_margin)
    oracle, _ = student.crop_pass(rgbs, squares)
    # (float32 kernels round batches of other sizes differently: far below a pixel)
    np.testing.assert_allclose(outputs.oracle[test["has_hand"].to_numpy()], oracle, atol=1e-6)
    assert "oracle_crop_vs_teacher" in evaluation.pck_curves.columns


def test_score_reports_the_oracle_crop_as_the_evaluate_stage_does(
    student, digits_root, teacher_model, tmp_path, capsys
):
    """``hand-landmarks score`` on real photos: beside end to end, the landmark network on the
    teacher's crop, the same numbers as the evaluate stage's oracle crop of those images."""
    from pipeline.cli import main
    from pipeline.metrics import compare_landmarks
    from pipeline.scoring import score_folder

    folder = tmp_path / "digits"
    for class_name, name in (("0", "IMG_1118.JPG"), ("5", "IMG_1123.JPG"), ("5", "IMG_1133.JPG")):
        (folder / class_name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(digits_root / class_name / name, folder / class_name / name)
    cache = tmp_path / "cache"
    result = score_folder(student, folder, teacher_model, cache_dir=cache, progress=False)
    report = result.report
    assert report["scored"] >= 2 and report["oracle_crop"] is not None
    assert report["oracle_crop"] != report["student_vs_teacher"]  # no finder, no refinement
    labels = result.labels.table
    detected = labels[labels["num_hands"] > 0].reset_index(drop=True)
    detected = detected.assign(has_hand=True)
    outputs = run_student(student, detected, folder, 4)
    width, height = detected["width"].to_numpy(float), detected["height"].to_numpy(float)
    teacher = detected[LANDMARK_COLUMNS].to_numpy(float).reshape(-1, 21, 3)
    evaluated = compare_landmarks(outputs.oracle, teacher, width, height)
    for key, value in report["oracle_crop"].items():
        assert value == pytest.approx(evaluated[key], abs=1e-4), key
    # and the command line prints it
    argv = ["score", str(student.path), str(folder), "--teacher", str(teacher_model)]
    finder = ["--finder", str(Path(student.path).parent.parent / "finder" / BEST)]
    options = ["--json", str(tmp_path / "score.json"), "--cache-dir", str(cache), "--no-progress"]
    assert main([*argv, *finder, *options]) == 0
    assert "on the teacher's crop (no finder): PCK@0.05/0.1/0.2" in capsys.readouterr().out


def test_empty_frame_agreement_only_where_the_truth_says_what_is_drawn(trained, student):
    """Rendered frames know which are empty; photos (truth columns empty) are not counted as
    empty frames (they were, reading 0.05 on the digit photos, every one of which has a hand)."""
    root, table = trained
    test = table[table["split"] == "test"].reset_index(drop=True)
    outputs = run_student(student, test, root, 4)

    def with_truth(values: np.ndarray) -> pd.DataFrame:
        truth_table = pd.DataFrame(values, columns=TRUTH_COLUMNS)
        return pd.concat([test.drop(columns=TRUTH_COLUMNS, errors="ignore"), truth_table], axis=1)

    photos = with_truth(np.full((len(test), len(TRUTH_COLUMNS)), np.nan))
    photo_metrics = evaluate_outputs(replace(outputs, table=photos), 0.5).metrics["presence"]
    assert "no_hand_agreement_empty_frames" not in photo_metrics
    assert "teacher_missed_drawn_hands" not in photo_metrics
    # rendered: the teacher's hands are drawn, and so is the first frame it found none in
    truth = test[LANDMARK_COLUMNS].to_numpy().reshape(-1, 21, 3)[..., :2].reshape(len(test), -1)
    missed_by_teacher = np.flatnonzero(~test["has_hand"].to_numpy())[0]
    truth[missed_by_teacher] = 0.5
    rendered = with_truth(truth)
    rendered_metrics = evaluate_outputs(replace(outputs, table=rendered), 0.5).metrics["presence"]
    empty = ~np.isfinite(truth).all(axis=1)
    says_no_hand = outputs.presence[empty] < 0.5
    assert rendered_metrics["teacher_missed_drawn_hands"] == 1
    assert rendered_metrics["no_hand_agreement_empty_frames"] == pytest.approx(says_no_hand.mean())


def test_empty_frames_of_renders_beside_photos_are_the_renders_alone(trained, student):
    """A split of rendered frames and photos: the photos' empty truth columns say nothing, so
    they are not counted as empty frames (the overall figure of a multi-source run)."""
    root, table = trained
    test = table[table["split"] == "test"].reset_index(drop=True)
    outputs = run_student(student, test, root, 4)
    photos = _photos(test).assign(**{DATASET: "photos"})
    both = pd.concat([_rendered(test).assign(**{DATASET: "renders"}), photos], ignore_index=True)
    # of the renders' two empty frames the first is called "no hand", the second "hand"; every
    # photo "hand"
    empty = np.flatnonzero(~test["has_hand"].to_numpy())
    presence = np.ones(len(both))
    presence[empty[0]] = 0.0
    doubled = replace(
        outputs,
        table=both,
        landmarks=np.concatenate([outputs.landmarks] * 2),
        presence=presence,
        squares=np.concatenate([outputs.squares] * 2),
        oracle=np.concatenate([outputs.oracle] * 2),
    )
    assert len(empty) == 2
    metrics = evaluate_outputs(doubled, 0.5).metrics["presence"]
    assert metrics["no_hand_agreement_empty_frames"] == 0.5


def _write_video(path, frames) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()


def test_video_is_tracked_from_frame_to_frame(trained, student, tmp_path):
    """Exact properties whatever the (tiny) model's quality: a tracked frame's crop is the
    previous frame's landmarks' square; an untracked one is the finder's; nothing present means
    the finder every frame and no landmarks; everything present means tracking after frame 0."""
    _, frames = photo_table(tmp_path / "frames", 5, 1, seed=9)
    video = tmp_path / "clip.avi"
    _write_video(video, frames)
    decoded = [cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) for frame in _read_all(video)]
    for min_presence in (1e-9, 0.5, 1 - 1e-9):
        student.min_presence = min_presence
        table = predict_path(student, video, progress=False).table
        assert list(table["frame"]) == list(range(len(decoded)))
        assert not table["tracked"].iloc[0]
        student.reset()
        previous = None
        for index, rgb in enumerate(decoded):
            row = table.iloc[index]
            square = row[["crop_x", "crop_y", "crop_side"]].to_numpy(float)
            if row["tracked"]:
                np.testing.assert_allclose(square, crop_square(previous[None], student.margin)[0])
            else:
                np.testing.assert_allclose(square, student.find([rgb])[0][0])
            landmarks = row[LANDMARK_COLUMNS].to_numpy(float).reshape(21, 3)
            previous = landmarks[:, :2] if np.isfinite(landmarks).all() else previous
        if min_presence < 1e-6:
            assert table["tracked"].iloc[1:].all()
        if min_presence > 1 - 1e-6:
            assert not table["tracked"].any() and table[LANDMARK_COLUMNS].isna().all().all()
    student.min_presence = 0.5


def _read_all(path):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def test_export_writes_both_networks_and_onnx_predicts_what_torch_does(trained, tmp_path):
    root, table = trained
    metrics = export_student(root / "student" / BEST, tmp_path / "export", root / "finder" / BEST)
    assert set(metrics["networks"]) == {"landmarks", "finder"}
    for network in metrics["networks"].values():
        assert network["max_abs_diff"] < 1e-4
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [
        ".written-by-learned-hand-landmarks", "finder.onnx", "student.onnx", "student.pt",
    ]  # fmt: skip
    folder = tmp_path / "photos"
    test = table[table["split"] == "test"]
    for name in test["path"]:
        write_png(folder / name, cv2.cvtColor(cv2.imread(str(root / name)), cv2.COLOR_BGR2RGB))
    from_torch = predict_path(tmp_path / "export" / "student.pt", folder, device="cpu",
                              progress=False)  # fmt: skip
    from_onnx = predict_path(tmp_path / "export" / "student.onnx", folder, device="cpu",
                             progress=False)  # fmt: skip
    np.testing.assert_allclose(from_onnx.landmarks[..., :2] * WIDTH,
                               from_torch.landmarks[..., :2] * WIDTH, atol=1e-2)  # fmt: skip
    np.testing.assert_allclose(from_onnx.presence, from_torch.presence, atol=1e-4)
    flipped = [
        predict_path(tmp_path / "export" / name, folder, device="cpu", progress=False,
                     flip_test=True)
        for name in ("student.pt", "student.onnx")
    ]  # fmt: skip
    np.testing.assert_allclose(flipped[1].landmarks[..., :2] * WIDTH,
                               flipped[0].landmarks[..., :2] * WIDTH, atol=1e-2)  # fmt: skip
    # a crop model alone is not a student: it says where its finder is

    with pytest.raises(CheckpointError, match="holds no finder"):
        load_student(root / "student" / BEST, "cpu")
    (tmp_path / "export" / "finder.onnx").write_bytes(b"another finder")
    with pytest.raises(CheckpointError, match="sha256"):
        load_student(tmp_path / "export" / "student.onnx", "cpu")


def test_flip_test_choice_keeps_the_surer_reading_mirrored_back():
    encoded = np.arange(4 * NUM_JOINTS * 3, dtype=np.float32).reshape(4, -1) / 1000
    presence = np.array([0.2, 0.9, 0.6, 0.5])
    confidence = np.array([0.3, 0.5, 0.4, 0.2])  # input 0: its mirror is surer; input 1: itself
    chosen, mean_presence = flip_test_choice(encoded, presence, confidence)
    mirrored = encoded[2].reshape(NUM_JOINTS, 3).copy()
    mirrored[:, 0] = 1 - mirrored[:, 0]
    np.testing.assert_array_equal(chosen[0], mirrored.reshape(-1))
    np.testing.assert_array_equal(chosen[1], encoded[1])
    np.testing.assert_array_equal(mean_presence, [0.4, 0.7])


def test_the_flip_test_reads_each_crop_and_its_mirror_and_keeps_the_surer(trained):
    root, table = trained
    test = table[(table["split"] == "test") & table["has_hand"]].reset_index(drop=True)
    rgbs = [cv2.cvtColor(cv2.imread(str(root / p)), cv2.COLOR_BGR2RGB) for p in test["path"]]
    student = load_student(
        root / "student" / BEST, "cpu", finder=root / "finder" / BEST, flip_test=True
    )
    network = student.landmarks
    assert network.flip_test and not student.finder.flip_test
    # Two epochs leave the heatmaps flat (a crop and its mirror: peaks 0.0633 ± 5e-7): random,
    # large weights in the heatmaps' last layer make a crop and its mirror differ clearly (by
    # 1e-3 to 7e-3 here, either way) in how sure they are.
    with torch.no_grad():
        out = network.module.head.out
        seeded = torch.Generator().manual_seed(0)
        out.weight.copy_(300 * torch.randn(out.weight.shape, generator=seeded))
    squares = oracle_squares(test, student.margin)
    crops = _batch(
        [crop_image(rgb, square, student.image_size) for rgb, square in zip(rgbs, squares)]
    )
    plain, plain_presence, plain_confidence = network.outputs(crops)
    mirror, mirror_presence, mirror_confidence = network.outputs(crops.flip(-1))
    assert ((plain_confidence > 0) & (plain_confidence <= 1)).all()
    encoded, presence = network.run(crops)
    # per crop: the surer of the two readings, the mirror's mapped back (x -> 1 - x); kernels
    # may round a batch of 2N and one of N differently, so the pick is checked where it is clear
    mirror = mirror.reshape(len(test), NUM_JOINTS, 3)
    mirror[..., 0] = 1 - mirror[..., 0]
    expected = np.where(
        (mirror_confidence > plain_confidence)[:, None], mirror.reshape(len(test), -1), plain
    )
    clear = np.abs(mirror_confidence - plain_confidence) > 1e-4
    assert clear.sum() >= len(test) - 1
    np.testing.assert_allclose(encoded[clear], expected[clear], atol=1e-5)
    np.testing.assert_allclose(presence, (plain_presence + mirror_presence) / 2, atol=1e-6)
    # a mirrored crop gets the mirrored answer: the two readings are the same, swapped
    mirrored_encoded, mirrored_presence = network.run(crops.flip(-1))
    mirrored_encoded = mirrored_encoded.reshape(len(test), NUM_JOINTS, 3)
    mirrored_encoded[..., 0] = 1 - mirrored_encoded[..., 0]
    np.testing.assert_allclose(
        mirrored_encoded.reshape(len(test), -1)[clear], encoded[clear], atol=1e-5
    )
    np.testing.assert_allclose(mirrored_presence, presence, atol=1e-6)
    # without it, the plain reading
    network.use_flip_test(False)
    np.testing.assert_allclose(network.run(crops)[0], plain, atol=1e-6)


def test_the_flip_test_needs_a_network_that_says_how_sure_it_is(trained, tmp_path):
    import onnx

    pooled = Network(
        tmp_path / "pooled.pt", ModelConfig(head="pooled_mlp"), None, 1, "landmarks", 1.5
    )
    with pytest.raises(CheckpointError, match="pooled_mlp head has no distribution"):
        pooled.use_flip_test(True)
    root, table = trained
    export_student(root / "student" / BEST, tmp_path / "export", root / "finder" / BEST)
    # an export from before the flip test: no confidence output
    path = tmp_path / "export" / "student.onnx"
    proto = onnx.load(str(path))
    kept = [o for o in proto.graph.output if o.name != "confidence"]
    del proto.graph.output[:]
    proto.graph.output.extend(kept)
    onnx.save(proto, str(path))
    with pytest.raises(CheckpointError, match="exported before the flip test"):
        load_student(path, "cpu", flip_test=True)
    folder = tmp_path / "photos"
    for name in table[table["split"] == "test"]["path"]:
        write_png(folder / name, cv2.cvtColor(cv2.imread(str(root / name)), cv2.COLOR_BGR2RGB))
    legacy = predict_path(path, folder, device="cpu", progress=False)
    assert np.isfinite(legacy.presence).all()  # it still runs without the flip test
