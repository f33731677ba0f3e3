"""Stage pretrain: fit the student on rendered hands, labelled by their true landmarks or by the
teacher (``pretrain.labels``), so that ``train.pretrained=synthetic`` can start from these
weights instead of ImageNet's."""

from __future__ import annotations

import argparse

from pipeline.params import load_params
from pipeline.paths import PRETRAIN_DIR
from pipeline.pretraining import pretrain


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    result = pretrain(params.pretrain, params.train, PRETRAIN_DIR, landmarks=params.landmarks)
    if result is not None:
        print(
            f"pretrained: best epoch {result.best_epoch}, validation MPJPE vs "
            f"{params.pretrain.labels} "
            f"{result.best_val['mpjpe_px']:.2f}px, PCK@0.1 {result.best_val['pck_10']:.3f}"
        )


if __name__ == "__main__":
    main()
