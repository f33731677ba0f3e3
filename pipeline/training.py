"""Fit the student: seeded, checkpointed every epoch, resumable to the same result.

One training step: a batch of decoded uint8 images and their input-frame landmarks goes to the
device; geometry augmentation moves both with one affine, colour augmentation follows; the loss is
the coordinate loss (optionally weighted per sample by the teacher's confidence) plus, for the
spatial heads, a KL term on their heatmap / SimCC distributions. Optional: linear warm-up before
the cosine schedule, an exponential moving average (EMA) of the weights that is what validation,
``best.pt`` and prediction use, and initial weights from the pretrain stage.

Under torchrun (``pipeline.distributed``) the same loop runs in every process: the epoch's
shuffled order is the same everywhere, each global batch of ``train.batch_size`` is shared out
between the processes (so the effective batch does not depend on their number), DDP averages the
gradients, each process augments its share with its own random stream, validation is split
between them and gathered, and only rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pipeline import distributed
from pipeline.augment import GeometrySettings, augment_geometry, color_augment
from pipeline.codec import LandmarkCodec, to_pixels
from pipeline.data import DiskImages, SplitData, batches, image_chunks
from pipeline.io import atomic_path
from pipeline.keypoints import NUM_JOINTS, hand_size
from pipeline.losses import CoordinateLoss
from pipeline.metrics import landmark_metrics
from pipeline.model import LandmarkRegressor, ModelConfig, build_model, load_matching
from pipeline.params import TrainParams

CHECKPOINT_FORMAT = 1
LAST, BEST = "last.pt", "best.pt"
# train.processes is replaced by the number of processes actually running (torchrun may be
# started by hand), which does change the numbers.
EXECUTION_ONLY_KEYS = ("threads", "cache_budget_mib", "processes")


class TrainingError(RuntimeError):
    pass


class CheckpointError(RuntimeError):
    pass


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device=cuda but no CUDA GPU is visible; use train.device=auto")
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise TrainingError("train.device=mps but MPS is not available; use train.device=auto")
    return torch.device(name)


def code_digest() -> str:
    """The source of this package (every .py file under pipeline/): what computes the numbers.

    A checkpoint written by other code must not be resumed. `dvc repro` re-runs the train stage
    when its code changes, but keeps models/student (persist: true, for resuming after a kill):
    without this, a finished last.pt from the old code would be "resumed" at its last epoch and
    recorded as the new code's result.
    """
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def fingerprint(
    params: TrainParams, data_digest: str, init_digest: str = "", world_size: int = 1
) -> str:
    """What a checkpoint must match to be resumed: every train param, the training data, the
    initial weights (when they come from the pretrain stage) and the code."""
    # Keys that change how a run executes but not its numbers do not block a resume.
    content = {
        "train": {
            k: v for k, v in dataclasses.asdict(params).items() if k not in EXECUTION_ONLY_KEYS
        },
        "data": data_digest,
        "code": code_digest(),
    }
    if init_digest:
        content["init"] = init_digest
    if world_size > 1:
        content["world_size"] = world_size
    payload = json.dumps(content, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def state_digest(state: dict) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def data_digest(*splits: SplitData) -> str:
    digest = hashlib.sha256()
    for split in splits:
        for chunk in image_chunks(split.images):
            digest.update(chunk.numpy().tobytes())
        digest.update(np.ascontiguousarray(split.landmarks, dtype=np.float64).tobytes())
    return digest.hexdigest()[:16]


def model_config_for(params: TrainParams) -> ModelConfig:
    return ModelConfig(
        head=params.head,
        dropout=params.dropout,
        pretrained=params.pretrained,
        image_size=params.image_size,
        neck_channels=params.neck_channels,
        simcc_ratio=params.simcc_ratio,
    )


def geometry_for(params: TrainParams) -> GeometrySettings:
    return GeometrySettings(
        flip_p=params.flip_p,
        rotate_deg=params.rotate_deg,
        scale_min=params.scale_min,
        scale_max=params.scale_max,
        translate=params.translate,
        keep_margin=params.keep_margin,
    )


def _loss_fn(params: TrainParams) -> CoordinateLoss:
    return CoordinateLoss(
        name=params.loss,
        smooth_l1_beta=params.smooth_l1_beta,
        wing_omega=params.wing_omega,
        wing_epsilon=params.wing_epsilon,
        z_weight=params.z_weight,
    )


@torch.no_grad()
def predict(
    model: LandmarkRegressor,
    images: torch.Tensor,
    codec: LandmarkCodec,
    device: torch.device,
    batch_size: int = 64,
    width: np.ndarray | None = None,
    height: np.ndarray | None = None,
    positions: np.ndarray | None = None,
) -> np.ndarray:
    """uint8 (N, 3, S, S) images → (N, joints, 3) landmarks in table units (x, y normalised).

    ``width`` and ``height`` of the original images are needed by a letterbox codec.
    ``positions``: predict only these images (their rows, in this order); width and height are
    then those of all N images.
    """
    model.eval()
    positions = np.arange(len(images)) if positions is None else np.asarray(positions)
    if width is not None and height is not None:
        width, height = np.asarray(width)[positions], np.asarray(height)[positions]
    outputs = []
    for chunk in batches(len(positions), batch_size, None):
        index = torch.from_numpy(positions[chunk.numpy()])
        x = images[index].to(device, non_blocking=True).float().div_(255)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device):
            outputs.append(model(x).float().cpu())
    if not outputs:
        return np.zeros((0, NUM_JOINTS, 3))
    return codec.decode(torch.cat(outputs), width, height, size=images.shape[-1])


def compare(
    predicted: np.ndarray, reference: np.ndarray, width: np.ndarray, height: np.ndarray
) -> dict:
    """Metrics of ``predicted`` vs ``reference`` (both normalised); hand size from the reference."""
    predicted_px = to_pixels(predicted, width, height)
    reference_px = to_pixels(reference, width, height)
    return landmark_metrics(predicted_px, reference_px, hand_size(reference_px), width)


def validation_metrics(predicted: np.ndarray, split: SplitData) -> dict:
    metrics = compare(predicted, split.landmarks, split.width, split.height)
    metrics["z_mae"] = round(float(np.mean(np.abs(predicted[..., 2] - split.landmarks[..., 2]))), 6)
    return metrics


def _resident(
    images: torch.Tensor | DiskImages, device: torch.device, share_of_free: float = 0.3
) -> torch.Tensor | DiskImages:
    if device.type != "cuda" or isinstance(images, DiskImages):
        return images
    free_bytes, _ = torch.cuda.mem_get_info(device)
    if images.numel() * images.element_size() < share_of_free * free_bytes:
        return images.to(device)
    return images.pin_memory()


def _autocast(device: torch.device):
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


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
    scores = split.table["handedness_score"].to_numpy(np.float64)
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


@dataclass
class FitResult:
    best_epoch: int
    best_val: dict
    history: list[dict] = field(default_factory=list)
    resumed_from_epoch: int = 0


def save_checkpoint(path: Path, payload: dict) -> None:
    with atomic_path(path) as partial:
        torch.save(payload, partial)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; run `dvc repro train`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({error}); delete it and retrain"
        ) from None
    required = {"format", "model_config", "codec", "model", "epoch", "fingerprint", "train_params"}
    if not isinstance(payload, dict) or not required <= set(payload):
        raise CheckpointError(
            f"{path} is not a checkpoint of this project "
            f"(missing {sorted(required - set(payload or {}))})"
        )
    if payload["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {payload['format']}, expected {CHECKPOINT_FORMAT}"
        )
    return payload


def model_from_checkpoint(
    payload: dict, path: str | Path = "checkpoint"
) -> tuple[LandmarkRegressor, LandmarkCodec, ModelConfig]:
    try:
        config = ModelConfig.from_dict(payload["model_config"])
        codec = LandmarkCodec.from_dict(payload["codec"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: model config or codec not understood ({error})") from None
    model = build_model(dataclasses.replace(config, pretrained="none"))
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as error:
        raise CheckpointError(
            f"{path}: weights do not fit the model its config describes: {error}"
        ) from None
    return model, codec, config


def fit(
    train: SplitData,
    validation: SplitData,
    params: TrainParams,
    checkpoint_dir: Path,
    on_epoch_end: Callable[[dict], None] | None = None,
    log: Callable[[str], None] = print,
    initial_weights: dict | None = None,
) -> FitResult:
    """Train, writing ``last.pt`` every epoch and ``best.pt`` when validation MPJPE improves.

    A ``last.pt`` with the same fingerprint (params, data and initial weights) is resumed; every
    epoch's random streams are seeded from (seed, epoch), so a resumed run ends exactly where an
    uninterrupted one does. ``initial_weights`` (a state dict, e.g. from the pretrain stage) are
    copied where names and shapes fit before training starts.
    """
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
    run_fingerprint = fingerprint(
        params, data_digest(train, validation), init_digest, ranks.world_size
    )
    if len(set(distributed.gather_rows(np.array([run_fingerprint])))) > 1:
        raise TrainingError(
            "the training processes have different data, params or code (their fingerprints "
            "differ); does every process see the same data.root and the same checkout?"
        )
    checkpoint_dir = Path(checkpoint_dir)
    last_path, best_path = checkpoint_dir / LAST, checkpoint_dir / BEST

    torch.manual_seed(params.seed)
    codec = LandmarkCodec.fit(train.landmarks, layout=params.input_layout)
    config = model_config_for(params)
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
    start_epoch, history, best = 0, [], {"epoch": 0, "metrics": {"mpjpe_px": math.inf}}

    if last_path.is_file():
        state = load_checkpoint(last_path)
        if state["fingerprint"] == run_fingerprint:
            model.load_state_dict(state.get("train_model", state["model"]))
            optimizer.load_state_dict(state["optimizer"])
            if average is not None:
                average.model.load_state_dict(state["model"])
                average.updates = state["ema_updates"]
            start_epoch, history, best = state["epoch"], state["history"], state["best"]
            codec = LandmarkCodec.from_dict(state["codec"])
            log(f"resuming from {last_path} after epoch {start_epoch}")
            for row in history:  # replay, so loggers hold the whole run
                if on_epoch_end:
                    on_epoch_end(row)
        else:
            log(f"{last_path} is from other params, data or code; training from scratch")
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        if average is not None:
            average.model = average.model.to(memory_format=torch.channels_last)
    evaluated = average.model if average is not None else model

    # Landmarks in the input frame, z not yet standardised: augmentation moves them, then the
    # codec standardises z per batch.
    size = params.image_size
    frame = torch.tensor(
        codec.to_input(train.landmarks, train.width, train.height, size).astype(np.float32)
    )
    aspect = torch.tensor(codec.aspect(train.width, train.height))
    weights = sample_weights(train, params.score_weight_power)
    geometry = geometry_for(params)
    # Decoded images stay on the GPU when they fit comfortably; else pinned for async copies.
    train_images = _resident(train.images, device)
    if ranks.distributed:
        # DDP broadcasts rank 0's weights at construction: every process starts identical.
        step_model = DistributedDataParallel(
            _TrainForward(model), device_ids=[device.index] if device.type == "cuda" else None
        )
    else:
        step_model = model.forward_train
    if params.compile:
        step_model = torch.compile(step_model)
    loss_fn = _loss_fn(params)
    steps_per_epoch = len(batches(len(train), batch_size, None, min_batch))
    validation_share = distributed.contiguous_shares(len(validation), ranks)[ranks.rank]
    total_steps = steps_per_epoch * params.epochs
    warmup_steps = round(params.warmup_epochs * steps_per_epoch)
    scaler = torch.amp.GradScaler(
        "cuda", enabled=device.type == "cuda" and not torch.cuda.is_bf16_supported()
    )

    for epoch in range(start_epoch, params.epochs):
        started = time.perf_counter()
        epoch_seed = params.seed * 100_003 + epoch
        generator = torch.Generator().manual_seed(epoch_seed)  # order and augmentation
        if ranks.distributed:
            # The same order everywhere, but each process's own augmentation and dropout.
            process_seed = _process_seed(epoch_seed, ranks.rank)
            epoch_order = batches(len(train), batch_size, generator, min_batch)
            generator = torch.Generator().manual_seed(process_seed)
            torch.manual_seed(process_seed)
        else:
            torch.manual_seed(epoch_seed)  # dropout
            epoch_order = batches(len(train), batch_size, generator)
        model.train()
        loss_sum, seen = 0.0, 0
        for step, global_index in enumerate(epoch_order):
            index = distributed.shard(global_index, ranks)
            global_step = epoch * steps_per_epoch + step
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(params, global_step, total_steps, warmup_steps)
            x = train_images[index.to(train_images.device)].to(device, non_blocking=True)
            x = x.float().div_(255)
            landmarks = frame[index].to(device, non_blocking=True)
            if geometry.enabled:
                x, landmarks, _ = augment_geometry(x, landmarks, aspect[index], geometry, generator)
            x = color_augment(x, params.color_jitter, params.grayscale_p, generator)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            y = codec.standardise(landmarks)
            with _autocast(device):
                outputs = step_model(x)
            loss = _batch_loss(model, outputs, y, landmarks, params, loss_fn, weights, index)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"training loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                    f"lower train.lr (now {params.lr}) or check the labels. Checkpoints of earlier "
                    f"epochs are kept in {checkpoint_dir}."
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if average is not None:
                average.update(model)
            loss_sum += loss.item() * len(index)
            seen += len(index)

        loss_sum, seen = distributed.sum_across([loss_sum, seen], device)
        distributed.broadcast_buffers(evaluated)
        predicted = distributed.gather_rows(
            predict(
                evaluated,
                validation.images,
                codec,
                device,
                batch_size,
                validation.width,
                validation.height,
                positions=validation_share,
            )
        )
        val = validation_metrics(predicted, validation)
        seconds = time.perf_counter() - started
        row = {
            "epoch": epoch + 1,
            "train_loss": round(loss_sum / seen, 6),
            "val": val,
            "seconds": round(seconds, 2),
            "images_per_second": round(seen / seconds, 2),
        }
        history.append(row)
        payload = {
            "format": CHECKPOINT_FORMAT,
            "model_config": config.to_dict(),
            "codec": codec.to_dict(),
            # the weights that predict: the moving average when there is one
            "model": {k: v.detach().cpu() for k, v in evaluated.state_dict().items()},
            "epoch": epoch + 1,
            "fingerprint": run_fingerprint,
            "train_params": dataclasses.asdict(params),
            "history": history,
            "device": str(device),
        }
        if ranks.distributed:
            payload["processes"] = ranks.world_size
        improved = val["mpjpe_px"] < best["metrics"]["mpjpe_px"]
        if improved:
            best = {"epoch": epoch + 1, "metrics": val}
        if ranks.is_main:
            if improved:
                save_checkpoint(best_path, {**payload, "best": best})
            resume = {"best": best, "optimizer": optimizer.state_dict()}
            if average is not None:
                resume["train_model"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
                resume["ema_updates"] = average.updates
            # last.pt after best.pt: a run killed in between redoes this epoch, identically.
            save_checkpoint(last_path, {**payload, **resume})
        distributed.barrier()  # no process runs ahead of a checkpoint it may resume from
        log(
            f"epoch {epoch + 1}/{params.epochs} loss {row['train_loss']:.4f} "
            f"val MPJPE {val['mpjpe_px']:.2f}px PCK@0.1 {val['pck_10']:.3f} ({seconds:.1f}s)"
        )
        if on_epoch_end:
            on_epoch_end(row)
    if not best_path.is_file():
        raise TrainingError(
            f"no best checkpoint in {checkpoint_dir}; delete the folder and retrain"
        )
    return FitResult(
        best_epoch=best["epoch"],
        best_val=best["metrics"],
        history=history,
        resumed_from_epoch=start_epoch,
    )


def _quiet(_: str) -> None:
    pass


def _batch_loss(
    model: LandmarkRegressor,
    outputs,
    targets: torch.Tensor,
    frame_landmarks: torch.Tensor,
    params: TrainParams,
    loss_fn: CoordinateLoss,
    weights: torch.Tensor | None,
    index: torch.Tensor,
) -> torch.Tensor:
    """Coordinate loss (+ distribution KL for the spatial heads), optionally sample-weighted."""
    coords = outputs.coords.float()
    if weights is None and params.distribution_weight == 0:
        return loss_fn(coords, targets)  # the seed's loss, bit for bit
    per_sample = loss_fn.per_sample(coords, targets)
    if params.distribution_weight > 0:
        distributions = model.encode_distributions(
            frame_landmarks[..., :2], outputs.logits, params.label_sigma
        )
        kl = model.distribution_loss(outputs.logits, distributions)
        per_sample = per_sample + params.distribution_weight * kl
    if weights is None:
        return per_sample.mean()
    w = weights[index].to(per_sample.device)
    return (per_sample * w).sum() / w.sum()
