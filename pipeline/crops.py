"""Square crops around a hand: where they are, what they show, and the ones that miss it.

A crop is a square in pixels of the original image, ``(cx, cy, side)``: centre and side. The
top-down student sees the hand through one: the teacher's landmarks give it in training (the
"oracle" crop), the finder (or the previous video frame) at inference. ``crop_square`` expands the
landmarks' box by a margin, as MediaPipe and MMPose/RTMPose do (RTMPose: 1.25 of the box).
``crop_image`` cuts one out at the model's input size with one affine, anti-aliased when it
shrinks; outside the image it is black. ``miss_square`` and ``random_square`` make the crops that
show no hand, the presence head's negatives.
"""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.keypoints import NUM_JOINTS

SQUARE_COLUMNS = ("crop_x", "crop_y", "crop_side")  # a crop in a table: centre x, y and side, px


def crop_square(landmarks_px: np.ndarray, margin: float) -> np.ndarray:
    """(N, joints, >=2) pixels → (N, 3) squares: the landmarks' box centre, and ``margin`` times
    its larger side (at least 1 px). Rows of NaN give NaN."""
    points = np.asarray(landmarks_px, dtype=np.float64)[..., :2]
    if points.shape[-2] != NUM_JOINTS:
        raise ValueError(f"expected (N, {NUM_JOINTS}, 2) landmarks, got {points.shape}")
    low, high = points.min(axis=-2), points.max(axis=-2)
    centre = (low + high) / 2
    side = np.maximum((high - low).max(axis=-1) * margin, 1.0)
    return np.concatenate([centre, side[..., None]], axis=-1)


def frame_squares(width: np.ndarray, height: np.ndarray) -> np.ndarray:
    """(N, 3) the square that holds each whole frame: its crop is the letterboxed image (what a
    finder sees)."""
    width, height = np.asarray(width, np.float64), np.asarray(height, np.float64)
    return np.stack([width / 2, height / 2, np.maximum(width, height)], axis=-1)


def square_corners(squares: np.ndarray) -> np.ndarray:
    """(N, 3) squares → (N, 4) x_min, y_min, x_max, y_max."""
    squares = np.asarray(squares, dtype=np.float64)
    half = squares[..., 2:3] / 2
    return np.concatenate([squares[..., :2] - half, squares[..., :2] + half], axis=-1)


def crop_matrix(square: np.ndarray, size: int, scale_first: float = 1.0) -> np.ndarray:
    """The 2x3 affine from pixel indices of an image (shrunk by ``scale_first``) to pixel indices
    of the ``size`` x ``size`` crop of ``square`` (pixel i's centre at i + 0.5 in both frames)."""
    cx, cy, side = (float(v) for v in square)
    scale = size / side / scale_first
    # crop u = (x + 0.5) / scale_first - (cx - side / 2), in crop pixels * size / side, - 0.5
    offset_x = (0.5 / scale_first - (cx - side / 2)) * (size / side) - 0.5
    offset_y = (0.5 / scale_first - (cy - side / 2)) * (size / side) - 0.5
    return np.array([[scale, 0.0, offset_x], [0.0, scale, offset_y]])


def crop_image(rgb: np.ndarray, square: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` x ``size`` picture of ``square`` (cx, cy, side in pixels) from an (H, W, 3)
    uint8 image; black where the square leaves the image. A crop that shrinks the image by more
    than 2x is first shrunk with area averaging (no aliasing), then warped bilinearly."""
    side = float(square[2])
    if not np.isfinite(np.asarray(square, dtype=np.float64)).all() or side <= 0:
        raise ValueError(f"not a crop square: {square}")
    shrink = size / side
    source, first = rgb, 1.0
    if shrink < 0.5:
        first = 2 * shrink  # area-average to twice the crop's resolution, the rest bilinear
        height, width = rgb.shape[:2]
        small = (max(1, round(width * first)), max(1, round(height * first)))
        source = cv2.resize(rgb, small, interpolation=cv2.INTER_AREA)
        first = small[0] / width  # what the rounding made of it
    matrix = crop_matrix(square, size, first)
    return cv2.warpAffine(
        source, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )


def _overlaps(square: np.ndarray, box_xyxy: np.ndarray) -> bool:
    corners = square_corners(square)
    return not (
        corners[2] <= box_xyxy[0]
        or corners[0] >= box_xyxy[2]
        or corners[3] <= box_xyxy[1]
        or corners[1] >= box_xyxy[3]
    )


def random_square(
    rng: np.random.Generator, width: float, height: float, side: float, avoid: np.ndarray | None
) -> np.ndarray:
    """A square of ``side`` (shrunk to fit the image) at a random place inside the image that
    does not overlap the box ``avoid`` (x_min, y_min, x_max, y_max) where one can be found."""
    side = float(min(side, width, height))
    for _ in range(20):
        centre = rng.uniform([side / 2, side / 2], [width - side / 2, height - side / 2])
        square = np.array([centre[0], centre[1], side])
        if avoid is None or not _overlaps(square, avoid):
            return square
    # The hand leaves no room: a smaller square in the largest free band beside it.
    x_min, y_min, x_max, y_max = (float(v) for v in avoid)
    bands = [
        (x_min, (0.0, 0.0, x_min, height)),
        (width - x_max, (x_max, 0.0, width, height)),
        (y_min, (0.0, 0.0, width, y_min)),
        (height - y_max, (0.0, y_max, width, height)),
    ]
    room, (bx0, by0, bx1, by1) = max(bands, key=lambda band: band[0])
    side = max(1.0, min(side, room, bx1 - bx0, by1 - by0))
    centre = rng.uniform([bx0 + side / 2, by0 + side / 2], [bx1 - side / 2, by1 - side / 2])
    return np.array([centre[0], centre[1], side])


def miss_square(
    rng: np.random.Generator, landmarks_px: np.ndarray, width: float, height: float, margin: float
) -> np.ndarray:
    """A crop the size of the hand's crop that shows none of the hand (where there is room)."""
    hand = crop_square(landmarks_px[None], margin)[0]
    points = np.asarray(landmarks_px, dtype=np.float64)[:, :2]
    box = np.concatenate([points.min(0), points.max(0)])
    return random_square(rng, width, height, hand[2], box)
