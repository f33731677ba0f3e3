"""Score a trained student on any folder of photos against the MediaPipe teacher.

The folder is labelled with the same code as the ``landmarks`` stage (``label_images``), through a
cache keyed by content: sha256 of each image's bytes, within a cache file per teacher model sha256,
teacher settings and mediapipe version. A second call labels only images it has not seen.

Scored are the images where the teacher found a hand; where it found several, its best hand (highest
handedness score, as in the label table) is the reference. Metrics are
``metrics.compare_landmarks``: the same functions as training-time validation and the evaluate
stage. A top-down student is also scored on the teacher's crop (``oracle_crop``, as the evaluate
stage does): on photos of another kind that says whether the finder or the landmark network
loses the hand (the default model on the real digit photos: 0.513 end to end, 0.495 on the
teacher's crop, so there it is the landmark network).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.images import read_image
from pipeline.io import write_table
from pipeline.keypoints import NUM_JOINTS
from pipeline.labeling import label_images
from pipeline.metrics import compare_landmarks, presence_agreement
from pipeline.params import LandmarksParams
from pipeline.predict import InputError, Inputs, list_image_files, predict_inputs
from pipeline.samples import oracle_squares
from pipeline.schema import LANDMARK_COLUMNS
from pipeline.sources import DataListing, ImageRecord, SkippedFile
from pipeline.student import DEFAULT_MIN_PRESENCE, Student, TopDownStudent, load_student
from pipeline.teacher import (
    MEDIAPIPE_WHEEL_VERSION,
    TeacherModelError,
    build_teacher_model,
    default_cache_dir,
    sha256_of,
)

CACHE_FORMAT = 1
DEFAULT_SETTINGS = LandmarksParams()  # the landmarks stage's defaults (params.yaml)
CACHE_COLUMNS = [
    "sha256", "width", "height", "num_hands", "handedness", "handedness_score",
    *LANDMARK_COLUMNS, "reason",
]  # fmt: skip


def default_label_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/learned-hand-landmarks/labels`` (``~/.cache`` without XDG_CACHE_HOME)."""
    return default_cache_dir().parent / "labels"


def pinned_teacher_model() -> Path:
    """The pinned MediaPipe bundle, built into the per-machine cache (fetched once with pip)."""
    path = default_cache_dir() / f"scoring-hand_landmarker-{MEDIAPIPE_WHEEL_VERSION}.task"
    try:
        build_teacher_model(path)  # verifies the cached bundle by sha256; no download if cached
    except TeacherModelError as error:
        raise TeacherModelError(
            f"no teacher model: pass --teacher PATH (a HandLandmarker .task file), or run "
            f"`dvc repro teacher` in the project, or make the package index reachable ({error})"
        ) from None
    return path


def folder_listing(folder: str | os.PathLike) -> DataListing:
    """Every image under ``folder`` (recursive); class = first sub-folder, "" at the top."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    paths = list_image_files(folder)
    if not paths:
        raise InputError(f"{folder} holds no image files (searched recursively)")
    records = [
        ImageRecord(
            path=p,
            split="test",
            class_name=p.split("/", 1)[0] if "/" in p else "",
            subject=Path(p).stem,
        )
        for p in paths
    ]
    return DataListing(root=folder, records=records, skipped=[])


@dataclass
class TeacherLabels:
    table: pd.DataFrame  # path, class_name, width, height, num_hands, ..., x0, y0, z0 (normalised)
    skipped: list[SkippedFile]
    labelled: int  # images the teacher ran on in this call (the rest came from the cache)
    seconds: float


def _cache_file(cache_dir: Path, teacher_sha256: str, settings: LandmarksParams) -> Path:
    try:
        runtime = version("mediapipe")
    except PackageNotFoundError:
        runtime = "unknown"
    key = json.dumps(
        {
            "format": CACHE_FORMAT,
            "teacher": teacher_sha256,
            "settings": settings.teacher_options,
            "mediapipe": runtime,
        },
        sort_keys=True,
    )
    return cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.parquet"


def _read_cache(path: Path) -> pd.DataFrame:
    if path.is_file():
        try:
            table = pd.read_parquet(path)
            if list(table.columns) == CACHE_COLUMNS:
                return table
        except Exception as error:  # pyarrow's errors vary; a bad cache is rebuilt, never trusted
            print(f"label cache {path} is unreadable ({error}); labelling again", file=sys.stderr)
    return pd.DataFrame(columns=CACHE_COLUMNS)


def teacher_labels(
    listing: DataListing,
    teacher_model: str | os.PathLike,
    settings: LandmarksParams = DEFAULT_SETTINGS,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 1,
    progress: bool = True,
) -> TeacherLabels:
    """The teacher's labels for ``listing``, running it only on content not in the cache."""
    cache_path = _cache_file(
        Path(cache_dir) if cache_dir else default_label_cache_dir(),
        sha256_of(teacher_model),
        settings,
    )
    skipped: list[SkippedFile] = list(listing.skipped)
    digest_of: dict[str, str] = {}
    for record in listing.records:
        try:
            digest_of[record.path] = sha256_of(listing.root / record.path)
        except OSError as error:
            skipped.append(SkippedFile(record.path, f"cannot be read: {error.strerror or error}"))
    cache = _read_cache(cache_path)
    known = set(cache["sha256"])
    todo: dict[str, ImageRecord] = {}  # one record per unseen content
    for record in listing.records:
        digest = digest_of.get(record.path)
        if digest is not None and digest not in known and digest not in todo:
            todo[digest] = record
    seconds = 0.0
    if todo:
        result = label_images(
            DataListing(listing.root, list(todo.values()), []),
            teacher_model,
            settings,
            workers,
            progress,
        )
        seconds = result.seconds
        fresh = result.table.copy().assign(sha256=result.table["path"].map(digest_of), reason="")
        failed = pd.DataFrame(
            {
                "sha256": [digest_of[s.path] for s in result.skipped],
                "reason": [s.reason for s in result.skipped],
            }
        )
        cache = pd.concat(
            [df for df in (cache, fresh[CACHE_COLUMNS], failed) if len(df)], ignore_index=True
        ).reindex(columns=CACHE_COLUMNS)
        write_table(cache_path, cache)

    by_digest = cache.drop_duplicates("sha256", keep="last").set_index("sha256")
    rows = []
    for record in listing.records:
        digest = digest_of.get(record.path)
        if digest is None:
            continue
        cached = by_digest.loc[digest]
        if isinstance(cached["reason"], str) and cached["reason"]:
            skipped.append(SkippedFile(record.path, cached["reason"]))
            continue
        rows.append({"path": record.path, "class_name": record.class_name, **cached.to_dict()})
    columns = ["path", "class_name", *[c for c in CACHE_COLUMNS if c not in ("sha256", "reason")]]
    table = pd.DataFrame(rows, columns=columns)
    table[["width", "height", "num_hands"]] = table[["width", "height", "num_hands"]].astype(
        np.int64
    )
    return TeacherLabels(table=table, skipped=skipped, labelled=len(todo), seconds=seconds)


def score_predictions(
    predicted: np.ndarray, reference: np.ndarray, width: np.ndarray, height: np.ndarray
) -> dict:
    """Student vs teacher: MPJPE (px and / hand size), PCK@0.05/0.1/0.2 and AUC.

    ``predicted`` and ``reference`` are (N, joints, >=2) fractions of the image; hand size is the
    larger side of the reference landmarks' box.
    """
    return compare_landmarks(predicted, reference, width, height)


@dataclass
class ScoreResult:
    report: dict  # what the JSON holds
    labels: TeacherLabels
    predicted: np.ndarray  # (scored, joints, 3), aligned with report's scored rows (any presence)


def _landmarks(table: pd.DataFrame) -> np.ndarray:
    return table[LANDMARK_COLUMNS].to_numpy(np.float64).reshape(len(table), NUM_JOINTS, 3)


def oracle_crop_landmarks(
    student: TopDownStudent,
    root: str | os.PathLike,
    detected: pd.DataFrame,
    batch_size: int = 32,
) -> np.ndarray:
    """(N, joints, 3) the crop pass on the teacher's square of each of ``detected``'s images
    (its landmarks' box times the landmark network's margin, as in training and the evaluate
    stage's oracle crop), fractions of the image; no finder, no refinement."""
    squares = oracle_squares(detected, student.margin)
    parts = []
    for start in range(0, len(detected), batch_size):
        rows = slice(start, start + batch_size)
        rgbs = [read_image(Path(root) / path) for path in detected["path"].iloc[rows]]
        landmarks, _ = student.crop_pass(rgbs, squares[rows], batch_size)
        parts.append(landmarks)
    return np.concatenate(parts) if parts else np.zeros((0, NUM_JOINTS, 3))


def score_folder(
    model: Student | str | os.PathLike,
    folder: str | os.PathLike,
    teacher_model: str | os.PathLike | None = None,
    settings: LandmarksParams = DEFAULT_SETTINGS,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 1,
    batch_size: int = 32,
    device: str = "auto",
    progress: bool = True,
    min_presence: float = DEFAULT_MIN_PRESENCE,
    finder: str | os.PathLike | None = None,
    refine: int | None = None,
    flip_test: bool = False,
) -> ScoreResult:
    """Label ``folder`` with the teacher (cached), run the student on every readable image, and
    compare: landmarks where the teacher found a hand, presence everywhere (the teacher's verdict
    vs the student's at ``min_presence``). ``teacher_model`` None: the pinned bundle from the
    per-machine cache."""
    started = time.perf_counter()
    listing = folder_listing(folder)
    if not isinstance(model, Student):
        model = load_student(
            model, device, finder, min_presence, refine=refine, flip_test=flip_test
        )
    teacher_model = Path(teacher_model) if teacher_model else pinned_teacher_model()
    if not teacher_model.is_file():
        raise TeacherModelError(
            f"teacher model {teacher_model} not found; run `dvc repro teacher` or pass --teacher"
        )
    labels = teacher_labels(listing, teacher_model, settings, cache_dir, workers, progress)
    readable_table = labels.table
    student_seconds = 0.0
    predicted, presence = np.zeros((0, NUM_JOINTS, 3)), np.zeros(0)
    skipped = list(labels.skipped)
    if len(readable_table):
        result = predict_inputs(
            model,
            Inputs(root=listing.root, images=list(readable_table["path"])),
            None,
            batch_size,
            progress,
        )
        student_seconds = result.seconds
        # A file that changed since it was labelled and no longer decodes is a skip here too.
        skipped += result.skipped
        kept = readable_table["path"].isin(set(result.table["path"])).to_numpy()
        readable_table = readable_table[kept].reset_index(drop=True)
        predicted, presence = result.landmarks, result.presence
    found = (readable_table["num_hands"] > 0).to_numpy()
    detected = readable_table[found].reset_index(drop=True)
    predicted = predicted[found]
    width = detected["width"].to_numpy(np.float64)
    height = detected["height"].to_numpy(np.float64)
    reference = _landmarks(detected)
    readable = len(labels.table)
    report = {
        "model": str(model.path),
        "model_epoch": model.epoch,
        "image_size": model.image_size,
        "folder": str(Path(folder)),
        "teacher": {
            "path": str(teacher_model),
            "sha256": sha256_of(teacher_model),
            "settings": settings.teacher_options,
        },
        "images": len(listing.records),
        "readable": readable,
        "detected": int((labels.table["num_hands"] > 0).sum()),
        "detection_rate": round(float((labels.table["num_hands"] > 0).mean()), 4)
        if readable
        else 0.0,
        "multiple_hands": int((labels.table["num_hands"] > 1).sum()),
        "scored": len(detected),
        "student_vs_teacher": score_predictions(predicted, reference, width, height)
        if len(detected)
        else None,
        # top-down students: the landmark network on the teacher's crop, what the finder costs
        "oracle_crop": score_predictions(
            oracle_crop_landmarks(model, listing.root, detected, batch_size),
            reference,
            width,
            height,
        )
        if isinstance(model, TopDownStudent) and len(detected)
        else None,
        "presence": {
            "min_presence": min_presence,
            **presence_agreement(presence, found, min_presence),
        },
        "flip_test": bool(model.landmarks.flip_test),
        "per_class": _per_class(labels.table, detected, predicted),
        "skipped": len(skipped),
        "skipped_files": [{"path": s.path, "reason": s.reason} for s in skipped],
        "labelled_now": labels.labelled,
        "seconds": {
            "teacher": round(labels.seconds, 2),
            "student": round(student_seconds, 2),
            "total": round(time.perf_counter() - started, 2),
        },
    }
    return ScoreResult(report=report, labels=labels, predicted=predicted)


def _per_class(labels: pd.DataFrame, detected: pd.DataFrame, predicted: np.ndarray) -> dict:
    classes = sorted(set(labels["class_name"]))
    if classes == [""]:
        return {}
    out = {}
    for name in classes:
        found = labels["class_name"] == name
        mask = (detected["class_name"] == name).to_numpy()
        entry = {
            "images": int(found.sum()),
            "detection_rate": round(float((labels.loc[found, "num_hands"] > 0).mean()), 4),
            "scored": int(mask.sum()),
        }
        if mask.any():
            metrics = score_predictions(
                predicted[mask],
                _landmarks(detected[mask]),
                detected.loc[mask, "width"].to_numpy(np.float64),
                detected.loc[mask, "height"].to_numpy(np.float64),
            )
            entry.update({k: metrics[k] for k in ("mpjpe_px", "mpjpe_norm_hand", "pck_10")})
        out[name or "(top level)"] = entry
    return out
