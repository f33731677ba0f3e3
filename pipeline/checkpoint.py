"""Checkpoints: save, load safely, rebuild the model they describe, and say which run they are.

A checkpoint is a dict of tensors and plain values (str, int, float, bool, None, lists, tuples and
dicts of them): the model config and codec that rebuild the model, its weights, the epoch, the
train params and history, and for resuming the optimizer state. It is loaded with
``torch.load(weights_only=True)``, which cannot run code, so a ``.pt`` file from anywhere is safe
to hand to ``hand-landmarks predict``; one that carries other objects is refused.

The fingerprint is what a ``last.pt`` must match to be resumed: the run identity of the train
params (``pipeline.params.run_identity``: execution-only keys left out), the training data, the
initial weights and the code of this package.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
from pathlib import Path

import torch

from pipeline.codec import LandmarkCodec
from pipeline.imports import REPO, imported_files
from pipeline.io import atomic_path
from pipeline.model import LandmarkRegressor, ModelConfig, build_model
from pipeline.params import (
    PretrainParams,
    TrainParams,
    pretrain_params_for,
    run_differences,
    run_identity,
)
from pipeline.paths import PRETRAIN_DIR

CHECKPOINT_FORMAT = 2  # 2: presence head, role and crop margin
LAST, BEST = "last.pt", "best.pt"
# How a network is used: the whole-frame student (one pass); the top-down student's landmark
# model on crops, which needs a finder; the cascade, a landmark model that is its own finder
# (run on the letterboxed frame first); the finder, on the letterboxed frame.
ROLES = ("whole_frame", "landmarks", "cascade", "finder")
# What rebuilds and places one network: a training checkpoint has these and more; a bundle (the
# export stage's student.pt) holds the landmark model's and its finder's.
NETWORK_KEYS = ("model_config", "codec", "model", "epoch", "role", "crop_margin")
BUNDLE_KIND = "student_bundle"
# The pretrain stage's weights, for train.pretrained=synthetic.
PRETRAINED_WEIGHTS = PRETRAIN_DIR / BEST
REQUIRED_KEYS = frozenset({"format", *NETWORK_KEYS, "fingerprint", "train_params"})
PLAIN_TYPES = (str, int, float, bool, type(None))


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, unsafe, foreign or of another run."""


def _check_plain(value: object, where: str = "checkpoint") -> None:
    """Tensors and plain values only: what ``weights_only=True`` loads back."""
    if isinstance(value, torch.Tensor) or isinstance(value, PLAIN_TYPES):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, PLAIN_TYPES):
                raise TypeError(f"{where}: key {key!r} is not a plain value")
            _check_plain(item, f"{where}[{key!r}]")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
        return
    raise TypeError(
        f"{where} is a {type(value).__name__}: checkpoints hold tensors and plain values"
    )


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write ``payload`` atomically; a value a safe load could not read back is a TypeError."""
    _check_plain(payload)
    with atomic_path(path) as partial:
        torch.save(payload, partial)


def read_safely(path: str | Path) -> object:
    """``torch.load`` without running any code the file might carry; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; run `dvc repro train`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain values, which could run code "
            f"when loaded; refusing to load it ({first_line[:200]})"
        ) from None
    except Exception as error:  # zip, EOF and storage errors vary
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({error}); delete it and retrain"
        ) from None
    if isinstance(payload, dict) and payload.get("format", CHECKPOINT_FORMAT) != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {payload['format']}, expected {CHECKPOINT_FORMAT}; "
            "it comes from another version of this project: retrain (`dvc repro train`)"
        )
    return payload


def load_checkpoint(path: str | Path) -> dict:
    """A training checkpoint of this project, loaded without running any code it carries."""
    payload = read_safely(path)
    if not isinstance(payload, dict) or not REQUIRED_KEYS <= set(payload):
        missing = sorted(REQUIRED_KEYS - set(payload if isinstance(payload, dict) else ()))
        raise CheckpointError(f"{path} is not a checkpoint of this project (missing {missing})")
    return payload


def set_crop_margin(path: str | Path, margin: float, calibration: dict) -> None:
    """Rewrite checkpoint ``path`` with another ``crop_margin`` (the finder's calibrated one),
    keeping how it was found under ``margin_calibration``."""
    payload = load_checkpoint(path)
    payload["crop_margin"] = float(margin)
    payload["margin_calibration"] = calibration
    save_checkpoint(path, payload)


def network_record(payload: dict) -> dict:
    """The part of a checkpoint that rebuilds and places its network (and, for an exported
    landmark network, the ``refine`` passes its student makes)."""
    record = {key: payload[key] for key in NETWORK_KEYS}
    if "refine" in payload:
        record["refine"] = int(payload["refine"])
    return record


def save_bundle(path: str | Path, landmarks: dict, finder: dict | None) -> None:
    """One file for the whole student: the landmark model and its finder (None: it needs none)."""
    records = {"landmarks": network_record(landmarks)}
    if finder is not None:
        records["finder"] = network_record(finder)
    save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "kind": BUNDLE_KIND, **records})


def load_networks(path: str | Path) -> dict[str, dict]:
    """``{"landmarks": record, "finder": record or absent}`` from a training checkpoint or a
    bundle; each record has ``NETWORK_KEYS``."""
    path = Path(path)
    payload = read_safely(path)
    if isinstance(payload, dict) and payload.get("kind") == BUNDLE_KIND:
        records = {k: payload[k] for k in ("landmarks", "finder") if k in payload}
        for name, record in records.items():
            if not isinstance(record, dict) or set(NETWORK_KEYS) - set(record):
                raise CheckpointError(f"{path}: its {name} model is incomplete")
        return records
    return {"landmarks": network_record(load_checkpoint(path))}


def model_from_checkpoint(
    payload: dict, path: str | Path = "checkpoint"
) -> tuple[LandmarkRegressor, LandmarkCodec, ModelConfig]:
    """The model a checkpoint (or a network record) describes, with its weights, and its codec
    and config."""
    try:
        config = ModelConfig.from_dict(payload["model_config"])
        codec = LandmarkCodec.from_dict(payload["codec"])
        model = build_model(dataclasses.replace(config, pretrained="none"))
    except (TypeError, KeyError, ValueError) as error:
        raise CheckpointError(
            f"{path}: model config or codec not understood ({error}); the file comes from "
            "another version of this project"
        ) from None
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as error:
        raise CheckpointError(
            f"{path}: weights do not fit the model its config describes: {error}"
        ) from None
    return model, codec, config


def code_digest(module: str = "pipeline.training", root: Path = REPO) -> str:
    """The project files ``module`` imports (transitively: for the default, the code that trains
    and checkpoints) in the checkout at ``root``: what computes the numbers a checkpoint holds.

    A checkpoint written by other code must not be resumed. `dvc repro` re-runs the train stage
    when its code changes, but keeps models/student (persist: true, for resuming after a kill):
    without this, an interrupted last.pt from the old code would be continued by the new code.
    Only the imported files count, the train stages' code deps (tests/test_dvc_deps.py keeps
    those equal): a change to a file they do not import (e.g. ``predict``) leaves their outputs
    byte-identical, so a fresh clone's `dvc repro` writes the dvc.lock the workspace has.
    """
    digest = hashlib.sha256()
    for path in sorted(imported_files(module, root)):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def state_digest(state: dict) -> str:
    """A digest of a state dict's tensors (e.g. the initial weights a run starts from)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def fingerprint(params: TrainParams, data_digest: str, init_digest: str = "") -> str:
    """What a checkpoint must match to be resumed: the run identity of the train params, the
    training data, the initial weights (when they come from the pretrain stage) and the code."""
    content = {"train": run_identity(params), "data": data_digest, "code": code_digest()}
    if init_digest:
        content["init"] = init_digest
    payload = json.dumps(content, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def load_pretrained_weights(path: Path, pretrain: PretrainParams, train: TrainParams) -> dict:
    """The pretrain stage's weights, checked to be the run these params describe (the one
    definition of "the same run", ``params.run_differences``, that resume and evaluate use)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"train.pretrained=synthetic, but {path} does not exist: set pretrain.num_images > 0 "
            "(and run `dvc repro`), or set train.pretrained=none"
        )
    checkpoint = load_checkpoint(path)
    differ = run_differences(checkpoint["train_params"], pretrain_params_for(pretrain, train))
    if differ:
        raise CheckpointError(
            f"{path} was pretrained with other params ({', '.join(differ)} differ from what the "
            "pretrain and train sections now give); run `dvc repro` so the pretrain stage "
            "follows them"
        )
    return checkpoint["model"]
