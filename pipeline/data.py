"""Decode-once training data: each split image is read and resized once per run into a uint8
tensor; batches are cut from it and augmented on the training device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from pipeline.images import read_image
from pipeline.keypoints import NUM_JOINTS
from pipeline.labeling import LANDMARK_COLUMNS, TRUTH_COLUMNS


@dataclass
class SplitData:
    """One split at training resolution, aligned with its label table rows."""

    images: torch.Tensor  # (N, 3, S, S) uint8
    landmarks: np.ndarray  # (N, joints, 3) teacher landmarks, normalised
    width: np.ndarray  # (N,) original image size, pixels
    height: np.ndarray
    table: pd.DataFrame

    def __len__(self) -> int:
        return len(self.table)

    @property
    def true_landmarks(self) -> np.ndarray | None:
        """(N, joints, 2) true landmarks where the source is synthetic, else None."""
        if not set(TRUTH_COLUMNS) <= set(self.table.columns):
            return None
        truth = self.table[TRUTH_COLUMNS].to_numpy(np.float64).reshape(len(self), NUM_JOINTS, 2)
        return None if np.isnan(truth).any() else truth


def resize_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Squash to size x size (normalised landmark coordinates stay valid)."""
    interpolation = cv2.INTER_AREA if min(rgb.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interpolation)


def load_split(table: pd.DataFrame, data_root: str | Path, image_size: int) -> SplitData:
    """Decode every image of ``table`` once. A file that fails now (it was read by the labeling
    stage) is an error naming it: the data root changed under the pipeline."""
    table = table.reset_index(drop=True)
    images = np.empty((len(table), image_size, image_size, 3), dtype=np.uint8)
    for i, relative in enumerate(table["path"]):
        rgb = read_image(Path(data_root) / relative)
        images[i] = resize_square(rgb, image_size)
    landmarks = table[LANDMARK_COLUMNS].to_numpy(np.float64).reshape(len(table), NUM_JOINTS, 3)
    return SplitData(
        images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        landmarks=landmarks,
        width=table["width"].to_numpy(np.float64),
        height=table["height"].to_numpy(np.float64),
        table=table,
    )


def batches(count: int, batch_size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    """Index batches over ``count`` samples, shuffled when a generator is given.

    A last batch of one sample is merged into the previous one: BatchNorm cannot train on a
    single sample, and dropping it would silently lose data.
    """
    order = (
        torch.randperm(count, generator=generator) if generator is not None else torch.arange(count)
    )
    chunks = list(torch.split(order, batch_size))
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        single = chunks.pop()
        chunks[-1] = torch.cat([chunks[-1], single])
    return chunks


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

    gray_weights = torch.tensor([0.299, 0.587, 0.114], device=device).view(1, 3, 1, 1)
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
