"""The student: torchvision MobileNetV2 features + a small regression head, built from a config."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

from pipeline.codec import NUM_OUTPUTS

# Preprocessing follows the weights: MobileNetV2's ImageNet statistics, also used when training
# from scratch so that switching `pretrained` changes nothing else.
IMAGENET_MEAN = tuple(MobileNet_V2_Weights.IMAGENET1K_V1.transforms().mean)
IMAGENET_STD = tuple(MobileNet_V2_Weights.IMAGENET1K_V1.transforms().std)


class PretrainedWeightsError(RuntimeError):
    pass


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "mobilenet_v2"
    head: str = "pooled_mlp"
    hidden: int = 512
    dropout: float = 0.2
    pretrained: str = "none"  # none | imagenet
    image_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict) -> ModelConfig:
        payload = dict(payload)
        payload["mean"], payload["std"] = tuple(payload["mean"]), tuple(payload["std"])
        return cls(**payload)


class LandmarkRegressor(nn.Module):
    """Backbone features → global pool → Dropout → Linear → ReLU → Dropout → Linear(→ joints*3)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.features = mobilenet_v2(weights=None).features
        channels = 1280
        self.head = nn.Sequential(
            nn.Dropout(config.dropout),
            nn.Linear(channels, config.hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, NUM_OUTPUTS),
        )
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images``: float (N, 3, H, W) in [0, 1]; returns (N, joints*3) encoded targets."""
        x = (images - self.mean) / self.std
        x = self.features(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.head(x)


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


def build_model(config: ModelConfig) -> LandmarkRegressor:
    if config.backbone != "mobilenet_v2" or config.head != "pooled_mlp":
        raise ValueError(f"unknown model {config.backbone}/{config.head}")
    model = LandmarkRegressor(config)
    if config.pretrained == "imagenet":
        state = _imagenet_state_dict()
        features = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
        model.features.load_state_dict(features)
    elif config.pretrained != "none":
        raise ValueError(f"unknown pretrained={config.pretrained!r}")
    return model
