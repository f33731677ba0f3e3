"""Digits in scenes: real close-up photos pasted small into rendered rooms, a folders data set
whose names keep the photo's subject."""

from __future__ import annotations

import re
import shutil

import numpy as np

from pipeline.images import read_image
from pipeline.sources.listing import list_images
from pipeline.sources.scenes import SUBJECT_PATTERN, write_scenes

NAMES = {"0": ["IMG_1118.JPG", "IMG_1128.JPG"], "5": ["IMG_1123.JPG", "IMG_1133.JPG"]}


def test_scenes_paste_each_photo_small_and_split_by_its_subject(digits_root, tmp_path):
    photos = tmp_path / "photos"
    for class_name, names in NAMES.items():
        (photos / class_name).mkdir(parents=True)
        for name in names:
            shutil.copyfile(digits_root / class_name / name, photos / class_name / name)
    (photos / "5" / "broken.jpg").write_bytes(b"not a photo")
    out = tmp_path / "scenes"
    summary = write_scenes(photos, out, 320, 240, (0.2, 0.3), empty_fraction=0.5, seed=1)
    assert summary["scenes"] == 4 and summary["empty"] == 2
    assert [p.endswith("broken.jpg") for p, _ in summary["skipped"]] == [True]
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == [
        "0/p111-IMG_1118.png", "0/p112-IMG_1128.png", "5/p112-IMG_1123.png",
        "5/p113-IMG_1133.png", "none/bg00-00000.png", "none/bg01-00001.png",
    ]  # fmt: skip
    pattern = re.compile(SUBJECT_PATTERN)
    assert all(pattern.search(name.split("/")[1]) for name in written)
    scene = read_image(out / "0/p111-IMG_1118.png")
    assert scene.shape == (240, 320, 3)
    again = tmp_path / "again"
    write_scenes(photos, again, 320, 240, (0.2, 0.3), empty_fraction=0.5, seed=1)
    assert np.array_equal(read_image(again / "0/p111-IMG_1118.png"), scene)  # deterministic
    listing = list_images("folders", out, subject_pattern=SUBJECT_PATTERN,
                          validation_fraction=0.25, test_fraction=0.25)  # fmt: skip
    split_of = {}
    for record in listing.records:
        split_of.setdefault(record.subject, set()).add(record.split)
    assert split_of["p112"] and all(len(splits) == 1 for splits in split_of.values())
