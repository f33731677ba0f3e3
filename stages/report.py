"""Stage report: the headline numbers in metrics/summary.json (what `dvc metrics show` prints)
and the offline page template for `dvc plots show` (plots/offline.html, named in .dvc/config)."""

from __future__ import annotations

import argparse

from pipeline.io import atomic_path, write_json
from pipeline.paths import (
    EVALUATE_METRICS,
    FINDER_METRICS,
    LANDMARKS_METRICS,
    LIVE_DIR,
    OFFLINE_TEMPLATE,
    SPLIT_METRICS,
    SUMMARY,
)
from pipeline.report import headline, offline_template


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args(argv)
    summary = headline(
        LANDMARKS_METRICS, SPLIT_METRICS, EVALUATE_METRICS, LIVE_DIR / "metrics.json",
        FINDER_METRICS,
    )  # fmt: skip
    write_json(SUMMARY, summary)
    with atomic_path(OFFLINE_TEMPLATE) as partial:
        partial.write_text(offline_template())
    shown = ", ".join(f"{key} {value}" for key, value in summary.items())
    print(f"{SUMMARY}: {shown}")


if __name__ == "__main__":
    main()
