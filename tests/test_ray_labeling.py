"""The Ray engine (landmarks.engine=ray) labels exactly what the local engine labels.

Synthetic renders plus a truncated, an empty and a missing file, labelled on a 2-CPU local Ray
cluster and by the local engine: the same table (columns, dtypes, values, order) and the same
skipped files with the same reasons.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys

import pandas as pd
import pytest
import yaml

from pipeline.labeling import label_images
from pipeline.params import LandmarksParams, SyntheticParams
from pipeline.ray_labeling import RayLabelingError, label_images_ray, plan_actors
from pipeline.sources import DataListing, ImageRecord
from pipeline.sources.listing import list_images
from pipeline.sources.synthetic import write_synthetic_dataset

SETTINGS = LandmarksParams()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A stage's working folder: data/synthetic with 8 renders, two of them made unreadable."""
    root = tmp_path_factory.mktemp("ray-workspace")
    data = root / "data" / "synthetic"
    write_synthetic_dataset(
        data, SyntheticParams(num_images=8, width=320, height=240, num_subjects=4)
    )
    records = list_images("synthetic", data).records
    truncated, empty = data / records[2].path, data / records[5].path
    truncated.write_bytes(truncated.read_bytes()[:500])
    empty.write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def listing(workspace) -> DataListing:
    listing = list_images("synthetic", workspace / "data" / "synthetic")
    missing = ImageRecord("OUHANDS_test/test/hand_data/colour/A-s09-0001.png", "test", "A", "s09")
    return dataclasses.replace(listing, records=[*listing.records, missing])


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray", reason='Ray is an optional extra: pip install -e ".[ray]"')
    pytest.importorskip("ray.data", reason='Ray Data is missing: pip install -e ".[ray]"')
    from pipeline.ray_labeling import connect

    connect(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local_result(listing, teacher_model):
    return label_images(listing, teacher_model, SETTINGS, workers=1, progress=False)


def reasons(skipped) -> list[tuple[str, str]]:
    return [(s.path, s.reason) for s in skipped]


def test_ray_engine_writes_the_local_table_and_skips(cluster, listing, teacher_model, local_result):
    result = label_images_ray(listing, teacher_model, SETTINGS, workers=2, progress=False)
    pd.testing.assert_frame_equal(result.table, local_result.table, check_exact=True)
    assert reasons(result.skipped) == reasons(local_result.skipped)
    assert [reason.split(" (")[0].split(";")[0] for _, reason in reasons(result.skipped)] == [
        "truncated PNG",
        "empty file",
        "file not found",
    ]
    assert len(result.table) == 6 and (result.table["num_hands"] > 0).sum() >= 4


def test_uri_image_root_reads_through_pyarrow(cluster, listing, teacher_model, local_result):
    uri = f"file://{listing.root.resolve()}"
    result = label_images_ray(
        listing, teacher_model, SETTINGS, workers=1, progress=False, image_root=uri
    )
    pd.testing.assert_frame_equal(result.table, local_result.table, check_exact=True)
    assert reasons(result.skipped) == reasons(local_result.skipped)


def test_landmarks_stage_with_either_engine_writes_the_same_outputs(
    cluster, workspace, teacher_model, monkeypatch
):
    from pipeline.paths import labels_of
    from stages import landmarks as stage

    table_path, skipped_path, metrics_path = labels_of(None)
    monkeypatch.chdir(workspace)
    (workspace / "models/teacher").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(teacher_model, workspace / stage.MODEL)
    outputs = {}
    for engine, workers in (("local", 1), ("ray", 2)):
        params = {"landmarks": {"engine": engine, "workers": workers}}
        (workspace / "params.yaml").write_text(yaml.safe_dump(params))
        stage.main(["--no-progress"])
        metrics = json.loads(metrics_path.read_text())
        assert metrics.pop("engine") == engine
        metrics.pop("images_per_second")
        outputs[engine] = (
            pd.read_parquet(table_path),
            skipped_path.read_text(),
            metrics,
        )
    local, ray = outputs["local"], outputs["ray"]
    pd.testing.assert_frame_equal(ray[0], local[0], check_exact=True)
    assert ray[1:] == local[1:]
    assert local[2]["skipped"] == 2


def test_actor_plan_leaves_half_the_cluster_to_ray_data():
    assert plan_actors(2, 0, 120) == plan_actors(2, 2, 120)
    two = plan_actors(2, 0, 120)
    assert (two.actors, two.cpus_per_actor, two.batch_size) == (2, 0.5, 7)
    assert plan_actors(2, 1, 120).cpus_per_actor == 1.0
    assert plan_actors(64, 0, 10).actors == 10  # never more actors than images
    assert plan_actors(1, 3, 100).cpus_per_actor == 0.16
    with pytest.raises(RayLabelingError, match="no CPUs"):
        plan_actors(0, 0, 10)


def test_without_ray_the_error_says_how_to_install_it(listing, teacher_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(RayLabelingError, match=r'pip install -e "\.\[ray\]"'):
        label_images_ray(listing, teacher_model, SETTINGS)


def test_a_stalled_cluster_fails_with_what_to_change(cluster, listing, teacher_model):
    # Nothing can finish in 50 ms (the actors alone take seconds to start): a stall. Last in the
    # module: the abandoned run goes on until the cluster fixture shuts the cluster down.
    with pytest.raises(RayLabelingError) as error:
        label_images_ray(listing, teacher_model, SETTINGS, workers=2, timeout_s=0.05)
    message = str(error.value)
    assert "no progress for 0.05 s (0 of 9 images" in message
    assert "landmarks.workers" in message and "landmarks.ray_timeout_s" in message
