"""The synthetic source: a deterministic OUHANDS layout with true landmarks the teacher confirms."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.keypoints import NUM_JOINTS, column_names, hand_size
from pipeline.params import SyntheticParams
from pipeline.sources.synthetic import (
    GESTURE_CLASSES,
    RANDOM_POSE,
    make_subject_styles,
    render_hand,
    write_synthetic_dataset,
)

TINY = SyntheticParams(num_images=24, width=320, height=240, seed=3, num_subjects=5)
# 16 images: two chunks of the writer's pool, so with two workers each renders some.
# The hand scales and no empty frames of the renderer before those became params.
GOLDEN = SyntheticParams(
    num_images=16, width=160, height=120, num_subjects=2, seed=0, hand_scale_min=0.35,
    empty_fraction=0.0,
)  # fmt: skip
# The truth files of GOLDEN as the renderer writes them (pinned again on 2026-12-06, when the
# fingers took the lengths MediaPipe reads on real hands: kinematics.PHALANX_CM). Truth is
# float64 geometry printed to 6 decimals, the same on every machine; the PNGs are not pinned,
# since OpenCV's blur kernels may differ between CPUs.
GOLDEN_TRUTH_SHA256 = {
    "OUHANDS_test/test/hand_data/true_landmarks.csv": (
        "83a7b87ce576ae0c551830648384ee5d731c4fb33d9f70c4f9147ba834481111"
    ),
    "OUHANDS_train/train/hand_data/true_landmarks.csv": (
        "748b4f7fa40ac526c60a320c2d02ab12617c21abceff9a9c7e9205fc9559a6c2"
    ),
}
NAME = re.compile(r"^(?P<gesture>[A-Z]|none)-(?P<subject>s\d{2})-(?P<number>\d{4})\.png$")
TRAIN = Path("OUHANDS_train/train/hand_data")
TEST = Path("OUHANDS_test/test/hand_data")
LISTS = Path("OUHANDS_train/data_split_for_intermediate_tests")


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _sha256(root: Path) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in _files(root).items()}


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synthetic") / "data"
    return root, write_synthetic_dataset(root, TINY)


def test_same_settings_give_byte_identical_files(tiny_dataset, tmp_path):
    root, _ = tiny_dataset
    again = tmp_path / "again"
    write_synthetic_dataset(again, TINY)
    assert _files(root) == _files(again)
    assert not list(tmp_path.glob(".again.partial*")), "the temporary folder must be gone"


def test_writer_is_byte_deterministic_with_and_without_workers(tmp_path):
    write_synthetic_dataset(tmp_path / "serial", GOLDEN, workers=1)
    write_synthetic_dataset(tmp_path / "pool", GOLDEN, workers=2)
    serial, pool = _sha256(tmp_path / "serial"), _sha256(tmp_path / "pool")
    # A PNG and a box file per image, and the two split lists.
    assert sum(name.endswith((".png", ".txt")) for name in serial) == 2 * GOLDEN.num_images + 2
    assert serial == pool
    assert {name: serial[name] for name in GOLDEN_TRUTH_SHA256} == GOLDEN_TRUTH_SHA256
    with pytest.raises(ValueError, match="workers must be >= 1"):
        write_synthetic_dataset(tmp_path / "none", GOLDEN, workers=0)


def test_another_seed_gives_other_images(tiny_dataset, tmp_path):
    root, _ = tiny_dataset
    other = tmp_path / "other"
    write_synthetic_dataset(other, dataclasses.replace(TINY, seed=TINY.seed + 1))
    ours, theirs = _files(root), _files(other)
    shared_pngs = [name for name in ours if name.endswith(".png") and name in theirs]
    assert shared_pngs, "both seeds should name some images alike"
    assert all(ours[name] != theirs[name] for name in shared_pngs)


def test_layout_matches_ouhands(tiny_dataset):
    root, summary = tiny_dataset
    train_pngs = sorted(p.name for p in (root / TRAIN / "colour").glob("*.png"))
    test_pngs = sorted(p.name for p in (root / TEST / "colour").glob("*.png"))
    assert len(train_pngs) + len(test_pngs) == TINY.num_images
    assert summary["train"] + summary["validation"] == len(train_pngs)
    assert summary["test"] == len(test_pngs) > 0

    training = (root / LISTS / "training_files.txt").read_text().splitlines()
    validation = (root / LISTS / "validation_files.txt").read_text().splitlines()
    assert training == sorted(training) and validation == sorted(validation)
    assert sorted(training + validation) == train_pngs and not set(training) & set(validation)
    assert len(validation) == round(TINY.validation_fraction * len(train_pngs))

    subjects = {}
    for split, names in (("train", training + validation), ("test", test_pngs)):
        match = [NAME.match(name) for name in names]
        assert all(match), [n for n, m in zip(names, match) if not m]
        assert {m["gesture"] for m in match} <= {*GESTURE_CLASSES, "none"}
        subjects[split] = {m["subject"] for m in match}
    assert not subjects["train"] & subjects["test"], "test subjects must be other people"

    empties = [n for n in train_pngs + test_pngs if n.startswith("none-")]
    # frames without a hand: about synthetic.empty_fraction of them (24 images: 1 to 6)
    assert 1 <= len(empties) <= 6
    for hand_dir, names in ((TRAIN, train_pngs), (TEST, test_pngs)):
        for name in names:
            box_file = root / hand_dir / "bounding_box" / f"{name[:-4]}.txt"
            if name.startswith("none-"):
                assert not box_file.exists()
                continue
            lines = box_file.read_text().splitlines()
            assert lines[0] == "1"
            x, y, w, h = (int(v) for v in lines[1].split())
            assert 0 <= x and 0 <= y and w > 0 and h > 0
            assert x + w <= TINY.width and y + h <= TINY.height
        truth = (root / hand_dir / "true_landmarks.csv").read_text().splitlines()
        assert truth[0].split(",") == ["image", "handedness", *column_names("", "xy")]
        rows = [line.split(",") for line in truth[1:]]
        assert [row[0] for row in rows] == names, "one truth row per PNG, sorted by name"
        for row in rows:
            if row[0].startswith("none-"):
                assert row[1] == "" and all(v == "nan" for v in row[2:])
                continue
            assert row[1] in ("Left", "Right")
            values = np.array(row[2:], dtype=float)
            assert len(values) == 2 * NUM_JOINTS and np.all((values >= 0) & (values <= 1))
            assert all(len(v.split(".")[1]) == 6 for v in row[2:])


def test_dataset_reads_back_through_the_ouhands_reader(tiny_dataset):
    from pipeline.sources.listing import list_images

    root, summary = tiny_dataset
    listing = list_images("synthetic", root)
    assert not listing.skipped
    splits = [record.split for record in listing.records]
    assert {s: splits.count(s) for s in ("train", "validation", "test")} == {
        s: summary[s] for s in ("train", "validation", "test")
    }


@pytest.mark.parametrize("width, height", [(640, 480), (320, 240)])
def test_true_landmarks_lie_on_the_drawn_hand(width, height):
    styles = make_subject_styles(np.random.default_rng(7), 6)
    # the ten gestures in turn, then hands in random poses
    drawn = [(i, GESTURE_CLASSES[i % len(GESTURE_CLASSES)]) for i in range(40)]
    for index, gesture in drawn + [(i, RANDOM_POSE) for i in range(40, 50)]:
        hand = render_hand(
            np.random.default_rng([11, index]), gesture, styles[index % 6], width, height
        )
        assert hand.image.shape == (height, width, 3) and hand.image.dtype == np.uint8
        assert hand.landmarks_px.shape == (NUM_JOINTS, 2)
        assert hand.hand_mask.shape == (height, width) and hand.hand_mask.dtype == bool
        cols, rows = np.round(hand.landmarks_px).astype(int).T
        assert np.all((cols >= 0) & (cols < width) & (rows >= 0) & (rows < height))
        off_hand = np.flatnonzero(~hand.hand_mask[rows, cols])
        assert off_hand.size == 0, f"image {index} ({gesture}): joints {off_hand} are off the hand"
        x, y, w, h = hand.box_xywh
        assert np.all((cols >= x) & (cols < x + w) & (rows >= y) & (rows < y + h))
        mask_rows, mask_cols = np.nonzero(hand.hand_mask)
        assert (x, y, x + w - 1, y + h - 1) == (
            mask_cols.min(),
            mask_rows.min(),
            mask_cols.max(),
            mask_rows.max(),
        ), "the box is the tight box of the mask"
        # The hand is drawn big enough to be seen, as in OUHANDS (a random pose may be a fist
        # seen end on, its joints' box a palm's length).
        smallest = 0.15 if gesture == RANDOM_POSE else 0.2
        assert smallest * height < hand_size(hand.landmarks_px) < 0.9 * height


def test_turn_max_turns_the_palm_away_from_the_camera():
    """The same draws with another ``turn_max`` change only the turn about the hand's long axis,
    which shortens the knuckles' span across the palm in the picture by its cosine."""
    styles = make_subject_styles(np.random.default_rng(7), 4)

    def knuckle_span(index: int, turn_max: float) -> float:
        gesture = GESTURE_CLASSES[index % len(GESTURE_CLASSES)]
        rng = np.random.default_rng([13, index])
        hand = render_hand(rng, gesture, styles[index % 4], 320, 240, turn_max=turn_max)
        return float(np.linalg.norm(hand.landmarks_px[5] - hand.landmarks_px[17]))

    facing = np.array([knuckle_span(i, 0.0) for i in range(12)])
    turned = np.array([knuckle_span(i, 80.0) for i in range(12)])
    assert np.all(turned <= facing * 1.05)  # never wider than square on (perspective aside)
    assert np.sum(turned < 0.6 * facing) >= 2  # some seen nearly edge on
    default = render_hand(np.random.default_rng([13, 0]), "A", styles[0], 320, 240)
    explicit = render_hand(np.random.default_rng([13, 0]), "A", styles[0], 320, 240, turn_max=25)
    np.testing.assert_array_equal(default.image, explicit.image)  # 25: the default's renders


def test_teacher_finds_the_hand_where_the_truth_says(tmp_path):
    from pipeline.teacher import Teacher, build_teacher_model

    model = tmp_path / "hand.task"
    build_teacher_model(model)
    styles = make_subject_styles(np.random.default_rng(5), 10)
    detected, errors, shuffled_errors, same_label = 0, [], [], []
    # A fixed permutation of the joints: a truth in the wrong order must score far worse.
    shuffle = np.random.default_rng(0).permutation(NUM_JOINTS)
    with Teacher(model) as teacher:
        for index in range(22):
            gesture = (*GESTURE_CLASSES, RANDOM_POSE)[index % 11]
            hand = render_hand(np.random.default_rng([21, index]), gesture, styles[index % 10])
            result = teacher.detect(hand.image)
            if result.num_hands == 0:
                continue
            detected += 1
            found = result.landmarks[:, :, :2] * (640, 480)
            distance = np.linalg.norm(found - hand.landmarks_px, axis=-1).mean(axis=-1)
            best = int(np.argmin(distance))
            size = hand_size(hand.landmarks_px)
            errors.append(distance[best] / size)
            shuffled = np.linalg.norm(found[best] - hand.landmarks_px[shuffle], axis=-1).mean()
            shuffled_errors.append(shuffled / size)
            same_label.append(result.handedness[best] == hand.handedness)
    assert detected / 22 >= 0.85
    # Measured about 0.07 of the hand size; a mirrored or shuffled truth is off by 0.3 or more.
    assert np.mean(errors) < 0.15
    assert np.mean(shuffled_errors) > 2 * np.mean(errors)
    assert np.mean(same_label) >= 0.75, "the handedness label must be the one MediaPipe gives"


def test_fingers_are_as_long_for_the_palm_as_the_teacher_reads_real_open_hands(
    teacher_model, digits_root
):
    import cv2

    from pipeline.keypoints import FINGERS
    from pipeline.sources.synthetic.kinematics import MCP_CM, PHALANX_CM
    from pipeline.teacher import Teacher

    ratios = {finger: [] for finger in MCP_CM}
    with Teacher(teacher_model) as teacher:
        for path in sorted((digits_root / "5").glob("*.JPG"))[:80]:  # five fingers spread
            detection = teacher.detect(cv2.imread(str(path))[:, :, ::-1].copy())
            if detection.num_hands != 1:
                continue
            world = detection.world_landmarks[0].astype(np.float64)
            for finger, ratio in ratios.items():
                joints = world[list(FINGERS[finger])]  # MCP, PIP, DIP, tip
                finger_length = np.linalg.norm(np.diff(joints, axis=0), axis=1).sum()
                ratio.append(finger_length / np.linalg.norm(joints[0] - world[0]))
    assert min(len(r) for r in ratios.values()) >= 60
    for finger, ratio in ratios.items():
        ours = sum(PHALANX_CM[finger]) / np.linalg.norm(MCP_CM[finger])
        # measured 0.787, 0.936, 0.872, 0.761 (index .. little finger); the textbook lengths
        # the renderer had before were 0.97, 1.09, 1.07, 0.87
        assert abs(ours - np.median(ratio)) < 0.05, (finger, ours, np.median(ratio))


def test_random_poses_reach_every_finger_state_within_the_joints_limits():
    from pipeline.sources.synthetic.kinematics import random_gesture

    rng = np.random.default_rng(4)
    poses = [random_gesture(rng) for _ in range(300)]
    for finger in ("index", "middle", "ring", "pinky"):
        curls = np.array([[p.fingers[finger].mcp, p.fingers[finger].pip, p.fingers[finger].dip]
                          for p in poses])  # fmt: skip
        assert curls.min() >= 0 and curls[:, 0].max() <= 97 and curls[:, 1].max() <= 116
        assert (curls[:, 2] <= 0.8 * curls[:, 1] + 1e-9).all()  # the end joint follows the middle
        straight, fist = curls[:, 1] < 15, curls[:, 1] > 75
        assert 0.25 < straight.mean() < 0.55 and 0.2 < fist.mean() < 0.5, finger
    # the fingers move on their own: all four straight, all curled and mixed hands all occur
    pips = np.array([[p.fingers[f].pip for f in ("index", "middle", "ring", "pinky")]
                     for p in poses])  # fmt: skip
    assert (pips < 15).all(1).any() and (pips > 75).all(1).any()
    assert ((pips < 15).any(1) & (pips > 75).any(1)).mean() > 0.3
    thumbs = np.array([[p.thumb.abduction, p.thumb.lift] for p in poses])
    assert (thumbs >= [10, 10]).all() and (thumbs <= [65, 55]).all()


def test_a_sphere_chain_draws_what_its_spheres_draw_one_by_one():
    # The renderer draws each tube as one chain; `sphere` is the reference it must equal exactly
    # (depth, layer, element and normal per pixel), over a surface that already holds something
    # in front, behind and on another layer, with chains that leave the frame.
    from pipeline.sources.synthetic.raster import _Surface

    rng = np.random.default_rng(5)
    for trial in range(12):
        reference, chained = _Surface(96, 72), _Surface(96, 72)
        for surface in (reference, chained):
            surface.sphere(40.0, 30.0, 5.0, 20.0, 1.0, element=0, layer=1)
            surface.sphere(70.0, 50.0, -30.0, 15.0, 0.8, element=1, layer=2)
        count = int(rng.integers(2, 40))
        start, end = rng.uniform(-20, 110, 2), rng.uniform(-20, 110, 2)
        t = np.linspace(0.0, 1.0, count)
        cols, rows = (start[:, None] + (end - start)[:, None] * t).astype(np.float64)
        depths = rng.uniform(-10, 10) + rng.uniform(-5, 5) * t
        radii = rng.uniform(2, 12) + rng.uniform(-2, 2) * t
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        inner = (t > 0) & (t < 1)
        flatness, layer = float(rng.choice([1.0, 0.62])), int(rng.integers(0, 3))
        for k in range(count):
            reference.sphere(
                cols[k], rows[k], depths[k], radii[k], flatness, 2, axis if inner[k] else None,
                layer,
            )  # fmt: skip
        chained.sphere_chain(cols, rows, depths, radii, flatness, 2, axis, inner, layer)
        for name in ("depth", "layer", "element", "normal"):
            np.testing.assert_array_equal(
                getattr(chained, name), getattr(reference, name), err_msg=f"{name}, trial {trial}"
            )
        assert (chained.element == 2).any(), f"trial {trial} drew nothing: nothing was compared"


def test_contact_poses_put_the_thumbs_tip_on_the_fingertips_that_random_poses_never_reach():
    from pipeline.keypoints import FINGERS
    from pipeline.sources.synthetic import make_subject_styles
    from pipeline.sources.synthetic.kinematics import contact_gesture, pose_hand, random_gesture

    styles = make_subject_styles(np.random.default_rng(0), 6)
    rng = np.random.default_rng(11)
    touching_sets, contact_gaps, random_gaps = set(), [], []
    for i in range(60):
        gesture = contact_gesture(rng)
        joints, _ = pose_hand(gesture, styles[i % 6], rng)
        touching_sets.add(gesture.thumb_to)
        tips = joints[[FINGERS[f][-1] for f in gesture.thumb_to]]
        contact_gaps.append(np.linalg.norm(joints[FINGERS["thumb"][-1]] - tips.mean(0)))
        loose, _ = pose_hand(random_gesture(rng), styles[i % 6], rng)
        random_gaps.append(
            np.linalg.norm(loose[FINGERS["thumb"][-1]] - loose[FINGERS["index"][-1]])
        )
    # a pinch, two fingers and an "O" all occur
    assert {1, 2, 4} == {len(t) for t in touching_sets}
    # the tips meet: a pad's thickness apart (the aim is a fingertip radius to the palm side),
    # nearly always (a curled hand's tips can lie beyond the thumb's reach)
    assert np.percentile(contact_gaps, 90) < 1.2, np.percentile(contact_gaps, 90)
    # drawn finger by finger, the thumb seldom comes that near the index fingertip
    assert np.mean(np.array(random_gaps) < 1.5) < 0.1


def test_random_poses_replace_some_gestures_and_leave_the_other_frames_as_they_were(tmp_path):
    write_synthetic_dataset(tmp_path / "gestures", GOLDEN, workers=1)
    mixed_params = dataclasses.replace(GOLDEN, random_poses=0.4)
    summary = write_synthetic_dataset(tmp_path / "mixed", mixed_params, workers=1)
    gestures, mixed = _files(tmp_path / "gestures"), _files(tmp_path / "mixed")
    in_random = [name for name in mixed if Path(name).name.startswith(f"{RANDOM_POSE}-")]
    pngs = [name for name in in_random if name.endswith(".png")]
    assert 0 < len(pngs) < GOLDEN.num_images
    assert summary["per_class"][RANDOM_POSE] == len(pngs)
    # every frame still in its gesture is the same picture, byte for byte (its number within
    # its gesture and subject may move down where an earlier one became a random pose)
    kept = [mixed[n] for n in mixed if n.endswith(".png") and n not in in_random]
    assert len(kept) == GOLDEN.num_images - len(pngs)
    assert set(kept) <= {gestures[n] for n in gestures if n.endswith(".png")}
