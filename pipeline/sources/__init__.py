"""Data sources: every layout is read into the same ``DataListing`` of ``ImageRecord``s.

``synthetic`` is the OUHANDS layout written by our own renderer (with true landmarks beside it),
``ouhands`` the real OUHANDS data set, ``folders`` any folder of class sub-folders;
``pipeline.sources.listing.list_images`` picks the reader. This module holds the record types and
the file walking the readers share, and imports none of them (the renderer lives here too, and its
stage should not depend on the readers).
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
