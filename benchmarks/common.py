"""What the benchmarks share: the machine's description, the test images, tables, result files.

Every benchmark measures its numbers as ratios within one run, records the load average before
and after (other processes on the machine skew everything), prints a markdown table and writes
``benchmarks/results/<name>.json``.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DIGITS = (REPO / ".." / "shared" / "data" / "sign-language-digits").resolve()
WIDTH, HEIGHT = 640, 480  # the synthetic source's size and the teacher's usual input


def cpu_count() -> int:
    from pipeline.machine import available_cores

    return available_cores()


def machine() -> dict:
    """The facts a number depends on (CPU, cores, versions, how busy the machine was)."""
    import onnxruntime
    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": cpu_count(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "load_average_1min_before": round(os.getloadavg()[0], 2),
        "nice": os.nice(0),
        "autogroup": _read("/proc/self/autogroup"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def finish(name: str, result: dict) -> Path:
    """Add the closing load average, write ``benchmarks/results/<name>.json``, say where."""
    from pipeline.io import write_json

    result["machine"]["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    path = RESULTS / f"{name}.json"
    write_json(path, result)
    before = result["machine"]["load_average_1min_before"]
    print(f"\nload average (1 min) {before} before, {os.getloadavg()[0]:.2f} after; wrote {path}")
    if max(before, os.getloadavg()[0]) > 0.5 * cpu_count():
        print("warning: the machine was busy with other work; these numbers are pessimistic")
    return path


def markdown_table(header: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def median(values: list[float]) -> float:
    return float(statistics.median(values))


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc_info) -> None:
        self.seconds = time.perf_counter() - self.started


def repo_environment(**extra: str) -> dict[str, str]:
    """This process's environment for a subprocess that imports the project (``python -m
    stages.train``, torchrun workers): the repo first on PYTHONPATH, the caller's after it."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def temporary_folder(prefix: str) -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix=f"lhl-bench-{prefix}-")


def write_images(source: str, count: int, folder: Path, seed: int = 0):
    """``count`` 640x480 hand images as files under ``folder``; returns their ``DataListing``.

    ``synthetic``: the project's renderer (``pipeline.sources.synthetic``), which MediaPipe finds
    hands in. ``digits``: the real 100x100 photos of ../shared/data/sign-language-digits, scaled to
    480x480 and padded to 640x480 with their edge pixels (the hand keeps its shape).
    """
    from pipeline.sources.listing import list_images

    folder = Path(folder)
    if source == "synthetic":
        from pipeline.params import SyntheticParams
        from pipeline.sources.synthetic import write_synthetic_dataset

        params = SyntheticParams(num_images=count, width=WIDTH, height=HEIGHT, seed=seed)
        write_synthetic_dataset(folder / "synthetic", params)
        return list_images("synthetic", folder / "synthetic")
    if source != "digits":
        raise ValueError(f"unknown image source {source!r}; use synthetic or digits")
    if not DIGITS.is_dir():
        raise SystemExit(f"--source digits needs the photos at {DIGITS}; use --source synthetic")
    photos = sorted(p for p in DIGITS.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    chosen = np.random.default_rng(seed).permutation(len(photos))[:count]
    for i in sorted(chosen):
        photo = cv2.imread(str(photos[i]))
        side = HEIGHT
        big = cv2.resize(photo, (side, side), interpolation=cv2.INTER_CUBIC)
        pad = (WIDTH - side) // 2
        big = cv2.copyMakeBorder(big, 0, 0, pad, WIDTH - side - pad, cv2.BORDER_REPLICATE)
        target = folder / "digits" / photos[i].parent.name / f"{photos[i].stem}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target), big)
    return list_images("folders", folder / "digits")


def truth_table(listing) -> pd.DataFrame:
    """The label table of rendered images (``write_images("synthetic", ...)``) with their TRUE
    landmarks (z = 0) in place of the teacher's: training data without a labeling run."""
    from pipeline.keypoints import NUM_JOINTS
    from pipeline.schema import LANDMARK_COLUMNS

    truth = np.stack([record.true_landmarks for record in listing.records])
    landmarks = np.concatenate([truth, np.zeros((len(truth), NUM_JOINTS, 1))], axis=-1)
    table = pd.DataFrame(
        {
            "path": [record.path for record in listing.records],
            "class_name": [record.class_name for record in listing.records],
            "width": WIDTH,
            "height": HEIGHT,
            "handedness": "Right",
            "handedness_score": 1.0,
        }
    )
    table[LANDMARK_COLUMNS] = landmarks.reshape(len(table), -1)
    return table


def read_all(listing) -> list[np.ndarray]:
    from pipeline.images import read_image

    return [read_image(listing.root / record.path) for record in listing.records]


def tree_memory(root, kind: str = "rss") -> int:
    """Summed memory of ``root`` (a psutil.Process) and all its descendants, in bytes: ``rss``
    (resident; shared pages count in every process) or ``pss`` (proportional: a page mapped by
    k processes counts 1/k in each, so the sum counts it once). Processes that end meanwhile
    count 0."""
    import psutil

    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            info = process.memory_full_info() if kind == "pss" else process.memory_info()
            total += getattr(info, kind)
        except psutil.Error:
            pass
    return total
