"""The Keras side of a plan: which variables of a built model it trains, how many
parameters that is (:func:`plan_matrix`, :func:`plan_report`), and :func:`apply_plan`,
which sets Keras' ``trainable`` flags for a plan that is a set of layers.

Normalisation layers (``finetune.batchnorm``, :func:`trained_layers`): a BatchNormalization
layer is trained with its block (gamma and beta learned, batch statistics in training, its
moving statistics updated) unless ``finetune.batchnorm=frozen``, which keeps it out of
every plan's trained layers (inference mode, nothing of it changes). A layer a plan does not
train - BatchNormalization included - runs in inference mode and keeps its moving statistics
bit for bit. LayerNormalization and GroupNormalization hold no statistics: their gamma and
beta are trained or frozen with their block. Moving statistics are never trainable
parameters: every count here leaves them out.

Keras 3 reads ``trainable`` flags only when a model is compiled, so :func:`apply_plan`
always recompiles (Keras does not warn otherwise). The grammar itself
(:mod:`keras_unet_ft.plans`) imports no Keras.
"""

from __future__ import annotations

import dataclasses
from typing import List, Sequence, Tuple

from .blocks import BlockMap
from .plans import Plan, PlanError


def is_batchnorm(layer) -> bool:
    """Whether ``layer`` is a BatchNormalization layer (moving statistics, a training and an
    inference mode)."""
    import keras

    return isinstance(layer, keras.layers.BatchNormalization)


def trained_layers(model, layers, batchnorm: str = "auto") -> frozenset:
    """The layers of ``layers`` (names) a plan trains on ``model`` under
    ``finetune.batchnorm``: all of them for ``auto`` and ``train``; without the
    BatchNormalization layers for ``frozen`` (those run in inference mode, their moving
    statistics, gamma and beta kept).

    Examples:
        >>> import keras
        >>> x = keras.Input((8, 8, 1))
        >>> y = keras.layers.BatchNormalization(name="bn")(keras.layers.Conv2D(2, 3, name="c")(x))
        >>> sorted(trained_layers(keras.Model(x, y), {"c", "bn"}, "frozen"))
        ['c']
    """
    if batchnorm not in ("auto", "train", "frozen"):
        raise PlanError(f"finetune.batchnorm must be auto, train or frozen, got {batchnorm!r}")
    layers = frozenset(layers)
    if batchnorm != "frozen":
        return layers
    return frozenset(l.name for l in model.layers if l.name in layers and not is_batchnorm(l))


def learnable_weights(layer) -> list:
    """The weights of ``layer`` that training can change by gradient (whatever its current
    ``trainable`` flag): a BatchNormalization layer's gamma and beta, never its moving
    statistics."""
    import keras

    if isinstance(layer, keras.Model):   # a nested model (ConvNeXt's stem): its layers' own
        return [w for sub in layer.layers for w in learnable_weights(sub)]
    own = getattr(layer, "_trainable_variables", None)   # as created, flags aside
    if own is None:
        return [w for w in layer.weights if w.trainable]
    ids = {id(v) for v in own}
    return [w for w in layer.weights if id(w) in ids]


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


def plan_matrix(plans: Sequence[str], block_map, batchnorm: str = "auto") -> List[PlanRow]:
    """Which blocks and layers each plan trains, and how many parameters: the weights the
    plan learns (a trained BatchNormalization layer's gamma and beta, never its moving
    statistics; none of a BatchNormalization layer with ``batchnorm="frozen"``).

    Args:
        plans: plan strings (model prefixes are ignored: the block map decides).
        block_map: the :class:`~keras_unet_ft.blocks.BlockMap` of the model.
        batchnorm: ``finetune.batchnorm`` (:func:`trained_layers`).
    """
    params = {}
    for b in block_map.blocks:
        for n in b.weighted_layers:
            params[n] = block_map.layer_params(n)
    order = [n for b in block_map.blocks for n in b.weighted_layers]
    rows = []
    for p in plans:
        plan = Plan.parse(p)
        chosen = trained_layers(block_map.model, plan.trainable_layers(block_map), batchnorm)
        cells = []
        for b in block_map.blocks:
            hit = [n for n in b.weighted_layers if n in chosen]
            whole = len(hit) == len(trained_layers(block_map.model, b.weighted_layers,
                                                   batchnorm))
            cells.append("." if not hit else ("P" if whole else "p") if plan.reparam
                         else "b" if not plan.spec.every_variable else "X" if whole else "x")
        n_params = trained_params(block_map.model, plan, chosen)
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
                 "X = whole block trained, x = part of it, b = its biases only, P / p = "
                 "every / some of its kernels updated by learned tensors (ssf, lora), "
                 ". = frozen")
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


def trained_params(model, plan, layers) -> int:
    """The parameters ``plan`` learns in ``layers`` (names) of ``model``: their learnable
    weights (:func:`learnable_weights`: moving statistics never count; the biases only for
    ``bitfit``), or the learned tensors beside frozen kernels for the ``ssf`` and ``lora``
    kinds (:meth:`~keras_unet_ft.plans.Plan.params_of_layer`)."""
    plan = Plan.parse(plan)
    n = 0
    for layer in model.layers:
        if layer.name not in layers:
            continue
        own = count_params([w for w in learnable_weights(layer)
                            if plan.trains_variable(w.path)])
        n += (plan.params_of_layer(layer.kernel.shape, own) if plan.reparam else own)
    return n


def plan_report(model, plan, layers) -> PlanReport:
    """A :class:`PlanReport` for ``layers`` (names) trained on ``model`` (already without
    the BatchNormalization layers ``finetune.batchnorm=frozen`` keeps: :func:`trained_layers`).
    The frozen parameters are the model's others, moving statistics included (for ``ssf`` /
    ``lora``: all of the model's own)."""
    chosen = set(layers)
    plan = Plan.parse(plan)
    ordered = tuple(layer.name for layer in model.layers if layer.name in chosen)
    n_tr = trained_params(model, plan, chosen)
    total = count_params(model.weights)
    return PlanReport(str(plan), ordered, n_tr, total if plan.reparam else total - n_tr)


def mixed_weights(model, pretrained, fresh, fresh_layers) -> list:
    """``model.get_weights()``-ordered weights: those of the layers ``fresh_layers`` from
    ``fresh`` (random), every other layer's from ``pretrained`` (a ``reinit`` plan's start).

    Args:
        model: a model of the network both weight lists belong to.
        pretrained, fresh: ``get_weights()`` lists of that network.
        fresh_layers: names of the layers that start from ``fresh``.
    """
    if len(pretrained) != len(fresh) or len(pretrained) != len(model.weights):
        raise ValueError(f"weight lists of {len(pretrained)} and {len(fresh)} arrays for a "
                         f"model of {len(model.weights)}")
    order = [id(w) for layer in model.layers for w in layer.weights]
    if order != [id(w) for w in model.weights]:   # get_weights() walks the layers in order
        raise ValueError(f"model {model.name!r} lists its weights in another order than its "
                         "layers")
    out, i = [], 0
    for layer in model.layers:
        n = len(layer.weights)
        source = fresh if layer.name in fresh_layers else pretrained
        out += list(source[i:i + n])
        i += n
    return out


def default_optimizer(learning_rate: float = 1e-4):
    """The paper's (zhixuhao's) optimizer: Adam, learning rate 1e-4 (docs/paper.md D)."""
    import keras

    return keras.optimizers.Adam(learning_rate=learning_rate)


def apply_plan(model, plan, *, block_map=None, optimizer=None, loss=None, metrics=None,
               compile: bool = True, batchnorm: str = "auto") -> PlanReport:
    """Set ``trainable`` flags for ``plan`` and recompile the model. A layer left frozen
    runs in inference mode (a BatchNormalization layer: its moving statistics kept).

    Args:
        model: a U-Net built by :mod:`keras_unet_ft.model`.
        plan: a :class:`Plan` or a plan string (one stage; a staged plan is applied
            one stage at a time).
        block_map: a precomputed :class:`BlockMap` of ``model`` (computed if None).
        optimizer, loss, metrics: passed to ``compile``. ``optimizer`` defaults to a
            fresh copy of the model's current optimizer (same config, new state)
            or Adam(1e-4); ``loss`` to the model's loss or binary cross-entropy.
        compile: recompile (required for the flags to take effect in Keras 3).
        batchnorm: ``finetune.batchnorm``; ``frozen`` leaves every BatchNormalization
            layer frozen (:func:`trained_layers`).

    Returns:
        A :class:`PlanReport` with the trainable and frozen parameter counts.

    Examples:
        >>> from keras_unet_ft.model import build_unet
        >>> m = build_unet()
        >>> apply_plan(m, "contracting").trainable_params
        9403840
    """
    plan = Plan.parse(plan)
    if "keras" not in plan.trainers:
        raise PlanError(f"plan {str(plan)!r} is not a set of trainable layers: Keras' "
                         "trainable flags cannot express it; train it with "
                         "study.trainer=selective or masked")
    if len(plan.steps) > 1:
        raise PlanError(f"apply_plan takes one stage at a time; got the staged plan "
                         f"{str(plan)!r} (apply {', then '.join(map(str, plan.stages))})")
    bm = block_map if block_map is not None else BlockMap(model)
    chosen = trained_layers(model, plan.trainable_layers(bm) if plan.trains else (), batchnorm)
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
