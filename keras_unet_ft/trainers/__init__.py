"""The trainers: one small interface (:class:`~.base.Trainer`), one class per way to
train a plan, named once in ``config.TRAINER_SPECS`` and chosen by ``study.trainer`` through
:data:`BUILDERS` (no if/elif):

- ``selective`` (:class:`~.selective.SelectiveTrainer`, the default): one traced train step
  per set of trainable layers, cached for the process; frozen layers cost nothing;
- ``masked`` (:class:`~.selective.MaskedTrainer`): one traced step per fold, a 0/1 gradient
  mask per variable (kept for comparison);
- ``keras`` (:class:`~.keras_fit.KerasFitTrainer`): trainable flags + ``model.fit``, for
  fp16 loss scaling, ``tf.distribute`` and the JAX / PyTorch backends;
- ``multiworker`` (:class:`~.multiworker.MultiworkerTrainer`): data-parallel over
  ``TF_CONFIG``'s workers.

The first two also speak :class:`~.base.Resumable` (``advise`` goes on from their saved
state); ``per_variable`` in their row of ``config.TRAINER_SPECS`` says so, and a test checks
that the rows and the classes agree.

Every trainer reads ``finetune.batchnorm`` and treats normalisation layers alike
(:mod:`keras_unet_ft.trainable`): a layer a plan does not train - a BatchNormalization
layer included - stays bit for bit and runs in inference mode; a trained block's
BatchNormalization layers train (``auto``, ``train``) or stay in inference mode, untouched
(``frozen``).

Adding a trainer: its row in ``config.TRAINER_SPECS`` (name, summary, whether
``study.trainer`` may name it, whether it trains per variable) and its class here, marked
``@trainer`` (:func:`~.base.trainer`), with ``name``, ``resolved``, ``train(...)`` (see
:class:`~.base.Trainer`) and a ``build(cfg, mcfg, seed, precision, strategy)`` classmethod,
in a module of this package (every module here is imported, which registers the class);
:func:`resolve_trainer` says when ``study.trainer=auto`` picks it. ``plans.TRAINERS``, the
plan kinds' ``trainers``, :data:`BUILDERS` and ``study.trainer``'s choices follow.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Dict

from ..config import TRAINER_SPECS
from ..config import TRAINERS as STUDY_TRAINERS
from ..exitcodes import UserError
from ..runtime import backend, is_multiworker
from .base import (CLASSES, Resumable, Trained, Trainer, shifted, stage_learning_rate,
                   weights_by_layer)
from .keras_fit import _KERAS_RUNS, KerasFitTrainer, KerasRuns
from .multiworker import MultiworkerTrainer
from .selective import _SHARED, MaskedTrainer, SelectiveTrainer

__all__ = ["BUILDERS", "CLASSES", "KerasFitTrainer", "KerasRuns", "MaskedTrainer",
           "MultiworkerTrainer", "Resumable", "SelectiveTrainer", "Trained", "Trainer",
           "clear_shared", "make_trainer", "resolve_trainer", "shifted", "stage_learning_rate",
           "weights_by_layer"]

# every module of this package is imported: a trainer class registers itself (``@trainer``)
# in its own module, so a new module needs no line here
for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")

#: ``study.trainer`` (resolved) -> ``(cfg, model config, seed, precision, strategy) -> Trainer``:
#: each class's ``build``, in the order of ``config.TRAINER_SPECS``
BUILDERS: Dict[str, Callable[..., Trainer]] = {
    name: CLASSES[name].build for name in TRAINER_SPECS if name in CLASSES}


def make_trainer(cfg, mcfg, seed: int, precision: str, strategy=None) -> Trainer:
    """The trainer ``study.trainer`` resolves to (:func:`resolve_trainer`) for this model."""
    return BUILDERS[resolve_trainer(cfg.study.trainer, precision, strategy)](
        cfg, mcfg, seed, precision, strategy)


def clear_shared() -> None:
    """Forget the process's shared models (tests; a new Keras session)."""
    _SHARED.clear()
    _KERAS_RUNS.clear()


def resolve_trainer(trainer: str, precision: str, strategy=None, steps: int = 0) -> str:
    """``auto``: the selective trainer (one traced step per trainable set, frozen layers
    cost nothing, no retrace per run; BENCHMARKS.md), Keras' own for fp16 (loss
    scaling) or tf.distribute. ``masked`` stays available for comparison. On a Keras
    backend other than TensorFlow (``KERAS_BACKEND=jax`` or ``torch``) only Keras' own
    trainer exists, without ``--distribute``."""
    if trainer not in STUDY_TRAINERS:
        raise UserError(f"study.trainer must be {', '.join(STUDY_TRAINERS[:-1])} or "
                        f"{STUDY_TRAINERS[-1]}, got {trainer!r}")
    b = backend()
    per_variable = trainer != "auto" and TRAINER_SPECS[trainer].per_variable
    if b != "tensorflow":
        if strategy is not None:
            raise UserError(f"--distribute needs the TensorFlow backend (KERAS_BACKEND is "
                            f"{b!r})")
        if per_variable:
            raise UserError(f"the {trainer} trainer needs the TensorFlow backend (KERAS_BACKEND "
                            f"is {b!r}); use study.trainer=keras or auto")
        return "keras"
    if is_multiworker(strategy):   # Keras 3's fit fails there (keras-team/keras#20585)
        if precision == "fp16":
            raise UserError("--distribute multiworker trains in fp32 or bf16 (its loop has no "
                            "loss scaling); use --precision fp32")
        if trainer not in ("auto", "keras"):
            raise UserError(f"--distribute multiworker uses its own training loop, not the "
                            f"{trainer} trainer; leave study.trainer=auto")
        return "multiworker"
    if trainer == "auto":
        if strategy is not None or precision == "fp16":
            return "keras"
        return "selective"
    if per_variable and (strategy is not None or precision == "fp16"):
        raise UserError(f"the {trainer} trainer supports fp32/bf16 without tf.distribute; "
                        "use study.trainer=keras")
    return trainer
