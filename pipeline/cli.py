"""``hand-landmarks``: use a trained student from the command line.

    hand-landmarks predict MODEL INPUT [--output predictions.csv] [--overlay DIR]
    hand-landmarks score MODEL FOLDER [--teacher PATH] [--json score.json]

MODEL is a training checkpoint (models/student/best.pt) or its ONNX export. The logic lives in
``pipeline.predict`` and ``pipeline.scoring``; this module only parses arguments and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.checkpoint import CheckpointError
from pipeline.images import ImageReadError
from pipeline.inference import DEVICES, DeviceError
from pipeline.io import OutputPathError, check_output_file, write_json
from pipeline.machine import available_cores
from pipeline.paths import TEACHER_MODEL as TEACHER_STAGE_MODEL  # used by `score` in the project
from pipeline.predict import InputError, predict_path, skipped_path, write_predictions
from pipeline.scoring import score_folder
from pipeline.sources import DataLayoutError
from pipeline.student import DEFAULT_MIN_PRESENCE
from pipeline.teacher import TeacherModelError

# What the user can fix is reported in one line; anything else is a bug and keeps its traceback.
ERRORS = (
    CheckpointError, TeacherModelError, InputError, DataLayoutError, ImageReadError,
    OutputPathError, DeviceError, OSError,
)  # fmt: skip


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {value}")
    return value


def _student_options(command: argparse.ArgumentParser) -> None:
    """How the student runs: the options predict and score share."""
    command.add_argument("--batch-size", type=_positive, default=32)
    command.add_argument(
        "--min-presence", type=_probability, default=DEFAULT_MIN_PRESENCE, metavar="P",
        help="a hand where the student's presence is at least P (default %(default)s)",
    )  # fmt: skip
    command.add_argument(
        "--finder", type=Path, default=None, metavar="PATH",
        help="the finder of a crop model that holds none (models/finder/best.pt)",
    )  # fmt: skip
    command.add_argument(
        "--refine", type=int, default=None, metavar="N",
        help="at most N crop passes after the first in image mode, fewer where the square "
        "settles (default: what the model file says)",
    )  # fmt: skip
    command.add_argument(
        "--flip-test", action="store_true",
        help="read each crop and its mirror image and keep the surer reading: twice the crop "
        "passes, fewer hands read the wrong way round on photos unlike the training set",
    )  # fmt: skip
    command.add_argument("--device", choices=DEVICES, default="auto")
    command.add_argument("--no-progress", action="store_true")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hand-landmarks", description="Use a trained student: predict landmarks, or score it."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    predict = commands.add_parser(
        "predict",
        help="landmarks for an image, a folder of images (recursive) or a video",
        description="Write one CSV row per image (per frame for a video, tracked from frame to "
        "frame): path, [frame], width, height, presence, [tracked], crop_x, crop_y, crop_side, "
        "x0, y0, z0, ... with x, y in pixels of the original image, empty where presence is "
        "below --min-presence. Unreadable images are "
        "listed in <output stem>.skipped.csv beside the CSV.",
    )
    predict.add_argument(
        "model", type=Path,
        help="models/export/student.pt or student.onnx, or a training checkpoint (.pt)",
    )  # fmt: skip
    predict.add_argument("input", type=Path, help="image file, folder, or video file")
    predict.add_argument(
        "--output", "-o", type=Path, default=Path("predictions.csv"), metavar="CSV"
    )
    predict.add_argument(
        "--overlay", type=Path, default=None, metavar="DIR",
        help="also write each image with the predicted skeleton as PNG here (a folder outside "
        "the input)",
    )  # fmt: skip
    predict.add_argument(
        "--overwrite", action="store_true", help="replace overlay files that exist already"
    )
    _student_options(predict)

    score = commands.add_parser(
        "score",
        help="score the student against the MediaPipe teacher on a folder of photos",
        description="Label FOLDER with the teacher (cached by image content), predict where it "
        "found a hand (its best hand where it found several) and report MPJPE, PCK and AUC.",
    )
    score.add_argument(
        "model", type=Path,
        help="models/export/student.pt or student.onnx, or a training checkpoint (.pt)",
    )  # fmt: skip
    score.add_argument("folder", type=Path, help="folder of images; first sub-folder = class")
    score.add_argument(
        "--teacher", type=Path, default=None,
        help=f"HandLandmarker .task (default: {TEACHER_STAGE_MODEL} if present, else the pinned "
        "bundle from the per-machine cache)",
    )  # fmt: skip
    score.add_argument(
        "--json", type=Path, default=Path("score.json"), dest="json_path", metavar="PATH"
    )
    score.add_argument(
        "--cache-dir", type=Path, default=None,
        help="teacher label cache (default: $XDG_CACHE_HOME/learned-hand-landmarks/labels)",
    )  # fmt: skip
    score.add_argument(
        "--workers", type=int, default=0, help="teacher processes (default 0: one per CPU core)"
    )
    _student_options(score)
    return parser


def _predict(args: argparse.Namespace) -> int:
    # Checked before any work: the outputs never replace a folder or land on the inputs.
    check_output_file(args.output, [args.input])
    check_output_file(skipped_path(args.output), [args.input])
    result = predict_path(
        args.model,
        args.input,
        overlay_dir=args.overlay,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        min_presence=args.min_presence,
        finder=args.finder,
        refine=args.refine,
        flip_test=args.flip_test,
    )
    skipped = write_predictions(result, args.output)
    hands = int((result.presence >= args.min_presence).sum())
    mode = "tracking" if "tracked" in result.table.columns else "image mode"
    print(
        f"{len(result.table)} predicted in {result.seconds:.1f}s "
        f"({result.images_per_second:.1f}/s, {mode}), a hand in {hands} -> {args.output}; "
        f"{len(result.skipped)} skipped -> {skipped}"
        + (f"; overlays in {args.overlay}" if args.overlay else "")
    )
    if result.table.empty:
        first = result.skipped[0] if result.skipped else None
        reason = f" (e.g. {first.path}: {first.reason})" if first else ""
        print(f"hand-landmarks: error: no image could be read{reason}", file=sys.stderr)
        return 1
    return 0


def _score(args: argparse.Namespace) -> int:
    check_output_file(args.json_path, [args.folder])
    teacher = args.teacher
    if teacher is None and TEACHER_STAGE_MODEL.is_file():
        teacher = TEACHER_STAGE_MODEL
    workers = args.workers or available_cores()
    result = score_folder(
        args.model,
        args.folder,
        teacher_model=teacher,
        cache_dir=args.cache_dir,
        workers=workers,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
        min_presence=args.min_presence,
        finder=args.finder,
        refine=args.refine,
        flip_test=args.flip_test,
    )
    report = result.report
    write_json(args.json_path, report)
    summary = {k: v for k, v in report.items() if k not in ("skipped_files", "per_class")}
    print(json.dumps(summary, indent=2))
    metrics = report["student_vs_teacher"]
    print(
        f"teacher found a hand in {report['detected']}/{report['readable']} readable images "
        f"({report['detection_rate']:.1%}); labelled now {report['labelled_now']}; "
        f"{report['skipped']} skipped; report in {args.json_path}"
    )
    if metrics is None:
        print("hand-landmarks: nothing to score: the teacher found no hand", file=sys.stderr)
        return 1
    print(
        f"student vs teacher on {report['scored']} images: MPJPE {metrics['mpjpe_px']:.2f}px "
        f"({metrics['mpjpe_norm_hand']:.3f} of hand size), PCK@0.05/0.1/0.2 "
        f"{metrics['pck_05']:.3f}/{metrics['pck_10']:.3f}/{metrics['pck_20']:.3f}, "
        f"AUC {metrics['auc']:.3f}"
    )
    oracle = report["oracle_crop"]
    if oracle is not None:
        print(
            f"on the teacher's crop (no finder): PCK@0.05/0.1/0.2 {oracle['pck_05']:.3f}/"
            f"{oracle['pck_10']:.3f}/{oracle['pck_20']:.3f}, MPJPE {oracle['mpjpe_px']:.2f}px "
            f"({oracle['mpjpe_norm_hand']:.3f} of hand size)"
        )
    presence = report["presence"]
    print(
        f"presence vs teacher: says hand on {presence['presence_recall']} of its detections, "
        f"no hand on {presence['no_hand_agreement']} of the images without one"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _predict(args) if args.command == "predict" else _score(args)
    except ERRORS as error:
        print(f"hand-landmarks: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
