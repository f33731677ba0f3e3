"""Digits in scenes: close-up hand photos pasted small into room scenes, a ``folders`` data set.

The hard case for a whole-frame student (a hand of 10-35 % of a 640x480 frame, anywhere in it) and
the one users meet with webcams, made from photos we have: each photo of a folder of class
sub-folders (e.g. ../shared/data/sign-language-digits) is scaled to a square of
``scale_min..scale_max`` of the frame's width at a random place on a procedural room (the
synthetic renderer's backgrounds and camera effects); ``empty_fraction`` more frames show the room
alone (class ``none``). File names keep the photo's subject, so a split grouped by subject keeps a
person out of two splits::

    python -m pipeline.sources.scenes ../shared/data/sign-language-digits data/digits-scenes
    dvc exp run -S data.source=folders -S data.root=data/digits-scenes \\
        -S "data.subject_pattern='^([a-z]+[0-9]+)-'"

For the sign-language digits the subject is the photo number's prefix (``IMG_1118`` → ``p111``,
ten consecutive numbers, as ``IMG_(\\d+)\\d\\.`` groups them); other folders keep their stem.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import cv2
import numpy as np

from pipeline.images import ImageReadError, is_image_name, read_image
from pipeline.io import atomic_path
from pipeline.sources.synthetic.render import camera_effects, room_background

DIGIT_NAME = re.compile(r"IMG_(\d+)\d\.", re.IGNORECASE)
SUBJECT_PATTERN = r"^([a-z]+[0-9]+)-"  # data.subject_pattern for what this writes
EMPTY_CLASS = "none"


def subject_of(name: str) -> str:
    match = DIGIT_NAME.search(name)
    if match:
        return f"p{match.group(1)}"
    return "s" + "".join(c for c in Path(name).stem.lower() if c.isalnum())[:24] + "0"


def compose(
    rng: np.random.Generator,
    photo: np.ndarray | None,
    width: int,
    height: int,
    scale: tuple[float, float],
) -> np.ndarray:
    """A room scene with ``photo`` (RGB uint8) pasted as a square of a random size and place;
    None: the room alone."""
    scene = room_background(rng, width, height)
    if photo is not None:
        side = int(round(rng.uniform(*scale) * width))
        side = max(8, min(side, width, height))
        x, y = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
        interpolation = cv2.INTER_AREA if side < max(photo.shape[:2]) else cv2.INTER_LINEAR
        pasted = cv2.resize(photo, (side, side), interpolation=interpolation)
        # the photo is sRGB; the scene is linear light until camera_effects' display gamma
        linear = (pasted.astype(np.float32) / 255.0) ** 1.15
        scene[y : y + side, x : x + side] = linear
    return camera_effects(rng, scene)


def write_scenes(
    photos_root: Path,
    out: Path,
    width: int = 640,
    height: int = 480,
    scale: tuple[float, float] = (0.10, 0.35),
    empty_fraction: float = 0.1,
    seed: int = 0,
) -> dict:
    """Write the data set (replacing ``out``, which only this may have written); returns counts.
    Unreadable photos are listed, not silently left out."""
    photos_root, out = Path(photos_root), Path(out)
    classes = sorted(p for p in photos_root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{photos_root} has no class sub-folders")
    jobs = [
        (class_dir.name, path)
        for class_dir in classes
        for path in sorted(class_dir.iterdir())
        if path.is_file() and is_image_name(path.name)
    ]
    skipped: list[tuple[str, str]] = []
    count = 0
    with atomic_path(out) as partial:
        for index, (class_name, path) in enumerate(jobs):
            rng = np.random.default_rng([seed, 0x5CE, index])
            try:
                photo = read_image(path)
            except ImageReadError as error:
                skipped.append((str(path), error.reason))
                continue
            target = partial / class_name / f"{subject_of(path.name)}-{path.stem}.png"
            _write(target, compose(rng, photo, width, height, scale))
            count += 1
        empties = round(empty_fraction * count)
        for index in range(empties):
            rng = np.random.default_rng([seed, 0xE3, index])
            # a few background "subjects", so the empty frames split like the others
            target = partial / EMPTY_CLASS / f"bg{index % 12:02d}-{index:05d}.png"
            _write(target, compose(rng, None, width, height, scale))
    return {"scenes": count, "empty": empties, "skipped": skipped}


def _write(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photos", type=Path, help="folder of class sub-folders of hand photos")
    parser.add_argument("out", type=Path, help="where to write the scenes (replaced)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--scale-min", type=float, default=0.10)
    parser.add_argument("--scale-max", type=float, default=0.35)
    parser.add_argument("--empty-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    summary = write_scenes(
        args.photos, args.out, args.width, args.height, (args.scale_min, args.scale_max),
        args.empty_fraction, args.seed,
    )  # fmt: skip
    print(
        f"{summary['scenes']} scenes and {summary['empty']} empty frames in {args.out}; "
        f"{len(summary['skipped'])} photos unreadable"
        + "".join(f"\n  {path}: {reason}" for path, reason in summary["skipped"])
        + f"\nsplit by subject with data.subject_pattern: {SUBJECT_PATTERN!r}"
    )


if __name__ == "__main__":
    main()
