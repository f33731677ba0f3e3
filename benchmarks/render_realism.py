"""How hand-like the renders are, without a pipeline run: render hands, let the teacher read them,
score it against the rendered truth (PCK@0.1 per gesture, per view and overall, and where in the
hand each joint is read on average, per view).

The loop for renderer work: a change to the renderer (or a copy of ``render.py`` passed with
``--renderer``) measured on the same renders (same poses, people and views: the random draws
do not depend on how a hand is shaded; a change to its shape can move the draws of the renders
after it), about 25 s per 300 renders here. A few hundred renders
move by about 0.015 between sets, so compare variants on the same ``--seed`` and confirm on two
or three seeds (docs/data.md, "How hand-like the renders are").

    python benchmarks/render_realism.py                          # 300 renders, seed 11
    python benchmarks/render_realism.py --renders 600 --seed 23
    python benchmarks/render_realism.py --renderer /tmp/my_render.py
"""

# The repo root goes on sys.path before the imports, so `python benchmarks/<name>.py` works.
# ruff: noqa: E402
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.common import HEIGHT, REPO, WIDTH, finish, machine, markdown_table
from benchmarks.teacher_vs_truth import compare
from pipeline.keypoints import JOINT_INDEX, JOINT_NAMES, WRIST
from pipeline.scoring import pinned_teacher_model
from pipeline.sources.synthetic.kinematics import GESTURE_CLASSES
from pipeline.sources.synthetic.subjects import make_subject_styles
from pipeline.teacher import Teacher

NAME = "render_realism"
VIEWS = ("palm", "back")


def turn_sign(landmarks_px: np.ndarray) -> np.ndarray:
    """Which way round each hand lies in the picture, +1 or -1 (0 if degenerate): the sign of
    (index knuckle - wrist) x (little-finger knuckle - wrist) in image pixels, y down. A mirror
    image has the other sign. landmarks_px: (N, 21, 2)."""
    wrist = landmarks_px[:, WRIST]
    index = landmarks_px[:, JOINT_INDEX["index_mcp"]] - wrist
    little = landmarks_px[:, JOINT_INDEX["pinky_mcp"]] - wrist
    return np.sign(index[:, 0] * little[:, 1] - index[:, 1] * little[:, 0])


def views(truth_px: np.ndarray, handedness: np.ndarray) -> np.ndarray:
    """Which side of each rendered hand faces the camera, "palm" or "back", from its true
    landmarks and its handedness. A right hand (as MediaPipe names it) shows its palm with the
    thumb on the picture's right, turn sign -1, and its back with +1; a left hand the other way
    round. The renders stay far from edge on (turned at most ``turn_max``, 25 degrees, about
    the hand's long axis and 20 about the other), so the sign does not waver there."""
    right = np.asarray(handedness) == "Right"
    palm = (turn_sign(truth_px) < 0) == right
    return np.where(palm, "palm", "back")


def hand_frame_offsets(read_px: np.ndarray, truth_px: np.ndarray) -> np.ndarray:
    """Where each joint is read relative to its truth, in the true hand's own frame: (N, 21, 2),
    x across the hand towards the index finger's side (the thumb's), y from the wrist towards
    the middle finger's knuckle, in units of that palm length. A hand turned, mirrored, moved
    or scaled in the picture gives the same numbers for the same misreading, so their mean over
    renders shows what the teacher reads consistently elsewhere (a palm read shorter, curled
    tips read nearer the knuckles), which PCK alone does not. read_px, truth_px: (N, 21, 2)."""
    wrist = truth_px[:, WRIST]
    along = truth_px[:, JOINT_INDEX["middle_mcp"]] - wrist
    palm_length = np.linalg.norm(along, axis=1)
    y_axis = along / palm_length[:, None]
    x_axis = np.column_stack([-y_axis[:, 1], y_axis[:, 0]])
    index_side = np.einsum("ij,ij->i", truth_px[:, JOINT_INDEX["index_mcp"]] - wrist, x_axis)
    x_axis = x_axis * np.where(index_side < 0, -1.0, 1.0)[:, None]
    error = read_px - truth_px
    across = np.einsum("njk,nk->nj", error, x_axis)
    up = np.einsum("njk,nk->nj", error, y_axis)
    return np.stack([across, up], axis=-1) / palm_length[:, None, None]


def load_renderer(path: Path):
    """The module at ``path`` (a copy of pipeline/sources/synthetic/render.py, or that file)."""
    if not path.is_file():
        raise SystemExit(f"renderer {path} not found")
    spec = importlib.util.spec_from_file_location("render_under_test", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    if not hasattr(module, "render_hand"):
        raise SystemExit(f"{path} has no render_hand: not a copy of the renderer")
    return module


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--renders", type=int, default=300)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--subjects", type=int, default=12)
    parser.add_argument("--hand-scale", type=float, nargs=2, default=(0.3, 0.62))
    parser.add_argument(
        "--renderer", type=Path, default=REPO / "pipeline/sources/synthetic/render.py"
    )
    args = parser.parse_args(argv)
    renderer = load_renderer(args.renderer)
    rng = np.random.default_rng(args.seed)
    styles = make_subject_styles(rng, args.subjects)
    teacher_px, truth_px, gestures, handedness = [], [], [], []
    started = time.perf_counter()
    # The per-machine cached bundle, not models/teacher/: that is the teacher stage's DVC output.
    with Teacher(pinned_teacher_model()) as teacher:
        for index in range(args.renders):
            gesture = GESTURE_CLASSES[index % len(GESTURE_CLASSES)]
            hand = renderer.render_hand(
                rng, gesture, styles[index % len(styles)], WIDTH, HEIGHT, tuple(args.hand_scale)
            )
            found = teacher.detect(hand.image)
            if found.num_hands:
                teacher_px.append(found.landmarks[0][:, :2] * (WIDTH, HEIGHT))
                truth_px.append(hand.landmarks_px)
                gestures.append(gesture)
                handedness.append(hand.handedness)
    seconds = time.perf_counter() - started
    if not gestures:
        raise SystemExit(f"the teacher found no hand in {args.renders} renders")

    # The same measures, per gesture and overall, as teacher_vs_truth.py gives for a run's table.
    teacher_px, truth_px, gestures = np.array(teacher_px), np.array(truth_px), np.array(gestures)
    width = np.full(len(gestures), float(WIDTH))
    per_gesture = {
        gesture: compare(teacher_px[gestures == gesture], truth_px[gestures == gesture],
                         width[gestures == gesture])
        for gesture in GESTURE_CLASSES
        if (gestures == gesture).any()
    }  # fmt: skip
    overall = compare(teacher_px, truth_px, width)
    rows = [[name, measured["images"], measured["pck_10"], measured["mpjpe_norm_hand"],
             measured["median_scale"]]
            for name, measured in [*per_gesture.items(), ("all", overall)]]  # fmt: skip
    print(f"teacher vs the rendered truth on {args.renders} renders ({args.renderer}, seed "
          f"{args.seed}, {seconds:.0f} s)")  # fmt: skip
    print(markdown_table(["gesture", "hands found", "PCK@0.1", "mean / hand", "scale"], rows))

    # The back of the hand is where the renders are least hand-like to the teacher (docs/data.md,
    # "The back of the hand"): per view, and how often it reads the hand mirrored, its thumb on
    # the side of the little finger.
    view = views(truth_px, np.array(handedness))
    mirrored = turn_sign(teacher_px) != turn_sign(truth_px)
    per_view = {}
    for name in VIEWS:
        mine = view == name
        if mine.any():
            per_view[name] = compare(teacher_px[mine], truth_px[mine], width[mine])
            per_view[name]["read_mirrored"] = round(float(mirrored[mine].mean()), 4)
            # Where the hands it does not mirror are read, on average: the misreadings that a
            # renderer change would have to move (a mirrored hand's offsets say nothing).
            kept = mine & ~mirrored
            if kept.any():
                mean = hand_frame_offsets(teacher_px[kept], truth_px[kept]).mean(axis=0)
                per_view[name]["mean_offset_palm_lengths"] = {
                    joint: [round(float(v), 4) for v in mean[j]]
                    for j, joint in enumerate(JOINT_NAMES)
                }
    view_rows = [[name, found["images"], found["pck_10"], found["mpjpe_norm_hand"],
                  found["read_mirrored"]] for name, found in per_view.items()]  # fmt: skip
    print(markdown_table(["view", "hands found", "PCK@0.1", "mean / hand", "read mirrored"],
                         view_rows))  # fmt: skip
    with_offsets = {name: found["mean_offset_palm_lengths"] for name, found in per_view.items()
                    if "mean_offset_palm_lengths" in found}  # fmt: skip
    offset_rows = [[joint, *(f"{mean[joint][0]:+.3f}, {mean[joint][1]:+.3f}"
                             for mean in with_offsets.values())]
                   for joint in JOINT_NAMES]  # fmt: skip
    print("\nmean offset as read, hands not mirrored (palm lengths: across towards the thumb's "
          "side, along towards the fingers)")  # fmt: skip
    print(markdown_table(["joint", *with_offsets], offset_rows))
    result = {
        "machine": machine(),
        "renderer": str(args.renderer),
        "renders": args.renders,
        "seed": args.seed,
        "all": overall,
        "per_gesture": per_gesture,
        "per_view": per_view,
        "seconds": round(seconds, 1),
    }
    finish(NAME, result)
    return result


if __name__ == "__main__":
    main()
