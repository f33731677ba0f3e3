"""Fit the student: seeded, checkpointed every epoch, resumable to the same result."""

from __future__ import annotations

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

from pipeline.codec import LandmarkCodec, to_pixels
from pipeline.data import SplitData, batches, color_augment
from pipeline.io import atomic_path
from pipeline.keypoints import hand_size
from pipeline.metrics import landmark_metrics
from pipeline.model import LandmarkRegressor, ModelConfig, build_model
from pipeline.params import TrainParams

CHECKPOINT_FORMAT = 1
LAST, BEST = "last.pt", "best.pt"


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


def fingerprint(params: TrainParams, data_digest: str) -> str:
    """What a checkpoint must match to be resumed: every train param and the training data."""
    payload = json.dumps({"train": dataclasses.asdict(params), "data": data_digest}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def data_digest(*splits: SplitData) -> str:
    digest = hashlib.sha256()
    for split in splits:
        digest.update(split.images.numpy().tobytes())
        digest.update(np.ascontiguousarray(split.landmarks, dtype=np.float64).tobytes())
    return digest.hexdigest()[:16]


def model_config_for(params: TrainParams) -> ModelConfig:
    return ModelConfig(
        dropout=params.dropout, pretrained=params.pretrained, image_size=params.image_size
    )


@torch.no_grad()
def predict(
    model: LandmarkRegressor,
    images: torch.Tensor,
    codec: LandmarkCodec,
    device: torch.device,
    batch_size: int = 64,
) -> np.ndarray:
    """uint8 (N, 3, S, S) images → (N, joints, 3) landmarks in table units (x, y normalised)."""
    model.eval()
    outputs = []
    for index in batches(len(images), batch_size, None):
        x = images[index].to(device, non_blocking=True).float().div_(255)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device):
            outputs.append(model(x).float().cpu())
    return codec.decode(torch.cat(outputs)) if outputs else np.zeros((0, 21, 3))


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


def _resident(images: torch.Tensor, device: torch.device, share_of_free: float = 0.3) -> torch.Tensor:
    if device.type != "cuda":
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


def _loss_fn(params: TrainParams) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    weights = torch.tensor([1.0, 1.0, params.z_weight])

    def loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if params.loss == "smooth_l1":
            per_value = nn.functional.smooth_l1_loss(
                outputs, targets, beta=params.smooth_l1_beta, reduction="none"
            )
        elif params.loss == "l1":
            per_value = (outputs - targets).abs()
        else:
            per_value = (outputs - targets).square()
        per_axis = per_value.view(len(outputs), -1, 3) * weights.to(outputs.device)
        return per_axis.sum(-1).mean() / weights.sum()

    return loss


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
    config = ModelConfig.from_dict(payload["model_config"])
    model = build_model(dataclasses.replace(config, pretrained="none"))
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as error:
        raise CheckpointError(
            f"{path}: weights do not fit the model its config describes: {error}"
        ) from None
    return model, LandmarkCodec.from_dict(payload["codec"]), config


def fit(
    train: SplitData,
    validation: SplitData,
    params: TrainParams,
    checkpoint_dir: Path,
    on_epoch_end: Callable[[dict], None] | None = None,
    log: Callable[[str], None] = print,
) -> FitResult:
    """Train, writing ``last.pt`` every epoch and ``best.pt`` when validation MPJPE improves.

    A ``last.pt`` with the same fingerprint (params and data) is resumed; every epoch's random
    streams are seeded from (seed, epoch), so a resumed run ends exactly where an uninterrupted
    one does.
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
    if params.threads:
        torch.set_num_threads(params.threads)
    device = select_device(params.device)
    batch_size = params.batch_size or (64 if device.type == "cuda" else 16)
    run_fingerprint = fingerprint(params, data_digest(train, validation))
    checkpoint_dir = Path(checkpoint_dir)
    last_path, best_path = checkpoint_dir / LAST, checkpoint_dir / BEST

    torch.manual_seed(params.seed)
    codec = LandmarkCodec.fit(train.landmarks)
    config = model_config_for(params)
    model = build_model(config).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=params.lr, weight_decay=params.weight_decay
    )
    start_epoch, history, best = 0, [], {"epoch": 0, "metrics": {"mpjpe_px": math.inf}}

    if last_path.is_file():
        state = load_checkpoint(last_path)
        if state["fingerprint"] == run_fingerprint:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start_epoch, history, best = state["epoch"], state["history"], state["best"]
            codec = LandmarkCodec.from_dict(state["codec"])
            log(f"resuming from {last_path} after epoch {start_epoch}")
            for row in history:  # replay, so loggers hold the whole run
                if on_epoch_end:
                    on_epoch_end(row)
        else:
            log(f"{last_path} is from other params or data; training from scratch")
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)

    targets = codec.encode(train.landmarks)
    # Decoded images stay on the GPU when they fit comfortably; else pinned for async copies.
    train_images = _resident(train.images, device)
    step_model = torch.compile(model) if params.compile else model
    loss_fn = _loss_fn(params)
    steps_per_epoch = len(batches(len(train), batch_size, None))
    total_steps = steps_per_epoch * params.epochs
    scaler = torch.amp.GradScaler(
        "cuda", enabled=device.type == "cuda" and not torch.cuda.is_bf16_supported()
    )

    for epoch in range(start_epoch, params.epochs):
        started = time.perf_counter()
        epoch_seed = params.seed * 100_003 + epoch
        torch.manual_seed(epoch_seed)  # dropout
        generator = torch.Generator().manual_seed(epoch_seed)  # order and augmentation
        model.train()
        loss_sum, seen = 0.0, 0
        for step, index in enumerate(batches(len(train), batch_size, generator)):
            global_step = epoch * steps_per_epoch + step
            for group in optimizer.param_groups:
                group["lr"] = 0.5 * params.lr * (1 + math.cos(math.pi * global_step / total_steps))
            x = train_images[index.to(train_images.device)].to(device, non_blocking=True)
            x = x.float().div_(255)
            x = color_augment(x, params.color_jitter, params.grayscale_p, generator)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            y = targets[index].to(device, non_blocking=True)
            with _autocast(device):
                outputs = step_model(x)
            loss = loss_fn(outputs.float(), y)
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
            loss_sum += loss.item() * len(index)
            seen += len(index)

        predicted = predict(model, validation.images, codec, device, batch_size)
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
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "epoch": epoch + 1,
            "fingerprint": run_fingerprint,
            "train_params": dataclasses.asdict(params),
            "history": history,
            "device": str(device),
        }
        if val["mpjpe_px"] < best["metrics"]["mpjpe_px"]:
            best = {"epoch": epoch + 1, "metrics": val}
            save_checkpoint(best_path, {**payload, "best": best})
        # last.pt after best.pt: a run killed in between redoes this epoch, identically.
        save_checkpoint(last_path, {**payload, "best": best, "optimizer": optimizer.state_dict()})
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
