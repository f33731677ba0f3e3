"""The hand's topology as data: joint names, bones, flip behaviour and hand size.

Everything else imports these names; nothing else hard-codes 21, 63 or a joint index.
The order is MediaPipe's ``HandLandmark`` enum, so teacher output maps one to one.
"""

from __future__ import annotations

import numpy as np

JOINT_NAMES: tuple[str, ...] = (
    "wrist",
    "thumb_cmc",
    "thumb_mcp",
    "thumb_ip",
    "thumb_tip",
    "index_mcp",
    "index_pip",
    "index_dip",
    "index_tip",
    "middle_mcp",
    "middle_pip",
    "middle_dip",
    "middle_tip",
    "ring_mcp",
    "ring_pip",
    "ring_dip",
    "ring_tip",
    "pinky_mcp",
    "pinky_pip",
    "pinky_dip",
    "pinky_tip",
)
NUM_JOINTS: int = len(JOINT_NAMES)
JOINT_INDEX: dict[str, int] = {name: i for i, name in enumerate(JOINT_NAMES)}
WRIST: int = JOINT_INDEX["wrist"]

# Finger chains from the palm outwards (MCP/CMC first, tip last).
FINGERS: dict[str, tuple[int, ...]] = {
    "thumb": (1, 2, 3, 4),
    "index": (5, 6, 7, 8),
    "middle": (9, 10, 11, 12),
    "ring": (13, 14, 15, 16),
    "pinky": (17, 18, 19, 20),
}

# Bones as (parent, child) pairs; identical to MediaPipe's HAND_CONNECTIONS.
CONNECTIONS: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 4),
    (0, 5), (5, 6), (6, 7), (7, 8),
    (5, 9), (9, 10), (10, 11), (11, 12),
    (9, 13), (13, 14), (14, 15), (15, 16),
    (13, 17), (0, 17), (17, 18), (18, 19), (19, 20),
)  # fmt: skip

HANDEDNESS_LABELS: tuple[str, str] = ("Left", "Right")


def column_names(prefix: str, axes: str = "xyz") -> list[str]:
    """Flat table columns for one landmark set, joint-major: ``x0, y0, z0, x1, ...``."""
    return [f"{prefix}{axis}{j}" for j in range(NUM_JOINTS) for axis in axes]


def flip_handedness(label: str) -> str:
    """A horizontal mirror turns a left hand into a right one.

    Hands have no left/right joint pairs, so a flip keeps joint indices and swaps the label.
    """
    if label not in HANDEDNESS_LABELS:
        raise ValueError(f"unknown handedness label {label!r}; expected one of {HANDEDNESS_LABELS}")
    return HANDEDNESS_LABELS[1 - HANDEDNESS_LABELS.index(label)]


def hand_size(points_xy: np.ndarray) -> np.ndarray:
    """Larger side of the landmarks' bounding box, per hand: the normaliser of PCK and MPJPE.

    ``points_xy`` has shape (..., NUM_JOINTS, 2) in any unit; the result has shape (...).
    """
    points_xy = np.asarray(points_xy, dtype=np.float64)
    if points_xy.shape[-2:] != (NUM_JOINTS, 2):
        raise ValueError(f"expected (..., {NUM_JOINTS}, 2) points, got {points_xy.shape}")
    extent = points_xy.max(axis=-2) - points_xy.min(axis=-2)
    return extent.max(axis=-1)


def bounding_box(points_xy: np.ndarray) -> np.ndarray:
    """(x_min, y_min, x_max, y_max) of the landmarks, per hand."""
    points_xy = np.asarray(points_xy, dtype=np.float64)
    return np.concatenate([points_xy.min(axis=-2), points_xy.max(axis=-2)], axis=-1)


def to_pixels(landmarks: np.ndarray, width: np.ndarray, height: np.ndarray) -> np.ndarray:
    """(N, joints, >=2) fractions of each image → (N, joints, 2) pixels of each original image."""
    size = np.stack([np.asarray(width, np.float64), np.asarray(height, np.float64)], axis=-1)
    return np.asarray(landmarks, dtype=np.float64)[..., :2] * size[:, None, :]
