"""The one image decoder: every bad case becomes a named error, never a blank image.

EXIF orientation is applied (landmarks must match what a person sees), 16-bit images are scaled to
8 bits, grayscale and RGBA become RGB. Paths with spaces or non-ASCII characters work because the
bytes are read by Python and decoded from memory.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
)
# Decoding more than this many pixels would take gigabytes per worker; larger photos are refused
# with a message instead of taking the machine down (about 8000x6000 still passes).
MAX_PIXELS = 50_000_000


class ImageReadError(ValueError):
    """An image file that cannot be used; the message names the file and what is wrong."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def is_image_name(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _truncation(data: bytes) -> str | None:
    if data[:3] == b"\xff\xd8\xff":
        # A JPEG ends with the end-of-image marker; libjpeg pads a cut file with grey.
        if not data.rstrip(b"\x00")[-2:] == b"\xff\xd9":
            return "truncated JPEG (no end-of-image marker); re-export or remove the file"
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        if b"IEND" not in data[-32:]:
            return "truncated PNG (no IEND chunk); re-export or remove the file"
    return None


def decode_image(data: bytes, path: str | os.PathLike = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to an RGB uint8 array of shape (H, W, 3)."""
    if not data:
        raise ImageReadError(path, "empty file (0 bytes)")
    problem = _truncation(data)
    if problem:
        raise ImageReadError(path, problem)
    buffer = np.frombuffer(data, dtype=np.uint8)
    # IMREAD_COLOR applies EXIF orientation; ANYDEPTH keeps 16-bit samples so we can scale them
    # instead of letting OpenCV clip them.
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if image is None:
        raise ImageReadError(
            path, "not a decodable image (corrupt, or not an image despite its extension)"
        )
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ImageReadError(
            path,
            f"image is {image.shape[1]}x{image.shape[0]}, above {MAX_PIXELS} pixels; downscale it",
        )
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        scale = 255.0 / max(float(image.max()), 1e-6) if image.dtype.kind == "f" else 1.0
        image = np.clip(image.astype(np.float32) * scale, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    else:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read one image file as RGB uint8 (H, W, 3), or raise ImageReadError naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a directory, not an image") from None
    except OSError as error:
        raise ImageReadError(path, f"cannot be read: {error.strerror or error}") from None
    return decode_image(data, path)
