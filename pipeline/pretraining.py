"""Pre-training without ImageNet: the student learns hands from rendered images, then the train
stage fine-tunes it on the teacher's labels of the user's data (``train.pretrained=synthetic``).

The renders are made in memory at ``pretrain.width`` x ``pretrain.height`` and go straight into
the decode-once tensor, so no image files are written; subjects and poses come from
``pretrain.seed`` (other people than the synthetic data set's, which uses ``synthetic.seed``).
Their labels (``pretrain.labels``) are the renderer's TRUE landmarks, or the TEACHER's answer on
each render: then the network starts out drawing hands as MediaPipe reads them (the train stage's
targets), and a render where the teacher finds no hand, or several, is left out, counted in
``metrics/pretrain.json`` with its index and why. The architecture, loss and augmentation are the
train section's, so the weights fit the model the train stage builds; the schedule (epochs, lr,
batch size) is the pretrain section's. Training is ``pipeline.training.fit`` itself:
checkpointed every epoch and resumable.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from pipeline.checkpoint import BEST, LAST
from pipeline.codec import LandmarkCodec
from pipeline.crops import crop_image, crop_square
from pipeline.data import TEACHES_PRESENCE, SplitData
from pipeline.io import write_json
from pipeline.keypoints import NUM_JOINTS
from pipeline.machine import available_cores
from pipeline.params import LandmarksParams, PretrainParams, TrainParams, pretrain_params_for
from pipeline.paths import PRETRAIN_DIR, PRETRAIN_METRICS, TEACHER_MODEL
from pipeline.schema import LANDMARK_COLUMNS, TRUTH_COLUMNS
from pipeline.sources.synthetic import (
    CONTACT_POSE,
    GESTURE_CLASSES,
    RANDOM_POSE,
    make_subject_styles,
    render_hand,
)
from pipeline.teacher import Teacher, pool_worker_teacher
from pipeline.training import FitResult, fit

DISABLED_MARKER = PRETRAIN_DIR / "disabled.json"


class PretrainingError(RuntimeError):
    """Too few renders have a label to pretrain on."""


# Why the teacher's answer on a render is not a label (pretrain.labels: teacher).
TEACHER_FOUND_NONE = "the teacher found no hand"
TEACHER_FOUND_SEVERAL = "the teacher found more than one hand"

# This process's landmarker when renders are labelled by the teacher (one per worker process).
_render_teacher: Teacher | None = None


def _open_render_teacher(model_path: str, settings: LandmarksParams) -> None:
    global _render_teacher
    _render_teacher = pool_worker_teacher(model_path, settings)


def _render(job: tuple) -> tuple | str:
    """One hand → (input image, landmarks as fractions of the picture, handedness and its
    score, picture width and height, the crop square or None), or why it has no label."""
    (seed, index, gesture, style, width, height, image_size, layout, crop, margin, context,
     closeup, turn_max) = job  # fmt: skip
    rng = np.random.default_rng([seed, 0x9E7, index])
    hand = render_hand(rng, gesture, style, width, height, turn_max=turn_max)
    landmarks_px, handedness, score = hand.landmarks_px, hand.handedness, 1.0
    if _render_teacher is not None:
        detection = _render_teacher.detect(hand.image)
        if detection.num_hands != 1:
            return TEACHER_FOUND_NONE if detection.num_hands == 0 else TEACHER_FOUND_SEVERAL
        landmarks_px = detection.landmarks[0, :, :2].astype(np.float64) * (width, height)
        handedness, score = detection.handedness[0], float(detection.handedness_score[0])
    fractions = landmarks_px / (width, height)
    if layout == "crop":  # the top-down student's crop, as the train stage cuts it
        picture = _framed_close(hand.image, landmarks_px, rng) if closeup else hand.image
        square = crop_square(landmarks_px[None], margin)[0] * (1.0, 1.0, context)
        image = crop_image(picture, square, round(image_size * context))
        return image, fractions, handedness, score, width, height, square
    if crop is None:
        image = LandmarkCodec(layout=layout).input_image(hand.image, image_size)
        return image, fractions, handedness, score, width, height, None
    # A square around the hand, the hand filling a random fraction of it, off-centre a little.
    low, high = landmarks_px.min(0), landmarks_px.max(0)
    side = float((high - low).max() / rng.uniform(*crop))
    corner = (low + high) / 2 - side / 2 + rng.uniform(-0.08, 0.08, 2) * side
    scale = image_size / side
    matrix = np.array([[scale, 0, -corner[0] * scale], [0, scale, -corner[1] * scale]])
    image = cv2.warpAffine(
        hand.image,
        matrix,
        (image_size, image_size),
        flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    side_px = round(side)
    return image, (landmarks_px - corner) / side, handedness, score, side_px, side_px, None


# A close-up photo: its sides, in hand sizes (the larger side of the joints' box), and how far
# its centre is from the hand's: the hand fills it, and now and then reaches past an edge.
CLOSEUP_SIDE = (0.95, 1.6)
CLOSEUP_SHIFT = 0.15


def _framed_close(
    image: np.ndarray, landmarks_px: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """The render as a close-up photo of the hand shows it: only a rectangle around the
    joints, black beyond it, as a crop of a photo is past the photo's edges."""
    low, high = landmarks_px.min(0), landmarks_px.max(0)
    size = float((high - low).max())
    centre = (low + high) / 2 + rng.uniform(-CLOSEUP_SHIFT, CLOSEUP_SHIFT, 2) * size
    half = rng.uniform(*CLOSEUP_SIDE, 2) * size / 2
    (x0, y0), (x1, y1) = (
        np.maximum(np.round(centre - half), 0).astype(int),
        np.round(centre + half).astype(int),
    )
    framed = np.zeros_like(image)
    framed[y0:y1, x0:x1] = image[y0:y1, x0:x1]
    return framed


Renderer = Callable[[list[tuple]], list]  # render jobs → their results, in order


def _render_here(jobs: list[tuple]) -> list:
    return [_render(job) for job in jobs]


@contextmanager
def renderer(
    settings: PretrainParams, count: int, teacher: tuple[Path, LandmarksParams] | None = None
) -> Iterator[Renderer]:
    """What renders (and, with ``teacher``, labels) ``count`` hands: worker processes (one
    pool for every split the caller renders with it, so each worker loads its landmarker once)
    or this process."""
    global _render_teacher
    workers = min(settings.workers or available_cores(), max(1, count // 16))
    if workers == 1:
        if teacher is None:
            yield _render_here
            return
        with Teacher(*teacher) as _render_teacher:
            try:
                yield _render_here
            finally:
                _render_teacher = None
        return
    if teacher is None:
        pool = ProcessPoolExecutor(workers)
    else:  # spawn, not fork: a forked copy of a process that ran MediaPipe's threads can hang
        spawn = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(
            workers, spawn, _open_render_teacher, (str(teacher[0]), teacher[1])
        )
    with pool:
        yield lambda jobs: list(pool.map(_render, jobs, chunksize=16))


def render_split(
    settings: PretrainParams,
    count: int,
    first_index: int,
    image_size: int,
    layout: str,
    split: str,
    crop_margin: float = TrainParams.crop_margin,
    context: float = 1.0,
    teacher: tuple[Path, LandmarksParams] | None = None,
    render: Renderer | None = None,
) -> tuple[SplitData, list[dict]]:
    """``count`` rendered hands (gestures in turn, or for ``settings.random_poses`` of them a
    random pose; subjects at random) as a training split whose
    landmarks are the truth (z = 0), or with ``teacher`` (the model file and the landmarks
    section) the teacher's answer on each render (z = 0 too: pretraining does not train depth).
    For the crop layout, each image is the hand's crop (``crop_margin``) around those
    landmarks, cut ``context`` times wider as the train stage's training crops are, framed as
    a close-up photo for ``settings.closeups`` of them. Also
    returns the renders left out (teacher labels only): their name, split and why. ``render``:
    a ``renderer`` to use instead of one made for this split (its teacher, if any, labels)."""
    styles = make_subject_styles(
        np.random.default_rng([settings.seed, 0x57]), settings.num_subjects
    )
    pick = np.random.default_rng([settings.seed, 0x5B, first_index])

    def drawn(stream: int, fraction: float) -> np.ndarray:
        """Which renders get a trait, from a stream of its own per trait, so that the other
        renders stay what they were at any fraction."""
        return np.random.default_rng([settings.seed, stream, first_index]).random(count) < fraction

    random_pose = drawn(0x905E, settings.random_poses)
    closeup = drawn(0xC105E, settings.closeups)
    contact = drawn(0xC0DAC7, settings.contact_poses)
    jobs = [
        (
            settings.seed,
            first_index + i,
            CONTACT_POSE
            if contact[i]
            else RANDOM_POSE
            if random_pose[i]
            else GESTURE_CLASSES[(first_index + i) % len(GESTURE_CLASSES)],
            styles[pick.integers(len(styles))],
            settings.width,
            settings.height,
            image_size,
            layout,
            (settings.crop_min, settings.crop_max) if settings.crop_max > 0 else None,
            crop_margin,
            context,
            bool(closeup[i]),
            settings.turn_max,
        )
        for i in range(count)
    ]
    if render is None:
        with renderer(settings, count, teacher) as render_here:
            results = render_here(jobs)
    else:
        results = render(jobs)
    dropped = [
        {"render": _render_name(job[1]), "split": split, "reason": result}
        for job, result in zip(jobs, results, strict=True)
        if isinstance(result, str)
    ]
    kept = [(job, r) for job, r in zip(jobs, results, strict=True) if not isinstance(r, str)]
    size = round(image_size * context) if layout == "crop" else image_size
    images = np.stack([r[0] for _, r in kept]) if kept else np.zeros((0, size, size, 3), np.uint8)
    landmarks = np.zeros((len(kept), NUM_JOINTS, 3))
    for i, (_, result) in enumerate(kept):
        landmarks[i, :, :2] = result[1]
    width = np.array([r[4] for _, r in kept], dtype=np.float64)
    height = np.array([r[5] for _, r in kept], dtype=np.float64)
    table = pd.DataFrame(
        {
            "path": [_render_name(job[1]) for job, _ in kept],
            "split": split,
            "class_name": [job[2] for job, _ in kept],
            "width": width,
            "height": height,
            "handedness": [r[2] for _, r in kept],
            "handedness_score": [r[3] for _, r in kept],
        }
    )
    table[LANDMARK_COLUMNS] = landmarks.reshape(len(kept), NUM_JOINTS * 3)
    squares = np.array([r[6] for _, r in kept]).reshape(len(kept), 3) if layout == "crop" else None
    data = SplitData(
        images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        landmarks=landmarks,
        width=width,
        height=height,
        table=table,
        layout=layout,
        squares=squares,
    )
    return data, dropped


def rehearsal_split(settings: PretrainParams, train: TrainParams, count: int) -> SplitData:
    """``count`` renders of the pretrain section's kind as train samples for fine-tuning
    (``train.rehearsal``): the renders that follow pre-training's own (same people, other
    photos), labelled by their truth whatever ``pretrain.labels`` says, presence 1, z NaN (the
    renders have no depth to learn: the loss leaves it out), cut as the train stage cuts its
    training samples."""
    first_index = settings.num_images + settings.validation_images
    with renderer(settings, count) as render:
        data, _ = render_split(
            settings, count, first_index, train.image_size, train.input_layout, "train",
            train.crop_margin, train.crop_context, render=render,
        )  # fmt: skip
    data.landmarks[..., 2] = np.nan
    index = data.table.index
    xy = data.landmarks[..., :2].reshape(len(index), -1)
    truth = pd.DataFrame(xy, index=index, columns=TRUTH_COLUMNS)
    flags = pd.DataFrame({"presence": True, TEACHES_PRESENCE: True}, index=index)
    data.table = pd.concat([data.table, truth, flags], axis=1)
    data.table[LANDMARK_COLUMNS[2::3]] = np.nan
    return data


def _render_name(index: int) -> str:
    return f"render{index:06d}"


def pretrain(
    settings: PretrainParams,
    train: TrainParams,
    out_dir: Path = PRETRAIN_DIR,
    log=print,
    landmarks: LandmarksParams | None = None,
    teacher_model: Path = TEACHER_MODEL,
    metrics_path: Path = PRETRAIN_METRICS,
) -> FitResult | None:
    """Render, label (``pretrain.labels``: the truth, or the teacher at ``teacher_model`` with
    the ``landmarks`` section's settings), then fit; ``out_dir`` gets ``last.pt``/``best.pt``
    (or, with ``num_images: 0``, only a marker saying pretraining is off) and ``metrics_path``
    what was labelled and what was left out."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    marker = out_dir / DISABLED_MARKER.name
    if settings.num_images == 0:
        for name in (BEST, LAST):
            (out_dir / name).unlink(missing_ok=True)
        write_json(marker, {"pretraining": "off (pretrain.num_images: 0)"})
        write_json(metrics_path, {"pretraining": "off"})
        log("pretraining is off (pretrain.num_images: 0)")
        return None
    marker.unlink(missing_ok=True)
    params = pretrain_params_for(settings, train)
    teacher = None
    if settings.labels == "teacher":
        teacher = (Path(teacher_model), landmarks or LandmarksParams())
    with renderer(settings, settings.num_images, teacher) as render:
        train_split, dropped = render_split(
            settings, settings.num_images, 0, train.image_size, train.input_layout, "train",
            train.crop_margin, train.crop_context, render=render,
        )  # fmt: skip
        validation, dropped_validation = render_split(
            settings, settings.validation_images, settings.num_images, train.image_size,
            train.input_layout, "validation", train.crop_margin, render=render,
        )  # fmt: skip
    dropped += dropped_validation
    counts = {
        name: {
            "rendered": rendered,
            "labelled": len(data),
            "left_out": rendered - len(data),
            "labelled_in_random_poses": int((data.table["class_name"] == RANDOM_POSE).sum()),
        }
        for name, rendered, data in (
            ("train", settings.num_images, train_split),
            ("validation", settings.validation_images, validation),
        )
    }
    write_json(metrics_path, {"labels": settings.labels, **counts, "renders_left_out": dropped})
    left_out = f", {len(dropped)} left out ({metrics_path})" if dropped else ""
    log(
        f"rendered {settings.num_images + settings.validation_images} hands, labelled by "
        f"{settings.labels}: {len(train_split)} training and {len(validation)} "
        f"validation{left_out}"
    )
    for name, data, needed in (("training", train_split, 2), ("validation", validation, 1)):
        if len(data) < needed:
            raise PretrainingError(
                f"only {len(data)} of the {name} renders have a label (pretrain.labels: "
                f"{settings.labels}; {metrics_path} says why): render more "
                "(pretrain.num_images / validation_images) or set pretrain.labels: truth"
            )
    return fit(train_split, validation, params, out_dir, log=log)
