"""Coordinates between the label table and the model: normalise, denormalise, to pixels.

The table holds x, y as fractions of the original image and MediaPipe's relative depth z (in
units of the image width). The model sees a square input made with one of two layouts:

- ``squash`` (the seed's): the whole image resized to S x S; fractions of the image are fractions
  of the input, so x, y pass through unchanged.
- ``letterbox``: the image scaled to fit S x S with its aspect ratio kept, centred, the rest
  zero-padded; x, y of the input are fractions of the padded square, so mapping back needs each
  image's width and height.

In the model's frame z is standardised with the TRAIN split's mean and std. The codec is saved in
the checkpoint so every prediction is mapped back the same way before any metric sees it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch

from pipeline.keypoints import NUM_JOINTS

NUM_OUTPUTS = NUM_JOINTS * 3
LAYOUTS = ("squash", "letterbox")


@dataclass(frozen=True)
class LandmarkCodec:
    z_mean: float = 0.0
    z_std: float = 1.0
    layout: str = "squash"  # squash | letterbox

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown input layout {self.layout!r}; expected one of {LAYOUTS}")

    @classmethod
    def fit(cls, train_landmarks: np.ndarray, layout: str = "squash") -> LandmarkCodec:
        """Statistics of z over the training split; ``train_landmarks`` is (N, joints, 3)."""
        z = np.asarray(train_landmarks, dtype=np.float64)[..., 2]
        if z.size == 0 or not np.isfinite(z).all():
            raise ValueError("cannot fit the landmark codec: empty or non-finite training z")
        return cls(z_mean=float(z.mean()), z_std=float(max(z.std(), 1e-6)), layout=layout)

    # -- the input picture ------------------------------------------------------------------

    def input_image(self, rgb: np.ndarray, size: int) -> np.ndarray:
        """An (H, W, 3) uint8 image → the model's (size, size, 3) input in this layout."""
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

    def _frame(
        self, count: int, width, height, size: int | None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Per-image (scale, offset), each (N, 2): input = table * scale + offset; None: identity.

        With ``size`` the padding is the integer one ``input_image`` makes at that size.
        """
        if self.layout == "squash":
            return None
        if width is None or height is None:
            raise ValueError(
                "the letterbox codec needs each image's width and height to map coordinates"
            )
        size_wh = np.stack(
            [
                np.broadcast_to(np.asarray(width, np.float64), (count,)),
                np.broadcast_to(np.asarray(height, np.float64), (count,)),
            ],
            axis=-1,
        )
        side = size_wh.max(axis=-1, keepdims=True)
        if size is None:
            scale = size_wh / side
            return scale, (1.0 - scale) / 2
        content = np.maximum(1, np.round(size_wh * size / side))
        return content / size, ((size - content) // 2) / size

    def to_input(
        self, landmarks: np.ndarray, width=None, height=None, size: int | None = None
    ) -> np.ndarray:
        """(N, joints, 3) table units → x, y in the input frame; z scaled like x (not yet
        standardised)."""
        values = np.array(landmarks, dtype=np.float64)
        frame = self._frame(len(values), width, height, size)
        if frame is not None:
            scale, offset = frame
            values[..., :2] = values[..., :2] * scale[:, None, :] + offset[:, None, :]
            values[..., 2] = values[..., 2] * scale[:, None, 0]
        return values

    def from_input(
        self, values: np.ndarray, width=None, height=None, size: int | None = None
    ) -> np.ndarray:
        """Inverse of ``to_input``."""
        values = np.array(values, dtype=np.float64)
        frame = self._frame(len(values), width, height, size)
        if frame is not None:
            scale, offset = frame
            values[..., :2] = (values[..., :2] - offset[:, None, :]) / scale[:, None, :]
            values[..., 2] = values[..., 2] / scale[:, None, 0]
        return values

    def aspect(self, width: np.ndarray, height: np.ndarray) -> np.ndarray:
        """Width / height of the picture the square input shows (what a rotation must respect)."""
        if self.layout == "letterbox":
            return np.ones(len(np.asarray(width)))
        return np.asarray(width, np.float64) / np.asarray(height, np.float64)

    # -- model targets ----------------------------------------------------------------------

    def standardise(self, frame_landmarks: torch.Tensor) -> torch.Tensor:
        """Input-frame (N, joints, 3) → model targets (N, joints, 3): z standardised."""
        z = (frame_landmarks[..., 2:] - self.z_mean) / self.z_std
        return torch.cat([frame_landmarks[..., :2], z], dim=-1)

    def encode(
        self, landmarks: np.ndarray | torch.Tensor, width=None, height=None, size=None
    ) -> torch.Tensor:
        """(N, joints, 3) normalised landmarks → (N, joints*3) float32 training targets."""
        landmarks = np.asarray(landmarks)
        if self.layout != "squash":
            landmarks = self.to_input(landmarks, width, height, size)
        target = torch.tensor(np.array(landmarks, dtype=np.float32))
        target[..., 2] = (target[..., 2] - self.z_mean) / self.z_std
        return target.reshape(target.shape[0], NUM_OUTPUTS)

    def decode(
        self, outputs: torch.Tensor | np.ndarray, width=None, height=None, size: int | None = None
    ) -> np.ndarray:
        """(N, joints*3) model outputs → (N, joints, 3) landmarks in the table's units.

        The letterbox layout needs ``width`` and ``height`` of every image (and ``size``, the
        input side, for the exact integer padding).
        """
        values = torch.as_tensor(outputs).detach().float().cpu().numpy().astype(np.float64)
        values = values.reshape(values.shape[0], NUM_JOINTS, 3)
        values[..., 2] = values[..., 2] * self.z_std + self.z_mean
        if self.layout != "squash":
            values = self.from_input(values, width, height, size)
        return values

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict) -> LandmarkCodec:
        return cls(**payload)


def resize_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Squash to size x size (normalised landmark coordinates stay valid)."""
    interpolation = cv2.INTER_AREA if min(rgb.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interpolation)
