"""Stage split: filter the teacher's labels into train/validation/test; report every drop."""

from __future__ import annotations

import argparse

from pipeline.io import read_table, write_json, write_table
from pipeline.params import load_params
from pipeline.paths import DROPPED, SKIPPED
from pipeline.paths import LABELS as TABLE
from pipeline.paths import SPLIT_LABELS as KEPT
from pipeline.paths import SPLIT_METRICS as METRICS
from pipeline.splitting import filter_labels, split_metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = load_params(args.params).split
    result = filter_labels(read_table(TABLE), params)
    metrics = split_metrics(result, skipped_before=len(read_table(SKIPPED)))
    write_table(DROPPED, result.dropped)
    write_json(METRICS, metrics)
    write_table(KEPT, result.kept)
    counts = ", ".join(f"{s} {metrics[s]['kept']}" for s in ("train", "validation", "test"))
    print(
        f"kept {metrics['kept']} ({counts}), {metrics['negatives']} of them without a hand "
        f"(presence negatives); dropped {metrics['dropped']}, reasons in {DROPPED}"
    )


if __name__ == "__main__":
    main()
