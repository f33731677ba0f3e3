"""What the student is trained and validated on: one sample per row, made from the split table.

Every top-down network sees squares (the crop layout, ``pipeline.crops``):

- ``hand`` samples, for the landmark model: the teacher's landmarks' square (the "oracle" crop)
  of every image with a hand (presence 1), a square of the same size that misses the hand for a
  ``miss_fraction`` of them (presence 0), a wider square that holds the hand small and off
  centre for a ``wide_fraction`` of them (training only: the finder's worst squares; they teach
  the landmarks, not the presence: ``TEACHES_PRESENCE``), and a random square of a hand's size
  in every image where the teacher found no hand (presence 0); and, where the finder is
  trained first, the finder's own square on every frame the source knows holds no hand
  (``finder_negatives``: rendered frames with no hand drawn; presence 0);
- ``frame`` samples, for a finder: the square that holds the whole frame (the image letterboxed),
  presence = the teacher found a hand;
- ``both``: the two together, for the cascade whose network is its own finder.

The random squares are drawn from (seed, row), so a run's samples are the same every time. The
whole-frame student (squash or letterbox layout) has one sample per image.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.crops import (
    SQUARE_COLUMNS,
    crop_square,
    frame_squares,
    miss_square,
    random_square,
    wide_square,
)
from pipeline.data import TEACHES_PRESENCE, SplitData, load_split
from pipeline.images import read_image
from pipeline.inference import Network
from pipeline.keypoints import NUM_JOINTS, to_pixels
from pipeline.params import TrainParams
from pipeline.schema import DATASET, LANDMARK_COLUMNS, TRUTH_COLUMNS, image_paths
from pipeline.student import find_squares

KINDS = ("hand", "frame", "both")
SAMPLE_KIND = "sample"  # column: oracle | miss | wide | empty | finder_empty | frame
# How much bigger than the hand's own crop a wide one is (log-uniform): the finder's squares on
# small hands reach 2-4x the teacher's (docs/student.md, "Wide crops").
WIDE_ZOOM = (1.5, 3.5)


def has_hand(table: pd.DataFrame) -> np.ndarray:
    """(N,) bool: the teacher found a hand in the row's image."""
    return np.isfinite(table[LANDMARK_COLUMNS].to_numpy(np.float64)).all(axis=1)


def drawn_hand(table: pd.DataFrame) -> np.ndarray:
    """(N,) bool: the source's own truth has a hand in the row's image (rendered data)."""
    if not set(TRUTH_COLUMNS) <= set(table.columns):
        return np.zeros(len(table), bool)
    return np.isfinite(table[TRUTH_COLUMNS].to_numpy(np.float64)).all(axis=1)


def known_empty(table: pd.DataFrame) -> np.ndarray:
    """(N,) bool: the source itself says the row's image shows no hand: no hand drawn, in a data
    set whose other rows carry a rendered truth. A photo's truth columns are empty too, but
    there nothing is known: a frame the teacher found no hand in may still show one (16 % of
    the real digit close-ups), and must not be taught "no hand"."""
    drawn = drawn_hand(table)
    groups = table[DATASET].to_numpy() if DATASET in table.columns else np.zeros(len(table))
    rendered = np.zeros(len(table), bool)
    for group in np.unique(groups):
        mine = groups == group
        rendered[mine] = drawn[mine].any()
    return rendered & ~drawn


def landmarks_px(table: pd.DataFrame) -> np.ndarray:
    values = table[LANDMARK_COLUMNS].to_numpy(np.float64).reshape(len(table), NUM_JOINTS, 3)
    return to_pixels(values, table["width"].to_numpy(), table["height"].to_numpy())


def oracle_squares(table: pd.DataFrame, margin: float) -> np.ndarray:
    """(N, 3) the teacher's landmarks' squares (NaN where the teacher found no hand)."""
    return crop_square(landmarks_px(table), margin)


def _with_squares(table: pd.DataFrame, squares: np.ndarray, presence, kind) -> pd.DataFrame:
    out = table.copy()
    out[list(SQUARE_COLUMNS)] = squares
    out["presence"] = np.broadcast_to(np.asarray(presence, bool), len(table))
    out[SAMPLE_KIND] = kind
    # Not wide crops: taught "hand" there, the crop pass called clutter in a big square a hand
    # (false alarms on empty frames); wide negatives against that labelled the real close-ups
    # the teacher missed "no hand" and cost presence there (docs/student.md, "Wide crops").
    out[TEACHES_PRESENCE] = kind != "wide"
    return out


def hand_samples(
    table: pd.DataFrame,
    margin: float,
    miss_fraction: float,
    seed: int,
    wide_fraction: float = 0.0,
) -> pd.DataFrame:
    """Oracle crops of the hands, crops that miss them, wide crops that show them small, and
    random crops of a hand's size in empty images."""
    table = table.reset_index(drop=True)
    found = has_hand(table)
    squares = oracle_squares(table, margin)
    # an empty frame's crop is the size of a hand in its own data set
    groups = table[DATASET].to_numpy() if DATASET in table.columns else np.zeros(len(table))
    typical = np.full(len(table), np.nan)
    for group in np.unique(groups):
        mine = groups == group
        if (found & mine).any():
            typical[mine] = np.median(squares[found & mine, 2])
    width, height = table["width"].to_numpy(np.float64), table["height"].to_numpy(np.float64)
    points = landmarks_px(table)
    parts = [_with_squares(table[found], squares[found], True, "oracle")]
    empty, missing, wide = [], [], []
    for row in range(len(table)):
        if wide_fraction > 0 and found[row]:
            # A stream of its own: the other samples stay what they were without wide ones.
            wide_rng = np.random.default_rng([seed, 0x31DE, row])
            if wide_rng.random() < wide_fraction:
                wide.append((row, wide_square(wide_rng, points[row], margin, WIDE_ZOOM)))
        rng = np.random.default_rng([seed, 0xC209, row])
        if not found[row]:
            side = typical[row]
            if not np.isfinite(side):
                side = min(width[row], height[row]) / 2
            empty.append((row, random_square(rng, width[row], height[row], side, None)))
        elif rng.random() < miss_fraction:
            missing.append((row, miss_square(rng, points[row], width[row], height[row], margin)))
    for rows, kind, presence in (
        (missing, "miss", False),
        (wide, "wide", True),
        (empty, "empty", False),
    ):
        if rows:
            index = [row for row, _ in rows]
            selected = table.iloc[index]
            parts.append(_with_squares(selected, np.stack([s for _, s in rows]), presence, kind))
    return pd.concat(parts, ignore_index=True)


def negative_samples(table: pd.DataFrame, squares: np.ndarray, kind: str) -> pd.DataFrame:
    """Rows of ``table`` seen through ``squares`` (N, 3), each taught "no hand"."""
    return _with_squares(table.reset_index(drop=True), squares, False, kind)


def finder_negatives(
    finder: Network, table: pd.DataFrame, data_root: str | Path | Mapping[str, str | Path]
) -> pd.DataFrame:
    """Hard negatives for the crop model: the square ``finder`` picks on each of ``table``'s
    frames that the source knows holds no hand (``known_empty``). There the finder points at
    the most hand-like clutter, and the crop pass has the last word: random squares of a
    hand's size seldom meet that clutter (through the finder's square the default run's crop
    pass called 3 of its 56 empty training frames a hand; docs/student.md, "Presence")."""
    empty = table[known_empty(table)].reset_index(drop=True)
    if empty.empty:
        return negative_samples(empty, np.zeros((0, 3)), "finder_empty")
    rgbs = [read_image(path) for path in image_paths(empty, data_root)]
    squares, _ = find_squares(finder, rgbs)
    return negative_samples(empty, squares, "finder_empty")


def frame_samples(table: pd.DataFrame) -> pd.DataFrame:
    """Every whole frame, letterboxed into its square; presence = the teacher found a hand."""
    table = table.reset_index(drop=True)
    squares = frame_squares(table["width"].to_numpy(), table["height"].to_numpy())
    return _with_squares(table, squares, has_hand(table), "frame")


def samples_for(
    table: pd.DataFrame,
    kind: str,
    margin: float,
    miss_fraction: float,
    seed: int,
    wide_fraction: float = 0.0,
) -> pd.DataFrame:
    if kind not in KINDS:
        raise ValueError(f"unknown sample kind {kind!r}; expected one of {KINDS}")
    if kind == "frame":
        return frame_samples(table)
    hands = hand_samples(table, margin, miss_fraction, seed, wide_fraction)
    if kind == "hand":
        return hands
    return pd.concat([hands, frame_samples(table)], ignore_index=True)


def split_samples(
    table: pd.DataFrame,
    params: TrainParams,
    kind: str,
    miss_seed_offset: int = 0,
    training: bool = True,
) -> pd.DataFrame:
    """The samples of one split's rows: for the crop layout as ``samples_for`` makes them (wide
    crops only for ``training``: validation measures the crop model where it is meant to be
    precise), for the whole-frame layouts the rows themselves (presence: the teacher found a
    hand)."""
    if params.input_layout != "crop":
        rows = table.reset_index(drop=True).copy()
        rows["presence"] = has_hand(rows)
        return rows
    seed = params.seed + miss_seed_offset
    wide_fraction = params.wide_fraction if training else 0.0
    return samples_for(table, kind, params.crop_margin, params.miss_fraction, seed, wide_fraction)


def dataset_weights(table: pd.DataFrame, params: TrainParams) -> np.ndarray:
    """(N,) each row's ``train.source_weights`` (1 where its data set is not named there)."""
    if DATASET not in table.columns:
        return np.ones(len(table))
    names = table[DATASET].to_numpy()
    return np.array([params.source_weights.get(name, 1.0) for name in names], dtype=np.float64)


def training_splits(
    table: pd.DataFrame,
    data_root: str | Path | Mapping[str, str | Path],
    params: TrainParams,
    kind: str = "hand",
    budget_bytes: int | None = None,
    extra_negatives: pd.DataFrame | None = None,
) -> tuple[SplitData, SplitData]:
    """The decoded train and validation samples of the split table. Training crops are cut
    ``train.crop_context`` wider (and cached at that much more resolution) so that the jitter
    shows real pixels; validation crops are the model's own.

    ``data_root``: one folder, or each data set's by name (``DataParams.roots``). Data sets of
    weight 0 (``train.source_weights``) are left out of both splits; where the weights differ,
    the train split carries them (``SplitData.weights``) and training draws by them.
    ``extra_negatives``: more train samples, e.g. ``finder_negatives`` of the train split."""
    size, layout = params.image_size, params.input_layout
    table = table[dataset_weights(table, params) > 0]
    train_rows = split_samples(table[table["split"] == "train"], params, kind)
    if extra_negatives is not None and len(extra_negatives):
        kept = extra_negatives[dataset_weights(extra_negatives, params) > 0]
        train_rows = pd.concat([train_rows, kept], ignore_index=True)
    validation_rows = split_samples(
        table[table["split"] == "validation"], params, kind, 1, training=False
    )
    squares, cached = None, size
    if layout == "crop":
        squares = train_rows[list(SQUARE_COLUMNS)].to_numpy(np.float64)
        squares[:, 2] *= params.crop_context
        cached = round(size * params.crop_context)
    train = load_split(train_rows, data_root, cached, layout, budget_bytes, squares)
    if budget_bytes is not None and not train.on_disk:  # the budget is for both splits
        budget_bytes = max(budget_bytes - train.images.numel(), 0)
    validation = load_split(validation_rows, data_root, size, layout, budget_bytes)
    weights = dataset_weights(train_rows, params)
    if len(weights) and not np.all(weights == weights[0]):
        train.weights = weights
    return train, validation
