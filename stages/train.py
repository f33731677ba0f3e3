"""Stage train: fit the MobileNetV2 student on the filtered teacher labels, logging with DVCLive."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from dvclive import Live

from pipeline import distributed
from pipeline.checkpoint import BEST, PRETRAINED_WEIGHTS, load_pretrained_weights
from pipeline.data import concat_splits
from pipeline.inference import load_networks_from
from pipeline.io import read_table
from pipeline.machine import available_cores
from pipeline.model import reading_as_fitted
from pipeline.params import Params, load_params
from pipeline.paths import FINDER_DIR, LIVE_DIR
from pipeline.paths import SPLIT_LABELS as KEPT
from pipeline.paths import STUDENT_DIR as CHECKPOINTS
from pipeline.pretraining import rehearsal_split
from pipeline.samples import finder_negatives, training_splits
from pipeline.training import fit


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    if params.train.processes > 1 and not distributed.launched_by_torchrun():
        # One stage command for any process count: re-run this module under torchrun, in this
        # process (exec), so that DVC's signals reach the launcher and its exit code is ours.
        command = distributed.launch_command(
            params.train.processes, "stages.train", sys.argv[1:] if argv is None else argv
        )
        # torchrun would give each process one thread; share this machine's cores instead.
        threads = max(1, available_cores() // params.train.processes)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        print(" ".join(command[1:]), flush=True)
        os.execv(command[0], command)
    with distributed.process_group(params.train.device) as ranks:
        train_student(params, ranks)


def train_student(params: Params, ranks: distributed.Ranks) -> None:
    size, layout = params.train.image_size, params.train.input_layout
    # the cascade's network is its own finder: it learns whole frames as well as crops
    cascade = layout == "crop" and params.finder.kind == "shared"
    table = read_table(KEPT)
    negatives = None
    if layout == "crop" and not cascade and params.train.finder_negatives:
        # on the CPU whatever trains: the same squares on every machine and in every process
        finder = load_networks_from(FINDER_DIR / BEST, "cpu")["landmarks"]
        with reading_as_fitted(finder.module):
            negatives = finder_negatives(
                finder, table[table["split"] == "train"], params.data.roots
            )
    train, validation = training_splits(
        table, params.data.roots, params.train, "both" if cascade else "hand",
        params.train.cache_budget_bytes, negatives,
    )  # fmt: skip
    rehearsed = 0
    if params.train.rehearsal > 0:
        # every process renders the same samples: the renders are seeded by their index
        rehearsed = round(params.train.rehearsal * len(train))
        train = concat_splits(train, rehearsal_split(params.pretrain, params.train, rehearsed))
    role = "cascade" if cascade else None
    initial_weights = None
    if params.train.pretrained == "synthetic":
        initial_weights = load_pretrained_weights(PRETRAINED_WEIGHTS, params.pretrain, params.train)
    if not ranks.is_main:  # fit shares the work; rank 0 alone logs and writes
        fit(train, validation, params.train, CHECKPOINTS, initial_weights=initial_weights,
            role=role)  # fmt: skip
        return
    where = "a temporary file" if train.on_disk else "memory"
    hard = "" if negatives is None else f", {len(negatives)} of them the finder's squares"
    if rehearsed:
        hard += f"; {rehearsed} renders rehearsed (train.rehearsal={params.train.rehearsal})"
    print(
        f"train {len(train)} samples ({int((~train.presence).sum())} without a hand{hard}), "
        f"validation {len(validation)}, {size}px ({layout}); "
        f"decoded train images in {where} "
        f"(train.cache_budget_mib={params.train.cache_budget_mib}); "
        f"{ranks.world_size} training process(es)",
        flush=True,
    )

    # The plots are declared in our dvc.yaml, so DVCLive must not write one; DVC itself records
    # experiments, so DVCLive must not make its own.
    with Live(str(LIVE_DIR), dvcyaml=False, save_dvc_exp=False) as live:
        live.log_params({f"train.{k}": v for k, v in dataclasses.asdict(params.train).items()})

        def log_epoch(row: dict) -> None:
            live.step = row["epoch"]
            live.log_metric("train/loss", row["train_loss"])
            for name, value in row["val"].items():
                if value is not None:  # a presence fraction of nothing
                    live.log_metric(f"val/{name}", value)
            if "images_per_second" in row:  # not in the rows a resumed run replays
                live.log_metric("train/images_per_second", row["images_per_second"], plot=False)
            live.next_step()

        result = fit(
            train,
            validation,
            params.train,
            CHECKPOINTS,
            on_epoch_end=log_epoch,
            initial_weights=initial_weights,
            role=role,
        )
        live.summary["best_epoch"] = result.best_epoch
        for name, value in result.best_val.items():
            live.summary[f"best_val/{name}"] = value
    print(f"best epoch {result.best_epoch}: validation MPJPE {result.best_val['mpjpe_px']:.2f}px")


if __name__ == "__main__":
    main()
