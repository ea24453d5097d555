"""Configuration: small dataclasses and three shipped profiles.

* ``smoke`` - tiny (32 x 32, base 4), for tests and a first look; minutes on a CPU.
* ``quick`` - the default: a CPU-sized version of the paper that still covers
  both targets, all 9 + 9 block plans, contracting / expanding, both baselines
  and 3 folds.
* ``paper`` - the paper's settings (PAPER.md A and D): 256 x 256, base 64, 40
  pretraining epochs on 10,000 images with 10 % validation, 600 augmented
  training images per fold, 20 fine-tuning epochs, 5 folds, Adam 1e-4, binary
  cross-entropy, batch 2. Meant for a GPU.

Any field can be overridden: ``--set finetune.epochs=10`` on the command line or
``load_config("quick", {"finetune.epochs": 10})``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Optional


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


@dataclasses.dataclass
class StudyConfig:
    plans: str = "paper"          # paper | tuffc | cheng | comma-separated plan strings
    baselines: bool = True        # add `none` (pretrained, not tuned) and `scratch`
    seed: int = 0
    precision: str = "auto"       # auto | fp32 | bf16 | fp16
    deterministic: bool = True    # tf.config.experimental.enable_op_determinism
    save_predictions: bool = True
    trainer: str = "auto"         # auto | masked | keras (see study.FoldSession)
    am_steps: int = 100           # activation-maximization steps for Fig. 5


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


PROFILES: Dict[str, Dict[str, Any]] = {
    "paper": {},
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
    "smoke": {
        "model.size": 32, "model.base_filters": 4,
        "data.pretrain_n": 64, "data.target_n": 24,
        "pretrain.epochs": 2, "pretrain.batch_size": 8,
        "finetune.epochs": 2, "finetune.batch_size": 8, "finetune.augment_total": 32,
        "finetune.folds": 2, "study.plans": "smoke", "study.am_steps": 20,
        "sizes.counts": "4,8,12",
    },
}


def _number(text: str):
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def _coerce(current, value):
    if isinstance(value, str):
        if isinstance(current, bool):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"expected a boolean, got {value!r}")
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, list):
            return [_number(v.strip()) for v in value.split(",") if v.strip()]
        if current is None or (isinstance(current, str) and value.lower() in ("none", "null")):
            if value.lower() in ("none", "null"):
                return None
            for conv in (int, float):
                try:
                    return conv(value)
                except ValueError:
                    pass
            return None if value.lower() in ("none", "null", "") else value
    return value


def apply_overrides(cfg: Config, overrides: Dict[str, Any]) -> Config:
    """Set ``section.field`` values (strings are converted to the field's type)."""
    for key, value in overrides.items():
        section, _, field = key.partition(".")
        target = getattr(cfg, section, None)
        if not field or target is None or not dataclasses.is_dataclass(target):
            raise ValueError(f"unknown config key {key!r}; keys look like 'finetune.epochs' "
                             f"(sections: model, data, pretrain, finetune, study, sizes)")
        if field not in {f.name for f in dataclasses.fields(target)}:
            names = ", ".join(f.name for f in dataclasses.fields(target))
            raise ValueError(f"unknown config key {key!r}; {section} has: {names}")
        try:
            setattr(target, field, _coerce(getattr(target, field), value))
        except ValueError as e:
            raise ValueError(f"bad value for {key}: {e}") from None
    return cfg


def load_config(profile: str = "quick", overrides: Optional[Dict[str, Any]] = None) -> Config:
    """The config of a profile with ``overrides`` applied.

    Examples:
        >>> load_config("paper").finetune.augment_total
        600
        >>> load_config("quick", {"finetune.epochs": "3"}).finetune.epochs
        3
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}")
    cfg = Config(profile=profile)
    apply_overrides(cfg, PROFILES[profile])
    if overrides:
        apply_overrides(cfg, overrides)
    return cfg


def config_from_dict(d: Dict[str, Any]) -> Config:
    cfg = Config(profile=d.get("profile", "paper"))
    for section in ("model", "data", "pretrain", "finetune", "study", "sizes"):
        for k, v in d.get(section, {}).items():
            setattr(getattr(cfg, section), k, v)
    return cfg


def parse_set(items) -> Dict[str, str]:
    """``["finetune.epochs=3", ...]`` -> dict; errors name the bad item."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, e.g. finetune.epochs=3; got {item!r}")
        out[key.strip()] = value.strip()
    return out
