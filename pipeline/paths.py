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

SPLIT_LABELS = Path("data/split/labels.parquet")
DROPPED = Path("data/split/dropped.csv")
SPLIT_METRICS = Path("metrics/split.json")

PRETRAIN_DIR = Path("models/pretrain")
STUDENT_DIR = Path("models/student")
LIVE_DIR = Path("dvclive")

EVALUATE_METRICS = Path("metrics/evaluate.json")
PLOTS_DIR = Path("plots")

ONNX_MODEL = Path("models/student.onnx")
EXPORT_METRICS = Path("metrics/export.json")
