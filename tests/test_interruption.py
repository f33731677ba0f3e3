"""kill -9 in the middle of `dvc repro`: no half-written output is taken as valid, the next
`dvc repro` finishes (training resumes from its last checkpoint), and results are deterministic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from tests.dvc_repo import make_repo, run

PARAMS = {
    "synthetic": {"num_images": 240, "num_subjects": 4},
    "landmarks": {"workers": 2},
    "finder": {"image_size": 32, "epochs": 1, "batch_size": 8},
    "pretrain": {"num_images": 0},
    # One thread: with two, under `nice` beside a job that keeps one core busy, every parallel
    # region waited for the starved thread and 2 epochs took over 300 s. 8 epochs, killed after
    # 2: a wide window, so that a busy machine cannot let the run finish before the kill lands.
    "train": {"pretrained": "none", "image_size": 64, "epochs": 8, "batch_size": 8, "threads": 1},
    "evaluate": {"grid_images": 2},
}
TIMING_KEYS = {"images_per_second", "seconds"}


def start(command: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )


def kill_group(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def wait_for(condition, timeout: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(
                f"finished before it could be killed:\n{process.stdout.read().decode()}"
            )
        if time.monotonic() > deadline:
            kill_group(process)
            raise AssertionError("timed out waiting to kill")
        time.sleep(0.1)


def without_timing(value):
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    return value


@pytest.fixture(scope="module")
def repo(tmp_path_factory, teacher_model) -> Path:
    root = make_repo(tmp_path_factory.mktemp("repo"), PARAMS)
    run(["dvc", "repro", "synthesize", "teacher"], root)
    return root


def test_killed_labeling_leaves_no_output_and_reruns_cleanly(repo):
    process = start(["dvc", "repro", "landmarks"], repo)

    def labelling_midway() -> bool:  # the stage's pool workers run the teacher
        try:
            workers = [
                p
                for p in psutil.Process(process.pid).children(recursive=True)
                if "multiprocessing" in " ".join(p.cmdline())
            ]
        except psutil.NoSuchProcess:
            return False
        return sum(w.cpu_times().user > 0.5 for w in workers) >= 2

    wait_for(labelling_midway, timeout=120, process=process)
    kill_group(process)
    assert not (repo / "data/landmarks/labels.parquet").exists()
    assert not (repo / "metrics/landmarks.json").exists()
    assert "landmarks" in run(["dvc", "status", "landmarks"], repo)  # DVC knows it must run
    run(["dvc", "repro", "landmarks"], repo)
    first = pd.read_parquet(repo / "data/landmarks/labels.parquet")
    assert len(first) == 240
    # same params → the same table, again
    run(["dvc", "repro", "-f", "landmarks"], repo)
    pd.testing.assert_frame_equal(first, pd.read_parquet(repo / "data/landmarks/labels.parquet"))


def kill_at_line(process: subprocess.Popen, marker: str, timeout: float) -> None:
    """kill -9 the moment the process prints ``marker``: the stage's own log says where it is,
    with no file polling (under load, polling last.pt saw epoch 2 only after the stage ended)."""
    timer = threading.Timer(timeout, kill_group, [process])
    timer.start()
    seen = []
    try:
        for raw in process.stdout:
            seen.append(raw.decode(errors="replace"))
            if marker in seen[-1]:
                kill_group(process)
                return
    finally:
        timer.cancel()
    raise AssertionError(f"no {marker!r} within {timeout} s, or finished first:\n{''.join(seen)}")


def test_killed_training_resumes_to_the_uninterrupted_result(repo):
    run(["dvc", "repro", "split"], repo)
    last = repo / "models/student/last.pt"
    process = start(["dvc", "repro", "train"], repo)
    # the train stage logs an epoch after its checkpoint is written
    kill_at_line(process, f"epoch 2/{PARAMS['train']['epochs']}", timeout=900)
    resumed = run(["dvc", "repro", "train"], repo)
    assert "resuming from models/student/last.pt after epoch" in resumed
    resumed_metrics = json.loads((repo / "dvclive/metrics.json").read_text())
    assert "up to date" in run(["dvc", "status", "train"], repo)

    last.unlink()
    run(["dvc", "repro", "-f", "train"], repo)  # uninterrupted, from scratch
    straight_metrics = json.loads((repo / "dvclive/metrics.json").read_text())
    assert without_timing(resumed_metrics) == without_timing(straight_metrics)
    steps = pd.read_csv(repo / "dvclive/plots/metrics/val/mpjpe_px.tsv", sep="\t")
    assert list(steps["step"]) == list(range(1, PARAMS["train"]["epochs"] + 1))

    # models/student persists for resuming, but a finished last.pt from other code must not be
    # "resumed" at its last epoch and recorded as the new code's result
    losses = repo / "pipeline" / "losses.py"
    losses.write_text(losses.read_text() + "\n# a code change\n")
    assert "train" in run(["dvc", "status", "train"], repo)
    retrained = run(["dvc", "repro", "train"], repo)
    assert "is from other params, data or code; training from scratch" in retrained
    assert "resuming" not in retrained
