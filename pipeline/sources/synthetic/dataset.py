"""The synthetic data set on disk: the OUHANDS layout (see ``pipeline.sources.ouhands``) with a
``true_landmarks.csv`` beside the images; test subjects are disjoint from the training subjects.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.io import atomic_path
from pipeline.keypoints import column_names
from pipeline.params import SyntheticParams
from pipeline.sources.synthetic.kinematics import GESTURE_CLASSES, RANDOM_POSE
from pipeline.sources.synthetic.render import render_empty, render_hand
from pipeline.sources.synthetic.subjects import SubjectStyle, make_subject_styles

TRAIN_HAND_DIR = Path("OUHANDS_train/train/hand_data")
TEST_HAND_DIR = Path("OUHANDS_test/test/hand_data")
LISTS_DIR = Path("OUHANDS_train/data_split_for_intermediate_tests")
TRUTH_FILE = "true_landmarks.csv"
EMPTY_CLASS = "none"  # the class of the frames without a hand
# zlib level 1, not OpenCV's 3: the renders' sensor noise leaves little to compress (549 against
# 540 kB a frame), and writing took a third less time (24 against 36 ms), the same pixels
PNG_OPTIONS = [cv2.IMWRITE_PNG_COMPRESSION, 1]


@dataclass(frozen=True)
class _ImageJob:
    index: int  # with the seed, picks the image's own random stream
    seed: int
    gesture: str
    subject: int
    file_name: str
    is_test: bool


def _plan(params: SyntheticParams) -> tuple[list[SubjectStyle], list[_ImageJob], set[int]]:
    """Which image shows which gesture by which subject; test subjects are held out whole."""
    rng = np.random.default_rng([params.seed, 0x5EED])
    styles = make_subject_styles(rng, params.num_subjects)
    num_test = round(params.test_fraction * params.num_subjects)
    num_test = min(max(1, num_test), params.num_subjects - 1)
    order = rng.permutation(params.num_subjects)
    test_subjects = {int(s) for s in order[:num_test]}
    # Every subject gets an even share of the images, paired with gestures at random. The share
    # is dealt in an order that starts with a test subject and then a training one, so even a
    # two-image set has both splits.
    order = np.concatenate(
        [order[:1], order[num_test : num_test + 1], order[1:num_test], order[num_test + 1 :]]
    )
    subjects = rng.permutation(order[np.arange(params.num_images) % params.num_subjects])
    # Gestures cycle so every class is represented evenly. Frames without a hand, and hands in
    # a random pose, are drawn from streams of their own, so the other frames stay what they
    # were without them.
    empty = np.random.default_rng([params.seed, 0xE417]).random(params.num_images)
    random_pose = np.random.default_rng([params.seed, 0x905E]).random(params.num_images)
    running: Counter = Counter()
    jobs = []
    for index, subject in enumerate(int(s) for s in subjects):
        gesture = GESTURE_CLASSES[index % len(GESTURE_CLASSES)]
        if random_pose[index] < params.random_poses:
            gesture = RANDOM_POSE
        if empty[index] < params.empty_fraction:
            gesture = EMPTY_CLASS
        running[gesture, subject] += 1
        name = f"{gesture}-{styles[subject].name}-{running[gesture, subject]:04d}.png"
        is_test = subject in test_subjects
        jobs.append(_ImageJob(index, params.seed, gesture, subject, name, is_test))
    return styles, jobs, test_subjects


def _write_image(task: tuple) -> tuple[str, str, str]:
    """Render one image, write its PNG and box file; return its truth row's fields (NaN for a
    frame without a hand, which has no box file)."""
    job, style, width, height, hand_dir, hand_scale, turn_max = task
    rng = np.random.default_rng([job.seed, job.index])
    if job.gesture == EMPTY_CLASS:
        bgr = cv2.cvtColor(render_empty(rng, width, height), cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(hand_dir / "colour" / job.file_name), bgr, PNG_OPTIONS):
            raise OSError(f"could not write {hand_dir / 'colour' / job.file_name}")
        return job.file_name, "", ",".join(["nan"] * len(column_names("", "xy")))
    hand = render_hand(rng, job.gesture, style, width, height, hand_scale, turn_max)
    bgr = cv2.cvtColor(hand.image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(hand_dir / "colour" / job.file_name), bgr, PNG_OPTIONS):
        raise OSError(f"could not write {hand_dir / 'colour' / job.file_name}")
    x, y, w, h = hand.box_xywh
    (hand_dir / "bounding_box" / f"{Path(job.file_name).stem}.txt").write_text(
        f"1\n{x} {y} {w} {h}\n"
    )
    normalised = (hand.landmarks_px / (width, height)).ravel()
    return job.file_name, hand.handedness, ",".join(f"{v:.6f}" for v in normalised)


def _write_truth(path: Path, rows: list[tuple[str, str, str]]) -> None:
    lines = [",".join(["image", "handedness", *column_names("", "xy")])]
    lines += [",".join(row) for row in sorted(rows)]
    path.write_text("\n".join(lines) + "\n")


def write_synthetic_dataset(
    root: Path, params: SyntheticParams, *, workers: int | None = None
) -> dict:
    """Write the synthetic OUHANDS layout to ``root`` (replacing it); return counts per split.

    Deterministic: the same params give byte-identical files, whatever the number of workers,
    since every image draws from its own stream seeded by (seed, image index).

    ``workers``: rendering processes. None: one per 32 images (a worker needs a few dozen images
    to pay for its start), at most one per CPU and 8; 1 renders in this process.
    """
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1 or None, got {workers}")
    styles, jobs, test_subjects = _plan(params)
    with atomic_path(root) as partial:
        train_dir, test_dir = partial / TRAIN_HAND_DIR, partial / TEST_HAND_DIR
        for hand_dir in (train_dir, test_dir):
            (hand_dir / "colour").mkdir(parents=True)
            (hand_dir / "bounding_box").mkdir(parents=True)
        (partial / LISTS_DIR).mkdir(parents=True)
        tasks = [
            (
                job,
                styles[job.subject],
                params.width,
                params.height,
                test_dir if job.is_test else train_dir,
                (params.hand_scale_min, params.hand_scale_max),
                params.turn_max,
            )
            for job in jobs
        ]
        if workers is None:
            # A worker needs a few dozen images to pay for its start.
            workers = min(os.cpu_count() or 1, 8, len(tasks) // 32)
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                rows = list(pool.map(_write_image, tasks, chunksize=8))
        else:
            rows = [_write_image(task) for task in tasks]
        train_rows = [row for row, job in zip(rows, jobs) if not job.is_test]
        test_rows = [row for row, job in zip(rows, jobs) if job.is_test]
        _write_truth(train_dir / TRUTH_FILE, train_rows)
        _write_truth(test_dir / TRUTH_FILE, test_rows)

        # Validation images are drawn at random from the training subjects' images.
        train_names = sorted(row[0] for row in train_rows)
        rng = np.random.default_rng([params.seed, 0xA11])
        num_validation = round(params.validation_fraction * len(train_names))
        validation = sorted(rng.permutation(train_names)[:num_validation].tolist())
        training = sorted(set(train_names) - set(validation))
        for list_name, names in (
            ("training_files.txt", training),
            ("validation_files.txt", validation),
        ):
            (partial / LISTS_DIR / list_name).write_text("".join(f"{name}\n" for name in names))
    return {
        "train": len(training),
        "validation": len(validation),
        "test": len(test_rows),
        "train_subjects": sorted({styles[job.subject].name for job in jobs if not job.is_test}),
        "test_subjects": sorted(styles[s].name for s in test_subjects),
        "per_class": dict(sorted(Counter(job.gesture for job in jobs).items())),
    }
