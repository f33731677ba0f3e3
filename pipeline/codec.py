"""Coordinates between the label table and the model: normalise, denormalise, to pixels.

The table holds x, y as fractions of the original image and MediaPipe's relative depth z (in
units of the image width). The model sees a square input made with one of three layouts:

- ``crop`` (top-down): a square around the hand (``pipeline.crops``: from the teacher's landmarks
  in training, from the finder at inference); x, y of the input are fractions of the square.
- ``squash`` (the seed's): the whole image resized to S x S; fractions of the image are fractions
  of the input, so x, y pass through unchanged.
- ``letterbox``: the whole image scaled to fit S x S with its aspect ratio kept, centred, the rest
  zero-padded; x, y of the input are fractions of the padded square.

Each sample's way between the two is an ``InputFrames`` row (input = table * scale + offset, z
scaled like x), made by ``LandmarkCodec.frames`` from the image size and, for crops, the square.
In the model's frame z is standardised with the TRAIN split's mean and std. The codec is saved in
the checkpoint so every prediction is mapped back the same way before any metric sees it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch

from pipeline.crops import crop_image
from pipeline.keypoints import NUM_JOINTS

NUM_OUTPUTS = NUM_JOINTS * 3
LAYOUTS = ("crop", "squash", "letterbox")
WHOLE_FRAME_LAYOUTS = ("squash", "letterbox")


@dataclass(frozen=True)
class InputFrames:
    """Per sample, the map from table units to the model's input frame: ``input = table * scale
    + offset`` for x and y, ``z * scale[0]`` for z (MediaPipe's z is in units of the width)."""

    scale: np.ndarray  # (N, 2)
    offset: np.ndarray  # (N, 2)

    def __len__(self) -> int:
        return len(self.scale)

    def __getitem__(self, index) -> InputFrames:
        return InputFrames(self.scale[index], self.offset[index])

    @classmethod
    def identity(cls, count: int) -> InputFrames:
        return cls(np.ones((count, 2)), np.zeros((count, 2)))


def crop_frames(squares: np.ndarray, width, height) -> InputFrames:
    """The frames of crops ``squares`` (N, 3: cx, cy, side in pixels) of images width x height."""
    squares = np.asarray(squares, dtype=np.float64).reshape(-1, 3)
    size = _size_wh(len(squares), width, height)
    side = squares[:, 2:3]
    return InputFrames(size / side, 0.5 - squares[:, :2] / side)


def _size_wh(count: int, width, height) -> np.ndarray:
    return np.stack(
        [
            np.broadcast_to(np.asarray(width, np.float64), (count,)),
            np.broadcast_to(np.asarray(height, np.float64), (count,)),
        ],
        axis=-1,
    )


@dataclass(frozen=True)
class LandmarkCodec:
    z_mean: float = 0.0
    z_std: float = 1.0
    layout: str = "crop"  # crop | squash | letterbox

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown input layout {self.layout!r}; expected one of {LAYOUTS}")

    @classmethod
    def fit(cls, train_landmarks: np.ndarray, layout: str = "crop") -> LandmarkCodec:
        """Statistics of z over the training split's hands (rows of NaN, the images without a
        hand, left out); ``train_landmarks`` is (N, joints, 3)."""
        z = np.asarray(train_landmarks, dtype=np.float64)[..., 2]
        z = z[np.isfinite(z).all(axis=-1)] if z.ndim == 2 else z
        if z.size == 0 or not np.isfinite(z).all():
            raise ValueError("cannot fit the landmark codec: no hand with finite z to train on")
        return cls(z_mean=float(z.mean()), z_std=float(max(z.std(), 1e-6)), layout=layout)

    @property
    def whole_frame(self) -> bool:
        return self.layout in WHOLE_FRAME_LAYOUTS

    # -- the input picture ------------------------------------------------------------------

    def input_image(self, rgb: np.ndarray, size: int, square: np.ndarray | None = None):
        """An (H, W, 3) uint8 image → the model's (size, size, 3) input in this layout; a crop
        needs its square (cx, cy, side in pixels)."""
        if self.layout == "crop":
            if square is None:
                raise ValueError("the crop layout needs the square to cut (cx, cy, side)")
            return crop_image(rgb, square, size)
        if self.layout == "squash":
            return resize_square(rgb, size)
        height, width = rgb.shape[:2]
        side = max(width, height)
        new_w, new_h = max(1, round(width * size / side)), max(1, round(height * size / side))
        interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        resized = cv2.resize(rgb, (new_w, new_h), interpolation=interpolation)
        canvas = np.zeros((size, size, 3), dtype=np.uint8)
        top, left = (size - new_h) // 2, (size - new_w) // 2
        canvas[top : top + new_h, left : left + new_w] = resized
        return canvas

    def frames(
        self, width, height, size: int | None = None, squares: np.ndarray | None = None
    ) -> InputFrames:
        """Each sample's frame for images ``width`` x ``height`` (arrays or numbers). The
        letterbox padding is the integer one ``input_image`` makes at ``size``; crops need their
        ``squares``."""
        count = len(np.atleast_1d(np.asarray(width)))
        if self.layout == "crop":
            if squares is None:
                raise ValueError("the crop layout needs each sample's square to map coordinates")
            return crop_frames(squares, width, height)
        if self.layout == "squash":
            return InputFrames.identity(count)
        size_wh = _size_wh(count, width, height)
        side = size_wh.max(axis=-1, keepdims=True)
        if size is None:
            scale = size_wh / side
            return InputFrames(scale, (1.0 - scale) / 2)
        content = np.maximum(1, np.round(size_wh * size / side))
        return InputFrames(content / size, ((size - content) // 2) / size)

    def aspect(self, width: np.ndarray, height: np.ndarray) -> np.ndarray:
        """Width / height of the picture the square input shows (what a rotation must respect)."""
        if self.layout != "squash":
            return np.ones(len(np.atleast_1d(np.asarray(width))))
        return np.asarray(width, np.float64) / np.asarray(height, np.float64)

    # -- model targets ----------------------------------------------------------------------

    @staticmethod
    def to_input(landmarks: np.ndarray, frames: InputFrames) -> np.ndarray:
        """(N, joints, 3) table units → x, y in the input frame; z scaled like x (not yet
        standardised)."""
        values = np.array(landmarks, dtype=np.float64)
        values[..., :2] = values[..., :2] * frames.scale[:, None, :] + frames.offset[:, None, :]
        values[..., 2] = values[..., 2] * frames.scale[:, None, 0]
        return values

    @staticmethod
    def from_input(values: np.ndarray, frames: InputFrames) -> np.ndarray:
        """Inverse of ``to_input``."""
        values = np.array(values, dtype=np.float64)
        values[..., :2] = (values[..., :2] - frames.offset[:, None, :]) / frames.scale[:, None, :]
        values[..., 2] = values[..., 2] / frames.scale[:, None, 0]
        return values

    def standardise(self, frame_landmarks: torch.Tensor) -> torch.Tensor:
        """Input-frame (N, joints, 3) → model targets (N, joints, 3): z standardised."""
        z = (frame_landmarks[..., 2:] - self.z_mean) / self.z_std
        return torch.cat([frame_landmarks[..., :2], z], dim=-1)

    def encode(self, landmarks: np.ndarray, frames: InputFrames) -> torch.Tensor:
        """(N, joints, 3) table units → (N, joints*3) float32 training targets."""
        target = torch.tensor(self.to_input(landmarks, frames).astype(np.float32))
        target[..., 2] = (target[..., 2] - self.z_mean) / self.z_std
        return target.reshape(target.shape[0], NUM_OUTPUTS)

    def decode(self, outputs: torch.Tensor | np.ndarray, frames: InputFrames) -> np.ndarray:
        """(N, joints*3) model outputs → (N, joints, 3) landmarks in the table's units."""
        values = torch.as_tensor(outputs).detach().float().cpu().numpy().astype(np.float64)
        values = values.reshape(values.shape[0], NUM_JOINTS, 3)
        values[..., 2] = values[..., 2] * self.z_std + self.z_mean
        return self.from_input(values, frames)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict) -> LandmarkCodec:
        return cls(**payload)


def resize_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Squash to size x size (normalised landmark coordinates stay valid)."""
    interpolation = cv2.INTER_AREA if min(rgb.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interpolation)
