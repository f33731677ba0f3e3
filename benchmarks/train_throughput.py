"""Training throughput: the full loop (pipeline.training.fit) vs the model alone.

The full loop is ``fit`` with params.yaml's train recipe (``--params``) at the benchmark's image
size, batch, device and epochs: batches cut from the decoded uint8 tensor, converted and augmented
on the device, forward, loss, backward, AdamW step (and whatever else the recipe turns on, such
as weight averaging), per-epoch validation on a 2-image split and checkpoints. Its rate is what
``fit`` logs per epoch (``images_per_second``), median over the epochs after the first (the first
pays for oneDNN / cuDNN set-up). The model alone is forward + loss + backward + AdamW step on
random tensors of the same shape, batch, device and thread count, timed before and after ``fit``
(the mean of the two brackets drift in machine load). Target: full loop >= 0.9 x model alone.

With ``--data synthetic`` (default) the images are 640x480 PNG files from the project's renderer
and the decode-once cache build (``pipeline.data.load_split``) is timed and reported on its own;
``--data skeleton`` uses the tests' in-memory skeleton drawings (no files, no cache build).

    python benchmarks/train_throughput.py                       # 128 px, batch 16, CPU, 2 threads
    python benchmarks/train_throughput.py --image-size 224
    python benchmarks/train_throughput.py --device cuda --batch-size 64 --images 2048
"""

# The repo root goes on sys.path before the imports, so `python benchmarks/<name>.py` works.
# ruff: noqa: E402
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import (
    REPO,
    Stopwatch,
    finish,
    machine,
    markdown_table,
    median,
    temporary_folder,
    truth_table,
    write_images,
)
from pipeline.data import SplitData, load_split
from pipeline.inference import autocast, select_device
from pipeline.keypoints import NUM_JOINTS
from pipeline.model import ModelConfig, build_model
from pipeline.params import TrainParams, load_params
from pipeline.training import fit

NAME = "train_throughput"


def synthetic_split(
    count: int, folder: Path, image_size: int, layout: str
) -> tuple[SplitData, float]:
    """Rendered images with their true landmarks (z = 0) as labels; and the cache build seconds."""
    listing = write_images("synthetic", count, folder)
    table = truth_table(listing)
    with Stopwatch() as watch:
        split = load_split(table, listing.root, image_size, layout)
    return split, watch.seconds


def skeleton(count: int, image_size: int, seed: int) -> SplitData:
    from tests.tiny import skeleton_split

    return skeleton_split(count, image_size=image_size, seed=seed, width=640, height=480)


def model_alone(params: TrainParams, steps: int, warmup: int = 3) -> float:
    """Images per second of forward + loss + backward + AdamW step on random tensors (a plain
    smooth L1 on the (N, joints*3) output: the loss's cost is nothing next to the model's)."""
    device = select_device(params.device)
    torch.manual_seed(0)
    model = build_model(ModelConfig.for_training(params)).to(device).train()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=params.lr, weight_decay=params.weight_decay
    )
    size = params.image_size
    x = torch.rand(params.batch_size, 3, size, size, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randn(params.batch_size, NUM_JOINTS * 3, device=device)

    def step() -> None:
        with autocast(device):
            outputs = model(x)[0]
        loss = torch.nn.functional.smooth_l1_loss(outputs.float(), y, beta=0.02)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    synchronize(device)
    with Stopwatch() as watch:
        for _ in range(steps):
            step()
        synchronize(device)
    return steps * params.batch_size / watch.seconds


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--images", type=int, default=320, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="the first one is not counted")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "mps"))
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--data", choices=("synthetic", "skeleton"), default="synthetic")
    parser.add_argument("--params", default=str(REPO / "params.yaml"), help="the train recipe")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is warm-up)")
    torch.set_num_threads(args.threads)
    # The train stage's recipe (head, loss, augmentation, EMA ...) at the benchmark's sizes;
    # random initial weights (pretrained weights do not change the speed).
    params = dataclasses.replace(
        load_params(args.params).train,
        pretrained="none",
        image_size=args.image_size,
        batch_size=args.batch_size,
        epochs=args.epochs,
        device=args.device,
        threads=args.threads,
    )
    device = select_device(args.device)
    info = machine()
    info["torch_threads"] = torch.get_num_threads()
    steps_per_epoch = args.images // args.batch_size

    with temporary_folder(NAME) as tmp:
        cache_seconds = None
        if args.data == "synthetic":
            train, cache_seconds = synthetic_split(
                args.images, Path(tmp), args.image_size, params.input_layout
            )
        else:
            train = skeleton(args.images, args.image_size, seed=1)
        validation = skeleton(2, args.image_size, seed=2)
        print(
            f"{len(train)} {args.data} training images at {args.image_size}px, batch "
            f"{args.batch_size}, {device}, {args.threads} torch threads"
        )

        before = model_alone(params, steps_per_epoch)
        result = fit(train, validation, params, Path(tmp) / "checkpoints", log=print)
        after = model_alone(params, steps_per_epoch)

    loop = median([row["images_per_second"] for row in result.history[1:]])
    alone = (before + after) / 2
    ratio = loop / alone
    rows = [
        ["full training loop (fit)", round(loop, 2), round(ratio, 3)],
        ["model alone (fwd + bwd + AdamW)", round(alone, 2), 1.0],
    ]
    print()
    print(markdown_table(["", "img/s", "ratio"], rows))
    if cache_seconds is not None:
        print(
            f"\ndecode-once cache build (load_split): {cache_seconds:.2f}s for {len(train)} "
            f"640x480 PNGs ({len(train) / cache_seconds:.0f} img/s), once per run"
        )
    output = {
        "benchmark": NAME,
        "device": str(device),
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "images": len(train),
        "data": args.data,
        "epochs": args.epochs,
        "target_ratio": 0.9,
        "loop_images_per_second": round(loop, 2),
        "model_alone_images_per_second": round(alone, 2),
        "model_alone_before_after": [round(before, 2), round(after, 2)],
        "ratio": round(ratio, 3),
        "epoch_images_per_second": [row["images_per_second"] for row in result.history],
        "cache_build_seconds": None if cache_seconds is None else round(cache_seconds, 3),
        "machine": info,
    }
    suffix = f"_{args.image_size}" if args.image_size != 128 else ""
    finish(NAME + suffix + ("" if device.type == "cpu" else f"_{device.type}"), output)
    return output


if __name__ == "__main__":
    main()
