"""Data-parallel training across processes started by ``torchrun`` (one per GPU, or several on
CPU cores): who this process is, the process group, and the few collective steps ``fit`` needs.

The stage re-launches itself through ``torch.distributed.run`` when ``train.processes`` > 1
(``launch_command``); under torchrun, RANK / WORLD_SIZE / LOCAL_RANK describe this process. A
plain single process needs none of this: every function here is a no-op for it.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # the processes on this machine
    machine: int = 0  # this machine's number among the machines (torchrun's GROUP_RANK)

    @property
    def is_main(self) -> bool:
        """Only the main process writes checkpoints, logs and outputs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def on_this_machine(self) -> Ranks:
        """This process's place among the processes of its machine only."""
        return Ranks(self.local_rank, self.local_world_size, self.local_rank, self.local_world_size)


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def ranks_from_environment() -> Ranks:
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    return Ranks(
        rank=int(os.environ.get("RANK", 0)),
        world_size=world_size,
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        # Without torchrun's word, assume no other process shares this machine (nothing shared).
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
        machine=int(os.environ.get("GROUP_RANK", 0)),
    )


def current_ranks() -> Ranks:
    """The ranks of the initialised process group, or a single process when there is none."""
    if dist.is_available() and dist.is_initialized():
        described = ranks_from_environment()  # where torchrun put us: machine, local rank
        return dataclasses.replace(
            described, rank=dist.get_rank(), world_size=dist.get_world_size()
        )
    return Ranks()


def launch_command(processes: int, module: str, argv: list[str]) -> list[str]:
    """``torchrun --standalone`` for ``processes`` copies of ``python -m module argv`` on this
    machine (the launcher picks a free port; no cluster needed)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        "-m",
        module,
        *argv,
    ]


def backend_for(device_name: str) -> str:
    """NCCL between GPUs, gloo between CPU processes."""
    wants_gpu = device_name in ("auto", "cuda")
    return "nccl" if wants_gpu and torch.cuda.is_available() else "gloo"


@contextmanager
def process_group(device_name: str, timeout_s: float = 1800) -> Iterator[Ranks]:
    """Join the process group torchrun describes (if any) for the block, then leave it."""
    ranks = ranks_from_environment()
    if not ranks.distributed:
        yield ranks
        return
    _exit_with_launcher()
    backend = backend_for(device_name)
    if backend == "nccl":
        gpus = torch.cuda.device_count()
        per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", ranks.world_size))
        if per_machine > gpus:
            raise RuntimeError(
                f"{per_machine} training processes on this machine but {gpus} GPU(s) visible: "
                f"set train.processes to at most {gpus} (one per GPU) or train.device=cpu"
            )
        torch.cuda.set_device(ranks.local_rank)
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    try:
        yield ranks
    finally:
        dist.destroy_process_group()


def _exit_with_launcher(poll_s: float = 0.2) -> None:
    """torchrun starts each process in a session of its own, so a kill -9 of the launcher (or
    of `dvc repro` above it) would leave the processes training on and writing checkpoints
    under the next run. They watch their parent instead and stop within ``poll_s`` of it."""
    launcher = os.getppid()

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(poll_s)
        print("the torchrun launcher is gone; stopping this training process", file=sys.stderr)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-launcher", daemon=True).start()


def shard(index: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """This rank's share of a global batch: every world_size-th sample from its rank on."""
    return index[ranks.rank :: ranks.world_size] if ranks.distributed else index


def contiguous_shares(count: int, ranks: Ranks) -> list[np.ndarray]:
    """Positions 0..count-1 cut into world_size consecutive parts, one per rank."""
    return np.array_split(np.arange(count), ranks.world_size)


def sum_across(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64)."""
    if not current_ranks().distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def gather_rows(part: np.ndarray) -> np.ndarray:
    """Concatenate every rank's ``part`` in rank order, on every rank."""
    if not current_ranks().distributed:
        return part
    return np.concatenate(gather_objects(part))


def gather_objects(value: object) -> list:
    """Every rank's ``value`` (picklable) in rank order, on every rank."""
    if not current_ranks().distributed:
        return [value]
    values: list = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank: each rank updated its
    own from its share of the last batch, and what is validated and saved must be one model."""
    if not current_ranks().distributed:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def barrier() -> None:
    if current_ranks().distributed:
        dist.barrier()
