"""Stage finder: fit the top-down student's finder, a small network that says on the whole
(letterboxed) frame whether there is a hand and where; the train recipe at ``finder.image_size``
with the finder's schedule.

Not needed (a marker file instead) for a whole-frame student (``train.input_layout`` squash or
letterbox) or when the landmark network is its own finder (``finder.kind: shared``).
"""

from __future__ import annotations

import argparse

from pipeline.checkpoint import BEST, LAST, set_crop_margin
from pipeline.evaluation import calibrate_finder_margin
from pipeline.inference import load_networks_from
from pipeline.io import read_table, write_json
from pipeline.model import reading_as_fitted
from pipeline.params import finder_params_for, load_params
from pipeline.paths import FINDER_DIR, FINDER_METRICS
from pipeline.paths import SPLIT_LABELS as KEPT
from pipeline.samples import training_splits
from pipeline.training import fit

DISABLED_MARKER = FINDER_DIR / "disabled.json"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    FINDER_DIR.mkdir(parents=True, exist_ok=True)
    if params.train.input_layout != "crop" or params.finder.kind == "shared":
        why = (
            "the landmark network is its own finder (finder.kind: shared)"
            if params.train.input_layout == "crop"
            else f"the student sees the whole frame (train.input_layout: "
            f"{params.train.input_layout})"
        )
        for name in (BEST, LAST):
            (FINDER_DIR / name).unlink(missing_ok=True)
        write_json(DISABLED_MARKER, {"finder": f"none: {why}"})
        write_json(FINDER_METRICS, {"finder": "none"})
        print(f"no finder to train: {why}")
        return
    DISABLED_MARKER.unlink(missing_ok=True)
    finder = finder_params_for(params.finder, params.train)
    train, validation = training_splits(
        read_table(KEPT), params.data.roots, finder, "frame", finder.cache_budget_bytes
    )
    print(
        f"finder: {len(train)} frames ({int((~train.presence).sum())} without a hand), "
        f"validation {len(validation)}, {finder.image_size}px letterboxed",
        flush=True,
    )
    result = fit(train, validation, finder, FINDER_DIR, role="finder")
    calibration = {"crop_margin": params.train.crop_margin, "scale": 1.0, "frames": 0}
    if params.finder.calibrate_margin:
        network = load_networks_from(FINDER_DIR / BEST, params.train.device)["landmarks"]
        with reading_as_fitted(network.module):
            calibration = calibrate_finder_margin(
                network,
                validation.table,
                params.data.roots,
                params.train.crop_margin,
            )
        set_crop_margin(FINDER_DIR / BEST, calibration["crop_margin"], calibration)
        print(
            f"finder: its squares are {calibration['scale']:.3f}x wider to match the teacher's "
            f"on {calibration['frames']} validation frames (crop margin "
            f"{calibration['crop_margin']:.3f})"
        )
    write_json(
        FINDER_METRICS,
        {"best_epoch": result.best_epoch, "best_val": result.best_val,
         "images_per_second": result.history[-1]["images_per_second"],
         "margin_calibration": calibration},
    )  # fmt: skip
    print(
        f"finder: best epoch {result.best_epoch}, validation MPJPE "
        f"{result.best_val['mpjpe_px']:.1f}px, presence recall "
        f"{result.best_val.get('presence_recall')}, no-hand agreement "
        f"{result.best_val.get('no_hand_agreement')}"
    )


if __name__ == "__main__":
    main()
