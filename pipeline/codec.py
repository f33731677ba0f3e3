"""Coordinates between the label table and the model: normalise, denormalise, to pixels.

x, y are fractions of the original image (a squashed square input keeps them valid); z is
MediaPipe's relative depth, standardised with the TRAIN split's mean and std. The codec is saved in
the checkpoint so every prediction is mapped back the same way before any metric sees it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from pipeline.keypoints import NUM_JOINTS

NUM_OUTPUTS = NUM_JOINTS * 3


@dataclass(frozen=True)
class LandmarkCodec:
    z_mean: float = 0.0
    z_std: float = 1.0

    @classmethod
    def fit(cls, train_landmarks: np.ndarray) -> LandmarkCodec:
        """Statistics of z over the training split; ``train_landmarks`` is (N, joints, 3)."""
        z = np.asarray(train_landmarks, dtype=np.float64)[..., 2]
        if z.size == 0 or not np.isfinite(z).all():
            raise ValueError("cannot fit the landmark codec: empty or non-finite training z")
        return cls(z_mean=float(z.mean()), z_std=float(max(z.std(), 1e-6)))

    def encode(self, landmarks: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(N, joints, 3) normalised landmarks → (N, joints*3) float32 training targets."""
        target = torch.tensor(np.array(landmarks, dtype=np.float32))
        target[..., 2] = (target[..., 2] - self.z_mean) / self.z_std
        return target.reshape(target.shape[0], NUM_OUTPUTS)

    def decode(self, outputs: torch.Tensor | np.ndarray) -> np.ndarray:
        """(N, joints*3) model outputs → (N, joints, 3) landmarks in the table's units."""
        values = torch.as_tensor(outputs).detach().float().cpu().numpy().astype(np.float64)
        values = values.reshape(values.shape[0], NUM_JOINTS, 3)
        values[..., 2] = values[..., 2] * self.z_std + self.z_mean
        return values

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict) -> LandmarkCodec:
        return cls(**payload)


def to_pixels(landmarks: np.ndarray, width: np.ndarray, height: np.ndarray) -> np.ndarray:
    """(N, joints, >=2) normalised → (N, joints, 2) pixels of each original image."""
    size = np.stack([np.asarray(width, np.float64), np.asarray(height, np.float64)], axis=-1)
    return np.asarray(landmarks, dtype=np.float64)[..., :2] * size[:, None, :]
