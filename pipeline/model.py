"""The student: torchvision MobileNetV2 features + a landmark head, built from a config.

Heads (``ModelConfig.head``):

- ``pooled_mlp`` (the seed's): global average pool → MLP → joints × (x, y, z).
- ``integral``: a small feature pyramid brings the stride-32 features back to stride 8; one
  heatmap per joint, softmax over the map, x, y its expectation (integral regression /
  soft-argmax). Resolution is kept, and the output is still a coordinate any loss can take.
  Outside training the expectation is taken near the map's peak (``peak_radius`` cells), so a
  map with two bumps reads as one of them, not the empty space between.
- ``simcc``: the same stride-8 features, per joint flattened into two 1-D classifications over
  ``simcc_ratio`` bins per input pixel (SimCC); x, y the expectation of each.

For the spatial heads z comes from a small branch on the pooled stride-32 features. Every model
also has a presence head on those pooled features: one logit, "is there a hand in this input".
Every head's ``forward`` returns (N, joints*3) in the codec's units and the (N,) presence
probability, so prediction, export and evaluation do not care which head a checkpoint has;
``forward_train`` also returns the distributions for a distribution loss, whose targets the head's
``encode`` makes and whose coordinates its ``decode`` reads back (``decode(encode(xy)) ≈ xy``),
and the presence logit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

from pipeline.codec import NUM_OUTPUTS
from pipeline.keypoints import NUM_JOINTS
from pipeline.params import TrainParams

# Preprocessing follows the weights: MobileNetV2's ImageNet statistics, also used when training
# from scratch so that switching `pretrained` changes nothing else.
IMAGENET_MEAN = tuple(MobileNet_V2_Weights.IMAGENET1K_V1.transforms().mean)
IMAGENET_STD = tuple(MobileNet_V2_Weights.IMAGENET1K_V1.transforms().std)

# MobileNetV2 feature stages whose outputs the pyramid taps: strides 8, 16 and 32.
TAPS = (6, 13, 18)
Z_HIDDEN = 128
SIMCC_HIDDEN = 256
SIMCC_MAPS_PER_JOINT = 4


class PretrainedWeightsError(RuntimeError):
    pass


@dataclass(frozen=True)
class ModelConfig:
    """What rebuilds the network: saved in every checkpoint and ONNX export. The fields that
    come from the train params take their defaults from ``TrainParams`` (one set of defaults,
    params.yaml's); ``for_training`` is the one mapping from the params."""

    backbone: str = "mobilenet_v2"
    head: str = TrainParams.head  # pooled_mlp | integral | simcc
    hidden: int = 512
    dropout: float = TrainParams.dropout
    pretrained: str = TrainParams.pretrained  # none | imagenet | synthetic (pretrain stage)
    image_size: int = TrainParams.image_size
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    neck_channels: int = TrainParams.neck_channels  # spatial heads: stride-8 pyramid width
    simcc_ratio: float = TrainParams.simcc_ratio  # simcc: bins per input pixel
    width: float = TrainParams.width  # MobileNetV2's width multiplier
    # integral: outside training, the soft-argmax keeps this many heatmap cells either side of
    # the peak (0: the whole map). Files from before it read the whole map, as they were made.
    peak_radius: int = TrainParams.peak_radius

    @classmethod
    def for_training(cls, params: TrainParams) -> ModelConfig:
        return cls(
            head=params.head,
            dropout=params.dropout,
            pretrained=params.pretrained,
            image_size=params.image_size,
            neck_channels=params.neck_channels,
            simcc_ratio=params.simcc_ratio,
            width=params.width,
            peak_radius=params.peak_radius,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict) -> ModelConfig:
        payload = dict(payload)
        payload["mean"], payload["std"] = tuple(payload["mean"]), tuple(payload["std"])
        payload.setdefault("peak_radius", 0)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(payload) - known)
        if unknown:
            raise ValueError(
                f"unknown model config key(s) {unknown}; the file is from a newer version"
            )
        return cls(**payload)


class HeadOutput(NamedTuple):
    coords: torch.Tensor  # (N, joints, 3): x, y in the input frame, z standardised
    logits: tuple[torch.Tensor, ...]  # the head's distributions (empty for pooled_mlp)
    presence: torch.Tensor  # (N,) logit: is there a hand in the input


def _conv_bn_relu(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
    )


def _separable(channels: int) -> nn.Sequential:
    """Depthwise 3x3 + pointwise 1x1, each with BatchNorm and ReLU (MobileNet's cheap block)."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
    )


def stage_channels(features: nn.Sequential) -> list[int]:
    """The output channels of each MobileNetV2 feature stage (they follow the width)."""
    channels = []
    for stage in features:
        convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
        channels.append(convs[-1].out_channels)
    return channels


class FeaturePyramid(nn.Module):
    """Stride-32 features upsampled and merged with strides 16 and 8 (a light FPN)."""

    def __init__(self, channels: int, tap_channels: list[int]):
        super().__init__()
        self.lateral = nn.ModuleList(_conv_bn_relu(c, channels) for c in tap_channels)
        self.merge = nn.ModuleList(_separable(channels) for _ in tap_channels[:-1])

    def forward(self, taps: list[torch.Tensor]) -> torch.Tensor:
        top = self.lateral[-1](taps[-1])
        for level in (1, 0):
            lateral = self.lateral[level](taps[level])
            up = F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            top = self.merge[level](lateral + up)
        return top


def bin_centres(count: int, device=None) -> torch.Tensor:
    """Centres of ``count`` equal bins over [0, 1]."""
    return (torch.arange(count, device=device, dtype=torch.float32) + 0.5) / count


def gaussian_bins(centre: torch.Tensor, sigma: float, count: int) -> torch.Tensor:
    """A soft label for ``centre`` (any shape, units of [0, 1]) over ``count`` bins: (..., count)
    probabilities whose expectation over the bin centres is ``centre`` exactly (away from the
    borders), whatever sigma (units of [0, 1]). The centre is split linearly between its two
    nearest bins, and each part is spread with a Gaussian on the bin grid (a symmetric kernel
    keeps the mean)."""
    position = centre * count - 0.5  # in bin indices
    low = torch.floor(position)
    upper_share = (position - low)[..., None]
    bins = torch.arange(count, device=centre.device, dtype=torch.float32)
    sigma_bins = max(sigma * count, 1e-3)

    def spread(middle: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * ((bins - middle[..., None]) / sigma_bins) ** 2)

    mass = (1 - upper_share) * spread(low) + upper_share * spread(low + 1)
    return mass / mass.sum(-1, keepdim=True).clamp_min(1e-12)


def soft_kl(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KL(target || softmax(logits)) over the last axis, (...)."""
    log_p = F.log_softmax(logits, dim=-1)
    terms = target * (target.clamp_min(1e-12).log() - log_p)
    return torch.where(target > 0, terms, torch.zeros_like(terms)).sum(-1)


class IntegralHead(nn.Module):
    """One heatmap per joint at stride 8; softmax over the map; x, y = its expectation. Outside
    training the expectation keeps ``peak_radius`` cells either side of the map's peak (0: all):
    a map with two bumps (two raised fingers, either could be the index) averages to the empty
    space between them, the peak's neighbourhood to one of them."""

    def __init__(self, channels: int, joints: int = NUM_JOINTS, peak_radius: int = 0):
        super().__init__()
        self.block = _separable(channels)
        self.out = nn.Conv2d(channels, joints, 1)
        self.peak_radius = peak_radius

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        logits = self.out(self.block(features))  # (N, J, h, w)
        # Training fits the whole map's expectation (every cell gets a gradient, and the KL
        # term keeps the map to one bump); reading takes the peak's neighbourhood.
        radius = 0 if self.training else self.peak_radius
        return self.decode((logits,), radius), (logits,)

    @staticmethod
    def decode(logits: tuple[torch.Tensor, ...], peak_radius: int = 0) -> torch.Tensor:
        """(N, J, 2) in [0, 1]: the expectation of each softmaxed map, over the cells within
        ``peak_radius`` of its largest one (0: over every cell)."""
        (maps,) = logits
        h, w = maps.shape[-2:]  # fixed by the input size; the batch stays dynamic (ONNX)
        probs = F.softmax(maps.flatten(2).float(), dim=-1)
        if peak_radius > 0:
            peak = probs.argmax(-1, keepdim=True)  # (N, J, 1)
            rows = torch.arange(h, device=maps.device).repeat_interleave(w)
            cols = torch.arange(w, device=maps.device).repeat(h)
            near = ((rows - torch.div(peak, w, rounding_mode="floor")).abs() <= peak_radius) & (
                (cols - peak % w).abs() <= peak_radius
            )
            probs = probs * near
            probs = probs / probs.sum(-1, keepdim=True)
        probs = probs.unflatten(2, (h, w))
        x = (probs.sum(2) * bin_centres(w, maps.device)).sum(-1)
        y = (probs.sum(3) * bin_centres(h, maps.device)).sum(-1)
        return torch.stack([x, y], dim=-1)

    @staticmethod
    def confidence(logits: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """(N,) mean over joints of the heatmap's peak probability: how sure the head is."""
        (maps,) = logits
        return F.softmax(maps.flatten(2).float(), dim=-1).amax(-1).mean(-1)

    @staticmethod
    def encode(xy: torch.Tensor, shape: tuple[int, int], sigma_px: float, image_size: int):
        """Target heatmaps (N, J, h, w): separable discretised Gaussians; sigma in input px."""
        h, w = shape
        sigma = sigma_px / image_size
        gx = gaussian_bins(xy[..., 0], sigma, w)
        gy = gaussian_bins(xy[..., 1], sigma, h)
        return (gy[..., :, None] * gx[..., None, :],)

    @staticmethod
    def distribution_loss(logits, targets) -> torch.Tensor:
        """(N,) mean over joints of KL(target map || predicted map)."""
        (maps,), (target,) = logits, targets
        return soft_kl(maps.flatten(2).float(), target.flatten(2)).mean(-1)


@contextmanager
def reading_as_fitted(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block ``model``'s integral heads read the whole map, as training fits it.
    Every training stage validates, calibrates and picks its negatives this way, so that
    ``peak_radius`` changes how a finished model is read (evaluate, predict, score, export)
    and never which weights training keeps or what it trains on: read at the peak while
    training as well, the whole chain kept other finders and weights, worse on real photos at
    the two seeds tried (docs/student.md, "Reading the heatmap at its peak")."""
    heads = [module for module in model.modules() if isinstance(module, IntegralHead)]
    radii = [head.peak_radius for head in heads]
    for head in heads:
        head.peak_radius = 0
    try:
        yield model
    finally:
        for head, radius in zip(heads, radii):
            head.peak_radius = radius


class SimCCHead(nn.Module):
    """Per joint, a few stride-8 maps flattened into two 1-D classifications (x bins, y bins)."""

    def __init__(self, channels: int, map_hw: tuple[int, int], bins: int, joints: int = NUM_JOINTS):
        super().__init__()
        self.joints = joints
        self.block = _separable(channels)
        self.maps = nn.Conv2d(channels, joints * SIMCC_MAPS_PER_JOINT, 1)
        self.mlp = nn.Sequential(
            nn.Linear(SIMCC_MAPS_PER_JOINT * map_hw[0] * map_hw[1], SIMCC_HIDDEN), nn.GELU()
        )
        self.x = nn.Linear(SIMCC_HIDDEN, bins)
        self.y = nn.Linear(SIMCC_HIDDEN, bins)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        maps = self.maps(self.block(features))
        tokens = self.mlp(maps.unflatten(1, (self.joints, SIMCC_MAPS_PER_JOINT)).flatten(2))
        logits = (self.x(tokens), self.y(tokens))  # (N, J, bins) each
        return self.decode(logits), logits

    @staticmethod
    def decode(logits: tuple[torch.Tensor, ...]) -> torch.Tensor:
        coords = []
        for axis_logits in logits:
            probs = F.softmax(axis_logits.float(), dim=-1)
            coords.append((probs * bin_centres(probs.shape[-1], probs.device)).sum(-1))
        return torch.stack(coords, dim=-1)

    @staticmethod
    def confidence(logits: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """(N,) mean over joints and both axes of the peak bin's probability."""
        peaks = [F.softmax(axis.float(), dim=-1).amax(-1) for axis in logits]
        return torch.stack(peaks, -1).mean((-2, -1))

    @staticmethod
    def encode(xy: torch.Tensor, bins: int, sigma_px: float, image_size: int):
        sigma = sigma_px / image_size
        return tuple(gaussian_bins(xy[..., axis], sigma, bins) for axis in (0, 1))

    @staticmethod
    def distribution_loss(logits, targets) -> torch.Tensor:
        """(N,) mean over joints and both axes of KL(target || predicted)."""
        return sum(soft_kl(lg.float(), t).mean(-1) for lg, t in zip(logits, targets)) / 2


def _stride8_size(image_size: int) -> int:
    size = image_size
    for _ in range(3):  # three stride-2 3x3 convolutions with padding 1: ceil(size / 2) each
        size = (size + 1) // 2
    return size


class LandmarkRegressor(nn.Module):
    """MobileNetV2 features → a landmark head; ``forward`` gives (N, joints*3) encoded targets."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.features = mobilenet_v2(weights=None, width_mult=config.width).features
        every = stage_channels(self.features)
        channels = every[-1]
        if config.head == "pooled_mlp":
            # Global pool → Dropout → Linear → ReLU → Dropout → Linear(→ joints*3): the seed's.
            self.head = nn.Sequential(
                nn.Dropout(config.dropout),
                nn.Linear(channels, config.hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(config.dropout),
                nn.Linear(config.hidden, NUM_OUTPUTS),
            )
        else:
            self.neck = FeaturePyramid(config.neck_channels, [every[i] for i in TAPS])
            if config.head == "integral":
                self.head = IntegralHead(config.neck_channels, peak_radius=config.peak_radius)
            else:
                side = _stride8_size(config.image_size)
                self.head = SimCCHead(config.neck_channels, (side, side), self.simcc_bins)
            self.z_head = nn.Sequential(
                nn.Dropout(config.dropout),
                nn.Linear(channels, Z_HIDDEN),
                nn.ReLU(inplace=True),
                nn.Linear(Z_HIDDEN, NUM_JOINTS),
            )
        self.presence = nn.Linear(channels, 1)
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    @property
    def simcc_bins(self) -> int:
        return max(2, round(self.config.image_size * self.config.simcc_ratio))

    def forward_train(self, images: torch.Tensor) -> HeadOutput:
        """``images``: float (N, 3, H, W) in [0, 1]."""
        x = (images - self.mean) / self.std
        if self.config.head == "pooled_mlp":
            x = self.features(x)
            pooled = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
            coords = self.head(pooled).unflatten(1, (NUM_JOINTS, 3))
            return HeadOutput(coords, (), self.presence(pooled)[:, 0])
        taps = []
        for index, stage in enumerate(self.features):
            x = stage(x)
            if index in TAPS:
                taps.append(x)
        xy, logits = self.head(self.neck(taps))
        pooled = torch.flatten(F.adaptive_avg_pool2d(taps[-1], 1), 1)
        z = self.z_head(pooled)
        coords = torch.cat([xy.to(z.dtype), z[..., None]], dim=-1)
        return HeadOutput(coords, logits, self.presence(pooled)[:, 0])

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``images``: float (N, 3, H, W) in [0, 1] → (N, joints*3) encoded targets, the (N,)
        probability that the input shows a hand and the (N,) ``confidence`` of the landmarks."""
        out = self.forward_train(images)
        return out.coords.flatten(1), torch.sigmoid(out.presence.float()), self.confidence(out)

    def confidence(self, out: HeadOutput) -> torch.Tensor:
        """(N,) how sure the head is of its landmarks, 0-1: the mean peak probability of its
        distributions (what the flip test compares, ``pipeline.inference``). The pooled head has
        none: 1 everywhere."""
        if self.config.head == "pooled_mlp":
            return torch.ones_like(out.presence, dtype=torch.float32)
        return self.head.confidence(out.logits)

    def encode_distributions(self, xy: torch.Tensor, logits, sigma_px: float):
        """Targets for ``logits`` from input-frame ``xy`` (N, joints, 2)."""
        if self.config.head == "integral":
            return IntegralHead.encode(xy, logits[0].shape[-2:], sigma_px, self.config.image_size)
        if self.config.head == "simcc":
            return SimCCHead.encode(xy, self.simcc_bins, sigma_px, self.config.image_size)
        return ()

    def distribution_loss(self, logits, targets) -> torch.Tensor:
        """(N,) KL per sample (the pooled head has no distribution: an error)."""
        if self.config.head == "pooled_mlp":
            raise ValueError("the pooled_mlp head has no distribution to fit")
        return self.head.distribution_loss(logits, targets)


def _imagenet_state_dict() -> dict:
    weights = MobileNet_V2_Weights.IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=False)
    except Exception as error:  # urllib/socket errors vary by platform
        hub = torch.hub.get_dir()
        file_name = weights.url.rsplit("/", 1)[-1]
        raise PretrainedWeightsError(
            f"train.pretrained=imagenet, but the ImageNet weights could not be had ({error}). "
            f"Fix: download {weights.url} on a machine with internet and copy it to "
            f"{hub}/checkpoints/{file_name} (or set TORCH_HOME), or set train.pretrained=none."
        ) from None


def load_matching(model: nn.Module, state: dict) -> list[str]:
    """Copy every tensor of ``state`` whose name and shape fit ``model``; returns those copied."""
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(fitting, strict=False)
    return sorted(fitting)


def build_model(config: ModelConfig) -> LandmarkRegressor:
    """The model ``config`` describes; ``pretrained=synthetic`` weights are the caller's to load
    (they come from the pretrain stage's file, see ``pipeline.pretraining``)."""
    if config.backbone != "mobilenet_v2" or config.head not in TrainParams.HEADS:
        raise ValueError(f"unknown model {config.backbone}/{config.head}")
    if config.pretrained not in TrainParams.PRETRAINED:
        raise ValueError(f"unknown pretrained={config.pretrained!r}")
    model = LandmarkRegressor(config)
    if config.pretrained == "imagenet":
        state = _imagenet_state_dict()
        features = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
        model.features.load_state_dict(features)
    return model
