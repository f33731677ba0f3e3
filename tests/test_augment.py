"""Geometry augmentation: one affine moves image and landmarks together (a drawn landmark is found
again where the transformed coordinates say), flips mirror x and swap handedness, rotations respect
the picture's aspect ratio, the hand stays in view, and nothing is drawn when it is off. The
low-resolution crop loses fine detail and keeps the picture where it was."""

import math

import numpy as np
import pytest
import torch

from pipeline.augment import (
    augment_geometry,
    color_augment,
    geometry_enabled,
    handedness_after,
    low_resolution,
    random_affines,
    transform_points,
    warp_images,
)
from pipeline.keypoints import NUM_JOINTS
from pipeline.params import TrainParams


def geometry_params(**geometry) -> TrainParams:
    """Train params with every geometry augmentation off but those given."""
    off = {"flip_p": 0.0, "rotate_deg": 0.0, "scale_min": 1.0, "scale_max": 1.0, "translate": 0.0}
    return TrainParams(**{**off, **geometry})


SIZE = 64
ALL_ON = geometry_params(
    flip_p=0.5, rotate_deg=40, scale_min=0.7, scale_max=1.3, translate=0.15, keep_margin=0.05
)


def blob_images(points: np.ndarray, size: int = SIZE, sigma: float = 1.2) -> torch.Tensor:
    """One image per point: a Gaussian spot centred on it (x, y in [0, 1], pixel centres at
    (i + 0.5) / size)."""
    centres = (np.arange(size) + 0.5) / size
    images = []
    for x, y in points:
        spot = np.exp(
            -((centres[None, :] - x) ** 2 + (centres[:, None] - y) ** 2) * size**2 / (2 * sigma**2)
        )
        images.append(np.repeat(spot[None], 3, axis=0))
    return torch.tensor(np.array(images), dtype=torch.float32)


def spot_centre(image: torch.Tensor) -> np.ndarray:
    """Intensity-weighted centre of the brightest spot of a (3, S, S) image, in [0, 1] units."""
    values = image[0].numpy().astype(np.float64)
    values = np.where(values > 0.3 * values.max(), values, 0)
    size = values.shape[0]
    centres = (np.arange(size) + 0.5) / size
    total = values.sum()
    return np.array(
        [(values.sum(0) * centres).sum() / total, (values.sum(1) * centres).sum() / total]
    )


def hand_points(count: int, seed: int) -> torch.Tensor:
    """(count, joints, 3) points in a box well inside the frame, z random."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(0.4, 0.6, (count, 1, 2))
    offsets = rng.uniform(-0.12, 0.12, (count, NUM_JOINTS, 2))
    z = rng.normal(0, 0.05, (count, NUM_JOINTS, 1))
    return torch.tensor(np.concatenate([centre + offsets, z], axis=-1), dtype=torch.float32)


@pytest.mark.parametrize("aspect", [1.0, 4 / 3])
def test_a_drawn_landmark_is_found_again_after_the_transform(aspect):
    count = 16
    landmarks = hand_points(count, seed=1)
    spot = landmarks[:, 7, :2].numpy()  # draw one joint of each hand
    images = blob_images(spot)
    generator = torch.Generator().manual_seed(3)
    warped, moved, flipped = augment_geometry(
        images, landmarks, torch.full((count,), aspect), ALL_ON, generator
    )
    assert 0 < int(flipped.sum()) < count  # both cases are exercised
    for i in range(count):
        found = spot_centre(warped[i])
        # within a fifth of a pixel of where the landmark's own transform put it
        assert np.abs(found - moved[i, 7, :2].numpy()).max() * SIZE < 0.2, i


def test_flip_mirrors_x_keeps_joints_and_swaps_handedness():
    landmarks = hand_points(4, seed=2)
    generator = torch.Generator().manual_seed(0)
    flip_only = geometry_params(flip_p=1.0, keep_margin=-1)
    images = blob_images(landmarks[:, 0, :2].numpy())
    warped, moved, flipped = augment_geometry(
        images, landmarks, torch.full((4,), 4 / 3), flip_only, generator
    )
    assert flipped.all()
    torch.testing.assert_close(moved[..., 0], 1 - landmarks[..., 0])
    torch.testing.assert_close(moved[..., 1:], landmarks[..., 1:])  # y and z, same joint order
    torch.testing.assert_close(warped, images.flip(-1), atol=1e-5, rtol=0)
    assert handedness_after(["Left", "Right", "Left", "Right"], flipped) == [
        "Right",
        "Left",
        "Right",
        "Left",
    ]
    assert handedness_after(["Left", "Right"], torch.tensor([False, True])) == ["Left", "Left"]


def test_rotation_is_a_rotation_of_the_photo_not_of_the_squashed_square():
    # A 640x480 photo squashed to a square: rotating by 90 degrees must keep physical lengths.
    aspect = 4 / 3
    landmarks = hand_points(8, seed=3)
    settings = geometry_params(rotate_deg=90, keep_margin=-1)
    matrices, _ = random_affines(landmarks, torch.full((8,), aspect), settings, torch.Generator())
    moved = transform_points(landmarks.double(), matrices)
    physical = torch.tensor([aspect, 1.0], dtype=torch.float64)
    before = (landmarks[:, 1:, :2].double() - landmarks[:, :1, :2].double()) * physical
    after = (moved[:, 1:, :2] - moved[:, :1, :2]) * physical
    torch.testing.assert_close(before.norm(dim=-1), after.norm(dim=-1))


def test_scale_scales_z_and_the_hand_stays_in_view():
    landmarks = hand_points(64, seed=4)
    landmarks[:, :, :2] = (landmarks[:, :, :2] - 0.5) * 2.5 + 0.5  # large hands
    settings = geometry_params(scale_min=1.2, scale_max=1.2, translate=0.4, keep_margin=0.05)
    images = torch.zeros(64, 3, 16, 16)
    _, moved, _ = augment_geometry(
        images, landmarks, torch.ones(64), settings, torch.Generator().manual_seed(1)
    )
    torch.testing.assert_close(moved[..., 2], landmarks[..., 2] * 1.2)
    box_min, box_max = moved[..., :2].amin(1), moved[..., :2].amax(1)
    fits = ((landmarks[..., :2].amax(1) - landmarks[..., :2].amin(1)) * 1.2 <= 0.9).all(-1)
    assert fits.sum() > 10
    assert (box_min[fits] >= 0.05 - 1e-5).all() and (box_max[fits] <= 0.95 + 1e-5).all()


def test_switched_off_draws_nothing_and_identity_warp_keeps_the_image():
    assert not geometry_enabled(geometry_params())
    generator = torch.Generator().manual_seed(5)
    state = generator.get_state()
    landmarks = hand_points(3, seed=5)
    matrices, flipped = random_affines(landmarks, torch.ones(3), geometry_params(), generator)
    assert torch.equal(generator.get_state(), state) and not flipped.any()
    torch.testing.assert_close(
        matrices[:, :, :2], torch.eye(2, dtype=torch.float64).expand(3, 2, 2)
    )
    images = torch.rand(3, 3, 20, 20)
    torch.testing.assert_close(warp_images(images, matrices), images, atol=1e-5, rtol=0)


def test_same_generator_same_augmentation():
    landmarks = hand_points(5, seed=6)
    images = torch.rand(5, 3, 24, 24)
    runs = [
        augment_geometry(images, landmarks, torch.ones(5), ALL_ON, torch.Generator().manual_seed(9))
        for _ in range(2)
    ]
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_colour_augment_keeps_range_and_grayscale_is_gray():
    images = torch.rand(6, 3, 8, 8)
    out = color_augment(images, 0.5, 1.0, torch.Generator().manual_seed(0))
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    assert math.isclose(
        float(color_augment(images, 0, 0, torch.Generator()).sub(images).abs().max()), 0
    )


def checkerboard(n: int, size: int) -> torch.Tensor:
    """Black and white squares of one pixel: all fine detail, mean 0.5."""
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return ((rows + cols) % 2).float().expand(n, 3, size, size).clone()


def test_low_resolution_blurs_fine_detail_and_keeps_the_picture_in_place():
    images = checkerboard(8, 32)
    out = low_resolution(images, 1.0, 0.25, torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    # One-pixel squares averaged over 4-pixel cells (or less at 0.25-1 of the side): what a
    # sensor of a quarter the pixels records of them is grey, far from black or white.
    assert float((out - 0.5).abs().amax(dim=(1, 2, 3)).min()) < 0.45
    # Area averaging and bilinear enlarging move no mass: a bright spot stays where it was.
    spot = torch.zeros(1, 1, 32, 32)
    spot[0, 0, 20:24, 8:12] = 1.0
    blurred = low_resolution(spot, 1.0, 0.5, torch.Generator().manual_seed(1))
    rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    weights = blurred[0, 0] / blurred[0, 0].sum()
    centre = (float((weights * rows).sum()), float((weights * cols).sum()))
    assert abs(centre[0] - 21.5) < 1.0 and abs(centre[1] - 9.5) < 1.0


def test_low_resolution_off_draws_nothing_and_on_is_reproducible():
    images = torch.rand(5, 3, 16, 16)
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    assert low_resolution(images, 0.0, 0.35, generator) is images
    assert torch.equal(generator.get_state(), state)
    runs = [low_resolution(images, 0.5, 0.35, torch.Generator().manual_seed(4)) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    # The first draw chooses the samples: those chosen are shrunk, the others untouched.
    chosen = (torch.rand(5, generator=torch.Generator().manual_seed(4)) < 0.5).tolist()
    assert any(chosen) and not all(chosen)
    changed = [not torch.equal(runs[0][i], images[i]) for i in range(5)]
    assert changed == chosen


def test_low_resolution_is_for_fine_tuning_only():
    from pipeline.params import (
        FinderParams,
        ParamsError,
        PretrainParams,
        finder_params_for,
        pretrain_params_for,
    )

    train = TrainParams(low_res_p=0.5)
    assert pretrain_params_for(PretrainParams(), train).low_res_p == 0
    assert finder_params_for(FinderParams(), train).low_res_p == 0
    for bad in ({"low_res_p": 1.5}, {"low_res_min": 0.0}):
        with pytest.raises(ParamsError, match="low_res"):
            TrainParams(**bad)
