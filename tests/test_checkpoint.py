"""Checkpoints hold tensors and plain values and load without running code; a crafted .pt is
refused naming the file, before anything in it runs."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch

from pipeline.checkpoint import CheckpointError, code_digest, load_checkpoint, save_checkpoint
from pipeline.cli import main
from pipeline.imports import REPO
from pipeline.student import load_student


class _CreatesAFile:
    """Unpickling this calls Path.touch(marker): code that runs when the file is loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _crafted(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    payload = {
        "format": 2, "model_config": {}, "codec": {}, "epoch": 1, "fingerprint": "x",
        "train_params": {}, "model": {"weight": torch.zeros(2)}, "extra": _CreatesAFile(marker),
    }  # fmt: skip
    path = tmp_path / "best.pt"
    torch.save(payload, path)
    # the file really carries the call: a plain (unsafe) unpickle would create the marker
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    return path, marker


def test_a_checkpoint_that_carries_code_is_refused_and_the_code_never_runs(tmp_path, capsys):
    path, marker = _crafted(tmp_path)
    with pytest.raises(CheckpointError, match="could run code") as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)
    with pytest.raises(CheckpointError, match="could run code"):
        load_student(path, "cpu")
    photos = tmp_path / "photos"
    photos.mkdir()
    assert main(["predict", str(path), str(photos), "-o", str(tmp_path / "p.csv")]) == 2
    assert "could run code" in capsys.readouterr().err
    assert not marker.exists()


def test_saving_anything_but_tensors_and_plain_values_is_refused(tmp_path):
    with pytest.raises(TypeError, match=r"checkpoint\['extra'\] is a _CreatesAFile"):
        save_checkpoint(tmp_path / "x.pt", {"extra": _CreatesAFile(tmp_path / "m")})
    assert not (tmp_path / "x.pt").exists()
    plain = {"a": [1, 2.5, "s", None, True, (3, 4)], "t": {"w": torch.ones(3)}}
    save_checkpoint(tmp_path / "ok.pt", plain)
    loaded = torch.load(tmp_path / "ok.pt", weights_only=True)
    assert loaded["a"] == plain["a"] and torch.equal(loaded["t"]["w"], plain["t"]["w"])


def test_the_code_digest_follows_the_files_training_imports_and_no_others(tmp_path):
    """A fresh clone's `dvc repro` must write the checkpoints (and so the dvc.lock) the
    workspace has: a file the train stages do not import must not change their fingerprint."""
    shutil.copytree(REPO / "pipeline", tmp_path / "pipeline")
    before = code_digest(root=tmp_path)
    assert before == code_digest()  # the copy is the same code
    with open(tmp_path / "pipeline" / "predict.py", "a") as file:  # not imported by training
        file.write("\n# a comment\n")
    assert code_digest(root=tmp_path) == before
    with open(tmp_path / "pipeline" / "losses.py", "a") as file:  # imported by training
        file.write("\n# a comment\n")
    assert code_digest(root=tmp_path) != before
