"""The label table's columns: landmarks, world landmarks, the source's box and the truth.

One row per image (see docs/data.md, "What each stage writes"); every module that reads or writes
the table takes the column names from here.
"""

from __future__ import annotations

from pipeline.keypoints import column_names

LANDMARK_COLUMNS = column_names("")  # x0, y0, z0, ... normalised to the image, z relative depth
WORLD_COLUMNS = column_names("w")  # metres, hand-centred
TRUTH_COLUMNS = column_names("t", "xy")  # synthetic truth, normalised
BOX_COLUMNS = ["box_x", "box_y", "box_w", "box_h"]  # the source's box, pixels
