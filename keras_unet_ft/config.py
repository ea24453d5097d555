"""Configuration: small dataclasses and three shipped profiles.

* ``smoke`` - tiny (32 x 32, base 4), for tests and a first look; minutes on a CPU.
* ``quick`` - the default: a CPU-sized version of the paper that still covers
  both targets, all 9 + 9 block plans, contracting / expanding, both baselines
  and 3 folds.
* ``faithful`` - the quick profile at 128 x 128 (speckle exists at this scale) with
  the plans the findings rest on (``faithful`` plan set): hours on a CPU.
* ``paper`` - the paper's settings (docs/paper.md A and D): 256 x 256, base 64, 40
  pretraining epochs on 10,000 images with 10 % validation, 600 augmented
  training images per fold, 20 fine-tuning epochs, 5 folds, Adam 1e-4, binary
  cross-entropy, batch 2. Meant for a GPU.

Any field can be overridden: ``--set finetune.epochs=10`` on the command line or
``load_config("quick", {"finetune.epochs": 10})``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import typing
from typing import Any, Dict, List, Optional, Tuple

from .exitcodes import UserError


@dataclasses.dataclass
class ModelConfig:
    kind: str = "unet"            # unet | xunet | vunet
    size: int = 256
    base_filters: int = 64
    depth: int = 4
    dropout: float = 0.5
    encoder_weights: Optional[str] = "imagenet"  # vunet only: "imagenet" (Keras cache), PATH or None


@dataclasses.dataclass
class DataConfig:
    pretrain: str = "synth_salient"          # NAME or NAME:ROOT
    pretrain_n: Optional[int] = 10000        # built-in data: number of images
    targets: List[str] = dataclasses.field(default_factory=lambda: ["sim_bus", "synth_cxr"])
    target_n: Optional[int] = None           # built-in targets: None = the paper's count
    cache_dir: Optional[str] = None
    cache: bool = True                       # read / write the dataset cache (--no-cache)


@dataclasses.dataclass
class PretrainConfig:
    epochs: int = 40
    batch_size: int = 2
    learning_rate: float = 1e-4
    val_fraction: float = 0.1


@dataclasses.dataclass
class FinetuneConfig:
    epochs: int = 20
    batch_size: int = 2
    learning_rate: float = 1e-4
    augment_total: int = 600      # training images per fold, originals included
    folds: int = 5
    rotation: float = 0.2
    shift: float = 0.05
    shear: float = 0.05
    zoom: float = 0.05
    hflip: bool = True
    # one learning rate per stage of a staged plan (``A>B``); empty = learning_rate for all.
    # Cheng & Lam's V-Unet: 1e-5 (decoder only) then 5e-6 (all layers).
    stage_learning_rates: List[float] = dataclasses.field(default_factory=list)
    # the loss: bce (the paper's binary cross-entropy), dice (soft Dice) or bce+dice
    loss: str = "bce"


@dataclasses.dataclass
class StudyConfig:
    plans: str = "paper"          # paper | tuffc | cheng | comma-separated plan strings
    baselines: bool = True        # add `none` (pretrained, not tuned) and `scratch`
    seed: int = 0
    # repeats of the whole cross-validation, each with its own folds, augmentation and
    # initialisation (seed + REPEAT_SEED_STEP * r); intervals resample within folds and repeats
    seeds: int = 1
    # nested selection: every plan also trained on an inner split of each outer training
    # fold; the plan best on the inner validation images is scored on the outer test fold
    nested: bool = False
    precision: str = "auto"       # auto | fp32 | bf16 | fp16
    deterministic: bool = True    # tf.config.experimental.enable_op_determinism
    save_predictions: bool = True
    trainer: str = "auto"         # auto | selective | masked | keras (see finetune.FoldSession)
    am_steps: int = 100           # activation-maximization steps for Fig. 5
    # fine-tuned weights kept as runs/.../model.keras: none | figures (the runs the
    # figures need: all layers, fold 0, per target) | all
    save_weights: str = "figures"
    # TensorBoard event files of pretraining and every run under this folder (--tensorboard)
    tensorboard: Optional[str] = None


@dataclasses.dataclass
class SizesConfig:
    """Cheng & Lam's dataset-size study: Dice vs number of training images, +- augmentation.

    For each count N a seeded, nested subset of N images of each training fold is
    used as it is (``no augmentation``) or augmented to ``augment_factor * N``
    images (``augmentation``); the epochs are the fine-tuning epochs (Cheng kept
    the epochs, their extra frames being flips). Counts above a fold's training
    images are skipped and listed in the report.
    """
    run: str = "auto"             # auto (with the cheng plan set) | yes | no
    counts: List[int] = dataclasses.field(default_factory=lambda: [50, 100, 200, 400])
    plans: str = "xunet/all,vunet/expanding:blocks>all"
    augment_factor: int = 2


@dataclasses.dataclass
class Config:
    profile: str = "paper"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    pretrain: PretrainConfig = dataclasses.field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)
    study: StudyConfig = dataclasses.field(default_factory=StudyConfig)
    sizes: SizesConfig = dataclasses.field(default_factory=SizesConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)


#: repeat r of the cross-validation uses seed ``study.seed + REPEAT_SEED_STEP * r``
REPEAT_SEED_STEP = 7919


def repeat_seed(cfg: "Config", repeat: int) -> int:
    """The seed of repeat ``repeat`` (0 = ``study.seed`` itself)."""
    return int(cfg.study.seed) + REPEAT_SEED_STEP * int(repeat)


def repeat_config(cfg: "Config", repeat: int) -> "Config":
    """``cfg`` for repeat ``repeat`` of the cross-validation: a copy whose ``study.seed``
    is :func:`repeat_seed` (folds, augmentation, initialisation); ``cfg`` itself for 0."""
    if not repeat:
        return cfg
    out = copy.deepcopy(cfg)
    out.study.seed = repeat_seed(cfg, repeat)
    return out


PROFILES: Dict[str, Dict[str, Any]] = {
    "paper": {"study.seeds": 3},
    "quick": {
        # CPU-sized; the sizes are chosen by measurement, see BENCHMARKS.md / README
        "model.size": 64, "model.base_filters": 8,
        # 2,400 pretraining images x 8 epochs and 12 fine-tuning epochs (were 1,200 x 6 and
        # 6): the fine-tuning grid runs in 2 processes (run_all --jobs auto), 2x faster
        "data.pretrain_n": 2400,
        "pretrain.epochs": 8, "pretrain.batch_size": 8, "pretrain.learning_rate": 3e-4,
        "finetune.epochs": 12, "finetune.batch_size": 8, "finetune.augment_total": 200,
        "finetune.folds": 3, "finetune.learning_rate": 3e-4,
    },
    "faithful": {
        # the scale where the paper's mechanism exists: speckle grain is ~1 x 2 px at
        # 128 px (2 x 4 at 256), sub-pixel at 64; the plans the findings rest on
        # (contracting, expanding, K = 1, 3, 5, 7 both ways, all, both baselines), 3 folds.
        # CPU-sized: wall time measured in README / BENCHMARKS.md
        "model.size": 128, "model.base_filters": 8,
        "data.pretrain_n": 2400,
        "pretrain.epochs": 8, "pretrain.batch_size": 8, "pretrain.learning_rate": 3e-4,
        "finetune.epochs": 12, "finetune.batch_size": 8, "finetune.augment_total": 200,
        "finetune.folds": 3, "finetune.learning_rate": 3e-4, "study.plans": "faithful",
    },
    "smoke": {
        "model.size": 32, "model.base_filters": 4,
        "data.pretrain_n": 64, "data.target_n": 24,
        "pretrain.epochs": 2, "pretrain.batch_size": 8,
        "finetune.epochs": 2, "finetune.batch_size": 8, "finetune.augment_total": 32,
        "finetune.folds": 2, "study.plans": "smoke", "study.am_steps": 20,
        "sizes.counts": "4,8,12",
    },
}


# -- validation: one place for types, allowed values and ranges ----------------
MODEL_KINDS = ("unet", "xunet", "vunet")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TRAINERS = ("auto", "selective", "masked", "keras")
SAVE_WEIGHTS = ("none", "figures", "all")
LOSSES = ("bce", "dice", "bce+dice")
#: ``unet-ft export --format``
EXPORT_FORMATS = ("savedmodel", "tflite")
#: probability above which ``unet-ft predict`` marks a pixel foreground
THRESHOLD = 0.5
SECTIONS = ("model", "data", "pretrain", "finetune", "study", "sizes")

#: allowed values of the fields that take one of a few words (the CLI uses these too)
CHOICES: Dict[str, Tuple[str, ...]] = {
    "model.kind": MODEL_KINDS,
    "study.precision": PRECISIONS,
    "study.trainer": TRAINERS,
    "study.save_weights": SAVE_WEIGHTS,
    "finetune.loss": LOSSES,
    "sizes.run": ("auto", "yes", "no"),
}
_POSITIVE = ("model.size", "model.base_filters", "model.depth", "pretrain.epochs",
             "pretrain.batch_size", "pretrain.learning_rate", "finetune.epochs",
             "finetune.batch_size", "finetune.learning_rate", "finetune.augment_total",
             "sizes.augment_factor", "study.am_steps", "study.seeds")


def _section_types(section) -> Dict[str, Any]:
    return typing.get_type_hints(type(section))


def _is_none_word(value) -> bool:
    return isinstance(value, str) and value.strip().lower() in ("none", "null", "")


def _convert(tp, value, key):
    """``value`` (a string from ``--set`` or a JSON value) as the declared type ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:  # Optional[X]
        inner = [a for a in args if a is not type(None)][0]
        if value is None or _is_none_word(value):
            return None
        return _convert(inner, value, key)
    if origin in (list, List):
        (inner,) = args
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise UserError(f"{key}: expected a comma-separated list, got {value!r}")
        return [_convert(inner, v, key) for v in items]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise UserError(f"{key}: expected a boolean (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
            raise UserError(f"{key}: expected a whole number, got {value!r}")
        try:
            return int(value) if not isinstance(value, str) else int(value.strip())
        except (TypeError, ValueError):
            raise UserError(f"{key}: expected a whole number, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise UserError(f"{key}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{key}: expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise UserError(f"{key}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise UserError(f"{key}: expected a string, got {value!r}")
        return str(value)
    raise TypeError(f"{key}: unsupported field type {tp!r}")  # a bug in this module


def _did_you_mean(word: str, choices, prefix: str = "") -> str:
    """``" (did you mean finetune.epochs?)"`` for the closest of ``choices``, or ``""``."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(prefix + c for c in close)}?)" if close else ""


def _field(cfg: "Config", key: str):
    section, _, name = key.partition(".")
    target = getattr(cfg, section, None) if section in SECTIONS else None
    if not name or target is None:
        every = [f"{s}.{n}" for s in SECTIONS for n in _section_types(getattr(cfg, s))]
        raise UserError(f"unknown config key {key!r}{_did_you_mean(key, every)}; keys look "
                        f"like 'finetune.epochs' (sections: {', '.join(SECTIONS)})")
    types = _section_types(target)
    if name not in types:
        raise UserError(f"unknown config key {key!r}"
                        f"{_did_you_mean(name, list(types), section + '.')}; {section} has: "
                        f"{', '.join(types)}")
    return target, name, types[name]


def set_value(cfg: "Config", key: str, value) -> None:
    """Set ``section.field`` from a string or JSON value, converted to the declared type."""
    target, name, tp = _field(cfg, key)
    setattr(target, name, _convert(tp, value, key))


def validate(cfg: "Config") -> "Config":
    """Check allowed values and ranges; errors name the key and repeat the bad value."""
    for key, allowed in CHOICES.items():
        section, _, name = key.partition(".")
        v = getattr(getattr(cfg, section), name)
        if v not in allowed:
            raise UserError(f"bad value for {key}: {v!r}; expected one of {', '.join(allowed)}")
    for key in _POSITIVE:
        section, _, name = key.partition(".")
        v = getattr(getattr(cfg, section), name)
        if not v > 0:
            raise UserError(f"bad value for {key}: {v!r}; expected a number > 0")
    if cfg.finetune.folds < 2:
        raise UserError(f"bad value for finetune.folds: {cfg.finetune.folds!r}; expected >= 2")
    if not 0 < cfg.pretrain.val_fraction < 1:
        raise UserError(f"bad value for pretrain.val_fraction: {cfg.pretrain.val_fraction!r}; "
                        "expected a number in (0, 1)")
    bad = [r for r in cfg.finetune.stage_learning_rates if not r > 0]
    if bad:
        raise UserError(f"bad value for finetune.stage_learning_rates: "
                        f"{cfg.finetune.stage_learning_rates!r}; expected positive numbers")
    bad = [c for c in cfg.sizes.counts if c < 1]
    if bad:
        raise UserError(f"bad value for sizes.counts: {cfg.sizes.counts!r}; expected positive "
                        "whole numbers")
    return cfg


def apply_overrides(cfg: Config, overrides: Dict[str, Any]) -> Config:
    """Set ``section.field`` values (converted to the field's declared type), then validate."""
    for key, value in overrides.items():
        set_value(cfg, key, value)
    return validate(cfg)


def load_config(profile: str = "quick", overrides: Optional[Dict[str, Any]] = None) -> Config:
    """The config of a profile with ``overrides`` applied.

    Examples:
        >>> load_config("paper").finetune.augment_total
        600
        >>> load_config("quick", {"finetune.epochs": "3"}).finetune.epochs
        3
    """
    if profile not in PROFILES:
        raise UserError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}")
    cfg = Config(profile=profile)
    apply_overrides(cfg, PROFILES[profile])
    if overrides:
        apply_overrides(cfg, overrides)
    return cfg


def config_from_dict(d: Dict[str, Any]) -> Config:
    """A config from its ``to_dict()`` form (e.g. ``config.json`` of a results folder).

    Unknown sections or keys are errors (a config written by another version is not
    silently half-read); values are converted to the declared types and validated.
    """
    if not isinstance(d, dict):
        raise UserError(f"a config must be a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - set(SECTIONS) - {"profile"})
    if unknown:
        raise UserError(f"unknown config section(s) {unknown}; expected profile and "
                        f"{', '.join(SECTIONS)}")
    cfg = Config(profile=str(d.get("profile", "paper")))
    for section in SECTIONS:
        values = d.get(section, {})
        if not isinstance(values, dict):
            raise UserError(f"config section {section!r} must be an object, got {values!r}")
        for k, v in values.items():
            set_value(cfg, f"{section}.{k}", v)
    return validate(cfg)


def parse_set(items) -> Dict[str, str]:
    """``["finetune.epochs=3", ...]`` -> dict; errors name the bad item."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects KEY=VALUE, e.g. finetune.epochs=3; got {item!r}")
        out[key.strip()] = value.strip()
    return out
