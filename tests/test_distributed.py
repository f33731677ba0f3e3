"""DistributedDataParallel through the real train stage and torchrun: 2 gloo processes on the CPU
against 1 process on the same tiny data set, a kill -9 in the middle of a 2-process run, and
the guard against batches too small to share out."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import torch
import yaml

from pipeline.checkpoint import BEST, LAST, load_checkpoint, model_from_checkpoint
from pipeline.data import CACHE_PREFIX, load_split
from pipeline.distributed import launch_command
from pipeline.inference import predict
from pipeline.metrics import validation_metrics
from pipeline.model import reading_as_fitted
from pipeline.params import ParamsError, TrainParams, params_from_dict
from pipeline.schema import LANDMARK_COLUMNS
from tests.conftest import write_png
from tests.dvc_repo import REPO
from tests.tiny import skeleton_photos

TRAIN_IMAGES, VALIDATION_IMAGES = 64, 16
TRAIN = {
    "pretrained": "none",
    "input_layout": "squash",  # the whole frame: the DDP machinery is the same for crops
    "image_size": 64,
    "epochs": 10,
    "batch_size": 8,
    "device": "cpu",
    "threads": 1,  # one core per process: 2 processes fill this 2-core machine
    "rotate_deg": 15.0,
    "grayscale_p": 0.1,
    "rehearsal": 0.0,  # the skeleton photos alone: renders would only slow the comparison
}
EPOCHS = TRAIN["epochs"]
# 1 vs 2 processes differ in BatchNorm statistics (per-process halves of each batch) and in the
# augmentation and dropout draws, not in the data, batches or schedule: like another seed. The
# exact equivalence is test_one_step_of_two_processes_equals_one_step_of_one_on_the_same_batch;
# the end-to-end run is a loose check against the spread of single-process seeds.
SEEDS = (0, 1, 2)


def write_data_set(root: Path) -> None:
    photos, points = skeleton_photos(TRAIN_IMAGES + VALIDATION_IMAGES, seed=7)
    rows = []
    for i, photo in enumerate(photos):
        name = f"images/hand{i:03d}.png"
        write_png(root / "data" / name, photo)
        rows.append(
            {
                "path": name,
                "split": "train" if i < TRAIN_IMAGES else "validation",
                "class_name": "A",
                "width": 96,
                "height": 72,
                "handedness": "Left",
                "handedness_score": 0.9,
            }
        )
    table = pd.DataFrame(rows)
    landmarks = np.concatenate([points / (96, 72), np.zeros((len(rows), 21, 1))], axis=2)
    table[LANDMARK_COLUMNS] = landmarks.reshape(len(rows), -1)
    (root / "data" / "split").mkdir(parents=True)
    table.to_parquet(root / "data" / "split" / "labels.parquet")


def project(root: Path, processes: int, seed: int = 0) -> Path:
    """A working folder for the train stage: params.yaml and the labelled tiny set."""
    root.mkdir()
    values = yaml.safe_load((REPO / "params.yaml").read_text())
    values["data"].update(source="folders", root="data")
    values["train"].update(TRAIN, processes=processes, seed=seed)
    (root / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    write_data_set(root)
    return root


def train_command() -> list[str]:
    return [sys.executable, "-m", "stages.train"]


def environment() -> dict:
    # torchrun would otherwise inherit pytest's view of the repository through PYTHONPATH only
    return {**os.environ, "PYTHONPATH": str(REPO)}


def train(root: Path) -> str:
    result = subprocess.run(
        train_command(), cwd=root, capture_output=True, text=True, env=environment(), timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, tuple[Path, str]]:
    """2 processes, and 1 process (key 1); both seed 0."""
    base = tmp_path_factory.mktemp("ddp")
    return {n: (root, train(root)) for n in (1, 2) for root in [project(base / f"p{n}", n)]}


@pytest.fixture(scope="module")
def single_process_seeds(runs, tmp_path_factory) -> list[float]:
    """Final validation MPJPE of one process at each seed (seed 0 is the runs fixture's)."""
    base = tmp_path_factory.mktemp("seeds")
    values = []
    for seed in SEEDS:
        root = runs[1][0] if seed == 0 else project(base / f"s{seed}", 1, seed)
        if seed:
            train(root)
        values.append(final(root)["history"][-1]["val"]["mpjpe_px"])
    return values


def final(root: Path) -> dict:
    return load_checkpoint(root / "models" / "student" / LAST)


def test_two_gloo_processes_train_like_one(runs, single_process_seeds):
    (one, one_log), (two, two_log) = runs[1], runs[2]
    assert "torch.distributed.run --standalone --nproc-per-node=2" in two_log
    assert "2 training process(es)" in two_log and "1 training process(es)" in one_log
    # rank 0 alone wrote: one set of checkpoints, one DVCLive log with one row per epoch
    assert sorted(p.name for p in (two / "models" / "student").iterdir()) == [BEST, LAST]
    assert two_log.count(f"epoch {EPOCHS}/{EPOCHS}") == 1
    metrics = json.loads((two / "dvclive" / "metrics.json").read_text())
    assert metrics["step"] == EPOCHS
    loss_rows = (two / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv").read_text()
    assert len(loss_rows.strip().splitlines()) == 1 + EPOCHS
    single, ddp = final(one), final(two)
    assert ddp["processes"] == 2 and "processes" not in single
    assert [r["epoch"] for r in ddp["history"]] == list(range(1, EPOCHS + 1))
    # the same global batches: the same number of images per epoch, summed over both ranks
    # (images_per_second * seconds missed it by 0.64 once: both are rounded to 2 decimals)
    assert [r["images"] for r in single["history"]] == [TRAIN_IMAGES] * EPOCHS
    assert [r["images"] for r in ddp["history"]] == [TRAIN_IMAGES] * EPOCHS
    two_mpjpe = ddp["history"][-1]["val"]["mpjpe_px"]
    # as far from the single-process seeds as they are from each other, give or take: within
    # their range widened by twice its width on each side (a loose check; see above)
    low, high = min(single_process_seeds), max(single_process_seeds)
    spread = high - low
    assert low - 2 * spread <= two_mpjpe <= high + 2 * spread, (two_mpjpe, single_process_seeds)
    # best.pt is the model that was validated (rank 0's BatchNorm statistics on every rank)
    table = pd.read_parquet(two / "data" / "split" / "labels.parquet")
    validation_rows = table[table["split"] == "validation"]
    validation = load_split(validation_rows, two / "data", TRAIN["image_size"], "squash")
    best = load_checkpoint(two / "models" / "student" / BEST)
    model, codec, _ = model_from_checkpoint(best)
    with reading_as_fitted(model):  # as validation reads (train.peak_radius is for use)
        predicted, _ = predict(
            model, validation.images, codec, torch.device("cpu"), validation.frames()
        )
    assert validation_metrics(predicted, validation.landmarks, validation.width, validation.height)[
        "mpjpe_px"
    ] == pytest.approx(best["best"]["metrics"]["mpjpe_px"], rel=1e-4)
    # and both learned: far below the first epoch's error
    for checkpoint in (single, ddp):
        assert (
            checkpoint["history"][-1]["val"]["mpjpe_px"]
            < 0.5 * (checkpoint["history"][0]["val"]["mpjpe_px"])
        )


def training_processes(root: Path) -> list[int]:
    found = []
    for candidate in psutil.process_iter(["pid", "cmdline", "cwd"]):
        info = candidate.info
        if info["cwd"] == str(root) and "stages.train" in " ".join(info["cmdline"] or []):
            found.append(info["pid"])
    return found


def test_killed_two_process_run_resumes_to_the_same_result(runs, tmp_path):
    root = project(tmp_path / "killed", 2)
    process = subprocess.Popen(
        train_command(),
        cwd=root,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    last = root / "models" / "student" / LAST
    deadline = time.monotonic() + 300
    while not last.is_file():
        assert process.poll() is None, process.stdout.read().decode()
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    # torchrun's workers live in sessions of their own: they must notice and stop too, or they
    # would go on writing checkpoints under the next run
    deadline = time.monotonic() + 10
    while training_processes(root):
        assert time.monotonic() < deadline, f"still running: {training_processes(root)}"
        time.sleep(0.1)
    killed_at = final(root)["epoch"]
    assert killed_at < TRAIN["epochs"]

    log = train(root)
    assert f"resuming from models/student/{LAST} after epoch {killed_at}" in log
    resumed, uninterrupted = final(root), final(runs[2][0])
    assert resumed["history"][-1]["val"] == uninterrupted["history"][-1]["val"]
    for name, tensor in uninterrupted["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name


def _step(out: Path, processes: int, batchnorm: str) -> dict:
    args = [str(out), batchnorm]
    command = (
        launch_command(2, "tests.ddp_step_probe", args)
        if processes == 2
        else [sys.executable, "-m", "tests.ddp_step_probe", *args]
    )
    result = subprocess.run(
        command, env={**environment(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=300, cwd=out.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return torch.load(out, weights_only=True)


def _largest_difference(a: dict, b: dict, where: dict | None = None) -> float:
    assert a.keys() == b.keys()
    worst = 0.0
    for name in a:
        difference = (a[name] - b[name]).abs()
        if where is not None:
            difference = difference[where[name]]
        worst = max(worst, float(difference.max()) if difference.numel() else 0.0)
    return worst


def test_one_step_of_two_processes_equals_one_step_of_one_on_the_same_batch(tmp_path):
    """DDP equivalence where it is exact: the training loop's own step, on one global batch of 8,
    in 2 gloo processes (4 images each) and in 1 process. With BatchNorm's batch statistics out
    of play (its layers in eval mode) the gradient of the step, and the weights after it, agree
    to float rounding; with them in play, DDP equals one process that forwards each process's
    half apart (which is what per-process statistics mean)."""
    lr = TrainParams().lr
    after = {}
    for batchnorm in ("frozen", "batch"):
        one = _step(tmp_path / f"one-{batchnorm}.pt", 1, batchnorm)
        two = _step(tmp_path / f"two-{batchnorm}.pt", 2, batchnorm)
        scale = max(float(g.abs().max()) for g in one["gradients"].values())
        assert _largest_difference(one["gradients"], two["gradients"]) < 1e-5 * scale, batchnorm
        # AdamW's first step moves each weight by lr * g / (|g| + eps): where |g| is near eps
        # it turns rounding into a visible difference, elsewhere the weights agree closely
        clear = {k: g.abs() > 1e-4 * scale for k, g in one["gradients"].items()}
        assert _largest_difference(one["weights"], two["weights"], clear) < 1e-6, batchnorm
        assert _largest_difference(one["weights"], two["weights"]) <= 2 * lr
        after[batchnorm] = one
    # with and without batch statistics the steps differ: the comparisons above could fail
    frozen, batch = after["frozen"]["gradients"], after["batch"]["gradients"]
    batch_scale = max(float(g.abs().max()) for g in batch.values())
    assert _largest_difference(frozen, batch) > 1e-2 * batch_scale


def test_batch_too_small_to_share_out_is_a_clear_error():
    with pytest.raises(ParamsError, match="train.batch_size.*at least 8.*processes=4"):
        params_from_dict({"train": {"processes": 4, "batch_size": 6}})


@pytest.mark.parametrize("budget_bytes", [2**30, 0], ids=["in-memory", "over-budget"])
def test_processes_of_one_machine_share_one_decoded_cache(tmp_path, budget_bytes):
    root = tmp_path / "shared"
    root.mkdir()
    write_data_set(root)
    labels = root / "data" / "split" / "labels.parquet"
    alone = load_split(pd.read_parquet(labels), root / "data", 64, "squash")
    expected = hashlib.sha256(alone.images.numpy().tobytes()).hexdigest()
    out, scratch = tmp_path / "reports", tmp_path / "tmp"
    out.mkdir()
    scratch.mkdir()
    # a cache file left by a killed run (its creator is gone) and one of a live process
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    orphan = scratch / f"{CACHE_PREFIX}{finished.pid}-orphan"
    orphan.write_bytes(b"left behind")
    live = scratch / f"{CACHE_PREFIX}{os.getpid()}-in-use"
    live.write_bytes(b"in use")
    command = [
        *launch_command(2, "tests.ddp_cache_probe", [str(root / "data"), str(labels), str(out)]),
        str(budget_bytes),
    ]
    result = subprocess.run(
        command,
        env={**environment(), "TMPDIR": str(scratch), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    reports = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    # each process decoded half of the images into the one file both read
    assert [r["sha256"] for r in reports] == [expected, expected]
    assert [r["on_disk"] for r in reports] == [budget_bytes == 0] * 2
    assert reports[0]["inode"] != 0 and reports[0]["inode"] == reports[1]["inode"]
    # and its name was gone while they ran, so nothing is left behind (torchrun's own folder is)
    for folder in (Path("/dev/shm"), scratch):
        if folder.is_dir():
            inodes = {p.stat().st_ino for p in folder.glob(f"{CACHE_PREFIX}*")}
            assert reports[0]["inode"] not in inodes
    # where the cache went (TMPDIR over budget, or without /dev/shm), the orphan was removed and
    # the live one kept
    in_scratch = budget_bytes == 0 or not Path("/dev/shm").is_dir()
    assert live.exists() and orphan.exists() != in_scratch
    assert set(scratch.rglob(f"{CACHE_PREFIX}*")) <= {live, orphan}


ORPHAN_PROBE = """
import sys
from pathlib import Path
from pipeline.data import _remove_orphans
_remove_orphans(Path(sys.argv[1]))
print("done")
"""


def test_stale_cache_files_of_another_user_are_left_alone(tmp_path):
    """On a shared machine a dead run's cache file may belong to someone else; /tmp and /dev/shm
    are sticky, so removing it fails: it is left (and said), the run goes on."""
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    folder = tmp_path / "shared-tmp"
    folder.mkdir()
    stale = folder / f"{CACHE_PREFIX}{finished.pid}-another-user"
    stale.write_bytes(b"not ours")
    command = [sys.executable, "-c", ORPHAN_PROBE, str(folder)]
    if os.geteuid() == 0:
        # root may remove anything: the file and a sticky folder (as /tmp) belong to another
        # user, and the probe runs without the capabilities that let root ignore that
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv (util-linux) to drop CAP_FOWNER")
        os.chown(stale, 65534, 65534)
        os.chown(folder, 65534, 65534)
        folder.chmod(0o1777)
        drop = "-fowner,-dac_override"
        command = ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}", *command]
    else:
        folder.chmod(0o555)  # our own folder made read-only: unlinking fails the same way
    try:
        result = subprocess.run(
            command, env=environment(), capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        assert "done" in result.stdout
        assert "left a stale training cache file of another user alone" in result.stderr
        assert stale.exists()
    finally:
        folder.chmod(0o755)
