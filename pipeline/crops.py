"""Square crops around a hand: where they are, what they show, and the ones that miss it.

A crop is a square in pixels of the original image, ``(cx, cy, side)``: centre and side. The
top-down student sees the hand through one: the teacher's landmarks give it in training (the
"oracle" crop), the finder (or the previous video frame) at inference. ``crop_square`` expands the
landmarks' box by a margin, as MediaPipe and MMPose/RTMPose do (RTMPose: 1.25 of the box).
``crop_image`` cuts one out at the model's input size with one affine, anti-aliased when it
shrinks; outside the image it is black. ``miss_square`` and ``random_square`` make the crops that
show no hand, the presence head's negatives; ``wide_square`` the ones that show it small and off
centre, as a finder's square that is too big does.
"""

from __future__ import annotations

import math

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


def crop_matrix(
    square: np.ndarray,
    size: int,
    scale_first: float | tuple[float, float] = 1.0,
    origin: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """The 2x3 affine from pixel indices of an image to pixel indices of the ``size`` x ``size``
    crop of ``square`` (pixel i's centre at i + 0.5 in both frames). The image may be a region
    of the original whose top-left corner is at ``origin`` (pixels), shrunk by ``scale_first``
    (one factor, or one per axis)."""
    cx, cy, side = (float(v) for v in square)
    first_x, first_y = np.broadcast_to(np.asarray(scale_first, np.float64), (2,))
    k = size / side
    # crop u = ((x + 0.5) / first + origin - (cx - side / 2)) * k - 0.5, and the same for v
    offset_x = (0.5 / first_x + origin[0] - (cx - side / 2)) * k - 0.5
    offset_y = (0.5 / first_y + origin[1] - (cy - side / 2)) * k - 0.5
    return np.array([[k / first_x, 0.0, offset_x], [0.0, k / first_y, offset_y]])


def _area_factor(shrink: float) -> int:
    """The factor to area-average by before the bilinear warp: the power of two in
    [1 / (2 * shrink), 1 / shrink], so that the warp then shrinks by at most 2x (no aliasing)
    and every step is an exact halving, OpenCV's fast path (20x faster than a fractional box)."""
    return 2 ** math.floor(math.log2(1 / shrink))


def _grid_span(low: float, high: float, limit: int, factor: int) -> tuple[int, int, int]:
    """The pixels [start, stop) of [low, high) on the image's grid of ``factor`` blocks (start a
    multiple of factor, inside the image), and how many black pixels past the image's edge
    complete the last block. The grid is the image's, not the crop's: neighbouring crops
    average the same pixels together."""
    start = int(np.clip(math.floor(low / factor) * factor, 0, limit))
    blocks = max(1, math.ceil((min(high, limit) - start) / factor))
    stop = start + blocks * factor
    return start, min(stop, limit), max(0, stop - limit)


def crop_image(rgb: np.ndarray, square: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` x ``size`` picture of ``square`` (cx, cy, side in pixels) from an (H, W, 3)
    uint8 image; black where the square leaves the image. A crop that shrinks the image by more
    than 2x is first shrunk by a power of two with area averaging (no aliasing), then warped
    bilinearly; only the part of the image under the square (and 2 px around it) is shrunk, so a
    hand's crop costs the hand's pixels, not the frame's."""
    side = float(square[2])
    if not np.isfinite(np.asarray(square, dtype=np.float64)).all() or side <= 0:
        raise ValueError(f"not a crop square: {square}")
    shrink = size / side
    source, first, origin = rgb, 1.0, (0.0, 0.0)
    if shrink < 0.5:
        height, width = rgb.shape[:2]
        cx, cy = float(square[0]), float(square[1])
        if not (
            cx + side / 2 > 0
            and cy + side / 2 > 0
            and cx - side / 2 < width
            and cy - side / 2 < height
        ):  # the square lies wholly outside the image
            return np.zeros((size, size, rgb.shape[2]), rgb.dtype)
        factor = _area_factor(shrink)
        # the square and 2 px around it (the bilinear warp's reach), on the factor's grid
        x0, x1, pad_x = _grid_span(cx - side / 2 - 2, cx + side / 2 + 2, width, factor)
        y0, y1, pad_y = _grid_span(cy - side / 2 - 2, cy + side / 2 + 2, height, factor)
        region = rgb[y0:y1, x0:x1]
        if pad_x or pad_y:  # black beyond the image's edge, as the warp puts outside it
            region = cv2.copyMakeBorder(region, 0, pad_y, 0, pad_x, cv2.BORDER_CONSTANT)
        source = region
        for _ in range(factor.bit_length() - 1):  # halvings: a box mean of factor x factor
            half = (source.shape[1] // 2, source.shape[0] // 2)
            source = cv2.resize(source, half, interpolation=cv2.INTER_AREA)
        first, origin = 1.0 / factor, (float(x0), float(y0))
    matrix = crop_matrix(square, size, first, origin)
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


def log_uniform_zoom(rng: np.random.Generator, zoom: tuple[float, float]) -> float:
    """A zoom factor drawn log-uniformly in ``zoom``: 2x wider as likely as 2x narrower."""
    return math.exp(rng.uniform(math.log(zoom[0]), math.log(zoom[1])))


def wide_square(
    rng: np.random.Generator,
    landmarks_px: np.ndarray,
    margin: float,
    zoom: tuple[float, float],
) -> np.ndarray:
    """The hand's crop zoomed out by a factor drawn log-uniformly in ``zoom`` and shifted at
    random, the whole landmark box staying inside: what a finder gives when it misjudges a small
    hand (too big, slid along the arm), so the first crop pass learns to find it there too."""
    hand = crop_square(landmarks_px[None], margin)[0]
    points = np.asarray(landmarks_px, dtype=np.float64)[:, :2]
    extent = points.max(0) - points.min(0)
    side = hand[2] * log_uniform_zoom(rng, zoom)
    room = np.maximum(side - extent, 0.0) / 2  # how far the centre may move, per axis
    centre = (points.min(0) + points.max(0)) / 2 + rng.uniform(-room, room)
    return np.array([centre[0], centre[1], side])
