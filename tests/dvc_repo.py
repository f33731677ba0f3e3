"""Throw-away git + DVC copies of this repository for tests that run real `dvc` commands."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
COPIED = [
    "pipeline",
    "stages",
    "dvc.yaml",
    "params.yaml",
    ".dvc/config",
    ".dvcignore",
    ".gitignore",
]
GIT = ["git", "-c", "user.name=tests", "-c", "user.email=tests@localhost"]
# The whole chain in about a minute: a few small images, one or two epochs of everything.
TINY_PARAMS = {
    "synthetic": {"num_images": 24, "width": 320, "height": 240, "num_subjects": 4},
    "landmarks": {"workers": 2},
    "pretrain": {
        "num_images": 8,
        "validation_images": 4,
        "width": 96,
        "height": 72,
        "num_subjects": 3,
        "epochs": 1,
        "batch_size": 4,
        "workers": 1,
    },
    "finder": {"image_size": 32, "epochs": 2, "batch_size": 4},
    # rehearsal: a few renders join the train split, so the train stage's glue runs too
    "train": {"image_size": 32, "epochs": 2, "batch_size": 4, "threads": 2, "rehearsal": 0.5},
    "evaluate": {"grid_images": 4},
}


def run(command: list[str], cwd: Path) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def make_repo(root: Path, params: dict[str, dict]) -> Path:
    """Copy the pipeline into ``root``, override params, and commit it to a new git repo."""
    for name in COPIED:
        source, target = REPO / name, root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(source, target)
    values = yaml.safe_load((root / "params.yaml").read_text())
    for section, overrides in params.items():
        values[section].update(overrides)
    (root / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    run(["git", "init", "-q"], root)
    commit(root, "pipeline")
    return root


def copy_repo(source: Path, target: Path) -> Path:
    """An independent copy of a throw-away repo, its git history, DVC cache and outputs
    included: tests that need the tiny chain's results start from one `dvc repro` instead of
    each running their own (DVC re-hashes the copied files once; they match the lock)."""
    shutil.copytree(source, target, symlinks=True)
    return target


def commit(root: Path, message: str) -> None:
    run(["git", "add", "-A"], root)
    run([*GIT, "commit", "-qm", message, "--allow-empty"], root)
