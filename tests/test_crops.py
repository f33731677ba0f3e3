"""crop_image: exact where the crop is an exact box mean, black outside the image, the same
picture whatever lies far from the square, and a drawn point lands where crop_matrix says."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.crops import crop_image, crop_matrix, frame_squares


def photo(height: int = 480, width: int = 640, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def halve(image: np.ndarray) -> np.ndarray:
    """OpenCV's exact 2x2 area mean on uint8: (a + b + c + d + 2) >> 2."""
    blocks = image.astype(np.int32).reshape(image.shape[0] // 2, 2, image.shape[1] // 2, 2, 3)
    return ((blocks.sum(axis=(1, 3)) + 2) >> 2).astype(np.uint8)


@pytest.mark.parametrize("factor", [4, 8, 16])
def test_an_aligned_shrinking_crop_is_the_exact_box_mean(factor):
    """Side = size x factor at a corner on the factor's grid: the warp is a copy, the crop is the
    region halved log2(factor) times, bit for bit."""
    rgb, size = photo(), 24
    side, x0, y0 = size * factor, 2 * factor, factor
    square = np.array([x0 + side / 2, y0 + side / 2, side])
    expected = rgb[y0 : y0 + side, x0 : x0 + side]
    for _ in range(factor.bit_length() - 1):
        expected = halve(expected)
    np.testing.assert_array_equal(crop_image(rgb, square, size), expected)


def test_the_letterboxed_frame_has_black_bars_and_the_frame_in_between():
    rgb = np.full((480, 640, 3), 200, np.uint8)
    crop = crop_image(rgb, frame_squares(np.array([640.0]), np.array([480.0]))[0], 128)
    # 640 -> 128: the frame is 128 x 96 in the middle rows, 16 black rows above and below
    np.testing.assert_array_equal(crop[16:112], 200)
    np.testing.assert_array_equal(crop[:16], 0)
    np.testing.assert_array_equal(crop[112:], 0)


@pytest.mark.parametrize("side", [60.0, 150.0, 330.0, 1000.0])
def test_outside_the_image_is_black_and_inside_is_the_image(side):
    rgb = np.full((480, 640, 3), 90, np.uint8)
    square = np.array([0.0, 240.0, side])  # its left half lies left of the image
    crop = crop_image(rgb, square, 40)
    np.testing.assert_array_equal(crop[:, : 40 // 2 - 1], 0)
    inside = crop[:, 40 // 2 + 1 :]
    if side <= 480:  # the square's rows all lie in the image
        np.testing.assert_array_equal(inside, 90)
    assert crop_image(rgb, np.array([-5000.0, 240.0, side]), 40).max() == 0


@pytest.mark.parametrize("side", [60.0, 170.0, 300.0, 700.0])
def test_pixels_away_from_the_square_do_not_change_its_crop(side):
    rgb, square = photo(seed=1), np.array([300.0, 250.0, side])
    changed = rgb.copy()
    x0, y0 = int(300 - side / 2) - 16, int(250 - side / 2) - 16
    x1, y1 = int(300 + side / 2) + 16, int(250 + side / 2) + 16
    mask = np.ones(rgb.shape[:2], bool)
    mask[max(y0, 0) : y1, max(x0, 0) : x1] = False
    changed[mask] = 255 - changed[mask]
    np.testing.assert_array_equal(crop_image(rgb, square, 48), crop_image(changed, square, 48))


@pytest.mark.parametrize("side", [50.0, 200.0, 420.0])
def test_a_drawn_point_lands_where_the_crop_matrix_puts_it(side):
    """A bright 11x11 block at a known place: its centre in the crop is the affine's image of it
    (within a crop pixel), whether the crop enlarges or shrinks by a power of two and more."""
    rgb = np.zeros((480, 640, 3), np.uint8)
    point = np.array([331.0, 207.0])  # the block's centre pixel
    rgb[202:213, 326:337] = 255
    square, size = np.array([325.0, 215.0, side]), 64
    crop = crop_image(rgb, square, size).astype(float)[..., 0]
    found = (crop * np.indices(crop.shape)[::-1]).sum(axis=(1, 2)) / crop.sum()
    expected = crop_matrix(square, size) @ np.array([point[0], point[1], 1.0])
    assert np.abs(found - expected).max() < 1.0, (found, expected)
