"""Memory of the decoded-image cache under DDP: the processes of one machine should hold one
copy between them, not one each.

    python benchmarks/ddp_memory.py               # 200 vs 1100 photos, 448 px, 1 and 2 processes

For each process count (torchrun, gloo) and each data set size, a fresh process group decodes
the split with ``pipeline.data.load_split`` (in memory, as the train stage does within
``train.cache_budget_mib``) and waits; the largest summed proportional set size (PSS: a page
mapped by k processes counts 1/k to each, so shared pages are counted once) of torchrun and its
workers is sampled every 100 ms. The increase from the small to the large set, over the cache's
own increase, is the number of copies the machine holds: 1.0 when shared, 2.0 for 2 processes
with a copy each. The images are the sign-language-digit photos scaled to 640x480 (content does
not matter here; they are quick to write).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    finish,
    machine,
    markdown_table,
    repo_environment,
    temporary_folder,
    tree_memory,
    write_images,
)
from pipeline import distributed  # noqa: E402
from pipeline.data import cache_bytes, load_split  # noqa: E402
from pipeline.schema import LANDMARK_COLUMNS  # noqa: E402


def measure(processes: int, table_path: Path, data_root: Path, image_size: int) -> tuple[int, int]:
    """Summed PSS (bytes) of a torchrun group that decodes the split and waits: the peak
    (decoding included) and the largest once every process holds the decoded split."""
    decoded = table_path.with_suffix(".decoded")
    arguments = ["--worker", str(table_path), str(data_root), str(image_size), str(decoded)]
    command = distributed.launch_command(processes, "benchmarks.ddp_memory", arguments)
    # glibc gives freed decode buffers back at once, so the steady state is the live data only
    env = repo_environment(
        OMP_NUM_THREADS="1",
        MALLOC_ARENA_MAX="1",
        MALLOC_TRIM_THRESHOLD_="0",
        MALLOC_MMAP_THRESHOLD_="65536",
    )
    launcher = subprocess.Popen(command, env=env)
    peak = steady = 0
    root = psutil.Process(launcher.pid)
    while launcher.poll() is None:
        total = tree_memory(root, "pss")
        peak = max(peak, total)
        if decoded.exists():
            steady = max(steady, total)
        time.sleep(0.1)
    if launcher.returncode != 0 or not steady:
        raise SystemExit(
            f"torchrun exited with {launcher.returncode} (steady state seen: {steady})"
        )
    decoded.unlink()
    return peak, steady


def worker(table_path: str, data_root: str, image_size: int, decoded: str) -> None:
    with distributed.process_group("cpu") as ranks:
        split = load_split(pd.read_parquet(table_path), data_root, image_size, budget_bytes=None)
        assert not split.on_disk
        distributed.barrier()
        if ranks.is_main:
            Path(decoded).touch()
        time.sleep(1.5)  # the sampler reads the decoded state meanwhile
        distributed.barrier()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        worker(argv[1], argv[2], int(argv[3]), argv[4])
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs=2, default=[200, 1100])
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)

    small, large = args.sizes
    rows = []
    with temporary_folder("ddp-memory") as tmp:
        listing = write_images("digits", large, Path(tmp) / "images")
        paths = [record.path for record in listing.records]
        tables = {}
        for count in (small, large):
            tables[count] = Path(tmp) / f"table{count}.parquet"
            pd.DataFrame({"path": paths[:count], "width": 640, "height": 480}).assign(
                **{c: 0.0 for c in LANDMARK_COLUMNS}
            ).to_parquet(tables[count])
        size = args.image_size
        cache_growth = cache_bytes(large, size) - cache_bytes(small, size)
        for processes in args.processes:
            measured = {n: measure(processes, tables[n], listing.root, size) for n in tables}
            row = {"processes": processes}
            for which, k in (("steady", 1), ("peak", 0)):
                growth = measured[large][k] - measured[small][k]
                row[f"{which}_mib_{small}"] = round(measured[small][k] / 2**20, 1)
                row[f"{which}_mib_{large}"] = round(measured[large][k] / 2**20, 1)
                row[f"{which}_copies"] = round(growth / cache_growth, 2)
            rows.append(row)
            print(rows[-1], flush=True)
    print(f"cache growth from {small} to {large} images: {cache_growth / 2**20:.1f} MiB")
    print(
        markdown_table(
            [
                "processes",
                f"decoded: PSS MiB, {small}",
                f"decoded: PSS MiB, {large}",
                "copies held",
                f"peak PSS MiB, {small}",
                f"peak PSS MiB, {large}",
                "copies at peak",
            ],
            [list(row.values()) for row in rows],
        )
    )
    finish(
        "ddp_memory",
        {"machine": machine(), "image_size": args.image_size, "sizes": args.sizes, "rows": rows},
    )


if __name__ == "__main__":
    main()
