"""A grid of experiments through DVC's queue, as a team runs it (docs/scaling.md).

In a throw-away repo: `dvc repro` once and commit, queue two experiments with `dvc exp run
--queue -S ...`, run them with `dvc queue start --jobs 1`, and find both in `dvc exp show --json`
with their params and metrics. Queued experiments run in temporary copies of the git repo and
take the committed stages' outputs (the synthetic images, the labels) from the DVC cache that
`dvc repro` filled, so only train, evaluate and export run again.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.dvc_repo import commit, copy_repo, run

GRID = {"q-one-epoch": "train.epochs=1", "q-low-lr": "train.lr=0.001"}
QUEUE_TIMEOUT_S = 240


def queue_status(repo: Path) -> dict[str, str]:
    """Experiment name -> Queued / Running / Success / Failed, from `dvc queue status`."""
    statuses = {}
    for line in run(["dvc", "queue", "status"], repo).splitlines():
        words = line.split()
        if len(words) >= 3 and words[1] in GRID:
            statuses[words[1]] = words[-1]
    return statuses


def wait_for_queue(repo: Path) -> dict[str, str]:
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    while time.monotonic() < deadline:
        statuses = queue_status(repo)
        if len(statuses) == len(GRID) and not {"Queued", "Running"} & set(statuses.values()):
            return statuses
        time.sleep(3)
    logs = {name: run(["dvc", "queue", "logs", name], repo)[-2000:] for name in GRID}
    pytest.fail(f"queue not done after {QUEUE_TIMEOUT_S} s: {queue_status(repo)}\n{logs}")


def experiments(shown: list) -> dict[str, dict]:
    """Experiment name -> its `data` (params, metrics) from `dvc exp show --json`, any nesting."""
    found: dict[str, dict] = {}

    def walk(node) -> None:
        if isinstance(node, dict):
            if node.get("name") in GRID and isinstance(node.get("data"), dict):
                found[node["name"]] = node["data"]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(shown)
    return found


@pytest.mark.slow
def test_queued_grid_runs_and_is_compared(tmp_path, tiny_repro):
    repo = copy_repo(tiny_repro[0], tmp_path / "repo")  # after `dvc repro`
    baseline = yaml.safe_load((repo / "params.yaml").read_text())["train"]
    commit(repo, "baseline")
    for name, assignment in GRID.items():
        run(["dvc", "exp", "run", "--queue", "-S", assignment, "-n", name], repo)
    assert set(queue_status(repo).values()) == {"Queued"}
    try:
        run(["dvc", "queue", "start", "--jobs", "1"], repo)
        statuses = wait_for_queue(repo)
    finally:
        # Workers stop on their own once the queue is empty; this only matters after a failure.
        subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=repo, capture_output=True)
    assert statuses == {name: "Success" for name in GRID}, statuses

    shown = subprocess.run(
        ["dvc", "exp", "show", "--json"], cwd=repo, capture_output=True, text=True, check=True
    )
    found = experiments(json.loads(shown.stdout))
    assert set(found) == set(GRID)
    for name, data in found.items():
        params = data["params"]["params.yaml"]["data"]["train"]
        assert params["epochs"] == (1 if name == "q-one-epoch" else baseline["epochs"])
        assert params["lr"] == (0.001 if name == "q-low-lr" else baseline["lr"])
        summary = data["metrics"]["metrics/summary.json"]["data"]
        assert summary["mpjpe_px"] > 0 and 0 <= summary["pck_10"] <= 1
    # the comparison DVC exists for fits a terminal: only the columns that differ
    table = run(["dvc", "exp", "show", "--only-changed", "--no-pager"], repo)
    assert "q-one-epoch" in table and "q-low-lr" in table
    assert max(len(line) for line in table.splitlines()) <= 200, table
