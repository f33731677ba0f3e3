"""Tiny labelled data for training tests: hand skeletons drawn where their landmarks are, so a
model has something real (if simple) to learn. The full renderer is tested in test_synthetic.
``skeleton_split`` is whole frames (the squash layout); ``skeleton_photos`` are files to crop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from pipeline.codec import resize_square
from pipeline.data import SplitData
from pipeline.keypoints import NUM_JOINTS
from pipeline.plots import draw_skeleton
from pipeline.schema import LANDMARK_COLUMNS

# A whole-frame student trained in a second on skeleton_split, for tests of what is done with
# a trained model (export, predict, score) rather than of training itself.
TINY_WHOLE_FRAME = {
    "pretrained": "none",
    "input_layout": "squash",
    "image_size": 32,
    "epochs": 1,
    "batch_size": 4,
    "device": "cpu",
    "threads": 2,
}

# The seed's recipe (params.yaml has the project's): tests that check it bit for bit use it.
SEED_RECIPE = {
    "pretrained": "none",
    "input_layout": "squash",
    "head": "pooled_mlp",
    "loss": "smooth_l1",
    "distribution_weight": 0.0,
    "rotate_deg": 0.0,
    "scale_min": 1.0,
    "scale_max": 1.0,
    "translate": 0.0,
}

# A flat open hand, normalised to a unit box, wrist at the bottom.
_ANGLES = np.deg2rad([-60, -30, 0, 25, 50])
_TEMPLATE = [(0.5, 1.0)]
for angle, length in zip(_ANGLES, (0.35, 0.5, 0.55, 0.5, 0.4)):
    for step in range(1, 5):
        r = 0.15 + length * step / 4
        _TEMPLATE.append((0.5 + r * np.sin(angle), 1.0 - r * np.cos(angle)))
TEMPLATE = np.array(_TEMPLATE)


def skeleton_split(
    count: int, image_size: int = 32, seed: int = 0, width: int = 96, height: int = 72
) -> SplitData:
    rng = np.random.default_rng(seed)
    images, landmarks = [], []
    for _ in range(count):
        scale = rng.uniform(0.4, 0.7)
        offset = rng.uniform(0.05, 0.95 - scale, 2)
        xy = TEMPLATE * scale + offset
        z = rng.normal(0, 0.02, (NUM_JOINTS, 1))
        canvas = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
        canvas = draw_skeleton(canvas, xy * [width, height], (230, 190, 160), thickness=2)
        images.append(resize_square(canvas, image_size))
        landmarks.append(np.hstack([xy, z]))
    landmarks = np.array(landmarks).reshape(count, NUM_JOINTS, 3)
    images = np.stack(images) if images else np.zeros((0, image_size, image_size, 3), np.uint8)
    table = pd.DataFrame(
        {
            "path": [f"img{i}.png" for i in range(count)],
            "split": "train",
            "class_name": ["A", "B"] * (count // 2) + ["A"] * (count % 2),
            "width": width,
            "height": height,
            "handedness": ["Left", "Right"] * (count // 2) + ["Left"] * (count % 2),
            "handedness_score": rng.uniform(0.6, 1.0, count),
        }
    )
    table[LANDMARK_COLUMNS] = landmarks.reshape(count, NUM_JOINTS * 3)
    return SplitData(
        images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        landmarks=landmarks,
        width=np.full(count, float(width)),
        height=np.full(count, float(height)),
        table=table,
        layout="squash",
    )


def skeleton_photos(
    count: int, seed: int = 0, width: int = 96, height: int = 72
) -> tuple[list[np.ndarray], np.ndarray]:
    """Full-size RGB images like ``skeleton_split``'s (before the resize) and their landmarks
    (N, joints, 2) in pixels: files for tests that read images from disk."""
    rng = np.random.default_rng(seed)
    images, points = [], []
    for _ in range(count):
        scale = rng.uniform(0.4, 0.7)
        xy = (TEMPLATE * scale + rng.uniform(0.05, 0.95 - scale, 2)) * [width, height]
        canvas = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
        images.append(draw_skeleton(canvas, xy, (230, 190, 160), thickness=2))
        points.append(xy)
    return images, np.array(points).reshape(count, NUM_JOINTS, 2)
