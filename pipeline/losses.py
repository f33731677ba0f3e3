"""Training losses on the model's coordinates (codec units: x, y in [0, 1] of the input frame,
z standardised), per sample so that samples can be weighted. A z target that is NaN (a render's,
whose depth is not trained: ``train.rehearsal``) adds nothing to the loss nor its gradient.

- ``smooth_l1`` (the seed's), ``l1``, ``mse``;
- ``wing`` (Feng et al., CVPR 2018): logarithmic for errors below ``omega`` so small and medium
  errors keep a strong gradient, L1 beyond.

Distribution losses (KL of a spatial head's heatmap or SimCC bins) live with the heads in
``pipeline.model``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

LOSSES = ("smooth_l1", "l1", "mse", "wing")


@dataclass(frozen=True)
class CoordinateLoss:
    name: str = "smooth_l1"
    smooth_l1_beta: float = 0.02
    wing_omega: float = 0.05
    wing_epsilon: float = 0.01
    z_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in LOSSES:
            raise ValueError(f"unknown loss {self.name!r}; expected one of {LOSSES}")

    def elementwise(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        if self.name == "smooth_l1":
            return lambda a, b: F.smooth_l1_loss(a, b, beta=self.smooth_l1_beta, reduction="none")
        if self.name == "l1":
            return lambda a, b: (a - b).abs()
        if self.name == "mse":
            return lambda a, b: (a - b).square()
        return lambda a, b: wing(a - b, self.wing_omega, self.wing_epsilon)

    def per_sample(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N, joints, 3) or (N, joints*3) outputs and targets → (N,) losses: per joint the
        z-weighted mean over the axes, then the mean over joints."""
        weights = torch.tensor([1.0, 1.0, self.z_weight], device=outputs.device)
        per_value = self.elementwise()(outputs, _known(outputs, targets))
        per_axis = per_value.reshape(len(outputs), -1, 3) * weights
        return per_axis.sum(-1).mean(-1) / weights.sum()

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The batch mean of ``per_sample``."""
        weights = torch.tensor([1.0, 1.0, self.z_weight], device=outputs.device)
        per_value = self.elementwise()(outputs, _known(outputs, targets))
        per_axis = per_value.reshape(len(outputs), -1, 3) * weights
        return per_axis.sum(-1).mean() / weights.sum()


def _known(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``targets`` with each NaN depth (z) replaced by the output itself, detached: no error
    there and no gradient (masking the loss afterwards would not do: NaN times zero is NaN in
    backward). A NaN x or y stays: a broken label makes the loss NaN, and training stops."""
    depth = torch.zeros(3, dtype=torch.bool, device=targets.device)
    depth[2] = True
    unknown = torch.isnan(targets.reshape(len(targets), -1, 3)) & depth
    if not bool(unknown.any()):
        return targets  # the usual case, bit for bit
    filled = torch.where(
        unknown,
        outputs.detach().to(targets.dtype).reshape(unknown.shape),
        targets.reshape(unknown.shape),
    )
    return filled.reshape(targets.shape)


def wing(error: torch.Tensor, omega: float, epsilon: float) -> torch.Tensor:
    """Wing loss of an error: omega·ln(1 + |e|/epsilon) below omega, |e| − C beyond (C makes
    it continuous)."""
    magnitude = error.abs()
    c = omega - omega * math.log(1 + omega / epsilon)
    return torch.where(magnitude < omega, omega * torch.log1p(magnitude / epsilon), magnitude - c)
