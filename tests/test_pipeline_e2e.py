"""Real `dvc repro` of the whole chain in a throw-away git repo, on a tiny synthetic data set."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.dvc_repo import commit, copy_repo, run

FIRST_REPRO = {}  # the first `dvc repro`'s output, for the tests that read it


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_repro) -> Path:
    source, FIRST_REPRO["output"] = tiny_repro
    return copy_repo(source, tmp_path_factory.mktemp("e2e") / "repo")


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
    assert test["images_with_hand"] == split["test"]["kept"] - split["test"]["negatives"]
    assert evaluation["role"] == "landmarks"  # the top-down student, with a finder of its own
    for comparison in ("student_vs_teacher", "oracle_crop", "teacher_vs_truth", "student_vs_truth"):
        assert {"mpjpe_px", "mpjpe_norm_hand", "pck_05", "pck_10", "pck_20", "auc"} <= set(
            test[comparison]
        )
    # the teacher is far closer to the truth than an untrained student is
    assert test["teacher_vs_truth"]["mpjpe_px"] < test["student_vs_truth"]["mpjpe_px"]
    assert (repo / "plots/overlays.png").stat().st_size > 10_000
    live = read_json(repo / "dvclive/metrics.json")
    assert live["step"] == 2 and "mpjpe_px" in live["val"]
    assert {p.name for p in (repo / "models/export").iterdir()} >= {
        "student.pt", "student.onnx", "finder.onnx"
    }  # fmt: skip
    summary = read_json(repo / "metrics/summary.json")
    assert summary["pck_10"] == pytest.approx(test["student_vs_teacher"]["pck_10"], rel=1e-3)
    assert summary["oracle_pck_10"] == pytest.approx(test["oracle_crop"]["pck_10"], rel=1e-3)
    assert summary["detected"] == landmarks["detection_rate"]


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
    assert "detected" in shown and "pck_10" in shown and "hand_recall" in shown
    # the headline numbers fit a terminal: every line of the table within 200 characters
    table = run(["dvc", "metrics", "show"], repo)
    assert "metrics/summary.json" in table
    assert max(len(line) for line in table.splitlines()) <= 200, table
    run(["dvc", "plots", "show", "-o", "dvc_plots"], repo)
    html = (repo / "dvc_plots/index.html").read_text()
    assert "PCK curve" in html
    assert len(re.findall(r'<img src="[^"]*overlays\.png"', html)) == 1  # listed once
    # offline: the page carries Vega itself instead of loading it from a CDN
    assert "cdn.jsdelivr.net" not in html and "vegaEmbed" in html


def test_repro_output_is_quiet_and_each_stage_ends_with_its_summary(repo):
    output = FIRST_REPRO["output"]
    for noise in ("W0000", "I0000", "INFO: [", "XNNPACK", "Logging before InitGoogle"):
        assert noise not in output, noise
    for summary in ("teacher model", "synthetic data set in", "labelled 24 images", "kept ",
                    "finder: best epoch", "renders rehearsed", "best epoch", "test, end to end:",
                    "exported the",
                    "metrics/summary.json:", "params.yaml:"):  # fmt: skip
        assert summary in output, summary


def test_experiment_with_other_params_is_listed(repo):
    commit(repo, "baseline")
    run(["dvc", "exp", "run", "-S", "train.epochs=1", "-n", "one-epoch"], repo)
    shown = subprocess.run(
        ["dvc", "exp", "show", "--json"], cwd=repo, capture_output=True, text=True
    )
    text = json.dumps(json.loads(shown.stdout))
    assert "one-epoch" in text
    assert "pck_10" in text and '"epochs": 1' in text


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
    run(["dvc", "repro"], repo)  # the stages after train follow its new checkpoint


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

    # pretrain: pretrain.labels=teacher labels the renders with it; train renders through the
    # same module (train.rehearsal), which imports it
    assert stale_after_editing("pipeline/teacher.py") == {
        "teacher", "landmarks", "pretrain", "train"
    }  # fmt: skip
    assert stale_after_editing("pipeline/metrics.py") == {"pretrain", "finder", "train", "evaluate"}
    assert "up to date" in run(["dvc", "status"], repo)


def test_plots_draw_offline_in_a_real_browser(repo, tmp_path):
    """A headless Chromium that can reach nothing renders every chart of `dvc plots show` from
    the page's inlined Vega, and the overlay once (skips where no Chromium is installed)."""
    from benchmarks.plots_offline import find_browser, render

    browser = find_browser(None)
    if browser is None:
        pytest.skip(
            "no Chromium on this machine to render the page (Debian: apt-get install chromium)"
        )
    found = render(repo, browser, tmp_path / "page", offline_template=True)
    assert not found["loads_from_cdn"]
    assert found["charts_drawn"] == found["charts_declared"] >= 6, found
    assert found["overlay_images"] == 1, found
