"""The kinematic hand: its geometry, the gestures' curl patterns and the posed joint centres.

A hand (palm, metacarpal heads, phalanges with flexion per joint) is posed in 3D from a gesture's
curl pattern, with per-photo jitter on every angle; ``pose_hand`` returns the 21 joint centres
(the truth landmarks, once projected) and the bones the renderer sweeps its surface along.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.keypoints import FINGERS, NUM_JOINTS, WRIST
from pipeline.sources.synthetic.subjects import SubjectStyle

GESTURE_CLASSES: tuple[str, ...] = ("A", "B", "C", "D", "E", "F", "H", "I", "J", "K")


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
# Proximal, middle and distal phalanx (the last to the fingertip landmark). The fingers are as
# long, for the palm (wrist to MCP), as MediaPipe reads real open hands: its world landmarks on
# 80 open-hand photos of ../shared's digits give finger / palm 0.79, 0.94, 0.87, 0.76 (index to
# little finger, medians), where textbook bone lengths (3.9, 2.3, 2.1 cm ... for the index) gave
# 0.97, 1.09, 1.07, 0.87: each finger is those lengths times 0.81, 0.86, 0.82, 0.88. MediaPipe
# then reads the renders nearer their truth (docs/data.md, "How hand-like the renders are").
PHALANX_CM: dict[str, tuple[float, float, float]] = {
    "thumb": (4.0, 3.2, 2.8),  # metacarpal (CMC to MCP), proximal, distal
    "index": (3.16, 1.86, 1.70),
    "middle": (3.78, 2.32, 1.89),
    "ring": (3.36, 2.13, 1.80),
    "pinky": (2.82, 1.67, 1.67),
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
# The palm is drawn as a plate seen from the front (its outline does not depend on this): how far
# in from the outline its surface rounds off and how far it domes out. A real palm is domed by the
# ball of the thumb and the little finger's side, not a flat plate with a bevel: at 1.9 instead
# of 1.35 MediaPipe reads the renders nearer their truth on three sets of 600 renders (+0.012 to
# +0.023 PCK@0.1; 1.1: -0.016), and the student trained on them reads real photos better (with
# a fifth of the frames empty rooms, against false alarms on clutter: docs/data.md, "A domed palm").
PALM_HALF_THICKNESS_CM = 1.9
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
    # Fingertips the thumb's tip touches (a pinch, an "O"): ``pose_hand`` then turns the thumb
    # to meet them wherever the posed fingers put them, and ``thumb`` is not used.
    thumb_to: tuple[str, ...] = ()


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


# Not a gesture: a pose drawn finger by finger (``random_gesture``), so that a network trained on
# renders meets hands in more poses than the ten it is asked about (digits, counting, pointing).
RANDOM_POSE = "random"
# How much farther each finger can fan out from the middle one than at rest, degrees.
_FAN_DEG: dict[str, float] = {"index": 10.0, "middle": 0.0, "ring": -7.0, "pinky": -14.0}


def random_gesture(rng: np.random.Generator) -> Gesture:
    """A pose no gesture names: each finger straight (40 %), curled into the palm (35 %) or
    anywhere between, its middle and end joints bent with it (the end joint about two thirds
    of the middle one, as the tendons couple them), the fingers fanned out or held together,
    the thumb anywhere between lying along the index finger and reaching across the palm."""
    fingers = {}
    fan = rng.uniform(-0.4, 1.0)
    for finger, fan_deg in _FAN_DEG.items():
        kind = rng.random()
        if kind < 0.4:  # straight
            curl = rng.uniform(0, 0.1)
        elif kind < 0.75:  # curled into the palm
            curl = rng.uniform(0.75, 1.0)
        else:
            curl = rng.uniform(0.1, 0.75)
        pip = 105.0 * curl * rng.uniform(0.8, 1.1)
        fingers[finger] = FingerCurl(
            mcp=88.0 * curl * rng.uniform(0.5, 1.1),
            pip=pip,
            dip=pip * rng.uniform(0.5, 0.8),
            spread=fan * fan_deg * (1.0 - curl),
        )
    thumb = ThumbPose(
        abduction=rng.uniform(10, 65),
        lift=rng.uniform(10, 55),
        mcp=rng.uniform(0, 55),
        ip=rng.uniform(0, 45),
    )
    return Gesture(fingers, thumb)


# Also not a gesture: a pose with the thumb's tip on one or more fingertips (``contact_gesture``).
CONTACT_POSE = "contact"
# Which fingertips the thumb meets, and how often: a pinch, two fingers, all four (an "O").
_CONTACTS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("index",), 0.45),
    (("index", "middle"), 0.2),
    (("index", "middle", "ring", "pinky"), 0.35),
)


def contact_gesture(rng: np.random.Generator) -> Gesture:
    """A pose where the thumb's tip touches fingertips: a pinch (the others straight, as in
    "OK", or curled), two fingers on the thumb, or all four in an "O" or a flat "O". Drawing
    fingers and thumb on their own, as ``random_gesture`` does, almost never makes two tips
    meet, yet hands do it all the time (picking, counting, signing)."""
    touching = _CONTACTS[rng.choice(len(_CONTACTS), p=[share for _, share in _CONTACTS])][0]
    others_straight = rng.random() < 0.5
    fingers = {}
    for finger, fan_deg in _FAN_DEG.items():
        if finger in touching:
            pip = rng.uniform(25, 85)
            fingers[finger] = FingerCurl(
                mcp=rng.uniform(15, 65), pip=pip, dip=pip * rng.uniform(0.4, 0.8)
            )
        elif others_straight:
            curl = rng.uniform(0, 0.25)
            fingers[finger] = FingerCurl(
                88.0 * curl, 105.0 * curl, 70.0 * curl, spread=rng.uniform(0, 1) * fan_deg
            )
        else:
            fingers[finger] = FingerCurl(
                rng.uniform(60, 90), rng.uniform(80, 110), rng.uniform(45, 70)
            )
    return Gesture(fingers, ThumbPose(35, 45, 25, 20), thumb_to=touching)


def _thumb_chain(thumb: ThumbPose, style: SubjectStyle) -> tuple[list[np.ndarray], list[_Bone]]:
    a, b = np.radians(thumb.abduction), np.radians(thumb.lift)
    direction = np.array([np.sin(a) * np.cos(b), np.cos(a) * np.cos(b), np.sin(b)])
    # The thumb's flexion curls it across the palm towards the little finger.
    bend = np.array([-0.8, -0.15, 0.75])
    cmc = np.array(THUMB_CMC_CM) * (style.palm_width, 1.0, 1.0)
    lengths = tuple(length * style.finger_length for length in PHALANX_CM["thumb"])
    radii = tuple(r * style.thickness for r in RADIUS_CM["thumb"])
    return _finger_chain(cmc, direction, bend, lengths, (0.0, thumb.mcp, thumb.ip), radii, "thumb")


# The thumb's range where it reaches for a fingertip, degrees: abduction, lift, MCP, IP.
_THUMB_LOW = np.array([0.0, 0.0, 0.0, 0.0])
_THUMB_HIGH = np.array([75.0, 85.0, 70.0, 85.0])


def _thumb_reaching(target: np.ndarray, style: SubjectStyle, rng: np.random.Generator) -> ThumbPose:
    """The thumb pose (within ``_THUMB_LOW``.. ``_THUMB_HIGH``) whose tip comes nearest
    ``target`` (cm, hand frame): the best of random draws, then halving steps per angle."""

    def miss(angles: np.ndarray) -> float:
        joints, _ = _thumb_chain(ThumbPose(*angles), style)
        return float(np.linalg.norm(joints[-1] - target))

    draws = rng.uniform(_THUMB_LOW, _THUMB_HIGH, size=(48, 4))
    best = min(draws, key=miss)
    best_miss = miss(best)
    step = 8.0
    while step > 0.5:
        improved = False
        for k in range(4):
            for sign in (1.0, -1.0):
                trial = best.copy()
                trial[k] = np.clip(trial[k] + sign * step, _THUMB_LOW[k], _THUMB_HIGH[k])
                trial_miss = miss(trial)
                if trial_miss < best_miss:
                    best, best_miss, improved = trial, trial_miss, True
        if not improved:
            step /= 2
    return ThumbPose(*(float(v) for v in best))


def rotation_about(axis: np.ndarray, degrees: float) -> np.ndarray:
    """Rodrigues: rotation by ``degrees`` about the unit vector ``axis`` (right-hand rule)."""
    axis = axis / np.linalg.norm(axis)
    angle = np.radians(degrees)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def euler_rotation(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Camera-from-hand rotation: yaw about y, then pitch about x, then roll in the image plane."""
    x, y, z = np.eye(3)
    return rotation_about(z, roll) @ rotation_about(x, pitch) @ rotation_about(y, yaw)


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
        turn = rotation_about(axis, angle)
        start = joints[-1]
        end = start + turn @ direction * length
        r0 = radii[0] + (radii[1] - radii[0]) * along / total
        along += length
        r1 = radii[0] + (radii[1] - radii[0]) * along / total
        bones.append(_Bone(start, end, -(turn @ bend_towards), (r0, r1), finger, segment))
        joints.append(end)
    return joints, bones


def pose_hand(
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
    if gesture.thumb_to:
        # Pads meet, not bone centres: aim a finger's radius to the palm side of the tips.
        tips = np.array([joints[FINGERS[f][-1]] for f in gesture.thumb_to])
        target = tips.mean(0) + np.array([0.0, 0.0, RADIUS_CM["index"][1] * style.thickness])
        thumb = _thumb_reaching(target, style, rng)
    else:
        thumb = gesture.thumb
        thumb = ThumbPose(
            thumb.abduction + rng.normal(0, 5),
            thumb.lift + rng.normal(0, 5),
            thumb.mcp + rng.normal(0, 6),
            thumb.ip + rng.normal(0, 6),
        )
    chain, thumb_bones = _thumb_chain(thumb, style)
    joints[list(FINGERS["thumb"])] = chain
    bones += thumb_bones
    joints[WRIST] = 0.0
    return joints, bones
