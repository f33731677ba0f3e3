"""read_image: every bad case is a named error; the good odd cases decode to what a person sees."""

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.images import ImageReadError, decode_image, read_image
from tests.conftest import REPO, noise_image, write_png


def test_png_round_trip_with_spaces_and_non_ascii_name(tmp_path):
    rgb = noise_image(0)
    path = write_png(tmp_path / "a hand – ñ.png", rgb)
    np.testing.assert_array_equal(read_image(path), rgb)


def test_grayscale_rgba_and_16bit_png_become_rgb_uint8(tmp_path):
    rgb = noise_image(1)
    gray = rgb[..., 0]
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    cv2.imwrite(
        str(tmp_path / "rgba.png"), np.dstack([rgb[..., ::-1], np.full(gray.shape, 7, np.uint8)])
    )
    cv2.imwrite(str(tmp_path / "deep.png"), rgb[..., ::-1].astype(np.uint16) * 257)
    out_gray = read_image(tmp_path / "gray.png")
    assert out_gray.shape == (*gray.shape, 3) and out_gray.dtype == np.uint8
    np.testing.assert_array_equal(out_gray[..., 1], gray)
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png"), rgb)


def _jpeg_with_orientation(rgb: np.ndarray, orientation: int) -> bytes:
    """A JPEG with an EXIF APP1 segment that holds only the Orientation tag."""
    ok, encoded = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert ok
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + b"\x00\x01" + b"\x01\x12\x00\x03\x00\x00\x00\x01"
    tiff += orientation.to_bytes(2, "big") + b"\x00\x00" + b"\x00\x00\x00\x00"
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    data = encoded.tobytes()
    return data[:2] + app1 + data[2:]


def test_exif_rotation_is_applied(tmp_path):
    rgb = np.zeros((40, 80, 3), np.uint8)
    rgb[:, :20] = 255  # a white band on the left of a wide image
    path = tmp_path / "rotated.jpg"
    path.write_bytes(_jpeg_with_orientation(rgb, 6))  # 6: rotate 90° clockwise to display
    shown = read_image(path)
    assert shown.shape[:2] == (80, 40)  # tall, as a viewer shows it
    assert shown[:20].mean() > 200 and shown[-20:].mean() < 50  # the band is now on top


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.png", b"", "empty file"),
        ("text.png", b"this is not an image at all", "not a decodable image"),
        ("garbage.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 64 + b"\xff\xd9", "not a decodable image"),
    ],
)
def test_bad_files_raise_naming_the_file(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageReadError) as error:
        read_image(path)
    assert reason in str(error.value) and name in str(error.value)


@pytest.mark.parametrize("extension", [".jpg", ".png"])
def test_truncated_images_are_refused(tmp_path, extension):
    ok, encoded = cv2.imencode(extension, noise_image(2, 64, 64))
    data = encoded.tobytes()
    path = tmp_path / f"cut{extension}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageReadError, match="file not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="directory"):
        read_image(tmp_path)


def test_huge_image_is_refused_with_a_fix(monkeypatch):
    import pipeline.images as images

    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    ok, encoded = cv2.imencode(".png", noise_image(3, 20, 20))
    with pytest.raises(ImageReadError, match="downscale"):
        decode_image(encoded.tobytes(), "big.png")


def _png_bomb(path, side: int = 20_000) -> int:
    """A valid grayscale PNG of side x side zeros, streamed through zlib: ~0.4 MB on disk for
    400 MB of pixels (1.2 GB once decoded to RGB)."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    compressor = zlib.compressobj(9)
    row = bytes(1 + side)  # filter byte + one zero byte per pixel
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
    path.write_bytes(data + chunk(b"IEND", b""))
    return len(data)


BOMB_PROBE = """
import sys
from pathlib import Path
from pipeline.images import ImageReadError, read_image

def peak_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

Path("/proc/self/clear_refs").write_text("5")  # the peak starts again from what is in use now
before = peak_mib()
try:
    read_image(sys.argv[1])
    print("decoded")
except ImageReadError as error:
    print("refused:", error)
print(f"growth_mib={peak_mib() - before:.1f}")
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    """The size guard reads the header: a 20000x20000 PNG is refused without the decoder
    allocating its pixels (it would take 1.2 GB per worker)."""
    bomb = tmp_path / "bomb.png"
    assert _png_bomb(bomb) < 1_000_000
    probe = subprocess.run(
        [sys.executable, "-c", BOMB_PROBE, str(bomb)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    assert "refused:" in probe.stdout and "20000x20000" in probe.stdout, probe.stdout
    assert "bomb.png" in probe.stdout
    growth = float(probe.stdout.split("growth_mib=")[1])
    # reading the 0.4 MB file and its header costs a few MB; decoding it would cost > 1000
    assert growth < 200, probe.stdout


@pytest.mark.parametrize("extension", [".png", ".jpg", ".bmp", ".webp", ".tiff"])
def test_header_size_matches_the_decoded_size(extension):
    from pipeline.images import header_size

    ok, encoded = cv2.imencode(extension, noise_image(4, 37, 53))
    assert ok
    assert header_size(encoded.tobytes()) == (53, 37)
