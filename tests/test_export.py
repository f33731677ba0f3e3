"""ONNX export of a tiny trained student: torch's numbers, the contract, metadata, atomicity."""

import json

import numpy as np
import pytest
import torch

from pipeline import export
from pipeline.checkpoint import BEST, CheckpointError, load_checkpoint, model_from_checkpoint
from pipeline.codec import NUM_OUTPUTS, LandmarkCodec
from pipeline.export import ExportError, export_onnx, read_metadata
from pipeline.inference import INPUT_NAME, METADATA_KEY, OUTPUT_NAME
from pipeline.inference import onnx_session as session
from pipeline.model import ModelConfig
from pipeline.params import TrainParams
from pipeline.training import fit
from tests.tiny import skeleton_split

TINY = TrainParams(image_size=32, epochs=1, batch_size=4, device="cpu", threads=2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("student")
    fit(skeleton_split(8, seed=1), skeleton_split(2, seed=2), TINY, directory, log=lambda _: None)
    return directory / BEST


def test_export_matches_torch_at_batch_1_and_3_and_carries_metadata(checkpoint, tmp_path):
    metrics = export_onnx(checkpoint, tmp_path / "student.onnx")
    assert metrics["max_abs_diff"] < 1e-4
    assert metrics["input_size"] == 32 and metrics["opset"] == export.OPSET
    assert metrics["file_bytes"] == (tmp_path / "student.onnx").stat().st_size

    payload = load_checkpoint(checkpoint)
    model, codec, config = model_from_checkpoint(payload)
    model.eval()
    runtime = session(tmp_path / "student.onnx", threads=2)
    (given,), (returned,) = runtime.get_inputs(), runtime.get_outputs()
    assert (given.name, given.type, given.shape[1:]) == (INPUT_NAME, "tensor(float)", [3, 32, 32])
    assert returned.name == OUTPUT_NAME and returned.shape[1] == NUM_OUTPUTS
    # Real (skeleton) images, not the random ones the export checked itself with.
    images = skeleton_split(3, seed=5).images.float().div(255)
    for batch in (1, 3):
        (onnx_out,) = runtime.run(None, {INPUT_NAME: images[:batch].numpy()})
        with torch.no_grad():
            torch_out = model(images[:batch]).numpy()
        assert onnx_out.shape == (batch, NUM_OUTPUTS)
        assert np.abs(onnx_out - torch_out).max() < 1e-4

    metadata = read_metadata(tmp_path / "student.onnx")
    assert metadata["epoch"] == payload["epoch"] == 1
    assert ModelConfig.from_dict(metadata["model_config"]) == config
    assert LandmarkCodec.from_dict(metadata["codec"]) == codec
    # the raw entry is plain JSON under the agreed key, readable without this package
    import onnx

    props = {p.key: p.value for p in onnx.load(str(tmp_path / "student.onnx")).metadata_props}
    assert json.loads(props[METADATA_KEY]) == metadata


def test_export_is_deterministic(checkpoint, tmp_path):
    export_onnx(checkpoint, tmp_path / "a.onnx")
    export_onnx(checkpoint, tmp_path / "b.onnx")
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_a_mismatching_export_is_not_written(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "TOLERANCE", -1.0)
    with pytest.raises(ExportError, match="disagree"):
        export_onnx(checkpoint, tmp_path / "student.onnx")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CheckpointError, match="not found"):
        export_onnx(tmp_path / "missing.pt", tmp_path / "student.onnx")


def test_a_batch_size_frozen_into_the_graph_is_caught(checkpoint, tmp_path, monkeypatch):
    from pipeline.model import LandmarkRegressor

    forward = LandmarkRegressor.forward

    def frozen(self, images):  # len() is a Python int to the tracer: batch 2 becomes a constant
        return forward(self, images).reshape(len(images), -1)

    monkeypatch.setattr(LandmarkRegressor, "forward", frozen)
    with pytest.raises(ExportError, match=r"(?s)fails on a batch of 1.*tracer warned.*len"):
        export_onnx(checkpoint, tmp_path / "student.onnx")
    assert not (tmp_path / "student.onnx").exists()


def test_stage_writes_model_and_metrics(checkpoint, tmp_path, monkeypatch):
    from stages import export as stage

    (tmp_path / "models" / "student").mkdir(parents=True)
    (tmp_path / "models" / "student" / BEST).write_bytes(checkpoint.read_bytes())
    monkeypatch.chdir(tmp_path)
    stage.main([])
    metrics = json.loads((tmp_path / stage.METRICS).read_text())
    assert metrics["max_abs_diff"] < 1e-4 and metrics["checkpoint_epoch"] == 1
    assert read_metadata(tmp_path / stage.ONNX)["epoch"] == 1
