"""The bad-input matrix, run through the real stages: each case is a named error or a counted,
reported skip, and the test says which."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.images import read_image
from pipeline.keypoints import NUM_JOINTS
from pipeline.params import ParamsError
from pipeline.schema import LANDMARK_COLUMNS
from pipeline.sources import DataLayoutError
from tests.test_images import _jpeg_with_orientation

# file → expected outcome: "kept" (labelled) or the start of the skip reason
MATRIX = {
    "hands/photo.jpg": "kept",
    "hands/gray.png": "kept",
    "hands/rgba.png": "kept",
    "hands/deep16.png": "kept",
    "hands/upright.jpg": "kept",
    "hands/exif_rotated.jpg": "kept",
    "hands/a name with spaces ñ.jpg": "kept",
    "hands/huge.jpg": "kept",
    "hands/same_name.jpg": "kept",
    "other/same_name.jpg": "kept",
    "hands/corrupt.jpg": "not a decodable image",
    "hands/truncated.jpg": "truncated JPEG",
    "hands/truncated.png": "truncated PNG",
    "hands/zero.png": "empty file",
    "hands/text.png": "not a decodable image",
    "hands/notes.txt": "not an image file",
    "hands/linked.jpg": "kept",
    "hands/dangling.jpg": "dangling symlink",
    "hands/loop.jpg": "symlink loop",
    "empty/": "empty class folder",
}


def build_matrix(root: Path, photo_path: Path) -> None:
    photo = read_image(photo_path)
    bgr = cv2.cvtColor(photo, cv2.COLOR_RGB2BGR)
    hands, other = root / "hands", root / "other"
    for folder in (hands, other, root / "empty"):
        folder.mkdir(parents=True)
    shutil.copyfile(photo_path, hands / "photo.jpg")
    cv2.imwrite(str(hands / "gray.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(hands / "rgba.png"), np.dstack([bgr, np.full(bgr.shape[:2], 255, np.uint8)]))
    cv2.imwrite(str(hands / "deep16.png"), bgr.astype(np.uint16) * 257)
    # the same photo, once turned by its pixels and once by an EXIF tag: a viewer shows both alike
    upright = cv2.rotate(photo, cv2.ROTATE_90_CLOCKWISE)
    cv2.imwrite(
        str(hands / "upright.jpg"),
        cv2.cvtColor(upright, cv2.COLOR_RGB2BGR),
        [cv2.IMWRITE_JPEG_QUALITY, 100],
    )
    (hands / "exif_rotated.jpg").write_bytes(_jpeg_with_orientation(photo, 6))
    shutil.copyfile(photo_path, hands / "a name with spaces ñ.jpg")
    big = cv2.resize(bgr, (8000, 6000), interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(str(hands / "huge.jpg"), big, [cv2.IMWRITE_JPEG_QUALITY, 70])
    shutil.copyfile(photo_path, hands / "same_name.jpg")
    shutil.copyfile(photo_path, other / "same_name.jpg")
    (hands / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\xff\xd9")
    data = (hands / "photo.jpg").read_bytes()
    (hands / "truncated.jpg").write_bytes(data[: len(data) // 2])
    ok, png = cv2.imencode(".png", bgr)
    (hands / "truncated.png").write_bytes(png.tobytes()[: len(png) // 2])
    (hands / "zero.png").write_bytes(b"")
    (hands / "text.png").write_text("hello, I am not a picture")
    (hands / "notes.txt").write_text("notes")
    (hands / "linked.jpg").symlink_to(hands / "photo.jpg")
    (hands / "dangling.jpg").symlink_to(root / "moved away.jpg")
    (hands / "loop.jpg").symlink_to(hands / "loop.jpg")


def write_params(directory: Path, root: Path, **sections) -> None:
    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    params["data"].update(source="folders", root=str(root))
    params["landmarks"]["workers"] = 2
    for section, values in sections.items():
        params[section].update(values)
    (directory / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, teacher_model, digits_root):
    """Run the landmarks and split stages on the matrix, through a symlinked data root."""
    from stages import landmarks, split

    work = tmp_path_factory.mktemp("work")
    real_root = work / "real data"
    build_matrix(real_root, sorted((digits_root / "5").glob("*.JPG"))[0])
    link = work / "linked"
    link.symlink_to(real_root, target_is_directory=True)
    (work / "models/teacher").mkdir(parents=True)
    shutil.copyfile(teacher_model, work / "models/teacher/hand_landmarker.task")
    write_params(work, link)
    previous = Path.cwd()
    import os

    os.chdir(work)
    try:
        landmarks.main(["--no-progress"])
        split.main([])
    finally:
        os.chdir(previous)
    return work


def test_each_case_is_kept_or_a_counted_skip(labelled):
    table = pd.read_parquet(labelled / "data/landmarks/labels.parquet")
    skipped = pd.read_csv(labelled / "data/landmarks/skipped.csv")
    metrics = json.loads((labelled / "metrics/landmarks.json").read_text())
    kept = set(table["path"])
    reasons = dict(zip(skipped["path"], skipped["reason"]))
    for name, outcome in MATRIX.items():
        if outcome == "kept":
            assert name in kept, f"{name} should have been labelled"
        else:
            assert reasons.get(name, "").startswith(outcome), f"{name}: {reasons.get(name)!r}"
    assert len(kept) == sum(o == "kept" for o in MATRIX.values()) == metrics["images"]
    assert metrics["skipped"] == len(skipped) == sum(o != "kept" for o in MATRIX.values())
    split_metrics = json.loads((labelled / "metrics/split.json").read_text())
    assert split_metrics["skipped_unreadable_or_unlisted"] == metrics["skipped"]


def test_odd_formats_give_the_same_landmarks_as_the_plain_photo(labelled):
    table = pd.read_parquet(labelled / "data/landmarks/labels.parquet").set_index("path")
    assert table.loc["hands/photo.jpg", "num_hands"] >= 1
    photo = table.loc["hands/photo.jpg", LANDMARK_COLUMNS].to_numpy(float)
    for name in (
        "hands/rgba.png",
        "hands/deep16.png",
        "hands/huge.jpg",
        "hands/a name with spaces ñ.jpg",
        "hands/linked.jpg",
    ):
        other = table.loc[name, LANDMARK_COLUMNS].to_numpy(float)
        assert np.nanmax(np.abs(other - photo)[0::3]) < 0.03, name  # x within 3 % of the width
    assert tuple(table.loc["hands/huge.jpg", ["width", "height"]]) == (8000, 6000)


def test_exif_rotation_gives_the_landmarks_of_what_a_person_sees(labelled):
    table = pd.read_parquet(labelled / "data/landmarks/labels.parquet").set_index("path")
    upright, exif = table.loc["hands/upright.jpg"], table.loc["hands/exif_rotated.jpg"]
    assert (exif["width"], exif["height"]) == (upright["width"], upright["height"])
    assert upright["num_hands"] >= 1 and exif["num_hands"] == upright["num_hands"]
    a = upright[LANDMARK_COLUMNS].to_numpy(float).reshape(NUM_JOINTS, 3)[:, :2]
    b = exif[LANDMARK_COLUMNS].to_numpy(float).reshape(NUM_JOINTS, 3)[:, :2]
    assert np.abs(a - b).max() < 0.02


def test_missing_root_and_bad_params_are_errors_before_any_output(tmp_path, monkeypatch):
    from stages import landmarks, train

    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, tmp_path / "does not exist")
    with pytest.raises(DataLayoutError, match="does not exist"):
        landmarks.main(["--no-progress"])
    write_params(tmp_path, tmp_path, train={"epochs": "many"})
    with pytest.raises(ParamsError, match="train.epochs must be an integer"):
        train.main([])
    write_params(tmp_path, tmp_path, split={"max_hands": 0})
    with pytest.raises(ParamsError, match="split.max_hands"):
        landmarks.main(["--no-progress"])
    assert not (tmp_path / "data").exists() and not (tmp_path / "metrics").exists()


def test_a_root_where_nothing_decodes_fails_the_landmarks_stage(
    tmp_path, monkeypatch, teacher_model
):
    from pipeline.labeling import LabelingError
    from stages import landmarks

    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    (root / "a" / "zero.png").write_bytes(b"")
    (root / "a" / "text.jpg").write_text("not a picture")
    (root / "a" / "more.jpg").write_text("not a picture either")
    (root / "a" / "gone.jpg").symlink_to(root / "elsewhere.jpg")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models/teacher").mkdir(parents=True)
    shutil.copyfile(teacher_model, tmp_path / "models/teacher/hand_landmarker.task")
    write_params(tmp_path, root)
    with pytest.raises(LabelingError) as error:
        landmarks.main(["--no-progress"])
    message = str(error.value)
    assert "0 of 4 files" in message
    assert "2 x not a decodable image" in message and "1 x empty file" in message
    assert "1 x dangling symlink (e.g. a/gone.jpg)" in message
    assert not (tmp_path / "data").exists() and not (tmp_path / "metrics").exists()
