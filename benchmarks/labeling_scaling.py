"""How the `landmarks` labeling scales with worker processes (pipeline.labeling.label_images).

The same 640x480 PNG files are labelled by the MediaPipe teacher with 1, 2, ... worker processes
(up to the core count). Each worker count is timed twice: on all N images and on a warm-up run of
one image per worker. The steady rate is the slope between the two,
(N - w) / (T_N - T_w), so it EXCLUDES worker start-up (spawning, imports, loading the teacher);
start-up is reported on its own as T_w - w / rate. Scaling efficiency is the steady rate divided
by workers x the one-process steady rate (target >= 0.9). Rounds are interleaved across worker
counts so that drift in machine load hits all of them alike; the table shows medians.

    python benchmarks/labeling_scaling.py                      # 512 synthetic images, 3 rounds
    python benchmarks/labeling_scaling.py --images 1000 --rounds 5 --source digits
"""

# The repo root goes on sys.path before the imports, so `python benchmarks/<name>.py` works.
# ruff: noqa: E402
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    cpu_count,
    finish,
    machine,
    markdown_table,
    median,
    temporary_folder,
    write_images,
)
from pipeline.labeling import label_images
from pipeline.params import LandmarksParams
from pipeline.sources import DataListing
from pipeline.teacher import build_teacher_model

NAME = "labeling_scaling"


def subset(listing: DataListing, count: int) -> DataListing:
    return DataListing(root=listing.root, records=listing.records[:count], skipped=[])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512, help="images labelled per run")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions (median is shown)")
    parser.add_argument("--max-workers", type=int, default=cpu_count())
    parser.add_argument("--source", choices=("synthetic", "digits"), default="synthetic")
    args = parser.parse_args(argv)
    info = machine()
    settings = LandmarksParams()  # params.yaml's landmarks defaults: 2 hands, 0.5 thresholds
    worker_counts = list(range(1, args.max_workers + 1))

    with temporary_folder(NAME) as tmp:
        teacher = Path(tmp) / "hand_landmarker.task"
        build_teacher_model(teacher)  # cached per machine after the first build
        listing = write_images(args.source, args.images, Path(tmp), seed=0)
        count = len(listing.records)
        print(
            f"{count} {args.source} images 640x480 (PNG), workers {worker_counts}, "
            f"{args.rounds} rounds"
        )
        # Untimed: the first MediaPipe landmarker of a process pays for loading its libraries.
        label_images(subset(listing, 1), teacher, settings, 1, progress=False)
        runs: dict[int, list[dict]] = {w: [] for w in worker_counts}
        detected = None
        for round_index in range(args.rounds):
            for workers in worker_counts:
                warmup = label_images(
                    subset(listing, workers), teacher, settings, workers, progress=False
                )
                full = label_images(listing, teacher, settings, workers, progress=False)
                detected = int((full.table["num_hands"] > 0).sum())
                steady = (count - workers) / (full.seconds - warmup.seconds)
                runs[workers].append(
                    {
                        "seconds": full.seconds,
                        "warmup_seconds": warmup.seconds,
                        "steady_images_per_second": steady,
                        "startup_seconds": warmup.seconds - workers / steady,
                        "end_to_end_images_per_second": count / full.seconds,
                    }
                )
                print(
                    f"  round {round_index + 1} workers {workers}: {steady:.1f} img/s steady, "
                    f"{full.seconds:.2f}s for {count} images"
                )

    base = median([r["steady_images_per_second"] for r in runs[1]])
    base_end_to_end = median([r["end_to_end_images_per_second"] for r in runs[1]])
    summary = []
    for workers in worker_counts:
        steady = median([r["steady_images_per_second"] for r in runs[workers]])
        end_to_end = median([r["end_to_end_images_per_second"] for r in runs[workers]])
        summary.append(
            {
                "workers": workers,
                "steady_images_per_second": round(steady, 2),
                "scaling_efficiency": round(steady / (workers * base), 3),
                "startup_seconds": round(median([r["startup_seconds"] for r in runs[workers]]), 3),
                "end_to_end_images_per_second": round(end_to_end, 2),
                "end_to_end_efficiency": round(end_to_end / (workers * base_end_to_end), 3),
            }
        )
    print()
    print(
        markdown_table(
            [
                "workers",
                "img/s (steady)",
                "efficiency",
                "start-up s",
                "img/s (incl. start-up)",
                "efficiency (incl. start-up)",
            ],
            [list(row.values()) for row in summary],
        )
    )
    result = {
        "benchmark": NAME,
        "images": count,
        "source": args.source,
        "image_size": [640, 480],
        "teacher_detected_hands_in": detected,
        "rounds": args.rounds,
        "target_efficiency": 0.9,
        "method": "steady rate = (N - w) / (T_N - T_w): worker start-up excluded, reported apart",
        "summary": summary,
        "runs": {str(w): r for w, r in runs.items()},
        "machine": info,
    }
    finish(NAME, result)
    return result


if __name__ == "__main__":
    main()
