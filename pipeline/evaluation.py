"""Evaluate the best student on the test and validation splits against the teacher (and truth)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.data import SplitData, load_split
from pipeline.images import read_image
from pipeline.inference import predict
from pipeline.keypoints import JOINT_NAMES, hand_size, to_pixels
from pipeline.metrics import (
    CURVE_THRESHOLDS,
    compare_landmarks,
    joint_errors,
    pck_curve,
    validation_metrics,
)
from pipeline.plots import grid, overlay_tile


@dataclass
class SplitEvaluation:
    metrics: dict
    pck_curves: pd.DataFrame  # threshold + one column per comparison
    per_joint: pd.DataFrame  # joint, mpjpe_px
    per_class: pd.DataFrame  # class_name, images, mpjpe_px, mpjpe_norm_hand, pck_10
    predicted: np.ndarray  # (N, joints, 3) normalised


def evaluate_split(
    model, codec, data: SplitData, device: torch.device, batch_size: int
) -> SplitEvaluation:
    predicted = predict(model, data.images, codec, device, batch_size, data.width, data.height)
    student_vs_teacher = validation_metrics(predicted, data.landmarks, data.width, data.height)
    metrics: dict = {"images": len(data), "student_vs_teacher": student_vs_teacher}
    teacher_px = to_pixels(data.landmarks, data.width, data.height)
    student_px = to_pixels(predicted, data.width, data.height)
    curves = {"threshold": CURVE_THRESHOLDS}
    curves["student_vs_teacher"] = pck_curve(
        joint_errors(student_px, teacher_px), hand_size(teacher_px)
    )
    truth = data.true_landmarks
    if truth is not None:
        truth_px = to_pixels(truth, data.width, data.height)
        truth_size = hand_size(truth_px)
        metrics["teacher_vs_truth"] = compare_landmarks(
            data.landmarks, truth, data.width, data.height
        )
        metrics["student_vs_truth"] = compare_landmarks(predicted, truth, data.width, data.height)
        curves["teacher_vs_truth"] = pck_curve(joint_errors(teacher_px, truth_px), truth_size)
        curves["student_vs_truth"] = pck_curve(joint_errors(student_px, truth_px), truth_size)

    errors = joint_errors(student_px, teacher_px)
    per_joint = pd.DataFrame({"joint": JOINT_NAMES, "mpjpe_px": errors.mean(axis=0).round(4)})
    rows = []
    classes = data.table["class_name"].to_numpy()
    for class_name in sorted(set(classes)):
        mask = classes == class_name
        m = compare_landmarks(
            predicted[mask], data.landmarks[mask], data.width[mask], data.height[mask]
        )
        rows.append(
            {
                "class_name": class_name,
                "images": int(mask.sum()),
                **{k: m[k] for k in ("mpjpe_px", "mpjpe_norm_hand", "pck_10")},
            }
        )
    return SplitEvaluation(
        metrics=metrics,
        pck_curves=pd.DataFrame(curves).round(6),
        per_joint=per_joint,
        per_class=pd.DataFrame(rows),
        predicted=predicted,
    )


def overlay_grid(
    data: SplitData, predicted: np.ndarray, data_root: str | Path, count: int
) -> np.ndarray:
    """Evenly spaced test photos with the teacher (green) and student (magenta) skeletons."""
    picks = np.unique(np.linspace(0, len(data) - 1, min(count, len(data))).round().astype(int))
    teacher_px = to_pixels(data.landmarks, data.width, data.height)
    student_px = to_pixels(predicted, data.width, data.height)
    errors = joint_errors(student_px, teacher_px).mean(axis=1)
    tiles = []
    for i in picks:
        row = data.table.iloc[i]
        rgb = read_image(Path(data_root) / row["path"])
        caption = f"{Path(row['path']).name[:28]}  {errors[i]:.1f}px"
        tiles.append(
            overlay_tile(rgb, {"teacher": teacher_px[i], "student": student_px[i]}, caption)
        )
    return grid(
        tiles,
        columns=4,
        legend="green: teacher (MediaPipe)   magenta: student   caption: mean error vs teacher",
    )


def load_eval_split(
    table: pd.DataFrame,
    split: str,
    data_root: str | Path,
    image_size: int,
    layout: str = "squash",
    budget_bytes: int | None = None,
) -> SplitData:
    selected = table[table["split"] == split]
    if selected.empty:
        raise ValueError(
            f"the {split} split is empty after filtering; nothing to evaluate "
            "(see data/split/dropped.csv)"
        )
    return load_split(selected, data_root, image_size, layout, budget_bytes)
