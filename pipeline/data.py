"""Decode-once training data: each split image is read and resized once per run into a uint8
tensor (in the codec's input layout: squashed or letterboxed); batches are cut from it and
augmented on the training device (``pipeline.augment``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.augment import color_augment  # noqa: F401  (re-exported: its old home)
from pipeline.codec import LandmarkCodec, resize_square  # noqa: F401  (resize_square: re-exported)
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
    layout: str = "squash"  # how the images were made from the originals (see pipeline.codec)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def true_landmarks(self) -> np.ndarray | None:
        """(N, joints, 2) true landmarks where the source is synthetic, else None."""
        if not set(TRUTH_COLUMNS) <= set(self.table.columns):
            return None
        truth = self.table[TRUTH_COLUMNS].to_numpy(np.float64).reshape(len(self), NUM_JOINTS, 2)
        return None if np.isnan(truth).any() else truth


def load_split(
    table: pd.DataFrame, data_root: str | Path, image_size: int, layout: str = "squash"
) -> SplitData:
    """Decode every image of ``table`` once. A file that fails now (it was read by the labeling
    stage) is an error naming it: the data root changed under the pipeline."""
    table = table.reset_index(drop=True)
    images = np.empty((len(table), image_size, image_size, 3), dtype=np.uint8)
    codec = LandmarkCodec(layout=layout)
    for i, relative in enumerate(table["path"]):
        rgb = read_image(Path(data_root) / relative)
        images[i] = codec.input_image(rgb, image_size)
    landmarks = table[LANDMARK_COLUMNS].to_numpy(np.float64).reshape(len(table), NUM_JOINTS, 3)
    return SplitData(
        images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        landmarks=landmarks,
        width=table["width"].to_numpy(np.float64),
        height=table["height"].to_numpy(np.float64),
        table=table,
        layout=layout,
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
