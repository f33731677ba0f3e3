"""The one image decoder: every bad case becomes a named error, never a blank image.

EXIF orientation is applied (landmarks must match what a person sees), 16-bit images are scaled to
8 bits, grayscale and RGBA become RGB. Paths with spaces or non-ASCII characters work because the
bytes are read by Python and decoded from memory.
"""

from __future__ import annotations

import os
import struct
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


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR" or len(data) < 24:
        return None
    return struct.unpack(">II", data[16:24])


# JPEG start-of-frame markers (C0-CF) except DHT, JPG and DAC, which share the range.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    if data[:2] != b"\xff\xd8":
        return None
    position = 2
    while position + 9 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            position += 2
            continue
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[position + 5 : position + 9])
            return width, height
        position += 2 + length
    return None


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if data[:2] != b"BM" or len(data) < 26:
        return None
    width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)


def _webp_size(data: bytes) -> tuple[int, int] | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP" or len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(data[:4])
    if order is None or len(data) < 8:
        return None
    (offset,) = struct.unpack(order + "I", data[4:8])
    if offset + 2 > len(data):
        return None
    (count,) = struct.unpack(order + "H", data[offset : offset + 2])
    size: dict[int, int] = {}
    for entry in range(count):
        start = offset + 2 + 12 * entry
        if start + 12 > len(data):
            break
        tag, kind = struct.unpack(order + "HH", data[start : start + 4])
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT (3) or LONG (4)
            value = data[start + 8 : start + 12]
            size[tag] = struct.unpack(
                order + ("H" if kind == 3 else "I"), value[: 2 if kind == 3 else 4]
            )[0]
    return (size[256], size[257]) if len(size) == 2 else None


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the file's header (PNG, JPEG, BMP, WebP, TIFF) without decoding it;
    None for other formats or a header too damaged to read (the decoder then decides)."""
    for reader in (_png_size, _jpeg_size, _bmp_size, _webp_size, _tiff_size):
        try:
            size = reader(data)
        except struct.error:
            return None
        if size is not None:
            return size
    return None


def _check_pixels(path: str | os.PathLike, width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise ImageReadError(
            path, f"image is {width}x{height}, above {MAX_PIXELS} pixels; downscale it"
        )


def decode_image(data: bytes, path: str | os.PathLike = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to an RGB uint8 array of shape (H, W, 3)."""
    if not data:
        raise ImageReadError(path, "empty file (0 bytes)")
    # The size is checked on the header, before the decoder allocates the pixels: a few hundred
    # KB of PNG can claim 20000x20000 pixels (gigabytes per worker once decoded).
    size = header_size(data)
    if size is not None:
        _check_pixels(path, *size)
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
    # Formats whose header we do not read are checked once decoded.
    _check_pixels(path, image.shape[1], image.shape[0])
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
