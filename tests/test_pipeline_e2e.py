"""Real `dvc repro` of the whole chain in a throw-away git repo, on a tiny synthetic data set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.dvc_repo import commit, make_repo, run

TINY_PARAMS = {
    "synthetic": {"num_images": 24, "width": 320, "height": 240, "num_subjects": 4},
    "landmarks": {"workers": 2},
    "train": {"image_size": 32, "epochs": 2, "batch_size": 4, "threads": 2},
    "evaluate": {"grid_images": 4},
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory, teacher_model) -> Path:
    root = make_repo(tmp_path_factory.mktemp("repo"), TINY_PARAMS)
    run(["dvc", "repro"], root)
    return root


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_repro_writes_every_stage_metric(repo):
    teacher = read_json(repo / "metrics/teacher.json")["teacher"]
    landmarks = read_json(repo / "metrics/landmarks.json")
    split = read_json(repo / "metrics/split.json")
    evaluation = read_json(repo / "metrics/evaluate.json")
    assert landmarks["teacher_sha256"] == teacher["sha256"]
    assert landmarks["images"] == 24 and landmarks["detection_rate"] >= 0.7
    assert split["kept"] + split["dropped"] == landmarks["images"]
    assert all(split[s]["kept"] >= 1 for s in ("train", "validation", "test"))
    test = evaluation["test"]
    assert test["images"] == split["test"]["kept"]
    for comparison in ("student_vs_teacher", "teacher_vs_truth", "student_vs_truth"):
        assert {"mpjpe_px", "mpjpe_norm_hand", "pck_05", "pck_10", "pck_20", "auc"} <= set(
            test[comparison]
        )
    # the teacher is far closer to the truth than an untrained student is
    assert test["teacher_vs_truth"]["mpjpe_px"] < test["student_vs_truth"]["mpjpe_px"]
    assert (repo / "plots/overlays.png").stat().st_size > 10_000
    live = read_json(repo / "dvclive/metrics.json")
    assert live["step"] == 2 and "mpjpe_px" in live["val"]


def test_second_repro_runs_nothing_and_status_is_clean(repo):
    output = run(["dvc", "repro"], repo)
    assert "Running stage" not in output
    assert "up to date" in run(["dvc", "status"], repo)
    # byte code that any import leaves beside the code is not a change of a stage's deps
    run([sys.executable, "-m", "compileall", "-q", "-f", "pipeline", "stages"], repo)
    assert list((repo / "pipeline" / "sources").glob("__pycache__/*.pyc"))
    assert "up to date" in run(["dvc", "status"], repo)


def test_metrics_and_plots_commands(repo):
    shown = run(["dvc", "metrics", "show", "--json"], repo)
    assert "detection_rate" in shown and "student_vs_teacher" in shown
    run(["dvc", "plots", "show", "-o", "dvc_plots"], repo)
    html = (repo / "dvc_plots/index.html").read_text()
    assert "PCK curve" in html and "overlays.png" in html


def test_experiment_with_other_params_is_listed(repo):
    commit(repo, "baseline")
    run(["dvc", "exp", "run", "-S", "train.epochs=1", "-n", "one-epoch"], repo)
    shown = subprocess.run(
        ["dvc", "exp", "show", "--json"], cwd=repo, capture_output=True, text=True
    )
    text = json.dumps(json.loads(shown.stdout))
    assert "one-epoch" in text
    assert "student_vs_teacher" in text and '"epochs": 1' in text


def test_unknown_param_key_fails_repro_and_exp_run_though_no_stage_reads_it(repo):
    """A typo in a key no stage lists (data.subject_patern) used to pass: nothing re-ran."""
    params = repo / "params.yaml"
    original = params.read_text()
    try:
        params.write_text(original.replace("data:\n", "data:\n  subject_patern: x\n", 1))
        for command in (["dvc", "repro"], ["dvc", "exp", "run"]):
            result = subprocess.run(command, cwd=repo, capture_output=True, text=True)
            output = result.stdout + result.stderr
            assert result.returncode != 0, output
            assert "unknown key(s) data.subject_patern" in output
            assert "did you mean data.subject_pattern?" in output
        params.write_text(original)
        command = ["dvc", "exp", "run", "-S", "+data.subject_patern=x"]
        result = subprocess.run(command, cwd=repo, capture_output=True, text=True)
        assert result.returncode != 0
        assert "did you mean data.subject_pattern?" in result.stdout + result.stderr
    finally:
        params.write_text(original)
    assert "up to date" in run(["dvc", "status"], repo)


def test_execution_only_change_after_a_finished_run_trains_again_and_evaluates(repo):
    """train.threads changes how a run executes, not which run it is: DVC re-runs train, which
    trains again (a finished run is never passed off as a new one), and evaluate takes best.pt
    (it used to refuse it: its check compared every train key)."""
    commit(repo, "before threads")
    result = subprocess.run(
        ["dvc", "exp", "run", "-S", "train.threads=1"], cwd=repo, capture_output=True, text=True
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "finished run of these params, data and code" in output
    assert "training again from scratch" in output and "resuming" not in output
    assert "Running stage 'evaluate'" in output
    evaluation = read_json(repo / "metrics/evaluate.json")
    assert evaluation["checkpoint_epoch"] == read_json(repo / "dvclive/metrics.json")["best_epoch"]
    assert evaluation["test"]["student_vs_teacher"]["mpjpe_px"] > 0


def test_forced_repro_of_train_trains_again(repo):
    forced = run(["dvc", "repro", "-f", "-s", "train"], repo)
    assert "training again from scratch" in forced and "resuming" not in forced
    epochs = yaml.safe_load((repo / "params.yaml").read_text())["train"]["epochs"]
    assert forced.count(f"/{epochs} loss") == epochs  # every epoch trained, none skipped


def test_code_changes_make_exactly_the_stages_that_import_them_stale(repo):
    def stale_after_editing(path: str) -> set[str]:
        source = repo / path
        original = source.read_text()
        source.write_text(original + "\n# an edit\n")
        try:
            status = run(["dvc", "status"], repo)
        finally:
            source.write_text(original)
        return {line[:-1] for line in status.splitlines() if line.endswith(":") and " " not in line}

    assert stale_after_editing("pipeline/teacher.py") == {"teacher", "landmarks"}
    assert stale_after_editing("pipeline/metrics.py") == {"pretrain", "train", "evaluate"}
    assert "up to date" in run(["dvc", "status"], repo)
