"""Stage split: filter the teacher's labels into train/validation/test; report every drop.

With ``data.extra_sources`` the tables of every data set are read (each already split by its
own lists or fractions) and kept as one, each row named by its data set (``dataset``)."""

from __future__ import annotations

import argparse

from pipeline.io import read_table, write_json, write_table
from pipeline.params import load_params
from pipeline.paths import DROPPED, labels_of
from pipeline.paths import SPLIT_LABELS as KEPT
from pipeline.paths import SPLIT_METRICS as METRICS
from pipeline.splitting import combine_datasets, filter_labels, split_metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    # the main data set's files, then each extra one's: only those params.yaml names (a data
    # set taken out of params.yaml leaves its old folder behind)
    files = {
        name: labels_of(None if name == params.data.main_name else name)
        for name in params.data.sources
    }
    table = combine_datasets({name: read_table(labels) for name, (labels, _, _) in files.items()})
    skipped = sum(len(read_table(skips)) for _, skips, _ in files.values())
    result = filter_labels(table, params.split)
    metrics = split_metrics(result, skipped_before=skipped)
    write_table(DROPPED, result.dropped)
    write_json(METRICS, metrics)
    write_table(KEPT, result.kept)
    counts = ", ".join(f"{s} {metrics[s]['kept']}" for s in ("train", "validation", "test"))
    print(
        f"kept {metrics['kept']} ({counts}), {metrics['negatives']} of them without a hand "
        f"(presence negatives); dropped {metrics['dropped']}, reasons in {DROPPED}"
        + "".join(
            f"; {name}: {sum(v[s] for s in ('train', 'validation', 'test'))}"
            for name, v in metrics.get("per_dataset", {}).items()
        )
    )


if __name__ == "__main__":
    main()
