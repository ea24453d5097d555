"""What every trainer shares: the :class:`Trainer` protocol, what a training returns
(:class:`Trained`), and the small helpers of a training loop."""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Protocol, Sequence

import numpy as np

from ..blocks import BlockMap
from ..config import Config
from ..exitcodes import UserError
from ..plans import Plan


@dataclasses.dataclass
class Trained:
    """What a trainer's :meth:`Trainer.train` returns."""

    model: object                 # the Keras model, trained
    report: object                # PlanReport: trainable layers and parameter counts
    history: List[dict]           # one row per epoch (and stage)
    epoch_seconds: List[float]
    weights_before: Dict[str, List[np.ndarray]]
    block_map: BlockMap
    predict: Callable             # images -> probabilities
    trace_seconds: float = 0.0    # tracing a train step in this run (selective: first use)


class Trainer(Protocol):
    """How a plan is trained: one small interface, one class per way (``study.trainer``).

    A trainer trains the stages ``steps`` of ``plan`` one after the other, each with a
    fresh optimizer at its rate, from ``init`` (the pretrained weights; ``scratch()`` gives
    the fold's random ones), ``epochs`` epochs each, on ``data = (images, masks)`` shuffled
    with ``seed + stage``; the first ``warmup_epochs`` epochs of each stage at a linearly
    rising rate (:func:`warmup_factor`). A non-finite loss raises
    :class:`~keras_unet_ft.runtime.Diverged`.

    Attributes:
        name: its ``study.trainer`` name (a plan kind lists the trainers that can train it:
            :attr:`keras_unet_ft.plans.KindSpec.trainers`).
        resolved: the precision it trains in (``fp32``, ``bf16``, ``fp16``).

    The trainers whose state the package holds (selective, masked) also go on from a saved
    state (``advise`` between rungs): ``reset(weights, layers, rate, plan, block_map)``,
    ``fit(dataset, epochs)``, ``predict(images)``, ``state()`` and ``restore(state)``.
    """

    name: str
    resolved: str

    def train(self, plan: Plan, steps: Sequence[Plan], rates: Sequence[float], epochs: int,
              data, init, scratch: Callable[[], list], *, seed: int, batch_size: int,
              verbose: int = 0, log_dir=None, warmup_epochs: int = 0) -> Trained:
        ...


def weights_by_layer(model) -> Dict[str, List[np.ndarray]]:
    """``{layer name: [weight arrays]}`` of the layers with weights."""
    return {l.name: [np.array(w) for w in l.get_weights()] for l in model.layers if l.weights}


def shifted(log, offset: int):
    """``log`` with its step moved by ``offset`` (stages and gradual epochs: one x axis)."""
    if log is None:
        return None
    return lambda step, **scalars: log(step + offset, **scalars)


def stage_learning_rate(cfg: Config, stage: int) -> float:
    """Learning rate of stage ``stage`` (0-based) of a staged plan
    (``finetune.stage_learning_rates``; the fine-tuning rate where none is given)."""
    rates = cfg.finetune.stage_learning_rates or []
    if stage < len(rates):
        lr = float(rates[stage])
        if not lr > 0:
            raise UserError(f"finetune.stage_learning_rates must be positive numbers, "
                            f"got {rates[stage]!r} in {rates!r}")
        return lr
    return float(cfg.finetune.learning_rate)


def warmup_factor(epoch: int, warmup_epochs: int) -> float:
    """The share of the learning rate in epoch ``epoch`` (1-based) of a linear warm-up over
    the first ``warmup_epochs`` epochs: ``epoch / (warmup_epochs + 1)``, then 1.

    Examples:
        >>> [warmup_factor(e, 3) for e in range(1, 6)]
        [0.25, 0.5, 0.75, 1.0, 1.0]
        >>> warmup_factor(1, 0)
        1.0
    """
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, int(epoch) / (int(warmup_epochs) + 1))


def stage_layers(plan: Plan, step: Plan, bm: BlockMap) -> frozenset:
    """The layers ``step`` of ``plan`` trains (none when the plan trains nothing)."""
    return frozenset(step.trainable_layers(bm)) if plan.trains else frozenset()


def optional_log(log_dir) -> Optional[object]:
    """A :class:`~keras_unet_ft.runtime.ScalarLog` writing to ``log_dir``, or None."""
    if log_dir is None:
        return None
    from ..runtime import ScalarLog

    return ScalarLog(log_dir)
