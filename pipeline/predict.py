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
import torch
from tqdm import tqdm

from pipeline.images import IMAGE_EXTENSIONS, ImageReadError, is_image_name, read_image
from pipeline.inference import LandmarkModel, load_model, with_pixels
from pipeline.io import OutputPathError, check_output_folder, write_table
from pipeline.keypoints import NUM_JOINTS, column_names, to_pixels
from pipeline.machine import available_cores
from pipeline.plots import COLOURS, draw_skeleton
from pipeline.sources import SkippedFile

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
    width: int
    height: int
    square: np.ndarray  # (S, S, 3) uint8, the model's input
    rgb: np.ndarray | None  # the original, kept only when overlays are drawn


def _load_image(
    root: Path, relative: str, model: LandmarkModel, keep: bool
) -> _Frame | SkippedFile:
    try:
        rgb = read_image(root / relative)
    except ImageReadError as error:
        return SkippedFile(relative, error.reason)
    height, width = rgb.shape[:2]
    return _Frame(relative, None, width, height, model.input_image(rgb), rgb if keep else None)


def _image_chunks(
    inputs: Inputs, model: LandmarkModel, keep: bool, batch_size: int
) -> Iterator[list[_Frame | SkippedFile]]:
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        for start in range(0, len(inputs.images), batch_size):
            chunk = inputs.images[start : start + batch_size]
            yield list(pool.map(lambda r: _load_image(inputs.root, r, model, keep), chunk))


def _video_frame_count(path: Path) -> int | None:
    capture = cv2.VideoCapture(str(path))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    capture.release()
    return count if count > 0 else None  # containers may not know; then the bar has no total


def _video_chunks(
    inputs: Inputs, model: LandmarkModel, keep: bool, batch_size: int
) -> Iterator[list[_Frame | SkippedFile]]:
    path = inputs.root / inputs.video
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise InputError(f"{path} cannot be opened as a video (corrupt, or a codec OpenCV lacks)")
    index, chunk = 0, []
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            height, width = rgb.shape[:2]
            square = model.input_image(rgb)
            chunk.append(_Frame(inputs.video, index, width, height, square, rgb if keep else None))
            index += 1
            if len(chunk) == batch_size:
                yield chunk
                chunk = []
    finally:
        capture.release()
    if index == 0:
        raise InputError(f"{path}: no frame could be decoded (corrupt, or a codec OpenCV lacks)")
    if chunk:
        yield chunk


# ---------------------------------------------------------------------------------------------
# Prediction


@dataclass
class Predictions:
    table: pd.DataFrame  # path, [frame], width, height, x0, y0, z0, ...: x, y in pixels
    landmarks: np.ndarray  # (N, joints, 3): x, y as fractions of the image (what metrics take)
    skipped: list[SkippedFile]
    seconds: float
    model: LandmarkModel

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


def draw_prediction(rgb: np.ndarray, points_px: np.ndarray) -> np.ndarray:
    """The predicted skeleton on a copy of ``rgb``, strokes scaled to the image size."""
    points = np.asarray(points_px, dtype=np.float64)[:, :2]
    if not np.isfinite(points).all():
        return rgb.copy()
    limit = 4 * max(rgb.shape[:2])  # OpenCV wants ints; keep wild predictions drawable
    thickness = max(1, round(max(rgb.shape[:2]) / 250))
    return draw_skeleton(rgb, np.clip(points, -limit, limit), COLOURS["student"], thickness)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode overlay {path}")
    path.write_bytes(png.tobytes())


def predict_inputs(
    model: LandmarkModel,
    inputs: Inputs,
    overlay_dir: str | os.PathLike | None = None,
    batch_size: int = 32,
    progress: bool = True,
    overwrite: bool = False,
) -> Predictions:
    """Predict every image (or frame) of ``inputs``, batch by batch, never holding them all.

    Existing overlay files are an OutputPathError (checked before any prediction) unless
    ``overwrite``.
    """
    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    keep = overlay_dir is not None
    overlay_root = Path(overlay_dir) if keep else None
    if inputs.video is not None:
        chunks = _video_chunks(inputs, model, keep, batch_size)
        total, unit = _video_frame_count(inputs.root / inputs.video), "frame"
        names: dict[str, str] = {}
        if keep and not overwrite:
            _refuse_existing(sorted((overlay_root / Path(inputs.video).stem).glob("*.png")))
    else:
        chunks = _image_chunks(inputs, model, keep, batch_size)
        total, unit = len(inputs.images), "img"
        names = overlay_names(inputs.images) if keep else {}
        if keep and not overwrite:
            _refuse_existing(
                [overlay_root / n for n in names.values() if (overlay_root / n).exists()]
            )
    started = time.perf_counter()
    meta: list[tuple[str, int | None, int, int]] = []
    predicted: list[np.ndarray] = []
    skipped: list[SkippedFile] = []
    bar = tqdm(total=total, desc="student", unit=unit, disable=not progress, mininterval=1.0)
    for chunk in chunks:
        frames = [f for f in chunk if isinstance(f, _Frame)]
        skipped += [f for f in chunk if isinstance(f, SkippedFile)]
        if frames:
            batch = torch.from_numpy(np.stack([f.square for f in frames]))
            width = np.array([f.width for f in frames], dtype=np.float64)
            height = np.array([f.height for f in frames], dtype=np.float64)
            landmarks = model.predict(
                batch.permute(0, 3, 1, 2).contiguous(), width, height, batch_size
            )
            predicted.append(landmarks)
            meta += [(f.path, f.frame, f.width, f.height) for f in frames]
            if keep:
                for f, points in zip(frames, to_pixels(landmarks, width, height)):
                    name = (
                        f"{Path(f.path).stem}/{f.frame:06d}.png"
                        if f.frame is not None
                        else names[f.path]
                    )
                    _write_png(overlay_root / name, draw_prediction(f.rgb, points))
        bar.update(len(chunk))
    bar.close()
    seconds = time.perf_counter() - started
    landmarks = np.concatenate(predicted) if predicted else np.zeros((0, NUM_JOINTS, 3))
    return Predictions(
        table=_prediction_table(meta, landmarks, video=inputs.video is not None),
        landmarks=landmarks,
        skipped=skipped,
        seconds=seconds,
        model=model,
    )


def _prediction_table(
    meta: list[tuple[str, int | None, int, int]], landmarks: np.ndarray, video: bool
) -> pd.DataFrame:
    table = pd.DataFrame(meta, columns=["path", "frame", "width", "height"])
    table[["width", "height"]] = table[["width", "height"]].astype(np.int64)
    if video:
        table["frame"] = table["frame"].astype(np.int64)
    else:
        table = table.drop(columns="frame")
    pixels = with_pixels(landmarks, table["width"].to_numpy(), table["height"].to_numpy())
    values = pd.DataFrame(pixels.reshape(len(table), NUM_JOINTS * 3), columns=LANDMARK_COLUMNS)
    return pd.concat([table, values], axis=1)


def predict_path(
    model: LandmarkModel | str | os.PathLike,
    input_path: str | os.PathLike,
    overlay_dir: str | os.PathLike | None = None,
    batch_size: int = 32,
    device: str = "auto",
    progress: bool = True,
    overwrite: bool = False,
) -> Predictions:
    """Landmarks for an image file, a folder of images (recursive) or a video file.

    ``model`` is a ``LandmarkModel`` or the path of a checkpoint / ONNX export. With
    ``overlay_dir``, each image is also written there as PNG with the predicted skeleton drawn,
    at the input's relative path (a video's frames as ``<video stem>/<frame:06d>.png``). The
    overlay folder must lie outside the input (an OutputPathError otherwise), and existing overlay
    files are only replaced with ``overwrite``.
    """
    if not isinstance(model, LandmarkModel):
        model = load_model(model, device)
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
    skipped = pd.DataFrame(
        [(s.path, s.reason) for s in predictions.skipped], columns=["path", "reason"]
    )
    write_table(skipped_path(output), skipped)
    write_table(output, table)
    return skipped_path(output)
