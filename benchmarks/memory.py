"""Memory of labeling and of training as the data set grows.

Labeling streams (one image in flight per worker, one small row kept per image), so its peak
memory should stay flat from a small to a large set. Training decodes every image once at
training resolution (N x 3 x S x S bytes): held in memory that grows linearly, so above
``train.cache_budget_mib`` it goes to a temporary file read per batch, and the peak stays flat.
Each size is measured with the cache in memory and on disk (budget 0): the cache build, then
training epochs on it.

    python benchmarks/memory.py                  # 500 vs 2000 synthetic images
    python benchmarks/memory.py --sizes 500 5000 # the reliability issue's 5,000-image check

Every measured step (labeling; training from a memory cache; training from a disk cache) runs
in a fresh Python process, so no step inherits another's memory. Peak memory is the largest
summed resident set of that process and its children (the labeling workers), sampled every
50 ms.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    finish,
    machine,
    markdown_table,
    temporary_folder,
    tree_memory,
    write_images,
)


class PeakMemory:
    """Largest summed RSS of this process and its children while the block runs."""

    def __enter__(self) -> PeakMemory:
        self.start = self.peak = self._total()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def _total() -> int:
        return tree_memory(psutil.Process(), "rss")

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._total())
            time.sleep(0.05)

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


def label_step(images: Path, teacher: Path, workers: int, table_path: Path) -> dict:
    from pipeline.labeling import label_images
    from pipeline.params import LandmarksParams
    from pipeline.sources.listing import list_images

    listing = list_images("synthetic", images)
    with PeakMemory() as labeling:
        started = time.perf_counter()
        result = label_images(listing, teacher, LandmarksParams(), workers, progress=False)
        seconds = time.perf_counter() - started
    result.table.dropna(subset=["x0"]).reset_index(drop=True).to_parquet(table_path)
    return {
        "labeling_start_mib": mib(labeling.start),
        "labeling_peak_mib": mib(labeling.peak),
        "labeling_seconds": round(seconds, 1),
    }


def train_step(images: Path, table_path: Path, mode: str, image_size: int, epochs: int) -> dict:
    import pandas as pd

    from pipeline.data import load_split
    from pipeline.params import TrainParams
    from pipeline.training import fit

    table = pd.read_parquet(table_path)
    params = TrainParams(
        pretrained="none",  # random initial weights: they do not change the memory
        image_size=image_size,
        epochs=epochs,
        batch_size=32,
        device="cpu",
        head="integral",
        loss="l1",
        distribution_weight=1.0,
    )
    validation = load_split(table.iloc[:32], images, image_size)
    with temporary_folder("memory-train") as tmp:
        budget = 0 if mode == "disk" else None
        with PeakMemory() as peak:
            split = load_split(table, images, image_size, budget_bytes=budget)
            started = time.perf_counter()
            fit(split, validation, params, Path(tmp), log=noop)
            seconds = time.perf_counter() - started
    return {
        f"{mode}_start_mib": mib(peak.start),
        f"{mode}_train_peak_mib": mib(peak.peak),
        f"{mode}_train_img_per_s": round(len(split) * epochs / seconds, 1),
        "trained_images": len(split),
        "cache_tensor_mib": mib(len(split) * 3 * image_size * image_size),
    }


def in_fresh_process(step: str, **arguments) -> dict:
    command = [sys.executable, __file__, "--step", step, "--arguments", json.dumps(arguments)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{step} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(count: int, workers: int, image_size: int, teacher: Path, epochs: int) -> dict:
    row: dict = {"images": count}
    with temporary_folder("memory") as tmp:
        listing = write_images("synthetic", count, Path(tmp))
        table = Path(tmp) / "labels.parquet"
        row |= in_fresh_process(
            "label",
            images=str(listing.root),
            teacher=str(teacher),
            workers=workers,
            table_path=str(table),
        )
        for mode in ("memory", "disk"):
            row |= in_fresh_process(
                "train",
                images=str(listing.root),
                table_path=str(table),
                mode=mode,
                image_size=image_size,
                epochs=epochs,
            )
    return row


def mib(value: float) -> float:
    return round(value / 2**20, 1)


def noop(_: str) -> None:
    pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--image-size", type=int, default=128, help="training resolution of the cache"
    )
    parser.add_argument("--epochs", type=int, default=1, help="training epochs per measurement")
    parser.add_argument("--step", choices=["label", "train"], help=argparse.SUPPRESS)
    parser.add_argument("--arguments", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:  # one measured step, in this fresh process
        arguments = json.loads(args.arguments)
        for key in ("images", "teacher", "table_path"):
            if key in arguments:
                arguments[key] = Path(arguments[key])
        step = label_step if args.step == "label" else train_step
        print(json.dumps(step(**arguments)))
        return

    from pipeline.teacher import build_teacher_model

    with temporary_folder("teacher") as tmp:
        teacher = Path(tmp) / "hand_landmarker.task"
        build_teacher_model(teacher)
        rows = []
        for n in args.sizes:
            rows.append(measure(n, args.workers, args.image_size, teacher, args.epochs))
            print(rows[-1], flush=True)
    small, large = rows[0], rows[-1]

    def ratio(key: str) -> float:
        return round(large[key] / max(small[key], 1.0), 3)

    summary = {
        "data_ratio": round(large["trained_images"] / small["trained_images"], 3),
        "labeling_peak_ratio": ratio("labeling_peak_mib"),
        "memory_cache_train_ratio": ratio("memory_train_peak_mib"),
        "disk_cache_train_ratio": ratio("disk_train_peak_mib"),
        "disk_vs_memory_train_speed": round(
            large["disk_train_img_per_s"] / large["memory_train_img_per_s"], 3
        ),
    }
    header = [
        "images (trained)",
        "labeling peak MiB",
        "cache tensor MiB",
        "train peak MiB, cache in memory",
        "train peak MiB, cache on disk",
        "img/s memory / disk",
    ]
    print(
        markdown_table(
            header,
            [
                [
                    f"{r['images']} ({r['trained_images']})",
                    r["labeling_peak_mib"],
                    r["cache_tensor_mib"],
                    r["memory_train_peak_mib"],
                    r["disk_train_peak_mib"],
                    f"{r['memory_train_img_per_s']} / {r['disk_train_img_per_s']}",
                ]
                for r in rows
            ],
        )
    )
    print(
        f"\n{summary['data_ratio']:g}x the trained images: labeling peak "
        f"x{summary['labeling_peak_ratio']}, training peak "
        f"x{summary['memory_cache_train_ratio']} with the cache in memory, "
        f"x{summary['disk_cache_train_ratio']} with it on disk; disk-cache training speed "
        f"{summary['disk_vs_memory_train_speed']} of in-memory "
        f"({args.image_size}x{args.image_size}x3 bytes per image)"
    )
    finish(
        "memory",
        {
            "machine": machine(),
            "workers": args.workers,
            "image_size": args.image_size,
            "epochs": args.epochs,
            "rows": rows,
            "summary": summary,
        },
    )


if __name__ == "__main__":
    main()
