"""Using a trained (tiny) student: predict on files, folders and videos, ONNX parity, overlays, bad
input, and scoring against the real teacher with its label cache."""

import json
import shutil

import cv2
import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from pipeline.checkpoint import BEST, CheckpointError, load_checkpoint
from pipeline.cli import main
from pipeline.data import load_split
from pipeline.export import export_student
from pipeline.inference import predict as training_predict
from pipeline.keypoints import NUM_JOINTS, column_names, hand_size
from pipeline.labeling import label_images
from pipeline.params import TrainParams
from pipeline.predict import InputError, find_inputs, predict_path, skipped_path
from pipeline.scoring import (
    DEFAULT_SETTINGS,
    default_label_cache_dir,
    folder_listing,
    score_folder,
    score_predictions,
)
from pipeline.student import load_student
from pipeline.training import fit
from tests.conftest import noise_image, write_png
from tests.tiny import TEMPLATE, TINY_WHOLE_FRAME, skeleton_photos, skeleton_split

COLUMNS = ["path", "width", "height", "presence", "crop_x", "crop_y", "crop_side",
           *column_names("")]  # fmt: skip
WIDTH, HEIGHT = 96, 72
PHOTOS = ["a/img0.png", "a/img1.png", "b/deeper/img2.jpg", "b/img3.png", "img4.png"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("student")
    # a whole-frame student: the input/output behaviour of predict and score (the top-down
    # student's two passes and tracking are tests/test_top_down.py's)
    params = TrainParams(**TINY_WHOLE_FRAME)
    fit(skeleton_split(8, seed=1), skeleton_split(4, seed=2), params, directory, log=lambda _: None)
    return directory / BEST


@pytest.fixture(scope="module")
def onnx_model(checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx") / "export"
    export_student(checkpoint, folder)
    return folder / "student.onnx"


def write_photos(folder, names=PHOTOS, seed=5):
    images, _ = skeleton_photos(len(names), seed=seed, width=WIDTH, height=HEIGHT)
    for name, rgb in zip(names, images):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        # PNG and a lossless-enough JPEG: what the tests compare is the same decoded file anyway
        assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return images


def test_predict_folder_writes_rows_skips_and_overlays(checkpoint, tmp_path):
    folder = tmp_path / "photos"
    write_photos(folder)
    (folder / "b" / "broken.png").write_bytes(b"not an image at all")
    (folder / "notes.txt").write_text("not an image name: not an input")
    output, overlays = tmp_path / "out" / "predictions.csv", tmp_path / "overlays"
    argv = ["predict", str(checkpoint), str(folder), "--output", str(output)]
    assert main([*argv, "--overlay", str(overlays), "--device", "cpu", "--no-progress"]) == 0

    table = pd.read_csv(output)
    assert list(table.columns) == COLUMNS
    assert sorted(table["path"]) == sorted(PHOTOS) and len(table) == len(PHOTOS)
    assert (table["width"] == WIDTH).all() and (table["height"] == HEIGHT).all()
    x, y = table[column_names("", "x")].to_numpy(), table[column_names("", "y")].to_numpy()
    assert np.isfinite(x).all() and np.isfinite(y).all()
    # an untrained-ish model still regresses inside (or near) the image
    assert (x > -0.25 * WIDTH).all() and (x < 1.25 * WIDTH).all()
    assert (y > -0.25 * HEIGHT).all() and (y < 1.25 * HEIGHT).all()

    skipped = pd.read_csv(skipped_path(output))
    assert list(skipped["path"]) == ["b/broken.png"]
    assert "not a decodable image" in skipped["reason"][0]

    written = sorted(p.relative_to(overlays).as_posix() for p in overlays.rglob("*.png"))
    assert written == sorted(p.rsplit(".", 1)[0] + ".png" for p in PHOTOS)
    for name in PHOTOS:
        original = cv2.imread(str(folder / name))
        drawn = cv2.imread(str(overlays / (name.rsplit(".", 1)[0] + ".png")))
        assert drawn.shape == original.shape == (HEIGHT, WIDTH, 3)
        assert (drawn != original).any(axis=-1).sum() > 20  # a skeleton was drawn

    # a second run replaces its own overlays only when asked to
    assert main([*argv, "--overlay", str(overlays), "--overwrite", "--no-progress"]) == 0
    assert sorted(pd.read_csv(output)["path"]) == sorted(PHOTOS)


def _tree_digest(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


def test_outputs_never_replace_a_folder_or_land_on_the_inputs(
    checkpoint, tmp_path, capsys, monkeypatch
):
    folder = tmp_path / "photos"
    write_photos(folder)
    before = _tree_digest(folder)
    keep = tmp_path / "results"
    (keep / "inside").mkdir(parents=True)
    (keep / "inside" / "notes.txt").write_text("the user's own file")
    model = str(checkpoint)
    cases = {
        "is a directory": ["predict", model, str(folder), "--output", str(keep)],
        "lies inside the input": ["predict", model, str(folder), "-o", str(folder / "p.csv")],
        "is the input": ["predict", model, str(folder / "a" / "img0.png"), "-o",
                         str(folder / "a" / "img0.png")],
        "overlap": ["predict", model, str(folder), "-o", str(tmp_path / "p.csv"), "--overlay",
                    str(folder)],
        "overlap ": ["predict", model, str(folder), "-o", str(tmp_path / "p.csv"), "--overlay",
                     str(folder / "b")],
        "is a directory ": ["score", model, str(folder), "--json", str(keep)],
        "lies inside the input ": ["score", model, str(folder), "--json",
                                   str(folder / "s.json")],
    }  # fmt: skip
    for expected, argv in cases.items():
        assert main([*argv, "--no-progress"]) == 2, expected
        error = capsys.readouterr().err
        assert expected.strip() in error, (expected, error)
    # `--overlay .` next to a single image: the photo itself would be overwritten
    monkeypatch.chdir(folder / "a")
    assert (
        main(["predict", model, "img0.png", "-o", str(tmp_path / "one.csv"), "--overlay", "."]) == 2
    )
    assert "overlap" in capsys.readouterr().err
    assert _tree_digest(folder) == before  # no input was touched
    assert (keep / "inside" / "notes.txt").read_text() == "the user's own file"

    # existing overlay files are refused before any work, and replaced with --overwrite
    overlays = tmp_path / "overlays"
    overlays.mkdir()
    (overlays / "img4.png").write_bytes(b"the user's picture")
    argv = ["predict", model, str(folder), "-o", str(tmp_path / "p.csv"), "--overlay",
            str(overlays), "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    assert "exist already" in capsys.readouterr().err
    assert (overlays / "img4.png").read_bytes() == b"the user's picture"
    assert not (tmp_path / "p.csv").exists()
    assert main([*argv, "--overwrite"]) == 0
    assert cv2.imread(str(overlays / "img4.png")).shape == (HEIGHT, WIDTH, 3)


def test_atomic_outputs_replace_only_their_own_directories(tmp_path):
    from pipeline.io import OutputPathError, atomic_path, write_json

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(OutputPathError, match="did not write"):
        write_json(foreign, {"a": 1})
    with pytest.raises(OutputPathError, match="did not write"):
        with atomic_path(foreign) as partial:
            partial.mkdir()
    assert (foreign / "keep.txt").read_text() == "mine"
    own = tmp_path / "own"
    for content in ("first", "second"):
        with atomic_path(own) as partial:
            partial.mkdir()
            (partial / "data.txt").write_text(content)
    assert (own / "data.txt").read_text() == "second"
    assert not list(tmp_path.glob(".*partial*"))


def test_predictions_are_the_evaluate_path_and_match_the_onnx_export(
    checkpoint, onnx_model, tmp_path
):
    folder = tmp_path / "photos"
    write_photos(folder)
    from_checkpoint = predict_path(checkpoint, folder, device="cpu", progress=False)
    from_onnx = predict_path(onnx_model, folder, device="cpu", progress=False)
    assert list(from_checkpoint.table["path"]) == list(from_onnx.table["path"])
    xy = [c for c in column_names("") if c[0] in "xy"]
    z = column_names("", "z")
    np.testing.assert_allclose(from_onnx.table[xy], from_checkpoint.table[xy], atol=1e-3)
    np.testing.assert_allclose(from_onnx.table[z], from_checkpoint.table[z], atol=1e-5)
    np.testing.assert_allclose(from_onnx.presence, from_checkpoint.presence, atol=1e-5)
    assert load_student(onnx_model).epoch == load_checkpoint(checkpoint)["epoch"]

    # The same numbers as the training/evaluate path: load_split's decode and input picture,
    # predict, then normalised x, y times the original size.
    paths = list(from_checkpoint.table["path"])
    labels = pd.DataFrame({"path": paths, "width": WIDTH, "height": HEIGHT})
    labels[column_names("")] = 0.0
    model = load_student(checkpoint, "cpu").landmarks
    split = load_split(labels, folder, model.image_size, layout=model.codec.layout)
    expected, _ = training_predict(
        model.module, split.images, model.codec, torch.device("cpu"), split.frames(32), 64
    )
    expected[..., 0] *= WIDTH
    expected[..., 1] *= HEIGHT
    got = from_checkpoint.table[column_names("")].to_numpy().reshape(-1, NUM_JOINTS, 3)
    np.testing.assert_allclose(got, expected, atol=1e-6)

    # and the Python API on in-memory images gives them too
    rgb = [cv2.cvtColor(cv2.imread(str(folder / p)), cv2.COLOR_BGR2RGB) for p in paths]
    student = load_student(checkpoint, "cpu")
    np.testing.assert_allclose(student.predict_images(rgb).landmarks, expected, atol=1e-6)


def test_single_image_and_video(checkpoint, tmp_path):
    images = write_photos(tmp_path, ["one.png"])
    single = predict_path(checkpoint, tmp_path / "one.png", device="cpu", progress=False)
    assert list(single.table["path"]) == ["one.png"] and list(single.table.columns) == COLUMNS

    video = tmp_path / "clip.avi"
    frames, _ = skeleton_photos(4, seed=9, width=WIDTH, height=HEIGHT)
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    output, overlays = tmp_path / "video.csv", tmp_path / "video-overlays"
    argv = ["predict", str(checkpoint), str(video), "-o", str(output), "--overlay", str(overlays)]
    assert main([*argv, "--batch-size", "3", "--no-progress"]) == 0
    table = pd.read_csv(output)
    assert list(table.columns) == ["path", "frame", *COLUMNS[1:4], "tracked", *COLUMNS[4:]]
    assert list(table["frame"]) == [0, 1, 2, 3] and set(table["path"]) == {"clip.avi"}
    written = sorted(p.relative_to(overlays).as_posix() for p in overlays.rglob("*.png"))
    assert written == [f"clip/{i:06d}.png" for i in range(4)]
    assert cv2.imread(str(overlays / written[0])).shape == images[0].shape


def test_bad_input_is_a_clear_error(checkpoint, tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.md").write_text("no images here")
    with pytest.raises(InputError, match="holds no image files"):
        predict_path(checkpoint, empty, device="cpu")
    assert main(["predict", str(checkpoint), str(empty)]) == 2
    assert "holds no image files" in capsys.readouterr().err
    with pytest.raises(InputError, match="holds no image files"):
        score_folder(checkpoint, empty, cache_dir=tmp_path / "cache", device="cpu")
    with pytest.raises(InputError, match="does not exist"):
        find_inputs(tmp_path / "nowhere")
    with pytest.raises(InputError, match="neither an image"):
        find_inputs(empty / "readme.md")

    photos = tmp_path / "photos"
    write_photos(photos, ["a.png"])
    with pytest.raises(CheckpointError, match="not found"):
        predict_path(tmp_path / "missing.pt", photos)
    with pytest.raises(CheckpointError, match="not found"):
        predict_path(tmp_path / "missing.onnx", photos)

    payload = load_checkpoint(checkpoint)
    payload["model_config"]["neck_channels"] = 48  # another config than the weights were made with
    torch.save(payload, tmp_path / "other-config.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_student(tmp_path / "other-config.pt")
    payload = load_checkpoint(checkpoint)
    payload["model_config"]["width_multiplier"] = 1.4  # from a future version of the project
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="not understood"):
        load_student(tmp_path / "future.pt")
    assert main(["predict", str(tmp_path / "future.pt"), str(photos)]) == 2

    unreadable = tmp_path / "unreadable"
    (unreadable / "x").mkdir(parents=True)
    (unreadable / "x" / "empty.jpg").write_bytes(b"")
    output = tmp_path / "none.csv"
    assert main(["predict", str(checkpoint), str(unreadable), "-o", str(output)]) == 1
    assert "no image could be read" in capsys.readouterr().err
    assert list(pd.read_csv(skipped_path(output))["path"]) == ["x/empty.jpg"]


def test_foreign_or_broken_onnx_files_are_clear_errors(onnx_model, tmp_path):
    proto = onnx.load(str(onnx_model))
    meta = json.loads(proto.metadata_props[0].value)
    meta["model_config"]["image_size"] = 64  # metadata of another model
    proto.metadata_props[0].value = json.dumps(meta)
    onnx.save(proto, str(tmp_path / "other-size.onnx"))
    with pytest.raises(CheckpointError, match="another model"):
        load_student(tmp_path / "other-size.onnx")
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    with pytest.raises(CheckpointError, match="no 'learned_hand_landmarks' metadata"):
        load_student(tmp_path / "bare.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        load_student(tmp_path / "junk.onnx")


def test_scores_are_the_hand_checked_values():
    # three hands of different sizes in a 200x100 image, as fractions of the image
    reference = np.stack([TEMPLATE * s + o for s, o in ((0.3, 0.1), (0.5, 0.2), (0.4, 0.05))])
    width, height = np.full(3, 200.0), np.full(3, 100.0)
    perfect = score_predictions(reference, reference, width, height)
    assert perfect["mpjpe_px"] == 0 and perfect["mpjpe_norm_hand"] == 0
    assert perfect["pck_05"] == perfect["pck_10"] == perfect["pck_20"] == 1
    # the PCK curve starts at threshold 0, where "error < 0" holds for no joint: the first of the
    # 40 trapezoids has half its area, AUC = 1 - 0.5/40
    assert perfect["auc"] == pytest.approx(0.9875)

    # every joint moved right by 0.0825 of its hand's size: PCK@0.05 none, @0.1 and @0.2 all; the
    # curve is 0 up to threshold 0.080 and 1 from 0.085: (0.5 + 23) / 40 = 0.5875
    size_px = hand_size(reference[..., :2] * [200, 100])
    shifted = reference.copy()
    shifted[..., 0] += (0.0825 * size_px / 200)[:, None]
    moved = score_predictions(shifted, reference, width, height)
    assert moved["mpjpe_norm_hand"] == pytest.approx(0.0825)
    assert moved["mpjpe_px"] == pytest.approx(0.0825 * size_px.mean(), rel=1e-5)
    assert (moved["pck_05"], moved["pck_10"], moved["pck_20"]) == (0, 1, 1)
    assert moved["auc"] == pytest.approx(0.5875)


def test_label_cache_honours_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_label_cache_dir() == tmp_path / "learned-hand-landmarks" / "labels"


REAL = {"0": ["IMG_1118.JPG", "IMG_1128.JPG"], "5": ["IMG_1123.JPG", "IMG_1133.JPG"]}


def test_score_real_photos_labels_each_image_once(
    digits_root, teacher_model, checkpoint, tmp_path, capsys
):
    folder = tmp_path / "digits"
    for class_name, names in REAL.items():
        (folder / class_name).mkdir(parents=True)
        for name in names:
            shutil.copyfile(digits_root / class_name / name, folder / class_name / name)
    write_png(folder / "noise.png", noise_image(3, 100, 100))  # readable, no hand
    cut = (digits_root / "5" / REAL["5"][0]).read_bytes()
    (folder / "5" / "broken.jpg").write_bytes(cut[: len(cut) // 2])  # unreadable: a counted skip
    cache = tmp_path / "cache"

    def score():
        return score_folder(
            checkpoint, folder, teacher_model, cache_dir=cache, device="cpu", progress=False
        )

    first = score()
    report = first.report
    assert report["images"] == 6 and report["readable"] == 5
    assert report["skipped"] == 1 and report["skipped_files"][0]["path"] == "5/broken.jpg"
    assert "truncated JPEG" in report["skipped_files"][0]["reason"]
    assert report["detected"] == 4 and report["detection_rate"] == 0.8 and report["scored"] == 4
    assert report["labelled_now"] == 6
    metrics = report["student_vs_teacher"]
    assert metrics["mpjpe_px"] > 0 and 0 <= metrics["pck_10"] <= metrics["pck_20"] <= 1
    assert report["oracle_crop"] is None  # a whole-frame student has no crop to be given
    assert set(report["per_class"]) == {"(top level)", "0", "5"}
    assert report["per_class"]["(top level)"] == {"images": 1, "detection_rate": 0.0, "scored": 0}

    second = score()
    assert second.report["labelled_now"] == 0  # every image came from the cache
    for key in ("detected", "scored", "student_vs_teacher", "per_class", "skipped_files"):
        assert second.report[key] == report[key]
    # the cached labels are the landmarks stage's labels, value for value
    fresh = label_images(folder_listing(folder), teacher_model, DEFAULT_SETTINGS, progress=False)
    cached = second.labels.table.set_index("path")
    fresh_table = fresh.table.set_index("path").loc[cached.index]
    columns = ["num_hands", "width", "height", *column_names("")]
    pd.testing.assert_frame_equal(
        cached[columns], fresh_table[columns], check_dtype=False, check_exact=True
    )

    output = tmp_path / "score.json"
    argv = ["score", str(checkpoint), str(folder), "--teacher", str(teacher_model)]
    assert main([*argv, "--json", str(output), "--cache-dir", str(cache), "--no-progress"]) == 0
    saved = json.loads(output.read_text())
    assert saved["labelled_now"] == 0 and saved["student_vs_teacher"] == metrics
    assert "student vs teacher on 4 images" in capsys.readouterr().out
