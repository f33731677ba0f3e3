"""How well the teacher agrees with itself: the ceiling for any student measured against it.

Each 640x480 image is labelled by the MediaPipe teacher as it is and again after a mild random
affine (rotation, scale, shift, the kind of difference a student's crop or a camera's wobble
makes); the second answer is mapped back through the inverse affine and compared with the first
(PCK against the first answer's hand size). On rendered images the truth is known, so the
teacher's own error against it is shown too. A student trained on the teacher's labels cannot
agree with the teacher much better than the teacher agrees with itself.

    python benchmarks/teacher_consistency.py                        # synthetic and digits, 300 each
    python benchmarks/teacher_consistency.py --sources synthetic --images 500 --rotate 5
"""

# The repo root goes on sys.path before the imports, so `python benchmarks/<name>.py` works.
# ruff: noqa: E402
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np

from benchmarks.common import (
    HEIGHT,
    WIDTH,
    finish,
    machine,
    markdown_table,
    read_all,
    temporary_folder,
    write_images,
)
from pipeline.keypoints import hand_size
from pipeline.metrics import landmark_metrics
from pipeline.teacher import Teacher, build_teacher_model

NAME = "teacher_consistency"


def mild_affine(rng: np.random.Generator, rotate_deg: float, scale: float, shift: float):
    """A 2x3 affine about the image centre: rotation in ±rotate_deg, zoom in 1 ± scale, shift in
    ±shift of the image's size."""
    angle = rng.uniform(-rotate_deg, rotate_deg)
    zoom = rng.uniform(1 - scale, 1 + scale)
    matrix = cv2.getRotationMatrix2D((WIDTH / 2, HEIGHT / 2), angle, zoom)
    matrix[:, 2] += rng.uniform(-shift, shift, 2) * (WIDTH, HEIGHT)
    return matrix


def first_hand_px(teacher: Teacher, rgb: np.ndarray) -> np.ndarray | None:
    detection = teacher.detect(rgb)
    if not detection.num_hands:
        return None
    return detection.landmarks[0, :, :2].astype(np.float64) * (WIDTH, HEIGHT)


def measure(teacher: Teacher, images, truth, args) -> dict:
    rng = np.random.default_rng(args.seed)
    first, second, truths = [], [], []
    found = found_both = 0
    for i, rgb in enumerate(images):
        matrix = mild_affine(rng, args.rotate, args.scale, args.shift)
        original = first_hand_px(teacher, rgb)
        if original is None:
            continue
        found += 1
        moved = cv2.warpAffine(rgb, matrix, (WIDTH, HEIGHT), borderMode=cv2.BORDER_REPLICATE)
        answer = first_hand_px(teacher, moved)
        if answer is None:
            continue
        found_both += 1
        inverse = cv2.invertAffineTransform(matrix)
        back = answer @ inverse[:, :2].T + inverse[:, 2]
        first.append(original)
        second.append(back)
        if truth is not None and truth[i] is not None:
            truths.append((original, truth[i]))
    first, second = np.stack(first), np.stack(second)
    width = np.full(len(first), float(WIDTH))
    result = {
        "images": len(images),
        "teacher_found": found,
        "found_again_after_the_affine": found_both,
        "teacher_vs_itself": landmark_metrics(second, first, hand_size(first), width),
    }
    if truths:
        answers, truth_px = (np.stack(column) for column in zip(*truths))
        result["teacher_vs_truth"] = landmark_metrics(
            answers, truth_px, hand_size(truth_px), np.full(len(answers), float(WIDTH))
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sources", nargs="+", default=["synthetic", "digits"])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--rotate", type=float, default=5.0, help="± degrees")
    parser.add_argument("--scale", type=float, default=0.05, help="zoom in 1 ± this")
    parser.add_argument("--shift", type=float, default=0.03, help="± fraction of the image")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    result = {"machine": machine(), "args": vars(args), "sources": {}}
    rows = []
    with temporary_folder(NAME) as folder:
        teacher_path = Path(folder) / "hand_landmarker.task"
        build_teacher_model(teacher_path)
        with Teacher(teacher_path) as teacher:
            for source in args.sources:
                listing = write_images(source, args.images, Path(folder) / source, seed=args.seed)
                truth = [  # rendered images: the true landmarks in pixels (None: no hand)
                    None if r.true_landmarks is None else r.true_landmarks[:, :2] * (WIDTH, HEIGHT)
                    for r in listing.records
                ]
                source_result = measure(teacher, read_all(listing), truth, args)
                result["sources"][source] = source_result
                itself = source_result["teacher_vs_itself"]
                vs_truth = source_result.get("teacher_vs_truth", {})
                rows.append(
                    [
                        source,
                        f"{source_result['found_again_after_the_affine']}/{source_result['images']}",
                        itself["mpjpe_px"],
                        itself["pck_05"],
                        itself["pck_10"],
                        vs_truth.get("pck_10", "—"),
                    ]
                )
    header = ["source", "found twice", "MPJPE px", "PCK@0.05", "PCK@0.1", "vs truth PCK@0.1"]
    print(
        f"teacher vs itself after a mild affine (±{args.rotate}°, 1±{args.scale} zoom, "
        f"±{args.shift} shift)"
    )
    print(markdown_table(header, rows))
    finish(NAME, result)


if __name__ == "__main__":
    main()
