"""Real (tiny) training on the CPU: heads, losses, codec, learning, checkpoints, resume after
kill -9 (seed recipe and the best recipe's options), bad input."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.batching import batches
from pipeline.checkpoint import BEST, LAST, CheckpointError, load_checkpoint, model_from_checkpoint
from pipeline.codec import LandmarkCodec
from pipeline.data import load_split
from pipeline.inference import predict
from pipeline.losses import LOSSES, CoordinateLoss, wing
from pipeline.metrics import compare_landmarks, validation_metrics
from pipeline.model import (
    IntegralHead,
    ModelConfig,
    PretrainedWeightsError,
    bin_centres,
    build_model,
    reading_as_fitted,
)
from pipeline.params import TrainParams
from pipeline.training import TrainingError, batch_loss, fit, loss_for
from tests.conftest import write_png
from tests.tiny import SEED_RECIPE, skeleton_split

TINY = TrainParams(
    **SEED_RECIPE, image_size=32, epochs=2, batch_size=4, lr=3e-3, device="cpu", threads=2
)
# The project recipe (params.yaml) plus flip, EMA and warm-up, so that every random draw and
# every piece of state takes part in the resume test.
RECIPE = {
    "pretrained": "none",  # fit on its own: no pretrain stage's weights
    "input_layout": "squash",  # skeleton_split's whole frames
    "head": "integral",
    "loss": "l1",
    "distribution_weight": 1.0,
    "rotate_deg": 15.0,
    "scale_min": 0.9,
    "scale_max": 1.1,
    "translate": 0.05,
    "flip_p": 0.5,
    "ema_decay": 0.9,
    "warmup_epochs": 0.5,
}
BEST_TINY = dataclasses.replace(TINY, **RECIPE)
SPATIAL_HEADS = ("integral", "simcc")


@pytest.mark.parametrize("head", SPATIAL_HEADS)
def test_head_decode_inverts_encode_on_exact_targets(head):
    model = build_model(ModelConfig(head=head, image_size=128)).eval()
    with torch.no_grad():
        logits = model.forward_train(torch.rand(2, 3, 128, 128)).logits
    xy = torch.rand(2, 21, 2) * 0.5 + 0.25  # away from the borders, where targets are cut off
    for sigma_px in (0.5, 2.0, 4.0):
        targets = model.encode_distributions(xy, logits, sigma_px)
        assert [t.shape for t in targets] == [lg.shape for lg in logits]
        decoded = model.head.decode(tuple(t.clamp_min(1e-30).log() for t in targets))
        torch.testing.assert_close(decoded, xy, atol=1e-4, rtol=0)
        # an exact target costs nothing, a shifted one does
        exact = tuple(t.clamp_min(1e-30).log() for t in targets)
        assert model.distribution_loss(exact, targets).abs().max() < 1e-4
        shifted = model.encode_distributions(xy + 0.1, logits, sigma_px)
        wrong = tuple(t.clamp_min(1e-30).log() for t in shifted)
        assert (model.distribution_loss(wrong, targets) > 0.1).all()


def test_reading_at_the_peak_keeps_one_of_two_bumps_and_training_reads_the_whole_map():
    """Two bumps (two raised fingers, either could be the index): the whole map's expectation
    lies between them, on neither; the peak's neighbourhood is the taller one, exactly."""
    h = w = 16
    logits = torch.full((1, 1, h, w), -30.0)
    logits[0, 0, 4, 3] = 0.0  # the taller bump
    logits[0, 0, 4, 12] = -0.5
    centres = bin_centres(w)
    whole = IntegralHead.decode((logits,), 0)[0, 0]
    assert centres[3] < whole[0] < centres[12]  # between the two, on neither
    for radius in (1, 2, 8):
        torch.testing.assert_close(
            IntegralHead.decode((logits,), radius)[0, 0], torch.stack([centres[3], centres[4]])
        )
    # a window wider than the map is the whole map
    random_maps = torch.randn(2, 21, h, w)
    torch.testing.assert_close(
        IntegralHead.decode((random_maps,), w), IntegralHead.decode((random_maps,), 0)
    )
    # the model reads at the peak outside training only; files from before the knob read the
    # whole map, as they were trained and measured
    model = build_model(ModelConfig(image_size=64, peak_radius=1))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        (maps,) = model.eval().forward_train(x).logits
        torch.testing.assert_close(
            model.forward_train(x).coords[..., :2], IntegralHead.decode((maps,), 1)
        )
        model.train()
        torch.manual_seed(0)
        training = model.forward_train(x)
    torch.testing.assert_close(training.coords[..., :2], IntegralHead.decode(training.logits, 0))
    # training stages validate with the whole map, and the reading comes back afterwards
    model.eval()
    with torch.no_grad():
        with reading_as_fitted(model):
            fitted = model.forward_train(x)
        torch.testing.assert_close(fitted.coords[..., :2], IntegralHead.decode(fitted.logits, 0))
        assert model.head.peak_radius == 1
    old = ModelConfig().to_dict()
    del old["peak_radius"]
    assert ModelConfig.from_dict(old).peak_radius == 0
    assert ModelConfig.for_training(TrainParams()).peak_radius == TrainParams().peak_radius > 0


@pytest.mark.parametrize("head", ("pooled_mlp", *SPATIAL_HEADS))
def test_every_head_gives_the_codec_units_export_expects(head):
    model = build_model(ModelConfig(head=head, image_size=32)).eval()
    out, presence, confidence = model(torch.rand(3, 3, 32, 32))
    assert out.shape == (3, 63) and torch.isfinite(out).all()
    assert presence.shape == (3,) and ((presence > 0) & (presence < 1)).all()
    # the mean peak probability of the distributions; the pooled head has none (1)
    assert confidence.shape == (3,) and ((confidence > 0) & (confidence <= 1)).all()
    assert (confidence == 1).all() == (head == "pooled_mlp")
    if head != "pooled_mlp":  # x, y are expectations over the frame
        xy = out.view(3, 21, 3)[..., :2]
        assert (xy > 0).all() and (xy < 1).all()


@pytest.mark.parametrize("head", SPATIAL_HEADS)
def test_spatial_heads_export_to_onnx_with_a_dynamic_batch(head):
    pytest.importorskip("onnxruntime")
    from pipeline.export import export_model, metadata_of

    config = ModelConfig(head=head, image_size=32)
    record = {"model_config": config.to_dict(), "codec": LandmarkCodec().to_dict(), "epoch": 1,
              "role": "landmarks", "crop_margin": 1.5}  # fmt: skip
    exported = export_model(build_model(config), metadata_of(record))
    assert exported.max_abs_diff <= 1e-4  # checked at batch sizes 1 and 3, both outputs


@pytest.mark.parametrize(
    "loss, head, distribution_weight",
    # smooth_l1 on the pooled head: test_loss_goes_down_on_a_fixed_batch
    [(name, "pooled_mlp", 0.0) for name in LOSSES if name != "smooth_l1"]
    + [("l1", "integral", 1.0), ("l1", "simcc", 1.0)],
)
def test_each_loss_is_finite_and_goes_down_on_a_fixed_batch(loss, head, distribution_weight):

    torch.manual_seed(0)
    data = skeleton_split(8)
    params = dataclasses.replace(
        TINY, dropout=0.0, loss=loss, head=head, distribution_weight=distribution_weight
    )
    model = build_model(ModelConfig.for_training(params))
    codec = LandmarkCodec.fit(data.landmarks)
    x = data.images.float() / 255
    frame = torch.tensor(data.landmarks, dtype=torch.float32)
    y = codec.standardise(frame)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        outputs = model.forward_train(x)
        loss_value = batch_loss(
            model, outputs, y, frame, params, loss_for(params), None, torch.arange(8)
        )
        assert torch.isfinite(loss_value)
        optimizer.zero_grad()
        loss_value.backward()
        optimizer.step()
        losses.append(loss_value.item())
    assert losses[-1] < 0.6 * losses[0]


def test_samples_that_teach_no_presence_leave_the_presence_loss_alone():
    """Wide crops show the hand (their landmarks are a target) but are no presence target: the
    loss does not depend on their presence logit at all; with every sample taught it is the
    plain mean."""
    torch.manual_seed(0)
    data = skeleton_split(4)
    params = dataclasses.replace(TINY, dropout=0.0, head="integral", distribution_weight=1.0)
    model = build_model(ModelConfig.for_training(params)).eval()
    codec = LandmarkCodec.fit(data.landmarks)
    frame = torch.tensor(data.landmarks, dtype=torch.float32)
    outputs = model.forward_train(data.images.float() / 255)
    shows = torch.tensor([1.0, 0.0, 1.0, 1.0])

    def loss(taught):
        return batch_loss(model, outputs, codec.standardise(frame), frame, params,
                          loss_for(params), None, torch.arange(4), shows,
                          None if taught is None else torch.tensor(taught))  # fmt: skip

    (gradient,) = torch.autograd.grad(loss([1.0, 1.0, 0.0, 0.0]), outputs.presence)
    assert torch.all(gradient[2:] == 0) and torch.all(gradient[:2] != 0)
    assert loss([1.0] * 4).item() == pytest.approx(loss(None).item(), rel=1e-6)


def test_wing_is_logarithmic_then_linear_and_continuous():
    omega, epsilon = 0.05, 0.01
    e = torch.tensor([0.0, 0.01, omega - 1e-6, omega + 1e-6, 0.5])
    values = wing(e, omega, epsilon)
    assert values[0] == 0 and values[1] == pytest.approx(omega * np.log(2))
    assert values[2] == pytest.approx(values[3].item(), abs=1e-5)  # continuous at omega
    assert values[4] - values[3] == pytest.approx(0.5 - omega - 1e-6, abs=1e-5)  # slope 1
    loss = CoordinateLoss("wing", wing_omega=omega, wing_epsilon=epsilon, z_weight=0.5)
    a, b = torch.zeros(2, 63), torch.full((2, 63), 0.02)
    assert loss.per_sample(a, b).shape == (2,)
    assert loss(a, b).item() == pytest.approx(loss.per_sample(a, b).mean().item(), rel=1e-6)


@pytest.mark.parametrize("name", LOSSES)
def test_an_unknown_depth_adds_no_loss_and_no_gradient(name):
    # a rehearsed render's z is NaN: as if the output were exactly right there, and no NaN
    # reaches a gradient
    loss = CoordinateLoss(name)
    torch.manual_seed(0)
    outputs = torch.rand(3, 21, 3, requires_grad=True)
    targets = torch.rand(3, 21, 3)
    unknown = targets.clone()
    unknown[1, :, 2] = float("nan")
    known = targets.clone()
    known[1, :, 2] = outputs[1, :, 2].detach()
    for reduce in (loss, loss.per_sample):
        value = reduce(outputs, unknown)
        assert torch.equal(value, reduce(outputs, known))
        (gradient,) = torch.autograd.grad(value.sum(), outputs)
        assert torch.isfinite(gradient).all() and (gradient[1, :, 2] == 0).all()
        assert (gradient[1, :, :2] != 0).any()  # x and y still train
    broken = targets.clone()
    broken[1, 4, 0] = float("nan")  # an x is a broken label, not an unknown: the loss says so
    assert torch.isnan(loss(outputs, broken))


def test_loss_goes_down_on_a_fixed_batch():
    torch.manual_seed(0)
    data = skeleton_split(8)
    params = dataclasses.replace(TINY, dropout=0.0)
    model = build_model(ModelConfig.for_training(params))
    codec = LandmarkCodec.fit(data.landmarks)
    x, y = data.images.float() / 255, codec.encode(data.landmarks, data.frames())
    loss_fn = loss_for(params)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = loss_fn(model(x)[0], y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_codec_standardises_z_with_train_statistics_and_maps_back():
    landmarks = np.random.default_rng(0).normal(0.5, 0.1, (6, 21, 3))
    landmarks[..., 2] = landmarks[..., 2] * 0.05 - 0.02
    codec = LandmarkCodec.fit(landmarks, layout="squash")
    identity = codec.frames(np.full(6, 640), np.full(6, 480))
    encoded = codec.encode(landmarks, identity).view(6, 21, 3)
    assert (
        abs(encoded[..., 2].mean().item()) < 1e-5
        and abs(encoded[..., 2].std(unbiased=False).item() - 1) < 1e-4
    )
    np.testing.assert_allclose(codec.decode(codec.encode(landmarks, identity), identity),
                               landmarks, atol=1e-6)  # fmt: skip
    assert LandmarkCodec.from_dict(codec.to_dict()) == codec
    letterbox = LandmarkCodec.fit(landmarks, layout="letterbox")
    assert LandmarkCodec.from_dict(letterbox.to_dict()) == letterbox
    # images without a hand (NaN rows) take no part in the statistics
    with_empty = np.concatenate([landmarks, np.full((2, 21, 3), np.nan)])
    assert LandmarkCodec.fit(with_empty, layout="squash") == codec
    for config in (ModelConfig(), ModelConfig(head="simcc", neck_channels=32, simcc_ratio=1.5)):
        assert ModelConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("width, height", [(96, 72), (60, 90)])
def test_letterbox_keeps_the_aspect_and_maps_back_to_original_pixels(tmp_path, width, height):
    """A landmark drawn on a photo is found in the letterboxed input where the codec says, and
    the codec maps it back to the photo's pixels."""
    point = np.array([0.8 * width, 0.3 * height])
    photo = np.zeros((height, width, 3), np.uint8)
    photo[int(point[1]) - 1 : int(point[1]) + 2, int(point[0]) - 1 : int(point[0]) + 2] = 255
    write_png(tmp_path / "photo.png", photo)
    landmarks = np.zeros((1, 21, 3))
    landmarks[0, :, :2] = (point + 0.5) / (width, height)  # centre of the drawn 3x3 square
    table = pd.DataFrame({"path": ["photo.png"], "width": [width], "height": [height]})
    table[[f"{a}{j}" for j in range(21) for a in "xyz"]] = landmarks.reshape(1, -1)
    size = 48
    split = load_split(table, tmp_path, size, layout="letterbox")
    codec = LandmarkCodec(layout="letterbox")
    image = split.images[0, 0].numpy().astype(float)
    found = (np.argwhere(image == image.max()).mean(0)[::-1] + 0.5) / size
    frames = codec.frames([width], [height], size)
    expected = codec.to_input(landmarks, frames)[0, 0, :2]
    assert np.abs(found - expected).max() * size < 1.0
    side = max(width, height) * size / max(width, height)
    assert side == size and (image[:, :2].max() == 0 or image[:2].max() == 0)  # padded bars
    encoded = codec.encode(landmarks, frames)
    np.testing.assert_allclose(codec.decode(encoded, frames), landmarks, atol=1e-6)


def test_a_crop_maps_a_drawn_landmark_to_where_the_codec_says_and_back(tmp_path):
    """The crop layout: a landmark drawn on a photo is found in the crop of a square around it
    where the codec's frame puts it; the way back gives the photo's pixels."""
    width, height = 160, 120
    point = np.array([97.0, 41.0])
    photo = np.zeros((height, width, 3), np.uint8)
    photo[int(point[1]) - 1 : int(point[1]) + 2, int(point[0]) - 1 : int(point[0]) + 2] = 255
    write_png(tmp_path / "photo.png", photo)
    landmarks = np.zeros((1, 21, 3))
    landmarks[0, :, :2] = (point + 0.5) / (width, height)
    table = pd.DataFrame({"path": ["photo.png"], "width": [width], "height": [height]})
    table[[f"{a}{j}" for j in range(21) for a in "xyz"]] = landmarks.reshape(1, -1)
    square = np.array([[90.0, 50.0, 40.0]])  # centre (90, 50), side 40 px: the point inside
    size = 64
    split = load_split(table, tmp_path, size, layout="crop", squares=square)
    image = split.images[0, 0].numpy().astype(float)
    found = (np.argwhere(image == image.max()).mean(0)[::-1] + 0.5) / size
    codec = LandmarkCodec(layout="crop")
    expected = codec.to_input(landmarks, split.frames())[0, 0, :2]
    np.testing.assert_allclose(expected, ((point + 0.5) - (70.0, 30.0)) / 40.0)
    assert np.abs(found - expected).max() * size < 1.0
    encoded = codec.encode(landmarks, split.frames())
    np.testing.assert_allclose(codec.decode(encoded, split.frames()), landmarks, atol=1e-6)
    with pytest.raises(ValueError, match="square"):
        codec.frames([width], [height])


@pytest.mark.parametrize("params", [TINY, BEST_TINY], ids=["seed", "recipe"])
def test_fit_writes_checkpoints_that_round_trip(tmp_path, params):
    train, validation = skeleton_split(10, seed=1), skeleton_split(4, seed=2)
    result = fit(train, validation, params, tmp_path, log=lambda _: None)
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert result.best_epoch in (1, 2)
    best = load_checkpoint(tmp_path / BEST)
    assert best["epoch"] == result.best_epoch and best["train_params"] == dataclasses.asdict(params)
    if params.ema_decay:  # what predicts is the average, what resumes is the trained model
        last = load_checkpoint(tmp_path / LAST)
        assert any(not torch.equal(last["model"][k], last["train_model"][k]) for k in last["model"])
    model, codec, config = model_from_checkpoint(best)
    with reading_as_fitted(model):  # as validation reads (train.peak_radius is for use)
        predicted, presence = predict(
            model, validation.images, codec, torch.device("cpu"), validation.frames()
        )
    assert predicted.shape == (4, 21, 3) and presence.shape == (4,)
    assert validation_metrics(predicted, validation.landmarks, validation.width, validation.height)[
        "mpjpe_px"
    ] == pytest.approx(result.best_val["mpjpe_px"], rel=1e-5)


def test_same_params_same_metrics_and_checkpoint_bytes(tmp_path):
    train, validation = skeleton_split(10, seed=1), skeleton_split(4, seed=2)
    first = fit(train, validation, TINY, tmp_path / "a", log=lambda _: None)
    second = fit(train, validation, TINY, tmp_path / "b", log=lambda _: None)
    assert [r["val"] for r in first.history] == [r["val"] for r in second.history]
    assert [r["train_loss"] for r in first.history] == [r["train_loss"] for r in second.history]
    # the epochs' timings differ from run to run, but stay out of the files: the same run
    # writes the same bytes, so DVC's hash of the model folder does not move
    assert {"seconds", "images_per_second"} <= set(first.history[-1])  # the log keeps them
    for name in (BEST, LAST):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


RUNNER = textwrap.dedent(
    """
    import json, os, signal, sys, torch
    from pipeline.params import TrainParams
    from pipeline.training import fit
    train, validation = torch.load(sys.argv[1], weights_only=False)
    kill_after = int(sys.argv[3])
    def on_epoch_end(row):
        if row["epoch"] == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, like a machine that goes away
    recipe = json.loads(sys.argv[4])
    params = TrainParams(image_size=32, epochs=3, batch_size=4, device="cpu", threads=2, **recipe)
    fit(train, validation, params, sys.argv[2], on_epoch_end=on_epoch_end)
    """
)


@pytest.mark.parametrize("recipe", [SEED_RECIPE, RECIPE], ids=["seed", "recipe"])
def test_a_killed_run_resumes_to_the_same_result(tmp_path, recipe):
    data_file = tmp_path / "data.pt"
    torch.save((skeleton_split(10, seed=1), skeleton_split(4, seed=2)), data_file)
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}

    def run(directory, kill_after):
        return subprocess.run(
            [
                sys.executable,
                str(script),
                str(data_file),
                str(directory),
                str(kill_after),
                json.dumps(recipe),
            ],
            env=env,
            capture_output=True,
            text=True,
        )

    killed = run(tmp_path / "killed", kill_after=2)
    assert killed.returncode == -9, killed.stderr
    assert load_checkpoint(tmp_path / "killed" / LAST)["epoch"] == 2
    resumed = run(tmp_path / "killed", kill_after=0)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout and "after epoch 2" in resumed.stdout
    straight = run(tmp_path / "straight", kill_after=0)
    assert straight.returncode == 0, straight.stderr
    a, b = (
        load_checkpoint(tmp_path / "killed" / LAST),
        load_checkpoint(tmp_path / "straight" / LAST),
    )
    assert a["epoch"] == b["epoch"] == 3
    assert a["history"][-1]["val"] == b["history"][-1]["val"]
    for weights in ("model", "train_model") if recipe.get("ema_decay") else ("model",):
        for name in a[weights]:
            assert torch.equal(a[weights][name], b[weights][name]), name


def test_checkpoint_of_other_params_is_not_resumed(tmp_path):
    train, validation = skeleton_split(10, seed=1), skeleton_split(4, seed=2)
    fit(train, validation, TINY, tmp_path, log=lambda _: None)
    messages = []
    fit(
        train,
        validation,
        dataclasses.replace(TINY, lr=1e-3, epochs=1),
        tmp_path,
        log=messages.append,
    )
    assert any("training from scratch" in m for m in messages)
    assert load_checkpoint(tmp_path / LAST)["epoch"] == 1


def test_a_finished_run_is_trained_again_and_resume_false_always_starts_afresh(tmp_path):
    train, validation = skeleton_split(10, seed=1), skeleton_split(4, seed=2)
    first = fit(train, validation, TINY, tmp_path, log=lambda _: None)
    messages = []
    # the same run again (what `dvc repro -f`, or a changed train.threads, makes DVC do)
    again = fit(train, validation, TINY, tmp_path, log=messages.append)
    assert any("finished run" in m and "training again from scratch" in m for m in messages)
    assert again.resumed_from_epoch == 0
    assert [row["val"] for row in again.history] == [row["val"] for row in first.history]
    # an interrupted run (one epoch of two) resumes, unless train.resume is false
    last = load_checkpoint(tmp_path / LAST)
    interrupted = {**last, "epoch": 1, "history": last["history"][:1]}
    torch.save(interrupted, tmp_path / LAST)
    messages.clear()
    fit(train, validation, TINY, tmp_path, log=messages.append)
    assert any("resuming from" in m and "after epoch 1" in m for m in messages)
    torch.save(interrupted, tmp_path / LAST)
    messages.clear()
    fresh = fit(train, validation, dataclasses.replace(TINY, resume=False), tmp_path,
                log=messages.append)  # fmt: skip
    assert any("train.resume is false" in m for m in messages)
    assert fresh.resumed_from_epoch == 0 and len(fresh.history) == TINY.epochs


def test_a_last_checkpoint_of_another_version_is_trained_over(tmp_path):
    train, validation = skeleton_split(10, seed=1), skeleton_split(4, seed=2)
    fit(train, validation, TINY, tmp_path, log=lambda _: None)
    old = {**load_checkpoint(tmp_path / LAST), "format": 1, "epoch": 1}
    torch.save(old, tmp_path / LAST)
    messages = []
    result = fit(train, validation, TINY, tmp_path, log=messages.append)
    assert any("cannot be resumed" in m and "format 1" in m for m in messages)
    assert result.resumed_from_epoch == 0 and load_checkpoint(tmp_path / LAST)["epoch"] == 2


def test_nan_loss_stops_naming_the_epoch(tmp_path):
    train, validation = skeleton_split(6, seed=1), skeleton_split(2, seed=2)
    train.landmarks[2, 5, 0] = np.nan
    train.table["presence"] = True  # a hand, with a broken label: not a frame without one
    with pytest.raises(TrainingError, match=r"became nan at epoch 1"):
        fit(train, validation, TINY, tmp_path, log=lambda _: None)
    assert not (tmp_path / LAST).exists()


def test_empty_or_single_sample_splits(tmp_path):
    validation = skeleton_split(2, seed=2)
    with pytest.raises(TrainingError, match="train split has 0 image"):
        fit(skeleton_split(0), validation, TINY, tmp_path)
    with pytest.raises(TrainingError, match="train split has 1 image"):
        fit(skeleton_split(1), validation, TINY, tmp_path)
    with pytest.raises(TrainingError, match="validation split is empty"):
        fit(skeleton_split(4), skeleton_split(0), TINY, tmp_path)
    # one validation image is fine (evaluation mode), and so is a last batch of one
    result = fit(
        skeleton_split(5),
        skeleton_split(1, seed=3),
        dataclasses.replace(TINY, epochs=1),
        tmp_path,
        log=lambda _: None,
    )
    assert result.best_epoch == 1


def test_confidence_weights_and_pretrained_weights_need_their_inputs(tmp_path):
    train, validation = skeleton_split(6, seed=1), skeleton_split(2, seed=2)
    weighted = dataclasses.replace(TINY, epochs=1, score_weight_power=2.0)
    fit(train, validation, weighted, tmp_path / "weighted", log=lambda _: None)
    with pytest.raises(TrainingError, match="handedness_score"):
        fit(
            dataclasses.replace(train, table=train.table.drop(columns="handedness_score")),
            validation,
            weighted,
            tmp_path / "none",
            log=lambda _: None,
        )
    with pytest.raises(TrainingError, match="pretrain stage"):
        fit(train, validation, dataclasses.replace(TINY, pretrained="synthetic"), tmp_path / "p")
    with pytest.raises(TrainingError, match="layout"):
        fit(train, validation, dataclasses.replace(TINY, input_layout="letterbox"), tmp_path / "l")


def test_batches_never_leave_a_single_sample_batch():
    sizes = [len(b) for b in batches(9, 4, torch.Generator().manual_seed(0))]
    assert sizes == [4, 5] and sum(sizes) == 9


def test_bad_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint of this project"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(tmp_path / "junk.pt")
    fit(
        skeleton_split(4),
        skeleton_split(2),
        dataclasses.replace(TINY, epochs=1),
        tmp_path / "ok",
        log=lambda _: None,
    )
    payload = load_checkpoint(tmp_path / "ok" / BEST)
    payload["model_config"]["hidden"] = 256  # a checkpoint whose config does not fit its weights
    with pytest.raises(CheckpointError, match="do not fit"):
        model_from_checkpoint(payload)


def test_imagenet_weights_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import torchvision.models

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(
        torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline
    )
    with pytest.raises(PretrainedWeightsError, match="train.pretrained=none"):
        build_model(
            ModelConfig.for_training(dataclasses.replace(TINY, pretrained="imagenet", width=1.0))
        )


def photo_table(folder, count: int, seed: int = 3) -> pd.DataFrame:
    """``count`` skeleton photos (96x72) written to ``folder`` and their label table."""
    from tests.tiny import skeleton_photos

    photos, points = skeleton_photos(count, seed=seed)
    rows = []
    for i, photo in enumerate(photos):
        write_png(folder / f"img {i}.png", photo)
        rows.append({"path": f"img {i}.png", "width": 96, "height": 72, "class_name": "A"})
    table = pd.DataFrame(rows)
    landmarks = np.concatenate([points / (96, 72), np.zeros((count, 21, 1))], axis=2)
    table[[f"{a}{j}" for j in range(21) for a in "xyz"]] = landmarks.reshape(count, -1)
    return table


def test_letterbox_model_is_evaluated_in_original_pixels(tmp_path):
    """The evaluate stage's path (run_student + evaluate_outputs) with a letterbox model gives
    what the network predicts on the decoded split, in pixels of the original images."""
    from pipeline.evaluation import evaluate_outputs, run_student
    from pipeline.student import load_student

    table = photo_table(tmp_path, 10)
    table["split"] = ["train"] * 6 + ["validation"] * 2 + ["test"] * 2
    params = dataclasses.replace(TINY, epochs=1, input_layout="letterbox")
    splits = {
        name: load_split(table[table["split"] == name], tmp_path, 32, layout="letterbox")
        for name in ("train", "validation", "test")
    }
    fit(splits["train"], splits["validation"], params, tmp_path / "ckpt", log=lambda _: None)
    student = load_student(tmp_path / "ckpt" / BEST, "cpu")
    assert student.landmarks.codec.layout == "letterbox"
    test = splits["test"]
    outputs = run_student(student, table[table["split"] == "test"], tmp_path, 4)
    result = evaluate_outputs(outputs, 0.5)
    model, codec, _ = model_from_checkpoint(load_checkpoint(tmp_path / "ckpt" / BEST))
    predicted, _ = predict(model, test.images, codec, torch.device("cpu"), test.frames(32), 4)
    expected = compare_landmarks(predicted, test.landmarks, test.width, test.height)
    # the evaluate path runs the network with BatchNorm folded into its convolutions (float
    # rounding: ~1e-6 of the outputs) and rounds metrics to 6 decimals
    assert result.metrics["student_vs_teacher"]["mpjpe_px"] == pytest.approx(
        expected["mpjpe_px"], abs=1e-4
    )


def test_over_budget_cache_reads_from_disk_and_trains_identically(tmp_path):
    """The decoded images go to a temporary file when they exceed the budget; batches read from
    it hold the same bytes, so training gives the same numbers as from memory."""
    table = photo_table(tmp_path, 12)
    size = 32
    in_memory = load_split(table, tmp_path, size, "squash", budget_bytes=None)
    on_disk = load_split(table, tmp_path, size, "squash", budget_bytes=12 * 3 * size * size - 1)
    assert not in_memory.on_disk and on_disk.on_disk
    assert torch.equal(on_disk.images[torch.tensor([5, 0, 11])], in_memory.images[[5, 0, 11]])
    assert torch.equal(on_disk.images[2:4], in_memory.images[2:4])
    assert not load_split(table, tmp_path, size, "squash", 12 * 3 * size * size).on_disk

    params = dataclasses.replace(BEST_TINY, epochs=1, cache_budget_mib=0)
    results = []
    for split in (in_memory, on_disk):
        validation = load_split(table.iloc[8:], tmp_path, size, "squash", budget_bytes=0)
        results.append(fit(split, validation, params, tmp_path / str(split.on_disk), log=print))
    assert results[0].history[0]["val"] == results[1].history[0]["val"]
    assert results[0].history[0]["train_loss"] == results[1].history[0]["train_loss"]
