"""The label table's columns: landmarks, world landmarks, the source's box and the truth.

One row per image (see docs/data.md, "What each stage writes"); every module that reads or writes
the table takes the column names from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from pipeline.keypoints import column_names

LANDMARK_COLUMNS = column_names("")  # x0, y0, z0, ... normalised to the image, z relative depth
WORLD_COLUMNS = column_names("w")  # metres, hand-centred
TRUTH_COLUMNS = column_names("t", "xy")  # synthetic truth, normalised
BOX_COLUMNS = ["box_x", "box_y", "box_w", "box_h"]  # the source's box, pixels
# The split table's: the name of the data set a row comes from (``DataParams.sources``); the
# row's ``path`` is relative to that data set's root.
DATASET = "dataset"


def image_paths(table: pd.DataFrame, roots: Mapping[str, str | Path] | str | Path) -> list[Path]:
    """Each row's image file: its ``path`` under the root of its data set (``roots`` by name,
    as ``DataParams.roots`` gives them), or under ``roots`` itself when that is one folder."""
    if isinstance(roots, (str, Path)):
        return [Path(roots) / relative for relative in table["path"]]
    if DATASET not in table.columns:
        if len(roots) != 1:
            raise ValueError(f"the table names no data set and there are {len(roots)} roots")
        (root,) = roots.values()
        return [Path(root) / relative for relative in table["path"]]
    unknown = sorted(set(table[DATASET]) - set(roots))
    if unknown:
        raise ValueError(
            f"rows of data set(s) {', '.join(unknown)} but params.yaml has no such data set "
            f"(it has {', '.join(roots)}); run `dvc repro` so that the split stage runs again"
        )
    return [Path(roots[name]) / relative for name, relative in zip(table[DATASET], table["path"])]
