"""One optimiser step of the training loop's ``train_step``, run by tests/test_distributed.py once
in a single process on a global batch and once under torchrun in 2 gloo processes on the same
batch; each writes the weights after the step and the gradient the step used.

    python -m tests.ddp_step_probe OUT BATCHNORM         # one process
    python -m torch.distributed.run --standalone --nproc-per-node=2 -m tests.ddp_step_probe \
        OUT BATCHNORM                                    # two processes

BATCHNORM is ``frozen`` (BatchNorm layers in eval mode: the batch statistics play no part, and
the two must agree to float rounding) or ``batch`` (training mode: each DDP process normalises
with its own half's statistics; the single-process run then forwards each half apart, the
reference DDP is equivalent to). Augmentation, dropout and EMA are off: nothing random is left.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from pipeline import distributed
from pipeline.inference import channels_last
from pipeline.training import batch_loss, build, step_context, step_model_for, train_step
from tests.tiny import skeleton_split

GLOBAL_BATCH = 8
PARAMS = dict(
    pretrained="none", input_layout="squash",
    image_size=32, batch_size=GLOBAL_BATCH, device="cpu", threads=1, dropout=0.0,
    color_jitter=0.0, grayscale_p=0.0, rotate_deg=0.0, scale_min=1.0, scale_max=1.0,
    translate=0.0, flip_p=0.0, ema_decay=0.0, epochs=1, warmup_epochs=0.0,
)  # fmt: skip


def freeze_batchnorm(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def main(out: str, batchnorm: str) -> None:
    from pipeline.params import TrainParams

    params = TrainParams(**PARAMS)
    train = skeleton_split(GLOBAL_BATCH, image_size=32, seed=3)
    with distributed.process_group("cpu") as ranks:
        torch.set_num_threads(1)
        device = torch.device("cpu")
        state = build(params, train, device, "probe", None, log=lambda _: None)
        context = step_context(params, state, train, device, ranks, GLOBAL_BATCH, 2)
        state.model.train()
        if batchnorm == "frozen":
            freeze_batchnorm(state.model)
        everything = torch.arange(GLOBAL_BATCH)
        if ranks.distributed or batchnorm == "frozen":
            step_model = step_model_for(state.model, params, device, ranks)
            index = distributed.shard(everything, ranks)
            train_step(context, state, step_model, index, 0, torch.Generator().manual_seed(0))
        else:
            # the reference for per-process statistics: the same shards forwarded apart, the
            # mean of their losses (DDP averages the processes' gradients)
            state.optimizer.zero_grad(set_to_none=True)
            for group in state.optimizer.param_groups:
                group["lr"] = params.lr  # train_step's schedule at step 0 (cosine starts at lr)
            halves = [everything[rank::2] for rank in range(2)]
            total = 0
            for index in halves:
                x = context.images[index].float().div_(255)
                if channels_last(context.device):  # as train_step feeds the model
                    x = x.contiguous(memory_format=torch.channels_last)
                landmarks = context.frame[index]
                outputs = state.model.forward_train(x)
                targets = context.codec.standardise(landmarks)
                loss = batch_loss(state.model, outputs, targets, landmarks, params,
                                  context.loss_fn, None, index, context.presence)  # fmt: skip
                total = total + loss / len(halves)
            total.backward()
            state.optimizer.step()
        if ranks.is_main:
            named = list(state.model.named_parameters())
            torch.save(
                {
                    "weights": {k: v.detach().clone() for k, v in named},
                    # what the step used: under DDP the average over the processes
                    "gradients": {k: v.grad.detach().clone() for k, v in named},
                },
                Path(out),
            )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
