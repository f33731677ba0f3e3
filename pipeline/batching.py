"""Index batches over a data set: shuffled for training, in order for prediction."""

from __future__ import annotations

import torch


def batches(
    count: int,
    batch_size: int,
    generator: torch.Generator | None,
    min_size: int = 2,
    weights: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """Index batches over ``count`` samples, shuffled when a generator is given; with
    ``weights`` (N,), ``count`` draws with replacement, each sample as often as its weight says
    (the epoch keeps its length; data sets of different weights in one run).

    A last batch smaller than ``min_size`` is merged into the previous one: BatchNorm cannot
    train on a single sample (per process), and dropping it would silently lose data.
    """
    if weights is not None and generator is not None:
        order = torch.multinomial(weights.double(), count, replacement=True, generator=generator)
    elif generator is not None:
        order = torch.randperm(count, generator=generator)
    else:
        order = torch.arange(count)
    chunks = list(torch.split(order, batch_size))
    if len(chunks) > 1 and len(chunks[-1]) < min_size:
        single = chunks.pop()
        chunks[-1] = torch.cat([chunks[-1], single])
    return chunks
