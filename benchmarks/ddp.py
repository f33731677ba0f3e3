"""DistributedDataParallel training: the train stage with 1 process vs N processes (torchrun, gloo
on the CPU or NCCL on GPUs) on the same rendered images, same params and seed.

    python benchmarks/ddp.py               # 1 vs 2 CPU processes, 320 images, 128 px, 12 epochs
    python benchmarks/ddp.py --device cuda --processes 1 2   # on a machine with 2 GPUs
    python benchmarks/ddp.py --device cuda --processes 1 --torchrun-single   # one GPU: + NCCL

Each run is the real stage (`python -m stages.train`, which re-launches itself under torchrun
when train.processes > 1) in its own folder. Reported: wall time of the whole stage (process and
torchrun start, decoding, training, validation), the training rate of the epochs after the
first (steady), and the final validation MPJPE of each run against the 1-process run: the
global batch is the same, so only BatchNorm's per-process statistics and the augmentation draws
differ. To judge that difference, the 1-process run is repeated with another seed
(``--noise-seed``): two seeds differ by training noise alone. On the CPU each run gets the same
cores (train.threads = cores / processes). ``--torchrun-single`` adds a 1-process run launched by
torchrun (a process group of one: NCCL on a GPU), so that a one-GPU machine exercises the
distributed code path against the plain one.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    REPO,
    cpu_count,
    finish,
    machine,
    markdown_table,
    repo_environment,
    temporary_folder,
    truth_table,
    write_images,
)
from pipeline.checkpoint import LAST, load_checkpoint  # noqa: E402


def labelled_set(count: int, folder: Path, validation_fraction: float) -> tuple[pd.DataFrame, Path]:
    """Rendered 640x480 images with their true landmarks as the label table; and their root."""
    listing = write_images("synthetic", count, folder)
    table = truth_table(listing)
    train_count = round(len(table) * (1 - validation_fraction))
    table["split"] = ["train"] * train_count + ["validation"] * (len(table) - train_count)
    return table, listing.root


def run_stage(
    folder: Path, table: pd.DataFrame, root: Path, train: dict, torchrun: bool = False
) -> dict:
    folder.mkdir()
    values = yaml.safe_load((REPO / "params.yaml").read_text())
    values["data"].update(source="folders", root=str(root))
    # random initial weights (no pretrain stage here; they do not change the speed)
    values["train"].update({"pretrained": "none", **train})
    (folder / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    (folder / "data" / "split").mkdir(parents=True)
    table.to_parquet(folder / "data" / "split" / "labels.parquet")
    env = repo_environment()
    command = [sys.executable, "-m", "stages.train"]
    if torchrun:  # the stage launches itself this way when train.processes > 1
        command[1:1] = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1"]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"train stage failed:\n{result.stdout}\n{result.stderr}")
    history = load_checkpoint(folder / "models" / "student" / LAST)["history"]
    steady = [row["images_per_second"] for row in history[1:]] or [history[0]["images_per_second"]]
    return {
        "processes": train["processes"],
        "launcher": "torchrun" if torchrun or train["processes"] > 1 else "plain",
        "seed": train["seed"],
        "threads_per_process": train["threads"],
        "stage_seconds": round(seconds, 1),
        "train_img_per_s": round(float(np.median(steady)), 1),
        "final_val_mpjpe_px": history[-1]["val"]["mpjpe_px"],
        "final_val_pck_10": history[-1]["val"]["pck_10"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--noise-seed", type=int, default=1, help="seed of the repeated 1-process run (-1: none)"
    )
    parser.add_argument(
        "--torchrun-single",
        action="store_true",
        help="also run 1 process under torchrun (on a GPU: NCCL with a group of one)",
    )
    parser.add_argument("--name", help="results file name (default: ddp, or ddp_<device>)")
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="another train param for every run (YAML value), e.g. compile=true",
    )
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, separator, value = item.partition("=")
        if not separator:
            parser.error(f"--set {item!r}: expected KEY=VALUE, e.g. compile=true")
        overrides[key] = yaml.safe_load(value)

    rows = []
    runs = [(n, 0, False) for n in args.processes]
    if args.noise_seed >= 0:
        runs.insert(1, (args.processes[0], args.noise_seed, False))
    if args.torchrun_single:
        runs.append((1, 0, True))
    with temporary_folder("ddp") as tmp:
        table, root = labelled_set(args.images, Path(tmp) / "images", validation_fraction=0.2)
        for processes, seed, torchrun in runs:
            threads = max(1, cpu_count() // processes) if args.device == "cpu" else 0
            train = {
                "image_size": args.image_size,
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "device": args.device,
                "processes": processes,
                "threads": threads,
                "seed": seed,
                **overrides,
            }
            name = f"run{processes}-seed{seed}" + ("-torchrun" if torchrun else "")
            rows.append(run_stage(Path(tmp) / name, table, root, train, torchrun))
            print(rows[-1], flush=True)
    base = rows[0]
    for row in rows:
        row["speed_vs_first"] = round(row["train_img_per_s"] / base["train_img_per_s"], 3)
        row["stage_time_vs_first"] = round(row["stage_seconds"] / base["stage_seconds"], 3)
        row["mpjpe_relative_difference"] = round(
            row["final_val_mpjpe_px"] / base["final_val_mpjpe_px"] - 1, 4
        )
    print(
        markdown_table(
            [
                "processes",
                "launcher",
                "seed",
                "threads each",
                "train img/s (steady)",
                "× 1st",
                "stage s",
                "final val MPJPE px",
                "vs 1st",
            ],
            [
                [
                    r["processes"],
                    r["launcher"],
                    r["seed"],
                    r["threads_per_process"],
                    r["train_img_per_s"],
                    r["speed_vs_first"],
                    r["stage_seconds"],
                    r["final_val_mpjpe_px"],
                    f"{100 * r['mpjpe_relative_difference']:+.1f} %",
                ]
                for r in rows
            ],
        )
    )
    finish(
        args.name or ("ddp" if args.device == "cpu" else f"ddp_{args.device}"),
        {
            "machine": machine(),
            "images": args.images,
            "image_size": args.image_size,
            "epochs": args.epochs,
            "global_batch": args.batch_size,
            "device": args.device,
            "train_overrides": overrides,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
