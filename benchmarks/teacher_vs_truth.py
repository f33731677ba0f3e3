"""Where the teacher and the rendered truth disagree: a realism report of the synthetic hands.

Reads the label table of a synthetic run (``data/landmarks/labels.parquet`` after `dvc repro`,
which holds the teacher's landmarks and the renderer's true ones) and breaks the teacher's error
against the truth down by gesture and joint, with the one number that separates "the teacher
reads the hand a little smaller" from "the teacher reads another pose": the scale of the best
similarity transform from the truth to the teacher's landmarks (1 = the same size). MediaPipe's
error against the rendered truth is the project's measure of how hand-like the renders are
(docs/data.md); this says which renders to work on.

    python benchmarks/teacher_vs_truth.py                              # the default run's table
    python benchmarks/teacher_vs_truth.py --labels other/labels.parquet
"""

# The repo root goes on sys.path before the imports, so `python benchmarks/<name>.py` works.
# ruff: noqa: E402
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

from benchmarks.common import finish, machine, markdown_table
from pipeline.keypoints import JOINT_NAMES, NUM_JOINTS, hand_size, to_pixels
from pipeline.metrics import joint_errors, landmark_metrics, pck
from pipeline.schema import LANDMARK_COLUMNS, TRUTH_COLUMNS

NAME = "teacher_vs_truth"


def pixels(table: pd.DataFrame, columns: list[str], dims: int) -> np.ndarray:
    """(N, 21, 2) landmarks in pixels from normalised columns of ``dims`` values per joint."""
    values = table[columns].to_numpy(np.float64).reshape(len(table), NUM_JOINTS, dims)
    return to_pixels(values, table["width"].to_numpy(), table["height"].to_numpy())


def similarity_scale(teacher: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(N,) size of the teacher's hand relative to the truth's, about each one's centroid."""
    a = teacher - teacher.mean(axis=1, keepdims=True)
    b = truth - truth.mean(axis=1, keepdims=True)
    return np.sqrt((a**2).sum(axis=(1, 2)) / (b**2).sum(axis=(1, 2)))


def compare(teacher: np.ndarray, truth: np.ndarray, width: np.ndarray) -> dict:
    result = landmark_metrics(teacher, truth, hand_size(truth), width)
    result["images"] = len(truth)
    result["median_scale"] = round(float(np.median(similarity_scale(teacher, truth))), 4)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--labels", type=Path, default=Path("data/landmarks/labels.parquet"))
    args = parser.parse_args()
    if not args.labels.is_file():
        raise SystemExit(f"{args.labels} not found: run `dvc repro landmarks` first")
    table = pd.read_parquet(args.labels)
    if not set(TRUTH_COLUMNS) <= set(table.columns):
        raise SystemExit(f"{args.labels} has no true landmarks: it is not a synthetic run's table")
    both = table[
        np.isfinite(table[LANDMARK_COLUMNS].to_numpy(np.float64)).all(axis=1)
        & np.isfinite(table[TRUTH_COLUMNS].to_numpy(np.float64)).all(axis=1)
    ].reset_index(drop=True)
    teacher, truth = pixels(both, LANDMARK_COLUMNS, 3), pixels(both, TRUTH_COLUMNS, 2)
    width = both["width"].to_numpy(np.float64)
    result = {"machine": machine(), "labels": str(args.labels), "all": {}, "per_gesture": {}}
    result["all"] = compare(teacher, truth, width)
    rows = []
    for gesture in sorted(both["class_name"].unique()):
        mine = (both["class_name"] == gesture).to_numpy()
        found = compare(teacher[mine], truth[mine], width[mine])
        result["per_gesture"][gesture] = found
        rows.append([gesture, found["images"], found["pck_10"], found["mpjpe_norm_hand"],
                     found["median_scale"]])  # fmt: skip
    everything = result["all"]
    rows.append(["all", everything["images"], everything["pck_10"],
                 everything["mpjpe_norm_hand"], everything["median_scale"]])  # fmt: skip
    print("teacher vs the rendered truth, by gesture (scale: the teacher's hand / the truth's)")
    print(markdown_table(["gesture", "hands", "PCK@0.1", "mean / hand", "scale"], rows))

    errors, sizes = joint_errors(teacher, truth), hand_size(truth)
    per_joint = {name: round(pck(errors[:, j : j + 1], sizes, 0.1), 4)
                 for j, name in enumerate(JOINT_NAMES)}  # fmt: skip
    result["per_joint_pck_10"] = per_joint
    worst = sorted(per_joint.items(), key=lambda item: item[1])[:5]
    print("hardest joints (PCK@0.1): " + ", ".join(f"{n} {v:.3f}" for n, v in worst))
    finish(NAME, result)


if __name__ == "__main__":
    main()
