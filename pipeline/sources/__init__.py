"""Data sources: every layout is read into the same ``DataListing`` of ``ImageRecord``s.

``synthetic`` is the OUHANDS layout written by our own renderer (with true landmarks beside it),
``ouhands`` the real OUHANDS data set, ``folders`` any folder of class sub-folders.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPLITS: tuple[str, ...] = ("train", "validation", "test")


class DataLayoutError(ValueError):
    """The data root is missing or not laid out as its source expects."""


@dataclass(frozen=True)
class ImageRecord:
    path: str  # relative to the data root, with forward slashes
    split: str  # one of SPLITS
    class_name: str
    subject: str
    box_xywh: tuple[float, float, float, float] | None = None  # the source's hand box, pixels
    true_landmarks: np.ndarray | None = field(
        default=None, compare=False
    )  # (joints, 2), normalised


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


@dataclass
class DataListing:
    root: Path
    records: list[ImageRecord]
    skipped: list[SkippedFile]


def link_problem(path: Path) -> str | None:
    """Why a symlink cannot be read (dangling, or a loop); None for anything else."""
    if not path.is_symlink():
        return None
    try:
        path.stat()
    except FileNotFoundError:
        return f"dangling symlink: its target {os.readlink(path)} does not exist"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symlink loop: the link leads back to itself"
        return f"symlink cannot be followed: {error.strerror or error}"
    return None


def files_under(folder: Path, root: Path, skipped: list[SkippedFile]) -> list[Path]:
    """Every file below ``folder`` (sorted, recursive), following
    symlinks to files but not to folders (a loop of folders would never end). Broken symlinks
    and symlinked folders are counted skips in ``skipped`` (paths relative to ``root``)."""
    files = []
    for directory, subdirs, names in os.walk(folder):
        here = Path(directory)
        for name in list(subdirs):
            if (here / name).is_symlink():
                subdirs.remove(name)
                skipped.append(
                    SkippedFile(
                        (here / name).relative_to(root).as_posix() + "/",
                        "symlink to a folder: not followed (link its files instead)",
                    )
                )
        subdirs.sort()
        for name in sorted(names):
            path = here / name
            problem = link_problem(path)
            if problem is not None:
                skipped.append(SkippedFile(path.relative_to(root).as_posix(), problem))
            else:
                files.append(path)
    return sorted(files)


def list_images(source: str, root: str | Path, **options) -> DataListing:
    """Read a data root with the reader of ``source`` (see ``pipeline.params.DataParams``).

    ``options`` (subject pattern, split fractions and seed) only apply to the folders source,
    since the OUHANDS layout brings its own official splits.
    """
    root = Path(root)
    if not root.exists():
        raise DataLayoutError(f"data root {root} does not exist; set data.root in params.yaml")
    if not root.is_dir():
        raise DataLayoutError(f"data root {root} is not a folder")
    if source in ("synthetic", "ouhands"):
        from pipeline.sources.ouhands import list_ouhands

        listing = list_ouhands(root, require_truth=source == "synthetic")
    elif source == "folders":
        from pipeline.sources.folders import list_folders

        listing = list_folders(root, **options)
    else:
        raise DataLayoutError(f"unknown data source {source!r}")
    if not listing.records:
        raise DataLayoutError(
            f"no usable images under {root} for source {source!r} "
            f"({len(listing.skipped)} files skipped"
            + (
                f", e.g. {listing.skipped[0].path}: {listing.skipped[0].reason}"
                if listing.skipped
                else ""
            )
            + ")"
        )
    return listing
