"""Layout readers: OUHANDS (official lists, boxes), folders (grouped, seeded split)."""

from collections import Counter
from pathlib import Path

import pytest

from pipeline.sources import DataLayoutError
from pipeline.sources.folders import assign_splits
from pipeline.sources.listing import list_images
from pipeline.sources.ouhands import BoxFileError, parse_box_file
from tests.conftest import noise_image, write_png

TRAIN = Path("OUHANDS_train/train/hand_data")
TEST = Path("OUHANDS_test/test/hand_data")
LISTS = Path("OUHANDS_train/data_split_for_intermediate_tests")


def make_ouhands(
    root: Path, train=("A-ima-0001", "B-ima-0002"), validation=("C-jon-0001",), test=("D-kim-0001",)
):
    for i, stem in enumerate([*train, *validation]):
        write_png(root / TRAIN / "colour" / f"{stem}.png", noise_image(i))
        box = root / TRAIN / "bounding_box" / f"{stem}.txt"
        box.parent.mkdir(parents=True, exist_ok=True)
        box.write_text("1\n10 12 30 20 0.9\n")
    for i, stem in enumerate(test):
        write_png(root / TEST / "colour" / f"{stem}.png", noise_image(10 + i))
    (root / LISTS).mkdir(parents=True, exist_ok=True)
    (root / LISTS / "training_files.txt").write_text("".join(f"{s}.png\n" for s in train))
    (root / LISTS / "validation_files.txt").write_text("".join(f"{s}.png\n" for s in validation))
    return root


def test_ouhands_official_splits_classes_subjects_and_boxes(tmp_path):
    listing = list_images("ouhands", make_ouhands(tmp_path))
    by_name = {Path(r.path).stem: r for r in listing.records}
    assert {n: r.split for n, r in by_name.items()} == {
        "A-ima-0001": "train",
        "B-ima-0002": "train",
        "C-jon-0001": "validation",
        "D-kim-0001": "test",
    }
    assert by_name["B-ima-0002"].class_name == "B" and by_name["B-ima-0002"].subject == "ima"
    assert by_name["A-ima-0001"].box_xywh == (10, 12, 30, 20)
    assert by_name["D-kim-0001"].box_xywh is None
    assert listing.skipped == []


def test_ouhands_listed_but_missing_file_is_a_counted_skip(tmp_path):
    root = make_ouhands(tmp_path)
    with open(root / LISTS / "training_files.txt", "a") as handle:
        handle.write("E-ima-0009.png\n")
    listing = list_images("ouhands", root)
    assert [(Path(s.path).name, s.reason) for s in listing.skipped] == [
        ("E-ima-0009.png", "listed in training_files.txt but the file is missing")
    ]
    assert len(listing.records) == 4


def test_ouhands_bad_box_unlisted_file_and_odd_name_are_counted_skips(tmp_path):
    root = make_ouhands(tmp_path)
    (root / TRAIN / "bounding_box" / "A-ima-0001.txt").write_text("1\nleft top wide\n")
    write_png(root / TRAIN / "colour" / "Z-ima-0003.png", noise_image(5))  # in no list
    write_png(root / TEST / "colour" / "oddname.png", noise_image(6))
    (root / TEST / "colour" / "notes.txt").write_text("x")
    reasons = {Path(s.path).name: s.reason for s in list_images("ouhands", root).skipped}
    assert (
        "does not parse" in reasons["A-ima-0001.png"]
        and "bounding_box/A-ima-0001.txt" in reasons["A-ima-0001.png"]
    )
    assert reasons["Z-ima-0003.png"] == "in neither training_files.txt nor validation_files.txt"
    assert "{CLASS}-{SUBJECT}-{NNNN}" in reasons["oddname.png"]
    assert reasons["notes.txt"] == "not an image file (extension)"


def test_box_file_parsing_is_lenient_but_clear(tmp_path):
    path = tmp_path / "box.txt"
    for text, expected in [
        ("1\n1 2 3 4\n", (1, 2, 3, 4)),
        ("1\n1,2,3,4,0.5\n", (1, 2, 3, 4)),
        ("5 6 7 8\n", (5, 6, 7, 8)),
        ("\n1\n\t9\t8\t7\t6\n", (9, 8, 7, 6)),
    ]:
        path.write_text(text)
        assert parse_box_file(path) == expected
    for text in ["", "1\n", "1\n1 2 3\n", "1\n1 2 0 4\n"]:
        path.write_text(text)
        with pytest.raises(BoxFileError):
            parse_box_file(path)


@pytest.mark.parametrize("layout", ["missing", "empty", "file"])
def test_wrong_roots_are_errors_that_say_what_is_expected(tmp_path, layout):
    root = tmp_path / "root"
    if layout == "empty":
        root.mkdir()
    elif layout == "file":
        root.write_text("x")
    with pytest.raises(DataLayoutError) as error:
        list_images("ouhands", root)
    assert str(root) in str(error.value)
    if layout == "empty":
        assert "training_files.txt" in str(error.value)


def test_folders_source_classes_skips_and_grouped_split(tmp_path):
    for cls in ("fist", "palm"):
        for subject in range(10):
            for take in range(3):
                write_png(
                    tmp_path / cls / f"s{subject:02d}_{take}.png",
                    noise_image(subject * 10 + take, 16, 16),
                )
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "palm" / "README.txt").write_text("notes")
    (tmp_path / "LICENSE").write_text("x")
    listing = list_images(
        "folders", tmp_path, subject_pattern=r"^(s\d+)_", validation_fraction=0.2, test_fraction=0.2
    )
    assert len(listing.records) == 60
    assert {r.class_name for r in listing.records} == {"fist", "palm"}
    splits_of_subject = {}
    for record in listing.records:
        splits_of_subject.setdefault(record.subject, set()).add(record.split)
    assert all(len(s) == 1 for s in splits_of_subject.values()), "a subject landed in two splits"
    counts = Counter(r.split for r in listing.records)
    assert counts == {"train": 36, "validation": 12, "test": 12}
    reasons = {s.path: s.reason for s in listing.skipped}
    assert reasons == {
        "LICENSE": "outside the class sub-folders",
        "empty_class/": "empty class folder",
        "palm/README.txt": "not an image file (extension)",
    }
    again = list_images(
        "folders", tmp_path, subject_pattern=r"^(s\d+)_", validation_fraction=0.2, test_fraction=0.2
    )
    assert [r.split for r in again.records] == [r.split for r in listing.records]


def test_folders_subject_pattern_miss_is_a_counted_skip(tmp_path):
    write_png(tmp_path / "a" / "s01_1.png", noise_image(0, 8, 8))
    write_png(tmp_path / "a" / "other.png", noise_image(1, 8, 8))
    listing = list_images("folders", tmp_path, subject_pattern=r"^(s\d+)_")
    assert [s.path for s in listing.skipped] == ["a/other.png"]


def test_folders_without_class_folders_is_an_error(tmp_path):
    write_png(tmp_path / "loose.png", noise_image(0, 8, 8))
    with pytest.raises(DataLayoutError, match="no class sub-folders"):
        list_images("folders", tmp_path)


def test_symlinked_root_reads_the_same(tmp_path):
    real = make_ouhands(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    assert [r.path for r in list_images("ouhands", link).records] == [
        r.path for r in list_images("ouhands", real).records
    ]


def test_assign_splits_is_seeded_and_fills_shares():
    counts = {f"s{i}": 10 for i in range(20)}
    first = assign_splits(counts, 0.15, 0.15, seed=3)
    assert first == assign_splits(counts, 0.15, 0.15, seed=3)
    assert first != assign_splits(counts, 0.15, 0.15, seed=4)
    assert Counter(first.values()) == {"train": 14, "validation": 3, "test": 3}
