"""Fine-tuning plans: the whole grammar of "which layers are trained", as data.

A plan is a small, serialisable value (:class:`Plan`) that resolves, on a given
block map, to the set of layers whose weights are trained; every other layer is
frozen. Plans print as strings and parse back (``str(Plan.parse(s)) == s``)::

    all | none | scratch | freeze_bottleneck
    contracting | expanding                 the paper's split: conv layers 1..2P+1
                                            vs the rest (docs/paper.md: conv 1-9 vs 10-24)
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
:func:`plan_matrix` (``unet-ft plans --matrix``; ``docs/plans.md``).

Keras 3 reads ``trainable`` flags only when a model is compiled, so
:func:`apply_plan` always recompiles (Keras does not warn otherwise).

This module imports no Keras at import time: reading results uses the grammar.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from .blocks import SCHEMES, BlockMap, check_scheme
from .config import MODEL_KINDS

BASELINES = ("none", "scratch")
SIMPLE_KINDS = ("all", "none", "scratch", "freeze_bottleneck")
SPLIT_KINDS = ("contracting", "expanding")
SPLITS = ("conv", "blocks")
UNIT_KINDS = ("shallow_to_deep", "deep_to_shallow", "only_block")
#: fine-tuning methods beyond freezing whole layers (per-variable, per-rate, per-epoch)
METHOD_KINDS = ("bitfit", "llrd", "gradual")
DIRECTIONS = ("top", "bottom")
KINDS = SIMPLE_KINDS + SPLIT_KINDS + UNIT_KINDS + METHOD_KINDS + ("layers", "staged")

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
                "shallow_to_deep:N", "bitfit", "llrd:0.5", "gradual:top", "gradual:bottom"),
}


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
        model: the network the plan is for (``unet``, ``xunet``, ``vunet``); None =
            the study's model.
        stages: for ``staged``: the plans trained one after the other.
        gamma: for ``llrd``: the learning-rate factor per block of distance from
            the deepest block, ``0 < gamma <= 1``.
        direction: for ``gradual``: ``top`` (deepest block first) or ``bottom``.

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

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown plan kind {self.kind!r}; expected one of {KINDS}")
        check_scheme(self.scheme)
        if self.model is not None and self.model not in MODEL_KINDS:
            raise ValueError(f"unknown model {self.model!r} in plan; expected one of "
                             f"{MODEL_KINDS}")
        if self.kind == "staged":
            if len(self.stages) < 2:
                raise ValueError("a staged plan needs two or more stages, e.g. "
                                 "expanding:blocks>all")
            for st in self.stages:
                if st.kind in BASELINES + ("staged", "llrd", "gradual") or st.model is not None:
                    raise ValueError(f"stage {str(st)!r}: a stage is a plain plan (no "
                                     "baseline, llrd, gradual, model prefix or nested stages)")
        elif self.stages:
            raise ValueError(f"plan {self.kind!r} takes no stages")
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
        if self.kind == "llrd":
            g = self.gamma
            if g is None or isinstance(g, bool) or not isinstance(g, (int, float)) \
                    or not 0 < g <= 1:
                raise ValueError(f"plan 'llrd' needs a factor 0 < GAMMA <= 1, e.g. llrd:0.5; "
                                 f"got {g!r}")
        elif self.gamma is not None:
            raise ValueError(f"plan {self.kind!r} takes no GAMMA, got {self.gamma!r}")
        if self.kind == "gradual":
            if self.direction not in DIRECTIONS:
                raise ValueError(f"plan 'gradual' needs a direction in {DIRECTIONS} "
                                 f"(gradual:top = deepest block first), got {self.direction!r}")
        elif self.direction is not None:
            raise ValueError(f"plan {self.kind!r} takes no direction, got {self.direction!r}")

    # -- strings ---------------------------------------------------------------
    def __str__(self) -> str:
        prefix = f"{self.model}/" if self.model else ""
        return prefix + self._bare_str()

    def _bare_str(self) -> str:
        if self.kind == "staged":
            return ">".join(str(s) for s in self.stages)
        if self.kind in UNIT_KINDS:
            s = f"{self.kind}:{self.k}"
            return s if self.scheme == "path" else f"{s}@{self.scheme}"
        if self.kind in SPLIT_KINDS:
            return self.kind if self.split == "conv" else f"{self.kind}:{self.split}"
        if self.kind == "layers":
            return f"layers:{self.pattern}"
        if self.kind == "llrd":
            return f"llrd:{self.gamma:g}"
        if self.kind == "gradual":
            return f"gradual:{self.direction}"
        return self.kind

    @classmethod
    def parse(cls, text) -> "Plan":
        """Parse a plan string (see the module docstring); a ``Plan`` passes through."""
        if isinstance(text, Plan):
            return text
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"a plan must be a non-empty string, got {text!r}")
        text = text.strip()
        head, sep, rest = text.partition("/")
        model = None
        if sep and head in MODEL_KINDS:
            model, text = head, rest
        if ">" in text and not text.startswith("layers:"):
            parts = [p.strip() for p in text.split(">")]
            if any(not p for p in parts):
                raise ValueError(f"bad staged plan {text!r}: expected PLAN>PLAN, e.g. "
                                 "expanding:blocks>all")
            return cls("staged", model=model, stages=tuple(cls._parse_one(p) for p in parts))
        return dataclasses.replace(cls._parse_one(text), model=model)

    @classmethod
    def _parse_one(cls, text: str) -> "Plan":
        kind, _, arg = text.partition(":")
        if kind == "layers":
            return cls("layers", pattern=arg)
        if kind in SIMPLE_KINDS:
            if arg:
                raise ValueError(f"plan {kind!r} takes no argument, got {text!r}")
            return cls(kind)
        if kind in SPLIT_KINDS:
            return cls(kind, split=arg or "conv")
        if kind == "bitfit":
            if arg:
                raise ValueError(f"plan 'bitfit' takes no argument, got {text!r}")
            return cls(kind)
        if kind == "llrd":
            try:
                gamma = float(arg)
            except ValueError:
                raise ValueError(f"bad plan {text!r}: expected llrd:GAMMA with a number "
                                 "0 < GAMMA <= 1, e.g. llrd:0.5") from None
            return cls(kind, gamma=gamma)
        if kind == "gradual":
            return cls(kind, direction=arg or None)
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
        import difflib

        kinds = [k for k in KINDS if k != "staged"]
        close = difflib.get_close_matches(kind, kinds + list(PLAN_SETS), n=3, cutoff=0.6)
        raise ValueError(f"unknown plan {text!r}"
                         + (f"; did you mean {' or '.join(close)}?" if close else "")
                         + f" Plan kinds: {', '.join(kinds)} (optionally MODEL/PLAN or "
                         f"PLAN>PLAN); plan sets: {', '.join(PLAN_SETS)}")

    # -- properties ------------------------------------------------------------
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
        return self.kind in BASELINES

    @property
    def trains(self) -> bool:
        """Whether the plan trains at all (``none`` does not)."""
        return self.kind != "none"

    def model_or(self, default: str) -> str:
        return self.model or default

    # -- resolution --------------------------------------------------------------
    def stage_layers(self, block_map) -> List[FrozenSet[str]]:
        """Trainable layers of every stage (see :meth:`trainable_layers`)."""
        return [st._layers(block_map) for st in self.steps]

    def trainable_layers(self, block_map) -> FrozenSet[str]:
        """Names of the weighted layers this plan trains (all stages) on the mapped model.

        Args:
            block_map: a :class:`~keras_unet_ft.blocks.BlockMap` of the model.
        """
        out: FrozenSet[str] = frozenset()
        for layers in self.stage_layers(block_map):
            out = out | layers
        return out

    def trains_variable(self, var_name: str) -> bool:
        """Whether a variable of a trained layer is trained, by its name in the layer
        (``kernel``, ``bias``, ...): ``bitfit`` trains the biases only."""
        return self.kind != "bitfit" or var_name.rsplit("/", 1)[-1] == "bias"

    def learning_rate_scales(self, block_map) -> Optional[Dict[str, float]]:
        """``llrd``: each weighted layer's learning-rate factor, ``GAMMA ** (N - k)`` for a
        layer of block ``k`` of ``N`` (path scheme; 1.0 for the deepest block); None for
        every other plan (one rate for all)."""
        if self.kind != "llrd":
            return None
        n = len(block_map.blocks)
        return {name: float(self.gamma) ** (n - b.index)
                for b in block_map.blocks for name in b.weighted_layers}

    def epoch_layers(self, block_map, epoch: int) -> FrozenSet[str]:
        """``gradual``: the layers trained in epoch ``epoch`` (1-based): the ``epoch``
        deepest blocks (``top``) or shallowest blocks (``bottom``), all of them from
        epoch N on. Other plans: :meth:`trainable_layers` in every epoch."""
        if self.kind != "gradual":
            return self.trainable_layers(block_map)
        if int(epoch) < 1:
            raise ValueError(f"epochs count from 1, got {epoch!r}")
        n = len(block_map.blocks)
        k = min(int(epoch), n)
        idx = range(n - k + 1, n + 1) if self.direction == "top" else range(1, k + 1)
        return frozenset(name for b in block_map.blocks if b.index in idx
                         for name in b.weighted_layers)

    def _layers(self, bm) -> FrozenSet[str]:
        weighted = [n for b in bm.blocks for n in b.weighted_layers]
        if self.kind in ("all", "scratch", "llrd", "gradual"):
            return frozenset(weighted)
        if self.kind == "bitfit":
            model = bm.model
            return frozenset(n for n in weighted
                             if any(self.trains_variable(w.path) for w in
                                    model.get_layer(n).weights))
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
            if head.split("/")[-1] in UNIT_KINDS:
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
        raise ValueError(f"no plans in {name_or_list!r}; give a plan set "
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
        if plan.is_baseline or plan.kind in METHOD_KINDS:
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


# -- the answer to "which layers": one table ---------------------------------------
@dataclasses.dataclass
class PlanRow:
    """One row of :func:`plan_matrix`."""

    plan: str
    cells: List[str]            # per block: "X" all of it trained, "x" part, "b" biases, "." frozen
    trainable_layers: List[str]
    trainable_params: int
    total_params: int

    @property
    def share(self) -> float:
        return 100.0 * self.trainable_params / self.total_params if self.total_params else 0.0


def plan_matrix(plans: Sequence[str], block_map) -> List[PlanRow]:
    """Which blocks and layers each plan trains, and how many parameters.

    Args:
        plans: plan strings (model prefixes are ignored: the block map decides).
        block_map: the :class:`~keras_unet_ft.blocks.BlockMap` of the model.
    """
    params = {}
    for b in block_map.blocks:
        for n in b.weighted_layers:
            params[n] = block_map.layer_params(n)
    order = [n for b in block_map.blocks for n in b.weighted_layers]
    rows = []
    for p in plans:
        plan = Plan.parse(p)
        chosen = frozenset() if plan.kind == "none" else plan.trainable_layers(block_map)
        cells = []
        for b in block_map.blocks:
            hit = [n for n in b.weighted_layers if n in chosen]
            cells.append("." if not hit else "b" if plan.kind == "bitfit"
                         else "X" if len(hit) == len(b.weighted_layers) else "x")
        n_params = (sum(params[n] for n in chosen) if plan.kind != "bitfit" else
                    count_params([w for n in chosen for w in block_map.model.get_layer(n).weights
                                  if plan.trains_variable(w.path)]))
        rows.append(PlanRow(str(p), cells, [n for n in order if n in chosen],
                            n_params, block_map.total_params))
    return rows


def format_matrix(rows: Sequence[PlanRow], block_map, markdown: bool = False) -> str:
    """:func:`plan_matrix` as a text (or Markdown) table, one column per block."""
    heads = [f"{b.index}{b.part[0]}" for b in block_map.blocks]
    if markdown:
        lines = ["| plan | " + " | ".join(heads) + " | trainable params | % | trained layers |",
                 "|---|" + "---|" * len(heads) + "---:|---:|---|"]
        for r in rows:
            lines.append(f"| `{r.plan}` | " + " | ".join(r.cells)
                         + f" | {r.trainable_params:,} | {r.share:.2f} | "
                         + (", ".join(r.trainable_layers) or "(none)") + " |")
        return "\n".join(lines)
    w = max([len("plan")] + [len(r.plan) for r in rows])
    lines = [f"{'plan':<{w}}  " + " ".join(f"{h:>3}" for h in heads)
             + f"  {'trainable':>12} {'%':>7}"]
    for r in rows:
        lines.append(f"{r.plan:<{w}}  " + " ".join(f"{c:>3}" for c in r.cells)
                     + f"  {r.trainable_params:>12,} {r.share:>6.2f}%")
    lines.append("columns: block index + part (c contracting, b bottleneck, e expanding); "
                 "X = whole block trained, x = part of it, b = its biases only, . = frozen")
    return "\n".join(lines)


# -- applying a plan to a Keras model -------------------------------------------------
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


def count_params(weights) -> int:
    """Number of scalars in a list of weights (Keras variables or arrays)."""
    n = 0
    for w in weights:
        s = 1
        for d in w.shape:
            s *= int(d)
        n += s
    return n


def plan_report(model, plan, layers) -> PlanReport:
    """A :class:`PlanReport` for ``layers`` (names) trained on ``model``."""
    chosen = set(layers)
    plan = Plan.parse(plan)
    ordered = tuple(layer.name for layer in model.layers if layer.name in chosen)
    n_tr = sum(count_params([w for w in layer.weights if plan.trains_variable(w.path)])
               for layer in model.layers if layer.name in chosen)
    return PlanReport(str(plan), ordered, n_tr, count_params(model.weights) - n_tr)


def default_optimizer(learning_rate: float = 1e-4):
    """The paper's (zhixuhao's) optimizer: Adam, learning rate 1e-4 (docs/paper.md D)."""
    import keras

    return keras.optimizers.Adam(learning_rate=learning_rate)


def apply_plan(model, plan, *, block_map=None, optimizer=None, loss=None, metrics=None,
               compile: bool = True) -> PlanReport:
    """Set ``trainable`` flags for ``plan`` and recompile the model.

    Args:
        model: a U-Net built by :mod:`keras_unet_ft.model`.
        plan: a :class:`Plan` or a plan string (one stage; a staged plan is applied
            one stage at a time).
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
    if plan.kind in ("bitfit", "llrd", "gradual") or any(
            st.kind == "bitfit" for st in plan.steps):
        raise ValueError(f"plan {str(plan)!r} is not a set of trainable layers: Keras' "
                         "trainable flags cannot express it; train it with "
                         "study.trainer=selective or masked")
    if plan.kind == "staged":
        raise ValueError(f"apply_plan takes one stage at a time; got the staged plan "
                         f"{str(plan)!r} (apply {', then '.join(map(str, plan.stages))})")
    bm = block_map if block_map is not None else BlockMap(model)
    chosen = plan.trainable_layers(bm) if plan.trains else frozenset()
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
    return PlanReport(str(plan), ordered, count_params(model.trainable_weights),
                      count_params(model.non_trainable_weights))
