"""Fit the student: seeded, checkpointed every epoch, resumable to the same result.

``fit`` reads as its steps: check the splits, ``build`` the model, optimizer and moving average,
``resume`` an interrupted run, then per epoch ``train_one_epoch``, ``validate`` and
``save_epoch``. One training step (``train_step``): a batch of decoded uint8 images and their
input-frame landmarks goes to the device; geometry augmentation moves both with one affine, colour
augmentation follows; the loss is the coordinate loss (optionally weighted per sample by the
teacher's confidence) plus, for the spatial heads, a KL term on their heatmap / SimCC
distributions. Optional: linear warm-up before the cosine schedule, an exponential moving average
(EMA) of the weights that is what validation, ``best.pt`` and prediction use, and initial weights
from the pretrain stage.

Under torchrun (``pipeline.distributed``) the same loop runs in every process: the epoch's
shuffled order is the same everywhere, each global batch of ``train.batch_size`` is shared out
between the processes (so the effective batch does not depend on their number), DDP averages the
gradients, each process augments its share with its own random stream, validation is split
between them and gathered, and only rank 0 writes checkpoints and logs.

Resuming: a ``last.pt`` of the same run (``pipeline.checkpoint.fingerprint``) that stopped before
its last epoch is continued, and ends exactly where an uninterrupted run does. A finished one is
never taken as the result of a new run (DVC re-ran the stage: ``-f``, a changed execution-only key
such as ``train.threads``): the run starts again. ``train.resume: false`` always starts again.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from pipeline import distributed
from pipeline.augment import augment_geometry, color_augment, geometry_enabled, low_resolution
from pipeline.batching import batches
from pipeline.checkpoint import (
    BEST,
    CHECKPOINT_FORMAT,
    LAST,
    CheckpointError,
    fingerprint,
    load_checkpoint,
    save_checkpoint,
    state_digest,
)
from pipeline.codec import LandmarkCodec
from pipeline.data import DiskImages, SplitData, image_chunks
from pipeline.inference import autocast, channels_last, predict, select_device
from pipeline.losses import CoordinateLoss
from pipeline.metrics import presence_agreement, validation_metrics
from pipeline.model import (
    LandmarkRegressor,
    ModelConfig,
    build_model,
    load_matching,
    reading_as_fitted,
)
from pipeline.params import TrainParams


class TrainingError(RuntimeError):
    pass


@dataclass
class FitResult:
    best_epoch: int
    best_val: dict
    history: list[dict] = field(default_factory=list)
    resumed_from_epoch: int = 0


@dataclass
class TrainingState:
    """What a run carries from epoch to epoch, and what its checkpoints hold."""

    model: LandmarkRegressor
    optimizer: torch.optim.Optimizer
    average: WeightAverage | None
    codec: LandmarkCodec
    config: ModelConfig
    fingerprint: str
    start_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"epoch": 0, "metrics": {"mpjpe_px": math.inf}})

    @property
    def evaluated(self) -> LandmarkRegressor:
        """The weights that predict: the moving average when there is one."""
        return self.average.model if self.average is not None else self.model


@dataclass(frozen=True)
class StepContext:
    """What every training step of a run uses (fixed for the run)."""

    params: TrainParams
    device: torch.device
    ranks: distributed.Ranks
    codec: LandmarkCodec
    frame: torch.Tensor  # (N, joints, 3) train landmarks in the input frame, z not standardised
    presence: torch.Tensor  # (N,) 1: the sample shows the hand (its landmarks are a target)
    # (N,) 1 where the presence is a target (None: everywhere), 0 e.g. on wide crops
    presence_taught: torch.Tensor | None
    aspect: torch.Tensor  # (N,) width / height of the picture each input shows
    zoom: float  # from the cached picture to the model's input (train.crop_context for crops)
    weights: torch.Tensor | None  # (N,) per-sample loss weights
    draws: torch.Tensor | None  # (N,) how often each sample is drawn (None: once per epoch)
    images: torch.Tensor | DiskImages  # the decoded train images (on the device where they fit)
    loss_fn: CoordinateLoss
    scaler: torch.amp.GradScaler
    batch_size: int
    min_batch: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int


def data_digest(*splits: SplitData) -> str:
    """The decoded images and labels a run trains and validates on."""
    digest = hashlib.sha256()
    for split in splits:
        for chunk in image_chunks(split.images):
            digest.update(chunk.numpy().tobytes())
        digest.update(np.ascontiguousarray(split.landmarks, dtype=np.float64).tobytes())
    return digest.hexdigest()[:16]


def loss_for(params: TrainParams) -> CoordinateLoss:
    return CoordinateLoss(
        name=params.loss,
        smooth_l1_beta=params.smooth_l1_beta,
        wing_omega=params.wing_omega,
        wing_epsilon=params.wing_epsilon,
        z_weight=params.z_weight,
    )


def _resident(
    images: torch.Tensor | DiskImages, device: torch.device, share_of_free: float = 0.3
) -> torch.Tensor | DiskImages:
    if device.type != "cuda" or isinstance(images, DiskImages):
        return images
    free_bytes, _ = torch.cuda.mem_get_info(device)
    if images.numel() * images.element_size() < share_of_free * free_bytes:
        return images.to(device)
    return images.pin_memory()


class WeightAverage:
    """Exponential moving average of a model's weights (BatchNorm statistics included); the
    decay ramps up as (1 + t) / (10 + t) so that early, poor weights fade fast."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.model = copy.deepcopy(model).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for average, current in zip(self.model.state_dict().values(), model.state_dict().values()):
            if average.is_floating_point():
                average.mul_(decay).add_(current.detach(), alpha=1 - decay)
            else:
                average.copy_(current)


def sample_weights(split: SplitData, power: float) -> torch.Tensor | None:
    """Per-sample loss weights from the teacher's confidence: handedness_score ** power."""
    if power == 0:
        return None
    if "handedness_score" not in split.table.columns:
        raise TrainingError(
            "train.score_weight_power > 0 needs the label table's handedness_score column"
        )
    # samples without a hand have no score (and no landmark loss to weigh)
    scores = np.nan_to_num(split.table["handedness_score"].to_numpy(np.float64), nan=1.0)
    return torch.tensor(np.clip(scores, 1e-3, 1.0) ** power, dtype=torch.float32)


class _TrainForward(nn.Module):
    """DDP synchronises gradients of what its wrapped module's ``forward`` computes; training
    needs ``forward_train`` (coordinates and distributions)."""

    def __init__(self, model: LandmarkRegressor):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        return self.model.forward_train(images)


def _process_seed(epoch_seed: int, rank: int) -> int:
    return int(np.random.SeedSequence([epoch_seed, rank]).generate_state(1)[0])


def learning_rate(params: TrainParams, global_step: int, total_steps: int, warmup: int) -> float:
    """Cosine decay from train.lr to 0, times a linear ramp over the first ``warmup`` steps."""
    lr = 0.5 * params.lr * (1 + math.cos(math.pi * global_step / total_steps))
    if warmup:
        lr *= min(1.0, (global_step + 1) / warmup)
    return lr


# ---------------------------------------------------------------------------------------------
# The steps of a run


def check_splits(
    train: SplitData, validation: SplitData, params: TrainParams, initial_weights: dict | None
) -> None:
    """Errors a user can fix, before anything is built."""
    if len(train) < 2:
        raise TrainingError(
            f"the train split has {len(train)} image(s) after filtering; at least 2 are needed "
            "(see data/split/dropped.csv for why images were dropped)"
        )
    if len(validation) < 1:
        raise TrainingError(
            "the validation split is empty after filtering; best-checkpoint selection needs it"
        )
    for name, split in (("train", train), ("validation", validation)):
        if split.layout != params.input_layout:
            raise TrainingError(
                f"the {name} images were made with layout {split.layout!r} but "
                f"train.input_layout is {params.input_layout!r}; load them with load_split(..., "
                f"layout={params.input_layout!r})"
            )
    if params.pretrained == "synthetic" and initial_weights is None:
        raise TrainingError(
            "train.pretrained=synthetic needs the pretrain stage's weights (models/pretrain); "
            "run `dvc repro` (the pretrain stage) or set train.pretrained=none"
        )


def build(
    params: TrainParams,
    train: SplitData,
    device: torch.device,
    run_fingerprint: str,
    initial_weights: dict | None,
    log: Callable[[str], None],
) -> TrainingState:
    """A fresh run: the codec from the train split, the model (seeded), optimizer and EMA."""
    torch.manual_seed(params.seed)
    codec = LandmarkCodec.fit(train.landmarks, layout=params.input_layout)
    config = ModelConfig.for_training(params)
    model = build_model(config)
    if initial_weights is not None:
        loaded = load_matching(model, initial_weights)
        if not any(name.startswith("features.") for name in loaded):
            raise TrainingError(
                "the initial weights do not fit this model's backbone; were they pretrained for "
                "another train.head or train.image_size?"
            )
        log(f"initial weights: {len(loaded)} of {len(model.state_dict())} tensors loaded")
    model = model.to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=params.lr, weight_decay=params.weight_decay
    )
    average = WeightAverage(model, params.ema_decay) if params.ema_decay > 0 else None
    return TrainingState(model, optimizer, average, codec, config, run_fingerprint)


def resume(
    state: TrainingState,
    last_path: Path,
    params: TrainParams,
    on_epoch_end: Callable[[dict], None] | None,
    log: Callable[[str], None],
) -> None:
    """Continue an interrupted run of the same fingerprint from ``last_path``, in place."""
    if not last_path.is_file():
        return
    if not params.resume:
        log(f"train.resume is false: training from scratch (ignoring {last_path})")
        return
    try:
        saved = load_checkpoint(last_path)
    except CheckpointError as error:  # another version's format, or not a checkpoint at all
        log(f"{last_path} cannot be resumed ({error}); training from scratch")
        return
    if saved["fingerprint"] != state.fingerprint:
        log(f"{last_path} is from other params, data or code; training from scratch")
        return
    if saved["epoch"] >= params.epochs:
        # DVC re-ran the stage although this run had finished (`dvc repro -f`, or only an
        # execution-only key such as train.threads changed): train again rather than pass off
        # the old result as the new run's.
        log(
            f"{last_path} is a finished run of these params, data and code (epoch "
            f"{saved['epoch']}/{params.epochs}); training again from scratch"
        )
        return
    state.model.load_state_dict(saved.get("train_model", saved["model"]))
    state.optimizer.load_state_dict(saved["optimizer"])
    if state.average is not None:
        state.average.model.load_state_dict(saved["model"])
        state.average.updates = saved["ema_updates"]
    state.start_epoch, state.history, state.best = saved["epoch"], saved["history"], saved["best"]
    state.codec = LandmarkCodec.from_dict(saved["codec"])
    log(f"resuming from {last_path} after epoch {state.start_epoch}")
    for row in state.history:  # replay, so loggers hold the whole run
        if on_epoch_end:
            on_epoch_end(row)


def step_model_for(
    model: LandmarkRegressor, params: TrainParams, device: torch.device, ranks: distributed.Ranks
):
    """What a training step calls: ``forward_train``, wrapped for DDP and compiled if asked."""
    if ranks.distributed:
        # DDP broadcasts rank 0's weights at construction: every process starts identical.
        step_model = DistributedDataParallel(
            _TrainForward(model), device_ids=[device.index] if device.type == "cuda" else None
        )
    else:
        step_model = model.forward_train
    if params.compile:
        step_model = torch.compile(step_model)
    return step_model


def train_step(
    context: StepContext,
    state: TrainingState,
    step_model,
    index: torch.Tensor,
    global_step: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """One optimiser step on this process's share ``index`` of a global batch; returns the loss."""
    params, device = context.params, context.device
    for group in state.optimizer.param_groups:
        group["lr"] = learning_rate(params, global_step, context.total_steps, context.warmup_steps)
    x = context.images[index.to(context.images.device)].to(device, non_blocking=True)
    x = x.float().div_(255)
    landmarks = context.frame[index].to(device, non_blocking=True)
    if geometry_enabled(params) or context.zoom != 1.0:
        x, landmarks, _ = augment_geometry(
            x, landmarks, context.aspect[index], params, generator, context.zoom,
            params.image_size,
        )  # fmt: skip
    x = low_resolution(x, params.low_res_p, params.low_res_min, generator)
    x = color_augment(x, params.color_jitter, params.grayscale_p, generator)
    if channels_last(device):
        x = x.contiguous(memory_format=torch.channels_last)
    y = context.codec.standardise(landmarks)
    with autocast(device):
        outputs = step_model(x)
    loss = batch_loss(state.model, outputs, y, landmarks, params, context.loss_fn,
                      context.weights, index, context.presence,
                      context.presence_taught)  # fmt: skip
    if not torch.isfinite(loss):
        return loss  # the caller stops the run with a message
    state.optimizer.zero_grad(set_to_none=True)
    context.scaler.scale(loss).backward()
    context.scaler.step(state.optimizer)
    context.scaler.update()
    if state.average is not None:
        state.average.update(state.model)
    return loss


def train_one_epoch(
    context: StepContext,
    state: TrainingState,
    step_model,
    epoch: int,
    checkpoint_dir: Path,
) -> tuple[float, int]:
    """One pass over the train split in the epoch's seeded order; (loss sum, images seen) over
    every process."""
    params, ranks = context.params, context.ranks
    epoch_seed = params.seed * 100_003 + epoch
    generator = torch.Generator().manual_seed(epoch_seed)  # order and augmentation
    count = len(context.frame)
    if ranks.distributed:
        # The same order everywhere, but each process's own augmentation and dropout.
        process_seed = _process_seed(epoch_seed, ranks.rank)
        epoch_order = batches(
            count, context.batch_size, generator, context.min_batch, context.draws
        )
        generator = torch.Generator().manual_seed(process_seed)
        torch.manual_seed(process_seed)
    else:
        torch.manual_seed(epoch_seed)  # dropout
        epoch_order = batches(count, context.batch_size, generator, weights=context.draws)
    state.model.train()
    loss_sum, seen = 0.0, 0
    for step, global_index in enumerate(epoch_order):
        index = distributed.shard(global_index, ranks)
        global_step = epoch * context.steps_per_epoch + step
        loss = train_step(context, state, step_model, index, global_step, generator)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"training loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                f"lower train.lr (now {params.lr}) or check the labels. Checkpoints of earlier "
                f"epochs are kept in {checkpoint_dir}."
            )
        loss_sum += loss.item() * len(index)
        seen += len(index)
    loss_sum, seen = distributed.sum_across([loss_sum, seen], context.device)
    return loss_sum, seen


def validate(state: TrainingState, validation: SplitData, context: StepContext) -> dict[str, float]:
    """Validation metrics of the evaluated weights on the samples that show a hand, and the
    presence's agreement where there are samples without one; the work shared between the
    processes."""
    ranks = context.ranks
    distributed.broadcast_buffers(state.evaluated)
    share = distributed.contiguous_shares(len(validation), ranks)[ranks.rank]
    with reading_as_fitted(state.evaluated):
        landmarks, presence = predict(
            state.evaluated,
            validation.images,
            state.codec,
            context.device,
            validation.frames(context.params.image_size),
            context.batch_size,
            positions=share,
        )
    landmarks = distributed.gather_rows(landmarks)
    presence = distributed.gather_rows(presence)
    shows = validation.presence
    metrics = validation_metrics(
        landmarks[shows], validation.landmarks[shows], validation.width[shows],
        validation.height[shows],
    )  # fmt: skip
    if not shows.all():
        metrics.update(presence_agreement(presence, shows))
    return metrics


# What an epoch's history row says about the machine rather than the run.
TIMING_KEYS = ("seconds", "images_per_second")


def save_epoch(
    state: TrainingState,
    params: TrainParams,
    row: dict,
    checkpoint_dir: Path,
    context: StepContext,
    role: str,
) -> None:
    """``best.pt`` when validation improved, then ``last.pt`` (rank 0 writes; all wait)."""
    epoch, val = row["epoch"], row["val"]
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_config": state.config.to_dict(),
        "codec": state.codec.to_dict(),
        # the weights that predict: the moving average when there is one
        "model": {k: v.detach().cpu() for k, v in state.evaluated.state_dict().items()},
        "epoch": epoch,
        "role": role,
        "crop_margin": params.crop_margin,
        "fingerprint": state.fingerprint,
        "train_params": asdict(params),
        # without the epochs' timings, so that the same run writes the same bytes (DVC's hash
        # of the model folder stays put); the timings are in the log and dvclive
        "history": [
            {k: v for k, v in row.items() if k not in TIMING_KEYS} for row in state.history
        ],
        "device": str(context.device),
    }
    if context.ranks.distributed:
        payload["processes"] = context.ranks.world_size
    improved = val["mpjpe_px"] < state.best["metrics"]["mpjpe_px"]
    if improved:
        state.best = {"epoch": epoch, "metrics": val}
    if context.ranks.is_main:
        if improved:
            save_checkpoint(checkpoint_dir / BEST, {**payload, "best": state.best})
        resume_state = {"best": state.best, "optimizer": state.optimizer.state_dict()}
        if state.average is not None:
            resume_state["train_model"] = {
                k: v.detach().cpu() for k, v in state.model.state_dict().items()
            }
            resume_state["ema_updates"] = state.average.updates
        # last.pt after best.pt: a run killed in between redoes this epoch, identically.
        save_checkpoint(checkpoint_dir / LAST, {**payload, **resume_state})
    distributed.barrier()  # no process runs ahead of a checkpoint it may resume from


def step_context(
    params: TrainParams,
    state: TrainingState,
    train: SplitData,
    device: torch.device,
    ranks: distributed.Ranks,
    batch_size: int,
    min_batch: int,
) -> StepContext:
    # Landmarks in the input frame, z not yet standardised: augmentation moves them, then the
    # codec standardises z per batch.
    codec = state.codec
    frame = codec.to_input(train.landmarks, train.frames(train.images.shape[-1]))
    shows = train.presence
    # A sample without the hand has no landmark target; its landmarks sit at the centre, where
    # they keep the augmentation from steering the crop (the loss leaves them out).
    frame[~shows] = (0.5, 0.5, 0.0)
    steps_per_epoch = len(batches(len(train), batch_size, None, min_batch))
    return StepContext(
        params=params,
        device=device,
        ranks=ranks,
        codec=codec,
        frame=torch.tensor(frame.astype(np.float32)),
        presence=torch.tensor(shows, dtype=torch.float32),
        presence_taught=(
            None
            if train.teaches_presence.all()
            else torch.tensor(train.teaches_presence, dtype=torch.float32)
        ),
        aspect=torch.tensor(codec.aspect(train.width, train.height)),
        zoom=params.crop_context if params.input_layout == "crop" else 1.0,
        weights=sample_weights(train, params.score_weight_power),
        draws=None if train.weights is None else torch.tensor(train.weights, dtype=torch.float64),
        # Decoded images stay on the GPU when they fit comfortably; else pinned for async copies.
        images=_resident(train.images, device),
        loss_fn=loss_for(params),
        scaler=torch.amp.GradScaler(
            "cuda", enabled=device.type == "cuda" and not torch.cuda.is_bf16_supported()
        ),
        batch_size=batch_size,
        min_batch=min_batch,
        steps_per_epoch=steps_per_epoch,
        total_steps=steps_per_epoch * params.epochs,
        warmup_steps=round(params.warmup_epochs * steps_per_epoch),
    )


def fit(
    train: SplitData,
    validation: SplitData,
    params: TrainParams,
    checkpoint_dir: Path,
    on_epoch_end: Callable[[dict], None] | None = None,
    log: Callable[[str], None] = print,
    initial_weights: dict | None = None,
    role: str | None = None,
) -> FitResult:
    """Train, writing ``last.pt`` every epoch and ``best.pt`` when validation MPJPE improves.

    ``role`` (``pipeline.checkpoint.ROLES``, saved in the checkpoints) says how the network will
    be used; None: ``whole_frame`` for the squash and letterbox layouts, else ``landmarks``.

    An interrupted ``last.pt`` of the same run is resumed (see the module docstring); every
    epoch's random streams are seeded from (seed, epoch), so a resumed run ends exactly where an
    uninterrupted one does. ``initial_weights`` (a state dict, e.g. from the pretrain stage) are
    copied where names and shapes fit before training starts.
    """
    check_splits(train, validation, params, initial_weights)
    if role is None:
        role = "landmarks" if params.input_layout == "crop" else "whole_frame"
    if params.threads:
        torch.set_num_threads(params.threads)
    ranks = distributed.current_ranks()
    device = select_device(params.device)
    if ranks.distributed and device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
    if not ranks.is_main:
        log, on_epoch_end = _quiet, None
    batch_size = params.batch_size or (64 if device.type == "cuda" else 16)
    # BatchNorm needs two samples per process in every batch, the last one included.
    min_batch = 2 * ranks.world_size
    if batch_size < min_batch or len(train) < min_batch:
        raise TrainingError(
            f"{ranks.world_size} processes need a batch of at least {min_batch} images "
            f"(two per process) and as many train images; train.batch_size is {batch_size}, "
            f"the train split has {len(train)}"
        )
    init_digest = state_digest(initial_weights) if initial_weights is not None else ""
    run_fingerprint = fingerprint(params, data_digest(train, validation), init_digest)
    if len(set(distributed.gather_rows(np.array([run_fingerprint])))) > 1:
        raise TrainingError(
            "the training processes have different data, params or code (their fingerprints "
            "differ); does every process see the same data.root and the same checkout?"
        )
    checkpoint_dir = Path(checkpoint_dir)

    state = build(params, train, device, run_fingerprint, initial_weights, log)
    resume(state, checkpoint_dir / LAST, params, on_epoch_end, log)
    if channels_last(device):
        state.model = state.model.to(memory_format=torch.channels_last)
        if state.average is not None:
            state.average.model = state.average.model.to(memory_format=torch.channels_last)
    context = step_context(params, state, train, device, ranks, batch_size, min_batch)
    step_model = step_model_for(state.model, params, device, ranks)

    for epoch in range(state.start_epoch, params.epochs):
        started = time.perf_counter()
        loss_sum, seen = train_one_epoch(context, state, step_model, epoch, checkpoint_dir)
        val = validate(state, validation, context)
        seconds = time.perf_counter() - started
        row = {
            "epoch": epoch + 1,
            "train_loss": round(loss_sum / seen, 6),
            "val": val,
            "images": int(seen),
            "seconds": round(seconds, 2),
            "images_per_second": round(seen / seconds, 2),
        }
        state.history.append(row)
        save_epoch(state, params, row, checkpoint_dir, context, role)
        log(
            f"epoch {epoch + 1}/{params.epochs} loss {row['train_loss']:.4f} "
            f"val MPJPE {val['mpjpe_px']:.2f}px PCK@0.1 {val['pck_10']:.3f} ({seconds:.1f}s)"
        )
        if on_epoch_end:
            on_epoch_end(row)
    if not (checkpoint_dir / BEST).is_file():
        raise TrainingError(
            f"no best checkpoint in {checkpoint_dir}; delete the folder and retrain"
        )
    return FitResult(
        best_epoch=state.best["epoch"],
        best_val=state.best["metrics"],
        history=state.history,
        resumed_from_epoch=state.start_epoch,
    )


def _quiet(_: str) -> None:
    pass


def batch_loss(
    model: LandmarkRegressor,
    outputs,
    targets: torch.Tensor,
    frame_landmarks: torch.Tensor,
    params: TrainParams,
    loss_fn: CoordinateLoss,
    weights: torch.Tensor | None,
    index: torch.Tensor,
    presence: torch.Tensor | None = None,
    presence_taught: torch.Tensor | None = None,
) -> torch.Tensor:
    """Coordinate loss (+ distribution KL for the spatial heads) over the samples that show the
    hand, optionally sample-weighted, plus ``train.presence_weight`` times the presence head's
    binary cross-entropy over all of them (``presence``: (N,) 1 where the sample shows it), or
    over those where ``presence_taught`` (N,) is 1."""
    coords = outputs.coords.float()
    shows = None if presence is None else presence[index].to(coords.device)
    every_sample_shows = shows is None or bool(shows.all())
    if every_sample_shows and weights is None and params.distribution_weight == 0:
        loss = loss_fn(coords, targets)  # the seed's loss, bit for bit
    else:
        per_sample = loss_fn.per_sample(coords, targets)
        if params.distribution_weight > 0:
            distributions = model.encode_distributions(
                frame_landmarks[..., :2], outputs.logits, params.label_sigma
            )
            kl = model.distribution_loss(outputs.logits, distributions)
            per_sample = per_sample + params.distribution_weight * kl
        if every_sample_shows and weights is None:
            loss = per_sample.mean()
        else:
            w = torch.ones_like(per_sample) if weights is None else weights[index].to(per_sample)
            if shows is not None:
                w = w * shows
            loss = (per_sample * w).sum() / w.sum().clamp_min(1e-12)
    if shows is not None and params.presence_weight > 0:
        logits = outputs.presence.float()
        if presence_taught is None:
            presence_loss = F.binary_cross_entropy_with_logits(logits, shows)
        else:
            taught = presence_taught[index].to(logits.device)
            each = F.binary_cross_entropy_with_logits(logits, shows, reduction="none")
            presence_loss = (each * taught).sum() / taught.sum().clamp_min(1.0)
        loss = loss + params.presence_weight * presence_loss
    return loss
