"""Stage teacher: the pinned MediaPipe HandLandmarker bundle (or the user's .task file)."""

from __future__ import annotations

import argparse

from pipeline.io import write_json
from pipeline.params import load_params
from pipeline.paths import TEACHER_METRICS as METRICS
from pipeline.paths import TEACHER_MODEL as MODEL
from pipeline.teacher import build_teacher_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = load_params(args.params).teacher
    provenance = build_teacher_model(MODEL, params.model_path)
    write_json(METRICS, {"teacher": provenance})
    print(f"teacher model {MODEL} sha256 {provenance['sha256']} from {provenance['source']}")


if __name__ == "__main__":
    main()
