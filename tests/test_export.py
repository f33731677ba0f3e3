"""ONNX export of a tiny trained student: torch's numbers, the contract, metadata, atomicity."""

import json
import warnings

import numpy as np
import pytest
import torch

from pipeline import export, inference
from pipeline.checkpoint import BEST, CheckpointError, load_checkpoint, model_from_checkpoint
from pipeline.codec import NUM_OUTPUTS, LandmarkCodec
from pipeline.export import ExportError, export_student, read_metadata
from pipeline.inference import (
    CONFIDENCE_NAME,
    INPUT_NAME,
    METADATA_KEY,
    OUTPUT_NAME,
    PRESENCE_NAME,
)
from pipeline.inference import onnx_session as session
from pipeline.model import ModelConfig
from pipeline.params import TrainParams
from pipeline.training import fit
from tests.tiny import TINY_WHOLE_FRAME, skeleton_split

TINY = TrainParams(**TINY_WHOLE_FRAME)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("student")
    fit(skeleton_split(8, seed=1), skeleton_split(2, seed=2), TINY, directory, log=lambda _: None)
    return directory / BEST


def test_export_matches_torch_at_batch_1_and_3_and_carries_metadata(checkpoint, tmp_path):
    metrics = export_student(checkpoint, tmp_path / "export")
    network = metrics["networks"]["landmarks"]
    onnx_path = tmp_path / "export" / "student.onnx"
    assert network["max_abs_diff"] < 1e-4 and metrics["opset"] == export.OPSET
    assert network["input_size"] == 32 and network["role"] == "whole_frame"
    assert network["file_bytes"] == onnx_path.stat().st_size
    assert set(metrics["networks"]) == {"landmarks"}  # a whole-frame student has no finder

    payload = load_checkpoint(checkpoint)
    model, codec, config = model_from_checkpoint(payload)
    model.eval()
    runtime = session(onnx_path)
    (given,) = runtime.get_inputs()
    returned = {o.name: o for o in runtime.get_outputs()}
    assert (given.name, given.type, given.shape[1:]) == (INPUT_NAME, "tensor(float)", [3, 32, 32])
    assert returned[OUTPUT_NAME].shape[1] == NUM_OUTPUTS and len(returned[PRESENCE_NAME].shape) == 1
    assert len(returned[CONFIDENCE_NAME].shape) == 1
    # Real (skeleton) images, not the random ones the export checked itself with.
    images = skeleton_split(3, seed=5).images.float().div(255)
    for batch in (1, 3):
        onnx_landmarks, onnx_presence, onnx_confidence = runtime.run(
            [OUTPUT_NAME, PRESENCE_NAME, CONFIDENCE_NAME], {INPUT_NAME: images[:batch].numpy()}
        )
        with torch.no_grad():
            torch_landmarks, torch_presence, torch_confidence = (
                t.numpy() for t in model(images[:batch])
            )
        assert onnx_landmarks.shape == (batch, NUM_OUTPUTS) and onnx_presence.shape == (batch,)
        assert np.abs(onnx_landmarks - torch_landmarks).max() < 1e-4
        assert np.abs(onnx_presence - torch_presence).max() < 1e-5
        assert np.abs(onnx_confidence - torch_confidence).max() < 1e-5

    metadata = read_metadata(onnx_path)
    assert metadata["epoch"] == payload["epoch"] == 1 and metadata["role"] == "whole_frame"
    assert ModelConfig.from_dict(metadata["model_config"]) == config
    assert LandmarkCodec.from_dict(metadata["codec"]) == codec
    # the raw entry is plain JSON under the agreed key, readable without this package
    import onnx

    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert json.loads(props[METADATA_KEY]) == metadata


def test_sessions_share_one_thread_pool_whose_size_the_first_chose(checkpoint, tmp_path):
    export_student(checkpoint, tmp_path / "export")  # its check's session made the pool, if
    onnx_path = tmp_path / "export" / "student.onnx"  # no earlier test in this process had
    made = inference._shared_pool["threads"]
    assert made is not None
    images = skeleton_split(2, seed=5).images.float().div(255).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = session(onnx_path, threads=made)  # the pool's own size: no warning
    with pytest.warns(UserWarning, match="thread pool for this process has"):
        second = session(onnx_path, threads=made + 1)
    outputs = [s.run([OUTPUT_NAME, PRESENCE_NAME], {INPUT_NAME: images}) for s in (first, second)]
    np.testing.assert_array_equal(outputs[1][0], outputs[0][0])  # one graph, one pool
    np.testing.assert_array_equal(outputs[1][1], outputs[0][1])


def test_export_is_deterministic(checkpoint, tmp_path):
    export_student(checkpoint, tmp_path / "a")
    export_student(checkpoint, tmp_path / "b")
    for name in ("student.onnx", "student.pt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_a_mismatching_export_is_not_written(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "TOLERANCE", -1.0)
    with pytest.raises(ExportError, match="disagree"):
        export_student(checkpoint, tmp_path / "export")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CheckpointError, match="not found"):
        export_student(tmp_path / "missing.pt", tmp_path / "export")


def test_a_batch_size_frozen_into_the_graph_is_caught(checkpoint, tmp_path, monkeypatch):
    from pipeline.model import LandmarkRegressor

    forward = LandmarkRegressor.forward

    def frozen(self, images):  # len() is a Python int to the tracer: batch 2 becomes a constant
        landmarks, presence, confidence = forward(self, images)
        return landmarks.reshape(len(images), -1), presence, confidence

    monkeypatch.setattr(LandmarkRegressor, "forward", frozen)
    with pytest.raises(ExportError, match=r"(?s)fails on a batch of 1.*tracer warned.*len"):
        export_student(checkpoint, tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_stage_writes_model_and_metrics(checkpoint, tmp_path, monkeypatch):
    from pipeline.paths import EXPORT_DIR, EXPORT_METRICS
    from stages import export as stage
    from tests.dvc_repo import REPO

    (tmp_path / "models" / "student").mkdir(parents=True)
    (tmp_path / "models" / "student" / BEST).write_bytes(checkpoint.read_bytes())
    (tmp_path / "params.yaml").write_bytes((REPO / "params.yaml").read_bytes())
    monkeypatch.chdir(tmp_path)
    stage.main([])
    metrics = json.loads((tmp_path / EXPORT_METRICS).read_text())
    network = metrics["networks"]["landmarks"]
    assert network["max_abs_diff"] < 1e-4 and network["checkpoint_epoch"] == 1
    assert read_metadata(tmp_path / EXPORT_DIR / "student.onnx")["epoch"] == 1


@pytest.mark.parametrize(
    "config",
    [ModelConfig(image_size=64, width=0.5), ModelConfig(head="simcc", image_size=48)],
    ids=["integral", "simcc"],
)
def test_batch_norm_folded_for_inference_gives_the_same_outputs(config):
    """The torch inference path folds every BatchNorm into its convolution (as ONNX Runtime
    does): none is left, the outputs agree to float rounding, the trained module is untouched."""
    from pipeline.inference import fold_batch_norm
    from pipeline.model import build_model

    torch.manual_seed(0)
    model = build_model(config)
    # trained-looking statistics, so that folding has something to fold
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    folded = fold_batch_norm(model)
    norms = [m for m in folded.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert not norms and any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    x = torch.rand(3, 3, config.image_size, config.image_size)
    with torch.no_grad():
        for plain, fused in zip(model(x), folded(x)):
            scale = float(plain.abs().max())
            assert float((plain - fused).abs().max()) <= 1e-5 * max(scale, 1.0)
