"""Stage evaluate: metrics and plots of the best student on the test and validation splits."""

from __future__ import annotations

import argparse

import cv2

from pipeline.checkpoint import BEST, CheckpointError, load_checkpoint, model_from_checkpoint
from pipeline.evaluation import evaluate_split, load_eval_split, overlay_grid
from pipeline.inference import select_device
from pipeline.io import atomic_path, read_table, write_json, write_table
from pipeline.params import load_params, run_differences
from pipeline.paths import EVALUATE_METRICS as METRICS
from pipeline.paths import PLOTS_DIR as PLOTS
from pipeline.paths import SPLIT_LABELS as KEPT
from pipeline.paths import STUDENT_DIR as CHECKPOINTS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    checkpoint_path = CHECKPOINTS / BEST
    checkpoint = load_checkpoint(checkpoint_path)
    changed = run_differences(checkpoint["train_params"], params.train)
    if changed:  # execution-only keys (threads, device, ...) do not make it another run
        raise CheckpointError(
            f"{checkpoint_path} was trained with other train params ({', '.join(changed)} differ); "
            "run `dvc repro train` first"
        )
    model, codec, config = model_from_checkpoint(checkpoint, checkpoint_path)
    device = select_device(params.train.device)
    model.to(device)
    table = read_table(KEPT)

    metrics: dict = {"checkpoint_epoch": checkpoint["epoch"], "image_size": config.image_size}
    outputs = {}
    for split in ("test", "validation"):
        data = load_eval_split(
            table,
            split,
            params.data.root,
            config.image_size,
            codec.layout,
            params.train.cache_budget_bytes,
        )
        result = evaluate_split(model, codec, data, device, params.evaluate.batch_size)
        metrics[split] = result.metrics
        outputs[split] = (data, result)

    test_data, test_result = outputs["test"]
    picture = overlay_grid(
        test_data, test_result.predicted, params.data.root, params.evaluate.grid_images
    )
    write_table(PLOTS / "pck.csv", test_result.pck_curves)
    write_table(PLOTS / "per_joint.csv", test_result.per_joint)
    write_table(PLOTS / "per_class.csv", test_result.per_class)
    encoded, png = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    with atomic_path(PLOTS / "overlays.png") as partial:
        partial.write_bytes(png.tobytes())
    write_json(METRICS, metrics)
    headline = metrics["test"]["student_vs_teacher"]
    print(
        f"test: MPJPE {headline['mpjpe_px']:.2f}px "
        f"({headline['mpjpe_norm_hand']:.3f} of hand size), "
        f"PCK@0.1 {headline['pck_10']:.3f}, AUC {headline['auc']:.3f}"
    )


if __name__ == "__main__":
    main()
