"""Fine-tuning plans: which layers of a pretrained U-Net are trained.

A plan is a small, serialisable value (:class:`Plan`) that resolves, on a given
model, to the set of layers whose weights are trained; every other layer is
frozen. Plans print as strings and parse back::

    all | none | freeze_bottleneck
    contracting | expanding                 the paper's split: conv layers 1..2P+1
                                            vs the rest (PAPER.md A: conv 1-9 vs 10-24)
    contracting:blocks | expanding:blocks   split at block boundaries: contracting
                                            blocks + bottleneck vs the expanding blocks
                                            (= Cheng & Lam's "decoder only")
    shallow_to_deep:K[@scheme]              the K shallowest units trained
    deep_to_shallow:K[@scheme]              the K deepest units trained
    only_block:I[@scheme]                   unit I alone
    layers:REGEX                            layers whose name matches REGEX (re.search)

``scheme`` is ``path`` (default; units = the 2P+1 blocks) or ``level``
(units = the P+1 resolution levels), see :mod:`keras_unet_ft.blocks`.

Keras 3 reads ``trainable`` flags only when a model is compiled, so
:func:`apply_plan` always recompiles (it does not warn otherwise).
"""

from __future__ import annotations

import dataclasses
import re
from typing import FrozenSet, Optional, Tuple

import keras

from .blocks import SCHEMES, BlockMap, check_scheme

SIMPLE_KINDS = ("all", "none", "freeze_bottleneck")
SPLIT_KINDS = ("contracting", "expanding")
SPLITS = ("conv", "blocks")
UNIT_KINDS = ("shallow_to_deep", "deep_to_shallow", "only_block")
KINDS = SIMPLE_KINDS + SPLIT_KINDS + UNIT_KINDS + ("layers",)


@dataclasses.dataclass(frozen=True)
class Plan:
    """A fine-tuning plan.

    Args:
        kind: one of :data:`KINDS`.
        k: number of units (``shallow_to_deep``, ``deep_to_shallow``) or the unit
            index (``only_block``), 1-based.
        scheme: depth scheme for unit kinds, ``path`` or ``level``.
        split: ``conv`` (the paper's) or ``blocks`` for contracting/expanding.
        pattern: regular expression for ``layers``.

    Examples:
        >>> Plan.parse("shallow_to_deep:3@level")
        Plan(kind='shallow_to_deep', k=3, scheme='level', split='conv', pattern=None)
        >>> str(Plan("deep_to_shallow", k=2))
        'deep_to_shallow:2'
    """

    kind: str
    k: Optional[int] = None
    scheme: str = "path"
    split: str = "conv"
    pattern: Optional[str] = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown plan kind {self.kind!r}; expected one of {KINDS}")
        check_scheme(self.scheme)
        if self.kind in UNIT_KINDS:
            if self.k is None or int(self.k) != self.k or self.k < 1:
                raise ValueError(f"plan {self.kind!r} needs a positive integer k, got {self.k!r}")
        elif self.k is not None:
            raise ValueError(f"plan {self.kind!r} takes no k, got {self.k!r}")
        if self.kind not in UNIT_KINDS and self.scheme != "path":
            raise ValueError(f"plan {self.kind!r} takes no depth scheme, got {self.scheme!r}")
        if self.split not in SPLITS:
            raise ValueError(f"unknown split {self.split!r}; expected one of {SPLITS}")
        if self.kind not in SPLIT_KINDS and self.split != "conv":
            raise ValueError(f"plan {self.kind!r} takes no split, got {self.split!r}")
        if self.kind == "layers":
            if not self.pattern:
                raise ValueError("plan 'layers' needs a regular expression, e.g. 'layers:^enc'")
            try:
                re.compile(self.pattern)
            except re.error as e:
                raise ValueError(f"bad regular expression {self.pattern!r} in plan: {e}") from None
        elif self.pattern is not None:
            raise ValueError(f"plan {self.kind!r} takes no pattern, got {self.pattern!r}")

    # -- strings ---------------------------------------------------------------
    def __str__(self) -> str:
        if self.kind in UNIT_KINDS:
            s = f"{self.kind}:{self.k}"
            return s if self.scheme == "path" else f"{s}@{self.scheme}"
        if self.kind in SPLIT_KINDS:
            return self.kind if self.split == "conv" else f"{self.kind}:{self.split}"
        if self.kind == "layers":
            return f"layers:{self.pattern}"
        return self.kind

    @classmethod
    def parse(cls, text) -> "Plan":
        """Parse a plan string (see the module docstring); a ``Plan`` passes through."""
        if isinstance(text, Plan):
            return text
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"a plan must be a non-empty string, got {text!r}")
        text = text.strip()
        kind, _, arg = text.partition(":")
        if kind == "layers":
            return cls("layers", pattern=arg)
        if kind in SIMPLE_KINDS:
            if arg:
                raise ValueError(f"plan {kind!r} takes no argument, got {text!r}")
            return cls(kind)
        if kind in SPLIT_KINDS:
            return cls(kind, split=arg or "conv")
        if kind in UNIT_KINDS:
            num, _, scheme = arg.partition("@")
            try:
                k = int(num)
            except ValueError:
                raise ValueError(
                    f"bad plan {text!r}: expected {kind}:K or {kind}:K@SCHEME with K a "
                    f"positive integer and SCHEME in {SCHEMES}"
                ) from None
            return cls(kind, k=k, scheme=scheme or "path")
        raise ValueError(f"unknown plan {text!r}; plan kinds are {KINDS}")

    # -- resolution --------------------------------------------------------------
    def trainable_layers(self, block_map: BlockMap) -> FrozenSet[str]:
        """Names of the weighted layers this plan trains on the mapped model."""
        bm = block_map
        weighted = [n for b in bm.blocks for n in b.weighted_layers]
        if self.kind == "all":
            return frozenset(weighted)
        if self.kind == "none":
            return frozenset()
        if self.kind == "freeze_bottleneck":
            bott = {n for b in bm.blocks if b.part == "bottleneck" for n in b.weighted_layers}
            return frozenset(n for n in weighted if n not in bott)
        if self.kind in SPLIT_KINDS:
            if self.split == "conv":
                convs = bm.conv_layers()
                cut = 2 * bm.n_pools + 1  # the paper: conv 1..9 contracting at depth 4
                contracting = set(convs[:cut])
            else:
                contracting = {n for b in bm.blocks if b.part != "expanding"
                               for n in b.weighted_layers}
            if self.kind == "contracting":
                return frozenset(n for n in weighted if n in contracting)
            return frozenset(n for n in weighted if n not in contracting)
        if self.kind == "layers":
            rx = re.compile(self.pattern)
            chosen = frozenset(n for n in weighted if rx.search(n))
            if not chosen:
                raise ValueError(
                    f"plan {str(self)!r} matches no weighted layer of model "
                    f"{bm.model.name!r}; layer names look like {weighted[:3]}"
                )
            return chosen
        units = bm.units(self.scheme)
        if self.k > units:
            raise ValueError(
                f"plan {str(self)!r}: k={self.k} but the model has only {units} units under "
                f"the {self.scheme!r} scheme (valid k: 1..{units})"
            )
        if self.kind == "shallow_to_deep":
            chosen_units = range(1, self.k + 1)
        elif self.kind == "deep_to_shallow":
            chosen_units = range(units - self.k + 1, units + 1)
        else:
            chosen_units = [self.k]
        return frozenset(n for b in bm.blocks_in_units(chosen_units, self.scheme)
                         for n in b.weighted_layers)


@dataclasses.dataclass
class PlanReport:
    """What :func:`apply_plan` did."""

    plan: str
    trainable_layers: Tuple[str, ...]  # in model order
    trainable_params: int
    frozen_params: int

    def __str__(self) -> str:
        total = self.trainable_params + self.frozen_params
        share = 100.0 * self.trainable_params / total if total else 0.0
        return (f"plan {self.plan}: {self.trainable_params:,} trainable / "
                f"{self.frozen_params:,} frozen parameters ({share:.2f} % trained); "
                f"layers: {', '.join(self.trainable_layers) or '(none)'}")


def _count(weights) -> int:
    n = 0
    for w in weights:
        s = 1
        for d in w.shape:
            s *= int(d)
        n += s
    return n


def default_optimizer(learning_rate: float = 1e-4):
    """The paper's (zhixuhao's) optimizer: Adam, learning rate 1e-4 (PAPER.md D)."""
    return keras.optimizers.Adam(learning_rate=learning_rate)


def apply_plan(model: keras.Model, plan, *, block_map: Optional[BlockMap] = None,
               optimizer=None, loss=None, metrics=None, compile: bool = True) -> PlanReport:
    """Set ``trainable`` flags for ``plan`` and recompile the model.

    Args:
        model: a U-Net built by :mod:`keras_unet_ft.model`.
        plan: a :class:`Plan` or a plan string.
        block_map: a precomputed :class:`BlockMap` of ``model`` (computed if None).
        optimizer, loss, metrics: passed to ``compile``. ``optimizer`` defaults to a
            fresh copy of the model's current optimizer (same config, new state)
            or Adam(1e-4); ``loss`` to the model's loss or binary cross-entropy.
        compile: recompile (required for the flags to take effect in Keras 3).

    Returns:
        A :class:`PlanReport` with the trainable and frozen parameter counts.

    Examples:
        >>> from keras_unet_ft.model import build_unet
        >>> m = build_unet()
        >>> apply_plan(m, "contracting").trainable_params
        9403840
    """
    plan = Plan.parse(plan)
    bm = block_map if block_map is not None else BlockMap(model)
    chosen = plan.trainable_layers(bm)
    model.trainable = True
    for layer in model.layers:
        layer.trainable = layer.name in chosen if layer.weights else True
    if compile:
        old_opt = getattr(model, "optimizer", None)
        if optimizer is None:
            optimizer = (old_opt.__class__.from_config(old_opt.get_config())
                         if old_opt is not None else default_optimizer())
        if loss is None:
            loss = getattr(model, "loss", None) or "binary_crossentropy"
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    ordered = tuple(layer.name for layer in model.layers if layer.name in chosen)
    return PlanReport(str(plan), ordered, _count(model.trainable_weights),
                      _count(model.non_trainable_weights))
