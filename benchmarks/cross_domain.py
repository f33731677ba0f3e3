"""How the student does on photos of a kind it never saw: train on some data sets, test on all.

One DVC copy of the project holds three data sets, no person in two of them: the synthetic
default, real sign-language-digit close-ups (half of ../shared's people), and "digits in
scenes" made from the other half (``pipeline.sources.scenes``). Each is labelled once; then for
every training mix the pipeline runs again with ``train.source_weights`` (0: left out of
training and of picking the best epoch) and the evaluate stage reports every data set's test
split apart (``per_dataset``). A data set with weight 0 is held out: its row says how the model
does on a kind of photo it never saw, the number a user with their own camera needs.

    python benchmarks/cross_domain.py                   # the default recipe (25-45 min, 2 CPUs)
    python benchmarks/cross_domain.py --synthetic-images 48 --epochs 2 --digit-photos 120  # quick
    python benchmarks/cross_domain.py --mixes scenes "synthetic + scenes" --seeds 0 1 2
"""

# The repo root goes on sys.path before the imports, so `python benchmarks/<name>.py` works.
# ruff: noqa: E402
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import yaml

from benchmarks.common import (
    DIGITS,
    cpu_count,
    finish,
    machine,
    markdown_table,
    temporary_folder,
)
from pipeline.images import is_image_name
from pipeline.scoring import score_folder
from pipeline.sources.scenes import DIGIT_NAME, subject_of, write_scenes
from pipeline.sources.scenes import SUBJECT_PATTERN as SCENES_PATTERN
from tests.dvc_repo import make_repo, run

DIGITS_PATTERN = DIGIT_NAME.pattern  # ten consecutive photo numbers: one person (docs/data.md)
DATASETS = ("synthetic", "digits", "scenes")
# training mixes: the weight of each data set (0: held out)
MIXES = {
    "synthetic": {"synthetic": 1, "digits": 0, "scenes": 0},
    "scenes": {"synthetic": 0, "digits": 0, "scenes": 1},
    "synthetic + scenes": {"synthetic": 1, "digits": 0, "scenes": 1},
    "digits": {"synthetic": 0, "digits": 1, "scenes": 0},
    "all three": {"synthetic": 1, "digits": 1, "scenes": 1},
}


def halves_by_person(photos: Path, limit: int, seed: int = 0) -> tuple[list[Path], list[Path]]:
    """The digit photos in two halves with no person in both (at most ``limit`` photos)."""
    files = sorted(p for p in photos.glob("*/*") if p.is_file() and is_image_name(p.name))[
        : limit or None
    ]
    people = sorted({subject_of(p.name) for p in files})
    order = np.random.default_rng(seed).permutation(len(people))
    first = {people[i] for i in order[: len(people) // 2]}
    return (
        [p for p in files if subject_of(p.name) in first],
        [p for p in files if subject_of(p.name) not in first],
    )


def link_folder(files: list[Path], folder: Path) -> Path:
    """A folders-layout view (class sub-folders of symlinks) of ``files``."""
    for path in files:
        target = folder / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path.resolve())
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic-images", type=int, default=0, help="0: params.yaml's")
    parser.add_argument("--epochs", type=int, default=0, help="train epochs; 0: params.yaml's")
    parser.add_argument("--digit-photos", type=int, default=0, help="0: all of ../shared's")
    parser.add_argument("--mixes", nargs="*", default=list(MIXES), choices=list(MIXES))
    parser.add_argument(
        "--seeds", nargs="*", type=int, default=[0], help="train.seed of each run of every mix"
    )
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp dir)")
    args = parser.parse_args(argv)
    if not DIGITS.is_dir():
        raise SystemExit(f"the digit photos are not at {DIGITS} (../shared is absent)")
    temporary = None if args.keep else temporary_folder("cross-domain")
    work = args.keep or Path(temporary.name)
    work.mkdir(parents=True, exist_ok=True)

    close_ups, pasted = halves_by_person(DIGITS, args.digit_photos)
    digits = link_folder(close_ups, work / "digits")
    scenes_of = link_folder(pasted, work / "scene-photos")
    scenes_root = work / "scenes"
    scenes = write_scenes(scenes_of, scenes_root)
    print(
        f"digits: {len(close_ups)} close-ups; scenes: {scenes['scenes']} pasted + "
        f"{scenes['empty']} empty, from {len(pasted)} photos of other people"
    )
    overrides: dict[str, dict] = {
        "data": {"extra_sources": {
            "digits": {"source": "folders", "root": str(digits), "subject_pattern": DIGITS_PATTERN},
            "scenes": {"source": "folders", "root": str(scenes_root),
                       "subject_pattern": SCENES_PATTERN},
        }},
        "train": {},
    }  # fmt: skip
    if args.synthetic_images:
        overrides["synthetic"] = {"num_images": args.synthetic_images}
    if args.epochs:
        overrides["train"]["epochs"] = args.epochs
    repo = make_repo(work / "repo", overrides)

    # A data set no run trains on is scored on every photo (`hand-landmarks score`'s numbers),
    # not only its test split: none of them was trained on or picked the epoch, and the
    # digits' test split alone is 80 hands, too few to tell two mixes apart.
    folders = {"synthetic": repo / "data/synthetic", "digits": digits, "scenes": scenes_root}
    teacher = repo / "models" / "teacher" / "hand_landmarker.task"
    rows, held_out_rows, runs = [], [], {}
    for seed in args.seeds:
        for mix in args.mixes:
            params = yaml.safe_load((repo / "params.yaml").read_text())
            params["train"]["source_weights"] = MIXES[mix]
            params["train"]["seed"] = seed
            (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            started = time.perf_counter()
            run(["dvc", "repro"], repo)
            seconds = time.perf_counter() - started
            test = json.loads((repo / "metrics/evaluate.json").read_text())["test"]
            key = f"{mix}, seed {seed}"
            runs[key] = {"weights": MIXES[mix], "seed": seed, "seconds": round(seconds),
                         "test": test, "held_out_every_photo": {}}  # fmt: skip
            for name in DATASETS:
                metrics = test["per_dataset"].get(name, {})
                vs = metrics.get("student_vs_teacher")
                if vs is None:
                    continue
                presence = metrics["presence"]
                held_out = MIXES[mix][name] == 0
                rows.append([
                    mix, seed, name + (" (held out)" if held_out else ""),
                    metrics["images_with_hand"], vs["pck_05"], vs["pck_10"], vs["auc"],
                    vs["mpjpe_norm_hand"],
                    metrics.get("oracle_crop", {}).get("pck_10", float("nan")),
                    presence["presence_recall"], presence["no_hand_agreement"],
                ])  # fmt: skip
                if not held_out:
                    continue
                report = score_folder(
                    repo / "models" / "export" / "student.pt", folders[name], teacher,
                    cache_dir=work / "label-cache", workers=cpu_count(), progress=False,
                ).report  # fmt: skip
                runs[key]["held_out_every_photo"][name] = report
                # None where the teacher found no hand, or (oracle) for a whole-frame student
                every = report["student_vs_teacher"] or {}
                oracle = report["oracle_crop"] or {}
                held_out_rows.append([
                    mix, seed, name, report["scored"], every.get("pck_05", float("nan")),
                    every.get("pck_10", float("nan")), every.get("auc", float("nan")),
                    oracle.get("pck_10", float("nan")),
                ])  # fmt: skip
            print(f"{key}: {seconds / 60:.1f} min", flush=True)

    header = [
        "trained on", "seed", "tested on", "test hands", "PCK@0.05", "PCK@0.1", "AUC",
        "mean / hand", "oracle crop PCK@0.1", "'hand' on teacher hands",
        "'no hand' where teacher none",
    ]  # fmt: skip
    table = markdown_table(header, rows)
    held_out_header = [
        "trained on", "seed", "held out", "hands (every photo)", "PCK@0.05", "PCK@0.1", "AUC",
        "oracle crop PCK@0.1",
    ]  # fmt: skip
    held_out_table = markdown_table(held_out_header, held_out_rows)
    print(table)
    print(held_out_table)
    finish(
        "cross_domain",
        {
            "machine": machine(),
            "args": {k: str(v) for k, v in vars(args).items()},
            "digit_close_ups": len(close_ups),
            "scene_photos": len(pasted),
            "runs": runs,
            "table": table,
            "held_out_table": held_out_table,
        },
    )
    if temporary is not None:
        temporary.cleanup()


if __name__ == "__main__":
    main()
