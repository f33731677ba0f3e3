"""Pictures a person can judge: skeletons over photos, tiled into a grid."""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.keypoints import CONNECTIONS

# RGB colours; teacher in green, student in magenta, truth in yellow.
COLOURS = {"teacher": (40, 220, 40), "student": (230, 40, 230), "truth": (250, 220, 0)}


def draw_skeleton(
    rgb: np.ndarray, points_px: np.ndarray, colour: tuple[int, int, int], thickness: int = 2
) -> np.ndarray:
    """Draw bones and joints of one hand, (joints, 2) pixels, on a copy of ``rgb``."""
    canvas = rgb.copy()
    points = np.round(np.asarray(points_px, dtype=np.float64)).astype(int)
    for parent, child in CONNECTIONS:
        cv2.line(
            canvas, tuple(points[parent]), tuple(points[child]), colour, thickness, cv2.LINE_AA
        )
    for point in points:
        cv2.circle(canvas, tuple(point), thickness + 1, colour, -1, cv2.LINE_AA)
    return canvas


def fit_width(rgb: np.ndarray, width: int) -> tuple[np.ndarray, float]:
    scale = width / rgb.shape[1]
    size = (width, max(1, round(rgb.shape[0] * scale)))
    return cv2.resize(
        rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    ), scale


def overlay_tile(
    rgb: np.ndarray,
    hands: dict[str, np.ndarray],
    caption: str,
    width: int = 320,
    boxes: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """One photo scaled to ``width`` with each named hand (pixels of the original) drawn on it,
    and each named box (x_min, y_min, x_max, y_max in pixels of the original)."""
    tile, scale = fit_width(rgb, width)
    for name, corners in (boxes or {}).items():
        low, high = np.round(np.asarray(corners) * scale).astype(int).reshape(2, 2)
        cv2.rectangle(tile, tuple(low), tuple(high), COLOURS[name], 1, cv2.LINE_AA)
    for name, points in hands.items():
        if not np.isfinite(np.asarray(points, dtype=np.float64)[:, :2]).all():
            continue
        limit = 4 * max(rgb.shape[:2])  # OpenCV wants ints; keep wild predictions drawable
        points = np.clip(np.asarray(points, dtype=np.float64)[:, :2], -limit, limit)
        tile = draw_skeleton(tile, points * scale, COLOURS[name])
    cv2.rectangle(tile, (0, 0), (tile.shape[1], 18), (0, 0, 0), -1)
    cv2.putText(
        tile, caption, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA
    )
    return tile


def grid(tiles: list[np.ndarray], columns: int = 4, legend: str = "") -> np.ndarray:
    """Tile images (padded to the largest) row by row, with a legend line on top."""
    height = max(t.shape[0] for t in tiles)
    width = max(t.shape[1] for t in tiles)
    rows = -(-len(tiles) // columns)
    canvas = np.full((rows * height + 24, columns * width, 3), 255, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        canvas[
            24 + r * height : 24 + r * height + tile.shape[0], c * width : c * width + tile.shape[1]
        ] = tile
    cv2.putText(canvas, legend, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas
