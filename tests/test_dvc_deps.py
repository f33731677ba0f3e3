"""Each dvc.yaml stage's deps are the project files its command imports, no more and no fewer.

DVC re-runs a stage only when a listed dep changes: a project file that `python -m stages.X`
imports (directly, transitively, or lazily inside a function) but that the stage does not list
would let `dvc repro` keep results of old code. The imports are walked statically (ast), so the
check needs no stage to run; its own test shows that it catches a removed dep line.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from pipeline.imports import imported_files
from tests.dvc_repo import REPO


def stage_module(cmd: str) -> str:
    words = shlex.split(cmd)
    if words[:2] != ["python", "-m"]:
        raise AssertionError(f"stage command {cmd!r} is not `python -m stages.<name> ...`")
    return words[2]


def declared_code(deps: list, root: Path = REPO) -> set[Path]:
    """The project .py files a stage lists (a folder dep stands for the .py files under it)."""
    files: set[Path] = set()
    for dep in deps:
        if "${" in dep:
            continue  # a data folder from params
        path = root / dep
        if path.is_dir():
            files.update(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        elif path.suffix == ".py":
            files.add(path)
    return files


def deps_problems(dvc_yaml: dict, root: Path = REPO) -> list[str]:
    """One line per stage whose code deps are not exactly its imports."""
    problems = []
    for name, stage in dvc_yaml["stages"].items():
        stage = stage.get("do", stage)  # a foreach stage: its template
        imported = imported_files(stage_module(stage["cmd"]), root)
        declared = declared_code(stage.get("deps", []), root)
        for path in sorted(imported - declared):
            problems.append(f"{name}: imports {path.relative_to(root)} but does not list it")
        for path in sorted(declared - imported):
            problems.append(f"{name}: lists {path.relative_to(root)} but does not import it")
    return problems


def test_every_stage_depends_on_exactly_the_project_files_it_imports():
    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert deps_problems(dvc_yaml) == []


def test_the_check_catches_a_removed_dep_line():
    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
    landmarks = dvc_yaml["stages"]["landmarks"]
    assert "pipeline/teacher.py" in landmarks["deps"]
    landmarks["deps"].remove("pipeline/teacher.py")
    assert deps_problems(dvc_yaml) == [
        "landmarks: imports pipeline/teacher.py but does not list it"
    ]
    landmarks["deps"].append("pipeline/metrics.py")  # and one it does not import
    assert "landmarks: lists pipeline/metrics.py but does not import it" in deps_problems(dvc_yaml)


@pytest.mark.parametrize(
    "stage, module",
    [("landmarks", "pipeline/teacher.py"), ("train", "pipeline/metrics.py")],
)
def test_the_walk_sees_lazy_and_transitive_imports(stage, module):
    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
    files = imported_files(stage_module(dvc_yaml["stages"][stage]["cmd"]))
    assert REPO / module in files


def test_predict_score_evaluate_and_export_do_not_import_the_training_loop():
    training = REPO / "pipeline" / "training.py"
    for module in ("pipeline.cli", "stages.evaluate", "stages.export", "pipeline.scoring"):
        assert training not in imported_files(module), module


def _other_values(name: str, value) -> list:
    """Other values for a train key, to try in turn until one is valid."""
    from pipeline.params import TrainParams

    choices = {
        "pretrained": TrainParams.PRETRAINED, "input_layout": TrainParams.LAYOUTS,
        "head": TrainParams.HEADS, "loss": TrainParams.LOSSES, "device": TrainParams.DEVICES,
    }  # fmt: skip
    if name in choices:
        return [c for c in choices[name] if c != value]
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value + 2]
    if isinstance(value, dict):
        return [{**value, "synthetic": 2.0}]
    return [value * 0.8 + 0.013, value * 1.1 + 0.007, value + 0.5]


def train_keys_used_by(derive) -> set[str]:
    """The train keys whose change changes ``derive(train)``: what a stage that trains on
    derived params must list (the pretrain and finder stages)."""
    import dataclasses

    from pipeline.params import ParamsError, TrainParams

    used = set()
    # from the defaults, and from the full-width model (train.pretrained=imagenet needs it)
    for base in (TrainParams(), TrainParams(width=1.0)):
        for field in dataclasses.fields(TrainParams):
            valid = 0
            for other in _other_values(field.name, getattr(base, field.name)):
                try:
                    changed = dataclasses.replace(base, **{field.name: other})
                except ParamsError:
                    continue
                valid += 1
                if derive(changed) != derive(base):
                    used.add(field.name)
            assert valid, f"no other valid value found for train.{field.name}"
    return used


@pytest.mark.parametrize("stage", ["pretrain", "finder"])
def test_stages_on_derived_train_params_list_exactly_the_train_keys_they_use(stage):
    from pipeline.params import FinderParams, PretrainParams, finder_params_for, pretrain_params_for

    derive = {
        "pretrain": lambda train: pretrain_params_for(PretrainParams(), train),
        "finder": lambda train: finder_params_for(FinderParams(), train),
    }[stage]
    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
    listed = {p[len("train.") :] for p in dvc_yaml["stages"][stage]["params"]
              if isinstance(p, str) and p.startswith("train.")}  # fmt: skip
    assert listed == train_keys_used_by(derive)
