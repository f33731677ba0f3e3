"""Several data sets in one run (``data.extra_sources``, ``train.source_weights``): each one
labelled by its own DVC stage, split on its own, drawn in training by weight, evaluated apart
and in the whole. A real `dvc repro` on the tiny synthetic set plus real digit photos."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pipeline.batching import batches
from pipeline.params import ParamsError, TrainParams, params_from_dict
from pipeline.samples import training_splits
from pipeline.schema import DATASET, image_paths
from tests.dvc_repo import TINY_PARAMS, commit, copy_repo, run
from tests.test_top_down import photo_table

DIGIT_PHOTOS = 30  # 3 per class


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory, digits_root) -> Path:
    """A few real digit photos in the folders layout (one folder per class)."""
    folder = tmp_path_factory.mktemp("digits")
    for digit in range(10):
        for photo in sorted((digits_root / str(digit)).iterdir())[: DIGIT_PHOTOS // 10]:
            (folder / str(digit)).mkdir(exist_ok=True)
            shutil.copyfile(photo, folder / str(digit) / photo.name)
    return folder


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_repro, digits_folder) -> Path:
    """The tiny chain after its `dvc repro`, then a second data set added to params.yaml and
    `dvc repro` again, as a user adds one."""
    root = copy_repo(tiny_repro[0], tmp_path_factory.mktemp("several") / "repo")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["extra_sources"] = {"digits": {
        "source": "folders", "root": str(digits_folder),
        "validation_fraction": 0.25, "test_fraction": 0.3,
    }}  # fmt: skip
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    root.joinpath("repro.log").write_text(run(["dvc", "repro"], root))
    return root


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_each_data_set_is_labelled_by_its_own_stage(repo):
    output = repo.joinpath("repro.log").read_text()
    assert "Running stage 'landmarks_source@digits'" in output
    # the main data set's labels, already made, are not made again
    assert "Running stage 'landmarks':" not in output and "Running stage 'synthesize'" not in output
    assert f"digits: labelled {DIGIT_PHOTOS} images" in output
    own = read_json(repo / "metrics/landmarks/digits.json")
    assert own["images"] == DIGIT_PHOTOS
    main = read_json(repo / "metrics/landmarks.json")
    assert main["images"] == TINY_PARAMS["synthetic"]["num_images"]


def test_the_split_keeps_every_data_set_named_with_its_own_roots(repo, digits_folder):
    kept = pd.read_parquet(repo / "data/split/labels.parquet")
    assert list(kept[DATASET].unique()) == ["synthetic", "digits"]
    params = params_from_dict(yaml.safe_load((repo / "params.yaml").read_text()))
    roots = {name: repo / root for name, root in params.data.roots.items()}
    paths = image_paths(kept, roots)
    assert all(path.is_file() for path in paths)
    digits = kept[DATASET] == "digits"
    assert all(str(p).startswith(str(digits_folder)) for p, d in zip(paths, digits) if d)
    split = read_json(repo / "metrics/split.json")
    per_dataset = split["per_dataset"]
    for name in ("synthetic", "digits"):
        mine = kept[kept[DATASET] == name]
        for part in ("train", "validation", "test"):
            assert per_dataset[name][part] == int((mine["split"] == part).sum())
    assert (
        sum(per_dataset[n][s] for n in per_dataset for s in ("train", "validation", "test"))
        == (split["kept"])
    )


def test_evaluation_reports_each_data_set_and_the_whole(repo):
    kept = pd.read_parquet(repo / "data/split/labels.parquet")
    test = read_json(repo / "metrics/evaluate.json")["test"]
    assert test["images"] == int((kept["split"] == "test").sum())
    for name in ("synthetic", "digits"):
        mine = kept[(kept[DATASET] == name) & (kept["split"] == "test")]
        assert test["per_dataset"][name]["images"] == len(mine)
    summary = read_json(repo / "metrics/summary.json")
    digits = test["per_dataset"]["digits"]
    assert digits["images_with_hand"] > 0  # the teacher finds the hand in every close-up here
    assert summary["pck_10_digits"] == pytest.approx(
        digits["student_vs_teacher"]["pck_10"], abs=1e-3
    )


def changed_stages(repo: Path) -> set[str]:
    result = subprocess.run(
        ["dvc", "status", "--json"], cwd=repo, capture_output=True, text=True, check=True
    )
    return set(json.loads(result.stdout))


def test_changing_one_data_set_relabels_that_one_alone(repo):
    assert changed_stages(repo) == set()
    commit(repo, "first run")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["extra_sources"]["digits"]["split_seed"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = changed_stages(repo)
    assert "landmarks_source@digits" in changed
    assert "landmarks" not in changed and "synthesize" not in changed
    # and the other way round: the main data set's labels, not the digits'
    del params["data"]["extra_sources"]["digits"]["split_seed"]  # as it was
    params["landmarks"]["min_hand_detection_confidence"] = 0.4
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = changed_stages(repo)
    assert {"landmarks", "landmarks_source@digits"} <= changed  # both use the teacher's settings
    params["landmarks"]["min_hand_detection_confidence"] = 0.5
    params["data"]["split_seed"] = 3
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = changed_stages(repo)
    assert "landmarks" in changed and "landmarks_source@digits" not in changed
    subprocess.run(["git", "checkout", "params.yaml"], cwd=repo, check=True)


def test_an_unknown_data_set_key_fails_the_run_with_its_name(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["extra_sources"]["digits"]["subject_patern"] = "x"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "dvc", "repro"], cwd=repo, capture_output=True, text=True
        )
        assert result.returncode != 0
        assert "data.extra_sources.digits.subject_patern" in result.stdout + result.stderr
        assert "did you mean data.extra_sources.digits.subject_pattern?" in (
            result.stdout + result.stderr
        )
    finally:
        subprocess.run(["git", "checkout", "params.yaml"], cwd=repo, check=True)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"data": {"extra_sources": {"Digits": {"source": "folders", "root": "d"}}}},
         "data.extra_sources.Digits is not a usable name"),
        ({"data": {"extra_sources": {"digits": {"source": "folders"}}}},
         "data.extra_sources.digits needs root"),
        ({"data": {"extra_sources": {"digits": {"root": "d"}}}},
         "data.extra_sources.digits needs source"),
        ({"data": {"extra_sources": {"digits": {"source": "folders", "root": "d",
                                                "test_fraction": 1.5}}}},
         "data.extra_sources.digits.test_fraction must be in [0, 1)"),
        ({"data": {"extra_sources": {"synthetic": {"source": "folders", "root": "d"}}}},
         "data.extra_sources.synthetic is the main data set's name"),
        ({"train": {"source_weights": {"digts": 2}},
          "data": {"extra_sources": {"digits": {"source": "folders", "root": "d"}}}},
         "train.source_weights.digts names no data set (did you mean digits?)"),
        ({"train": {"source_weights": {"synthetic": 0}}},
         "train.source_weights leaves no data set to train on"),
        ({"train": {"source_weights": {"synthetic": -1}}},
         "train.source_weights.synthetic must be in [0, 1000]"),
    ],
)  # fmt: skip
def test_bad_data_set_params_are_errors_naming_the_key(raw, message):
    with pytest.raises(ParamsError) as error:
        params_from_dict(raw)
    assert message in str(error.value)


def test_batches_draw_each_sample_as_often_as_its_weight_says():
    weights = torch.tensor([0.0, 1.0, 3.0] * 100)
    draws = 40_000
    generator = torch.Generator().manual_seed(0)
    order = torch.cat(batches(draws, 16, generator, weights=weights))
    assert len(order) == draws
    kind = order % 3
    assert not (kind == 0).any()  # weight 0: never drawn
    share = float((kind == 2).float().mean())
    sigma = (0.75 * 0.25 / draws) ** 0.5  # a binomial share's standard deviation
    assert abs(share - 0.75) < 6 * sigma
    again = torch.cat(batches(draws, 16, torch.Generator().manual_seed(0), weights=weights))
    assert torch.equal(order, again)
    plain = torch.cat(batches(300, 16, torch.Generator().manual_seed(0)))
    assert sorted(plain.tolist()) == list(range(300))  # no weights: each sample once


def test_training_leaves_out_weight_zero_and_draws_by_weight(tmp_path):
    parts = []
    for name, seed in (("a", 1), ("b", 2)):
        for split, count in (("train", 6), ("validation", 3)):
            table, _ = photo_table(tmp_path / name, count, 1, seed * 10 + len(split))
            table["split"] = split
            table.insert(0, DATASET, name)
            parts.append(table)
    table = pd.concat(parts, ignore_index=True)
    roots = {"a": tmp_path / "a", "b": tmp_path / "b"}
    base = TrainParams(image_size=32, pretrained="none", miss_fraction=0.0)

    def datasets(split) -> list[str]:
        return list(split.table[DATASET])

    train, validation = training_splits(table, roots, base)
    assert set(datasets(train)) == set(datasets(validation)) == {"a", "b"}
    assert train.weights is None  # all alike: every sample once per epoch, as with one data set

    train, validation = training_splits(table, roots, replace(base, source_weights={"b": 0.0}))
    assert set(datasets(train)) == set(datasets(validation)) == {"a"}

    train, _ = training_splits(table, roots, replace(base, source_weights={"b": 3.0}))
    expected = np.where(np.array(datasets(train)) == "b", 3.0, 1.0)
    np.testing.assert_array_equal(train.weights, expected)


def test_image_paths_name_a_data_set_that_is_not_in_the_params(tmp_path):
    table = pd.DataFrame({DATASET: ["a", "gone"], "path": ["x.png", "y.png"]})
    with pytest.raises(ValueError, match="gone"):
        image_paths(table, {"a": tmp_path})
    assert image_paths(table.iloc[:1], {"a": tmp_path}) == [tmp_path / "x.png"]
