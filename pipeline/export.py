"""ONNX export of the student: one file that carries its input contract and its codec.

The contract every ONNX consumer (``predict``, other runtimes) relies on is written down in
``pipeline.inference``, which reads it back.

The exporter is torch's TorchScript one (``dynamo=False``): the torch.export-based default needs
``onnxscript``, which is not a dependency, and this model has no control flow that would need it.
The same checkpoint gives a byte-identical file. Every export is run with ONNX Runtime on seeded
random images and compared with the torch model before the file is written.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch

from pipeline.checkpoint import load_checkpoint, model_from_checkpoint
from pipeline.codec import NUM_OUTPUTS, LandmarkCodec
from pipeline.inference import INPUT_NAME, METADATA_KEY, OUTPUT_NAME, onnx_session
from pipeline.io import atomic_path
from pipeline.model import LandmarkRegressor, ModelConfig

OPSET = 17  # read by ONNX Runtime 1.17+ (the minimum in pyproject.toml)
CHECK_BATCH_SIZES = (1, 3)  # 1 and >1: the batch axis really is dynamic
# Largest |ONNX - torch| accepted on the encoded targets (x, y are fractions of the image: 1e-4 is
# 0.06 px of a 640 px image); a larger one means the graph computes something else.
TOLERANCE = 1e-4


class ExportError(RuntimeError):
    pass


@dataclass(frozen=True)
class Exported:
    data: bytes  # the serialised ONNX model
    max_abs_diff: float  # largest |ONNX Runtime - torch| over the check images


def export_model(
    model: LandmarkRegressor, config: ModelConfig, codec: LandmarkCodec, epoch: int
) -> Exported:
    """``model`` (put in eval mode) as ONNX with the contract's names and metadata, run with ONNX
    Runtime at batch sizes 1 and 3 against torch; an ExportError if they disagree."""
    data, tracer_warnings = _trace(model, config, codec, epoch)
    try:
        difference = max_difference(data, model, config.image_size)
        if not difference <= TOLERANCE:
            raise ExportError(
                f"ONNX Runtime and torch disagree by up to {difference:.3g} on the same images "
                f"(tolerance {TOLERANCE})"
            )
    except ExportError as error:
        if tracer_warnings:
            raise ExportError(
                f"{error}. The tracer warned (a Python number taken from a tensor is frozen into "
                "the graph, e.g. len(x) instead of x.shape[0]):\n  " + "\n  ".join(tracer_warnings)
            ) from None
        raise
    for message in tracer_warnings:  # harmless this time (the check passed), still worth a look
        warnings.warn(f"ONNX export: {message}", stacklevel=2)
    return Exported(data, difference)


def _trace(
    model: LandmarkRegressor, config: ModelConfig, codec: LandmarkCodec, epoch: int
) -> tuple[bytes, list[str]]:
    model = model.eval().cpu()
    example = torch.zeros(2, 3, config.image_size, config.image_size)
    buffer = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(
            model,
            (example,),
            buffer,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    # The TorchScript exporter's own DeprecationWarnings are dropped (see the module docstring;
    # torch is capped in pyproject.toml); the tracer's warnings about the model are kept.
    tracer_warnings = [
        f"{Path(w.filename).name}:{w.lineno}: {str(w.message).splitlines()[0]}"
        for w in caught
        if issubclass(w.category, torch.jit.TracerWarning)
    ]
    proto = onnx.load_from_string(buffer.getvalue())
    metadata = {"model_config": config.to_dict(), "codec": codec.to_dict(), "epoch": int(epoch)}
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata, sort_keys=True)
    proto.doc_string = "MobileNetV2 student distilled from MediaPipe Hands (learned hand landmarks)"
    onnx.checker.check_model(proto)
    return proto.SerializeToString(), tracer_warnings


def read_metadata(source: str | os.PathLike | bytes | onnx.ModelProto) -> dict:
    """The ``{"model_config", "codec", "epoch"}`` stored in an exported model."""
    if isinstance(source, onnx.ModelProto):
        proto = source
    elif isinstance(source, bytes):
        proto = onnx.load_from_string(source)
    else:
        proto = onnx.load(str(source), load_external_data=False)
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    name = "the model" if isinstance(source, (bytes, onnx.ModelProto)) else str(source)
    raise ExportError(f"{name} has no '{METADATA_KEY}' metadata; not exported by pipeline.export")


def max_difference(
    exported: bytes,
    model: LandmarkRegressor,
    image_size: int,
    batch_sizes: tuple[int, ...] = CHECK_BATCH_SIZES,
    seed: int = 0,
) -> float:
    """Largest |ONNX Runtime - torch| over seeded random uint8 images at each batch size."""
    runtime = onnx_session(exported)
    rng = np.random.default_rng(seed)
    model = model.eval().cpu()
    worst = 0.0
    for batch in batch_sizes:
        pixels = rng.integers(0, 256, (batch, 3, image_size, image_size), dtype=np.uint8)
        images = pixels.astype(np.float32) / 255
        try:
            (onnx_out,) = runtime.run([OUTPUT_NAME], {INPUT_NAME: images})
        except Exception as error:  # onnxruntime's own exception types
            raise ExportError(
                f"the exported model fails on a batch of {batch}: {str(error).strip()[-300:]}"
            ) from None
        with torch.no_grad():
            torch_out = model(torch.from_numpy(images)).numpy()
        if onnx_out.shape != (batch, NUM_OUTPUTS):
            raise ExportError(
                f"exported model returns {onnx_out.shape} for a batch of {batch}, "
                f"expected {(batch, NUM_OUTPUTS)}"
            )
        worst = max(worst, float(np.abs(onnx_out - torch_out).max()))
    return worst


def export_onnx(checkpoint_path: str | os.PathLike, onnx_path: str | os.PathLike) -> dict:
    """Export the checkpoint's student to ``onnx_path`` (atomically, only if it matches torch)."""
    checkpoint = load_checkpoint(checkpoint_path)
    model, codec, config = model_from_checkpoint(checkpoint, checkpoint_path)
    try:
        exported = export_model(model, config, codec, checkpoint["epoch"])
    except ExportError as error:
        raise ExportError(f"{checkpoint_path}: {error}\n{onnx_path} was not written") from None
    with atomic_path(onnx_path) as partial:
        partial.write_bytes(exported.data)
    return {
        "exporter": "torch.onnx TorchScript (dynamo=False)",
        "opset": OPSET,
        "checkpoint_epoch": int(checkpoint["epoch"]),
        "input_size": config.image_size,
        "file_bytes": len(exported.data),
        "sha256": hashlib.sha256(exported.data).hexdigest(),
        "max_abs_diff": exported.max_abs_diff,
        "checked_batch_sizes": list(CHECK_BATCH_SIZES),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
