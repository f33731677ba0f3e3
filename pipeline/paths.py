"""Where the stages write: every output path in one place.

Stage scripts, the command-line tools and the tests take paths from here, so that no stage
imports another stage (a stage's DVC deps are the files its command imports) and a path is
spelled once. Relative to the repository root, where DVC runs the stages.
"""

from __future__ import annotations

from pathlib import Path

TEACHER_MODEL = Path("models/teacher/hand_landmarker.task")
TEACHER_METRICS = Path("metrics/teacher.json")

SYNTHETIC_ROOT = Path("data/synthetic")

LABELS = Path("data/landmarks/labels.parquet")
SKIPPED = Path("data/landmarks/skipped.csv")
LANDMARKS_METRICS = Path("metrics/landmarks.json")
# data.extra_sources: each data set's own labels, by its name (stage landmarks_source@NAME)
SOURCE_LABELS_DIR = Path("data/landmarks/sources")
SOURCE_LANDMARKS_METRICS_DIR = Path("metrics/landmarks")


def labels_of(name: str | None = None) -> tuple[Path, Path, Path]:
    """The label table, skip report and metrics of the main data set (None) or of the extra
    data set ``name``."""
    if name is None:
        return LABELS, SKIPPED, LANDMARKS_METRICS
    folder = SOURCE_LABELS_DIR / name
    return (
        folder / "labels.parquet",
        folder / "skipped.csv",
        SOURCE_LANDMARKS_METRICS_DIR / f"{name}.json",
    )


SPLIT_LABELS = Path("data/split/labels.parquet")
DROPPED = Path("data/split/dropped.csv")
SPLIT_METRICS = Path("metrics/split.json")

PRETRAIN_DIR = Path("models/pretrain")
PRETRAIN_METRICS = Path("metrics/pretrain.json")  # what the renders were labelled by, left out
FINDER_DIR = Path("models/finder")
FINDER_METRICS = Path("metrics/finder.json")
STUDENT_DIR = Path("models/student")
LIVE_DIR = Path("dvclive")

EVALUATE_METRICS = Path("metrics/evaluate.json")
PLOTS_DIR = Path("plots")

EXPORT_DIR = Path("models/export")  # student.pt (the bundle), student.onnx, finder.onnx
EXPORT_METRICS = Path("metrics/export.json")

# The headline numbers (what `dvc metrics show` prints; the files above are the detail) and the
# page template that lets `dvc plots show` work offline (.dvc/config names it).
SUMMARY = Path("metrics/summary.json")
OFFLINE_TEMPLATE = Path("plots/offline.html")
