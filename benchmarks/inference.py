"""Inference speed on the CPU at batch 1: the top-down student (ONNX Runtime and torch) vs the
MediaPipe teacher, in image mode and in video (tracking) mode.

Everyone gets the same 640x480 RGB frames, already decoded (decoding is not timed for anyone).
Image mode: the student runs both passes on every image (the finder on the letterboxed frame,
then the landmark network on the crop it gives, then up to ``refine`` more crop passes until
the square settles; crops are cut from the frame with one affine),
the teacher (``pipeline.teacher.Teacher``) its palm detector and landmark model. Video mode: a
clip of a moving hand (each of a few rendered hands shifted, turned and scaled a little frame by
frame); the student tracks (frame t's crop from frame t-1's landmarks, the finder again only
when the presence drops, ``Student.track``), the teacher runs in MediaPipe's video mode. The
student's time includes everything between the frame and the landmarks in pixels. torch and ONNX
Runtime run with 2 threads, MediaPipe with its own defaults; engines are interleaved within each
round and medians are shown. Targets: image mode >= 3x the teacher, tracking >= 5x.

    python benchmarks/inference.py                                  # models/export/student.onnx
    python benchmarks/inference.py --model models/export/student.onnx --images 64 --rounds 3
    python benchmarks/inference.py --refine 1 --threads 1    # at most one refinement, one thread
    python benchmarks/inference.py --flip-test      # + the student reading each crop mirrored too
"""

# The repo root goes on sys.path before the imports, so `python benchmarks/<name>.py` works.
# ruff: noqa: E402
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
import torch

from benchmarks.common import (
    REPO,
    Stopwatch,
    finish,
    machine,
    markdown_table,
    median,
    read_all,
    temporary_folder,
    write_images,
)
from pipeline.paths import EXPORT_DIR
from pipeline.student import load_student
from pipeline.teacher import Teacher, build_teacher_model

NAME = "inference"


def moving_clip(images: list[np.ndarray], frames_per_hand: int, seed: int = 0) -> list:
    """Each image shifted, turned and scaled a little more every frame: a hand that moves."""
    rng = np.random.default_rng(seed)
    clip = []
    for rgb in images:
        height, width = rgb.shape[:2]
        drift = rng.uniform(-1.5, 1.5, 2)  # pixels per frame
        turn, grow = rng.uniform(-0.4, 0.4), rng.uniform(-0.002, 0.002)
        for t in range(frames_per_hand):
            matrix = cv2.getRotationMatrix2D((width / 2, height / 2), turn * t, 1 + grow * t)
            matrix[:, 2] += drift * t
            clip.append(cv2.warpAffine(rgb, matrix, (width, height), borderMode=cv2.BORDER_REFLECT))
    return clip


def per_frame_rate(run: Callable, frames: list[np.ndarray]) -> float:
    with Stopwatch() as watch:
        for index, rgb in enumerate(frames):
            run(rgb, index)
    return len(frames) / watch.seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / EXPORT_DIR / "student.onnx")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--hands", type=int, default=4, help="hands in the video clip")
    parser.add_argument("--frames-per-hand", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    parser.add_argument(
        "--refine",
        type=int,
        default=None,
        help="crop passes after the first, at most (default: what the model records)",
    )
    parser.add_argument(
        "--flip-test",
        action="store_true",
        help="also the ONNX student that reads each crop and its mirror (docs/use.md)",
    )
    args = parser.parse_args(argv)
    if not args.model.is_file():
        raise SystemExit(f"{args.model} not found: run `dvc repro` (the export stage) first")
    torch.set_num_threads(args.threads)
    info = machine()
    onnx_student = load_student(args.model, "cpu", threads=args.threads, refine=args.refine)
    torch_student = load_student(args.model.with_suffix(".pt"), "cpu", refine=args.refine)
    flipping = {}  # the same ONNX student with the flip test, interleaved with the others
    if args.flip_test:
        flipping["student, ONNX Runtime, flip test"] = load_student(
            args.model, "cpu", threads=args.threads, refine=args.refine, flip_test=True
        )

    with temporary_folder(NAME) as tmp:
        images = read_all(write_images("synthetic", args.images, Path(tmp)))
        teacher_path = Path(tmp) / "hand_landmarker.task"
        build_teacher_model(teacher_path)
        with Teacher(teacher_path) as still, Teacher(teacher_path, video=True) as tracker:
            with_hand = [rgb for rgb in images if still.detect(rgb).num_hands][: args.hands]
            clip = moving_clip(with_hand, args.frames_per_hand)
            clock = {"ms": 0}

            def teacher_video(rgb, index):
                clock["ms"] += 33
                return tracker.detect(rgb, clock["ms"])

            image_mode = {
                "student, ONNX Runtime": lambda rgb, i: onnx_student.predict_images([rgb], 1),
                "student, torch": lambda rgb, i: torch_student.predict_images([rgb], 1),
                "teacher, MediaPipe": lambda rgb, i: still.detect(rgb),
            }
            video_mode = {
                "student, ONNX Runtime": lambda rgb, i: onnx_student.track(rgb),
                "student, torch": lambda rgb, i: torch_student.track(rgb),
                "teacher, MediaPipe (video mode)": teacher_video,
            }
            for name, student in flipping.items():
                image_mode[name] = lambda rgb, i, s=student: s.predict_images([rgb], 1)
                video_mode[name] = lambda rgb, i, s=student: s.track(rgb)
            for run in image_mode.values():  # warm-up: kernels, allocations, caches
                run(images[0], 0)
            rates: dict[tuple[str, str], list[float]] = {}
            refound = []
            for round_index in range(args.rounds):
                for name, run in image_mode.items():
                    rates.setdefault(("image", name), []).append(per_frame_rate(run, images))
                for name, run in video_mode.items():
                    for student in (onnx_student, torch_student, *flipping.values()):
                        student.reset()
                    rates.setdefault(("video", name), []).append(per_frame_rate(run, clip))
                onnx_student.reset()
                tracked = [bool(onnx_student.track(rgb).tracked[0]) for rgb in clip]
                refound.append(1 - float(np.mean(tracked)))
                print(f"  round {round_index + 1}/{args.rounds} done")
            crop_passes = [onnx_student.predict_images([rgb], 1).crop_passes[0] for rgb in images]

    teacher_image = median(rates["image", "teacher, MediaPipe"])
    teacher_video_rate = median(rates["video", "teacher, MediaPipe (video mode)"])
    summary = []
    for (mode, name), values in rates.items():
        rate = median(values)
        summary.append(
            {
                "mode": mode,
                "engine": name,
                "frames_per_second": round(rate, 1),
                "ms_per_frame": round(1000 / rate, 2),
                "x_teacher_image_mode": round(rate / teacher_image, 2),
                "x_teacher_video_mode": round(rate / teacher_video_rate, 2),
            }
        )
    print()
    print(
        markdown_table(
            ["mode", "engine", "frames/s", "ms/frame", "x teacher (image)", "x teacher (video)"],
            [list(row.values()) for row in summary],
        )
    )
    print(f"student tracking: the finder ran again on {np.mean(refound):.1%} of the clip's frames")
    print(
        f"student image mode: {np.mean(crop_passes):.2f} crop passes a frame (refine "
        f"{onnx_student.refine}: at most {onnx_student.refine + 1}, fewer where the square settles)"
    )
    output = {
        "benchmark": NAME,
        "model": str(args.model),
        "role": onnx_student.landmarks.role,
        "crop_size": onnx_student.image_size,
        "finder_size": getattr(getattr(onnx_student, "finder", None), "image_size", None),
        "images": len(images),
        "clip_frames": len(clip),
        "threads": args.threads,
        "refine": onnx_student.refine,
        "flip_test": args.flip_test,
        "rounds": args.rounds,
        "student_refind_fraction": round(float(np.mean(refound)), 4),
        "student_crop_passes_image_mode": round(float(np.mean(crop_passes)), 3),
        "targets": "image mode >= 3x the teacher, tracking >= 5x",
        "summary": summary,
        "machine": info,
    }
    finish(f"{NAME}_flip_test" if args.flip_test else NAME, output)
    return output


if __name__ == "__main__":
    main()
