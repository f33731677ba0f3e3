"""Memory of labeling and of the decode-once training cache as the data set grows.

Labeling streams (one image in flight per worker, one small row kept per image), so its peak
memory should stay flat from a small to a large set; the training cache holds every image at
training resolution, N x 3 x S x S bytes, so it grows linearly and must fit a budget.

    python benchmarks/memory.py                  # 500 vs 2000 synthetic images
    python benchmarks/memory.py --sizes 500 5000 # the issue's 5,000-image check

Peak memory is the largest summed resident set of the measuring process and all its children
(the labeling workers), sampled every 50 ms.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import finish, machine, markdown_table, temporary_folder, write_images  # noqa: E402


class PeakMemory:
    """Largest summed RSS of this process and its children while the block runs."""

    def __enter__(self) -> PeakMemory:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.05)

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


def measure(count: int, workers: int, image_size: int, teacher: Path) -> dict:
    from pipeline.data import load_split
    from pipeline.labeling import label_images
    from pipeline.teacher import TeacherSettings

    with temporary_folder("memory") as tmp:
        listing = write_images("synthetic", count, Path(tmp))
        with PeakMemory() as labeling:
            started = time.perf_counter()
            result = label_images(listing, teacher, TeacherSettings(), workers, progress=False)
            label_seconds = time.perf_counter() - started
        with PeakMemory() as cache:
            split = load_split(result.table, listing.root, image_size)
        cache_bytes = split.images.numel() * split.images.element_size()
        del split
    return {
        "images": count,
        "labeling_peak_mib": round(labeling.peak / 2**20, 1),
        "labeling_seconds": round(label_seconds, 1),
        "cache_tensor_mib": round(cache_bytes / 2**20, 1),
        "cache_peak_mib": round(cache.peak / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--image-size", type=int, default=128, help="training resolution of the cache"
    )
    args = parser.parse_args(argv)

    from pipeline.teacher import build_teacher_model

    with temporary_folder("teacher") as tmp:
        teacher = Path(tmp) / "hand_landmarker.task"
        build_teacher_model(teacher)
        rows = [measure(n, args.workers, args.image_size, teacher) for n in args.sizes]
    small, large = rows[0], rows[-1]
    growth = large["images"] / small["images"]
    summary = {
        "labeling_peak_ratio": round(large["labeling_peak_mib"] / small["labeling_peak_mib"], 3),
        "cache_peak_ratio": round(large["cache_peak_mib"] / small["cache_peak_mib"], 3),
        "data_ratio": growth,
    }
    header = [
        "images",
        "labeling peak MiB",
        "labeling s",
        "cache tensor MiB",
        "cache-build peak MiB",
    ]
    print(
        markdown_table(
            header,
            [
                [
                    r["images"],
                    r["labeling_peak_mib"],
                    r["labeling_seconds"],
                    r["cache_tensor_mib"],
                    r["cache_peak_mib"],
                ]
                for r in rows
            ],
        )
    )
    print(
        f"\n{growth:g}x the images: labeling peak x{summary['labeling_peak_ratio']}, "
        f"training-cache build peak x{summary['cache_peak_ratio']} "
        f"(the cache is {args.image_size}x{args.image_size}x3 bytes per image)"
    )
    finish(
        "memory",
        {
            "machine": machine(),
            "workers": args.workers,
            "image_size": args.image_size,
            "rows": rows,
            "summary": summary,
        },
    )


if __name__ == "__main__":
    main()
