"""Run under torchrun by tests/test_distributed.py: join the gloo group, decode one split with
``load_split`` and report, per process, what the cache holds and which file backs it.

    python -m torch.distributed.run --standalone --nproc-per-node=2 -m tests.ddp_cache_probe \
        DATA_ROOT LABELS OUT_FOLDER BUDGET_BYTES
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pandas as pd

from pipeline import distributed
from pipeline.data import CACHE_PREFIX, DiskImages, image_chunks, load_split


def backing_inode(images) -> int:
    """The inode of the file behind the cache: the one DiskImages reads, or the one mapped."""
    if isinstance(images, DiskImages):
        return os.fstat(images._file.fileno()).st_ino
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and CACHE_PREFIX in fields[5]:
            return int(fields[4])
    return 0  # not backed by a shared file


def main() -> None:
    data_root, labels, out, budget = sys.argv[1:5]
    with distributed.process_group("cpu") as ranks:
        split = load_split(pd.read_parquet(labels), data_root, 64, "squash", int(budget))
        digest = hashlib.sha256()
        for chunk in image_chunks(split.images):
            digest.update(chunk.numpy().tobytes())
        report = {
            "on_disk": split.on_disk,
            "sha256": digest.hexdigest(),
            "inode": backing_inode(split.images),
        }
        Path(out, f"rank{ranks.rank}.json").write_text(json.dumps(report))
        distributed.barrier()


if __name__ == "__main__":
    main()
