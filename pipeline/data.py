"""Decode-once training data: each split image is read and resized once per run into a uint8
tensor (in the codec's input layout: squashed or letterboxed); batches are cut from it and
augmented on the training device (``pipeline.augment``).

The decoded images are N x 3 x S x S bytes (48 KiB per image at 128 px). Up to a budget
(``train.cache_budget_mib``) they are held in memory; above it they go to an unnamed temporary
file (``DiskImages``) that batches are read from, so the process's memory stays flat however
large the data set is. Both give the same bytes, hence the same training run.
"""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline import distributed
from pipeline.augment import color_augment  # noqa: F401  (re-exported: its old home)
from pipeline.codec import LandmarkCodec, resize_square  # noqa: F401  (resize_square: re-exported)
from pipeline.images import read_image
from pipeline.keypoints import NUM_JOINTS
from pipeline.labeling import LANDMARK_COLUMNS, TRUTH_COLUMNS
from pipeline.machine import available_cores


class DiskImages:
    """uint8 (N, 3, S, S) images in an unnamed temporary file, read back per batch.

    Indexing with a 1-D index tensor returns a new in-memory uint8 tensor of those images, like
    indexing a tensor. The file has no name (it is unlinked at once), so the operating system
    reclaims it however the process ends, kill -9 included.
    """

    device = torch.device("cpu")
    dtype = torch.uint8

    def __init__(self, count: int, image_size: int, directory: str | Path | None = None):
        self.shape = torch.Size((count, 3, image_size, image_size))
        self._record = 3 * image_size * image_size
        self._file = tempfile.TemporaryFile(dir=directory)
        self._file.truncate(count * self._record)

    def __len__(self) -> int:
        return self.shape[0]

    def write(self, start: int, block: np.ndarray) -> None:
        """Store images ``start``, ``start + 1``, ... from a (n, 3, S, S) uint8 block."""
        data = np.ascontiguousarray(block, dtype=np.uint8)
        if data.shape[1:] != self.shape[1:] or start + len(data) > len(self):
            raise ValueError(f"images {start}+{data.shape} do not fit {tuple(self.shape)}")
        os.pwrite(self._file.fileno(), data.tobytes(), start * self._record)

    def __getitem__(self, index: slice | torch.Tensor | np.ndarray) -> torch.Tensor:
        if isinstance(index, slice):
            positions = range(*index.indices(len(self)))
        else:
            positions = torch.as_tensor(index).reshape(-1).tolist()
            if positions and not 0 <= min(positions) <= max(positions) < len(self):
                raise IndexError(f"image index out of range for {len(self)} images")
        out = np.empty((len(positions), *self.shape[1:]), dtype=np.uint8)
        for row, position in enumerate(positions):
            out[row] = np.frombuffer(
                os.pread(self._file.fileno(), self._record, position * self._record), np.uint8
            ).reshape(self.shape[1:])
        return torch.from_numpy(out)

    def close(self) -> None:
        self._file.close()


def image_chunks(images: torch.Tensor | DiskImages, chunk: int = 256):
    """The images in order, ``chunk`` at a time, as uint8 tensors (memory or disk alike)."""
    for start in range(0, len(images), chunk):
        yield images[start : start + chunk]


def cache_bytes(count: int, image_size: int) -> int:
    return count * 3 * image_size * image_size


def _store(images: torch.Tensor | DiskImages, start: int, block: np.ndarray) -> None:
    if isinstance(images, DiskImages):
        images.write(start, block)
    else:
        images[start : start + len(block)] = torch.from_numpy(block)


def decode_threads() -> int:
    """Threads that decode images (OpenCV releases the GIL): this process's share of the
    machine's cores, at most 8."""
    per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return max(1, min(8, available_cores() // per_machine))


def _share_rows(images: torch.Tensor | DiskImages, shares: list[np.ndarray]) -> None:
    """Each rank decoded its share of the rows; broadcast every share to every rank."""
    import torch.distributed as dist

    ranks = distributed.current_ranks()
    device = torch.device("cpu")
    if dist.get_backend() == "nccl":  # NCCL moves GPU tensors only
        device = torch.device("cuda", torch.cuda.current_device())
    for source, rows in enumerate(shares):
        if not len(rows):
            continue
        first, end = int(rows[0]), int(rows[-1]) + 1
        for start in range(first, end, DECODE_CHUNK):
            stop = min(start + DECODE_CHUNK, end)
            if ranks.rank == source:
                block = images[start:stop].to(device)
            else:
                shape = (stop - start, *images.shape[1:])
                block = torch.empty(shape, dtype=torch.uint8, device=device)
            dist.broadcast(block, src=source)
            if ranks.rank != source:
                _store(images, start, block.cpu().numpy())


DECODE_CHUNK = 256  # images decoded, stored or exchanged at a time


@dataclass
class SplitData:
    """One split at training resolution, aligned with its label table rows."""

    images: torch.Tensor | DiskImages  # (N, 3, S, S) uint8
    landmarks: np.ndarray  # (N, joints, 3) teacher landmarks, normalised
    width: np.ndarray  # (N,) original image size, pixels
    height: np.ndarray
    table: pd.DataFrame
    layout: str = "squash"  # how the images were made from the originals (see pipeline.codec)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def on_disk(self) -> bool:
        return isinstance(self.images, DiskImages)

    @property
    def true_landmarks(self) -> np.ndarray | None:
        """(N, joints, 2) true landmarks where the source is synthetic, else None."""
        if not set(TRUTH_COLUMNS) <= set(self.table.columns):
            return None
        truth = self.table[TRUTH_COLUMNS].to_numpy(np.float64).reshape(len(self), NUM_JOINTS, 2)
        return None if np.isnan(truth).any() else truth


def load_split(
    table: pd.DataFrame,
    data_root: str | Path,
    image_size: int,
    layout: str = "squash",
    budget_bytes: int | None = None,
) -> SplitData:
    """Decode every image of ``table`` once. A file that fails now (it was read by the labeling
    stage) is an error naming it: the data root changed under the pipeline.

    The decoded images stay in memory when they fit ``budget_bytes`` (None: no limit), else
    they go to a temporary file (``DiskImages``) and are read back per batch.
    """
    table = table.reset_index(drop=True)
    codec = LandmarkCodec(layout=layout)
    count = len(table)
    on_disk = budget_bytes is not None and cache_bytes(count, image_size) > budget_bytes
    if on_disk:
        images: torch.Tensor | DiskImages = DiskImages(count, image_size)
    else:
        images = torch.empty((count, 3, image_size, image_size), dtype=torch.uint8)
    paths = [Path(data_root) / relative for relative in table["path"]]

    def decode(position: int) -> np.ndarray:
        return codec.input_image(read_image(paths[position]), image_size).transpose(2, 0, 1)

    # Under torchrun each process decodes its share and the shares are exchanged, so the
    # decoding is not repeated in every process.
    ranks = distributed.current_ranks()
    shares = distributed.contiguous_shares(count, ranks)
    mine = shares[ranks.rank]
    with ThreadPoolExecutor(decode_threads()) as pool:
        for start in range(0, len(mine), DECODE_CHUNK):
            chunk = mine[start : start + DECODE_CHUNK]
            _store(images, int(chunk[0]), np.stack(list(pool.map(decode, chunk))))
    if ranks.distributed:
        _share_rows(images, shares)
    landmarks = table[LANDMARK_COLUMNS].to_numpy(np.float64).reshape(count, NUM_JOINTS, 3)
    return SplitData(
        images=images,
        landmarks=landmarks,
        width=table["width"].to_numpy(np.float64),
        height=table["height"].to_numpy(np.float64),
        table=table,
        layout=layout,
    )


def batches(
    count: int, batch_size: int, generator: torch.Generator | None, min_size: int = 2
) -> list[torch.Tensor]:
    """Index batches over ``count`` samples, shuffled when a generator is given.

    A last batch smaller than ``min_size`` is merged into the previous one: BatchNorm cannot
    train on a single sample (per process), and dropping it would silently lose data.
    """
    order = (
        torch.randperm(count, generator=generator) if generator is not None else torch.arange(count)
    )
    chunks = list(torch.split(order, batch_size))
    if len(chunks) > 1 and len(chunks[-1]) < min_size:
        single = chunks.pop()
        chunks[-1] = torch.cat([chunks[-1], single])
    return chunks
