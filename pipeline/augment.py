"""Training-time augmentation, batched on the training device.

Geometry: ONE affine matrix per sample moves the image and its landmarks together (horizontal
flip, rotation, scale, translation that keeps the hand in view). Matrices map input-frame
coordinates (x, y in [0, 1] over the model's square input, see ``pipeline.codec``) to the
augmented frame; images are resampled with the inverse through ``affine_grid``/``grid_sample``.
Rotation and scale act on the physical image (``aspect`` = width / height of the picture the
square input shows), so a squashed 4:3 frame is rotated as the photo was, not sheared.

A flip keeps joint indices (hands have no left/right joint pairs) and swaps handedness
(``pipeline.keypoints.flip_handedness``). Colour: brightness, contrast, saturation, grayscale.
Resolution: a crop shrunk and enlarged back, as a small hand in a photo looks once its crop is
enlarged to the model's input (the landmarks do not move).

Every random number is drawn on the CPU from the caller's generator, so results do not depend on
the device, and nothing is drawn for an augmentation that is switched off (a run without geometry
augmentation draws exactly the random numbers it drew before geometry existed).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from pipeline.keypoints import flip_handedness
from pipeline.params import TrainParams

GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def geometry_enabled(params: TrainParams) -> bool:
    """Whether any geometry augmentation is on (off: the images are not resampled at all)."""
    return (
        params.flip_p > 0
        or params.rotate_deg > 0
        or params.scale_min != 1.0
        or params.scale_max != 1.0
        or params.translate > 0
    )


def random_affines(
    landmarks: torch.Tensor,
    aspect: torch.Tensor,
    params: TrainParams,
    generator: torch.Generator,
    zoom: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one affine per sample: (N, 2, 3) float64 matrices on the CPU and (N,) flip flags.

    ``landmarks`` (N, joints, >=2) input-frame coordinates, used to keep the hand in view;
    ``aspect`` (N,) width / height of the picture each input shows; ``zoom``: a fixed zoom about
    the centre before the random one (training crops are cut ``train.crop_context`` wider than
    the model's crop, and zoomed back to it here, so that the jitter has real pixels to show).
    """
    n = len(landmarks)
    aspect = torch.as_tensor(aspect, dtype=torch.float64).reshape(n)

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)

    flipped = (
        torch.rand(n, generator=generator) < params.flip_p
        if params.flip_p > 0
        else torch.zeros(n, dtype=torch.bool)
    )
    angle = (
        uniform(-params.rotate_deg, params.rotate_deg) * (math.pi / 180)
        if params.rotate_deg > 0
        else torch.zeros(n, dtype=torch.float64)
    )
    if params.scale_min != 1.0 or params.scale_max != 1.0:
        # log-uniform: zooming in by s is as likely as zooming out by 1/s
        scale = uniform(math.log(params.scale_min), math.log(params.scale_max)).exp()
    else:
        scale = torch.ones(n, dtype=torch.float64)
    if zoom != 1.0:
        scale = scale * zoom
    shift = (
        torch.stack([uniform(-params.translate, params.translate) for _ in range(2)], 1)
        if params.translate > 0
        else torch.zeros(n, 2, dtype=torch.float64)
    )

    # In centred coordinates c = p - 0.5 the physical picture is D c with D = diag(aspect, 1):
    # c' = D^-1 F s R D c + shift, F the mirror.
    cos, sin = torch.cos(angle), torch.sin(angle)
    mirror = torch.where(flipped, -1.0, 1.0).to(torch.float64)
    linear = torch.empty(n, 2, 2, dtype=torch.float64)
    linear[:, 0, 0] = mirror * scale * cos
    linear[:, 0, 1] = -mirror * scale * sin / aspect
    linear[:, 1, 0] = scale * sin * aspect
    linear[:, 1, 1] = scale * cos
    points = torch.as_tensor(landmarks[..., :2], dtype=torch.float64).cpu() - 0.5
    moved = points @ linear.transpose(1, 2) + shift[:, None, :]
    if params.keep_margin >= 0:
        low = params.keep_margin - 0.5
        high = 0.5 - params.keep_margin
        box_min, box_max = moved.amin(1), moved.amax(1)
        # Shift back inside where the box fits; centre it where it does not.
        fix = torch.where(box_min < low, low - box_min, torch.zeros_like(box_min))
        fix = torch.where(box_max > high, high - box_max, fix)
        too_big = (box_max - box_min) > (high - low)
        fix = torch.where(too_big, -(box_min + box_max) / 2, fix)
        shift = shift + fix
    matrices = torch.empty(n, 2, 3, dtype=torch.float64)
    matrices[:, :, :2] = linear
    # p' = L (p - 0.5) + shift + 0.5
    matrices[:, :, 2] = (
        shift + 0.5 - (linear @ torch.full((n, 2, 1), 0.5, dtype=torch.float64))[..., 0]
    )
    return matrices, flipped


def transform_points(points: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Apply (N, 2, 3) affines to the x, y of (N, joints, >=2) points; other columns are kept."""
    matrices = matrices.to(points.device, points.dtype)
    xy = points[..., :2] @ matrices[:, :, :2].transpose(1, 2) + matrices[:, None, :, 2]
    return torch.cat([xy, points[..., 2:]], dim=-1)


def warp_images(
    images: torch.Tensor, matrices: torch.Tensor, size: int | None = None
) -> torch.Tensor:
    """Resample float (N, C, H, W) images so that a point p of the input lands at A p; the
    output is ``size`` x ``size`` (None: the input's size).

    Bilinear, zeros outside the picture; ``align_corners=False`` matches the convention that
    x = 0 and x = 1 are the outer edges of the first and last pixel.
    """
    n = len(images)
    full = torch.zeros(n, 3, 3, dtype=torch.float64)
    full[:, :2] = matrices.cpu().to(torch.float64)
    full[:, 2, 2] = 1.0
    inverse = torch.linalg.inv(full)[:, :2]  # output frame -> input frame, in [0, 1] units
    # affine_grid works in [-1, 1] units: g = 2p - 1, so g_in = L g_out + (2 t + L 1 - 1).
    theta = inverse.clone()
    theta[:, :, 2] = 2 * inverse[:, :, 2] + inverse[:, :, :2].sum(-1) - 1
    shape = list(images.shape) if size is None else [n, images.shape[1], size, size]
    grid = F.affine_grid(theta.to(images.device, images.dtype), shape, align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment_geometry(
    images: torch.Tensor,
    landmarks: torch.Tensor,
    aspect: torch.Tensor,
    params: TrainParams,
    generator: torch.Generator,
    zoom: float = 1.0,
    size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float images (N, 3, S, S) and input-frame landmarks (N, joints, 3) → both moved by the
    same random affine (after ``zoom``, see ``random_affines``), the images resampled to
    ``size``, plus the (N,) flip flags. z scales with the picture (MediaPipe's z is in units of
    the image width), and is unchanged by mirror and rotation."""
    matrices, flipped = random_affines(landmarks, aspect, params, generator, zoom)
    moved = transform_points(landmarks, matrices)
    if moved.shape[-1] > 2:
        # |det| of the 2x2 part is scale^2 whatever the aspect
        scale = matrices[:, :, :2].det().abs().sqrt().to(moved.device, moved.dtype)
        moved = torch.cat([moved[..., :2], moved[..., 2:] * scale.view(-1, 1, 1)], dim=-1)
    return warp_images(images, matrices, size), moved, flipped


def handedness_after(labels: list[str] | np.ndarray, flipped: torch.Tensor) -> list[str]:
    """Handedness labels after augmentation: a mirrored left hand is a right hand."""
    return [
        flip_handedness(label) if bool(flip) else label
        for label, flip in zip(labels, flipped.tolist())
    ]


def low_resolution(
    images: torch.Tensor, p: float, smallest: float, generator: torch.Generator
) -> torch.Tensor:
    """Per sample with probability ``p``: shrink to ``s`` times its side (``s`` log-uniform in
    [``smallest``, 1], area-averaged as a camera's sensor averages) and enlarge back bilinearly.

    ``images`` is float (N, C, H, W) on any device. The crops of a small hand are enlarged to
    the model's input, so they carry less detail than their pixel count says; training crops of
    the renders and of large hands are sharp. Random numbers come from ``generator`` on the CPU,
    and none are drawn when ``p`` is 0.
    """
    if p <= 0:
        return images
    n, _, height, width = images.shape
    chosen = torch.rand(n, generator=generator) < p
    scales = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(
        math.log(smallest), 0.0, generator=generator))  # fmt: skip
    out = images.clone()
    for i in torch.nonzero(chosen).flatten().tolist():
        size = (max(2, round(height * float(scales[i]))), max(2, round(width * float(scales[i]))))
        if size == (height, width):
            continue
        small = F.interpolate(images[i : i + 1], size=size, mode="area")
        out[i] = F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)[0]
    return out


def color_augment(
    images: torch.Tensor, strength: float, grayscale_p: float, generator: torch.Generator
) -> torch.Tensor:
    """Per-sample brightness, contrast and saturation jitter, then random grayscale.

    ``images`` is float (N, 3, H, W) in [0, 1] on any device; random factors are drawn on the CPU
    from ``generator`` so results do not depend on the device.
    """
    n = images.shape[0]
    device = images.device

    def factors() -> torch.Tensor:
        values = 1.0 + (torch.rand(n, generator=generator) * 2 - 1) * strength
        return values.to(device).view(n, 1, 1, 1)

    gray_weights = torch.tensor(GRAY_WEIGHTS, device=device).view(1, 3, 1, 1)
    if strength > 0:
        images = images * factors()
        gray_mean = (images * gray_weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        images = (images - gray_mean) * factors() + gray_mean
        gray = (images * gray_weights).sum(1, keepdim=True)
        images = (images - gray) * factors() + gray
        images = images.clamp(0, 1)
    if grayscale_p > 0:
        to_gray = (torch.rand(n, generator=generator) < grayscale_p).to(device).view(n, 1, 1, 1)
        gray = (images * gray_weights).sum(1, keepdim=True).expand_as(images)
        images = torch.where(to_gray, gray, images)
    return images
