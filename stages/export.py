"""Stage export: the student as one torch file (models/export/student.pt, the landmark network
and its finder) and as ONNX (student.onnx, finder.onnx), each checked against torch."""

from __future__ import annotations

import argparse

from pipeline.checkpoint import BEST
from pipeline.export import export_student
from pipeline.io import write_json
from pipeline.params import load_params
from pipeline.paths import EXPORT_DIR, FINDER_DIR
from pipeline.paths import EXPORT_METRICS as METRICS
from pipeline.paths import STUDENT_DIR as CHECKPOINTS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    refine = load_params(args.params).finder.refine
    finder = FINDER_DIR / BEST
    metrics = export_student(
        CHECKPOINTS / BEST, EXPORT_DIR, finder if finder.is_file() else None, refine
    )
    write_json(METRICS, metrics)
    for name, network in metrics["networks"].items():
        print(
            f"exported the {name} network (epoch {network['checkpoint_epoch']}, "
            f"{network['input_size']}px) to {EXPORT_DIR / network['file']} "
            f"({network['file_bytes'] / 1e6:.1f} MB); max |onnx - torch| "
            f"{network['max_abs_diff']:.2g}"
        )
    print(f"and both in {EXPORT_DIR / 'student.pt'}; opset {metrics['opset']}")


if __name__ == "__main__":
    main()
