"""Index batches over a data set: shuffled for training, in order for prediction."""

from __future__ import annotations

import torch


def batches(
    count: int, batch_size: int, generator: torch.Generator | None, min_size: int = 2
) -> list[torch.Tensor]:
    """Index batches over ``count`` samples, shuffled when a generator is given.

    A last batch smaller than ``min_size`` is merged into the previous one: BatchNorm cannot
    train on a single sample (per process), and dropping it would silently lose data.
    """
    order = (
        torch.randperm(count, generator=generator) if generator is not None else torch.arange(count)
    )
    chunks = list(torch.split(order, batch_size))
    if len(chunks) > 1 and len(chunks[-1]) < min_size:
        single = chunks.pop()
        chunks[-1] = torch.cat([chunks[-1], single])
    return chunks
