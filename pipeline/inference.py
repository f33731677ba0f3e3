"""Inference, in one place: the device, batched prediction and the way back to image units, for a
training checkpoint or its ONNX export.

Training-time validation, the evaluate stage, ``hand-landmarks predict`` and ``score``, export's
check and the benchmarks all run the student through here; none of them imports the training
loop. Preprocessing is the training one: the codec's input picture of each image (squashed or
letterboxed to the model's size) as uint8 → the model, which normalises with its own mean/std;
outputs go back through the same codec to fractions of the original image.

The ONNX contract (``export`` writes it, ``load_model`` reads it):

- one input ``images``: float32 (N, 3, S, S), RGB in [0, 1]; the mean/std normalisation is inside
  the graph, S is ``model_config["image_size"]``;
- outputs ``landmarks``: float32 (N, 63), the codec's encoded targets; ``presence``: (N,) the
  probability of a hand; ``confidence``: (N,) how sure the landmarks are (the flip test's measure;
  exports from before 2026-12-06 lack it and run without the flip test);
- N is a dynamic axis;
- ``metadata_props["learned_hand_landmarks"]`` is JSON ``{"model_config", "codec", "epoch"}``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from pipeline.batching import batches
from pipeline.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    load_networks,
    model_from_checkpoint,
)
from pipeline.codec import InputFrames, LandmarkCodec
from pipeline.keypoints import NUM_JOINTS, to_pixels
from pipeline.model import ModelConfig

INPUT_NAME = "images"
OUTPUT_NAME = "landmarks"
PRESENCE_NAME = "presence"
CONFIDENCE_NAME = "confidence"
OUTPUT_NAMES = [OUTPUT_NAME, PRESENCE_NAME, CONFIDENCE_NAME]
LEGACY_OUTPUT_NAMES = [OUTPUT_NAME, PRESENCE_NAME]  # exports without the confidence
METADATA_KEY = "learned_hand_landmarks"
DEVICES = ("auto", "cuda", "mps", "cpu")


class DeviceError(ValueError):
    """A device that was asked for is not available here."""


def select_device(name: str = "auto") -> torch.device:
    """``auto``: a CUDA GPU, else Apple's MPS, else the CPU; a named device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name not in DEVICES:
        raise DeviceError(f"unknown device {name!r}; expected one of {DEVICES}")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device cuda was asked for, but no CUDA GPU is visible; use auto")
    if name == "mps" and not _mps_available():
        raise DeviceError("device mps was asked for, but MPS is not available; use auto")
    return torch.device(name)


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def channels_last(device: torch.device) -> bool:
    """Whether convolutions run in the channels-last memory format on ``device``: faster with
    CUDA's and the CPU's kernels (measured on this 2-core CPU: 341 → 410 training img/s)."""
    return device.type in ("cuda", "cpu")


def autocast(device: torch.device):
    """Mixed precision on CUDA (bfloat16 where the GPU has it), full precision elsewhere."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def predict(
    model: nn.Module,
    images: torch.Tensor,
    codec: LandmarkCodec,
    device: torch.device,
    frames: InputFrames,
    batch_size: int = 64,
    positions: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 3, S, S) images → (N, joints, 3) landmarks in table units (x, y fractions of
    the original image, z decoded) and (N,) presence probabilities.

    ``frames``: each image's frame (``LandmarkCodec.frames``). ``positions``: predict only these
    images (their rows, in this order). ``images`` may be a tensor or the disk-backed cache.
    """
    model.eval()
    positions = np.arange(len(images)) if positions is None else np.asarray(positions)
    landmarks, presence = [], []
    for chunk in batches(len(positions), batch_size, None):
        index = torch.from_numpy(positions[chunk.numpy()])
        x = images[index].to(device, non_blocking=True).float().div_(255)
        if channels_last(device):
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device):
            coords, probability, _ = model(x)
        landmarks.append(coords.float().cpu())
        presence.append(probability.float().cpu())
    if not landmarks:
        return np.zeros((0, NUM_JOINTS, 3)), np.zeros(0)
    decoded = codec.decode(torch.cat(landmarks), frames[positions])
    return decoded, torch.cat(presence).numpy().astype(np.float64)


def with_pixels(landmarks: np.ndarray, width: np.ndarray, height: np.ndarray) -> np.ndarray:
    """(N, joints, 3) table units → x, y in pixels of each original image, z as it is."""
    out = np.array(landmarks, dtype=np.float64)
    out[..., :2] = to_pixels(landmarks, width, height)
    return out


# ---------------------------------------------------------------------------------------------
# A trained network, from a checkpoint or an ONNX export


class Network:
    """One trained network: square uint8 inputs → encoded landmarks and presence. Its role
    (``pipeline.checkpoint.ROLES``) says how a student uses it; ``crop_margin`` how its crops
    are made from landmarks."""

    def __init__(
        self,
        path: Path,
        config: ModelConfig,
        codec: LandmarkCodec,
        epoch: int,
        role: str,
        crop_margin: float,
        refine: int = 0,
    ):
        """``refine``: for a landmark network, the crop passes after the first its student
        makes in image mode (what the export recorded; 0 for a training checkpoint)."""
        self.path, self.config, self.codec, self.epoch = path, config, codec, epoch
        self.role, self.crop_margin, self.refine = role, crop_margin, refine

    # Whether ``run`` makes the flip test (``flip_test_choice``): see ``use_flip_test``.
    flip_test: bool = False
    # Whether the network reports its confidence (ONNX exports from before the flip test do not).
    has_confidence: bool = True

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def use_flip_test(self, enabled: bool) -> None:
        """From now on ``run`` reads each input and its mirror image and keeps the surer of the
        two (``flip_test_choice``); a clear error where the network cannot say which is surer."""
        if enabled and (self.config.head == "pooled_mlp" or not self.has_confidence):
            why = (
                "its pooled_mlp head has no distribution to be sure of"
                if self.config.head == "pooled_mlp"
                else "it was exported before the flip test (no 'confidence' output); "
                "export it again with `dvc repro export`"
            )
            raise CheckpointError(f"{self.path}: the flip test needs a confidence, but {why}")
        self.flip_test = bool(enabled)

    def outputs(
        self, images: torch.Tensor, batch_size: int = 32
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 (N, 3, S, S) → (N, joints*3) encoded targets, (N,) presence probabilities and
        (N,) confidences (NaN where the network has none)."""
        raise NotImplementedError

    def run(self, images: torch.Tensor, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (N, 3, S, S) → (N, joints*3) encoded targets and (N,) presence probabilities;
        with the flip test, of each input and its mirror image the surer reading."""
        if not self.flip_test:
            return self.outputs(images, batch_size)[:2]
        # One batch of both (at batch 1 cheaper than two), made by numpy: torch's own ops beside
        # ONNX Runtime's threads cost milliseconds of thread hand-off (``pipeline.student._batch``).
        pixels = images.numpy()
        both = torch.from_numpy(np.concatenate([pixels, pixels[..., ::-1]]))
        return flip_test_choice(*self.outputs(both, 2 * batch_size))

    def predict(
        self, images: torch.Tensor, frames: InputFrames, batch_size: int = 32
    ) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (N, 3, S, S) inputs and their frames → (N, joints, 3) landmarks in table units
        (fractions of each original image, z decoded) and (N,) presence."""
        encoded, presence = self.run(images, batch_size)
        return self.codec.decode(encoded, frames), presence


def flip_test_choice(
    encoded: np.ndarray, presence: np.ndarray, confidence: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The flip test: ``encoded``, ``presence`` and ``confidence`` of 2N inputs, the second N
    the first N mirrored left to right → per input the landmarks of the surer of its two readings
    (the mirror's mapped back, x → 1 - x) and the mean of their presences.

    A hand and its mirror image are a left and a right hand. On photos unlike its training set
    the network can read one of the two the wrong way round (a thumb as a little finger); the
    wrong reading is the less sure one more often than not (docs/student.md, "The flip test")."""
    count = len(encoded) // 2
    plain = encoded[:count]
    mirrored = np.array(encoded[count:], dtype=plain.dtype).reshape(count, NUM_JOINTS, 3)
    mirrored[..., 0] = 1 - mirrored[..., 0]
    use_mirror = confidence[count:] > confidence[:count]
    chosen = np.where(use_mirror[:, None], mirrored.reshape(count, -1), plain)
    return chosen, (presence[:count] + presence[count:]) / 2


def fold_batch_norm(module: nn.Module) -> nn.Module:
    """An inference copy of ``module`` in eval mode with every BatchNorm that follows a
    convolution in a Sequential folded into that convolution's weights, as ONNX Runtime does
    when it loads the export: half the eager ops (at batch 1 on a CPU the per-op overhead is
    most of the time), the same outputs up to float rounding."""
    folded = copy.deepcopy(module).eval()
    for sequential in [m for m in folded.modules() if isinstance(m, nn.Sequential)]:
        names = list(sequential._modules)
        for first, second in zip(names, names[1:]):
            conv, norm = sequential._modules[first], sequential._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                sequential._modules[first] = fuse_conv_bn_eval(conv, norm)
                sequential._modules[second] = nn.Identity()
    return folded


class TorchNetwork(Network):
    def __init__(self, path, config, codec, epoch, role, crop_margin, module, device, refine=0):
        super().__init__(path, config, codec, epoch, role, crop_margin, refine)
        module = fold_batch_norm(module).to(device)
        if channels_last(device):
            module = module.to(memory_format=torch.channels_last)
        self.module, self.device = module, device

    @torch.no_grad()
    def outputs(self, images, batch_size=32):
        landmarks, presence, confidence = [], [], []
        for chunk in batches(len(images), batch_size, None):
            x = images[chunk].to(self.device).float().div_(255)
            if channels_last(self.device):
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(self.device):
                coords, probability, sureness = self.module(x)
            landmarks.append(coords.float().cpu())
            presence.append(probability.float().cpu())
            confidence.append(sureness.float().cpu())
        if not landmarks:
            return np.zeros((0, NUM_JOINTS * 3), np.float32), np.zeros(0), np.zeros(0)
        return (
            torch.cat(landmarks).numpy(),
            torch.cat(presence).numpy().astype(np.float64),
            torch.cat(confidence).numpy().astype(np.float64),
        )


class OnnxNetwork(Network):
    def __init__(self, path, config, codec, epoch, role, crop_margin, session, refine=0):
        super().__init__(path, config, codec, epoch, role, crop_margin, refine)
        self.session = session
        self.has_confidence = CONFIDENCE_NAME in {o.name for o in session.get_outputs()}

    def outputs(self, images, batch_size=32):
        names = OUTPUT_NAMES if self.has_confidence else LEGACY_OUTPUT_NAMES
        landmarks, presence, confidence = [], [], []
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].numpy().astype(np.float32) / 255.0
            returned = self.session.run(names, {INPUT_NAME: x})
            landmarks.append(returned[0])
            presence.append(returned[1])
            confidence.append(returned[2] if self.has_confidence else np.full(len(x), np.nan))
        if not landmarks:
            return np.zeros((0, NUM_JOINTS * 3), np.float32), np.zeros(0), np.zeros(0)
        return (
            np.concatenate(landmarks),
            np.concatenate(presence).astype(np.float64),
            np.concatenate(confidence).astype(np.float64),
        )


# ONNX Runtime's process-wide thread pool, which every session here shares: the number of threads
# it was made with (0: ONNX Runtime's default), None before the first session. A top-down student
# alternates two networks at batch 1. With a pool each, the idle network's threads either
# busy-wait, taking a core from the one running, or sleep and are woken again at each of its
# operators: a finder pass and three crop passes took 5.5-5.9 ms (2 threads each, no spinning),
# 6.8-8.6 (spinning) and 4.9-6.1 (1 thread each) on the 2-core VM, one shared pool of 2
# 3.3-3.7 (docs/performance.md, "One thread pool for both networks").
_shared_pool: dict[str, int | None] = {"threads": None}


def _share_thread_pool(threads: int) -> bool:
    """Make (once per process) or reuse the shared pool; False where this onnxruntime cannot
    make one from Python (older builds lack the ``set_global_thread_pool_sizes`` binding)."""
    made = _shared_pool["threads"]
    if made is None:
        make = getattr(onnxruntime.capi._pybind_state, "set_global_thread_pool_sizes", None)
        if make is None:
            return False
        try:
            make(threads, 1)
        except Exception as error:  # onnxruntime's own type
            # Made before, outside this module: shared all the same, its size unknown here.
            if "already been created" not in str(error):
                raise
        _shared_pool["threads"] = made = threads
    if made != threads:
        warnings.warn(
            f"ONNX Runtime's thread pool for this process has "
            f"{made or 'its default number of'} threads (the first model loaded chose it); "
            f"threads={threads} does not change it",
            stacklevel=3,
        )
    return True


def onnx_session(
    model: str | os.PathLike | bytes,
    threads: int = 0,
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session on the process's shared thread pool (``_shared_pool``), which
    the first session makes with ``threads`` (0: ONNX Runtime's default, one a physical core);
    a later session's ``threads`` cannot change it (a warning says so). With an onnxruntime too
    old to share one, a pool of its own; with ``threads`` set, its idle threads do not spin
    (they would take the CPU from anything else the process does between runs)."""
    options = onnxruntime.SessionOptions()
    if _share_thread_pool(threads):
        options.use_per_session_threads = False
    elif threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    return onnxruntime.InferenceSession(source, options, providers=list(providers))


def _onnx_providers(device: str) -> list[str]:
    available = onnxruntime.get_available_providers()
    wanted = {"cuda": "CUDAExecutionProvider", "mps": "CoreMLExecutionProvider"}
    if device == "auto":
        return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device not in wanted:
        raise DeviceError(f"unknown device {device!r}; expected auto, cuda, mps or cpu")
    if wanted[device] not in available:
        raise DeviceError(
            f"device {device!r}: onnxruntime here has no {wanted[device]} (it has "
            f"{', '.join(available)}); use --device auto or cpu"
        )
    return [wanted[device], "CPUExecutionProvider"]


def _network_from_record(record: dict, path: Path, device: torch.device) -> Network:
    module, codec, config = model_from_checkpoint(record, path)
    return TorchNetwork(
        path, config, codec, int(record["epoch"]), record["role"], float(record["crop_margin"]),
        module, device, int(record.get("refine", 0)),
    )  # fmt: skip


def onnx_metadata(session: onnxruntime.InferenceSession, path: Path) -> dict:
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        raise CheckpointError(
            f"{path} has no {METADATA_KEY!r} metadata: not an ONNX export of this project "
            "(export it with `dvc repro export`)"
        )
    try:
        meta = json.loads(raw)
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"format {meta.get('format')}, expected {CHECKPOINT_FORMAT}")
        for key in ("model_config", "codec", "epoch", "role", "crop_margin"):
            meta[key]  # noqa: B018  (each must be there)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"{path}: {METADATA_KEY} metadata is malformed or from another version ({error})"
        ) from None
    return meta


def _onnx_network(path: Path, device: str, threads: int = 0) -> tuple[Network, dict]:
    providers = _onnx_providers(device)
    try:
        session = onnx_session(path, threads, providers=providers)
    except Exception as error:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...)
        raise CheckpointError(f"{path} cannot be loaded as an ONNX model ({error})") from None
    meta = onnx_metadata(session, path)
    try:
        config = ModelConfig.from_dict(meta["model_config"])
        codec = LandmarkCodec.from_dict(meta["codec"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: model config or codec not understood ({error})") from None
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    if INPUT_NAME not in inputs or sorted(outputs) not in (
        sorted(OUTPUT_NAMES),
        sorted(LEGACY_OUTPUT_NAMES),
    ):
        raise CheckpointError(
            f"{path} has inputs {sorted(inputs)} and outputs {sorted(outputs)}; expected "
            f"{INPUT_NAME!r} and {', '.join(OUTPUT_NAMES)}"
        )
    expected = (3, config.image_size, config.image_size)
    shape = inputs[INPUT_NAME].shape
    if len(shape) != 4 or any(
        isinstance(got, int) and got != want for got, want in zip(shape[1:], expected)
    ):
        raise CheckpointError(
            f"{path}: input {INPUT_NAME!r} has shape {shape}, but its config says "
            f"(N, {', '.join(map(str, expected))}); the metadata belongs to another model"
        )
    network = OnnxNetwork(
        path, config, codec, int(meta["epoch"]), meta["role"], float(meta["crop_margin"]),
        session, int(meta.get("refine", 0)),
    )  # fmt: skip
    return network, meta


def load_networks_from(
    path: str | os.PathLike, device: str = "auto", threads: int = 0
) -> dict[str, Network]:
    """The networks of a student file: a training checkpoint or the export's bundle (``.pt``),
    or an ONNX export (``.onnx``; a landmark model's finder is the ``.onnx`` its metadata names,
    beside it, checked by sha256). Keys: ``landmarks`` and, where the file has one, ``finder``.

    ``threads``: ONNX Runtime's (0: its default), one pool for the process (``onnx_session``).
    Raises ``CheckpointError`` for a missing, unsafe or foreign file, or one whose weights do not
    fit the config it carries; ``DeviceError`` for a device this machine lacks.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"model {path} not found; train one with `dvc repro` (models/export/student.pt, "
            "models/export/student.onnx) or pass a training checkpoint"
        )
    if path.suffix.lower() == ".onnx":
        network, meta = _onnx_network(path, device, threads)
        networks = {"landmarks": network}
        finder = meta.get("finder")
        if finder:
            finder_path = path.with_name(finder["file"])
            if not finder_path.is_file():
                raise CheckpointError(f"{path} needs its finder {finder_path}, which is missing")
            if sha256_file(finder_path) != finder["sha256"]:
                raise CheckpointError(
                    f"{finder_path} is not the finder {path} was exported with (sha256 differs)"
                )
            networks["finder"], _ = _onnx_network(finder_path, device, threads)
        return networks
    torch_device = select_device(device)
    return {
        name: _network_from_record(record, path, torch_device)
        for name, record in load_networks(path).items()
    }


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
