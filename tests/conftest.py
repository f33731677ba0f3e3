from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DIGITS = (REPO / ".." / "shared" / "data" / "sign-language-digits").resolve()

# Keep tests on two CPU threads and quiet MediaPipe's C++ logging.
os.environ.setdefault("GLOG_minloglevel", "2")


@pytest.fixture(scope="session")
def teacher_model(tmp_path_factory) -> Path:
    """The real pinned MediaPipe bundle (cached per machine after the first download)."""
    from pipeline.teacher import build_teacher_model

    path = tmp_path_factory.mktemp("teacher") / "hand_landmarker.task"
    build_teacher_model(path)
    return path


@pytest.fixture(scope="session")
def tiny_repro(tmp_path_factory, teacher_model) -> tuple[Path, str]:
    """A throw-away repo after one real `dvc repro` of the tiny chain, and that run's output.
    Tests copy it (``tests.dvc_repo.copy_repo``) and never change it."""
    from tests.dvc_repo import TINY_PARAMS, make_repo, run

    root = make_repo(tmp_path_factory.mktemp("tiny_repro"), TINY_PARAMS)
    return root, run(["dvc", "repro"], root)


@pytest.fixture(scope="session")
def digits_root() -> Path:
    if not SHARED_DIGITS.is_dir():
        pytest.skip(f"real hand photos not found at {SHARED_DIGITS} (../shared is absent)")
    return SHARED_DIGITS


def write_png(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def noise_image(seed: int, height: int = 48, width: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
