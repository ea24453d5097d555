"""Configuration: typed sections (pydantic models) and five shipped profiles.

* ``smoke`` - tiny (32 x 32, base 4), for tests and a first look; minutes on a CPU.
* ``quick`` - the default: a CPU-sized version of the paper that still covers
  both targets, all 9 + 9 block plans, contracting / expanding, both baselines
  and 3 folds.
* ``faithful`` - the quick profile at 128 x 128 (speckle exists at this scale) with
  the plans the findings rest on (``faithful`` plan set): hours on a CPU.
* ``shift`` - which blocks win under which domain shift: the quick profile's sizes,
  pretraining on the built-in breast ultrasound, one target per kind of shift
  (``sim_bus?shift=KIND``), the ``shift`` plan set.
* ``paper`` - the paper's settings (docs/paper.md A and D): 256 x 256, base 64, 40
  pretraining epochs on 10,000 images with 10 % validation, 600 augmented
  training images per fold, 20 fine-tuning epochs, 5 folds, Adam 1e-4, binary
  cross-entropy, batch 2. Meant for a GPU.

Any field can be overridden: ``--set finetune.epochs=10`` on the command line or
``load_config("quick", {"finetune.epochs": 10})``.

Each field declares its type, its allowed values (``Literal``) and bounds (``Field(gt=0)``)
where it is defined; pydantic (v2) converts a ``--set`` string or a JSON value to that type
and checks it on every assignment, and refuses unknown keys. Pydantic was chosen over cattrs
for that: validation on assignment, constraints on the field, and errors that say which
value broke which rule, which :func:`set_value` words as ``KEY: ...`` messages.
"""

from __future__ import annotations

import copy
import difflib
import json
from typing import Annotated, Any, Dict, List, Literal, NamedTuple, Optional, Tuple, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from .exitcodes import UserError

#: the networks the package builds itself (a plan may name one: ``xunet/all``)
MODEL_KINDS = ("unet", "xunet", "vunet")
#: ``model.kind=encoder:NAME``: a U-Net decoder on this ``keras.applications`` backbone
ENCODER_NAMES = ("resnet50", "efficientnetb0", "mobilenetv2", "vgg16", "densenet121",
                 "convnext_tiny")
#: ``finetune.batchnorm``: the BatchNorm layers of the blocks a plan trains
BATCHNORM_MODES = ("auto", "train", "frozen")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class TrainerSpec(NamedTuple):
    """One trainer of :mod:`keras_unet_ft.trainers`, as the config and the plan kinds know it
    (the class itself, with the same ``name``, lives in ``keras_unet_ft/trainers/``).

    Attributes:
        summary: one line for the docs.
        study: ``study.trainer`` may name it (``multiworker``: ``--distribute multiworker``
            picks it).
        per_variable: it trains per variable (masks, per-layer rates, per-epoch layer sets),
            so it can train every plan kind, and holds its state, so ``advise`` goes on from a
            saved state with it (the :class:`~keras_unet_ft.trainers.base.Resumable`
            protocol).
    """

    summary: str
    study: bool = True
    per_variable: bool = False


#: every trainer, by name: the one place a trainer is named (``plans.TRAINERS``,
#: ``trainers.BUILDERS``, ``study.trainer``'s choices and the docs derive from it)
TRAINER_SPECS: Dict[str, TrainerSpec] = {
    "selective": TrainerSpec("one traced train step per set of trainable layers (the default)",
                             per_variable=True),
    "masked": TrainerSpec("one traced train step per fold, a 0/1 gradient mask per variable",
                          per_variable=True),
    "keras": TrainerSpec("trainable flags + model.fit: fp16 loss scaling, tf.distribute, the "
                         "JAX / PyTorch backends"),
    "multiworker": TrainerSpec("data-parallel over TF_CONFIG's workers (--distribute "
                               "multiworker)", study=False),
}
#: ``study.trainer``: ``auto`` or a trainer the study may name
TRAINERS = ("auto",) + tuple(n for n, s in TRAINER_SPECS.items() if s.study)
SAVE_WEIGHTS = ("none", "figures", "all")
LOSSES = ("bce", "dice", "bce+dice")
#: ``unet-ft export --format``
EXPORT_FORMATS = ("savedmodel", "tflite")
#: probability above which ``unet-ft predict`` marks a pixel foreground
THRESHOLD = 0.5
SECTIONS = ("model", "data", "pretrain", "finetune", "study", "sizes")
#: seeds are 0 <= seed < MAX_SEED: NumPy's legacy seeding, which Keras' seeding calls, takes
#: no more than 2**32 - 1, and the seeds derived from ``study.seed`` (+ fold, + 7919 x repeat,
#: + 1000 x advise's rung, + stage) must stay below that too
MAX_SEED = 2 ** 31


# -- what a ``--set`` string or a JSON value becomes -----------------------------------
def _none_word(value):
    """``none``, ``null`` or an empty string mean None (an optional field)."""
    return (None if isinstance(value, str) and value.strip().lower() in ("none", "null", "")
            else value)


def _comma_list(value):
    """``"1e-5,5e-6"`` -> ``["1e-5", "5e-6"]`` (the items are then converted)."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _bool_word(value):
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, bool):
        return value
    raise ValueError("boolean")   # worded by set_value: "expected a boolean (true/false)"


def _whole(value):
    """Whole numbers only: no booleans, no fractions (pydantic's lax mode takes both)."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError("whole")
    return value.strip() if isinstance(value, str) else value


def _number(value):
    if isinstance(value, bool):
        raise ValueError("number")
    return value.strip() if isinstance(value, str) else value


def _text(value):
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("string")
    return str(value)


def _model_kind(value):
    """``unet``, ``xunet``, ``vunet``, ``file:PATH`` (made absolute) or ``encoder:NAME``."""
    import os

    text = _text(value).strip()
    if text in MODEL_KINDS:
        return text
    head, sep, rest = text.partition(":")
    rest = rest.strip()
    if sep and head == "file" and rest:
        return "file:" + os.path.abspath(os.path.expanduser(rest))
    if sep and head == "encoder":
        name = rest.lower().replace("-", "_")
        if name in ENCODER_NAMES:
            return "encoder:" + name
        near = difflib.get_close_matches(name, ENCODER_NAMES, n=1)
        hint = f"did you mean encoder:{near[0]}? " if near else ""
        raise ValueError(f"unknown encoder {rest!r}; {hint}expected one of "
                         f"{', '.join(ENCODER_NAMES)}")
    raise ValueError(f"expected one of {', '.join(MODEL_KINDS)}, file:PATH (a .keras model) "
                     f"or encoder:NAME ({', '.join(ENCODER_NAMES)})")


def model_family(kind: str) -> str:
    """``builtin`` (unet, xunet, vunet), ``file`` or ``encoder``."""
    return kind.partition(":")[0] if ":" in kind else "builtin"


def pretrained_by_package(mcfg) -> bool:
    """Whether the package pretrains this network on ``data.pretrain`` (salient objects):
    the paper's U-Net and X-Unet, and ``encoder:NAME`` with ``model.pretrain_on_salient``.
    A ``file:`` network *is* the pretrained net; V-Unet starts from its encoder's weights."""
    family = model_family(mcfg.kind)
    if family == "file" or mcfg.kind == "vunet":
        return False
    return bool(mcfg.pretrain_on_salient) if family == "encoder" else True


Int = Annotated[int, BeforeValidator(_whole)]
Float = Annotated[float, BeforeValidator(_number)]
Bool = Annotated[bool, BeforeValidator(_bool_word)]
Str = Annotated[str, BeforeValidator(_text)]
PositiveInt = Annotated[Int, Field(gt=0)]
PositiveFloat = Annotated[Float, Field(gt=0)]
OptionalInt = Annotated[Optional[Int], BeforeValidator(_none_word)]
OptionalStr = Annotated[Optional[Str], BeforeValidator(_none_word)]
StrList = Annotated[List[Str], BeforeValidator(_comma_list)]


class Section(BaseModel):
    """A config section: unknown keys refused, every assignment converted and checked."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False,
                              validate_default=True)


ModelKind = Annotated[str, BeforeValidator(_model_kind)]


class ModelConfig(Section):
    # unet | xunet | vunet | file:PATH (your own .keras network: it is the pretrained net)
    # | encoder:NAME (a U-Net decoder on a keras.applications backbone, ENCODER_NAMES)
    kind: ModelKind = "unet"
    size: PositiveInt = 256
    base_filters: PositiveInt = 64     # unet / xunet; encoder:NAME: the decoder's first level
    depth: PositiveInt = 4
    dropout: Float = 0.5
    # vunet and encoder:NAME: "imagenet" (the no-top file in Keras' cache; nothing is
    # downloaded), PATH to a weights file, or None (random: not transfer learning)
    encoder_weights: OptionalStr = "imagenet"
    # encoder:NAME: pretrain the whole network on data.pretrain (salient objects, as the
    # paper's U-Net), starting from encoder_weights; false = encoder weights + a seeded
    # random decoder, no pretraining (as V-Unet)
    pretrain_on_salient: Bool = True


class DataConfig(Section):
    pretrain: Str = "synth_salient"          # NAME or NAME:ROOT
    pretrain_n: OptionalInt = 10000          # built-in data: number of images
    targets: StrList = Field(default_factory=lambda: ["sim_bus", "synth_cxr"])
    target_n: OptionalInt = None             # built-in targets: None = the paper's count
    cache_dir: OptionalStr = None
    cache: Bool = True                       # read / write the dataset cache (--no-cache)


class PretrainConfig(Section):
    epochs: PositiveInt = 40
    batch_size: PositiveInt = 2
    learning_rate: PositiveFloat = 1e-4
    val_fraction: Annotated[Float, Field(gt=0, lt=1)] = 0.1


class FinetuneConfig(Section):
    epochs: PositiveInt = 20
    batch_size: PositiveInt = 2
    learning_rate: PositiveFloat = 1e-4
    augment_total: PositiveInt = 600      # training images per fold, originals included
    folds: Annotated[Int, Field(ge=2)] = 5
    rotation: Float = 0.2
    shift: Float = 0.05
    shear: Float = 0.05
    zoom: Float = 0.05
    hflip: Bool = True
    # one learning rate per stage of a staged plan (``A>B``); empty = learning_rate for all.
    # Cheng & Lam's V-Unet: 1e-5 (decoder only) then 5e-6 (all layers).
    stage_learning_rates: Annotated[List[PositiveFloat], BeforeValidator(_comma_list)] = Field(
        default_factory=list)
    # the loss: bce (the paper's binary cross-entropy), dice (soft Dice) or bce+dice
    loss: Literal["bce", "dice", "bce+dice"] = "bce"
    # a linear learning-rate warm-up: epoch e <= W of each stage at rate * e / (W + 1)
    # (nnU-Net warms its fine-tuning up); 0 = none
    warmup_epochs: Annotated[Int, Field(ge=0)] = 0
    # the BatchNorm layers of the blocks a plan trains: auto (what Keras does for a trainable
    # layer: batch statistics, moving statistics updated), train (the same, said explicitly)
    # or frozen (inference mode, moving statistics and gamma/beta kept). A block a plan
    # freezes always runs its BatchNorm in inference mode, its statistics kept bit for bit.
    batchnorm: Literal["auto", "train", "frozen"] = "auto"


class StudyConfig(Section):
    plans: Str = "paper"          # paper | tuffc | cheng | comma-separated plan strings
    baselines: Bool = True        # add `none` (pretrained, not tuned) and `scratch`
    seed: Annotated[Int, Field(ge=0, lt=MAX_SEED)] = 0
    # repeats of the whole cross-validation, each with its own folds, augmentation and
    # initialisation (seed + REPEAT_SEED_STEP * r); intervals resample within folds and repeats
    seeds: PositiveInt = 1
    # nested selection: every plan also trained on an inner split of each outer training
    # fold; the plan best on the inner validation images is scored on the outer test fold
    nested: Bool = False
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    deterministic: Bool = True    # tf.config.experimental.enable_op_determinism
    save_predictions: Bool = True
    trainer: Literal[TRAINERS] = "auto"   # see TRAINER_SPECS, keras_unet_ft.trainers
    am_steps: PositiveInt = 100   # activation-maximization steps for Fig. 5
    # fine-tuned weights kept as runs/.../model.keras: none | figures (the runs the
    # figures need: all layers, fold 0, per target) | all
    save_weights: Literal["none", "figures", "all"] = "figures"
    # TensorBoard event files of pretraining and every run under this folder (--tensorboard)
    tensorboard: OptionalStr = None


class SizesConfig(Section):
    """Cheng & Lam's dataset-size study: Dice vs number of training images, +- augmentation.

    For each count N a seeded, nested subset of N images of each training fold is
    used as it is (``no augmentation``) or augmented to ``augment_factor * N``
    images (``augmentation``); the epochs are the fine-tuning epochs (Cheng kept
    the epochs, their extra frames being flips). Counts above a fold's training
    images are skipped and listed in the report.
    """
    run: Literal["auto", "yes", "no"] = "auto"   # auto (with the cheng plan set) | yes | no
    counts: Annotated[List[PositiveInt], BeforeValidator(_comma_list)] = Field(
        default_factory=lambda: [50, 100, 200, 400])
    plans: Str = "xunet/all,vunet/expanding:blocks>all"
    augment_factor: PositiveInt = 2


class Config(BaseModel):
    """The whole config: a profile name and six sections."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    profile: str = "paper"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    study: StudyConfig = Field(default_factory=StudyConfig)
    sizes: SizesConfig = Field(default_factory=SizesConfig)

    def to_dict(self) -> Dict[str, Any]:
        return self.model_dump()

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)


def section_key(section: Section) -> Tuple:
    """A section's values as a hashable tuple (a cache key)."""
    return tuple((k, tuple(v) if isinstance(v, list) else v)
                 for k, v in section.model_dump().items())


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


#: ``sim_bus?shift=KIND`` or ``sim_bus?shift=KIND:STRENGTH``: one thing changed relative to the
#: reference set (``none``), the same seed giving the same breasts, lesions and draws otherwise
#: (made in ``data.synthetic.ultrasound``). Input-level shifts change how the image looks, the
#: output-level one what the mask marks. ``{kind: (level, words, amount at strength s)}``; the
#: words hold the amount as ``{x}``; the ``shift`` profile has one target per kind at strength 1.
SHIFT_DIAL = {
    "none": ("reference", "the reference set", None),
    "speckle": ("input", "coarser speckle: a pulse and a beam {x:g} times as wide",
                lambda s: 1 + 2 * s),
    "gain": ("input", "images darker with depth: {x:g} dB more attenuation left uncorrected "
                      "at the deepest row", lambda s: 25 * s),
    "blur": ("input", "a blurrier display: a Gaussian of {x:g} px (at 256 px) over the image",
             lambda s: 2.5 * s),
    "contrast": ("input", "lower contrast: a display dynamic range {x:g} dB wider",
                 lambda s: 30 * s),
    "rim": ("output", "the mask marks the lesion with its surrounding {x:g} mm (rim, halo)",
            lambda s: 1.5 * s),
}
#: the largest strength of the dial (``speckle:10`` widens the pulse and beam 21 times)
MAX_SHIFT_STRENGTH = 10.0


def shift_amount(kind: str, strength: float = 1.0) -> float:
    """The amount of shift ``kind`` at ``strength`` in the unit its words give (speckle: how
    many times as wide; gain, contrast: dB; blur: px at 256 px; rim: mm); 0 for ``none``."""
    fn = SHIFT_DIAL[kind][2]
    return 0.0 if fn is None else float(fn(strength))


def parse_shift(value) -> Tuple[str, float]:
    """``sim_bus``'s ``shift`` option as ``(kind, strength)``.

    Examples:
        >>> parse_shift("speckle"), parse_shift("blur:2"), parse_shift(None)
        (('speckle', 1.0), ('blur', 2.0), ('none', 1.0))
        >>> parse_shift("blur:-1")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        keras_unet_ft.exitcodes.UserError: sim_bus shift='blur:-1': the strength ... got '-1'
    """
    text = "none" if value is None else str(value).strip()
    kind, sep, strength = text.partition(":")
    if kind not in SHIFT_DIAL:
        close = difflib.get_close_matches(kind, list(SHIFT_DIAL), n=1)
        raise UserError(f"sim_bus shift={value!r}; expected KIND or KIND:STRENGTH with KIND "
                        f"one of {', '.join(SHIFT_DIAL)} (none = the reference set)"
                        + (f"; did you mean {close[0]!r}?" if close else ""))
    if not sep:
        return kind, 1.0
    if kind == "none":
        raise UserError(f"sim_bus shift={value!r}: the reference set has no strength; "
                        "give shift=none")
    try:
        s = float(strength)
    except ValueError:
        s = float("nan")
    if not 0 < s <= MAX_SHIFT_STRENGTH:   # also refuses nan
        raise UserError(f"sim_bus shift={value!r}: the strength after ':' must be a number in "
                        f"(0, {MAX_SHIFT_STRENGTH:g}], got {strength!r}")
    return kind, s


def describe_shift(value) -> Tuple[str, str]:
    """``(level, words)`` of a ``shift`` option, the amount at its strength."""
    kind, s = parse_shift(value)
    level, words, _ = SHIFT_DIAL[kind]
    return level, words.format(x=shift_amount(kind, s))


#: ``{kind: (level, words at strength 1)}``
SHIFTS = {k: describe_shift(k) for k in SHIFT_DIAL}
SHIFT_KINDS = tuple(SHIFTS)

#: profiles whose nets are too small to learn: their reports and advice check the pipeline,
#: nothing more (REPORT.md and ADVICE.md say so at their top)
TOO_SMALL_TO_LEARN = ("smoke",)

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
    "shift": {
        # which blocks win under which domain shift: the quick profile's sizes, pretraining on
        # the reference breast ultrasound (another seed than the targets'), one target per
        # kind of shift (the same breasts, one thing changed), the shift plan set
        "model.size": 64, "model.base_filters": 8,
        "data.pretrain": "sim_bus?seed=1000", "data.pretrain_n": 2400,
        "data.targets": ",".join(f"sim_bus?shift={k}&name=shift_{k}" for k in SHIFT_KINDS),
        "pretrain.epochs": 8, "pretrain.batch_size": 8, "pretrain.learning_rate": 3e-4,
        "finetune.epochs": 12, "finetune.batch_size": 8, "finetune.augment_total": 200,
        "finetune.folds": 3, "finetune.learning_rate": 3e-4,
        "study.plans": "shift", "study.baselines": False,
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


# -- validation: declared on the fields above; here, worded ------------------------
def _choices(section: type, name: str) -> Tuple[str, ...]:
    return tuple(get_args(section.model_fields[name].annotation))


#: allowed values of the fields that take one of a few words (the CLI uses these too)
CHOICES: Dict[str, Tuple[str, ...]] = {
    f"{sec}.{name}": _choices(cls, name)
    for sec, cls in (("model", ModelConfig), ("study", StudyConfig),
                     ("finetune", FinetuneConfig), ("sizes", SizesConfig))
    for name, field in cls.model_fields.items()
    if getattr(field.annotation, "__origin__", None) is Literal
}

_TYPE_WORDS = {"int": "a whole number", "float": "a number", "bool": "a boolean (true/false)",
               "finite": "a finite number", "str": "a string", "list": "a comma-separated list"}


def _did_you_mean(word: str, choices, prefix: str = "") -> str:
    """``" (did you mean finetune.epochs?)"`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(prefix + c for c in close)}?)" if close else ""


def _field(cfg: "Config", key: str):
    section, _, name = key.partition(".")
    target = getattr(cfg, section, None) if section in SECTIONS else None
    if not name or target is None:
        every = [f"{s}.{n}" for s in SECTIONS for n in type(getattr(cfg, s)).model_fields]
        raise UserError(f"unknown config key {key!r}{_did_you_mean(key, every)}; keys look "
                        f"like 'finetune.epochs' (sections: {', '.join(SECTIONS)})")
    fields = type(target).model_fields
    if name not in fields:
        raise UserError(f"unknown config key {key!r}"
                        f"{_did_you_mean(name, list(fields), section + '.')}; {section} has: "
                        f"{', '.join(fields)}")
    return target, name


def _field_info(key: str):
    section, _, name = key.partition(".")
    return type(getattr(Config(), section)).model_fields[name]


def _bounds(key: str) -> Tuple[str, bool]:
    """``("> 0", True)``: a field's bounds in words, and whether it holds whole numbers (for a
    list: its items')."""
    info = _field_info(key)
    text = repr(info.annotation) + repr(info.metadata)
    limits = {}

    def collect(obj, depth=0):
        for attr in ("gt", "ge", "lt", "le"):
            if getattr(obj, attr, None) is not None:
                limits[attr] = getattr(obj, attr)
        if depth < 4:
            for inner in (list(getattr(obj, "metadata", None) or [])
                          + list(getattr(obj, "__metadata__", None) or [])
                          + list(get_args(obj) if not hasattr(obj, "metadata") else [])):
                collect(inner, depth + 1)

    collect(info)
    collect(info.annotation)
    words = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    shown = {a: str(v) if isinstance(v, int) else f"{v:g}" for a, v in limits.items()}
    if "gt" in limits and "lt" in limits:
        bound = f"in ({shown['gt']}, {shown['lt']})"
    else:
        bound = " and ".join(f"{words[a]} {shown[a]}" for a in ("gt", "ge", "lt", "le")
                             if a in limits)
    return bound, "int" in text


def _as_number(value, whole: bool):
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return int(number) if whole and number.is_integer() else number


def _worded(key: str, value, error: ValidationError) -> str:
    """One sentence for pydantic's first error: the key, the bad value, what is expected."""
    e = error.errors()[0]
    kind, got = e["type"], e.get("input", value)
    if kind == "literal_error":
        return f"bad value for {key}: {got!r}; expected one of {', '.join(CHOICES.get(key, ()))}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound, whole = _bounds(key)
        if any(isinstance(p, int) for p in e["loc"]):   # an item of a list
            items = _comma_list(value) if isinstance(value, str) else list(value)
            shown = [_as_number(v, whole) for v in items]
            what = "whole numbers" if whole else "numbers"
            return (f"bad value for {key}: {shown!r}; expected positive {what}"
                    if bound == "> 0" else f"bad value for {key}: {shown!r}; expected {what} {bound}")
        return f"bad value for {key}: {_as_number(got, whole)!r}; expected a number {bound}"
    if kind == "finite_number":
        return f"{key}: expected {_TYPE_WORDS['finite']}, got {value!r}"
    words = str(e.get("msg", "")).removeprefix("Value error, ")
    for name, text in (("boolean", "bool"), ("whole", "int"), ("integer", "int"),
                       ("int", "int"), ("number", "float"), ("float", "float"),
                       ("string", "str"), ("list", "list")):
        if name in words.lower() or name in kind:
            return f"{key}: expected {_TYPE_WORDS[text]}, got {got!r}"
    return f"bad value for {key}: {got!r}; {words}"


def set_value(cfg: "Config", key: str, value) -> None:
    """Set ``section.field`` from a string or JSON value: converted to the declared type and
    checked against its declared values and bounds; an error names the key and the value."""
    target, name = _field(cfg, key)
    try:
        setattr(target, name, value)
    except ValidationError as e:
        raise UserError(_worded(key, value, e)) from None


def validate(cfg: "Config") -> "Config":
    """Check every field again (each assignment is checked already; this catches a section
    replaced wholesale), then the fields that bound each other (:func:`check_together`);
    errors name the key and repeat the bad value."""
    for section in SECTIONS:
        for name, value in getattr(cfg, section).model_dump().items():
            set_value(cfg, f"{section}.{name}", value)
    check_together(cfg)
    return cfg


def check_together(cfg: "Config") -> None:
    """The rules between fields: the warm-up ends before the epochs of a stage do (a longer
    one trains every epoch at a fraction of ``finetune.learning_rate``).

    Examples:
        >>> load_config("smoke", {"finetune.warmup_epochs": "5"})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        keras_unet_ft.exitcodes.UserError: finetune.warmup_epochs=5 must be below ...epochs=2...
    """
    ft = cfg.finetune
    if ft.warmup_epochs and ft.warmup_epochs >= ft.epochs:
        raise UserError(f"finetune.warmup_epochs={ft.warmup_epochs} must be below "
                        f"finetune.epochs={ft.epochs}: a warm-up that long trains every epoch "
                        "at a fraction of finetune.learning_rate")


def apply_overrides(cfg: Config, overrides: Dict[str, Any]) -> Config:
    """Set ``section.field`` values (converted to the field's declared type), then validate."""
    for key, value in overrides.items():
        set_value(cfg, key, value)
    return validate(cfg)


def check_profile(profile: str) -> None:
    """An unknown profile is an error naming the closest and every profile.

    Examples:
        >>> check_profile("quik")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        keras_unet_ft.exitcodes.UserError: unknown profile 'quik'; did you mean 'quick'? (profiles: ...)
    """
    if profile in PROFILES:
        return
    close = difflib.get_close_matches(str(profile), list(PROFILES), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UserError(f"unknown profile {profile!r}{hint} (profiles: {', '.join(PROFILES)})")


def sizes_enabled(cfg: Config) -> bool:
    """Whether the dataset-size study runs (``sizes.run``: auto = with the ``cheng`` plans)."""
    if cfg.sizes.run == "auto":
        return cfg.study.plans == "cheng"
    return cfg.sizes.run == "yes"


def load_config(profile: str = "quick", overrides: Optional[Dict[str, Any]] = None) -> Config:
    """The config of a profile with ``overrides`` applied.

    Examples:
        >>> load_config("paper").finetune.augment_total
        600
        >>> load_config("quick", {"finetune.epochs": "3"}).finetune.epochs
        3
    """
    check_profile(profile)
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
