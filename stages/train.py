"""Stage train: fit the MobileNetV2 student on the filtered teacher labels, logging with DVCLive."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from dvclive import Live

from pipeline.data import load_split
from pipeline.io import read_table
from pipeline.params import load_params
from pipeline.pretraining import PRETRAINED_WEIGHTS, load_pretrained_weights
from pipeline.training import fit
from stages.split import KEPT

CHECKPOINTS = Path("models/student")
LIVE_DIR = Path("dvclive")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    table = read_table(KEPT)
    size, layout = params.train.image_size, params.train.input_layout
    train = load_split(table[table["split"] == "train"], params.data.root, size, layout)
    validation = load_split(table[table["split"] == "validation"], params.data.root, size, layout)
    print(f"train {len(train)} images, validation {len(validation)}, {size}px ({layout})")
    initial_weights = None
    if params.train.pretrained == "synthetic":
        initial_weights = load_pretrained_weights(PRETRAINED_WEIGHTS, params.train)

    # The plots are declared in our dvc.yaml, so DVCLive must not write one; DVC itself records
    # experiments, so DVCLive must not make its own.
    with Live(str(LIVE_DIR), dvcyaml=False, save_dvc_exp=False) as live:
        live.log_params({f"train.{k}": v for k, v in dataclasses.asdict(params.train).items()})

        def log_epoch(row: dict) -> None:
            live.step = row["epoch"]
            live.log_metric("train/loss", row["train_loss"])
            for name, value in row["val"].items():
                live.log_metric(f"val/{name}", value)
            live.log_metric("train/images_per_second", row["images_per_second"], plot=False)
            live.next_step()

        result = fit(
            train,
            validation,
            params.train,
            CHECKPOINTS,
            on_epoch_end=log_epoch,
            initial_weights=initial_weights,
        )
        live.summary["best_epoch"] = result.best_epoch
        for name, value in result.best_val.items():
            live.summary[f"best_val/{name}"] = value
    print(f"best epoch {result.best_epoch}: validation MPJPE {result.best_val['mpjpe_px']:.2f}px")


if __name__ == "__main__":
    main()
