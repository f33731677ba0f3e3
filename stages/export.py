"""Stage export: the best student as ONNX (models/student.onnx), checked against torch."""

from __future__ import annotations

import argparse

from pipeline.checkpoint import BEST
from pipeline.export import export_onnx
from pipeline.io import write_json
from pipeline.paths import EXPORT_METRICS as METRICS
from pipeline.paths import ONNX_MODEL as ONNX
from pipeline.paths import STUDENT_DIR as CHECKPOINTS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args(argv)
    metrics = export_onnx(CHECKPOINTS / BEST, ONNX)
    write_json(METRICS, metrics)
    print(
        f"exported epoch {metrics['checkpoint_epoch']} to {ONNX} "
        f"({metrics['file_bytes'] / 1e6:.1f} MB, opset {metrics['opset']}, "
        f"{metrics['input_size']}px); max |onnx - torch| {metrics['max_abs_diff']:.2g}"
    )


if __name__ == "__main__":
    main()
