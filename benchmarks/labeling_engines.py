"""The `landmarks` labeling engines side by side: local worker processes and Ray actors.

The same 640x480 PNG files are labelled by the MediaPipe teacher with the local engine
(``pipeline.labeling.label_images``) and the Ray engine (``pipeline.ray_labeling``, a fresh local
Ray cluster of all cores per configuration) at 1 and 2 workers. Each configuration labels the N
images, then the N images again and 3N images (the list three times over); each call starts its
own processes or actors, as the stage does:

- steady img/s = 2N / (T_3N - T_N again): start-up of processes/actors EXCLUDED;
- start-up s = T_N - N / steady, for the first call (spawn, imports, loading the teacher);
- img/s excl. cluster = N / T_N of the first call: the engine's own start-up included, the Ray
  cluster's start (``ray.init``) excluded, as when the stage joins a running cluster;
- img/s incl. cluster = N / (T_cluster + T_N): what `landmarks.engine=ray` with an empty
  ``ray_address`` costs on one machine, where the stage starts and stops its own cluster.

Every first call's table is checked against the local one-process table (same rows and values).

    python benchmarks/labeling_engines.py                      # 120 synthetic images, 2 rounds
    python benchmarks/labeling_engines.py --images 500 --rounds 3 --max-workers 4
"""

# The repo root goes on sys.path before the imports, so `python benchmarks/<name>.py` works.
# ruff: noqa: E402
from __future__ import annotations

import argparse
import sys
import time
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

NAME = "labeling_engines"


def repeated(listing: DataListing, times: int) -> DataListing:
    return DataListing(root=listing.root, records=listing.records * times, skipped=[])


def run_local(listing, teacher, settings, workers: int) -> dict:
    def label(images: DataListing):
        return label_images(images, teacher, settings, workers, progress=False)

    return {"cluster_seconds": 0.0, **three_calls(label, listing)}


def run_ray(listing, teacher, settings, workers: int, cores: int) -> dict:
    import ray

    from pipeline.ray_labeling import connect, label_images_ray

    def label(images: DataListing):
        return label_images_ray(images, teacher, settings, workers, progress=False)

    started = time.perf_counter()
    connect(num_cpus=cores)
    cluster_seconds = time.perf_counter() - started
    try:
        return {"cluster_seconds": cluster_seconds, **three_calls(label, listing)}
    finally:
        ray.shutdown()


def three_calls(label, listing: DataListing) -> dict:
    first = label(listing)
    return {"first": first, "again": label(listing), "triple": label(repeated(listing, 3))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=120, help="images labelled per run")
    parser.add_argument("--rounds", type=int, default=2, help="repetitions (median is shown)")
    parser.add_argument("--max-workers", type=int, default=min(2, cpu_count()))
    parser.add_argument("--source", choices=("synthetic", "digits"), default="synthetic")
    args = parser.parse_args(argv)
    info = machine()
    import ray

    info["ray"] = ray.__version__
    settings = LandmarksParams()  # params.yaml's landmarks defaults: 2 hands, 0.5 thresholds
    cores = cpu_count()
    configs = [
        (engine, workers)
        for engine in ("local", "ray")
        for workers in range(1, args.max_workers + 1)
    ]

    with temporary_folder(NAME) as tmp:
        teacher = Path(tmp) / "hand_landmarker.task"
        build_teacher_model(teacher)  # cached per machine after the first build
        listing = write_images(args.source, args.images, Path(tmp), seed=0)
        count = len(listing.records)
        print(
            f"{count} {args.source} images 640x480 (PNG), {configs}, Ray cluster of {cores} "
            f"CPUs, {args.rounds} rounds"
        )
        # The reference table; untimed, since the first landmarker of a process loads libraries.
        reference = label_images(listing, teacher, settings, 1, progress=False).table
        runs: dict[str, list[dict]] = {f"{e}-{w}": [] for e, w in configs}
        for round_index in range(args.rounds):
            for engine, workers in configs:
                if engine == "local":
                    timed = run_local(listing, teacher, settings, workers)
                else:
                    timed = run_ray(listing, teacher, settings, workers, cores)
                first, cluster = timed["first"], timed["cluster_seconds"]
                assert first.table.equals(reference), f"{engine}-{workers} labelled differently"
                steady = 2 * count / (timed["triple"].seconds - timed["again"].seconds)
                run = {
                    "seconds": first.seconds,
                    "again_seconds": timed["again"].seconds,
                    "triple_seconds": timed["triple"].seconds,
                    "cluster_seconds": cluster,
                    "steady_images_per_second": steady,
                    "startup_seconds": first.seconds - count / steady,
                    "images_per_second_excl_cluster": count / first.seconds,
                    "images_per_second_incl_cluster": count / (first.seconds + cluster),
                }
                runs[f"{engine}-{workers}"].append(run)
                print(
                    f"  round {round_index + 1} {engine} x{workers}: {steady:.1f} img/s steady, "
                    f"{first.seconds:.2f}s for {count} images, cluster start {cluster:.1f}s"
                )

    summary = []
    for engine, workers in configs:
        key = f"{engine}-{workers}"

        def med(field: str, key: str = key) -> float:
            return round(median([r[field] for r in runs[key]]), 2)

        summary.append(
            {
                "engine": engine,
                "workers": workers,
                "steady_images_per_second": med("steady_images_per_second"),
                "startup_seconds": med("startup_seconds"),
                "images_per_second_excl_cluster": med("images_per_second_excl_cluster"),
                "cluster_start_seconds": med("cluster_seconds"),
                "images_per_second_incl_cluster": med("images_per_second_incl_cluster"),
            }
        )
    print()
    print(
        markdown_table(
            [
                "engine",
                "workers",
                "img/s steady (start-up excl.)",
                "process/actor start-up s",
                "img/s excl. cluster start",
                "cluster start s",
                "img/s incl. cluster start",
            ],
            [list(row.values()) for row in summary],
        )
    )
    result = {
        "benchmark": NAME,
        "images": count,
        "source": args.source,
        "image_size": [640, 480],
        "rounds": args.rounds,
        "tables_identical": True,  # asserted for every run above
        "method": (
            "steady = 2N / (T_3N - T_N again) excludes process/actor start-up; excl. cluster = "
            "N / T_N (first call); incl. cluster = N / (T_ray_init + T_N); Ray: a fresh local "
            "cluster of all cores per configuration and round"
        ),
        "summary": summary,
        "runs": runs,
        "machine": info,
    }
    finish(NAME, result)
    return result


if __name__ == "__main__":
    main()
