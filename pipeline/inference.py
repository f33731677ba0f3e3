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
- one output ``landmarks``: float32 (N, 63), the codec's encoded targets;
- N is a dynamic axis;
- ``metadata_props["learned_hand_landmarks"]`` is JSON ``{"model_config", "codec", "epoch"}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from torch import nn

from pipeline.batching import batches
from pipeline.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from pipeline.codec import LandmarkCodec
from pipeline.keypoints import NUM_JOINTS, to_pixels
from pipeline.model import ModelConfig

INPUT_NAME = "images"
OUTPUT_NAME = "landmarks"
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
    batch_size: int = 64,
    width: np.ndarray | None = None,
    height: np.ndarray | None = None,
    positions: np.ndarray | None = None,
) -> np.ndarray:
    """uint8 (N, 3, S, S) images → (N, joints, 3) landmarks in table units (x, y fractions of
    the original image, z decoded).

    ``width`` and ``height`` of the original images are needed by a letterbox codec.
    ``positions``: predict only these images (their rows, in this order); width and height are
    then those of all N images. ``images`` may be a tensor or the disk-backed cache.
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
        with autocast(device):
            outputs.append(model(x).float().cpu())
    if not outputs:
        return np.zeros((0, NUM_JOINTS, 3))
    return codec.decode(torch.cat(outputs), width, height, size=images.shape[-1])


def with_pixels(landmarks: np.ndarray, width: np.ndarray, height: np.ndarray) -> np.ndarray:
    """(N, joints, 3) table units → x, y in pixels of each original image, z as it is."""
    out = np.array(landmarks, dtype=np.float64)
    out[..., :2] = to_pixels(landmarks, width, height)
    return out


# ---------------------------------------------------------------------------------------------
# A trained student from a checkpoint or an ONNX export


class LandmarkModel:
    """A trained student: square uint8 images in, landmarks out. Build with ``load_model``."""

    def __init__(self, path: Path, config: ModelConfig, codec: LandmarkCodec, epoch: int):
        self.path, self.config, self.codec, self.epoch = path, config, codec, epoch

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def input_image(self, rgb: np.ndarray) -> np.ndarray:
        """An RGB uint8 (H, W, 3) image → the model's (S, S, 3) input, as in training."""
        return self.codec.input_image(rgb, self.image_size)

    def predict(
        self, images: torch.Tensor, width: np.ndarray, height: np.ndarray, batch_size: int = 32
    ) -> np.ndarray:
        """uint8 (N, 3, S, S) inputs of originals ``width`` x ``height`` → (N, joints, 3): x, y as
        fractions of the original image, z decoded."""
        raise NotImplementedError

    def landmarks(self, rgb_images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """RGB uint8 (H, W, 3) images of any size → (N, joints, 3), x and y in pixels of each."""
        if not len(rgb_images):
            return np.zeros((0, NUM_JOINTS, 3))
        squares = np.stack([self.input_image(rgb) for rgb in rgb_images])
        batch = torch.from_numpy(squares).permute(0, 3, 1, 2).contiguous()
        width = np.array([rgb.shape[1] for rgb in rgb_images], dtype=np.float64)
        height = np.array([rgb.shape[0] for rgb in rgb_images], dtype=np.float64)
        return with_pixels(self.predict(batch, width, height, batch_size), width, height)


class TorchModel(LandmarkModel):
    def __init__(self, path, config, codec, epoch, module: nn.Module, device: torch.device):
        super().__init__(path, config, codec, epoch)
        self.module, self.device = module.to(device).eval(), device

    def predict(self, images, width, height, batch_size=32):
        return predict(
            self.module, images, self.codec, self.device, batch_size, width=width, height=height
        )


class OnnxModel(LandmarkModel):
    def __init__(self, path, config, codec, epoch, session: onnxruntime.InferenceSession):
        super().__init__(path, config, codec, epoch)
        self.session = session

    def predict(self, images, width, height, batch_size=32):
        outputs = []
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].numpy().astype(np.float32) / 255.0
            outputs.append(self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0])
        if not outputs:
            return np.zeros((0, NUM_JOINTS, 3))
        return self.codec.decode(np.concatenate(outputs), width, height, size=images.shape[-1])


def onnx_session(
    model: str | os.PathLike | bytes,
    threads: int = 0,
    spin: bool = True,
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session; ``threads`` 0 leaves the thread count to ONNX Runtime.

    ``spin=False`` stops idle worker threads from busy-waiting for the next run, which otherwise
    takes CPU from anything else the process does between runs (torch, MediaPipe).
    """
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spin:
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


def _load_onnx_model(path: Path, device: str) -> LandmarkModel:
    providers = _onnx_providers(device)
    try:
        session = onnx_session(path, providers=providers)
    except Exception as error:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...)
        raise CheckpointError(f"{path} cannot be loaded as an ONNX model ({error})") from None
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        raise CheckpointError(
            f"{path} has no {METADATA_KEY!r} metadata: not an ONNX export of this project "
            "(export the checkpoint with `dvc repro export`)"
        )
    try:
        meta = json.loads(raw)
        config = ModelConfig.from_dict(meta["model_config"])
        codec = LandmarkCodec.from_dict(meta["codec"])
        epoch = int(meta.get("epoch", 0))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"{path}: {METADATA_KEY} metadata is malformed or from another version ({error})"
        ) from None
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
        raise CheckpointError(
            f"{path} has inputs {sorted(inputs)} and outputs {sorted(outputs)}; expected "
            f"{INPUT_NAME!r} and {OUTPUT_NAME!r}"
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
    return OnnxModel(path, config, codec, epoch, session)


def load_model(path: str | os.PathLike, device: str = "auto") -> LandmarkModel:
    """A checkpoint (``*.pt``) or an ONNX export (``*.onnx``) as a ``LandmarkModel``.

    Raises ``CheckpointError`` for a missing, unsafe or foreign file, or one whose weights do not
    fit the config it carries; ``DeviceError`` for a device this machine lacks.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"model {path} not found; train one with `dvc repro train` "
            "(models/student/best.pt) or pass an exported .onnx file"
        )
    if path.suffix.lower() == ".onnx":
        return _load_onnx_model(path, device)
    payload = load_checkpoint(path)
    module, codec, config = model_from_checkpoint(payload, path)
    return TorchModel(path, config, codec, int(payload["epoch"]), module, select_device(device))
