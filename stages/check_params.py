"""Stage params: validate the whole params.yaml, every section and key.

Its dep is the whole file, so it runs whenever params.yaml changes at all: an unknown key, a
wrong type or an out-of-range value anywhere fails `dvc repro` and `dvc exp run` here, even when
no stage that reads that section would re-run (DVC tracks the other stages' params key by key,
and a key no stage lists would otherwise be accepted silently).
"""

from __future__ import annotations

import argparse
import dataclasses

from pipeline.params import load_params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    sections = dataclasses.fields(params)
    keys = sum(len(dataclasses.fields(getattr(params, s.name))) for s in sections)
    print(f"{args.params}: {len(sections)} sections, {keys} keys, all valid")


if __name__ == "__main__":
    main()
