"""Decode-once training data: each split image is read and resized once per run into a uint8
tensor (in the codec's input layout: squashed or letterboxed); batches are cut from it and
augmented on the training device (``pipeline.augment``).

The decoded images are N x 3 x S x S bytes (48 KiB per image at 128 px). Up to a budget
(``train.cache_budget_mib``) they are held in memory; above it they go to an unnamed temporary
file (``DiskImages``) that batches are read from, so the process's memory stays flat however
large the data set is. Both give the same bytes, hence the same training run.

Under torchrun the processes of one machine hold one copy between them, not one each: a file
that each of them maps (in memory: on the /dev/shm tmpfs where it has room) or reads batches
from (over the budget), each process decoding its share of the images into it. Machines do not
exchange images; each decodes the whole split with its own processes.
"""

from __future__ import annotations

import errno
import mmap
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import torch

from pipeline import distributed
from pipeline.codec import InputFrames, LandmarkCodec
from pipeline.crops import SQUARE_COLUMNS
from pipeline.images import read_image
from pipeline.keypoints import NUM_JOINTS
from pipeline.machine import available_cores
from pipeline.schema import LANDMARK_COLUMNS, TRUTH_COLUMNS, image_paths

# Sample table column (``pipeline.samples``): False where the sample's presence is no target.
TEACHES_PRESENCE = "teaches_presence"


class DiskImages:
    """uint8 (N, 3, S, S) images in an unnamed temporary file, read back per batch.

    Indexing with a 1-D index tensor returns a new in-memory uint8 tensor of those images, like
    indexing a tensor. The file has no name (it is unlinked at once), so the operating system
    reclaims it however the process ends, kill -9 included.
    """

    device = torch.device("cpu")
    dtype = torch.uint8

    def __init__(
        self,
        count: int,
        image_size: int,
        directory: str | Path | None = None,
        file: BinaryIO | None = None,
    ):
        """A new unnamed file in ``directory`` (None: the temporary folder), or ``file``, an
        open file of the right size that other processes share."""
        self.shape = torch.Size((count, 3, image_size, image_size))
        self._record = 3 * image_size * image_size
        if file is None:
            file = tempfile.TemporaryFile(dir=directory)
            file.truncate(count * self._record)
        self._file = file

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


def decode_threads(processes_on_machine: int = 1) -> int:
    """Threads that decode images (OpenCV releases the GIL): this process's share of the
    machine's cores, at most 8."""
    return max(1, min(8, available_cores() // processes_on_machine))


DECODE_CHUNK = 256  # images decoded and stored at a time


SHARED_MEMORY = Path("/dev/shm")
CACHE_PREFIX = "hand-landmarks-cache-"  # then the creating process's id


def _remove_orphans(directory: Path) -> None:
    """Cache files whose creator is gone: a run killed in the instant between creating the file
    and removing its name (while the other processes open it) would otherwise leave it, and in
    /dev/shm it holds memory until the machine restarts."""
    for path in directory.glob(f"{CACHE_PREFIX}*"):
        creator = path.name[len(CACHE_PREFIX) :].split("-")[0]
        if not creator.isdigit():
            continue
        try:
            os.kill(int(creator), 0)
        except ProcessLookupError:
            try:
                path.unlink(missing_ok=True)
            except PermissionError:
                # another user's (a shared machine; /tmp and /dev/shm are sticky): theirs to
                # remove, and no reason to stop this run
                print(
                    f"left a stale training cache file of another user alone: {path}",
                    file=sys.stderr,
                )
        except PermissionError:  # alive, another user's
            pass


def _reserve(handle: int, nbytes: int) -> None:
    """Give the file its size with the space reserved now, so a full tmpfs or disk is an error
    here rather than a crash (SIGBUS) when a mapped page is first written."""
    os.ftruncate(handle, nbytes)
    if not hasattr(os, "posix_fallocate") or nbytes == 0:  # macOS: size only
        return
    try:
        os.posix_fallocate(handle, 0, nbytes)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise
        # a file system that cannot reserve (EOPNOTSUPP, EINVAL): the size alone will do


def _machine_shared_images(count: int, image_size: int, on_disk: bool) -> torch.Tensor | DiskImages:
    """One cache file for all training processes of this machine: the first creates it (in
    /dev/shm when the images are to be in memory and it has room, else in the temporary
    folder), all open it, then its name is removed, so the system frees it when the last of
    them ends, kill -9 included. In memory, every process maps the same pages; on disk, each
    reads its batches from the one file."""
    ranks = distributed.current_ranks()
    nbytes = cache_bytes(count, image_size)
    created = None
    if ranks.local_rank == 0:
        directory = Path(tempfile.gettempdir())
        if not on_disk and SHARED_MEMORY.is_dir():
            if shutil.disk_usage(SHARED_MEMORY).free > 1.1 * nbytes:
                directory = SHARED_MEMORY
        _remove_orphans(directory)
        handle, name = tempfile.mkstemp(prefix=f"{CACHE_PREFIX}{os.getpid()}-", dir=directory)
        try:
            _reserve(handle, nbytes)
        except OSError as error:
            os.close(handle)
            os.unlink(name)
            raise OSError(
                f"no room for the decoded-image cache ({nbytes / 2**20:.0f} MiB) in {directory}: "
                f"{error.strerror}; free space there, point TMPDIR elsewhere, or lower "
                "train.cache_budget_mib (over it the cache goes to TMPDIR)"
            ) from error
        os.close(handle)
        created = (ranks.machine, name)
    name = dict(pair for pair in distributed.gather_objects(created) if pair)[ranks.machine]
    file = open(name, "r+b")  # kept open by DiskImages, or mapped below
    distributed.barrier()  # all have it open: the name can go
    if ranks.local_rank == 0:
        os.unlink(name)
    if on_disk:
        return DiskImages(count, image_size, file=file)
    with file:
        mapped = mmap.mmap(file.fileno(), nbytes)  # shared: every process, one copy
    array = np.frombuffer(mapped, dtype=np.uint8)  # keeps the mapping alive
    return torch.from_numpy(array).view(count, 3, image_size, image_size)


@dataclass
class SplitData:
    """One split at training resolution: one sample per row of its table (an image, and for the
    crop layout the square of it that the sample shows)."""

    images: torch.Tensor | DiskImages  # (N, 3, S, S) uint8
    landmarks: np.ndarray  # (N, joints, 3) teacher landmarks, normalised; NaN: no hand
    width: np.ndarray  # (N,) original image size, pixels
    height: np.ndarray
    table: pd.DataFrame
    layout: str = "crop"  # how the images were made from the originals (see pipeline.codec)
    squares: np.ndarray | None = None  # (N, 3) crop layout: the square each image shows, px
    # (N,) how often each sample is drawn in training relative to the others (None: all alike,
    # each once per epoch); from train.source_weights
    weights: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.table)

    @property
    def teaches_presence(self) -> np.ndarray:
        """(N,) bool: the sample's presence is a target of the presence head (the table's
        ``TEACHES_PRESENCE`` column where it has one, e.g. not wide crops; else every sample)."""
        if TEACHES_PRESENCE in self.table.columns:
            return self.table[TEACHES_PRESENCE].to_numpy(bool)
        return np.ones(len(self.table), dtype=bool)

    @property
    def presence(self) -> np.ndarray:
        """(N,) bool: the sample shows the hand (the table's ``presence`` where it has one, e.g.
        crops that miss the hand; else: the teacher found one)."""
        if "presence" in self.table.columns:
            return self.table["presence"].to_numpy(bool)
        return np.isfinite(self.landmarks).all(axis=(1, 2))

    def frames(self, size: int | None = None) -> InputFrames:
        """Each sample's frame: table units → the picture it holds."""
        codec = LandmarkCodec(layout=self.layout)
        return codec.frames(self.width, self.height, size, self.squares)

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


def concat_splits(first: SplitData, second: SplitData) -> SplitData:
    """``first``'s samples, then ``second``'s, as one split (same layout and image size; images
    in memory). Table columns one of them lacks are NaN for the other's rows; sample weights
    (``SplitData.weights``) are 1 where a split has none."""
    if first.layout != second.layout:
        raise ValueError(f"cannot join a {first.layout} split to a {second.layout} one")
    if first.on_disk or second.on_disk:
        raise ValueError(
            "cannot add samples to a split whose images are on disk (over "
            "train.cache_budget_mib): raise the budget, or add none (train.rehearsal: 0)"
        )
    if first.images.shape[1:] != second.images.shape[1:]:
        raise ValueError(
            f"cannot join images of {tuple(first.images.shape[1:])} to "
            f"{tuple(second.images.shape[1:])}"
        )
    if (first.squares is None) != (second.squares is None):
        raise ValueError("cannot join a split with crop squares to one without")
    weights = None
    if first.weights is not None or second.weights is not None:
        weights = np.concatenate(
            [
                np.ones(len(split)) if split.weights is None else split.weights
                for split in (first, second)
            ]
        )
    return SplitData(
        images=torch.cat([first.images, second.images]),
        landmarks=np.concatenate([first.landmarks, second.landmarks]),
        width=np.concatenate([first.width, second.width]),
        height=np.concatenate([first.height, second.height]),
        table=pd.concat([first.table, second.table], ignore_index=True),
        layout=first.layout,
        squares=None if first.squares is None else np.concatenate([first.squares, second.squares]),
        weights=weights,
    )


def load_split(
    table: pd.DataFrame,
    data_root: str | Path | Mapping[str, str | Path],
    image_size: int,
    layout: str = "crop",
    budget_bytes: int | None = None,
    squares: np.ndarray | None = None,
) -> SplitData:
    """Decode every image of ``table`` once, as the picture the layout makes of it (for crops,
    of the row's square in ``squares``, or in the table's ``crop_x, crop_y, crop_side``). A file
    that fails now (it was read by the labeling stage) is an error naming it: the data root
    changed under the pipeline.

    The decoded images stay in memory when they fit ``budget_bytes`` (None: no limit), else
    they go to a temporary file (``DiskImages``) and are read back per batch.
    """
    table = table.reset_index(drop=True)
    codec = LandmarkCodec(layout=layout)
    count = len(table)
    if layout == "crop" and squares is None:
        if not set(SQUARE_COLUMNS) <= set(table.columns):
            raise ValueError(
                f"the crop layout needs each row's square ({', '.join(SQUARE_COLUMNS)})"
            )
        squares = table[list(SQUARE_COLUMNS)].to_numpy(np.float64)
    if squares is not None:
        squares = np.asarray(squares, dtype=np.float64).reshape(count, 3)
    on_disk = budget_bytes is not None and cache_bytes(count, image_size) > budget_bytes
    # The processes of this machine (torchrun) share one copy and each decodes its share into it.
    machine = distributed.current_ranks().on_this_machine
    images: torch.Tensor | DiskImages
    if machine.distributed and count:
        images = _machine_shared_images(count, image_size, on_disk)
    elif on_disk:
        images = DiskImages(count, image_size)
    else:
        images = torch.empty((count, 3, image_size, image_size), dtype=torch.uint8)
    paths = image_paths(table, data_root)

    def decode(position: int) -> np.ndarray:
        square = None if squares is None else squares[position]
        rgb = read_image(paths[position])
        return codec.input_image(rgb, image_size, square).transpose(2, 0, 1)

    mine = distributed.contiguous_shares(count, machine)[machine.rank]
    with ThreadPoolExecutor(decode_threads(machine.world_size)) as pool:
        for start in range(0, len(mine), DECODE_CHUNK):
            chunk = mine[start : start + DECODE_CHUNK]
            _store(images, int(chunk[0]), np.stack(list(pool.map(decode, chunk))))
    distributed.barrier()  # every share is in before anyone trains on the whole
    landmarks = table[LANDMARK_COLUMNS].to_numpy(np.float64).reshape(count, NUM_JOINTS, 3)
    return SplitData(
        images=images,
        landmarks=landmarks,
        width=table["width"].to_numpy(np.float64),
        height=table["height"].to_numpy(np.float64),
        table=table,
        layout=layout,
        squares=squares if layout == "crop" else None,
    )
