"""The student as its users see it: RGB images in, landmarks in pixels and presence out.

- ``WholeFrameStudent``: one network on the whole frame (squash or letterbox), one pass.
- ``TopDownStudent``: the teacher's way. A finder on the letterboxed frame says whether there is a
  hand and where (its landmarks' square, ``pipeline.crops.crop_square`` with the finder's own
  margin, calibrated on validation frames by ``finder_margin_scale``); the landmark network
  then regresses the 21 landmarks on that crop. The finder is a small network of its own, or
  the landmark network itself (a cascade with shared weights).
  ``track`` follows a hand through video as MediaPipe does: frame t's crop comes from frame
  t-1's landmarks, and the finder runs again only when the crop's presence drops.

The student's presence is the finder's where the finder says "no hand" (below ``min_presence``;
no crop is needed then), else the landmark network's on the crop. The evaluate stage, ``predict``
and ``score`` all go through ``find`` and ``crop_pass`` here (the evaluate stage on its decoded
splits, with the same squares and the same combination of presences).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.checkpoint import CheckpointError
from pipeline.codec import crop_frames
from pipeline.crops import crop_image, crop_square, frame_squares
from pipeline.inference import Network, load_networks_from
from pipeline.keypoints import NUM_JOINTS, to_pixels

DEFAULT_MIN_PRESENCE = 0.5


@dataclass
class Prediction:
    """Per image: landmarks (N, joints, 3) with x, y in pixels of the image and z decoded;
    presence (N,); the square the landmarks were read in (N, 3; NaN for a whole-frame student);
    whether the frame was tracked from the previous one (video); how many crop passes ran on it
    (image mode of a top-down student; empty otherwise)."""

    landmarks: np.ndarray
    presence: np.ndarray
    squares: np.ndarray
    tracked: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    crop_passes: np.ndarray = field(default_factory=lambda: np.zeros(0, int))

    def __len__(self) -> int:
        return len(self.presence)


def squares_from_landmarks(
    landmarks: np.ndarray, width: np.ndarray, height: np.ndarray, margin: float
) -> np.ndarray:
    """(N, joints, >=2) table units → (N, 3) crop squares in pixels, as in training."""
    return crop_square(to_pixels(landmarks, width, height), margin)


# The finder overrules the crop pass only where it is sure there is no hand. The crop pass sees
# the hand at several times the finder's resolution: given the last word from a finder presence
# of 0.1 up (not 0.5), it found 97 % of the teacher's hands in validation frames of small hands
# pasted into scenes instead of 83 %, and 97.9 % instead of 97.2 % on the synthetic frames,
# with every empty frame still "no hand" on both (docs/student.md).
FINDER_VETO = 0.1


def combine_presence(finder: np.ndarray, crop: np.ndarray) -> np.ndarray:
    """The student's presence: the finder's where it is sure there is no hand (below
    ``FINDER_VETO``), else the crop pass's."""
    finder, crop = np.asarray(finder, np.float64), np.asarray(crop, np.float64)
    return np.where(finder < FINDER_VETO, finder, crop)


def _sizes(rgbs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    width = np.array([rgb.shape[1] for rgb in rgbs], dtype=np.float64)
    height = np.array([rgb.shape[0] for rgb in rgbs], dtype=np.float64)
    return width, height


def _batch(pictures: list[np.ndarray]) -> torch.Tensor:
    # numpy's copy, not torch's .contiguous(): at batch 1 torch's took 3.5 ms of thread
    # hand-off beside ONNX Runtime's threads, as long as the network itself
    return torch.from_numpy(np.ascontiguousarray(np.stack(pictures).transpose(0, 3, 1, 2)))


def _pixels(landmarks: np.ndarray, width: np.ndarray, height: np.ndarray) -> np.ndarray:
    out = np.array(landmarks, dtype=np.float64)
    out[..., :2] = to_pixels(landmarks, width, height)
    return out


def find_squares(
    finder: Network, rgbs: Sequence[np.ndarray], batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """``finder`` on each letterboxed frame: (N, 3) crop squares in pixels (its landmarks' box
    times its own ``crop_margin``) and (N,) its presence."""
    width, height = _sizes(rgbs)
    frames = frame_squares(width, height)
    size = finder.image_size
    batch = _batch([crop_image(rgb, square, size) for rgb, square in zip(rgbs, frames)])
    landmarks, presence = finder.predict(batch, crop_frames(frames, width, height), batch_size)
    return squares_from_landmarks(landmarks, width, height, finder.crop_margin), presence


def finder_margin_scale(
    finder: Network, rgbs: Sequence[np.ndarray], oracle: np.ndarray, batch_size: int = 32
) -> float:
    """How much wider the finder's squares must be to match ``oracle`` (N, 3), the teacher's
    squares of the same frames at the landmark model's margin: the median ratio of their sides.
    A finder at low resolution draws the hand smaller than it is (its landmarks shrink towards
    the mean pose), and a square that cuts off fingers is the crop model's worst start."""
    if not len(rgbs):
        raise ValueError("no frame with a hand to calibrate the finder's margin on")
    squares, _ = find_squares(finder, rgbs, batch_size)  # at the finder's present margin
    return float(np.median(oracle[:, 2] / squares[:, 2]))


# A finder whose squares are off by more than this is broken (or barely trained), not biased:
# beyond it the calibration stops and the finder's metrics show the fault.
MARGIN_SCALE_LIMITS = (0.5, 2.0)


# A refinement pass whose square would move its centre by less than this fraction of the side,
# and change the side by less than this factor (log), is not run: the image keeps its last pass.
# On the default data (validation, models of 3 seeds) a pass beyond that point was as likely to
# drift as to help, and settled images are most of them after two passes: up to 3 refinements
# with this stop gave validation end to end 0.809 / 0.840 / 0.827 (2 refinements for every
# image: 0.808 / 0.822 / 0.828) at 2.7-2.8 crop passes an image instead of 3. The first
# refinement always runs: the first crop pass is on the finder's square (the finder's own,
# calibrated margin), the refinement on the crop model's own square, the framing it was
# trained on; on real digit close-ups, whose squares barely move, without it 8 of the
# teacher's 146 test hands came out "no hand" (presence 0.3-0.5 on the finder's square), with it
# 3 (docs/student.md, "Refinement until the square settles").
SETTLED = 0.05


def square_settled(previous: np.ndarray, following: np.ndarray, tolerance: float) -> np.ndarray:
    """(N,) whether moving from each ``previous`` square (N, 3: centre x, y and side, pixels) to
    ``following`` changes it by less than ``tolerance``: the centre by that fraction of the side,
    the side by that factor."""
    moved = np.linalg.norm(following[:, :2] - previous[:, :2], axis=1) / previous[:, 2]
    resized = np.abs(np.log(following[:, 2] / previous[:, 2]))
    return np.maximum(moved, resized) < tolerance


def keep_surest_pass(
    passes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], min_presence: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image, of the crop passes' (landmarks, presence, squares): the last pass, unless its
    presence fell below ``min_presence``; then the pass with the highest presence. A refinement
    pass can drift off a hand that an earlier pass saw (2 of the 4 hands the last pass said "no
    hand" to on the default test frames, 1 of 4 on validation); it does not get the last word
    then. Landmark accuracy stayed the same (0.762 and 0.737 end to end, validation and test)."""
    landmarks, presence, squares = (np.stack(column) for column in zip(*passes))
    chosen = np.where(presence[-1] >= min_presence, len(passes) - 1, presence.argmax(axis=0))
    rows = np.arange(presence.shape[1])
    return landmarks[chosen, rows], presence[chosen, rows], squares[chosen, rows]


class Student:
    """A trained student. Build with ``load_student``."""

    landmarks: Network

    def __init__(self, min_presence: float = DEFAULT_MIN_PRESENCE):
        self.min_presence = min_presence
        self._previous: np.ndarray | None = None  # tracking: last frame's landmarks, pixels

    @property
    def image_size(self) -> int:
        return self.landmarks.image_size

    @property
    def epoch(self) -> int:
        return self.landmarks.epoch

    @property
    def path(self) -> os.PathLike:
        return self.landmarks.path

    def predict_images(self, rgbs: Sequence[np.ndarray], batch_size: int = 32) -> Prediction:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget the tracked hand (the next ``track`` call starts from the finder)."""
        self._previous = None

    def track(self, rgb: np.ndarray) -> Prediction:
        """One video frame; a whole-frame student has nothing to track from."""
        return self.predict_images([rgb], 1)


class WholeFrameStudent(Student):
    def __init__(self, network: Network, min_presence: float = DEFAULT_MIN_PRESENCE):
        super().__init__(min_presence)
        self.landmarks = network

    def predict_images(self, rgbs, batch_size=32):
        if not len(rgbs):
            return _empty()
        size, codec = self.image_size, self.landmarks.codec
        width, height = _sizes(rgbs)
        batch = _batch([codec.input_image(rgb, size) for rgb in rgbs])
        landmarks, presence = self.landmarks.predict(
            batch, codec.frames(width, height, size), batch_size
        )
        squares = np.full((len(rgbs), 3), np.nan)
        return Prediction(
            _pixels(landmarks, width, height), presence, squares, np.zeros(len(rgbs), bool)
        )


class TopDownStudent(Student):
    def __init__(
        self,
        landmarks: Network,
        finder: Network,
        min_presence: float = DEFAULT_MIN_PRESENCE,
        refine: int = 0,
    ):
        """``refine``: in image mode, at most this many crop passes after the first, each on
        the square of the previous one's landmarks (as tracking does from frame to frame), until
        the square settles: the finder only has to be near the hand."""
        super().__init__(min_presence)
        self.landmarks, self.finder = landmarks, finder
        self.margin = landmarks.crop_margin
        self.refine = refine
        self.settle = SETTLED  # 0: every image gets all ``refine`` passes

    @property
    def cascade(self) -> bool:
        return self.finder is self.landmarks

    def find(self, rgbs: Sequence[np.ndarray], batch_size: int = 32):
        """The finder pass: (N, 3) crop squares in pixels and (N,) the finder's presence."""
        return find_squares(self.finder, rgbs, batch_size)

    def crop_pass(self, rgbs: Sequence[np.ndarray], squares: np.ndarray, batch_size: int = 32):
        """The landmark pass on given squares: (N, joints, 3) table units, (N,) presence."""
        width, height = _sizes(rgbs)
        size = self.image_size
        batch = _batch([crop_image(rgb, square, size) for rgb, square in zip(rgbs, squares)])
        return self.landmarks.predict(batch, crop_frames(squares, width, height), batch_size)

    def predict_images(self, rgbs, batch_size=32):
        """Both passes for every image (the crop pass also where the finder sees no hand, so
        that its landmarks can be looked at; the presence says which to believe), then one
        more on the crop model's own square, then up to ``refine`` - 1 more for the images whose
        square has not settled (``square_settled``): a settled image keeps its last pass, as if
        it had run again. Of the crop passes the last counts, unless it lost the hand (presence
        below ``min_presence``): then the pass that was surest of it (``keep_surest_pass``).
        ``Prediction.crop_passes`` says how many ran for each image."""
        if not len(rgbs):
            return _empty()
        width, height = _sizes(rgbs)
        squares, found = self.find(rgbs, batch_size)
        landmarks, crop_presence = self.crop_pass(rgbs, squares, batch_size)
        passes = [(landmarks, crop_presence, squares)]
        active = np.arange(len(rgbs))
        crop_passes = np.ones(len(rgbs), int)
        for refinement in range(self.refine):
            landmarks, crop_presence, squares = (column.copy() for column in passes[-1])
            following = squares_from_landmarks(landmarks, width, height, self.margin)
            if refinement:  # the first refinement always runs (``SETTLED``)
                active = active[~square_settled(squares[active], following[active], self.settle)]
            if not len(active):
                break
            squares[active] = following[active]
            landmarks[active], crop_presence[active] = self.crop_pass(
                [rgbs[i] for i in active], squares[active], batch_size
            )
            passes.append((landmarks, crop_presence, squares))
            crop_passes[active] += 1
        landmarks, crop_presence, squares = keep_surest_pass(passes, self.min_presence)
        presence = combine_presence(found, crop_presence)
        return Prediction(
            _pixels(landmarks, width, height), presence, squares, np.zeros(len(rgbs), bool),
            crop_passes,
        )  # fmt: skip

    def track(self, rgb):
        """Frame t's crop from frame t-1's landmarks; the finder only when the hand is lost."""
        width, height = _sizes([rgb])
        if self._previous is not None:
            square = crop_square(self._previous[None, :, :2], self.margin)
            landmarks, presence = self.crop_pass([rgb], square, 1)
            if presence[0] >= self.min_presence:
                pixels = _pixels(landmarks, width, height)
                self._previous = pixels[0]
                return Prediction(pixels, presence, square, np.ones(1, bool))
        squares, found = self.find([rgb], 1)
        if found[0] < FINDER_VETO:
            self._previous = None
            landmarks = np.full((1, NUM_JOINTS, 3), np.nan)
            return Prediction(landmarks, found, squares, np.zeros(1, bool))
        landmarks, crop_presence = self.crop_pass([rgb], squares, 1)
        pixels = _pixels(landmarks, width, height)
        self._previous = pixels[0] if crop_presence[0] >= self.min_presence else None
        return Prediction(pixels, crop_presence, squares, np.zeros(1, bool))


def _empty() -> Prediction:
    return Prediction(
        np.zeros((0, NUM_JOINTS, 3)), np.zeros(0), np.zeros((0, 3)), np.zeros(0, bool)
    )


def student_from(
    networks: dict[str, Network],
    min_presence: float = DEFAULT_MIN_PRESENCE,
    source: str = "",
    flip_test: bool = False,
) -> Student:
    """The student these networks make (see ``pipeline.checkpoint.ROLES``); ``flip_test``: its
    landmark network reads each input and its mirror image (``Network.use_flip_test``)."""
    student = _student_for_role(networks, min_presence, source)
    student.landmarks.use_flip_test(flip_test)
    return student


def _student_for_role(networks: dict[str, Network], min_presence: float, source: str) -> Student:
    landmarks = networks["landmarks"]
    role = landmarks.role
    if role == "whole_frame":
        return WholeFrameStudent(landmarks, min_presence)
    if role == "cascade":
        return TopDownStudent(landmarks, landmarks, min_presence, landmarks.refine)
    if role == "landmarks":
        if "finder" not in networks:
            raise CheckpointError(
                f"{source or landmarks.path} is the crop model of a top-down student and holds "
                "no finder: use the export stage's models/export/student.pt or student.onnx, or "
                "pass --finder models/finder/best.pt"
            )
        return TopDownStudent(landmarks, networks["finder"], min_presence, landmarks.refine)
    raise CheckpointError(f"{source or landmarks.path} is a {role} network, not a student")


def load_student(
    path: str | os.PathLike,
    device: str = "auto",
    finder: str | os.PathLike | None = None,
    min_presence: float = DEFAULT_MIN_PRESENCE,
    threads: int = 0,
    refine: int | None = None,
    flip_test: bool = False,
) -> Student:
    """A student file (a training checkpoint, the export's bundle or ONNX file) as a Student;
    ``finder``: a finder checkpoint or ONNX file for a landmark model that has none with it;
    ``threads``: ONNX Runtime's (0: its default); ``refine``: crop passes after the first (None:
    what the file records); ``flip_test``: see ``student_from``."""
    networks = load_networks_from(path, device, threads)
    if finder is not None:
        found = load_networks_from(finder, device, threads)["landmarks"]
        if found.role != "finder":
            raise CheckpointError(f"{finder} is a {found.role} network, not a finder")
        networks["finder"] = found
    student = student_from(networks, min_presence, str(path), flip_test)
    if refine is not None:
        student.refine = refine
    return student
