"""Inference speed on the CPU: the student (torch and ONNX Runtime) vs the MediaPipe teacher.

All three get the same 640x480 RGB images, already decoded (decoding is not timed for anyone).
The student's time INCLUDES its preprocessing: resize to its input size in the codec's layout
(squash, ``pipeline.data.resize_square``, by default; as training does) and conversion to a float
tensor in [0, 1]; its output is the encoded targets (63 numbers per image, decoding them is
negligible). The teacher (``pipeline.teacher.Teacher``, image mode: palm detection and the
landmark model on every image) gets the 640x480 image itself; it has no batch API, so its
"batch 32" is 32 calls. torch runs with 2 threads, ONNX Runtime with 2 intra-op threads,
MediaPipe with its own defaults. Engines are interleaved within each round; medians are shown.
Target: the student >= 3x the teacher's images/s at batch 1.

A freshly initialised student at params.yaml's ``train.image_size`` is used (weights do not change
the speed) unless ``--checkpoint`` names one.

    python benchmarks/inference.py                            # 64 images, 3 rounds
    python benchmarks/inference.py --image-size 224 --images 256
    python benchmarks/inference.py --checkpoint models/student/best.pt
"""

# The repo root goes on sys.path before the imports, so `python benchmarks/<name>.py` works.
# ruff: noqa: E402
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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
from pipeline.checkpoint import load_checkpoint, model_from_checkpoint
from pipeline.codec import LandmarkCodec, resize_square
from pipeline.export import export_model
from pipeline.inference import INPUT_NAME, onnx_session
from pipeline.model import ModelConfig, build_model
from pipeline.params import load_params
from pipeline.teacher import Teacher, build_teacher_model

NAME = "inference"


def preprocess(images: list[np.ndarray], codec: LandmarkCodec, size: int) -> np.ndarray:
    """RGB uint8 (H, W, 3) images → float32 (N, 3, size, size) in [0, 1], the export's input.

    The picture is made as in training: the codec's layout (squash or letterbox) where the codec
    knows it, else the squash resize of ``pipeline.data``.
    """
    to_input = getattr(codec, "input_image", None) or resize_square
    batch = np.stack([to_input(rgb, size) for rgb in images])
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) / 255


def student_engines(model, config: ModelConfig, codec, epoch: int, threads: int) -> dict:
    model.eval()
    exported = export_model(model, config, codec, epoch).data
    # No spinning: idle ONNX Runtime threads would take CPU from torch and MediaPipe here.
    runtime = onnx_session(exported, threads=threads, spin=False)
    size = config.image_size

    @torch.inference_mode()
    def run_torch(images: list[np.ndarray]) -> np.ndarray:
        return model(torch.from_numpy(preprocess(images, codec, size))).numpy()

    def run_onnx(images: list[np.ndarray]) -> np.ndarray:
        return runtime.run(None, {INPUT_NAME: preprocess(images, codec, size)})[0]

    def run_preprocessing(images: list[np.ndarray]) -> np.ndarray:
        return preprocess(images, codec, size)

    return {
        "student (torch)": run_torch,
        "student (ONNX Runtime)": run_onnx,
        "student preprocessing only": run_preprocessing,
    }


def images_per_second(run: Callable, images: list[np.ndarray], batch: int) -> float:
    with Stopwatch() as watch:
        for start in range(0, len(images), batch):
            run(images[start : start + batch])
    return len(images) / watch.seconds


def measure(
    engines: dict[str, Callable], images: list[np.ndarray], batch_sizes: list[int], rounds: int
) -> dict[tuple[str, int], list[float]]:
    for run in engines.values():  # warm-up: kernels, allocations, oneDNN primitive caches
        for batch in batch_sizes:
            run(images[:batch])
    rates: dict[tuple[str, int], list[float]] = {}
    for round_index in range(rounds):
        for batch in batch_sizes:
            for name, run in engines.items():
                rates.setdefault((name, batch), []).append(images_per_second(run, images, batch))
        print(f"  round {round_index + 1}/{rounds} done")
    return rates


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--image-size", type=int, default=0, help="0: params.yaml train.image_size")
    parser.add_argument("--checkpoint", type=Path, help="a student checkpoint instead of fresh")
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    parser.add_argument("--source", choices=("synthetic", "digits"), default="synthetic")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine()
    info["torch_threads"] = torch.get_num_threads()

    if args.checkpoint:
        payload = load_checkpoint(args.checkpoint)
        model, codec, config = model_from_checkpoint(payload, args.checkpoint)
        epoch = payload["epoch"]
    else:
        size = args.image_size or load_params(REPO / "params.yaml").train.image_size
        torch.manual_seed(0)
        config = ModelConfig(image_size=size)
        model, codec, epoch = build_model(config), LandmarkCodec(), 0

    with temporary_folder(NAME) as tmp:
        images = read_all(write_images(args.source, args.images, Path(tmp)))
        teacher_path = Path(tmp) / "hand_landmarker.task"
        build_teacher_model(teacher_path)
        with Teacher(teacher_path) as teacher:
            detected = sum(teacher.detect(rgb).num_hands > 0 for rgb in images)
            engines = student_engines(model, config, codec, epoch, args.threads)
            engines["teacher (MediaPipe)"] = lambda batch: [teacher.detect(rgb) for rgb in batch]
            print(
                f"{len(images)} {args.source} images 640x480; student {config.image_size}px "
                f"({'checkpoint' if args.checkpoint else 'fresh weights'}); {args.threads} "
                f"threads; the teacher finds a hand in {detected}"
            )
            rates = measure(engines, images, args.batch_sizes, args.rounds)

    teacher_rate = {b: median(rates["teacher (MediaPipe)", b]) for b in args.batch_sizes}
    summary = []
    for (name, batch), values in rates.items():
        rate = median(values)
        summary.append(
            {
                "engine": name,
                "batch": batch,
                "images_per_second": round(rate, 1),
                "ms_per_image": round(1000 / rate, 2),
                "vs_teacher": round(rate / teacher_rate[batch], 2),
            }
        )
    summary.sort(key=lambda row: (row["batch"], row["engine"]))
    print()
    print(
        markdown_table(
            ["engine", "batch", "img/s", "ms/img", "x teacher"],
            [list(row.values()) for row in summary],
        )
    )
    output = {
        "benchmark": NAME,
        "images": len(images),
        "source": args.source,
        "student_image_size": config.image_size,
        "student_weights": str(args.checkpoint) if args.checkpoint else "fresh",
        "teacher_detected_hands_in": int(detected),
        "threads": args.threads,
        "rounds": args.rounds,
        "target": "student >= 3x teacher at batch 1",
        "student_time_includes": "resize to the input size (codec layout) + float tensor [0, 1]",
        "summary": summary,
        "machine": info,
    }
    suffix = f"_{config.image_size}" if args.image_size or args.checkpoint else ""
    finish(NAME + suffix, output)
    return output


if __name__ == "__main__":
    main()
