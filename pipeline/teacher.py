"""The MediaPipe teacher: build the pinned ``.task`` bundle and run the HandLandmarker.

This is the only module that imports ``mediapipe``; the rest of the package sees numpy arrays.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.keypoints import NUM_JOINTS
from pipeline.params import LandmarksParams

# Google's hand models as shipped inside the mediapipe 0.10.21 wheel (identical in every platform's
# wheel). Newer mediapipe releases ship no hand model and the usual model download needs a host we
# may not reach, so the pinned wheel from the package index is the one reproducible source.
MEDIAPIPE_WHEEL_VERSION = "0.10.21"
BUNDLE_MEMBERS: dict[str, tuple[str, str]] = {
    # name inside the .task bundle: (path inside the wheel, sha256)
    "hand_detector.tflite": (
        "mediapipe/modules/palm_detection/palm_detection_full.tflite",
        "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54",
    ),
    "hand_landmarks_detector.tflite": (
        "mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
        "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3",
    ),
}
# Any platform's wheel carries the same files; asking for one fixed platform makes the download
# work from every host (and every Python) that can reach the index.
WHEEL_PLATFORM = "manylinux_2_28_x86_64"
WHEEL_PYTHON = "3.11"


class TeacherModelError(RuntimeError):
    """The teacher model could not be fetched, verified or loaded."""


# MediaPipe's C++ side (glog, absl, TFLite/LiteRT) writes its own lines to the process's stderr
# when a landmarker is made, runs and is closed ("INFO: [environment.cc...]", "W0000 ..."): they
# say nothing to the user and bury each stage's summary. They are kept off unless this is set.
VERBOSE_ENVIRONMENT = "HAND_LANDMARKS_VERBOSE"
# What still gets through: glog's error and fatal lines, and anything that says ERROR.
_NATIVE_LINES_THAT_MATTER = re.compile(r"^[EF]\d{4}|ERROR|Error:")


@contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Silence the native library lines written to file descriptor 2 inside the block (set
    HAND_LANDMARKS_VERBOSE=1 to see them); their errors are passed on."""
    if os.environ.get(VERBOSE_ENVIRONMENT):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            for line in sink.read().decode(errors="replace").splitlines():
                if _NATIVE_LINES_THAT_MATTER.search(line):
                    print(line, file=sys.stderr)


def sha256_of(data_or_path: bytes | str | os.PathLike) -> str:
    if isinstance(data_or_path, bytes):
        return hashlib.sha256(data_or_path).hexdigest()
    digest = hashlib.sha256()
    with open(data_or_path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "learned-hand-landmarks" / "teacher"


def _download_wheel(dest: Path) -> Path:
    """Fetch the pinned mediapipe wheel with pip: pip's index, mirror and proxy settings apply."""
    command = [
        sys.executable, "-m", "pip", "download", f"mediapipe=={MEDIAPIPE_WHEEL_VERSION}",
        "--no-deps", "--only-binary=:all:", "--platform", WHEEL_PLATFORM,
        "--python-version", WHEEL_PYTHON, "--dest", str(dest), "--quiet",
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(dest.glob(f"mediapipe-{MEDIAPIPE_WHEEL_VERSION}-*.whl"))
    if completed.returncode != 0 or not wheels:
        raise TeacherModelError(
            f"could not download mediapipe=={MEDIAPIPE_WHEEL_VERSION} with pip "
            f"(exit {completed.returncode}): {completed.stderr.strip()[-800:]}\n"
            "Fix: make the package index reachable (pip's config or PIP_INDEX_URL), or set "
            "teacher.model_path in params.yaml to a HandLandmarker .task file you have."
        )
    return wheels[0]


def _verified_members(wheel: Path) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    with zipfile.ZipFile(wheel) as archive:
        for bundle_name, (wheel_path, expected) in BUNDLE_MEMBERS.items():
            try:
                data = archive.read(wheel_path)
            except KeyError:
                raise TeacherModelError(f"{wheel} has no {wheel_path}") from None
            actual = sha256_of(data)
            if actual != expected:
                raise TeacherModelError(
                    f"{wheel_path} in {wheel.name} has sha256 {actual}, expected {expected}; "
                    "refusing to use a teacher model other than the pinned one"
                )
            members[bundle_name] = data
    return members


def _bundle(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    # Stored, not deflated: MediaPipe memory-maps the members of a .task file.
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(info, members[name])
    return buffer.getvalue()


def pinned_bundle_bytes(cache_dir: Path | None = None) -> bytes:
    """The pinned bundle, built once per machine and cached; every member verified by sha256."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cached = cache_dir / f"hand_landmarker-mediapipe-{MEDIAPIPE_WHEEL_VERSION}.task"
    if cached.exists():
        with zipfile.ZipFile(cached) as archive:
            members = {name: archive.read(name) for name in BUNDLE_MEMBERS}
        if all(sha256_of(members[n]) == BUNDLE_MEMBERS[n][1] for n in BUNDLE_MEMBERS):
            return cached.read_bytes()
        cached.unlink()  # a damaged cache is rebuilt, never trusted
    with tempfile.TemporaryDirectory() as tmp:
        bundle = _bundle(_verified_members(_download_wheel(Path(tmp))))
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".partial")
    partial.write_bytes(bundle)
    partial.replace(cached)
    return bundle


def check_task_file(path: Path) -> None:
    """A user-supplied .task must at least be a bundle holding the two hand models."""
    if not path.is_file():
        raise TeacherModelError(f"teacher.model_path {path} does not exist or is not a file")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except zipfile.BadZipFile:
        raise TeacherModelError(
            f"{path} is not a MediaPipe .task bundle (not a zip archive)"
        ) from None
    missing = set(BUNDLE_MEMBERS) - names
    if missing:
        raise TeacherModelError(f"{path} lacks {sorted(missing)}; not a HandLandmarker bundle")


def build_teacher_model(output: Path, model_path: str = "", cache_dir: Path | None = None) -> dict:
    """Write the teacher bundle to ``output`` atomically; return its provenance for metrics."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    if model_path:
        source = Path(model_path).expanduser()
        check_task_file(source)
        shutil.copyfile(source, partial)
        origin = str(source)
    else:
        partial.write_bytes(pinned_bundle_bytes(cache_dir))
        origin = f"pypi:mediapipe=={MEDIAPIPE_WHEEL_VERSION}"
    partial.replace(output)
    return {"source": origin, "sha256": sha256_of(output), "bytes": output.stat().st_size}


@dataclass
class HandDetection:
    """The teacher's answer for one image; hands sorted by handedness score, best first."""

    landmarks: np.ndarray  # (hands, NUM_JOINTS, 3): x, y normalised to the image, z relative depth
    world_landmarks: np.ndarray  # (hands, NUM_JOINTS, 3) metres, hand-centred
    handedness: list[str]
    handedness_score: np.ndarray  # (hands,)

    @property
    def num_hands(self) -> int:
        return len(self.handedness)


class Teacher:
    """MediaPipe HandLandmarker, in image mode (every frame on its own: palm detector, then the
    landmark model) or video mode (MediaPipe's tracking: the palm detector only when the hand is
    lost). Use as a context manager: it must be closed."""

    def __init__(
        self,
        model_path: str | os.PathLike,
        settings: LandmarksParams | None = None,
        video: bool = False,
    ):
        """``settings``: the landmarks section (None: params.yaml's defaults); its
        ``teacher_options`` build the landmarker. ``video``: MediaPipe's video mode, frames in
        order with increasing timestamps."""
        settings = settings or LandmarksParams()
        if not os.environ.get(VERBOSE_ENVIRONMENT):
            os.environ.setdefault("GLOG_minloglevel", "2")  # glog's INFO and WARNING lines
        from mediapipe.tasks.python import BaseOptions, vision

        if not Path(model_path).is_file():
            raise TeacherModelError(
                f"teacher model {model_path} not found; run `dvc repro teacher`"
            )
        options = vision.HandLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(model_path)),
            running_mode=vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE,
            **settings.teacher_options,
        )
        with quiet_native_logs():
            self._landmarker = vision.HandLandmarker.create_from_options(options)
        self.video = video

    def __enter__(self) -> Teacher:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self._landmarker is not None:
            with quiet_native_logs():
                self._landmarker.close()
            self._landmarker = None

    def detect(self, rgb: np.ndarray, timestamp_ms: int | None = None) -> HandDetection:
        """Run the teacher on one RGB uint8 image of shape (H, W, 3); in video mode the frame's
        ``timestamp_ms`` (increasing from frame to frame)."""
        import mediapipe as mp

        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(
                f"teacher expects an RGB uint8 (H, W, 3) image, got {rgb.dtype} {rgb.shape}"
            )
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        if self.video and timestamp_ms is None:
            raise ValueError("video mode needs each frame's timestamp_ms")
        with quiet_native_logs():
            if self.video:
                result = self._landmarker.detect_for_video(image, int(timestamp_ms))
            else:
                result = self._landmarker.detect(image)
        hands = []
        for points, world, categories in zip(
            result.hand_landmarks, result.hand_world_landmarks, result.handedness
        ):
            best = max(categories, key=lambda c: c.score)
            hands.append(
                (
                    float(best.score),
                    best.category_name,
                    np.array([[p.x, p.y, p.z] for p in points], dtype=np.float32),
                    np.array([[p.x, p.y, p.z] for p in world], dtype=np.float32),
                )
            )
        hands.sort(key=lambda hand: -hand[0])
        if not hands:
            empty = np.zeros((0, NUM_JOINTS, 3), dtype=np.float32)
            return HandDetection(empty, empty.copy(), [], np.zeros(0, dtype=np.float32))
        return HandDetection(
            landmarks=np.stack([h[2] for h in hands]),
            world_landmarks=np.stack([h[3] for h in hands]),
            handedness=[h[1] for h in hands],
            handedness_score=np.array([h[0] for h in hands], dtype=np.float32),
        )


def pool_worker_teacher(model_path: str | os.PathLike, settings: LandmarksParams) -> Teacher:
    """A landmarker for a pool worker process (its initializer's), closed when the worker exits:
    MediaPipe errors at interpreter shutdown unless the landmarker was closed first, and a pool
    worker runs multiprocessing's finalizers before that, atexit handlers too late."""
    teacher = Teacher(model_path, settings)
    multiprocessing.util.Finalize(teacher, teacher.close, exitpriority=10)
    return teacher
