"""What every trainer shares: the :class:`Trainer` protocol, the :class:`Resumable` one of
the trainers ``advise`` goes on from between rungs, the table of trainer classes
(:data:`CLASSES`, filled by :func:`trainer`), what a training returns (:class:`Trained`),
and the small helpers of a training loop."""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from ..blocks import BlockMap
from ..config import TRAINER_SPECS, Config
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


@runtime_checkable
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

    The trainers whose state the package holds (``per_variable`` in
    ``config.TRAINER_SPECS``: selective, masked) also go on from a saved state: the
    :class:`Resumable` protocol.
    """

    name: str
    resolved: str

    def train(self, plan: Plan, steps: Sequence[Plan], rates: Sequence[float], epochs: int,
              data, init, scratch: Callable[[], list], *, seed: int, batch_size: int,
              verbose: int = 0, log_dir=None, warmup_epochs: int = 0) -> Trained:
        ...


@runtime_checkable
class Resumable(Protocol):
    """A trainer that goes on from a saved state (``advise`` between rungs): one model it
    keeps, reset to given weights and trained variables, trained a few epochs, its state
    (weights and optimizer variables) read and set back.

    Attributes:
        model: the Keras model it trains (one for the trainer's life).
        bm: that model's block map.
    """

    name: str
    model: object
    bm: BlockMap

    def reset(self, weights=None, trainable_layers=(), learning_rate=None, plan=None,
              block_map=None, seed: int = 0) -> None:
        """The model at ``weights`` (its initial state when None), a fresh optimizer at
        ``learning_rate``, ``trainable_layers`` (narrowed by ``plan``) trained from now on."""
        ...

    def fit(self, dataset, epochs: int, log=None) -> tuple:
        """Train ``epochs`` epochs on ``dataset``: ``(history rows, seconds per epoch)``."""
        ...

    def predict(self, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
        ...

    def state(self) -> tuple:
        """``(weights, optimizer variables)``: where the training stands."""
        ...

    def restore_optimizer(self, state: tuple) -> None:
        """The optimizer's variables of a :meth:`state` set back (after :meth:`reset` with its
        weights, training goes on where that state was taken)."""
        ...


#: ``config.TRAINER_SPECS`` name -> trainer class (each class registers itself: :func:`trainer`)
CLASSES: Dict[str, type] = {}


def trainer(cls: type) -> type:
    """Register a trainer class under its ``name``, which must be a row of
    ``config.TRAINER_SPECS``; its ``build(cfg, model config, seed, precision, strategy)``
    classmethod makes the trainer of a fold (:data:`keras_unet_ft.trainers.BUILDERS`)."""
    if cls.name not in TRAINER_SPECS:
        raise ValueError(f"trainer class {cls.__name__} is named {cls.name!r}, which is not a row "
                         f"of config.TRAINER_SPECS ({', '.join(TRAINER_SPECS)})")
    if cls.name in CLASSES and CLASSES[cls.name].__qualname__ != cls.__qualname__:
        raise ValueError(f"trainer name {cls.name!r} is taken by {CLASSES[cls.name].__name__}; "
                         f"give {cls.__name__} its own row in config.TRAINER_SPECS")
    CLASSES[cls.name] = cls
    return cls


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
