"""Any folder of class sub-folders (torchvision's ImageFolder layout), split by subject.

The split is deterministic (seeded) and grouped by a subject key taken from the file name, so one
person's images never land in two splits.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pipeline.images import is_image_name
from pipeline.sources import (
    DataLayoutError,
    DataListing,
    ImageRecord,
    SkippedFile,
    files_under,
    link_problem,
)


def subject_of(file_name: str, pattern: re.Pattern | None) -> str | None:
    """Subject key of a file: the pattern's first group (or whole match); without one, the stem."""
    if pattern is None:
        return Path(file_name).stem
    match = pattern.search(file_name)
    if not match:
        return None
    return match.group(1) if pattern.groups else match.group(0)


def assign_splits(
    subject_counts: dict[str, int], validation_fraction: float, test_fraction: float, seed: int
) -> dict[str, str]:
    """Subject → split, filling test then validation to their share of images, the rest train."""
    subjects = sorted(subject_counts)
    order = np.random.default_rng(seed).permutation(len(subjects))
    total = sum(subject_counts.values())
    wanted = {
        "test": round(test_fraction * total),
        "validation": round(validation_fraction * total),
    }
    filled = {"test": 0, "validation": 0}
    split_of: dict[str, str] = {}
    for index in order:
        subject = subjects[index]
        split = next((s for s in ("test", "validation") if filled[s] < wanted[s]), "train")
        if split != "train":
            filled[split] += subject_counts[subject]
        split_of[subject] = split
    return split_of


def list_folders(
    root: Path,
    subject_pattern: str = "",
    validation_fraction: float = 0.15,
    test_fraction: float = 0.15,
    split_seed: int = 0,
) -> DataListing:
    pattern = re.compile(subject_pattern) if subject_pattern else None
    skipped: list[SkippedFile] = []
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataLayoutError(
            f"{root} has no class sub-folders; the folders source expects "
            "ROOT/<class>/<image files>"
        )
    for path in sorted(p for p in root.iterdir() if not p.is_dir()):
        skipped.append(
            SkippedFile(path.name, link_problem(path) or "outside the class sub-folders")
        )
    found: list[tuple[str, str, str]] = []  # (relative path, class, subject)
    for class_dir in class_dirs:
        files = files_under(class_dir, root, skipped)
        if not files:
            skipped.append(SkippedFile(class_dir.name + "/", "empty class folder"))
        for path in files:
            relative = path.relative_to(root).as_posix()
            if not is_image_name(path.name):
                skipped.append(SkippedFile(relative, "not an image file (extension)"))
                continue
            subject = subject_of(path.name, pattern)
            if subject is None:
                skipped.append(
                    SkippedFile(
                        relative,
                        f"data.subject_pattern {subject_pattern!r} does not match the name",
                    )
                )
                continue
            found.append((relative, class_dir.name, subject))
    if not found:
        return DataListing(root=root, records=[], skipped=skipped)
    counts: dict[str, int] = {}
    for _, _, subject in found:
        counts[subject] = counts.get(subject, 0) + 1
    split_of = assign_splits(counts, validation_fraction, test_fraction, split_seed)
    records = [
        ImageRecord(path=relative, split=split_of[subject], class_name=class_name, subject=subject)
        for relative, class_name, subject in found
    ]
    return DataListing(root=root, records=records, skipped=skipped)
