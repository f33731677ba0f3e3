"""Stage synthesize: render the synthetic OUHANDS-layout data set with true landmarks."""

from __future__ import annotations

import argparse

from pipeline.params import load_params
from pipeline.paths import SYNTHETIC_ROOT
from pipeline.sources.synthetic import write_synthetic_dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = load_params(args.params).synthetic
    summary = write_synthetic_dataset(SYNTHETIC_ROOT, params)
    print(f"synthetic data set in {SYNTHETIC_ROOT}: {summary}")


if __name__ == "__main__":
    main()
