"""Evaluate the student on the test and validation splits against the teacher (and the truth).

Through the student a user gets (``pipeline.student``): end to end (the finder's crop, then the
landmark network on it), and for a top-down student also on the oracle crop (the teacher's
landmarks' square), side by side, so that what the finder costs is in plain sight. Landmark
metrics are over the images where the teacher found a hand; the presence is compared with the
teacher's verdict over all images, those without a hand included.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.crops import square_corners
from pipeline.images import read_image
from pipeline.inference import Network
from pipeline.keypoints import JOINT_NAMES, NUM_JOINTS, hand_size, to_pixels
from pipeline.machine import available_cores
from pipeline.metrics import (
    CURVE_THRESHOLDS,
    compare_landmarks,
    joint_errors,
    pck_curve,
    presence_agreement,
    validation_metrics,
)
from pipeline.plots import grid, overlay_tile
from pipeline.samples import drawn_hand, has_hand, known_empty, oracle_squares
from pipeline.schema import DATASET, LANDMARK_COLUMNS, TRUTH_COLUMNS, image_paths
from pipeline.student import (
    MARGIN_SCALE_LIMITS,
    Student,
    TopDownStudent,
    finder_margin_scale,
)


@dataclass
class StudentOutputs:
    """What the student said about a split's images, aligned with its rows."""

    table: pd.DataFrame
    landmarks: np.ndarray  # (N, joints, 3) end to end, table units
    presence: np.ndarray  # (N,) end to end
    squares: np.ndarray  # (N, 3) the crops the landmarks were read in (NaN: whole frame)
    oracle: np.ndarray | None  # (N, joints, 3) on the teacher's crop (NaN where no hand)


@dataclass
class SplitEvaluation:
    metrics: dict
    pck_curves: pd.DataFrame  # threshold + one column per comparison
    per_joint: pd.DataFrame  # joint, mpjpe_px
    per_class: pd.DataFrame  # class_name, images, mpjpe_px, mpjpe_norm_hand, pck_10
    outputs: StudentOutputs


def run_student(
    student: Student,
    table: pd.DataFrame,
    data_root: str | Path | Mapping[str, str | Path],
    batch_size: int,
) -> StudentOutputs:
    """The student on every image of ``table``, ``batch_size`` images at a time (decoded in
    threads), end to end and, for a top-down student, on the teacher's crops. ``data_root``:
    one folder, or each data set's by name (``DataParams.roots``)."""
    table = table.reset_index(drop=True)
    paths = image_paths(table, data_root)
    width, height = table["width"].to_numpy(np.float64), table["height"].to_numpy(np.float64)
    found = has_hand(table)
    top_down = isinstance(student, TopDownStudent)
    oracle_at = oracle_squares(table, student.landmarks.crop_margin) if top_down else None
    landmarks = np.full((len(table), NUM_JOINTS, 3), np.nan)
    presence, squares = np.zeros(len(table)), np.full((len(table), 3), np.nan)
    oracle = np.full((len(table), NUM_JOINTS, 3), np.nan) if top_down else None
    with ThreadPoolExecutor(min(4, available_cores())) as pool:
        for start in range(0, len(table), batch_size):
            rows = np.arange(start, min(start + batch_size, len(table)))
            rgbs = list(pool.map(read_image, [paths[i] for i in rows]))
            result = student.predict_images(rgbs, batch_size)
            pixels = result.landmarks
            landmarks[rows, :, 0] = pixels[..., 0] / width[rows, None]
            landmarks[rows, :, 1] = pixels[..., 1] / height[rows, None]
            landmarks[rows, :, 2] = pixels[..., 2]
            presence[rows], squares[rows] = result.presence, result.squares
            if top_down and found[rows].any():
                hands = rows[found[rows]]
                picked = [rgbs[i] for i in np.flatnonzero(found[rows])]
                oracle[hands], _ = student.crop_pass(picked, oracle_at[hands], batch_size)
    return StudentOutputs(table, landmarks, presence, squares, oracle)


def calibrate_finder_margin(
    finder: Network,
    table: pd.DataFrame,
    data_root: str | Path | Mapping[str, str | Path],
    margin: float,
    batch_size: int = 32,
) -> dict:
    """The finder's own crop margin, from ``table``'s frames with a teacher hand (the validation
    split), against the teacher's squares at ``margin`` (the landmark model's): the finder's
    present margin times ``finder_margin_scale`` (held within ``MARGIN_SCALE_LIMITS``). Returns
    the margin, the scale applied, the one measured and how many frames it was measured on."""
    hands = table[has_hand(table)].reset_index(drop=True)
    with ThreadPoolExecutor(min(4, available_cores())) as pool:
        rgbs = list(pool.map(read_image, image_paths(hands, data_root)))
    measured = finder_margin_scale(finder, rgbs, oracle_squares(hands, margin), batch_size)
    scale = float(np.clip(measured, *MARGIN_SCALE_LIMITS))
    return {"crop_margin": finder.crop_margin * scale, "scale": scale, "measured": measured,
            "frames": len(hands)}  # fmt: skip


def _teacher(table: pd.DataFrame) -> np.ndarray:
    return table[LANDMARK_COLUMNS].to_numpy(np.float64).reshape(len(table), NUM_JOINTS, 3)


def _truth(table: pd.DataFrame) -> np.ndarray | None:
    if not set(TRUTH_COLUMNS) <= set(table.columns):
        return None
    truth = table[TRUTH_COLUMNS].to_numpy(np.float64).reshape(len(table), NUM_JOINTS, 2)
    return None if np.isnan(truth).any() else truth


def evaluate_outputs(outputs: StudentOutputs, min_presence: float) -> SplitEvaluation:
    """Metrics, curves and tables of the student's outputs on one split."""
    table = outputs.table
    found = has_hand(table)
    if not found.any():
        raise ValueError("no image of the split has a teacher hand; nothing to evaluate")
    hands = table[found].reset_index(drop=True)
    width, height = hands["width"].to_numpy(np.float64), hands["height"].to_numpy(np.float64)
    teacher = _teacher(hands)
    predicted = outputs.landmarks[found]
    metrics: dict = {
        "images": int(len(table)),
        "images_with_hand": int(found.sum()),
        "student_vs_teacher": validation_metrics(predicted, teacher, width, height),
        "presence": {
            "min_presence": min_presence,
            **presence_agreement(outputs.presence, found, min_presence),
        },
    }
    drawn = drawn_hand(table)
    if drawn.any():
        # Rendered data knows where a hand really is: the teacher's misses of a drawn hand are
        # negatives too (the student learns the teacher), but apart from the empty frames.
        # Photos carry empty truth columns: nothing is known there, so nothing is reported
        # (nor counted as an empty frame where photos and renders share a split).
        says_hand = outputs.presence >= min_presence
        empty = known_empty(table)
        missed = drawn & ~found
        metrics["presence"]["no_hand_agreement_empty_frames"] = (
            round(float((~says_hand[empty]).mean()), 6) if empty.any() else None
        )
        metrics["presence"]["teacher_missed_drawn_hands"] = int(missed.sum())
    teacher_px, student_px = to_pixels(teacher, width, height), to_pixels(predicted, width, height)
    curves = {"threshold": CURVE_THRESHOLDS}
    curves["student_vs_teacher"] = pck_curve(
        joint_errors(student_px, teacher_px), hand_size(teacher_px)
    )
    # the plot of the curves draws both: a whole-frame student has no oracle crop (empty)
    curves["oracle_crop_vs_teacher"] = np.full(len(CURVE_THRESHOLDS), np.nan)
    if outputs.oracle is not None:
        oracle = outputs.oracle[found]
        metrics["oracle_crop"] = validation_metrics(oracle, teacher, width, height)
        oracle_px = to_pixels(oracle, width, height)
        curves["oracle_crop_vs_teacher"] = pck_curve(
            joint_errors(oracle_px, teacher_px), hand_size(teacher_px)
        )
    truth = _truth(hands)
    if truth is not None:
        truth_px = to_pixels(truth, width, height)
        truth_size = hand_size(truth_px)
        metrics["teacher_vs_truth"] = compare_landmarks(teacher, truth, width, height)
        metrics["student_vs_truth"] = compare_landmarks(predicted, truth, width, height)
        curves["teacher_vs_truth"] = pck_curve(joint_errors(teacher_px, truth_px), truth_size)
        curves["student_vs_truth"] = pck_curve(joint_errors(student_px, truth_px), truth_size)

    errors = joint_errors(student_px, teacher_px)
    per_joint = pd.DataFrame({"joint": JOINT_NAMES, "mpjpe_px": errors.mean(axis=0).round(4)})
    rows = []
    classes = hands["class_name"].to_numpy()
    for class_name in sorted(set(classes)):
        mask = classes == class_name
        m = compare_landmarks(predicted[mask], teacher[mask], width[mask], height[mask])
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
        outputs=outputs,
    )


def per_dataset(outputs: StudentOutputs, min_presence: float) -> dict[str, dict]:
    """``evaluate_outputs``'s metrics for each data set of the split apart (empty with one data
    set); a data set whose split holds no teacher hand reports its image counts only."""
    table = outputs.table
    if DATASET not in table.columns or table[DATASET].nunique() < 2:
        return {}
    results = {}
    for name in dict.fromkeys(table[DATASET]):
        mine = (table[DATASET] == name).to_numpy()
        part = StudentOutputs(
            table[mine].reset_index(drop=True),
            outputs.landmarks[mine],
            outputs.presence[mine],
            outputs.squares[mine],
            None if outputs.oracle is None else outputs.oracle[mine],
        )
        if not has_hand(part.table).any():
            results[name] = {"images": int(mine.sum()), "images_with_hand": 0}
            continue
        results[name] = evaluate_outputs(part, min_presence).metrics
    return results


def overlay_grid(
    outputs: StudentOutputs, data_root: str | Path | Mapping[str, str | Path], count: int
) -> np.ndarray:
    """Evenly spaced test photos with a teacher hand: the teacher's (green) and the student's
    (magenta) skeletons, and the student's crop (magenta box)."""
    table = outputs.table
    found = np.flatnonzero(has_hand(table))
    spaced = np.linspace(0, len(found) - 1, min(count, len(found))).round().astype(int)
    picks = found[np.unique(spaced)]
    width, height = table["width"].to_numpy(np.float64), table["height"].to_numpy(np.float64)
    teacher_px = to_pixels(_teacher(table), width, height)
    student_px = to_pixels(outputs.landmarks, width, height)
    paths = image_paths(table, data_root)
    tiles = []
    for i in picks:
        row = table.iloc[i]
        rgb = read_image(paths[i])
        error = float(joint_errors(student_px[i : i + 1], teacher_px[i : i + 1]).mean())
        caption = f"{Path(row['path']).name[:24]}  {error:.1f}px  p={outputs.presence[i]:.2f}"
        boxes = {}
        if np.isfinite(outputs.squares[i]).all():
            boxes["student"] = square_corners(outputs.squares[i])
        tiles.append(
            overlay_tile(
                rgb, {"teacher": teacher_px[i], "student": student_px[i]}, caption, boxes=boxes
            )
        )
    return grid(
        tiles,
        columns=4,
        legend="green: teacher (MediaPipe)   magenta: student, box: its crop   caption: mean "
        "error vs teacher, presence",
    )
