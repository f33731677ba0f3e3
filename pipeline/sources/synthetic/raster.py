"""Rasterising: a depth buffer of surface elements (spheres and the palm slab), seen by an
orthographic camera.

The hand's surface is a union of spheres swept along every bone (so curled fingers foreshorten and
occlude correctly) plus a rounded slab for the palm, ray-cast into the depth buffer; each element
records what shading needs to know about it (kind, bone, back-of-hand direction).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# What an element is decides its colour in shading, and whether it belongs to the hand mask.
KIND_ARM, KIND_SLEEVE, KIND_PALM, KIND_FINGER = 0, 1, 2, 3


class _Surface:
    """Front-most surface per pixel: depth, normal (camera frame, z to the viewer), element id."""

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.depth = np.full((height, width), -np.inf, dtype=np.float32)
        self.normal = np.zeros((height, width, 3), dtype=np.float32)
        self.element = np.full((height, width), -1, dtype=np.int32)
        # Layers decide before depth: the hand is drawn over its own forearm whatever the pose.
        self.layer = np.zeros((height, width), dtype=np.int8)
        self.xs = np.arange(width, dtype=np.float32)
        self.ys = np.arange(height, dtype=np.float32)

    def sphere(
        self,
        cx: float,
        cy: float,
        cz: float,
        radius: float,
        flatness: float,
        element: int,
        axis: np.ndarray | None = None,
        layer: int = 1,
    ) -> None:
        """Ray-cast an ellipsoid (a sphere squashed along the view axis) at pixel (cx, cy).

        With ``axis`` (unit, camera frame) the sphere is an inner link of a swept tube: its normal
        loses the component along the tube, so the chain of spheres shades like a smooth cylinder.
        ``Scene.sweep`` draws its tubes with ``sphere_chain``, which must equal this per sphere.
        """
        x0, x1 = _window(cx, radius, self.width)
        y0, y1 = _window(cy, radius, self.height)
        if x0 >= x1 or y0 >= y1:
            return
        dx = self.xs[x0:x1] - cx
        dy = self.ys[y0:y1, None] - cy
        lift2 = radius * radius - dx * dx - dy * dy
        lift = np.sqrt(np.maximum(lift2, 0.0))
        depth = cz + flatness * lift
        wins = (lift2 > 0) & self._in_front(depth, layer, y0, y1, x0, x1)
        if not wins.any():
            return
        self.depth[y0:y1, x0:x1][wins] = depth[wins]
        self.layer[y0:y1, x0:x1][wins] = layer
        self.element[y0:y1, x0:x1][wins] = element
        # Ellipsoid normal: the gradient of x^2 + y^2 + (z / flatness)^2; image y points down.
        normal = np.stack(np.broadcast_arrays(dx, -dy, lift / flatness), axis=-1)[wins]
        if axis is not None:
            normal -= (normal @ axis)[:, None] * axis
        normal /= np.linalg.norm(normal, axis=-1, keepdims=True) + 1e-6
        self.normal[y0:y1, x0:x1][wins] = normal

    def sphere_chain(
        self,
        cols: np.ndarray,
        rows: np.ndarray,
        depths: np.ndarray,
        radii: np.ndarray,
        flatness: float,
        element: int,
        axis: np.ndarray | None,
        inner: np.ndarray,
        layer: int = 1,
    ) -> None:
        """``sphere`` for a chain of spheres at once: the same surface as calling it for each in
        turn (``axis`` only on the ``inner`` ones), bit for bit, with a Python step per sphere
        of three array operations instead of twenty: the renderer's hottest loop (a 640x480
        render took 45 ms with one call per sphere, 36 ms with this)."""
        # Consecutive spheres overlap, so a few at a time share one window: up to 400k
        # sphere-pixels, a few MB per float64 array.
        start = 0
        while start < len(cols):
            stop = start + 1
            x0, x1 = _window(cols[start], radii[start], self.width)
            y0, y1 = _window(rows[start], radii[start], self.height)
            while stop < len(cols):
                nx0, nx1 = _window(cols[stop], radii[stop], self.width)
                ny0, ny1 = _window(rows[stop], radii[stop], self.height)
                area = (max(x1, nx1) - min(x0, nx0)) * (max(y1, ny1) - min(y0, ny0))
                if area * (stop - start + 1) > 400_000:
                    break
                x0, x1, y0, y1 = min(x0, nx0), max(x1, nx1), min(y0, ny0), max(y1, ny1)
                stop += 1
            if x0 < x1 and y0 < y1:
                self._chain_window(
                    slice(start, stop), (y0, y1, x0, x1), cols, rows, depths, radii,
                    flatness, element, axis, inner, layer,
                )  # fmt: skip
            start = stop

    def _chain_window(
        self, chunk, window, cols, rows, depths, radii, flatness, element, axis, inner, layer
    ) -> None:
        y0, y1, x0, x1 = window
        # float64 like ``sphere``, whose numpy scalars promote the float32 pixel grid.
        dx = self.xs[x0:x1][None, None, :] - cols[chunk][:, None, None]
        dy = self.ys[y0:y1][None, :, None] - rows[chunk][:, None, None]
        r = radii[chunk][:, None, None]
        lift2 = r * r - dx * dx - dy * dy
        lift = np.sqrt(np.maximum(lift2, 0.0))
        depth = depths[chunk][:, None, None] + flatness * lift
        depth = np.where(lift2 > 0, depth, -np.inf)
        # What each sphere must beat, as in ``_in_front``: a higher layer takes any pixel, a
        # lower one none, the same layer only in front of the depth stored so far (float32).
        layers = self.layer[y0:y1, x0:x1]
        beat = np.where(layers == layer, self.depth[y0:y1, x0:x1], np.float32(np.inf))
        beat[layer > layers] = -np.inf
        winner = np.full(beat.shape, -1, dtype=np.int64)
        for k in range(len(depth)):
            wins = depth[k] > beat
            np.copyto(beat, depth[k], where=wins)
            np.copyto(winner, k, where=wins)
        drawn = winner >= 0
        if not drawn.any():
            return
        ks = winner[drawn]
        pixel_rows, pixel_cols = np.nonzero(drawn)
        self.depth[y0:y1, x0:x1][drawn] = beat[drawn]
        self.layer[y0:y1, x0:x1][drawn] = layer
        self.element[y0:y1, x0:x1][drawn] = element
        normal = np.stack(
            [
                dx[ks, 0, pixel_cols],
                -dy[ks, pixel_rows, 0],
                lift[ks, pixel_rows, pixel_cols] / flatness,
            ],
            axis=-1,
        )
        if axis is not None:
            tube = inner[chunk][ks]
            along = normal[tube] @ axis
            normal[tube] -= along[:, None] * axis
        normal /= np.linalg.norm(normal, axis=-1, keepdims=True) + 1e-6
        self.normal[y0:y1, x0:x1][drawn] = normal

    def _in_front(
        self, depth: np.ndarray, layer: int, y0: int, y1: int, x0: int, x1: int
    ) -> np.ndarray:
        layers = self.layer[y0:y1, x0:x1]
        return (layer > layers) | ((layer == layers) & (depth > self.depth[y0:y1, x0:x1]))

    def slab(
        self,
        outline_px: np.ndarray,
        plane_point: np.ndarray,
        plane_normal: np.ndarray,
        half_thickness_px: float,
        element: int,
    ) -> None:
        """A flat plate with rounded rims: the palm or the back of the hand, seen from the front."""
        x0, y0 = np.floor(outline_px.min(axis=0)).astype(int) - 2
        x1, y1 = np.ceil(outline_px.max(axis=0)).astype(int) + 3
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, self.width), min(y1, self.height)
        if x0 >= x1 or y0 >= y1:
            return
        # Draw in a padded local frame so the distance transform sees the true rim even at borders.
        pad = int(half_thickness_px) + 2
        local = np.zeros((y1 - y0 + 2 * pad, x1 - x0 + 2 * pad), dtype=np.uint8)
        points = np.round((outline_px - (x0 - pad, y0 - pad)) * 16).astype(np.int32)
        cv2.fillPoly(local, [points], 1, lineType=cv2.LINE_8, shift=4)
        distance = cv2.distanceTransform(local, cv2.DIST_L2, 5)[pad:-pad, pad:-pad]
        inside = local[pad:-pad, pad:-pad] > 0
        rim = np.minimum(distance / max(half_thickness_px, 1e-3), 1.0)
        bulge = half_thickness_px * np.sqrt(1.0 - (1.0 - rim) ** 2)
        nz = plane_normal[2] if abs(plane_normal[2]) > 0.15 else np.copysign(0.15, plane_normal[2])
        xx = self.xs[x0:x1] - plane_point[0]
        yy = -(self.ys[y0:y1, None] - plane_point[1])
        depth = plane_point[2] - (plane_normal[0] * xx + plane_normal[1] * yy) / nz + bulge
        wins = inside & self._in_front(depth, 1, y0, y1, x0, x1)
        if not wins.any():
            return
        self.depth[y0:y1, x0:x1][wins] = depth[wins]
        self.layer[y0:y1, x0:x1][wins] = 1
        self.element[y0:y1, x0:x1][wins] = element
        slope_row, slope_col = np.gradient(depth.astype(np.float32))
        normal = np.stack([-slope_col, slope_row, np.ones_like(depth)], axis=-1)[wins]
        normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
        self.normal[y0:y1, x0:x1][wins] = normal


def _window(centre: float, radius: float, size: int) -> tuple[int, int]:
    """The pixel range ``sphere`` scans for a sphere at ``centre`` along one axis."""
    return max(int(centre - radius), 0), min(int(centre + radius) + 2, size)


@dataclass
class _ElementTable:
    """What shading needs to know about each surface element, indexed by element id."""

    kind: list[int]
    dorsal: list[np.ndarray]  # camera frame
    bone_start: list[np.ndarray]  # camera frame, pixels
    bone_axis: list[np.ndarray]  # unit, camera frame
    bone_length: list[float]  # pixels
    segment: list[int]

    def add(self, kind: int, dorsal, start, axis, length: float, segment: int) -> int:
        self.kind.append(kind)
        self.dorsal.append(np.asarray(dorsal, dtype=np.float64))
        self.bone_start.append(np.asarray(start, dtype=np.float64))
        self.bone_axis.append(np.asarray(axis, dtype=np.float64))
        self.bone_length.append(float(length))
        self.segment.append(segment)
        return len(self.kind) - 1


@dataclass(frozen=True)
class Camera:
    """Orthographic camera: hand frame (cm) -> camera frame (pixels; x right, y up, z to the
    viewer) -> image pixels (x right, y down)."""

    rotation: np.ndarray  # camera-from-hand, includes the mirror of a left hand
    px_per_cm: float
    offset: np.ndarray  # image position of the wrist

    def to_camera(self, points_cm: np.ndarray) -> np.ndarray:
        return (np.asarray(points_cm) @ self.rotation.T) * self.px_per_cm

    def to_image(self, points_camera: np.ndarray) -> np.ndarray:
        points_camera = np.atleast_2d(points_camera)
        return np.column_stack(
            [self.offset[0] + points_camera[:, 0], self.offset[1] - points_camera[:, 1]]
        )

    def image_to_camera(self, cols: np.ndarray, rows: np.ndarray, depth: np.ndarray) -> np.ndarray:
        return np.column_stack([cols - self.offset[0], self.offset[1] - rows, depth])


class Scene:
    """The surface being built and what shading must know about each of its elements."""

    def __init__(self, camera: Camera, width: int, height: int):
        self.camera = camera
        self.surface = _Surface(width, height)
        self.table = _ElementTable([], [], [], [], [], [])

    def sweep(
        self,
        start_cm: np.ndarray,
        end_cm: np.ndarray,
        radii_cm: tuple[float, float],
        kind: int,
        dorsal_cm: np.ndarray,
        segment: int = -1,
        flatness: float = 1.0,
        layer: int = 1,
        trim_end_cm: float = 0.0,
    ) -> None:
        """A tapered tube from ``start_cm`` to ``end_cm`` (hand frame) as a dense chain of spheres.

        ``trim_end_cm`` stops the chain short of the end, so the rounded cap ends just past it.
        """
        camera = self.camera
        start, end = camera.to_camera(start_cm), camera.to_camera(end_cm)
        axis = end - start
        length = float(np.linalg.norm(axis))
        axis = axis / max(length, 1e-6)
        dorsal = camera.rotation @ np.asarray(dorsal_cm, dtype=np.float64)
        element = self.table.add(kind, dorsal, start, axis, length, segment)
        r0, r1 = radii_cm[0] * camera.px_per_cm, radii_cm[1] * camera.px_per_cm
        drawn = max(length - trim_end_cm * camera.px_per_cm, 0.0)
        # Spheres closer than a third of their radius leave no visible ripple in the outline.
        count = int(np.ceil(drawn / max(min(r0, r1) * 0.3, 0.5))) + 1
        t = np.linspace(0.0, 1.0, count)
        centres = start + axis * drawn * t[:, None]
        radii = r0 + (r1 - r0) * t * drawn / max(length, 1e-6)
        pixels = camera.to_image(centres)
        inner = (0.0 < t) & (t < 1.0) & (length > 0)
        self.surface.sphere_chain(
            pixels[:, 0], pixels[:, 1], centres[:, 2], radii, flatness, element, axis, inner, layer
        )
