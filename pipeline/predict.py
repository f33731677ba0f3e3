"""Use a trained student: landmarks for one image, a folder of images or a video.

The model is a training checkpoint (``models/student/best.pt``) or its ONNX export, loaded and
run by ``pipeline.inference``: both carry their model config and codec, so the input size and the
way back to pixels come from the model file, never from constants here. This module finds the
inputs, decodes them (``read_image``, every bad file a listed skip), batches them and writes the
table and overlays.

Output rows hold ``path`` (relative to the input folder; the file name for a single image or a
video), for a video also ``frame`` (0-based index), ``width``, ``height`` and ``x0, y0, z0, …`` with
x, y in pixels of the original image and z the model's relative depth (codec-decoded). An image that
cannot be decoded is a listed skip, never a blank image.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipeline.crops import SQUARE_COLUMNS, square_corners
from pipeline.images import IMAGE_EXTENSIONS, ImageReadError, is_image_name, read_image
from pipeline.io import OutputPathError, check_output_folder, write_table
from pipeline.keypoints import NUM_JOINTS, column_names
from pipeline.machine import available_cores
from pipeline.plots import COLOURS, draw_skeleton
from pipeline.progress import progress as progress_bar
from pipeline.sources import SkippedFile
from pipeline.student import DEFAULT_MIN_PRESENCE, Prediction, Student, load_student

VIDEO_EXTENSIONS: frozenset[str] = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm"})
LANDMARK_COLUMNS = column_names("")  # x0, y0, z0, ...
DECODE_THREADS = min(4, available_cores())  # cv2 decodes outside the GIL


class InputError(ValueError):
    """The input to predict or score is missing, empty or of a kind we cannot read."""


# ---------------------------------------------------------------------------------------------
# Inputs: an image, a folder of images, or a video


@dataclass(frozen=True)
class Inputs:
    root: Path  # the relative paths below are relative to this folder
    images: list[str] = field(default_factory=list)  # posix relative paths, sorted
    video: str | None = None  # a video's file name (then ``images`` is empty)


def list_image_files(folder: Path) -> list[str]:
    """Image files under ``folder``, recursive, sorted; hidden files and folders are left out."""
    found = []
    for directory, subdirs, files in os.walk(folder):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in files:
            if not name.startswith(".") and is_image_name(name):
                found.append((Path(directory) / name).relative_to(folder).as_posix())
    return sorted(found)


def find_inputs(path: str | os.PathLike) -> Inputs:
    """What ``path`` is: a folder (its images, recursive), one image, or one video."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"input {path} does not exist")
    if path.is_dir():
        images = list_image_files(path)
        if not images:
            raise InputError(
                f"{path} holds no image files (searched recursively for "
                f"{', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        return Inputs(root=path, images=images)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return Inputs(root=path.parent, video=path.name)
    if is_image_name(path):
        return Inputs(root=path.parent, images=[path.name])
    raise InputError(
        f"{path} is neither an image ({', '.join(sorted(IMAGE_EXTENSIONS))}) nor a video "
        f"({', '.join(sorted(VIDEO_EXTENSIONS))}) nor a folder"
    )


@dataclass
class _Frame:
    path: str
    frame: int | None
    rgb: np.ndarray


def _load_image(root: Path, relative: str) -> _Frame | SkippedFile:
    try:
        return _Frame(relative, None, read_image(root / relative))
    except ImageReadError as error:
        return SkippedFile(relative, error.reason)


def _image_chunks(inputs: Inputs, batch_size: int) -> Iterator[list[_Frame | SkippedFile]]:
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        for start in range(0, len(inputs.images), batch_size):
            chunk = inputs.images[start : start + batch_size]
            yield list(pool.map(lambda r: _load_image(inputs.root, r), chunk))


def _video_frame_count(path: Path) -> int | None:
    capture = cv2.VideoCapture(str(path))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    capture.release()
    return count if count > 0 else None  # containers may not know; then the bar has no total


def video_frames(path: Path) -> Iterator[np.ndarray]:
    """A video's frames as RGB uint8 arrays, in order; a clear error when none decodes."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise InputError(f"{path} cannot be opened as a video (corrupt, or a codec OpenCV lacks)")
    count = 0
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            count += 1
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()
    if count == 0:
        raise InputError(f"{path}: no frame could be decoded (corrupt, or a codec OpenCV lacks)")


# ---------------------------------------------------------------------------------------------
# Prediction


@dataclass
class Predictions:
    """The table (path, [frame], width, height, presence, [tracked], crop_x, crop_y, crop_side,
    x0, y0, z0, ...: x, y in pixels, empty where presence is below ``min_presence``), the raw
    landmarks (N, joints, 3) as fractions of each image whatever the presence (what metrics
    take), the skipped files and the time."""

    table: pd.DataFrame
    landmarks: np.ndarray
    presence: np.ndarray
    skipped: list[SkippedFile]
    seconds: float
    model: Student

    @property
    def images_per_second(self) -> float:
        return len(self.table) / max(self.seconds, 1e-9)


def overlay_names(images: Sequence[str]) -> dict[str, str]:
    """Overlay PNG per input: the same relative path with ``.png``; ``a.jpg`` and ``a.png`` side
    by side would collide, so those keep their whole name (``a.jpg.png``)."""
    stems = [Path(p).with_suffix(".png").as_posix() for p in images]
    clashes = {s for s in stems if stems.count(s) > 1}
    return {p: (f"{p}.png" if s in clashes else s) for p, s in zip(images, stems)}


def _refuse_existing(paths: Sequence[Path]) -> None:
    if paths:
        shown = ", ".join(str(p) for p in paths[:3]) + (", ..." if len(paths) > 3 else "")
        raise OutputPathError(
            f"{len(paths)} overlay file(s) exist already ({shown}); pass --overwrite "
            "(overwrite=True) to replace them, or choose an empty folder"
        )


def draw_prediction(
    rgb: np.ndarray, points_px: np.ndarray, square: np.ndarray | None = None
) -> np.ndarray:
    """The predicted skeleton (and the crop it was read in) on a copy of ``rgb``, strokes scaled
    to the image size; nothing where the landmarks are empty (no hand)."""
    canvas = rgb.copy()
    thickness = max(1, round(max(rgb.shape[:2]) / 250))
    if square is not None and np.isfinite(square).all():
        low, high = np.round(square_corners(square)).astype(int).reshape(2, 2)
        cv2.rectangle(canvas, tuple(low), tuple(high), COLOURS["student"], thickness)
    points = np.asarray(points_px, dtype=np.float64)[:, :2]
    if not np.isfinite(points).all():
        return canvas
    limit = 4 * max(rgb.shape[:2])  # OpenCV wants ints; keep wild predictions drawable
    return draw_skeleton(canvas, np.clip(points, -limit, limit), COLOURS["student"], thickness)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode overlay {path}")
    path.write_bytes(png.tobytes())


@dataclass
class _Rows:
    """What predict_inputs gathers, batch by batch."""

    meta: list[tuple] = field(default_factory=list)  # path, frame, width, height, tracked
    landmarks: list[np.ndarray] = field(default_factory=list)  # pixels
    presence: list[np.ndarray] = field(default_factory=list)
    squares: list[np.ndarray] = field(default_factory=list)

    def add(self, frames: list[_Frame], result: Prediction) -> None:
        self.meta += [
            (f.path, f.frame, f.rgb.shape[1], f.rgb.shape[0], bool(t))
            for f, t in zip(frames, result.tracked)
        ]
        self.landmarks.append(result.landmarks)
        self.presence.append(result.presence)
        self.squares.append(result.squares)


def predict_inputs(
    model: Student,
    inputs: Inputs,
    overlay_dir: str | os.PathLike | None = None,
    batch_size: int = 32,
    progress: bool = True,
    overwrite: bool = False,
) -> Predictions:
    """Predict every image (image mode: both passes, batch by batch) or every frame of a video
    (tracking: frame t's crop from frame t-1's landmarks), never holding them all.

    Existing overlay files are an OutputPathError (checked before any prediction) unless
    ``overwrite``.
    """
    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    keep = overlay_dir is not None
    overlay_root = Path(overlay_dir) if keep else None
    video = inputs.video is not None
    if video:
        total, unit = _video_frame_count(inputs.root / inputs.video), "frame"
        if keep and not overwrite:
            _refuse_existing(sorted((overlay_root / Path(inputs.video).stem).glob("*.png")))
    else:
        total, unit = len(inputs.images), "img"
        names = overlay_names(inputs.images) if keep else {}
        if keep and not overwrite:
            _refuse_existing(
                [overlay_root / n for n in names.values() if (overlay_root / n).exists()]
            )
    started = time.perf_counter()
    rows, skipped = _Rows(), []
    bar = progress_bar(total, "student", unit, progress)

    def finish(frames: list[_Frame], result: Prediction) -> None:
        rows.add(frames, result)
        if keep:
            for f, points, square in zip(frames, result.landmarks, result.squares):
                name = f"{Path(f.path).stem}/{f.frame:06d}.png" if video else names[f.path]
                _write_png(overlay_root / name, draw_prediction(f.rgb, points, square))
        bar.update(len(frames))

    if video:
        model.reset()
        for index, rgb in enumerate(video_frames(inputs.root / inputs.video)):
            finish([_Frame(inputs.video, index, rgb)], model.track(rgb))
    else:
        for chunk in _image_chunks(inputs, batch_size):
            frames = [f for f in chunk if isinstance(f, _Frame)]
            skipped += [f for f in chunk if isinstance(f, SkippedFile)]
            bar.update(len(chunk) - len(frames))
            if frames:
                finish(frames, model.predict_images([f.rgb for f in frames], batch_size))
    bar.close()
    seconds = time.perf_counter() - started
    return _predictions(rows, skipped, seconds, model, video)


def _predictions(rows: _Rows, skipped, seconds: float, model: Student, video: bool) -> Predictions:
    count = len(rows.meta)
    pixels = np.concatenate(rows.landmarks) if count else np.zeros((0, NUM_JOINTS, 3))
    presence = np.concatenate(rows.presence) if count else np.zeros(0)
    squares = np.concatenate(rows.squares) if count else np.zeros((0, 3))
    table = pd.DataFrame(rows.meta, columns=["path", "frame", "width", "height", "tracked"])
    table[["width", "height"]] = table[["width", "height"]].astype(np.int64)
    if video:
        table["frame"] = table["frame"].astype(np.int64)
    else:
        table = table.drop(columns=["frame", "tracked"])
    table.insert(table.columns.get_loc("height") + 1, "presence", presence.round(4))
    size = table[["width", "height"]].to_numpy(np.float64)
    fractions = pixels.copy()
    fractions[..., :2] = pixels[..., :2] / size[:, None, :]
    shown = pixels.copy()
    shown[presence < model.min_presence] = np.nan  # no hand: no landmarks
    crop = pd.DataFrame(squares, columns=list(SQUARE_COLUMNS))
    values = pd.DataFrame(shown.reshape(count, NUM_JOINTS * 3), columns=LANDMARK_COLUMNS)
    table = pd.concat([table, crop, values], axis=1)
    return Predictions(table, fractions, presence, skipped, seconds, model)


def predict_path(
    model: Student | str | os.PathLike,
    input_path: str | os.PathLike,
    overlay_dir: str | os.PathLike | None = None,
    batch_size: int = 32,
    device: str = "auto",
    progress: bool = True,
    overwrite: bool = False,
    min_presence: float = DEFAULT_MIN_PRESENCE,
    finder: str | os.PathLike | None = None,
    refine: int | None = None,
    flip_test: bool = False,
) -> Predictions:
    """Landmarks for an image file, a folder of images (recursive) or a video file.

    ``model`` is a ``Student`` or the path of a student file (``pipeline.student.load_student``;
    ``finder`` for a crop model that has none with it). Landmarks are left empty where the
    presence is below ``min_presence``. With ``overlay_dir``, each image is also written there as
    PNG with the predicted skeleton and crop drawn, at the input's relative path (a video's
    frames as ``<video stem>/<frame:06d>.png``). The overlay folder must lie outside the input
    (an OutputPathError otherwise), and existing overlay files are only replaced with
    ``overwrite``.
    """
    if not isinstance(model, Student):
        model = load_student(
            model, device, finder, min_presence, refine=refine, flip_test=flip_test
        )
    inputs = find_inputs(input_path)
    if overlay_dir is not None:
        check_output_folder(overlay_dir, [input_path])
    return predict_inputs(model, inputs, overlay_dir, batch_size, progress, overwrite)


def skipped_path(output: str | os.PathLike) -> Path:
    """Where the skipped files of ``predictions.csv`` are listed: ``predictions.skipped.csv``."""
    output = Path(output)
    return output.with_name(f"{output.stem}.skipped.csv")


def write_predictions(predictions: Predictions, output: str | os.PathLike) -> Path:
    """The table as CSV (x, y to 1/1000 px, z to 6 decimals) and the skips beside it; returns the
    skipped list's path (written even when empty, so an old one is never left behind)."""
    table = predictions.table.copy()
    xy = [c for c in LANDMARK_COLUMNS if c[0] in "xy"]
    z = [c for c in LANDMARK_COLUMNS if c[0] == "z"]
    table[xy], table[z] = table[xy].round(3), table[z].round(6)
    table[list(SQUARE_COLUMNS)] = table[list(SQUARE_COLUMNS)].round(2)
    skipped = pd.DataFrame(
        [(s.path, s.reason) for s in predictions.skipped], columns=["path", "reason"]
    )
    write_table(skipped_path(output), skipped)
    write_table(output, table)
    return skipped_path(output)
