"""The OUHANDS layout (also written by the synthetic renderer, which adds true landmarks).

    OUHANDS_train/train/hand_data/colour/{CLASS}-{SUBJECT}-{NNNN}.png
    OUHANDS_train/train/hand_data/bounding_box/{stem}.txt
    OUHANDS_train/data_split_for_intermediate_tests/training_files.txt, validation_files.txt
    OUHANDS_test/test/hand_data/colour/*.png (+ bounding_box/)
    .../hand_data/true_landmarks.csv (synthetic only)

The official lists are used as they are.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.images import is_image_name
from pipeline.keypoints import NUM_JOINTS, column_names
from pipeline.sources import DataLayoutError, DataListing, ImageRecord, SkippedFile, link_problem

TRAIN_DIR = Path("OUHANDS_train/train/hand_data")
TEST_DIR = Path("OUHANDS_test/test/hand_data")
LISTS_DIR = Path("OUHANDS_train/data_split_for_intermediate_tests")
LIST_FILES = {"train": "training_files.txt", "validation": "validation_files.txt"}
NAME_PATTERN = re.compile(r"^(?P<class_name>[^-]+)-(?P<subject>.+)-(?P<number>\d+)$")
TRUTH_FILE = "true_landmarks.csv"
EXPECTED = (
    "expected OUHANDS_train/train/hand_data/colour/*.png, "
    "OUHANDS_train/data_split_for_intermediate_tests/{training,validation}_files.txt and "
    "OUHANDS_test/test/hand_data/colour/*.png"
)


class BoxFileError(ValueError):
    pass


def parse_box_file(path: Path) -> tuple[float, float, float, float]:
    """OUHANDS box files: a count on the first line, then ``x y width height [score]``.

    Lenient: separators may be spaces, tabs or commas, and a file with the box on its first
    line is accepted too.
    """
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    for line in lines[:3]:
        numbers = re.split(r"[\s,;]+", line.strip())
        try:
            values = [float(v) for v in numbers if v]
        except ValueError:
            continue
        if len(values) >= 4:
            x, y, w, h = values[:4]
            if w <= 0 or h <= 0:
                raise BoxFileError(f"box has non-positive size {w}x{h}")
            return (x, y, w, h)
    raise BoxFileError(
        "no line with 'x y width height'; expected a count line, then 'x y width height [score]'"
    )


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DataLayoutError(f"split list {path} not found; {EXPECTED}")
    return [Path(line.strip()).name for line in path.read_text().splitlines() if line.strip()]


def _read_truth(hand_dir: Path) -> dict[str, np.ndarray]:
    truth_path = hand_dir / TRUTH_FILE
    if not truth_path.is_file():
        raise DataLayoutError(
            f"{truth_path} not found: the synthetic source needs the true landmarks its renderer "
            "writes; run `dvc repro synthesize`"
        )
    table = pd.read_csv(truth_path)
    columns = column_names("", "xy")
    missing = [c for c in ["image", *columns] if c not in table.columns]
    if missing:
        raise DataLayoutError(f"{truth_path} lacks columns {missing[:4]}")
    points = table[columns].to_numpy(np.float64).reshape(-1, NUM_JOINTS, 2)
    return dict(zip(table["image"], points))


def _records_in(
    root: Path,
    hand_dir: Path,
    split_of: dict[str, str] | None,
    fixed_split: str | None,
    require_truth: bool,
    skipped: list[SkippedFile],
) -> list[ImageRecord]:
    colour_dir = root / hand_dir / "colour"
    if not colour_dir.is_dir():
        raise DataLayoutError(f"{colour_dir} not found under data root {root}; {EXPECTED}")
    truth = _read_truth(root / hand_dir) if require_truth else {}
    names_on_disk = []
    for path in sorted(colour_dir.iterdir()):
        problem = link_problem(path)
        if problem is not None:
            skipped.append(SkippedFile(path.relative_to(root).as_posix(), problem))
        elif path.is_file():
            names_on_disk.append(path.name)
    records = []
    for name in names_on_disk:
        relative = (hand_dir / "colour" / name).as_posix()
        if not is_image_name(name):
            skipped.append(SkippedFile(relative, "not an image file (extension)"))
            continue
        split = fixed_split if fixed_split else split_of.get(name)
        if split is None:
            skipped.append(
                SkippedFile(relative, "in neither training_files.txt nor validation_files.txt")
            )
            continue
        match = NAME_PATTERN.match(Path(name).stem)
        if not match:
            skipped.append(
                SkippedFile(relative, "name does not follow {CLASS}-{SUBJECT}-{NNNN}.png")
            )
            continue
        box_path = root / hand_dir / "bounding_box" / f"{Path(name).stem}.txt"
        box = None
        if box_path.is_file():
            try:
                box = parse_box_file(box_path)
            except BoxFileError as error:
                skipped.append(
                    SkippedFile(
                        relative,
                        f"bounding box file {box_path.relative_to(root)} does not parse: {error}",
                    )
                )
                continue
        if require_truth and name not in truth:
            skipped.append(SkippedFile(relative, f"no row in {TRUTH_FILE}"))
            continue
        records.append(
            ImageRecord(
                path=relative,
                split=split,
                class_name=match["class_name"],
                subject=match["subject"],
                box_xywh=box,
                true_landmarks=truth.get(name),
            )
        )
    return records


def list_ouhands(root: Path, require_truth: bool = False) -> DataListing:
    skipped: list[SkippedFile] = []
    split_of: dict[str, str] = {}
    for split, list_name in LIST_FILES.items():
        for name in _read_list(root / LISTS_DIR / list_name):
            if name in split_of and split_of[name] != split:
                raise DataLayoutError(
                    f"{name} is listed in both training and validation lists "
                    f"under {root / LISTS_DIR}"
                )
            split_of[name] = split
    colour_dir = root / TRAIN_DIR / "colour"
    on_disk = {p.name for p in colour_dir.iterdir()} if colour_dir.is_dir() else set()
    for name in sorted(set(split_of) - on_disk):
        list_name = LIST_FILES[split_of[name]]
        skipped.append(
            SkippedFile(
                (TRAIN_DIR / "colour" / name).as_posix(),
                f"listed in {list_name} but the file is missing",
            )
        )
    records = _records_in(root, TRAIN_DIR, split_of, None, require_truth, skipped)
    records += _records_in(root, TEST_DIR, None, "test", require_truth, skipped)
    return DataListing(root=root, records=records, skipped=skipped)
