"""Stage evaluate: the student on the test and validation splits, end to end (finder, then the
crop) and on the teacher's crop, against the teacher and the truth; metrics and plots."""

from __future__ import annotations

import argparse

import cv2

from pipeline.checkpoint import BEST, CheckpointError, load_checkpoint
from pipeline.evaluation import evaluate_outputs, overlay_grid, per_dataset, run_student
from pipeline.inference import load_networks_from
from pipeline.io import atomic_path, read_table, write_json, write_table
from pipeline.params import finder_params_for, load_params, run_differences
from pipeline.paths import EVALUATE_METRICS as METRICS
from pipeline.paths import FINDER_DIR
from pipeline.paths import PLOTS_DIR as PLOTS
from pipeline.paths import SPLIT_LABELS as KEPT
from pipeline.paths import STUDENT_DIR as CHECKPOINTS
from pipeline.student import student_from


def _check_same_run(path, wanted) -> None:
    changed = run_differences(load_checkpoint(path)["train_params"], wanted)
    if changed:  # execution-only keys (threads, device, ...) do not make it another run
        raise CheckpointError(
            f"{path} was trained with other params ({', '.join(changed)} differ); run "
            "`dvc repro` first"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    checkpoint_path = CHECKPOINTS / BEST
    _check_same_run(checkpoint_path, params.train)
    networks = load_networks_from(checkpoint_path, params.train.device)
    if networks["landmarks"].role == "landmarks":
        _check_same_run(FINDER_DIR / BEST, finder_params_for(params.finder, params.train))
        networks["finder"] = load_networks_from(FINDER_DIR / BEST, params.train.device)["landmarks"]
    student = student_from(
        networks, params.evaluate.min_presence, str(checkpoint_path), params.evaluate.flip_test
    )
    student.refine = params.finder.refine  # what the export records with the student
    table = read_table(KEPT)

    metrics: dict = {
        "checkpoint_epoch": student.epoch,
        "image_size": student.image_size,
        "role": student.landmarks.role,
        "flip_test": params.evaluate.flip_test,
    }
    results = {}
    for split in ("test", "validation"):
        rows = table[table["split"] == split]
        if rows.empty:
            raise ValueError(
                f"the {split} split is empty after filtering; nothing to evaluate "
                "(see data/split/dropped.csv)"
            )
        outputs = run_student(student, rows, params.data.roots, params.evaluate.batch_size)
        results[split] = evaluate_outputs(outputs, params.evaluate.min_presence)
        metrics[split] = results[split].metrics
        by_dataset = per_dataset(outputs, params.evaluate.min_presence)
        if by_dataset:
            metrics[split]["per_dataset"] = by_dataset

    test = results["test"]
    picture = overlay_grid(test.outputs, params.data.roots, params.evaluate.grid_images)
    write_table(PLOTS / "pck.csv", test.pck_curves)
    write_table(PLOTS / "per_joint.csv", test.per_joint)
    write_table(PLOTS / "per_class.csv", test.per_class)
    encoded, png = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    with atomic_path(PLOTS / "overlays.png") as partial:
        partial.write_bytes(png.tobytes())
    write_json(METRICS, metrics)
    headline, presence = metrics["test"]["student_vs_teacher"], metrics["test"]["presence"]
    oracle = metrics["test"].get("oracle_crop")
    print(
        f"test, end to end: MPJPE {headline['mpjpe_px']:.2f}px "
        f"({headline['mpjpe_norm_hand']:.3f} of hand size), PCK@0.1 {headline['pck_10']:.3f}, "
        f"AUC {headline['auc']:.3f}"
        + (f"; oracle crop PCK@0.1 {oracle['pck_10']:.3f}" if oracle else "")
        + f"; presence recall {presence['presence_recall']}, no-hand agreement "
        f"{presence['no_hand_agreement']}"
    )


if __name__ == "__main__":
    main()
