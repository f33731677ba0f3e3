"""Label every image with the MediaPipe teacher, in worker processes, into one table.

Each image is decoded once (``read_image``). An unreadable image is a counted skip with its reason,
never a silent drop and never a blank substitute.
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.images import ImageReadError, read_image
from pipeline.keypoints import NUM_JOINTS
from pipeline.params import LandmarksParams
from pipeline.progress import progress as progress_bar
from pipeline.schema import BOX_COLUMNS, LANDMARK_COLUMNS, TRUTH_COLUMNS, WORLD_COLUMNS
from pipeline.sources import SPLITS, DataListing, ImageRecord, SkippedFile
from pipeline.teacher import HandDetection, Teacher, pool_worker_teacher


class LabelingError(RuntimeError):
    """Labeling produced nothing to train on."""


@dataclass
class LabelingResult:
    table: pd.DataFrame
    skipped: list[SkippedFile]
    seconds: float


_worker_teacher: Teacher | None = None


def _init_worker(model_path: str, settings: LandmarksParams, close_at_exit: bool = True) -> None:
    global _worker_teacher
    make = pool_worker_teacher if close_at_exit else Teacher
    _worker_teacher = make(model_path, settings)


def _label_one(task: tuple[int, str]) -> tuple[int, dict | None, str | None]:
    index, path = task
    try:
        rgb = read_image(path)
    except ImageReadError as error:
        return index, None, error.reason
    return index, image_fields(rgb, _worker_teacher.detect(rgb)), None


def image_fields(rgb: np.ndarray, detection: HandDetection) -> dict:
    """What one image and the teacher's answer contribute to its row (every engine uses this)."""
    fields: dict = {
        "width": rgb.shape[1],
        "height": rgb.shape[0],
        "num_hands": detection.num_hands,
        "handedness": detection.handedness[0] if detection.num_hands else "",
        "handedness_score": float(detection.handedness_score[0]) if detection.num_hands else np.nan,
    }
    if detection.num_hands:
        fields["landmarks"] = detection.landmarks[0].reshape(-1)
        fields["world"] = detection.world_landmarks[0].reshape(-1)
    return fields


def _base_row(record: ImageRecord) -> dict:
    return {
        "path": record.path,
        "split": record.split,
        "class_name": record.class_name,
        "subject": record.subject,
    }


def label_images(
    listing: DataListing,
    model_path: str | Path,
    settings: LandmarksParams,
    workers: int = 1,
    progress: bool = True,
) -> LabelingResult:
    records = listing.records
    tasks = [(i, str(listing.root / r.path)) for i, r in enumerate(records)]
    results: list[tuple[int, dict | None, str | None]] = []
    started = time.perf_counter()
    bar = progress_bar(len(tasks), "teacher", "img", progress)
    workers = max(1, min(workers, len(tasks)))
    if workers == 1:
        _init_worker(str(model_path), settings, close_at_exit=False)
        try:
            for task in tasks:
                results.append(_label_one(task))
                bar.update()
        finally:
            _worker_teacher.close()
    else:
        # spawn, not fork: a forked copy of a process that already ran MediaPipe's threads can hang.
        context = multiprocessing.get_context("spawn")
        chunk = max(1, min(16, len(tasks) // (workers * 8)))
        with context.Pool(workers, _init_worker, (str(model_path), settings)) as pool:
            for result in pool.imap(_label_one, tasks, chunksize=chunk):
                results.append(result)
                bar.update()
            pool.close()  # let workers exit normally, so their landmarkers are closed
            pool.join()
    bar.close()
    seconds = time.perf_counter() - started

    table, skipped = build_table(listing, results)
    return LabelingResult(table=table, skipped=skipped, seconds=seconds)


def build_table(
    listing: DataListing, results: list[tuple[int, dict | None, str | None]]
) -> tuple[pd.DataFrame, list[SkippedFile]]:
    """The label table and the skipped files from ``(record index, image_fields, skip reason)``
    results in any order: rows and skips follow the listing's order whichever engine ran."""
    skipped = list(listing.skipped)
    rows = []
    for index, fields, problem in sorted(results, key=lambda result: result[0]):
        record = listing.records[index]
        if problem is not None:
            skipped.append(SkippedFile(record.path, problem))
            continue
        rows.append(_table_row(record, fields))
    return _as_table(rows), skipped


def _table_row(record: ImageRecord, row: dict) -> dict:
    out = _base_row(record)
    out.update(
        {k: row[k] for k in ("width", "height", "num_hands", "handedness", "handedness_score")}
    )
    nan = np.full(NUM_JOINTS * 3, np.nan, dtype=np.float32)
    out.update(zip(LANDMARK_COLUMNS, row.get("landmarks", nan)))
    out.update(zip(WORLD_COLUMNS, row.get("world", nan)))
    box = record.box_xywh or (np.nan,) * 4
    out.update(zip(BOX_COLUMNS, box))
    truth = record.true_landmarks
    truth_flat = truth.reshape(-1) if truth is not None else np.full(NUM_JOINTS * 2, np.nan)
    out.update(zip(TRUTH_COLUMNS, truth_flat))
    return out


def _as_table(rows: list[dict]) -> pd.DataFrame:
    columns = [
        "path", "split", "class_name", "subject", "width", "height", "num_hands", "handedness",
        "handedness_score", *LANDMARK_COLUMNS, *WORLD_COLUMNS, *BOX_COLUMNS, *TRUTH_COLUMNS,
    ]  # fmt: skip
    table = pd.DataFrame(rows, columns=columns)
    float_columns = [
        *LANDMARK_COLUMNS,
        *WORLD_COLUMNS,
        *BOX_COLUMNS,
        *TRUTH_COLUMNS,
        "handedness_score",
    ]
    table[float_columns] = table[float_columns].astype(np.float32)
    table[["width", "height", "num_hands"]] = table[["width", "height", "num_hands"]].astype(
        np.int32
    )
    return table


def require_labelled(result: LabelingResult, root: str | Path) -> None:
    """Raise LabelingError when not one image was read: a data root of unreadable files must not
    pass as an empty data set. The message gives the count and the skip reasons."""
    if len(result.table):
        return
    total = len(result.skipped)
    groups: dict[str, list[str]] = {}
    for skip in result.skipped:
        # "not a decodable image (corrupt, ...)" and "dangling symlink: its target ..." group
        # under the words before the detail
        groups.setdefault(skip.reason.split(" (")[0].split(":")[0], []).append(skip.path)
    reasons = "; ".join(
        f"{len(paths)} x {reason} (e.g. {paths[0]})"
        for reason, paths in sorted(groups.items(), key=lambda item: -len(item[1]))
    )
    raise LabelingError(
        f"no image could be labelled: 0 of {total} files under {root} were read"
        + (f"; skipped: {reasons}" if reasons else "")
    )


def labeling_metrics(result: LabelingResult, teacher_sha256: str) -> dict:
    table = result.table
    detected = table["num_hands"] > 0

    def rate(mask: pd.Series) -> float:
        return round(float(detected[mask].mean()), 4) if mask.any() else 0.0

    return {
        "images": int(len(table)),
        "detected": int(detected.sum()),
        "detection_rate": rate(pd.Series(True, index=table.index)),
        "detection_rate_per_split": {
            s: rate(table["split"] == s) for s in SPLITS if (table["split"] == s).any()
        },
        "detection_rate_per_class": {
            c: rate(table["class_name"] == c) for c in sorted(table["class_name"].unique())
        },
        "skipped": len(result.skipped),
        "images_per_second": round(len(table) / max(result.seconds, 1e-9), 2),
        "teacher_sha256": teacher_sha256,
    }


def skipped_table(skipped: list[SkippedFile]) -> pd.DataFrame:
    return pd.DataFrame([(s.path, s.reason) for s in skipped], columns=["path", "reason"])
