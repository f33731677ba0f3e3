"""The renderer: one OUHANDS-like photo of a posed hand, with its 21 true joint positions.

The posed hand (``kinematics``) is rotated, projected with an orthographic camera and drawn into a
depth buffer (``raster``); the truth landmarks are the projections of the joint centres. The
surface is shaded (wrap-around diffuse light, specular, ambient occlusion from the depth buffer,
lighter palmar skin, nails, creases) over an indoor background, then put through a camera's
exposure, blur and noise. A forearm runs to the image border because MediaPipe's palm detector
relies on the wrist's context.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.keypoints import FINGERS
from pipeline.sources.synthetic.kinematics import (
    CONTACT_POSE,
    FOREARM_FLATNESS,
    FOREARM_RADIUS_CM,
    GESTURE_CLASSES,
    GESTURES,
    MCP_CM,
    PALM_HALF_THICKNESS_CM,
    PALM_OUTLINE_CM,
    PHALANX_CM,
    RANDOM_POSE,
    contact_gesture,
    euler_rotation,
    pose_hand,
    random_gesture,
    rotation_about,
)
from pipeline.sources.synthetic.raster import (
    KIND_ARM,
    KIND_FINGER,
    KIND_PALM,
    KIND_SLEEVE,
    Camera,
    Scene,
)
from pipeline.sources.synthetic.subjects import SubjectStyle


@dataclass
class RenderedHand:
    image: np.ndarray  # (height, width, 3) uint8 RGB
    landmarks_px: np.ndarray  # (NUM_JOINTS, 2) float64, true joint centres, pixels, y down
    handedness: str  # "Left" or "Right", as MediaPipe labels the hand in the image
    box_xywh: tuple[int, int, int, int]  # tight box of the drawn hand in pixels
    hand_mask: np.ndarray  # (height, width) bool, True where the hand is drawn


def room_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
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


def _place_hand(
    rng: np.random.Generator,
    joints_cm: np.ndarray,
    rotation: np.ndarray,
    px_per_cm: float,
    width: int,
    height: int,
) -> Camera:
    """A camera that shows every joint, with a fingertip's width to spare, at a random position."""
    centred = Camera(rotation, px_per_cm, np.zeros(2))
    joints = centred.to_camera(joints_cm)
    margin = 1.2 * px_per_cm + 4
    low = np.array([-joints[:, 0].min(), joints[:, 1].max()]) + margin
    high = np.array([width - joints[:, 0].max(), height + joints[:, 1].min()]) - margin
    if np.any(high < low):
        high = low = (low + high) / 2  # the hand barely fits: centre it
    return Camera(rotation, px_per_cm, rng.uniform(low, high))


def render_hand(
    rng: np.random.Generator,
    gesture: str,
    subject_style: SubjectStyle,
    width: int = 640,
    height: int = 480,
    hand_scale: tuple[float, float] = (0.35, 0.62),
    turn_max: float = 25.0,
) -> RenderedHand:
    """One photo of ``subject_style``'s hand showing ``gesture`` (or, for ``RANDOM_POSE``, a
    pose drawn from ``rng``), with the true joint positions; the hand's length is a fraction in
    ``hand_scale`` of the frame's height, and the palm (or the back) turns away from the camera
    about the hand's long axis by up to ``turn_max`` degrees either way (90: seen edge on)."""
    if gesture == RANDOM_POSE:
        pose = random_gesture(rng)
    elif gesture == CONTACT_POSE:
        pose = contact_gesture(rng)
    elif gesture in GESTURES:
        pose = GESTURES[gesture]
    else:
        raise ValueError(
            f"unknown gesture {gesture!r}; expected one of {GESTURE_CLASSES}, {RANDOM_POSE!r}"
            f" or {CONTACT_POSE!r}"
        )
    style = subject_style
    joints_cm, bones = pose_hand(pose, style, rng)

    # A left hand is a mirrored right hand; the back of the hand shows after a half turn about
    # the hand's long axis.
    is_left = bool(rng.random() < 0.5)
    shows_back = bool(rng.random() < 0.3)
    mirror = np.diag([-1.0 if is_left else 1.0, 1.0, 1.0])
    yaw = rng.uniform(-turn_max, turn_max) + (180.0 if shows_back else 0.0)
    rotation = euler_rotation(rng.uniform(-30, 30), rng.uniform(-20, 15), yaw) @ mirror
    # MediaPipe names a hand by how it looks in the picture: the right hand built here (thumb on
    # the image's right while the palm faces the camera) it calls "Right" (checked on renders).
    handedness = "Left" if is_left else "Right"
    hand_length_cm = MCP_CM["middle"][1] + sum(PHALANX_CM["middle"]) * style.finger_length
    px_per_cm = rng.uniform(*hand_scale) * height / hand_length_cm
    camera = _place_hand(rng, joints_cm, rotation, px_per_cm, width, height)
    scene = Scene(camera, width, height)
    back_of_hand = np.array([0.0, 0.0, -1.0])

    # The forearm runs out of the picture; pushed back and drawn on a lower layer, it never
    # covers the hand.
    wrist_bend = rotation_about(np.array([0.0, 0.0, 1.0]), rng.normal(0, 10)) @ rotation_about(
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
    photo = room_background(rng, width, height) * (1 - alpha) + premultiplied
    photo = camera_effects(rng, photo)

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


def render_empty(rng: np.random.Generator, width: int = 640, height: int = 480) -> np.ndarray:
    """A photo of the room with no hand in it (uint8 RGB): the presence head's negatives."""
    return camera_effects(rng, room_background(rng, width, height))


def _shade(
    rng: np.random.Generator, scene: Scene, style: SubjectStyle
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


def camera_effects(rng: np.random.Generator, photo: np.ndarray) -> np.ndarray:
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
