"""Filter the teacher's labels into train/validation/test; every dropped image gets its reason.

Images where the teacher found no hand are kept, as the presence head's negatives (``has_hand``
false, counted as ``negatives``); images whose label cannot be trusted are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.keypoints import NUM_JOINTS
from pipeline.params import SplitParams
from pipeline.schema import BOX_COLUMNS, DATASET, LANDMARK_COLUMNS
from pipeline.sources import SPLITS

# Checked in this order; an image is reported under the first rule it breaks.
REASONS: tuple[str, ...] = (
    "too_many_hands",
    "low_handedness_score",
    "landmarks_outside_image",
    "box_disagreement",
)


def combine_datasets(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The label tables of the run's data sets as one, each row named by its data set (the
    ``dataset`` column, first); paths stay relative to their data set's root."""
    parts = []
    for name, table in tables.items():
        part = table.copy()
        part.insert(0, DATASET, name)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


@dataclass
class SplitResult:
    kept: pd.DataFrame
    dropped: pd.DataFrame  # path, split, class_name, reason, detail


def landmarks_xy(table: pd.DataFrame, columns: list[str] = LANDMARK_COLUMNS) -> np.ndarray:
    """(rows, joints, 2) normalised x, y from a table's flat landmark columns."""
    per_joint = len(columns) // NUM_JOINTS
    values = table[columns].to_numpy(np.float64).reshape(len(table), NUM_JOINTS, per_joint)
    return values[..., :2]


def box_iou(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes (..., 4) given as x_min, y_min, x_max, y_max."""
    top_left = np.maximum(a_xyxy[..., :2], b_xyxy[..., :2])
    bottom_right = np.minimum(a_xyxy[..., 2:], b_xyxy[..., 2:])
    intersection = np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)
    area_a = np.prod(a_xyxy[..., 2:] - a_xyxy[..., :2], axis=-1)
    area_b = np.prod(b_xyxy[..., 2:] - b_xyxy[..., :2], axis=-1)
    return intersection / np.maximum(area_a + area_b - intersection, 1e-12)


def filter_labels(table: pd.DataFrame, params: SplitParams) -> SplitResult:
    xy = landmarks_xy(table)
    margin = params.out_of_image_margin
    size = table[["width", "height"]].to_numpy(np.float64)
    xy_px = xy * size[:, None, :]
    # Rows without a hand hold NaN landmarks; they are dropped by the first rule, so zeros do here.
    xy_known = np.nan_to_num(xy_px)
    landmark_box = np.concatenate([xy_known.min(axis=1), xy_known.max(axis=1)], axis=1)
    source_box = table[BOX_COLUMNS].to_numpy(np.float64)
    source_xyxy = np.concatenate([source_box[:, :2], source_box[:, :2] + source_box[:, 2:]], axis=1)
    has_box = ~np.isnan(source_box).any(axis=1)
    iou = np.where(has_box, box_iou(landmark_box, source_xyxy), np.nan)
    with np.errstate(invalid="ignore"):
        outside = ((xy < -margin) | (xy > 1 + margin)).any(axis=(1, 2))

    found = table["num_hands"].to_numpy() > 0
    checks = {
        "too_many_hands": (
            table["num_hands"].to_numpy() > params.max_hands,
            lambda i: f"{table['num_hands'].iat[i]} hands > split.max_hands={params.max_hands}",
        ),
        "low_handedness_score": (
            table["handedness_score"].to_numpy() < params.min_handedness_score,
            lambda i: (
                f"score {table['handedness_score'].iat[i]:.3f} < {params.min_handedness_score}"
            ),
        ),
        "landmarks_outside_image": (
            outside,
            lambda i: f"a landmark lies beyond the {margin:.0%} margin",
        ),
        "box_disagreement": (
            # where the teacher found a hand: a frame without one is a negative, box or not
            has_box & found & (np.nan_to_num(iou, nan=1.0) < params.min_box_iou),
            lambda i: f"IoU with the source box {iou[i]:.3f} < {params.min_box_iou}",
        ),
    }
    reason = np.full(len(table), "", dtype=object)
    detail = np.full(len(table), "", dtype=object)
    for name in REASONS:
        broken, describe = checks[name]
        for i in np.flatnonzero(broken & (reason == "")):
            reason[i] = name
            detail[i] = describe(i)
    dropped_mask = reason != ""
    named = [DATASET] if DATASET in table.columns else []
    dropped = table.loc[dropped_mask, [*named, "path", "split", "class_name"]].copy()
    dropped["reason"] = reason[dropped_mask]
    dropped["detail"] = detail[dropped_mask]
    kept = table.loc[~dropped_mask].reset_index(drop=True)
    kept["has_hand"] = kept["num_hands"].to_numpy() > 0
    return SplitResult(kept=kept, dropped=dropped.reset_index(drop=True))


def split_metrics(result: SplitResult, skipped_before: int) -> dict:
    negative = ~result.kept["has_hand"].to_numpy(bool)
    metrics: dict = {
        "kept": int(len(result.kept)),
        "negatives": int(negative.sum()),
        "dropped": int(len(result.dropped)),
        "skipped_unreadable_or_unlisted": int(skipped_before),
    }
    for split in SPLITS:
        in_split = result.kept["split"].to_numpy() == split
        metrics[split] = {
            "kept": int(in_split.sum()),
            "negatives": int((in_split & negative).sum()),
            "dropped": int((result.dropped["split"] == split).sum()),
        }
    metrics["dropped_by_reason"] = {r: int((result.dropped["reason"] == r).sum()) for r in REASONS}
    if DATASET in result.kept.columns and result.kept[DATASET].nunique() > 1:
        kept_in, splits = result.kept[DATASET].to_numpy(), result.kept["split"].to_numpy()
        metrics["per_dataset"] = {}
        for name in dict.fromkeys(kept_in):
            mine = kept_in == name
            counts = {split: int((mine & (splits == split)).sum()) for split in SPLITS}
            counts["negatives"] = int((mine & negative).sum())
            counts["dropped"] = int((result.dropped[DATASET] == name).sum())
            metrics["per_dataset"][name] = counts
    return metrics
