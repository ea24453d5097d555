"""Fine-tuning plans: the whole grammar of "which layers are trained", as data.

A plan is a small, serialisable value (:class:`Plan`) that resolves, on a given
block map, to the set of layers whose weights are trained; every other layer is
frozen. Plans print as strings and parse back (``str(Plan.parse(s)) == s``)::

    all | none | scratch | freeze_bottleneck
    contracting | expanding                 the paper's split: the contracting blocks and
                                            the bottleneck's first conv vs the rest (the
                                            paper's U-Net: conv 1-9 vs 10-24, docs/paper.md)
    contracting:blocks | expanding:blocks   split at block boundaries: contracting
                                            blocks + bottleneck vs the expanding blocks
                                            (= Cheng & Lam's "decoder only")
    shallow_to_deep:K[@scheme]              the K shallowest units trained
    deep_to_shallow:K[@scheme]              the K deepest units trained
    only_block:I[@scheme]                   unit I alone
    layers:REGEX                            layers whose name matches REGEX (re.search)
    bitfit                                  biases only (BitFit, Ben Zaken et al. 2022)
    llrd:GAMMA                              every layer, block k at lr * GAMMA^(N - k): layer-wise
                                            learning-rate decay from the deepest block (N) down
                                            (discriminative fine-tuning, Howard & Ruder 2018)
    gradual:top | gradual:bottom            gradual unfreezing: one more block per epoch, from
                                            the output end (top: the deepest block first, as
                                            ULMFiT) or from the input end (bottom)
    reinit:expanding | reinit:blocks-K..N   every layer, that part from fresh random weights
    autorgn                                 every layer, steps scaled by gradient/weight norms
    ssf                                     a learned scale and shift of every convolution's
                                            output, kernels frozen (Lian et al. 2022)
    lora:R                                  a rank-R update of every 3x3 kernel (Hu et al. 2022)
    MODEL/PLAN                              the plan on another network: xunet/all
    PLAN>PLAN[>...]                         stages trained one after the other, each with a
                                            fresh optimizer (V-Unet: expanding:blocks>all)

``scheme`` is ``path`` (default; units = the 2P+1 blocks) or ``level`` (units =
the P+1 resolution levels), see :mod:`keras_unet_ft.blocks`. The baselines are
plan kinds too: ``none`` (the pretrained net, not fine-tuned) and ``scratch``
(random initialisation, every layer trained).

Plan sets (:data:`PLAN_SETS`) are data: ``N`` stands for the number of units of
the model under the plan's scheme and ``MID`` for ``(N + 1) // 2``, so the sets
follow ``--set model.depth=3`` (7 blocks) instead of assuming 9. The answer to
"which layers does plan X train?" for every plan of a set is
func:`~keras_unet_ft.trainable.plan_matrix` (``unet-ft plans --matrix``; ``docs/plans.md``).

What each kind *means* is one row of :data:`KIND_SPECS` (:class:`KindSpec`): its syntax,
how it prints, how its argument is checked, which layers and variables it trains, at
which rates, per epoch, and which trainers can train it. Adding a kind is one row there
(docs/architecture.md). Code elsewhere asks a plan (``plan.is_method``,
``plan.from_pretrained``, ``plan.curve_k(...)``), never compares ``plan.kind``.

This module imports no Keras: reading results uses the grammar. The Keras side
(:func:`~keras_unet_ft.trainable.apply_plan`, parameter counts) is
:mod:`keras_unet_ft.trainable`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from .blocks import SCHEMES, check_scheme
from .config import MODEL_KINDS, TRAINER_SPECS
from .exitcodes import UserError

BASELINE_DOC = "the pretrained net, not fine-tuned"
DIRECTIONS = ("top", "bottom")
SPLITS = ("conv", "blocks")
#: every trainer of :mod:`keras_unet_ft.trainers` (the rows of ``config.TRAINER_SPECS``)
TRAINERS = tuple(TRAINER_SPECS)
#: the trainers that hold a per-variable mask, per-layer rates and per-epoch layer sets
PER_VARIABLE_TRAINERS = tuple(n for n, s in TRAINER_SPECS.items() if s.per_variable)


class PlanError(UserError):
    """A plan string or value that is not in the grammar (a bad input: exit 2)."""


# -- arguments: what follows ``KIND:`` -----------------------------------------------
@dataclasses.dataclass(frozen=True)
class ArgSpec:
    """The argument of a plan kind: which :class:`Plan` fields it fills, how it is read
    from the text after ``KIND:``, how it prints back, and how its values are checked."""

    fields: Tuple[str, ...]
    parse: Callable[[str, str, str], dict]   # (kind, argument, whole text) -> field values
    show: Callable[["Plan"], str]            # the argument's text ("" = the kind alone)
    check: Callable[["Plan"], None]          # raises PlanError on a bad value
    #: example arguments ``unet-ft plans --matrix`` shows for every kind taking it (``:1..N``
    #: expands to every unit); none for an argument that is the user's own (a regex, stages)
    examples: Tuple[str, ...] = ()


def _no_arg_parse(kind, arg, text):
    if arg:
        raise PlanError(f"plan {kind!r} takes no argument, got {text!r}")
    return {}


def _unit_parse(kind, arg, text):
    num, _, scheme = arg.partition("@")
    try:
        k = int(num)
    except ValueError:
        raise PlanError(f"bad plan {text!r}: expected {kind}:K or {kind}:K@SCHEME with K a "
                        f"positive integer and SCHEME in {SCHEMES}") from None
    return {"k": k, "scheme": scheme or "path"}


def _unit_check(p):
    if p.k is None or isinstance(p.k, bool) or int(p.k) != p.k or p.k < 1:
        raise PlanError(f"plan {p.kind!r} needs a positive integer k, got {p.k!r}")
    check_scheme(p.scheme)


def _split_check(p):
    if p.split not in SPLITS:
        raise PlanError(f"unknown split {p.split!r}; expected one of {SPLITS}")


def _pattern_check(p):
    if not p.pattern:
        raise PlanError("plan 'layers' needs a regular expression, e.g. 'layers:^enc'")
    try:
        re.compile(p.pattern)
    except re.error as e:
        raise PlanError(f"bad regular expression {p.pattern!r} in plan: {e}") from None


def _gamma_parse(kind, arg, text):
    try:
        return {"gamma": float(arg)}
    except ValueError:
        raise PlanError(f"bad plan {text!r}: expected llrd:GAMMA with a number "
                        "0 < GAMMA <= 1, e.g. llrd:0.5") from None


def _gamma_check(p):
    g = p.gamma
    if g is None or isinstance(g, bool) or not isinstance(g, (int, float)) or not 0 < g <= 1:
        raise PlanError(f"plan 'llrd' needs a factor 0 < GAMMA <= 1, e.g. llrd:0.5; got {g!r}")


def _direction_check(p):
    if p.direction not in DIRECTIONS:
        raise PlanError(f"plan 'gradual' needs a direction in {DIRECTIONS} "
                        f"(gradual:top = deepest block first), got {p.direction!r}")


def _stages_check(p):
    if len(p.stages) < 2:
        raise PlanError("a staged plan needs two or more stages, e.g. expanding:blocks>all")
    for st in p.stages:
        if not st.spec.stage or st.model is not None:
            raise PlanError(f"stage {str(st)!r}: a stage is a plain plan (no baseline, "
                            "llrd, gradual, model prefix or nested stages)")


NO_ARG = ArgSpec((), _no_arg_parse, lambda p: "", lambda p: None, examples=("",))
UNITS = ArgSpec(("k", "scheme"), _unit_parse,
                lambda p: f"{p.k}" + ("" if p.scheme == "path" else f"@{p.scheme}"), _unit_check,
                examples=(":1..N", ":1..N@level"))
SPLIT = ArgSpec(("split",), lambda kind, arg, text: {"split": arg or "conv"},
                lambda p: "" if p.split == "conv" else p.split, _split_check,
                examples=("", ":blocks"))
PATTERN = ArgSpec(("pattern",), lambda kind, arg, text: {"pattern": arg},
                  lambda p: p.pattern, _pattern_check)
GAMMA = ArgSpec(("gamma",), _gamma_parse, lambda p: f"{p.gamma:g}", _gamma_check,
                examples=(":0.5",))
DIRECTION = ArgSpec(("direction",), lambda kind, arg, text: {"direction": arg or None},
                    lambda p: p.direction, _direction_check, examples=(":top",))
STAGES = ArgSpec(("stages",), _no_arg_parse, lambda p: "", _stages_check)
_BLOCK_RANGE = re.compile(r"blocks-(\d+)\.\.(\d+)")


def _reset_check(p):
    m = _BLOCK_RANGE.fullmatch(p.reset or "")
    if p.reset != "expanding" and not (m and 1 <= int(m.group(1)) <= int(m.group(2))):
        raise PlanError(f"plan 'reinit' needs what to re-initialise: reinit:expanding (the "
                        f"decoder and head, nnU-Net's recipe) or reinit:blocks-K..N with "
                        f"1 <= K <= N, got {p.reset!r}")


RESET = ArgSpec(("reset",), lambda kind, arg, text: {"reset": arg or None},
                lambda p: p.reset, _reset_check, examples=(":expanding",))


def _rank_parse(kind, arg, text):
    try:
        return {"rank": int(arg)}
    except ValueError:
        raise PlanError(f"bad plan {text!r}: expected lora:R with R a positive integer rank, "
                        "e.g. lora:4") from None


def _rank_check(p):
    r = p.rank
    if r is None or isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise PlanError(f"plan 'lora' needs a positive integer rank, e.g. lora:4; got {r!r}")


RANK = ArgSpec(("rank",), _rank_parse, lambda p: str(p.rank), _rank_check, examples=(":4",))

#: the value of every argument field when a kind does not take it
_ARG_DEFAULTS = {"k": None, "scheme": "path", "split": "conv", "pattern": None, "gamma": None,
                 "direction": None, "stages": (), "reset": None, "rank": None}
_FIELD_WORDS = {"k": "k", "scheme": "depth scheme", "split": "split", "pattern": "pattern",
                "gamma": "GAMMA", "direction": "direction", "stages": "stages",
                "reset": "part to re-initialise", "rank": "rank"}


# -- which layers, variables, rates, per epoch ------------------------------------------
def _weighted(bm) -> List[str]:
    return [n for b in bm.blocks for n in b.weighted_layers]


def _every_layer(p, bm) -> FrozenSet[str]:
    return frozenset(_weighted(bm))


def _no_layer(p, bm) -> FrozenSet[str]:
    return frozenset()


def _biased_layers(p, bm) -> FrozenSet[str]:
    return frozenset(n for n in _weighted(bm)
                     if any(p.trains_variable(w.path) for w in bm.model.get_layer(n).weights))


def _all_but_bottleneck(p, bm) -> FrozenSet[str]:
    bott = {n for b in bm.blocks if b.part == "bottleneck" for n in b.weighted_layers}
    return frozenset(n for n in _weighted(bm) if n not in bott)


def _feeding_conv(layer, convs: set) -> Optional[str]:
    """The convolution (of ``convs``) whose output reaches ``layer`` through layers without
    convolutions (a BatchNormalization layer: the convolution it normalises), or None."""
    from .blocks import _parents

    seen, todo = set(), list(_parents(layer))
    while todo:
        op = todo.pop(0)
        if op.name in convs:
            return op.name
        if op.name not in seen:
            seen.add(op.name)
            todo += _parents(op)
    return None


def _split_layers(p, bm) -> FrozenSet[str]:
    if p.split == "conv":
        # the paper: conv 1..9 contracting at depth 4 = the convolutions of the contracting
        # blocks and the first one of the bottleneck; the same rule on any network
        convs = bm.conv_layers()
        contracting = {n for b in bm.blocks if b.part == "contracting" for n in b.weighted_layers}
        bott = [n for n in convs for b in bm.blocks if b.part == "bottleneck"
                and n in b.weighted_layers]
        contracting |= set(bott[:1])
        for n in _weighted(bm):   # a normalisation layer goes with the conv it follows
            if n not in convs and _feeding_conv(bm.model.get_layer(n), set(convs)) in contracting:
                contracting.add(n)
    else:
        contracting = {n for b in bm.blocks if b.part != "expanding" for n in b.weighted_layers}
    want = p.kind == "contracting"
    return frozenset(n for n in _weighted(bm) if (n in contracting) == want)


def _matching_layers(p, bm) -> FrozenSet[str]:
    weighted = _weighted(bm)
    chosen = frozenset(n for n in weighted if re.search(p.pattern, n))
    if not chosen:
        raise PlanError(f"plan {str(p)!r} matches no weighted layer of model {bm.model.name!r}; "
                        f"layer names look like {weighted[:3]}")
    return chosen


def _unit_layers(p, bm) -> FrozenSet[str]:
    units = bm.units(p.scheme)
    if p.k > units:
        raise PlanError(f"plan {str(p)!r}: k={p.k} but the model has only {units} units under "
                        f"the {p.scheme!r} scheme (valid k: 1..{units})")
    chosen = {"shallow_to_deep": range(1, p.k + 1),
              "deep_to_shallow": range(units - p.k + 1, units + 1),
              "only_block": [p.k]}[p.kind]
    return frozenset(n for b in bm.blocks_in_units(chosen, p.scheme) for n in b.weighted_layers)


def _stage_union(p, bm) -> FrozenSet[str]:
    out: FrozenSet[str] = frozenset()
    for st in p.stages:
        out = out | st.spec.layers(st, bm)
    return out


def _reset_layers(p, bm) -> FrozenSet[str]:
    """``reinit``: the layers that start from fresh random weights."""
    if p.reset == "expanding":
        return frozenset(n for b in bm.blocks if b.part == "expanding" for n in b.weighted_layers)
    lo, hi = (int(g) for g in _BLOCK_RANGE.fullmatch(p.reset).groups())
    if hi > len(bm.blocks):
        raise PlanError(f"plan {str(p)!r}: the model has {len(bm.blocks)} blocks "
                        f"(valid: blocks-K..N with N <= {len(bm.blocks)})")
    return frozenset(n for b in bm.blocks if lo <= b.index <= hi for n in b.weighted_layers)


def _every_variable(p, var_name: str) -> bool:
    return True


def _biases_only(p, var_name: str) -> bool:
    return var_name.rsplit("/", 1)[-1] == "bias"


def _decayed_rates(p, bm) -> Dict[str, float]:
    n = len(bm.blocks)
    return {name: float(p.gamma) ** (n - b.index) for b in bm.blocks
            for name in b.weighted_layers}


def _kernel_shape(bm, name: str) -> Tuple[int, ...]:
    """The shape of the layer's kernel; ``()`` for a layer without one (a normalisation)."""
    kernel = getattr(bm.model.get_layer(name), "kernel", None)
    return () if kernel is None else tuple(int(d) for d in kernel.shape)


def _conv_layers(p, bm) -> FrozenSet[str]:
    """``ssf``: every weighted layer (each is a convolution with a kernel and a bias)."""
    return frozenset(n for n in _weighted(bm) if len(_kernel_shape(bm, n)) == 4)


def _conv3x3_layers(p, bm) -> FrozenSet[str]:
    """``lora``: the 3x3 convolutions."""
    return frozenset(n for n in _weighted(bm) if _kernel_shape(bm, n)[:2] == (3, 3))


def _kernels_only(p, var_name: str) -> bool:
    return var_name.rsplit("/", 1)[-1] == "kernel"


def _ssf_params(p, kernel_shape) -> int:
    """A scale and a shift per output channel."""
    return 2 * int(kernel_shape[-1])


def _lora_params(p, kernel_shape) -> int:
    """``U`` (kh*kw*cin x R) and ``V`` (R x cout)."""
    kh, kw, cin, cout = (int(d) for d in kernel_shape)
    return int(p.rank) * (kh * kw * cin + cout)


def _gradual_layers(p, bm, epoch: int) -> FrozenSet[str]:
    n = len(bm.blocks)
    k = min(int(epoch), n)
    idx = range(n - k + 1, n + 1) if p.direction == "top" else range(1, k + 1)
    return frozenset(name for b in bm.blocks if b.index in idx for name in b.weighted_layers)


@dataclasses.dataclass(frozen=True)
class KindSpec:
    """Everything a plan kind means, in one row of :data:`KIND_SPECS`.

    Args:
        syntax: how the kind is written (``llrd:GAMMA``).
        summary: one line for ``docs/plans.md`` and error messages.
        arg: its argument (:class:`ArgSpec`).
        layers: ``(plan, block_map) -> frozenset`` of the weighted layers it trains.
        variables: ``(plan, variable name) -> bool``: which variables of those layers it trains.
        rates: ``(plan, block_map) -> {layer: learning-rate factor}``, or None (one rate).
        epoch_layers: ``(plan, block_map, epoch) -> frozenset``: the layers of an epoch when
            they change from epoch to epoch, or None.
        fresh_layers: ``(plan, block_map) -> frozenset`` of the layers that start from fresh
            random weights instead of the pretrained ones (``reinit``), or None.
        adaptive: each tensor's update scaled by its gradient-to-parameter norm ratio over
            the largest, recomputed every epoch (``autorgn``).
        reparam: the layers' kernels (and biases) are functions of frozen pretrained values
            and a few learned tensors (``ssf``, ``lora``), trained through the kernels'
            gradients and merged into them after every step
            (:mod:`keras_unet_ft.trainers.reparam`), or None.
        params: ``(plan, kernel shape) -> int``: the learned parameters of one trained layer
            when they are not its own weights (``reparam`` kinds), or None.
        rate_factor: the kind's learning rate as a multiple of ``finetune.learning_rate``
            (the parameter-efficient kinds learn at 10x, as their papers do).
        baseline: a comparison point (``none``, ``scratch``), never merged with another plan.
        pretrained: starts from the pretrained weights (``scratch``: random ones).
        stage: may be one stage of ``PLAN>PLAN``.
        trainers: the trainers that can train it (``study.trainer``).
        curve: one point of a block curve (Fig. 4): ``KIND:K``.
    """

    syntax: str
    summary: str
    arg: ArgSpec
    layers: Callable
    variables: Callable = _every_variable
    rates: Optional[Callable] = None
    epoch_layers: Optional[Callable] = None
    fresh_layers: Optional[Callable] = None
    adaptive: bool = False
    reparam: Optional[str] = None
    params: Optional[Callable] = None
    rate_factor: float = 1.0
    baseline: bool = False
    pretrained: bool = True
    stage: bool = True
    trainers: Tuple[str, ...] = TRAINERS
    curve: bool = False

    @property
    def every_variable(self) -> bool:
        """Whether every variable of a trained layer is trained (``bitfit``: biases only)."""
        return self.variables is _every_variable

    @property
    def method(self) -> bool:
        """A way to fine-tune beyond "these layers, from the pretrained weights, at one rate"
        (per variable, rate, epoch, a fresh start of some layers): compared with the nearest
        block plan, never merged with the block plan that trains the same layers."""
        return (not self.every_variable or self.rates is not None or self.adaptive
                or self.epoch_layers is not None or self.fresh_layers is not None
                or self.reparam is not None)


_UNIT_ROW = dict(arg=UNITS, layers=_unit_layers, curve=True)
#: every plan kind: adding one is one row here (and one row in tests/test_plans.py)
KIND_SPECS: Dict[str, KindSpec] = {
    "all": KindSpec("all", "every layer", NO_ARG, _every_layer),
    "none": KindSpec("none", BASELINE_DOC, NO_ARG, _no_layer, baseline=True, stage=False),
    "scratch": KindSpec("scratch", "random initialisation, every layer trained", NO_ARG,
                        _every_layer, baseline=True, pretrained=False, stage=False),
    "freeze_bottleneck": KindSpec("freeze_bottleneck", "every layer but the bottleneck's",
                                  NO_ARG, _all_but_bottleneck),
    "contracting": KindSpec("contracting[:blocks]", "the paper's contracting path (conv 1..2P+1)"
                            " or, with :blocks, the contracting blocks + bottleneck",
                            SPLIT, _split_layers),
    "expanding": KindSpec("expanding[:blocks]", "the rest of the net (:blocks = the expanding "
                          "blocks, Cheng & Lam's decoder only)", SPLIT, _split_layers),
    "shallow_to_deep": KindSpec("shallow_to_deep:K[@scheme]", "the K shallowest units",
                                **_UNIT_ROW),
    "deep_to_shallow": KindSpec("deep_to_shallow:K[@scheme]", "the K deepest units",
                                **_UNIT_ROW),
    "only_block": KindSpec("only_block:I[@scheme]", "unit I alone", arg=UNITS,
                           layers=_unit_layers),
    "layers": KindSpec("layers:REGEX", "layers whose name matches REGEX (re.search)", PATTERN,
                       _matching_layers),
    "bitfit": KindSpec("bitfit", "biases only (BitFit, Ben Zaken et al. 2022)", NO_ARG,
                       _biased_layers, variables=_biases_only, trainers=PER_VARIABLE_TRAINERS),
    "llrd": KindSpec("llrd:GAMMA", "every layer, block k at lr * GAMMA^(N - k) (layer-wise "
                     "learning-rate decay, Howard & Ruder 2018)", GAMMA, _every_layer,
                     rates=_decayed_rates, stage=False, trainers=PER_VARIABLE_TRAINERS),
    "gradual": KindSpec("gradual:DIRECTION", "one more block per epoch from the output end "
                        "(top) or the input end (bottom) (gradual unfreezing)", DIRECTION,
                        _every_layer, epoch_layers=_gradual_layers, stage=False,
                        trainers=PER_VARIABLE_TRAINERS),
    "reinit": KindSpec("reinit:PART", "every layer, PART (expanding or blocks-K..N) starting "
                       "from fresh random weights (reinit:expanding = nnU-Net's fine-tuning: "
                       "the encoder transferred, decoder and head new)", RESET, _every_layer,
                       fresh_layers=_reset_layers, stage=False),
    "autorgn": KindSpec("autorgn", "every layer, each tensor's step scaled by its gradient-to-"
                        "parameter norm ratio over the largest, recomputed every epoch "
                        "(Auto-RGN, surgical fine-tuning, Lee et al. 2023)", NO_ARG, _every_layer,
                        adaptive=True, stage=False, trainers=PER_VARIABLE_TRAINERS),
    "ssf": KindSpec("ssf", "a learned per-channel scale and shift of every convolution's output "
                    "(before its activation), kernels and biases frozen, at 10x the rate; "
                    "folded into the kernels and biases (SSF, Lian et al. 2022)", NO_ARG,
                    _conv_layers, reparam="ssf", params=_ssf_params, rate_factor=10.0,
                    stage=False, trainers=PER_VARIABLE_TRAINERS),
    "lora": KindSpec("lora:R", "a learned rank-R update U V of every 3x3 convolution's kernel "
                     "(reshaped kh*kw*cin x cout; V starts at 0), everything else frozen, at "
                     "10x the rate; merged into the kernels (LoRA, Hu et al. 2022)", RANK,
                     _conv3x3_layers, variables=_kernels_only, reparam="lora",
                     params=_lora_params, rate_factor=10.0, stage=False,
                     trainers=PER_VARIABLE_TRAINERS),
    "staged": KindSpec("PLAN>PLAN[>...]", "stages trained one after the other, each with a "
                       "fresh optimizer", STAGES, _stage_union, stage=False),
}
KINDS = tuple(KIND_SPECS)
BASELINES = tuple(k for k, s in KIND_SPECS.items() if s.baseline)
#: fine-tuning methods beyond freezing whole layers (per-variable, per-rate, per-epoch)
METHOD_KINDS = tuple(k for k, s in KIND_SPECS.items() if s.method)
#: the kinds whose ``KIND:K`` plans make the block curves
CURVE_KINDS = tuple(k for k, s in KIND_SPECS.items() if s.curve)

#: named plan sets; ``N`` = units of the scheme, ``MID`` = (N + 1) // 2, ``1..N`` = every K
PLAN_SETS: Dict[str, Tuple[str, ...]] = {
    # the paper (MICCAI 2019): contracting vs expanding, the two block curves of Fig. 4
    "paper": ("contracting", "expanding", "shallow_to_deep:1..N", "deep_to_shallow:1..N"),
    # the journal version (TUFFC 2020): the paper's set under both depth schemes
    "tuffc": ("contracting", "expanding", "shallow_to_deep:1..N", "deep_to_shallow:1..N",
              "shallow_to_deep:1..N@level", "deep_to_shallow:1..N@level"),
    # the plans the papers' findings rest on, at a few K (the `faithful` profile)
    "faithful": ("contracting", "expanding", "shallow_to_deep:1", "shallow_to_deep:3",
                 "shallow_to_deep:5", "shallow_to_deep:7", "deep_to_shallow:1",
                 "deep_to_shallow:3", "deep_to_shallow:5", "deep_to_shallow:7", "all"),
    # every figure's ingredients, few runs (tests, first look)
    "smoke": ("contracting", "expanding", "shallow_to_deep:1", "shallow_to_deep:MID",
              "shallow_to_deep:N", "deep_to_shallow:1", "deep_to_shallow:MID"),
    # Cheng & Lam: X-Unet all vs bottleneck frozen; V-Unet decoder first, then all
    "cheng": ("xunet/all", "xunet/freeze_bottleneck", "vunet/expanding:blocks>all"),
    # block freezing against the other ways to fine-tune (BitFit, LLRD, gradual unfreezing)
    "methods": ("contracting", "expanding", "shallow_to_deep:1", "deep_to_shallow:1",
                "shallow_to_deep:N", "bitfit", "llrd:0.5", "gradual:top", "gradual:bottom",
                "reinit:expanding", "autorgn", "ssf", "lora:4"),
    # the shift profile: the pretrained net, then shallow against deep at equal size
    "shift": ("none", "contracting", "expanding", "shallow_to_deep:1", "deep_to_shallow:1",
              "shallow_to_deep:MID", "deep_to_shallow:MID"),
}


@dataclasses.dataclass(frozen=True)
class Plan:
    """A fine-tuning plan: a kind of :data:`KIND_SPECS` and its argument.

    Args:
        kind: one of :data:`KINDS`.
        k: number of units (``shallow_to_deep``, ``deep_to_shallow``) or the unit
            index (``only_block``), 1-based.
        scheme: depth scheme for unit kinds, ``path`` or ``level``.
        split: ``conv`` (the paper's) or ``blocks`` for contracting/expanding.
        pattern: regular expression for ``layers``.
        model: the network the plan is for (``unet``, ``xunet``, ``vunet``); None =
            the study's model.
        stages: for ``staged``: the plans trained one after the other.
        gamma: for ``llrd``: the learning-rate factor per block of distance from
            the deepest block, ``0 < gamma <= 1``.
        direction: for ``gradual``: ``top`` (deepest block first) or ``bottom``.
        reset: for ``reinit``: ``expanding`` or ``blocks-K..N``, the part that starts from
            fresh random weights.
        rank: for ``lora``: the rank R of each kernel's learned update.

    Examples:
        >>> Plan.parse("shallow_to_deep:3@level").k
        3
        >>> str(Plan("deep_to_shallow", k=2))
        'deep_to_shallow:2'
        >>> p = Plan.parse("vunet/expanding:blocks>all")
        >>> p.model, [str(s) for s in p.steps]
        ('vunet', ['expanding:blocks', 'all'])
    """

    kind: str
    k: Optional[int] = None
    scheme: str = "path"
    split: str = "conv"
    pattern: Optional[str] = None
    model: Optional[str] = None
    stages: Tuple["Plan", ...] = ()
    gamma: Optional[float] = None
    direction: Optional[str] = None
    reset: Optional[str] = None
    rank: Optional[int] = None

    def __post_init__(self):
        if self.kind not in KIND_SPECS:
            raise PlanError(f"unknown plan kind {self.kind!r}; expected one of {KINDS}")
        if self.model is not None and self.model not in MODEL_KINDS:
            raise PlanError(f"unknown model {self.model!r} in plan; expected one of "
                            f"{MODEL_KINDS}")
        spec = self.spec
        for field, default in _ARG_DEFAULTS.items():
            if field not in spec.arg.fields and getattr(self, field) != default:
                raise PlanError(f"plan {self.kind!r} takes no {_FIELD_WORDS[field]}, got "
                                f"{getattr(self, field)!r}")
        spec.arg.check(self)

    # -- strings ---------------------------------------------------------------
    def __str__(self) -> str:
        prefix = f"{self.model}/" if self.model else ""
        if self.kind == "staged":
            return prefix + ">".join(str(s) for s in self.stages)
        arg = self.spec.arg.show(self)
        return prefix + (f"{self.kind}:{arg}" if arg else self.kind)

    @classmethod
    def parse(cls, text) -> "Plan":
        """Parse a plan string (see the module docstring); a ``Plan`` passes through."""
        if isinstance(text, Plan):
            return text
        if not isinstance(text, str) or not text.strip():
            raise PlanError(f"a plan must be a non-empty string, got {text!r}")
        text = text.strip()
        head, sep, rest = text.partition("/")
        model = None
        if sep and head in MODEL_KINDS:
            model, text = head, rest
        if ">" in text and not text.startswith("layers:"):
            parts = [p.strip() for p in text.split(">")]
            if any(not p for p in parts):
                raise PlanError(f"bad staged plan {text!r}: expected PLAN>PLAN, e.g. "
                                "expanding:blocks>all")
            return cls("staged", model=model, stages=tuple(cls._parse_one(p) for p in parts))
        return dataclasses.replace(cls._parse_one(text), model=model)

    @classmethod
    def _parse_one(cls, text: str) -> "Plan":
        kind, _, arg = text.partition(":")
        if kind in KIND_SPECS and kind != "staged":
            return cls(kind, **KIND_SPECS[kind].arg.parse(kind, arg, text))
        import difflib

        kinds = [k for k in KINDS if k != "staged"]
        close = difflib.get_close_matches(kind, kinds + list(PLAN_SETS), n=3, cutoff=0.6)
        raise PlanError(f"unknown plan {text!r}"
                        + (f"; did you mean {' or '.join(close)}?" if close else "")
                        + f" Plan kinds: {', '.join(kinds)} (optionally MODEL/PLAN or "
                        f"PLAN>PLAN); plan sets: {', '.join(PLAN_SETS)}")

    # -- what the kind says ------------------------------------------------------
    @property
    def spec(self) -> KindSpec:
        """The row of :data:`KIND_SPECS` of this plan's kind."""
        return KIND_SPECS[self.kind]

    @property
    def bare(self) -> "Plan":
        """The plan without its model prefix."""
        return dataclasses.replace(self, model=None)

    @property
    def steps(self) -> Tuple["Plan", ...]:
        """The stages trained one after the other (one for an unstaged plan)."""
        return self.stages if self.kind == "staged" else (self.bare,)

    @property
    def is_baseline(self) -> bool:
        return self.spec.baseline

    @property
    def is_method(self) -> bool:
        """A way to fine-tune beyond a set of trained layers (BitFit, LLRD, gradual
        unfreezing): compared with the nearest block plan, never merged with one."""
        return self.spec.method

    @property
    def is_block_plan(self) -> bool:
        """A set of trained layers on the study's model: no baseline, method, stages or
        model prefix."""
        return self.model is None and not (self.is_baseline or self.is_method
                                           or self.kind == "staged")

    @property
    def trains(self) -> bool:
        """Whether the plan trains at all (``none`` does not)."""
        return self.kind != "none"

    @property
    def from_pretrained(self) -> bool:
        """Whether training starts from the pretrained weights (``scratch`` does not)."""
        return self.spec.pretrained

    @property
    def trainers(self) -> Tuple[str, ...]:
        """The trainers (``study.trainer``) that can train every stage of the plan."""
        return tuple(t for t in TRAINERS if all(t in st.spec.trainers for st in self.steps))

    def fresh_layers(self, block_map) -> FrozenSet[str]:
        """The layers that start from fresh random weights, not the pretrained ones
        (``reinit``; empty for every other plan but ``scratch``, which starts all afresh)."""
        fn = self.spec.fresh_layers
        return fn(self, block_map) if fn is not None else frozenset()

    @property
    def adaptive(self) -> bool:
        """Whether each tensor's update is scaled by its relative gradient norm (autorgn)."""
        return any(st.spec.adaptive for st in self.steps)

    @property
    def reparam(self) -> Optional[str]:
        """``ssf`` or ``lora`` when the plan learns a few tensors beside frozen kernels
        (merged into them after every step), else None."""
        return self.spec.reparam

    def params_of_layer(self, kernel_shape, layer_params: int) -> int:
        """The parameters this plan learns in a trained layer of kernel ``kernel_shape``:
        the layer's own (``layer_params``, or its biases' for ``bitfit`` - counted by the
        caller) unless the kind learns other tensors (``ssf``: 2 per output channel;
        ``lora:R``: R (kh*kw*cin + cout)).

        Examples:
            >>> Plan.parse("lora:4").params_of_layer((3, 3, 8, 16), 1168)
            352
        """
        fn = self.spec.params
        return int(layer_params) if fn is None else int(fn(self, tuple(kernel_shape)))

    @property
    def layers_change(self) -> bool:
        """Whether the trained layers change from epoch to epoch (gradual unfreezing)."""
        return any(st.spec.epoch_layers is not None for st in self.steps)

    def curve_k(self, kind: str, scheme: str = "path") -> Optional[int]:
        """K when this plan is the point ``kind:K@scheme`` of a block curve (no model
        prefix), else None.

        Examples:
            >>> Plan.parse("deep_to_shallow:3@level").curve_k("deep_to_shallow", "level")
            3
            >>> Plan.parse("xunet/deep_to_shallow:3").curve_k("deep_to_shallow") is None
            True
        """
        if (self.spec.curve and self.kind == kind and self.model is None
                and self.scheme == scheme):
            return self.k
        return None

    def model_or(self, default: str) -> str:
        return self.model or default

    # -- resolution --------------------------------------------------------------
    def stage_layers(self, block_map) -> List[FrozenSet[str]]:
        """Trainable layers of every stage (see :meth:`trainable_layers`)."""
        return [st.spec.layers(st, block_map) for st in self.steps]

    def trainable_layers(self, block_map) -> FrozenSet[str]:
        """Names of the weighted layers this plan trains (all stages) on the mapped model.

        Args:
            block_map: a :class:`~keras_unet_ft.blocks.BlockMap` of the model.
        """
        return self.spec.layers(self, block_map)

    def trains_variable(self, var_name: str) -> bool:
        """Whether a variable of a trained layer is trained, by its name in the layer
        (``kernel``, ``bias``, ...): ``bitfit`` trains the biases only."""
        return self.spec.variables(self, var_name)

    def learning_rate_scales(self, block_map) -> Optional[Dict[str, float]]:
        """``llrd``: each weighted layer's learning-rate factor, ``GAMMA ** (N - k)`` for a
        layer of block ``k`` of ``N`` (path scheme; 1.0 for the deepest block); None for
        every other plan (one rate for all)."""
        return self.spec.rates(self, block_map) if self.spec.rates else None

    def epoch_layers(self, block_map, epoch: int) -> FrozenSet[str]:
        """``gradual``: the layers trained in epoch ``epoch`` (1-based): the ``epoch``
        deepest blocks (``top``) or shallowest blocks (``bottom``), all of them from
        epoch N on. Other plans: :meth:`trainable_layers` in every epoch."""
        if self.spec.epoch_layers is None:
            return self.trainable_layers(block_map)
        if int(epoch) < 1:
            raise ValueError(f"epochs count from 1, got {epoch!r}")
        return self.spec.epoch_layers(self, block_map, epoch)


def check_trainer(plans: Sequence, trainer: str, setting: Optional[str] = None) -> None:
    """Refuse, before any training, plans that ``trainer`` (a resolved ``study.trainer``)
    cannot train: every run of such a plan would fail, and a retry would fail again.

    Args:
        plans: plan strings (or :class:`Plan`).
        trainer: ``selective``, ``masked``, ``keras`` or ``multiworker``.
        setting: what chose the trainer, for the message (default ``study.trainer=TRAINER``).

    Examples:
        >>> check_trainer(["contracting", "autorgn"], "selective")
        >>> check_trainer(["contracting", "autorgn"], "keras")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        keras_unet_ft.plans.PlanError: the keras trainer (study.trainer=keras) cannot train \
the plan 'autorgn', which needs the selective or masked trainer: ...
    """
    needs: Dict[Tuple[str, ...], List[str]] = {}
    for p in plans:
        plan = Plan.parse(p)
        if trainer not in plan.trainers:
            needs.setdefault(plan.trainers, []).append(str(p))
    if not needs:
        return
    parts = []
    for can, names in needs.items():
        which = " or ".join(can) if can else "no"
        listed = ", ".join(repr(n) for n in names)
        parts.append(f"the plan {listed}, which needs the {which} trainer" if len(names) == 1
                     else f"the plans {listed}, which need the {which} trainer")
    n = sum(len(v) for v in needs.values())
    it = "it" if n == 1 else "them"
    other = next((can[0] for can in needs if can), None)
    fix = (f"train {it} without --distribute multiworker, or " if trainer == "multiworker"
           else f"set study.trainer={other}, or " if other else "")
    raise PlanError(f"the {trainer} trainer ({setting or f'study.trainer={trainer}'}) cannot "
                    f"train {'; '.join(parts)}: {fix}leave {it} out of the plans")


def all_layers_plan(units: int) -> str:
    """The block plan that trains every block (``shallow_to_deep:N``)."""
    return f"shallow_to_deep:{int(units)}"


# -- plan sets -------------------------------------------------------------------
def _expand(item: str, units: Mapping[str, int]) -> List[str]:
    scheme = "level" if item.endswith("@level") else "path"
    n = int(units.get(scheme, 0))
    m = re.search(r":(1\.\.N|N|MID)(@\w+)?$", item)
    if not m:
        return [item]
    if not n:
        raise ValueError(f"plan {item!r} needs the number of {scheme} units of the model")
    head, tail = item[:m.start(1)], item[m.end(1):]
    token = m.group(1)
    ks = range(1, n + 1) if token == "1..N" else [n] if token == "N" else [(n + 1) // 2]
    return [f"{head}{k}{tail}" for k in ks]


def _shorthand(items: List[str]) -> List[str]:
    """``shallow_to_deep:1,3,5`` (a comma list read item by item) -> ``shallow_to_deep:1``,
    ``shallow_to_deep:3``, ``shallow_to_deep:5``: a bare K (or ``K@SCHEME``) after a
    ``KIND:K`` plan of a unit kind takes that kind (and its model prefix)."""
    out: List[str] = []
    for item in items:
        if re.fullmatch(r"\d+(@\w+)?", item) and out:
            head, _, _ = out[-1].rpartition(":")
            if KIND_SPECS.get(head.split("/")[-1], KIND_SPECS["all"]).arg is UNITS:
                out.append(f"{head}:{item}")
                continue
        out.append(item)
    return out


def plan_set(name_or_list, units: Optional[Mapping[str, int]] = None) -> List[str]:
    """The plans of a named set (:data:`PLAN_SETS`) or of a comma-separated list / sequence.

    Args:
        name_or_list: ``paper``, ``tuffc``, ``smoke``, ``cheng``, ``"a,b,c"`` or a list.
        units: units per scheme of the study's model, e.g. ``{"path": 9, "level": 5}``
            (expands ``N``, ``MID`` and ``1..N``; the paper's U-Net when None).

    Examples:
        >>> plan_set("smoke", {"path": 7, "level": 4})[2:5]
        ['shallow_to_deep:1', 'shallow_to_deep:4', 'shallow_to_deep:7']
    """
    units = units or {"path": 9, "level": 5}
    if isinstance(name_or_list, (list, tuple)):
        items = [str(p).strip() for p in name_or_list]
    elif str(name_or_list) in PLAN_SETS:
        items = list(PLAN_SETS[str(name_or_list)])
    else:
        items = [p.strip() for p in str(name_or_list).split(",")]
    items = _shorthand([p for p in items if p])
    if not items:
        raise PlanError(f"no plans in {name_or_list!r}; give a plan set "
                         f"({', '.join(PLAN_SETS)}) or comma-separated plans")
    out = [p for item in items for p in _expand(item, units)]
    for p in out:
        Plan.parse(p)  # a bad plan fails here, before any training
    return out


def group_plans(plans: Sequence[str], block_maps: Mapping[str, object],
                default_model: str) -> List[Tuple[str, List[str], str]]:
    """Group plans that train the same layers: ``[(canonical, [aliases], model kind)]``.

    ``shallow_to_deep:9`` = ``deep_to_shallow:9`` = ``all`` on the paper's U-Net: the
    first one listed is trained and the others point to it. Baselines are never merged.

    Args:
        plans: plan strings (as given by the user or a plan set).
        block_maps: a block map per model kind used by the plans.
        default_model: the model kind of plans without prefix.
    """
    groups: Dict[tuple, list] = {}
    order = []
    for p in plans:
        plan = Plan.parse(p)
        kind = plan.model_or(default_model)
        if plan.is_baseline or plan.is_method:
            key, label = (kind, f"__{plan.bare}__"), str(plan) if plan.model else str(plan.bare)
        else:
            sets = tuple(layers if layers else frozenset({"__none__"})
                         for layers in plan.stage_layers(block_maps[kind]))
            key = (kind, sets)
            label = str(plan) if plan.model else str(plan.bare)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(label)
    return [(groups[k][0], groups[k][1:], k[0]) for k in order]
