"""A procedural renderer of OUHANDS-like hand photos whose 21 joint positions are known exactly.

A kinematic hand (palm, metacarpal heads, phalanges with flexion per joint) is posed in 3D from a
gesture's curl pattern, rotated, and projected with an orthographic camera; the truth landmarks are
the projections of the joint centres. The surface is a union of spheres swept along every bone
(so curled fingers foreshorten and occlude correctly) plus a rounded slab for the palm, ray-cast
into a depth buffer and shaded (wrap-around diffuse light, specular, ambient occlusion from the
depth buffer, lighter palmar skin, nails, creases). A forearm runs to the image border because
MediaPipe's palm detector relies on the wrist's context.

``write_synthetic_dataset`` writes the OUHANDS layout (see ``pipeline.sources.ouhands``) with a
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
from pipeline.keypoints import FINGERS, NUM_JOINTS, WRIST, column_names

GESTURE_CLASSES: tuple[str, ...] = ("A", "B", "C", "D", "E", "F", "H", "I", "J", "K")

TRAIN_HAND_DIR = Path("OUHANDS_train/train/hand_data")
TEST_HAND_DIR = Path("OUHANDS_test/test/hand_data")
LISTS_DIR = Path("OUHANDS_train/data_split_for_intermediate_tests")
TRUTH_FILE = "true_landmarks.csv"


@dataclass(frozen=True)
class SyntheticSettings:
    num_images: int = 600  # total over train + validation + test
    width: int = 640
    height: int = 480
    seed: int = 0
    num_subjects: int = 12  # each has its own skin tone and hand proportions
    test_fraction: float = 0.2  # fraction of SUBJECTS held out for the test set
    validation_fraction: float = 0.2  # fraction of the remaining train images listed for validation

    def __post_init__(self) -> None:
        if self.num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {self.num_images}")
        if self.width < 64 or self.height < 64:
            raise ValueError(f"images must be at least 64x64, got {self.width}x{self.height}")
        if self.num_subjects < 2:
            raise ValueError(
                f"num_subjects must be >= 2 (train and test need their own), "
                f"got {self.num_subjects}"
            )
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(
                f"validation_fraction must be in [0, 1), got {self.validation_fraction}"
            )


@dataclass(frozen=True)
class SubjectStyle:
    """What stays the same across one person's photos: skin, proportions, clothing."""

    name: str  # e.g. "s03"
    skin_rgb: tuple[float, float, float]  # back of the hand, linear 0..1
    palm_rgb: tuple[float, float, float]  # palmar skin is lighter and pinker, most so on dark skin
    nail_rgb: tuple[float, float, float]
    sleeve_rgb: tuple[float, float, float]
    bare_arm: bool  # True: no sleeve in sight
    finger_length: float  # multiplies the finger bone lengths
    palm_width: float  # multiplies the palm's width
    thickness: float  # multiplies finger and forearm radii


@dataclass
class RenderedHand:
    image: np.ndarray  # (height, width, 3) uint8 RGB
    landmarks_px: np.ndarray  # (NUM_JOINTS, 2) float64, true joint centres, pixels, y down
    handedness: str  # "Left" or "Right", as MediaPipe labels the hand in the image
    box_xywh: tuple[int, int, int, int]  # tight box of the drawn hand in pixels
    hand_mask: np.ndarray  # (height, width) bool, True where the hand is drawn


# ---------------------------------------------------------------------------------------------
# Hand geometry (centimetres; hand frame: x towards the thumb of a right hand, y from wrist to
# fingers, z out of the palm). The wrist joint is the origin.
# ---------------------------------------------------------------------------------------------

# Metacarpal heads (MCP joint centres) and the splay of each finger, degrees towards the thumb.
MCP_CM: dict[str, tuple[float, float, float]] = {
    "index": (2.4, 8.2, 0.25),
    "middle": (0.45, 8.55, 0.0),
    "ring": (-1.5, 8.2, 0.15),
    "pinky": (-3.2, 7.4, 0.45),
}
SPLAY_DEG: dict[str, float] = {"index": 6.0, "middle": 0.0, "ring": -6.0, "pinky": -13.0}
# Proximal, middle and distal phalanx (the last to the fingertip landmark).
PHALANX_CM: dict[str, tuple[float, float, float]] = {
    "thumb": (4.0, 3.2, 2.8),  # metacarpal (CMC to MCP), proximal, distal
    "index": (3.9, 2.3, 2.1),
    "middle": (4.4, 2.7, 2.2),
    "ring": (4.1, 2.6, 2.2),
    "pinky": (3.2, 1.9, 1.9),
}
# Radii at the base of the finger and at the tip.
RADIUS_CM: dict[str, tuple[float, float]] = {
    "thumb": (1.25, 0.85),
    "index": (0.92, 0.72),
    "middle": (0.95, 0.74),
    "ring": (0.88, 0.70),
    "pinky": (0.78, 0.60),
}
THUMB_CMC_CM = (2.2, 2.1, 0.9)
PALM_HALF_THICKNESS_CM = 1.35
FOREARM_RADIUS_CM = (2.7, 3.3)  # at the wrist and 20 cm up the arm
FOREARM_FLATNESS = 0.62  # a forearm is wider than it is thick
# The palm's outline in the z = 0 plane, counter-clockwise from the ulnar side of the wrist. It
# reaches below the wrist joint so that the wrist landmark lies on the drawn hand.
PALM_OUTLINE_CM = np.array(
    [
        (-2.7, -1.06), (-3.3, 1.32), (-3.8, 3.96), (-4.05, 6.42), (-3.95, 7.83), (-3.4, 8.54),
        (-2.4, 8.8), (-1.5, 9.2), (-0.55, 9.28), (0.45, 9.59), (1.45, 9.46), (2.4, 9.28),
        (3.25, 8.8), (3.5, 7.57), (3.45, 6.16), (3.2, 4.75), (2.9, 3.17), (2.7, 1.32), (2.5, -1.06),
    ]
)  # fmt: skip


@dataclass(frozen=True)
class FingerCurl:
    """Flexion at a finger's three joints and its spread (+ towards the thumb), in degrees."""

    mcp: float
    pip: float
    dip: float
    spread: float = 0.0


@dataclass(frozen=True)
class ThumbPose:
    """Thumb metacarpal direction (abduction from the index, lift out of the palm) and flexion."""

    abduction: float  # degrees away from the index finger, in the palm plane
    lift: float  # degrees out of the palm plane, towards the palmar side
    mcp: float  # flexion at the thumb MCP joint, curling towards the little finger
    ip: float


@dataclass(frozen=True)
class Gesture:
    fingers: dict[str, FingerCurl]
    thumb: ThumbPose


_STRAIGHT = FingerCurl(4, 4, 2)
_FIST = FingerCurl(82, 100, 55)
_TUCKED = FingerCurl(70, 95, 50)

GESTURES: dict[str, Gesture] = {
    # A: fist, thumb resting up along the side of the index finger.
    "A": Gesture({f: _FIST for f in ("index", "middle", "ring", "pinky")}, ThumbPose(14, 25, 8, 8)),
    # B: flat hand, fingers together, thumb folded across the palm.
    "B": Gesture(
        {
            "index": FingerCurl(3, 3, 2, -3),
            "middle": FingerCurl(3, 3, 2, 0),
            "ring": FingerCurl(3, 3, 2, 3),
            "pinky": FingerCurl(4, 4, 2, 5),
        },
        ThumbPose(22, 48, 42, 30),
    ),
    # C: every finger half curled, the thumb opposite them.
    "C": Gesture(
        {f: FingerCurl(30, 45, 25) for f in ("index", "middle", "ring", "pinky")},
        ThumbPose(42, 45, 12, 15),
    ),
    # D: index finger up, the others curled onto the thumb.
    "D": Gesture(
        {"index": _STRAIGHT, "middle": _TUCKED, "ring": _TUCKED, "pinky": _TUCKED},
        ThumbPose(26, 52, 40, 28),
    ),
    # E: fingers bent at the middle joints, tips resting on the folded thumb.
    "E": Gesture(
        {f: FingerCurl(28, 98, 70) for f in ("index", "middle", "ring", "pinky")},
        ThumbPose(18, 50, 50, 38),
    ),
    # F: thumb and index finger make a ring ("OK"), the other three spread up.
    "F": Gesture(
        {
            "index": FingerCurl(48, 62, 38, 2),
            "middle": FingerCurl(4, 4, 2, 0),
            "ring": FingerCurl(4, 4, 2, -6),
            "pinky": FingerCurl(5, 4, 2, -10),
        },
        ThumbPose(30, 52, 22, 22),
    ),
    # H: index and middle finger together, the others curled, thumb over them.
    "H": Gesture(
        {"index": FingerCurl(4, 4, 2, -2), "middle": _STRAIGHT, "ring": _FIST, "pinky": _FIST},
        ThumbPose(22, 50, 45, 30),
    ),
    # I: little finger up, the rest a fist with the thumb across it.
    "I": Gesture(
        {"index": _FIST, "middle": _FIST, "ring": _FIST, "pinky": FingerCurl(4, 4, 2, -4)},
        ThumbPose(22, 50, 45, 30),
    ),
    # J: thumb and little finger out ("call me"), the rest curled.
    "J": Gesture(
        {"index": _FIST, "middle": _FIST, "ring": _FIST, "pinky": FingerCurl(4, 4, 2, -12)},
        ThumbPose(58, 18, 4, 6),
    ),
    # K: index and middle finger spread in a V, thumb up between them.
    "K": Gesture(
        {
            "index": FingerCurl(4, 4, 2, 9),
            "middle": FingerCurl(4, 4, 2, -7),
            "ring": _FIST,
            "pinky": _FIST,
        },
        ThumbPose(32, 40, 15, 10),
    ),
}


def _rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    """Rodrigues: rotation by ``degrees`` about the unit vector ``axis`` (right-hand rule)."""
    axis = axis / np.linalg.norm(axis)
    angle = np.radians(degrees)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def _euler(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Camera-from-hand rotation: yaw about y, then pitch about x, then roll in the image plane."""
    x, y, z = np.eye(3)
    return _rotation(z, roll) @ _rotation(x, pitch) @ _rotation(y, yaw)


@dataclass
class _Bone:
    """One segment of a finger in hand coordinates, with the frame that shading needs."""

    start: np.ndarray  # (3,) cm
    end: np.ndarray
    dorsal: np.ndarray  # unit vector from the bone to the back of the finger
    radius: tuple[float, float]  # at start and end
    finger: str
    segment: int  # 0 proximal (metacarpal for the thumb), 1 middle, 2 distal


def _finger_chain(
    base: np.ndarray,
    direction: np.ndarray,
    bend_towards: np.ndarray,
    lengths: tuple[float, float, float],
    flexions: tuple[float, float, float],
    radii: tuple[float, float],
    finger: str,
) -> tuple[list[np.ndarray], list[_Bone]]:
    """Joint centres from ``base`` out; each flexion turns the rest towards ``bend_towards``."""
    bend_towards = bend_towards - direction * (bend_towards @ direction)
    bend_towards /= np.linalg.norm(bend_towards)
    axis = np.cross(direction, bend_towards)
    joints, bones = [base], []
    total = sum(lengths)
    along = 0.0
    angle = 0.0
    for segment, (length, flexion) in enumerate(zip(lengths, flexions)):
        angle += flexion
        turn = _rotation(axis, angle)
        start = joints[-1]
        end = start + turn @ direction * length
        r0 = radii[0] + (radii[1] - radii[0]) * along / total
        along += length
        r1 = radii[0] + (radii[1] - radii[0]) * along / total
        bones.append(_Bone(start, end, -(turn @ bend_towards), (r0, r1), finger, segment))
        joints.append(end)
    return joints, bones


def _pose_hand(
    gesture: Gesture, style: SubjectStyle, rng: np.random.Generator
) -> tuple[np.ndarray, list[_Bone]]:
    """The 21 joint centres (hand frame, cm) and the bones, with per-photo jitter on every angle."""
    joints = np.zeros((NUM_JOINTS, 3))
    bones: list[_Bone] = []
    z_axis = np.array([0.0, 0.0, 1.0])
    for finger, curl in gesture.fingers.items():
        mcp = np.array(MCP_CM[finger]) * (style.palm_width, 1.0, 1.0)
        splay = SPLAY_DEG[finger] + curl.spread + rng.normal(0, 2.5)
        direction = np.array([np.sin(np.radians(splay)), np.cos(np.radians(splay)), 0.0])
        flexions = tuple(
            float(np.clip(f + rng.normal(0, 6), -8, 115)) for f in (curl.mcp, curl.pip, curl.dip)
        )
        lengths = tuple(length * style.finger_length for length in PHALANX_CM[finger])
        radii = tuple(r * style.thickness for r in RADIUS_CM[finger])
        chain, finger_bones = _finger_chain(
            mcp, direction, z_axis, lengths, flexions, radii, finger
        )
        joints[list(FINGERS[finger])] = chain
        bones += finger_bones
    thumb = gesture.thumb
    abduction = thumb.abduction + rng.normal(0, 5)
    lift = thumb.lift + rng.normal(0, 5)
    a, b = np.radians(abduction), np.radians(lift)
    direction = np.array([np.sin(a) * np.cos(b), np.cos(a) * np.cos(b), np.sin(b)])
    # The thumb's flexion curls it across the palm towards the little finger.
    bend = np.array([-0.8, -0.15, 0.75])
    cmc = np.array(THUMB_CMC_CM) * (style.palm_width, 1.0, 1.0)
    flexions = (0.0, thumb.mcp + rng.normal(0, 6), thumb.ip + rng.normal(0, 6))
    lengths = tuple(length * style.finger_length for length in PHALANX_CM["thumb"])
    radii = tuple(r * style.thickness for r in RADIUS_CM["thumb"])
    chain, thumb_bones = _finger_chain(cmc, direction, bend, lengths, flexions, radii, "thumb")
    joints[list(FINGERS["thumb"])] = chain
    bones += thumb_bones
    joints[WRIST] = 0.0
    return joints, bones


# ---------------------------------------------------------------------------------------------
# Rasterising: a depth buffer of surface elements (spheres and the palm slab).
# ---------------------------------------------------------------------------------------------

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
        """
        x0, x1 = max(int(cx - radius), 0), min(int(cx + radius) + 2, self.width)
        y0, y1 = max(int(cy - radius), 0), min(int(cy + radius) + 2, self.height)
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


# ---------------------------------------------------------------------------------------------
# Subjects, backgrounds, rendering.
# ---------------------------------------------------------------------------------------------

# Real skin tones from very light to very dark (sRGB); a subject picks a point along this ramp.
SKIN_RAMP = np.array(
    [(250, 222, 200), (238, 196, 168), (226, 176, 140), (200, 144, 106), (170, 112, 78),
     (130, 84, 58), (96, 62, 44), (72, 48, 36)],
    dtype=np.float64,
) / 255.0  # fmt: skip
SLEEVE_COLOURS = np.array(
    [(30, 30, 35), (200, 200, 205), (40, 60, 120), (120, 30, 40), (60, 90, 60), (150, 120, 90),
     (230, 230, 225), (90, 90, 100), (20, 40, 70), (170, 60, 40)],
    dtype=np.float64,
) / 255.0  # fmt: skip


def make_subject_styles(rng: np.random.Generator, num_subjects: int) -> list[SubjectStyle]:
    """One style per person, named s01, s02, ...; skin tones spread over the whole ramp."""
    # Stratified tones, so even a handful of subjects covers light to dark skin.
    tones = (np.arange(num_subjects) + rng.uniform(0, 1, num_subjects)) / num_subjects
    tones = rng.permutation(tones)
    styles = []
    for index, tone in enumerate(tones):
        position = tone * (len(SKIN_RAMP) - 1)
        low = int(np.floor(position))
        high = min(low + 1, len(SKIN_RAMP) - 1)
        skin = SKIN_RAMP[low] + (SKIN_RAMP[high] - SKIN_RAMP[low]) * (position - low)
        skin = np.clip(skin * rng.uniform(0.95, 1.05, 3), 0.0, 1.0)
        palm_target = np.array([0.93, 0.72, 0.64])
        palm = skin + (palm_target - skin) * (0.15 + 0.35 * tone)
        nail = np.clip(0.55 * palm + 0.45 * np.array([0.95, 0.85, 0.82]), 0.0, 1.0)
        sleeve = np.clip(
            SLEEVE_COLOURS[rng.integers(len(SLEEVE_COLOURS))] * rng.uniform(0.8, 1.2, 3), 0, 1
        )
        styles.append(
            SubjectStyle(
                name=f"s{index + 1:02d}",
                skin_rgb=tuple(float(v) for v in skin),
                palm_rgb=tuple(float(v) for v in palm),
                nail_rgb=tuple(float(v) for v in nail),
                sleeve_rgb=tuple(float(v) for v in sleeve),
                bare_arm=bool(rng.random() < 0.35),
                finger_length=float(rng.uniform(0.92, 1.08)),
                palm_width=float(rng.uniform(0.93, 1.07)),
                thickness=float(rng.uniform(0.9, 1.1)),
            )
        )
    return styles


def _room_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """An indoor scene: a lit wall, furniture and frames, a few objects, texture; float RGB 0..1."""
    base = rng.uniform(0.25, 0.85) * np.clip(rng.normal(1.0, 0.12, 3), 0.6, 1.4)
    ys = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    xs = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    gx, gy = rng.uniform(-0.35, 0.35, 2)
    wall = np.clip(base * (1.0 + gx * (xs - 0.5) + gy * (ys - 0.5)), 0, 1).astype(np.float32)
    image = np.broadcast_to(wall, (height, width, 3)).copy()
    scale = min(width, height)

    def muted(low: float = 0.05, high: float = 0.95) -> tuple[float, ...]:
        # Rooms are mostly greys, browns and faded paint, with the odd bright object.
        colour = rng.uniform(low, high, 3)
        saturation = rng.uniform(0.1, 0.5) if rng.random() < 0.8 else 1.0
        return tuple(float(c) for c in colour.mean() + (colour - colour.mean()) * saturation)

    for _ in range(rng.integers(3, 9)):  # doors, shelves, posters, windows, a monitor
        colour = muted()
        x, y = rng.uniform(-0.2, 1.0) * width, rng.uniform(-0.2, 1.0) * height
        w, h = rng.uniform(0.08, 0.6) * scale, rng.uniform(0.08, 0.8) * scale
        corners = (int(x), int(y)), (int(x + w), int(y + h))
        cv2.rectangle(image, *corners, colour, thickness=-1)
        if rng.random() < 0.5:
            edge = tuple(c * 0.6 for c in colour)
            cv2.rectangle(image, *corners, edge, thickness=int(rng.integers(2, 7)))
    for _ in range(rng.integers(2, 7)):  # plants, lamps, clutter
        colour = muted()
        centre = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        axes = (int(rng.uniform(0.02, 0.15) * scale), int(rng.uniform(0.02, 0.15) * scale))
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
    for _ in range(rng.integers(1, 5)):  # cables, edges of tables
        colour = muted(0.0, 0.9)
        p0 = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        p1 = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        cv2.line(image, p0, p1, colour, int(rng.integers(1, 6)))
    # Low-frequency blotches (uneven light, textures) and a little defocus: the hand is in focus.
    coarse = rng.normal(0, 0.05, (max(height // 32, 2), max(width // 32, 2), 1)).astype(np.float32)
    image += cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)[:, :, None]
    sigma = rng.uniform(0.8, 2.5) * scale / 480
    image = cv2.GaussianBlur(image, (0, 0), sigma)
    return np.clip(image, 0, 1)


def _palm_crease_texture(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Palm lines in palm coordinates (cm), looked up at each palm pixel; 1 means no crease."""
    cells_per_cm = 12.0
    texture = np.ones((int(16 * cells_per_cm), int(10 * cells_per_cm)), dtype=np.float32)

    def to_cells(points_cm):
        return np.round((np.asarray(points_cm) + (5.0, 2.0)) * cells_per_cm * 16).astype(np.int32)

    jitter = rng.normal(0, 0.2, (3, 2))
    lines = [
        [(-3.8, 7.6), (-1.5, 8.2), (0.5, 8.5), (1.8, 9.4)],  # heart line
        [(3.2, 7.6), (1.0, 6.9), (-1.5, 6.1), (-3.4, 5.2)],  # head line
        [(3.1, 7.3), (2.0, 5.8), (1.4, 3.6), (1.2, 1.0)],  # life line
    ]
    for line, shift in zip(lines, jitter):
        cv2.polylines(texture, [to_cells(np.array(line) + shift)], False, 0.72, 2, cv2.LINE_AA, 4)
    cv2.polylines(texture, [to_cells([(-2.6, 0.3), (2.3, 0.3)])], False, 0.8, 2, cv2.LINE_AA, 4)
    return cv2.GaussianBlur(texture, (0, 0), 1.0), cells_per_cm


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass(frozen=True)
class _Camera:
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


class _Scene:
    """The surface being built and what shading must know about each of its elements."""

    def __init__(self, camera: _Camera, width: int, height: int):
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
        for t in np.linspace(0.0, 1.0, count):
            centre = start + axis * drawn * t
            radius = r0 + (r1 - r0) * t * drawn / max(length, 1e-6)
            col, row = camera.to_image(centre)[0]
            inner = 0.0 < t < 1.0 and length > 0
            tube_axis = axis if inner else None
            self.surface.sphere(col, row, centre[2], radius, flatness, element, tube_axis, layer)


def _place_hand(
    rng: np.random.Generator,
    joints_cm: np.ndarray,
    rotation: np.ndarray,
    px_per_cm: float,
    width: int,
    height: int,
) -> _Camera:
    """A camera that shows every joint, with a fingertip's width to spare, at a random position."""
    centred = _Camera(rotation, px_per_cm, np.zeros(2))
    joints = centred.to_camera(joints_cm)
    margin = 1.2 * px_per_cm + 4
    low = np.array([-joints[:, 0].min(), joints[:, 1].max()]) + margin
    high = np.array([width - joints[:, 0].max(), height + joints[:, 1].min()]) - margin
    if np.any(high < low):
        high = low = (low + high) / 2  # the hand barely fits: centre it
    return _Camera(rotation, px_per_cm, rng.uniform(low, high))


def render_hand(
    rng: np.random.Generator,
    gesture: str,
    subject_style: SubjectStyle,
    width: int = 640,
    height: int = 480,
) -> RenderedHand:
    """One photo of ``subject_style``'s hand showing ``gesture``, with the true joint positions."""
    if gesture not in GESTURES:
        raise ValueError(f"unknown gesture {gesture!r}; expected one of {GESTURE_CLASSES}")
    style = subject_style
    joints_cm, bones = _pose_hand(GESTURES[gesture], style, rng)

    # A left hand is a mirrored right hand; the back of the hand shows after a half turn about
    # the hand's long axis.
    is_left = bool(rng.random() < 0.5)
    shows_back = bool(rng.random() < 0.3)
    mirror = np.diag([-1.0 if is_left else 1.0, 1.0, 1.0])
    yaw = rng.uniform(-25, 25) + (180.0 if shows_back else 0.0)
    rotation = _euler(rng.uniform(-30, 30), rng.uniform(-20, 15), yaw) @ mirror
    # MediaPipe names a hand by how it looks in the picture: the right hand built here (thumb on
    # the image's right while the palm faces the camera) it calls "Right" (checked on renders).
    handedness = "Left" if is_left else "Right"
    hand_length_cm = MCP_CM["middle"][1] + sum(PHALANX_CM["middle"]) * style.finger_length
    px_per_cm = rng.uniform(0.35, 0.62) * height / hand_length_cm
    camera = _place_hand(rng, joints_cm, rotation, px_per_cm, width, height)
    scene = _Scene(camera, width, height)
    back_of_hand = np.array([0.0, 0.0, -1.0])

    # The forearm runs out of the picture; pushed back and drawn on a lower layer, it never
    # covers the hand.
    wrist_bend = _rotation(np.array([0.0, 0.0, 1.0]), rng.normal(0, 10)) @ _rotation(
        np.array([1.0, 0.0, 0.0]), rng.normal(0, 10)
    )
    arm_direction = wrist_bend @ np.array([0.0, -1.0, 0.0])
    arm_length = 80.0
    bare_length = arm_length if style.bare_arm else rng.uniform(6.0, 22.0)
    r_wrist, r_elbow = (r * style.thickness * style.palm_width for r in FOREARM_RADIUS_CM)
    r_sleeve = r_wrist + (r_elbow - r_wrist) * min(bare_length / 20.0, 1.0)
    arm = {"dorsal_cm": back_of_hand, "layer": 0}
    pushed_back = np.array([0.0, 0.0, -0.6]) @ rotation  # 6 mm away from the camera
    scene.sweep(
        pushed_back,
        arm_direction * bare_length + pushed_back,
        (r_wrist, r_sleeve),
        KIND_ARM,
        flatness=FOREARM_FLATNESS,
        **arm,
    )
    if bare_length < arm_length:
        scene.sweep(
            arm_direction * bare_length + pushed_back,
            arm_direction * arm_length + pushed_back,
            (r_sleeve * 1.25, r_elbow * 1.35),
            KIND_SLEEVE,
            flatness=0.8,
            **arm,
        )

    # The palm plate, the knuckles on its back, the ball of the thumb, then the digits.
    outline_cm = np.column_stack(
        [
            PALM_OUTLINE_CM[:, 0] * style.palm_width,
            PALM_OUTLINE_CM[:, 1],
            np.zeros(len(PALM_OUTLINE_CM)),
        ]
    )
    palm_element = scene.table.add(
        KIND_PALM, rotation @ back_of_hand, np.zeros(3), np.zeros(3), 0.0, -1
    )
    palm_centre = camera.to_camera(np.array([0.0, 5.0, 0.0]))
    plane_point = np.array([*camera.to_image(palm_centre)[0], palm_centre[2]])
    palm_normal = rotation @ np.array([0.0, 0.0, 1.0])
    scene.surface.slab(
        camera.to_image(camera.to_camera(outline_cm)),
        plane_point,
        palm_normal if palm_normal[2] >= 0 else -palm_normal,
        PALM_HALF_THICKNESS_CM * px_per_cm,
        palm_element,
    )
    for finger in ("index", "middle", "ring", "pinky"):
        knuckle = joints_cm[FINGERS[finger][0]] + np.array([0.0, -0.2, -0.75])
        scene.sweep(knuckle, knuckle, (1.0, 1.0), KIND_PALM, back_of_hand)
    thumb_cmc, thumb_mcp = joints_cm[list(FINGERS["thumb"][:2])]
    scene.sweep(
        thumb_cmc - np.array([0.6, 0.9, 0.3]),
        0.6 * thumb_mcp + 0.4 * thumb_cmc,
        (1.55, 1.35),
        KIND_PALM,
        back_of_hand,
    )
    for bone in bones:
        # The fingertip landmark sits just inside the rounded end of the finger.
        trim = 0.7 * bone.radius[1] if bone.segment == 2 else 0.0
        scene.sweep(
            bone.start,
            bone.end,
            bone.radius,
            KIND_FINGER,
            bone.dorsal,
            bone.segment,
            trim_end_cm=trim,
        )

    image, hand_mask = _shade(rng, scene, style)
    covered = (scene.surface.element >= 0).astype(np.float32)
    # Soft edges: premultiplied colour and coverage blurred alike, then composited.
    alpha = cv2.GaussianBlur(covered, (0, 0), 0.6)[:, :, None]
    premultiplied = cv2.GaussianBlur(image * covered[:, :, None], (0, 0), 0.6)
    photo = _room_background(rng, width, height) * (1 - alpha) + premultiplied
    photo = _camera_effects(rng, photo)

    rows, cols = np.nonzero(hand_mask)
    x, y = int(cols.min()), int(rows.min())
    box = (x, y, int(cols.max()) - x + 1, int(rows.max()) - y + 1)
    return RenderedHand(
        image=photo,
        landmarks_px=camera.to_image(camera.to_camera(joints_cm)).astype(np.float64),
        handedness=handedness,
        box_xywh=box,
        hand_mask=hand_mask,
    )


def _shade(
    rng: np.random.Generator, scene: _Scene, style: SubjectStyle
) -> tuple[np.ndarray, np.ndarray]:
    """Colour of every covered pixel (float RGB) and the mask of hand (not arm) pixels."""
    surface, table, camera = scene.surface, scene.table, scene.camera
    height, width = surface.depth.shape
    image = np.zeros((height, width, 3), dtype=np.float32)
    covered = surface.element >= 0
    ids = surface.element[covered]
    normal = surface.normal[covered].astype(np.float64)
    kind = np.asarray(table.kind)[ids]
    dorsal = np.asarray(table.dorsal)[ids]
    rows, cols = np.nonzero(covered)
    points = camera.image_to_camera(cols, rows, surface.depth[covered].astype(np.float64))

    # Back of the hand vs palmar skin, blended across the side of each finger.
    backness = _smoothstep(-0.25, 0.25, np.einsum("ij,ij->i", normal, dorsal))
    skin, palm = np.asarray(style.skin_rgb), np.asarray(style.palm_rgb)
    albedo = palm + (skin - palm) * backness[:, None]
    sleeve = kind == KIND_SLEEVE
    albedo[sleeve] = style.sleeve_rgb
    shine = np.full(len(ids), 0.09)
    shine[sleeve] = 0.02

    # Creases and nails from each pixel's position along its bone.
    is_finger = kind == KIND_FINGER
    start = np.asarray(table.bone_start)[ids]
    along = np.einsum("ij,ij->i", points - start, np.asarray(table.bone_axis)[ids])
    length = np.asarray(table.bone_length)[ids]
    segment = np.asarray(table.segment)[ids]
    crease = np.ones(len(ids))
    width_px = 0.09 * camera.px_per_cm + 0.4
    # A bone's pixels near either end: the joint can be drawn by the bone before or after it.
    near_joint = ((segment >= 1) & (np.abs(along) < width_px)) | (
        (segment <= 1) & (np.abs(along - length) < width_px)
    )
    joint_line = is_finger & near_joint
    crease[joint_line & (backness < 0.5)] = 0.62
    crease[joint_line & (backness >= 0.5)] = 0.85
    mid_line = is_finger & (segment == 0) & (np.abs(along - 0.55 * length) < width_px * 0.7)
    crease[mid_line & (backness < 0.5)] = 0.8
    nail = is_finger & (segment == 2) & (along > 0.35 * length)
    nail_weight = _smoothstep(0.45, 0.7, np.einsum("ij,ij->i", normal, dorsal)) * nail
    albedo = albedo + (np.asarray(style.nail_rgb) - albedo) * nail_weight[:, None]
    shine = shine + 0.25 * nail_weight
    # Nail rim: a thin darker edge where the nail meets the skin.
    rim = nail & (np.abs(nail_weight - 0.5) < 0.25)
    crease[rim] = np.minimum(crease[rim], 0.85)

    # Palm lines, looked up in palm coordinates.
    palm_pixels = (kind == KIND_PALM) & (backness < 0.5)
    if palm_pixels.any():
        texture, cells_per_cm = _palm_crease_texture(rng)
        # Undo the projection: camera frame (pixels) -> hand frame (cm).
        hand_xyz = (points[palm_pixels] / camera.px_per_cm) @ camera.rotation
        map_x = ((hand_xyz[:, 0] + 5.0) * cells_per_cm).astype(np.float32)
        map_y = ((hand_xyz[:, 1] + 2.0) * cells_per_cm).astype(np.float32)
        # Mirrored hands carry mirrored lines, as the rotation includes the mirror.
        sampled = cv2.remap(
            texture, map_x[None, :], map_y[None, :], cv2.INTER_LINEAR, borderValue=1.0
        ).ravel()
        crease[palm_pixels] *= sampled
    albedo *= crease[:, None]

    # Light: a key light from the front-top, wrapped so skin looks soft, plus ambient and a rim.
    light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(0.0, 0.8), 1.0])
    light /= np.linalg.norm(light)
    wrap = 0.35
    diffuse = np.clip((normal @ light + wrap) / (1 + wrap), 0, 1)
    half = light + np.array([0.0, 0.0, 1.0])
    half /= np.linalg.norm(half)
    specular = np.clip(normal @ half, 0, 1) ** 20 * shine
    ambient = rng.uniform(0.25, 0.4)
    key = rng.uniform(0.7, 0.95)
    facing = np.clip(normal[:, 2], 0, 1)
    colour = albedo * (ambient + key * diffuse)[:, None] * (0.75 + 0.25 * facing)[:, None]
    # Light scattered under the skin comes out red: shadows on skin are warm, not grey.
    scatter = 0.18 * (1.0 - diffuse) * (~sleeve)
    colour = colour + albedo * scatter[:, None] * np.array([1.0, 0.45, 0.3])
    colour = colour + specular[:, None]
    # Pores, freckles and uneven tone, at a scale of a few millimetres.
    mottle = rng.normal(0, 0.035, (max(height // 6, 2), max(width // 6, 2))).astype(np.float32)
    mottle = cv2.resize(mottle, (width, height), interpolation=cv2.INTER_LINEAR)[covered]
    colour *= (1.0 + mottle)[:, None]

    # Ambient occlusion from the depth buffer: pixels below their surroundings get less light,
    # which darkens the gaps between fingers and the folds of a fist.
    depth = np.where(covered, surface.depth, np.nan)
    floor = np.nanmin(depth) if covered.any() else 0.0
    depth = np.nan_to_num(depth, nan=floor).astype(np.float32)
    px_per_cm = camera.px_per_cm
    sigma = max(0.5 * px_per_cm, 1.0)
    occlusion = np.clip((cv2.GaussianBlur(depth, (0, 0), sigma) - depth) / (1.2 * px_per_cm), 0, 1)
    colour *= (1.0 - 0.55 * occlusion[covered])[:, None]
    image[covered] = colour

    hand_mask = np.zeros((height, width), dtype=bool)
    hand_mask[covered] = (kind == KIND_PALM) | is_finger
    return image, hand_mask


def _camera_effects(rng: np.random.Generator, photo: np.ndarray) -> np.ndarray:
    """Exposure, white balance, a light falloff, lens blur and sensor noise; returns uint8 RGB."""
    height, width = photo.shape[:2]
    balance = np.clip(rng.normal(1.0, 0.06, 3), 0.85, 1.15)
    gain = rng.uniform(0.8, 1.2)
    contrast = rng.uniform(0.8, 1.15)
    ys = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    xs = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    angle = rng.uniform(0, 2 * np.pi)
    falloff = 1.0 + np.float32(rng.uniform(0, 0.25)) * (
        np.float32(np.cos(angle)) * xs + np.float32(np.sin(angle)) * ys
    )
    # (photo * balance * gain - 0.5) * contrast + 0.5, in one pass.
    photo = photo * falloff[:, :, None] * (balance * gain * contrast).astype(np.float32)
    photo += np.float32(0.5 * (1.0 - contrast))
    photo = cv2.GaussianBlur(photo, (0, 0), rng.uniform(0.3, 1.1) * height / 480)
    # OpenCV's generator, seeded from ours, is several times faster than numpy's for a whole frame.
    noise = np.empty((height, width * 3), dtype=np.float32)
    cv2.setRNGSeed(int(rng.integers(2**31)))
    cv2.randn(noise, 0.0, float(rng.uniform(0.005, 0.02)))
    photo += noise.reshape(photo.shape)
    # Display gamma: the shading above is in linear light.
    np.clip(photo, 0, 1, out=photo)
    cv2.pow(photo, 1 / 1.15, photo)
    return cv2.convertScaleAbs(photo, alpha=255.0)


# ---------------------------------------------------------------------------------------------
# The data set on disk.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ImageJob:
    index: int  # with the seed, picks the image's own random stream
    seed: int
    gesture: str
    subject: int
    file_name: str
    is_test: bool


def _plan(settings: SyntheticSettings) -> tuple[list[SubjectStyle], list[_ImageJob], set[int]]:
    """Which image shows which gesture by which subject; test subjects are held out whole."""
    rng = np.random.default_rng([settings.seed, 0x5EED])
    styles = make_subject_styles(rng, settings.num_subjects)
    num_test = round(settings.test_fraction * settings.num_subjects)
    num_test = min(max(1, num_test), settings.num_subjects - 1)
    order = rng.permutation(settings.num_subjects)
    test_subjects = {int(s) for s in order[:num_test]}
    # Every subject gets an even share of the images, paired with gestures at random. The share
    # is dealt in an order that starts with a test subject and then a training one, so even a
    # two-image set has both splits.
    order = np.concatenate(
        [order[:1], order[num_test : num_test + 1], order[1:num_test], order[num_test + 1 :]]
    )
    subjects = rng.permutation(order[np.arange(settings.num_images) % settings.num_subjects])
    # Gestures cycle so every class is represented evenly.
    running: Counter = Counter()
    jobs = []
    for index, subject in enumerate(int(s) for s in subjects):
        gesture = GESTURE_CLASSES[index % len(GESTURE_CLASSES)]
        running[gesture, subject] += 1
        name = f"{gesture}-{styles[subject].name}-{running[gesture, subject]:04d}.png"
        is_test = subject in test_subjects
        jobs.append(_ImageJob(index, settings.seed, gesture, subject, name, is_test))
    return styles, jobs, test_subjects


def _write_image(task: tuple[_ImageJob, SubjectStyle, int, int, Path]) -> tuple[str, str, str]:
    """Render one image, write its PNG and box file; return its truth row's fields."""
    job, style, width, height, hand_dir = task
    rng = np.random.default_rng([job.seed, job.index])
    hand = render_hand(rng, job.gesture, style, width, height)
    bgr = cv2.cvtColor(hand.image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(hand_dir / "colour" / job.file_name), bgr):
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


def write_synthetic_dataset(root: Path, settings: SyntheticSettings = SyntheticSettings()) -> dict:
    """Write the synthetic OUHANDS layout to ``root`` (replacing it); return counts per split.

    Deterministic: the same settings give byte-identical files, whatever the number of workers,
    since every image draws from its own stream seeded by (seed, image index).
    """
    styles, jobs, test_subjects = _plan(settings)
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
                settings.width,
                settings.height,
                test_dir if job.is_test else train_dir,
            )
            for job in jobs
        ]
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
        rng = np.random.default_rng([settings.seed, 0xA11])
        num_validation = round(settings.validation_fraction * len(train_names))
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
