"""Real (tiny) training on the CPU: learning, checkpoints, resume after kill -9, bad input."""

import dataclasses
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from pipeline.codec import LandmarkCodec
from pipeline.data import batches
from pipeline.model import PretrainedWeightsError, build_model
from pipeline.params import TrainParams
from pipeline.training import (
    BEST,
    LAST,
    CheckpointError,
    TrainingError,
    _loss_fn,
    fit,
    load_checkpoint,
    model_config_for,
    model_from_checkpoint,
    predict,
)
from tests.tiny import skeleton_split

TINY = TrainParams(image_size=32, epochs=2, batch_size=4, lr=3e-3, device="cpu", threads=2)


def test_loss_goes_down_on_a_fixed_batch():
    torch.manual_seed(0)
    data = skeleton_split(8)
    params = dataclasses.replace(TINY, dropout=0.0)
    model = build_model(model_config_for(params))
    codec = LandmarkCodec.fit(data.landmarks)
    x, y = data.images.float() / 255, codec.encode(data.landmarks)
    loss_fn = _loss_fn(params)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_codec_standardises_z_with_train_statistics_and_maps_back():
    landmarks = np.random.default_rng(0).normal(0.5, 0.1, (6, 21, 3))
    landmarks[..., 2] = landmarks[..., 2] * 0.05 - 0.02
    codec = LandmarkCodec.fit(landmarks)
    encoded = codec.encode(landmarks).view(6, 21, 3)
    assert (
        abs(encoded[..., 2].mean().item()) < 1e-5
        and abs(encoded[..., 2].std(unbiased=False).item() - 1) < 1e-4
    )
    np.testing.assert_allclose(codec.decode(codec.encode(landmarks)), landmarks, atol=1e-6)
    assert LandmarkCodec.from_dict(codec.to_dict()) == codec


def test_fit_writes_checkpoints_that_round_trip(tmp_path):
    train, validation = skeleton_split(10, seed=1), skeleton_split(4, seed=2)
    result = fit(train, validation, TINY, tmp_path, log=lambda _: None)
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert result.best_epoch in (1, 2)
    best = load_checkpoint(tmp_path / BEST)
    assert best["epoch"] == result.best_epoch and best["train_params"] == dataclasses.asdict(TINY)
    model, codec, config = model_from_checkpoint(best)
    predicted = predict(model, validation.images, codec, torch.device("cpu"))
    assert predicted.shape == (4, 21, 3)
    from pipeline.training import validation_metrics

    assert validation_metrics(predicted, validation)["mpjpe_px"] == pytest.approx(
        result.best_val["mpjpe_px"], rel=1e-5
    )


def test_same_params_same_metrics(tmp_path):
    train, validation = skeleton_split(10, seed=1), skeleton_split(4, seed=2)
    first = fit(train, validation, TINY, tmp_path / "a", log=lambda _: None)
    second = fit(train, validation, TINY, tmp_path / "b", log=lambda _: None)
    assert [r["val"] for r in first.history] == [r["val"] for r in second.history]
    assert [r["train_loss"] for r in first.history] == [r["train_loss"] for r in second.history]


RUNNER = textwrap.dedent(
    """
    import os, signal, sys, torch
    from pipeline.params import TrainParams
    from pipeline.training import fit
    train, validation = torch.load(sys.argv[1], weights_only=False)
    kill_after = int(sys.argv[3])
    def on_epoch_end(row):
        if row["epoch"] == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, like a machine that goes away
    params = TrainParams(image_size=32, epochs=3, batch_size=4, device="cpu", threads=2)
    fit(train, validation, params, sys.argv[2], on_epoch_end=on_epoch_end)
    """
)


def test_a_killed_run_resumes_to_the_same_result(tmp_path):
    data_file = tmp_path / "data.pt"
    torch.save((skeleton_split(10, seed=1), skeleton_split(4, seed=2)), data_file)
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}

    def run(directory, kill_after):
        return subprocess.run(
            [sys.executable, str(script), str(data_file), str(directory), str(kill_after)],
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
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name


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


def test_nan_loss_stops_naming_the_epoch(tmp_path):
    train, validation = skeleton_split(6, seed=1), skeleton_split(2, seed=2)
    train.landmarks[2, 5, 0] = np.nan
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
        build_model(model_config_for(dataclasses.replace(TINY, pretrained="imagenet")))
