"""Export of the student: ``student.pt`` (one file with the landmark network and its finder),
and each network as ONNX, a file that carries its input contract, codec and role.

The contract every ONNX consumer (``predict``, other runtimes) relies on is written down in
``pipeline.inference``, which reads it back; a landmark network's metadata names its finder's
file (beside it) and sha256.

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

from pipeline.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    model_from_checkpoint,
    network_record,
    save_bundle,
)
from pipeline.codec import NUM_OUTPUTS
from pipeline.inference import (
    INPUT_NAME,
    METADATA_KEY,
    OUTPUT_NAMES,
    onnx_session,
)
from pipeline.io import atomic_path
from pipeline.model import LandmarkRegressor

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
    max_abs_diff: float  # largest |ONNX Runtime - torch| over the check images and outputs


def metadata_of(record: dict, finder: dict | None = None) -> dict:
    """The ONNX metadata of a network record (``checkpoint.network_record``); ``finder``: the
    ``{"file", "sha256"}`` of the finder a landmark network needs."""
    meta = {
        "format": CHECKPOINT_FORMAT,
        "model_config": record["model_config"],
        "codec": record["codec"],
        "epoch": int(record["epoch"]),
        "role": record["role"],
        "crop_margin": float(record["crop_margin"]),
    }
    if finder is not None:
        meta["finder"] = finder
    if "refine" in record:
        meta["refine"] = int(record["refine"])
    return meta


def export_model(model: LandmarkRegressor, metadata: dict) -> Exported:
    """``model`` (put in eval mode) as ONNX with the contract's names and ``metadata``, run with
    ONNX Runtime at batch sizes 1 and 3 against torch; an ExportError if they disagree."""
    data, tracer_warnings = _trace(model, metadata)
    image_size = metadata["model_config"]["image_size"]
    try:
        difference = max_difference(data, model, image_size)
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


def _trace(model: LandmarkRegressor, metadata: dict) -> tuple[bytes, list[str]]:
    model = model.eval().cpu()
    size = metadata["model_config"]["image_size"]
    example = torch.zeros(2, 3, size, size)
    buffer = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(
            model,
            (example,),
            buffer,
            input_names=[INPUT_NAME],
            output_names=OUTPUT_NAMES,
            dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)},
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
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata, sort_keys=True)
    proto.doc_string = "MobileNetV2 student distilled from MediaPipe Hands (learned hand landmarks)"
    onnx.checker.check_model(proto)
    return proto.SerializeToString(), tracer_warnings


def read_metadata(source: str | os.PathLike | bytes | onnx.ModelProto) -> dict:
    """The metadata stored in an exported model (``metadata_of``)."""
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
    """Largest |ONNX Runtime - torch| over seeded random uint8 images at each batch size, on the
    landmarks, the presence and the confidence."""
    runtime = onnx_session(exported)
    rng = np.random.default_rng(seed)
    model = model.eval().cpu()
    worst = 0.0
    for batch in batch_sizes:
        pixels = rng.integers(0, 256, (batch, 3, image_size, image_size), dtype=np.uint8)
        images = pixels.astype(np.float32) / 255
        try:
            onnx_outputs = runtime.run(OUTPUT_NAMES, {INPUT_NAME: images})
        except Exception as error:  # onnxruntime's own exception types
            raise ExportError(
                f"the exported model fails on a batch of {batch}: {str(error).strip()[-300:]}"
            ) from None
        with torch.no_grad():
            torch_outputs = [t.numpy() for t in model(torch.from_numpy(images))]
        shapes = [o.shape for o in onnx_outputs]
        expected = [(batch, NUM_OUTPUTS), (batch,), (batch,)]
        if shapes != expected:
            raise ExportError(
                f"exported model returns {', '.join(map(str, shapes))} for a batch of {batch}, "
                f"expected {', '.join(map(str, expected))} ({', '.join(OUTPUT_NAMES)})"
            )
        worst = max(
            worst, *(float(np.abs(o - t).max()) for o, t in zip(onnx_outputs, torch_outputs))
        )
    return worst


def _export_one(record: dict, path: Path, name: str, finder: dict | None = None) -> dict:
    model, _, _ = model_from_checkpoint(record, name)
    try:
        exported = export_model(model, metadata_of(record, finder))
    except ExportError as error:
        raise ExportError(f"{name}: {error}\n{path.parent} was not written") from None
    path.write_bytes(exported.data)
    return {
        "file": path.name,
        "role": record["role"],
        "checkpoint_epoch": int(record["epoch"]),
        "input_size": record["model_config"]["image_size"],
        "file_bytes": len(exported.data),
        "sha256": hashlib.sha256(exported.data).hexdigest(),
        "max_abs_diff": exported.max_abs_diff,
    }


def export_student(
    checkpoint_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    finder_path: str | os.PathLike | None = None,
    refine: int = 0,
) -> dict:
    """``out_dir`` (replaced atomically, only when every export matches torch): ``student.pt``,
    the bundle of the landmark network and its finder, and ``student.onnx`` (+ ``finder.onnx``
    for a landmark network with a finder of its own). ``refine``: the crop passes after the first
    the top-down student makes in image mode, recorded with it. Returns the export's metrics."""
    landmarks = network_record(load_checkpoint(checkpoint_path))
    if landmarks["role"] in ("landmarks", "cascade"):
        landmarks["refine"] = int(refine)
    finder = None
    if landmarks["role"] == "landmarks":
        if finder_path is None:
            raise ExportError(f"{checkpoint_path} is a crop model and needs its finder's file")
        finder = network_record(load_checkpoint(finder_path))
    networks = {}
    with atomic_path(out_dir) as partial:
        partial.mkdir()
        save_bundle(partial / "student.pt", landmarks, finder)
        reference = None
        if finder is not None:
            networks["finder"] = _export_one(finder, partial / "finder.onnx", str(finder_path))
            reference = {"file": "finder.onnx", "sha256": networks["finder"]["sha256"]}
        networks["landmarks"] = _export_one(
            landmarks, partial / "student.onnx", str(checkpoint_path), reference
        )
    return {
        "exporter": "torch.onnx TorchScript (dynamo=False)",
        "opset": OPSET,
        "networks": networks,
        "checked_batch_sizes": list(CHECK_BATCH_SIZES),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
