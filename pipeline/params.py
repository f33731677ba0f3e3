"""params.yaml, read in one place into frozen, validated dataclasses (one per section).

A typo (``dvc exp run -S trian.lr=...`` or ``-S train.lrr=...``), a wrong type or an out-of-range
value is an error at start naming the key, never a silent default.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.machine import available_cores
from pipeline.paths import SYNTHETIC_ROOT

PARAMS_FILE = "params.yaml"


class ParamsError(ValueError):
    """A params.yaml value is missing, unknown, of the wrong type or out of range."""


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ParamsError(f"params.yaml: {key} {message}")


def _coerce(section: str, name: str, value: Any, expected: type) -> Any:
    key = f"{section}.{name}"
    # bool is an int subclass: reject True for an int and 1 for a bool explicitly.
    if expected is bool:
        _check(isinstance(value, bool), key, f"must be true or false, got {value!r}")
        return value
    if expected is int:
        _check(
            isinstance(value, int) and not isinstance(value, bool),
            key,
            f"must be an integer, got {value!r}",
        )
        return value
    if expected is float:
        _check(
            isinstance(value, (int, float)) and not isinstance(value, bool),
            key,
            f"must be a number, got {value!r}",
        )
        return float(value)
    if expected is str:
        _check(isinstance(value, str), key, f"must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported param type {expected}")


def _from_mapping(cls: type, section: str, raw: Any) -> Any:
    if raw is None:
        raw = {}
    _check(isinstance(raw, dict), section, f"must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ParamsError(
            f"params.yaml: unknown key(s) {', '.join(section + '.' + k for k in unknown)}"
            f"{_nearest(unknown, fields, section + '.')}; "
            f"known keys of '{section}': {', '.join(sorted(fields))}"
        )
    values = {}
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    for name, value in raw.items():
        if str(types[name]) == "dict":  # a mapping of its own (data.extra_sources, ...)
            values[name] = _MAPPINGS[f"{section}.{name}"](value)
            continue
        expected = {"bool": bool, "int": int, "float": float, "str": str}[str(types[name])]
        values[name] = _coerce(section, name, value, expected)
    return cls(**values)


def _nearest(unknown: list[str], known, prefix: str = "") -> str:
    """ " (did you mean train.lr?)" for the first unknown name that resembles a known one."""
    for name in unknown:
        match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
        if match:
            return f" (did you mean {prefix}{match[0]}?)"
    return ""


def _fraction(key: str, value: float, low_open: bool = False) -> None:
    ok = (0.0 < value < 1.0) if low_open else (0.0 <= value < 1.0)
    _check(ok, key, f"must be in {'(0' if low_open else '[0'}, 1), got {value}")


SOURCE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class SourceParams:
    """One data set: where its images are and how they are split (``data`` itself, and each
    entry of ``data.extra_sources``)."""

    source: str = "synthetic"
    root: str = "data/synthetic"
    # folders source: a regex over the file name; its first group (or the whole match) is the
    # subject, so one person never lands in two splits. Empty: every file stem is its own subject.
    subject_pattern: str = ""
    validation_fraction: float = 0.15
    test_fraction: float = 0.15
    split_seed: int = 0

    SOURCES = ("synthetic", "ouhands", "folders")
    KEY = "data"  # how messages name this source's keys

    def __post_init__(self) -> None:
        key = self.KEY
        _check(
            self.source in self.SOURCES,
            f"{key}.source",
            f"must be one of {self.SOURCES}, got {self.source!r}",
        )
        _check(bool(self.root), f"{key}.root", "must name the data folder")
        if self.source == "synthetic":
            _check(
                Path(self.root) == SYNTHETIC_ROOT,
                f"{key}.root",
                f"must be {SYNTHETIC_ROOT} with source synthetic (the synthesize stage "
                f"writes there), got {self.root!r}",
            )
        if self.subject_pattern:
            try:
                re.compile(self.subject_pattern)
            except re.error as error:
                raise ParamsError(
                    f"params.yaml: {key}.subject_pattern is not a valid regex: {error}"
                ) from None
        _fraction(f"{key}.validation_fraction", self.validation_fraction)
        _fraction(f"{key}.test_fraction", self.test_fraction)
        _check(
            self.validation_fraction + self.test_fraction < 1.0,
            f"{key}.validation_fraction + {key}.test_fraction",
            "must leave images for training (sum < 1)",
        )

    @property
    def listing_options(self) -> dict:
        """What ``pipeline.sources.listing.list_images`` takes besides source and root."""
        return {
            "subject_pattern": self.subject_pattern,
            "validation_fraction": self.validation_fraction,
            "test_fraction": self.test_fraction,
            "split_seed": self.split_seed,
        }


def _extra_source_params(name: str, raw: Any) -> SourceParams:
    """One entry of ``data.extra_sources``, checked with its own key in every message."""
    key = f"data.extra_sources.{name}"
    _check(
        isinstance(name, str) and bool(SOURCE_NAME.match(name)),
        key,
        "is not a usable name: lower-case letters, digits, '-' and '_', starting with a letter "
        "(it names a DVC stage and a folder)",
    )
    _check(isinstance(raw, dict), key, f"must be a mapping with source and root, got {raw!r}")
    # a subclass only so that every message names this entry's keys
    named = type("ExtraSourceParams", (SourceParams,), {"KEY": key})
    if set(raw) - {f.name for f in dataclasses.fields(SourceParams)}:
        _from_mapping(named, key, raw)  # raises, naming the unknown key and its nearest match
    _check("source" in raw, key, f"needs source, one of {SourceParams.SOURCES}")
    _check("root" in raw, key, "needs root (the data set's folder)")
    return SourceParams(**dataclasses.asdict(_from_mapping(named, key, raw)))


@dataclass(frozen=True)
class DataParams(SourceParams):
    """The main data set (the keys of ``SourceParams``) and, in ``extra_sources``, more data sets
    for the same run, each labelled by its own stage (``landmarks_source@NAME``) and split on its
    own. Split rows carry their data set's name (the ``dataset`` column); the main one is
    named after its ``source`` (synthetic, ouhands or folders)."""

    extra_sources: dict = field(default_factory=dict)  # name -> SourceParams

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(
            self.source not in self.extra_sources,
            f"data.extra_sources.{self.source}",
            f"is the main data set's name (data.source: {self.source}); name it otherwise",
        )

    @property
    def main_name(self) -> str:
        return self.source

    @property
    def sources(self) -> dict[str, SourceParams]:
        """Every data set of the run by name, the main one first."""
        main = SourceParams(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(SourceParams)}
        )
        return {self.main_name: main, **self.extra_sources}

    @property
    def roots(self) -> dict[str, Path]:
        """Each data set's folder by name: where a row's ``path`` is relative to."""
        return {name: Path(source.root) for name, source in self.sources.items()}


def _extra_sources(raw: Any) -> dict[str, SourceParams]:
    if raw is None:
        return {}
    _check(isinstance(raw, dict), "data.extra_sources", f"must be a mapping, got {raw!r}")
    return {name: _extra_source_params(name, entry) for name, entry in raw.items()}


def _source_weights(raw: Any) -> dict[str, float]:
    if raw is None:
        return {}
    _check(isinstance(raw, dict), "train.source_weights", f"must be a mapping, got {raw!r}")
    weights = {}
    for name, value in raw.items():
        weights[name] = _coerce("train.source_weights", str(name), value, float)
        _check(
            0 <= weights[name] <= 1000,
            f"train.source_weights.{name}",
            f"must be in [0, 1000], got {weights[name]}",
        )
    return weights


@dataclass(frozen=True)
class SyntheticParams:
    num_images: int = 1125
    width: int = 640
    height: int = 480
    seed: int = 0
    num_subjects: int = 12
    test_fraction: float = 0.2
    validation_fraction: float = 0.2
    # The hand's length (wrist to middle fingertip) as a fraction of the frame's height, drawn
    # uniformly in [hand_scale_min, hand_scale_max]: small hands far from the camera to close-ups.
    hand_scale_min: float = 0.2
    hand_scale_max: float = 0.62
    empty_fraction: float = 0.2  # frames with no hand at all (the presence head's negatives)
    # How far the palm (or the back) turns away from the camera about the hand's long axis,
    # degrees either way, drawn uniformly (90: edge on).
    turn_max: float = 25.0
    # The fraction of frames whose hand is in a pose drawn finger by finger (class "random")
    # instead of the gesture its turn names: poses the ten gestures do not name.
    random_poses: float = 0.0

    def __post_init__(self) -> None:
        _check(0 <= self.turn_max <= 90, "synthetic.turn_max", "must be in [0, 90] degrees")
        _check(0.0 <= self.random_poses <= 1.0, "synthetic.random_poses", "must be in [0, 1]")
        _check(self.num_images >= 3, "synthetic.num_images", f"must be >= 3, got {self.num_images}")
        _check(
            0.05 <= self.hand_scale_min <= self.hand_scale_max <= 0.9,
            "synthetic.hand_scale_min/hand_scale_max",
            f"must satisfy 0.05 <= min <= max <= 0.9, got {self.hand_scale_min}, "
            f"{self.hand_scale_max}",
        )
        _check(0 <= self.empty_fraction < 1, "synthetic.empty_fraction", "must be in [0, 1)")
        _check(
            64 <= self.width <= 4096, "synthetic.width", f"must be in [64, 4096], got {self.width}"
        )
        _check(
            64 <= self.height <= 4096,
            "synthetic.height",
            f"must be in [64, 4096], got {self.height}",
        )
        _check(
            self.num_subjects >= 2,
            "synthetic.num_subjects",
            f"must be >= 2, got {self.num_subjects}",
        )
        _fraction("synthetic.test_fraction", self.test_fraction, low_open=True)
        _fraction("synthetic.validation_fraction", self.validation_fraction)


@dataclass(frozen=True)
class TeacherParams:
    # Empty: the pinned MediaPipe models from the mediapipe 0.10.21 wheel. Else a HandLandmarker
    # .task file (e.g. Google's published hand_landmarker.task).
    model_path: str = ""


@dataclass(frozen=True)
class LandmarksParams:
    num_hands: int = 2
    min_hand_detection_confidence: float = 0.5
    min_hand_presence_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    workers: int = 0  # local: processes, 0 = one per CPU core; ray: actors, 0 = one per cluster CPU
    # How the images are labelled; both write the same table, so neither `engine` nor the Ray
    # settings are params of the landmarks stage in dvc.yaml (like `workers`).
    engine: str = "local"  # local (worker processes) | ray (pipeline.ray_labeling)
    ray_address: str = ""  # "": start a local Ray cluster; "auto", "host:6379", "ray://host:10001"
    ray_timeout_s: float = 600.0  # ray: fail after this long without progress (a stuck cluster)

    ENGINES = ("local", "ray")
    # What the HandLandmarker itself is built with (the rest says how the work is spread).
    TEACHER_KEYS = (
        "num_hands",
        "min_hand_detection_confidence",
        "min_hand_presence_confidence",
        "min_tracking_confidence",
    )

    @property
    def teacher_options(self) -> dict:
        """The HandLandmarker's options among these params (labels depend on these only)."""
        return {key: getattr(self, key) for key in self.TEACHER_KEYS}

    def __post_init__(self) -> None:
        _check(
            self.engine in self.ENGINES,
            "landmarks.engine",
            f"must be one of {self.ENGINES}, got {self.engine!r}",
        )
        _check(
            self.ray_timeout_s > 0,
            "landmarks.ray_timeout_s",
            f"must be > 0, got {self.ray_timeout_s}",
        )
        _check(
            1 <= self.num_hands <= 8,
            "landmarks.num_hands",
            f"must be in [1, 8], got {self.num_hands}",
        )
        for name in (
            "min_hand_detection_confidence",
            "min_hand_presence_confidence",
            "min_tracking_confidence",
        ):
            value = getattr(self, name)
            _check(0.0 <= value <= 1.0, f"landmarks.{name}", f"must be in [0, 1], got {value}")
        _check(self.workers >= 0, "landmarks.workers", f"must be >= 0, got {self.workers}")

    @property
    def worker_count(self) -> int:
        return self.workers or available_cores()


@dataclass(frozen=True)
class SplitParams:
    max_hands: int = 1
    min_handedness_score: float = 0.5
    # How far (fraction of width/height) a landmark may lie outside the image before a drop.
    out_of_image_margin: float = 0.05
    # Overlap (IoU) of the teacher's landmark box with the source's box; 0 disables the rule.
    min_box_iou: float = 0.1

    def __post_init__(self) -> None:
        _check(self.max_hands >= 1, "split.max_hands", f"must be >= 1, got {self.max_hands}")
        _check(
            0.0 <= self.min_handedness_score <= 1.0,
            "split.min_handedness_score",
            "must be in [0, 1]",
        )
        _check(
            0.0 <= self.out_of_image_margin <= 1.0, "split.out_of_image_margin", "must be in [0, 1]"
        )
        _check(0.0 <= self.min_box_iou <= 1.0, "split.min_box_iou", "must be in [0, 1]")


@dataclass(frozen=True)
class TrainParams:
    """The defaults are params.yaml's (a test keeps the two equal); the seed's recipe is a
    ``dvc exp run -S ...`` line in docs/student.md."""

    pretrained: str = "synthetic"  # none | imagenet | synthetic (the pretrain stage's weights)
    image_size: int = 128
    # crop: top-down, a square around the hand (found by the finder at inference); squash |
    # letterbox: the whole frame (the seed's student)
    input_layout: str = "crop"
    crop_margin: float = 1.5  # crop side = margin x the larger side of the hand's landmark box
    crop_context: float = 1.25  # training crops are cut this much wider: room for the jitter
    miss_fraction: float = 0.2  # per hand image, one more crop that misses the hand (presence 0)
    wide_fraction: float = 0.3  # per hand image, one more that shows it small, off centre
    # Per frame the source knows is empty (rendered, no hand drawn), one more negative: the
    # finder's square on it (finder.kind: model; the train stage runs the finder first).
    finder_negatives: bool = True
    # Renders of the pretrain section's kind mixed into the train split, as a share of its
    # samples (0: none): what pre-training taught (poses, views) is rehearsed while fine-tuning
    # on the data set. Truth labels; their z is not trained.
    rehearsal: float = 1.0  # 0.5 until 2026-12-07 night (docs/student.md)
    presence_weight: float = 1.0  # weight of the presence head's binary cross-entropy
    head: str = "integral"  # pooled_mlp | integral | simcc
    width: float = 0.5  # MobileNetV2 width multiplier (1: the seed's; 0.5: a third of the compute)
    neck_channels: int = 96  # integral/simcc: width of the stride-8 feature pyramid
    simcc_ratio: float = 2.0  # simcc: bins per input pixel
    # integral: a trained model (evaluate, predict, score, export) reads each heatmap within
    # this many cells (8 input px each) of its peak; 0: the whole map, as training fits and
    # validates it (``model.reading_as_fitted``).
    peak_radius: int = 2
    loss: str = "l1"  # smooth_l1 | l1 | mse | wing
    smooth_l1_beta: float = 0.02
    wing_omega: float = 0.05  # wing: log region, in units of the input side
    wing_epsilon: float = 0.01
    z_weight: float = 1.0
    distribution_weight: float = 1.0  # integral/simcc: weight of the KL to Gaussian targets
    label_sigma: float = 2.0  # std of those Gaussian targets, input pixels
    score_weight_power: float = 0.0  # sample weight = teacher handedness_score ** power; 0 off
    lr: float = 6e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0  # linear learning-rate warm-up before the cosine decay
    ema_decay: float = 0.0  # moving average of the weights used for validation/prediction; 0 off
    batch_size: int = 0  # 0: 64 on a GPU, 16 on the CPU (the seed's values)
    epochs: int = 40
    dropout: float = 0.2
    color_jitter: float = 0.3
    grayscale_p: float = 0.1
    # Per sample with this probability the crop is shrunk to a side drawn log-uniformly from
    # [low_res_min, 1] of its own and enlarged back: a hand few pixels wide, from a small photo
    # or a far camera, seen as the model sees it once its crop is enlarged. Fine-tuning only.
    low_res_p: float = 0.0
    low_res_min: float = 0.35
    flip_p: float = 0.0  # horizontal mirror (handedness swaps, joint indices stay)
    # For crops the jitter also stands for the finder's errors: where it puts the square.
    rotate_deg: float = 15.0  # rotation uniform in ±rotate_deg
    scale_min: float = 0.8  # zoom uniform (log scale) in [scale_min, scale_max]
    scale_max: float = 1.25
    translate: float = 0.1  # shift uniform in ±translate of the frame, per axis
    keep_margin: float = 0.02  # shift corrected so the hand stays this far inside; <0: never
    device: str = "auto"  # auto | cuda | mps | cpu
    seed: int = 0
    threads: int = 0  # CPU threads for torch; 0: torch's default
    compile: bool = False  # torch.compile the training step (slower on an H200: docs/scaling.md)
    # Decoded images (N x 3 x S x S bytes) held in memory up to this, per machine (its DDP
    # processes share one copy); above it they are read per batch from a temporary file.
    # Same results either way.
    cache_budget_mib: int = 4096
    # DistributedDataParallel processes on this machine (torchrun --nproc-per-node); 1: none.
    # train.batch_size stays the global batch, shared out between them.
    processes: int = 1
    # Continue an interrupted run from models/student/last.pt (a finished run is never taken
    # as the result of a new one: `dvc repro -f` trains again). false: always from scratch.
    resume: bool = True
    # With data.extra_sources: how often each data set's images are drawn in training, per image
    # and relative to the others (a data set not named: 1). 0: not trained on, nor used to pick
    # the best epoch; its test split still measures the model on photos it never saw.
    source_weights: dict = field(default_factory=dict)

    @property
    def cache_budget_bytes(self) -> int:
        return self.cache_budget_mib * 2**20

    PRETRAINED = ("none", "imagenet", "synthetic")
    LAYOUTS = ("crop", "squash", "letterbox")
    HEADS = ("pooled_mlp", "integral", "simcc")
    LOSSES = ("smooth_l1", "l1", "mse", "wing")
    DEVICES = ("auto", "cuda", "mps", "cpu")

    def __post_init__(self) -> None:
        _check(
            self.pretrained in self.PRETRAINED,
            "train.pretrained",
            f"must be one of {self.PRETRAINED}",
        )
        _check(
            self.input_layout in self.LAYOUTS,
            "train.input_layout",
            f"must be one of {self.LAYOUTS}",
        )
        _check(self.head in self.HEADS, "train.head", f"must be one of {self.HEADS}")
        _check(self.peak_radius >= 0, "train.peak_radius", "must be 0 (the whole map) or more")
        _check(1.0 <= self.crop_margin <= 4.0, "train.crop_margin", "must be in [1, 4]")
        _check(1.0 <= self.crop_context <= 2.0, "train.crop_context", "must be in [1, 2]")
        _check(0 <= self.miss_fraction <= 1, "train.miss_fraction", "must be in [0, 1]")
        _check(0 <= self.wide_fraction <= 1, "train.wide_fraction", "must be in [0, 1]")
        _check(0 <= self.rehearsal <= 4, "train.rehearsal", "must be in [0, 4]")
        _check(self.presence_weight >= 0, "train.presence_weight", "must be >= 0")
        _check(self.loss in self.LOSSES, "train.loss", f"must be one of {self.LOSSES}")
        _check(self.device in self.DEVICES, "train.device", f"must be one of {self.DEVICES}")
        _check(
            32 <= self.image_size <= 1024,
            "train.image_size",
            f"must be in [32, 1024], got {self.image_size}",
        )
        _check(8 <= self.neck_channels <= 512, "train.neck_channels", "must be in [8, 512]")
        _check(0.25 <= self.width <= 2.0, "train.width", "must be in [0.25, 2]")
        _check(
            self.width == 1.0 or self.pretrained != "imagenet",
            "train.width",
            "must be 1 with train.pretrained=imagenet (the ImageNet weights are full width)",
        )
        _check(0.25 <= self.simcc_ratio <= 8, "train.simcc_ratio", "must be in [0.25, 8]")
        _check(self.smooth_l1_beta > 0, "train.smooth_l1_beta", "must be > 0")
        _check(self.wing_omega > 0, "train.wing_omega", "must be > 0")
        _check(self.wing_epsilon > 0, "train.wing_epsilon", "must be > 0")
        _check(self.z_weight >= 0, "train.z_weight", "must be >= 0")
        _check(self.distribution_weight >= 0, "train.distribution_weight", "must be >= 0")
        _check(
            self.distribution_weight == 0 or self.head != "pooled_mlp",
            "train.distribution_weight",
            "needs a spatial head (train.head=integral or simcc); pooled_mlp has no distribution",
        )
        _check(self.label_sigma > 0, "train.label_sigma", "must be > 0")
        _check(self.score_weight_power >= 0, "train.score_weight_power", "must be >= 0")
        _check(0 < self.lr < 10, "train.lr", f"must be in (0, 10), got {self.lr}")
        _check(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        _check(self.warmup_epochs >= 0, "train.warmup_epochs", "must be >= 0")
        _check(0 <= self.ema_decay < 1, "train.ema_decay", "must be in [0, 1)")
        _check(self.batch_size >= 0, "train.batch_size", "must be >= 0 (0: per-device default)")
        _check(self.epochs >= 1, "train.epochs", f"must be >= 1, got {self.epochs}")
        _check(0 <= self.dropout < 1, "train.dropout", "must be in [0, 1)")
        _check(0 <= self.color_jitter <= 1, "train.color_jitter", "must be in [0, 1]")
        _check(0 <= self.grayscale_p <= 1, "train.grayscale_p", "must be in [0, 1]")
        _check(0 <= self.low_res_p <= 1, "train.low_res_p", "must be in [0, 1]")
        _check(0 < self.low_res_min <= 1, "train.low_res_min", "must be in (0, 1]")
        _check(0 <= self.flip_p <= 1, "train.flip_p", "must be in [0, 1]")
        _check(0 <= self.rotate_deg <= 180, "train.rotate_deg", "must be in [0, 180]")
        _check(
            0 < self.scale_min <= self.scale_max <= 4,
            "train.scale_min/scale_max",
            f"must satisfy 0 < scale_min <= scale_max <= 4, got {self.scale_min}, {self.scale_max}",
        )
        _check(0 <= self.translate <= 0.5, "train.translate", "must be in [0, 0.5]")
        _check(self.keep_margin < 0.5, "train.keep_margin", "must be < 0.5")
        _check(self.threads >= 0, "train.threads", "must be >= 0")
        _check(self.cache_budget_mib >= 0, "train.cache_budget_mib", "must be >= 0 (0: on disk)")
        _check(1 <= self.processes <= 1024, "train.processes", "must be in [1, 1024]")
        _check(
            self.batch_size == 0 or self.batch_size >= 2 * self.processes,
            "train.batch_size",
            f"is the global batch and must hold two images per process: at least "
            f"{2 * self.processes} for train.processes={self.processes}, got {self.batch_size}",
        )


# Train keys that change how a run executes, not what it computes: they never make two runs
# different runs (resume, the evaluate stage's check and pretraining all use ``run_identity``).
EXECUTION_ONLY_KEYS: tuple[str, ...] = (
    "threads", "device", "processes", "cache_budget_mib", "compile", "resume",
)  # fmt: skip


def run_identity(train: TrainParams | dict) -> dict:
    """What makes a training run the run it is: every train key but the execution-only ones.
    Takes the params or their dict (as saved in a checkpoint)."""
    values = dataclasses.asdict(train) if isinstance(train, TrainParams) else dict(train)
    return {k: v for k, v in sorted(values.items()) if k not in EXECUTION_ONLY_KEYS}


def run_differences(saved: dict, wanted: TrainParams) -> list[str]:
    """The train keys in which a checkpoint's run (``saved``: its train params) is not the run
    ``wanted`` describes; empty when they are the same run."""
    have, want = run_identity(saved), run_identity(wanted)
    return sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))


@dataclass(frozen=True)
class PretrainParams:
    """Pre-training on rendered hands, for ``train.pretrained=synthetic``, labelled by their TRUE
    landmarks or by the teacher (``labels``). The architecture, loss and augmentation are the
    train section's; this section sets the data and the schedule. ``num_images: 0`` switches the
    stage off (it then writes a marker that train.pretrained=synthetic refuses)."""

    LABELS = ("truth", "teacher")

    num_images: int = 4000
    validation_images: int = 100
    width: int = 320  # rendered at this size, then resized to train.image_size
    height: int = 240
    # 0: the whole frame (framed like the synthetic data set). > 0: a square crop around the hand,
    # the hand filling a fraction in [crop_min, crop_max] of it (for close-up photos).
    crop_min: float = 0.0
    crop_max: float = 0.0
    num_subjects: int = 40
    seed: int = 1  # != synthetic.seed: other subjects and poses than the synthetic data set
    epochs: int = 8
    lr: float = 3e-3
    batch_size: int = 16
    workers: int = 0  # rendering processes; 0: one per CPU core
    # truth: the renderer's landmarks. teacher: MediaPipe's answer on each render (the landmarks
    # section's settings), what the train stage's labels are; renders it finds no hand in, or
    # several, are left out (counted in metrics/pretrain.json).
    labels: str = "truth"
    # The fraction of renders in a pose drawn finger by finger (each finger straight, curled or
    # between, the thumb anywhere) instead of the ten gestures in turn: hands in poses that the
    # data set's gestures do not name.
    random_poses: float = 0.5
    # The fraction of renders in a pose with the thumb's tip on fingertips (a pinch, two
    # fingers, an "O"), in place of a gesture or a random pose: drawn finger by finger, tips
    # almost never meet.
    contact_poses: float = 0.0
    # The fraction of renders framed as a close-up photo (crop layout): the picture's edges
    # just around the hand, black beyond them in its crop, as in a crop of a close-up photo.
    closeups: float = 0.3
    # synthetic.turn_max for these renders.
    turn_max: float = SyntheticParams.turn_max

    def __post_init__(self) -> None:
        _check(0 <= self.turn_max <= 90, "pretrain.turn_max", "must be in [0, 90] degrees")
        _check(0.0 <= self.random_poses <= 1.0, "pretrain.random_poses", "must be in [0, 1]")
        _check(0.0 <= self.closeups <= 1.0, "pretrain.closeups", "must be in [0, 1]")
        _check(0.0 <= self.contact_poses <= 1.0, "pretrain.contact_poses", "must be in [0, 1]")
        _check(
            self.labels in self.LABELS,
            "pretrain.labels",
            f"must be one of {self.LABELS}, got {self.labels!r}",
        )
        _check(self.num_images >= 0, "pretrain.num_images", "must be >= 0 (0: no pretraining)")
        _check(
            self.num_images == 0 or self.num_images >= 2,
            "pretrain.num_images",
            "must be 0 (off) or >= 2",
        )
        _check(self.validation_images >= 1, "pretrain.validation_images", "must be >= 1")
        _check(64 <= self.width <= 4096, "pretrain.width", "must be in [64, 4096]")
        _check(64 <= self.height <= 4096, "pretrain.height", "must be in [64, 4096]")
        _check(
            (self.crop_min == self.crop_max == 0) or (0 < self.crop_min <= self.crop_max <= 1),
            "pretrain.crop_min/crop_max",
            "must both be 0 (whole frame) or satisfy 0 < crop_min <= crop_max <= 1",
        )
        _check(self.num_subjects >= 1, "pretrain.num_subjects", "must be >= 1")
        _check(self.epochs >= 1, "pretrain.epochs", "must be >= 1")
        _check(0 < self.lr < 10, "pretrain.lr", "must be in (0, 10)")
        _check(self.batch_size >= 2, "pretrain.batch_size", "must be >= 2")
        _check(self.workers >= 0, "pretrain.workers", "must be >= 0")


def pretrain_params_for(pretrain: PretrainParams, train: TrainParams) -> TrainParams:
    """The train recipe with the pretrain schedule. The renders have no depth: z is not trained.
    The pretrain stage runs one process, whatever train.processes says."""
    return dataclasses.replace(
        train,
        processes=1,
        pretrained="none",
        epochs=pretrain.epochs,
        lr=pretrain.lr,
        batch_size=pretrain.batch_size,
        z_weight=0.0,
        score_weight_power=0.0,
        source_weights={},  # renders, not the run's data sets
        wide_fraction=0.0,  # wide crops are cut from the teacher's table, not from renders
        finder_negatives=False,
        rehearsal=0.0,  # it trains on renders already
        low_res_p=0.0,  # the renders teach shapes; the camera is fine-tuning's lesson
        low_res_min=1.0,
    )


@dataclass(frozen=True)
class FinderParams:
    """The finder of the top-down student (``train.input_layout: crop``): where the hand is in
    the whole frame and whether there is one. ``model``: a small network of its own on the
    letterboxed frame at ``image_size``, with the train section's recipe and this schedule;
    ``shared``: the landmark network itself, trained on frames as well as crops (a cascade with
    shared weights, one model to ship)."""

    kind: str = "model"  # model | shared
    image_size: int = 128
    epochs: int = 12
    lr: float = 6e-3
    batch_size: int = 16
    # Image mode: at most this many crop passes after the first, each on the square of the
    # previous pass's landmarks (as tracking does from frame to frame), so the finder only has
    # to be near; an image whose square has settled stops early (``student.SETTLED``).
    refine: int = 3
    # The zoom of the finder's frames (log-uniform, in place of train.scale_min/max): wide, so
    # that it meets hands of every size in the frame. Trained on small hands in rooms with the
    # crop model's 0.8-1.25 it found close-ups of other people at 0.59 PCK@0.1 end to end; with
    # 0.5-2 at 0.87 (benchmarks/cross_domain.py, docs/student.md).
    scale_min: float = 0.5
    scale_max: float = 2.0
    # Widen the finder's square so that its median side on the validation frames matches the
    # teacher's square (docs/student.md, "The finder's square"); false: the landmark model's
    # margin as it is.
    calibrate_margin: bool = True

    KINDS = ("model", "shared")

    def __post_init__(self) -> None:
        _check(self.kind in self.KINDS, "finder.kind", f"must be one of {self.KINDS}")
        _check(32 <= self.image_size <= 1024, "finder.image_size", "must be in [32, 1024]")
        _check(self.epochs >= 1, "finder.epochs", "must be >= 1")
        _check(0 < self.lr < 10, "finder.lr", "must be in (0, 10)")
        _check(self.batch_size >= 2, "finder.batch_size", "must be >= 2")
        _check(0 <= self.refine <= 4, "finder.refine", "must be in [0, 4]")
        _check(
            0.1 <= self.scale_min <= self.scale_max <= 10,
            "finder.scale_min/scale_max",
            f"must satisfy 0.1 <= min <= max <= 10, got {self.scale_min}, {self.scale_max}",
        )


def finder_params_for(finder: FinderParams, train: TrainParams) -> TrainParams:
    """The train recipe with the finder's size, zoom and schedule; one process, as
    pretraining."""
    return dataclasses.replace(
        train,
        processes=1,
        pretrained="imagenet" if train.pretrained == "imagenet" else "none",
        image_size=finder.image_size,
        epochs=finder.epochs,
        lr=finder.lr,
        batch_size=finder.batch_size,
        scale_min=finder.scale_min,
        scale_max=finder.scale_max,
        wide_fraction=0.0,  # the finder sees whole frames, not crops
        finder_negatives=False,
        rehearsal=0.0,  # rendered crops are the landmark network's
        low_res_p=0.0,  # its letterboxed frame is coarse already
        low_res_min=1.0,
    )


@dataclass(frozen=True)
class EvaluateParams:
    grid_images: int = 12  # test images drawn in the overlay grid
    batch_size: int = 32
    min_presence: float = 0.5  # the student says "hand" at this presence and above
    flip_test: bool = False  # each crop and its mirror image, the surer reading kept

    def __post_init__(self) -> None:
        _check(0 < self.min_presence < 1, "evaluate.min_presence", "must be in (0, 1)")
        _check(1 <= self.grid_images <= 64, "evaluate.grid_images", "must be in [1, 64]")
        _check(self.batch_size >= 1, "evaluate.batch_size", "must be >= 1")


@dataclass(frozen=True)
class Params:
    data: DataParams = field(default_factory=DataParams)
    synthetic: SyntheticParams = field(default_factory=SyntheticParams)
    teacher: TeacherParams = field(default_factory=TeacherParams)
    landmarks: LandmarksParams = field(default_factory=LandmarksParams)
    split: SplitParams = field(default_factory=SplitParams)
    pretrain: PretrainParams = field(default_factory=PretrainParams)
    finder: FinderParams = field(default_factory=FinderParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)


SECTIONS: dict[str, type] = {
    f.name: f.default_factory().__class__ for f in dataclasses.fields(Params)
}
_MAPPINGS = {"data.extra_sources": _extra_sources, "train.source_weights": _source_weights}


def params_from_dict(raw: dict) -> Params:
    _check(isinstance(raw, dict), "file", "must hold a mapping of sections")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ParamsError(
            f"params.yaml: unknown section(s) {', '.join(unknown)}{_nearest(unknown, SECTIONS)}; "
            f"known: {', '.join(SECTIONS)}"
        )
    params = Params(
        **{name: _from_mapping(cls, name, raw.get(name)) for name, cls in SECTIONS.items()}
    )
    names = params.data.sources
    for name in params.train.source_weights:
        _check(
            name in names,
            f"train.source_weights.{name}",
            f"names no data set{_nearest([name], names, '')}; the run's: {', '.join(names)}",
        )
    _check(
        any(params.train.source_weights.get(name, 1.0) > 0 for name in names),
        "train.source_weights",
        "leaves no data set to train on (every weight is 0)",
    )
    return params


def load_params(path: str | os.PathLike = PARAMS_FILE) -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path} not found; run from the repository root")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ParamsError(f"{path} is not valid YAML: {error}") from None
    return params_from_dict(raw)
