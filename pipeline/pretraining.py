"""Pre-training without ImageNet: the student learns hands from rendered images and their TRUE
landmarks (``pipeline.sources.synthetic``), then the train stage fine-tunes it on the teacher's
labels (``train.pretrained=synthetic``).

The renders are made in memory at ``pretrain.width`` x ``pretrain.height`` and go straight into
the decode-once tensor, so no image files are written; subjects and poses come from
``pretrain.seed`` (other people than the synthetic data set's, which uses ``synthetic.seed``).
The architecture, loss and augmentation are the train section's, so the weights fit the model the
train stage builds; the schedule (epochs, lr, batch size) is the pretrain section's. Training is
``pipeline.training.fit`` itself: checkpointed every epoch and resumable.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from pipeline.checkpoint import BEST, LAST
from pipeline.codec import LandmarkCodec
from pipeline.crops import crop_image, crop_square
from pipeline.data import SplitData
from pipeline.io import write_json
from pipeline.keypoints import NUM_JOINTS
from pipeline.machine import available_cores
from pipeline.params import PretrainParams, TrainParams, pretrain_params_for
from pipeline.paths import PRETRAIN_DIR
from pipeline.schema import LANDMARK_COLUMNS
from pipeline.sources.synthetic import GESTURE_CLASSES, make_subject_styles, render_hand
from pipeline.training import FitResult, fit

DISABLED_MARKER = PRETRAIN_DIR / "disabled.json"


def _render(job: tuple) -> tuple:
    """One hand → (input image, landmarks as fractions of the picture, handedness, picture
    width and height, the crop square or None)."""
    seed, index, gesture, style, width, height, image_size, layout, crop, margin, context = job
    rng = np.random.default_rng([seed, 0x9E7, index])
    hand = render_hand(rng, gesture, style, width, height)
    fractions = hand.landmarks_px / (width, height)
    if layout == "crop":  # the top-down student's crop, as the train stage cuts it
        square = crop_square(hand.landmarks_px[None], margin)[0] * (1.0, 1.0, context)
        image = crop_image(hand.image, square, round(image_size * context))
        return image, fractions, hand.handedness, width, height, square
    if crop is None:
        image = LandmarkCodec(layout=layout).input_image(hand.image, image_size)
        return image, fractions, hand.handedness, width, height, None
    # A square around the hand, the hand filling a random fraction of it, off-centre a little.
    low, high = hand.landmarks_px.min(0), hand.landmarks_px.max(0)
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
    return image, (hand.landmarks_px - corner) / side, hand.handedness, side_px, side_px, None


def render_split(
    settings: PretrainParams,
    count: int,
    first_index: int,
    image_size: int,
    layout: str,
    split: str,
    crop_margin: float = TrainParams.crop_margin,
    context: float = 1.0,
) -> SplitData:
    """``count`` rendered hands (gestures in turn, subjects at random) as a training split whose
    landmarks are the truth (z = 0). For the crop layout, each image is the hand's crop
    (``crop_margin``), cut ``context`` times wider as the train stage's training crops are."""
    styles = make_subject_styles(
        np.random.default_rng([settings.seed, 0x57]), settings.num_subjects
    )
    pick = np.random.default_rng([settings.seed, 0x5B, first_index])
    jobs = [
        (
            settings.seed,
            first_index + i,
            GESTURE_CLASSES[(first_index + i) % len(GESTURE_CLASSES)],
            styles[pick.integers(len(styles))],
            settings.width,
            settings.height,
            image_size,
            layout,
            (settings.crop_min, settings.crop_max) if settings.crop_max > 0 else None,
            crop_margin,
            context,
        )
        for i in range(count)
    ]
    workers = min(settings.workers or available_cores(), max(1, count // 16))
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_render, jobs, chunksize=16))
    else:
        results = [_render(job) for job in jobs]
    size = round(image_size * context) if layout == "crop" else image_size
    images = (
        np.stack([r[0] for r in results]) if results else np.zeros((0, size, size, 3), np.uint8)
    )
    landmarks = np.zeros((count, NUM_JOINTS, 3))
    for i, result in enumerate(results):
        landmarks[i, :, :2] = result[1]
    width = np.array([r[3] for r in results], dtype=np.float64)
    height = np.array([r[4] for r in results], dtype=np.float64)
    table = pd.DataFrame(
        {
            "path": [f"render{job[1]:06d}" for job in jobs],
            "split": split,
            "class_name": [job[2] for job in jobs],
            "width": width,
            "height": height,
            "handedness": [r[2] for r in results],
            "handedness_score": 1.0,
        }
    )
    table[LANDMARK_COLUMNS] = landmarks.reshape(count, NUM_JOINTS * 3)
    return SplitData(
        images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        landmarks=landmarks,
        width=width,
        height=height,
        table=table,
        layout=layout,
        squares=np.array([r[5] for r in results]).reshape(count, 3) if layout == "crop" else None,
    )


def pretrain(
    settings: PretrainParams, train: TrainParams, out_dir: Path = PRETRAIN_DIR, log=print
) -> FitResult | None:
    """Render, then fit on the truth; ``out_dir`` gets ``last.pt``/``best.pt`` (or, with
    ``num_images: 0``, only a marker saying pretraining is off)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    marker = out_dir / DISABLED_MARKER.name
    if settings.num_images == 0:
        for name in (BEST, LAST):
            (out_dir / name).unlink(missing_ok=True)
        write_json(marker, {"pretraining": "off (pretrain.num_images: 0)"})
        log("pretraining is off (pretrain.num_images: 0)")
        return None
    marker.unlink(missing_ok=True)
    params = pretrain_params_for(settings, train)
    train_split = render_split(
        settings, settings.num_images, 0, train.image_size, train.input_layout, "train",
        train.crop_margin, train.crop_context,
    )  # fmt: skip
    validation = render_split(
        settings, settings.validation_images, settings.num_images, train.image_size,
        train.input_layout, "validation", train.crop_margin,
    )  # fmt: skip
    log(f"rendered {len(train_split)} training and {len(validation)} validation hands")
    return fit(train_split, validation, params, out_dir, log=log)
