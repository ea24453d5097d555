"""Keras' own trainer (``study.trainer=keras``): trainable flags and ``model.fit``, for fp16
loss scaling, ``tf.distribute`` (mirrored) and the JAX / PyTorch backends (frozen layers
cost less). Plans Keras' flags cannot express (BitFit, LLRD, gradual unfreezing) need the
selective trainer (:attr:`keras_unet_ft.plans.KindSpec.trainers`).

A layer outside the trained set is ``trainable = False``: Keras runs a frozen
BatchNormalization layer in inference mode and leaves its moving statistics alone;
``finetune.batchnorm=frozen`` keeps every BatchNormalization layer out of the trained set."""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import numpy as np

from ..blocks import BlockMap
from ..config import section_key
from ..model import build_from_config
from ..plans import Plan
from ..runtime import (Diverged, EpochTimer, fresh_session, history_rows, make_dataset,
                       make_loss, predict, strategy_scope, tensorboard_callback)
from ..trainable import apply_plan, plan_report, trained_layers
from .base import Trained, stage_layers, trainer, warmup_factor, weights_by_layer
from .selective import _SHARED


class KerasRuns:
    """Keras' own trainer (``model.fit``) without a recompile per run: one compiled model per
    set of trainable layers, kept for the life of the process across folds and targets.

    A run resets the model's variables (weights and random-seed states) to their state when it
    was built, sets the run's initial weights, resets the optimizer's variables (Adam moments,
    step counter, fp16 loss scale) and its learning rate, reseeds, and calls ``fit``, which
    reuses the compiled train step (on JAX: no new XLA compilation). So a run's result depends
    on its config, fold and plan, never on the runs before it in the process.
    """

    def __init__(self, mcfg, precision: str, deterministic: bool, loss: str):
        self.mcfg, self.loss = mcfg, loss
        self.resolved = fresh_session(0, precision, deterministic,
                                      clear=not (_SHARED or _KERAS_RUNS))
        self.models: Dict[frozenset, tuple] = {}
        self.bm: Optional[BlockMap] = None

    def block_map(self) -> BlockMap:
        if self.bm is None:
            self.bm = BlockMap(build_from_config(self.mcfg))
        return self.bm

    def start(self, chosen: frozenset, weights, learning_rate: float):
        """``(model, block map)`` for training exactly the layers ``chosen``, reset for a new
        run from ``weights`` (built and compiled on the first use of ``chosen``)."""
        import keras

        if chosen not in self.models:
            model = build_from_config(self.mcfg)
            model.trainable = True   # as apply_plan: the chosen layers train, the others frozen
            for layer in model.layers:
                layer.trainable = layer.name in chosen if layer.weights else True
            model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=make_loss(self.loss))
            model.optimizer.build(model.trainable_variables)
            self.models[chosen] = (model, BlockMap(model),
                                   [np.array(v.numpy()) for v in model.variables],
                                   [np.array(v.numpy()) for v in model.optimizer.variables])
        model, bm, state, opt_state = self.models[chosen]
        for v, val in zip(model.variables, state):
            v.assign(val)
        model.set_weights(weights)
        for v, val in zip(model.optimizer.variables, opt_state):
            v.assign(val)
        model.optimizer.learning_rate = float(learning_rate)
        return model, bm



_KERAS_RUNS: Dict[tuple, KerasRuns] = {}


def shared_keras_runs(mcfg, precision: str, deterministic: bool, loss: str) -> KerasRuns:
    """The process's :class:`KerasRuns` of a network config."""
    key = (section_key(mcfg), precision, bool(deterministic), loss)
    if key not in _KERAS_RUNS:
        _KERAS_RUNS[key] = KerasRuns(mcfg, precision, deterministic, loss)
    return _KERAS_RUNS[key]


@trainer
class KerasFitTrainer:
    """The :class:`~.base.Trainer` protocol with Keras' ``fit``: one-stage plans without
    ``tf.distribute`` through :class:`KerasRuns` (no recompile); staged plans or a
    distribution strategy build the model, then :func:`~keras_unet_ft.trainable.apply_plan`
    (trainable flags + recompile) stage by stage."""

    name = "keras"

    @classmethod
    def build(cls, cfg, mcfg, seed: int, precision: str, strategy=None) -> "KerasFitTrainer":
        return cls(mcfg, precision, cfg.study.deterministic, cfg.finetune.loss, strategy,
                   cfg.finetune.batchnorm)

    def __init__(self, mcfg, precision: str, deterministic: bool, loss: str, strategy=None,
                 batchnorm: str = "auto"):
        self.mcfg, self.precision, self.deterministic = mcfg, precision, deterministic
        self.loss, self.strategy, self.batchnorm = loss, strategy, batchnorm
        self.resolved = precision
        self.bm: Optional[BlockMap] = None

    def train(self, plan: Plan, steps: Sequence[Plan], rates: Sequence[float], epochs: int,
              data, init, scratch: Callable[[], list], *, seed: int, batch_size: int,
              verbose: int = 0, log_dir=None, warmup_epochs: int = 0) -> Trained:
        import keras

        if self.strategy is None and len(steps) == 1:
            runs = shared_keras_runs(self.mcfg, self.precision, self.deterministic, self.loss)
            self.resolved = runs.resolved
            bm = runs.block_map()
            chosen = trained_layers(bm.model, stage_layers(plan, steps[0], bm), self.batchnorm)
            model, bm = runs.start(chosen, init if init is not None else scratch(), rates[0])
            keras.utils.set_random_seed(seed)
            before = weights_by_layer(model)
            rows, times = [], []
            if epochs:
                r, times = _fit(model, data, batch_size, seed, epochs, verbose, log_dir,
                                warmup=(rates[0], warmup_epochs))
                rows = [{**x, "stage": 1} for x in r]
            # the first run of a trainable set compiles in its first epoch (kept in its time;
            # images_per_second leaves that epoch out)
            return Trained(model, plan_report(model, plan, chosen), rows, times, before, bm,
                           lambda x, batch_size=8: predict(model, x, batch_size))
        self.resolved = fresh_session(seed, self.precision, self.deterministic)
        with strategy_scope(self.strategy):
            model = build_from_config(self.mcfg)
            bm = BlockMap(model)
            if init is not None:
                model.set_weights(init)
            before = weights_by_layer(model)
        rows, times, chosen_all = [], [], set()
        for i, st in enumerate(steps):
            with strategy_scope(self.strategy):
                report = apply_plan(model, st if plan.trains else Plan("none"), block_map=bm,
                                    optimizer=keras.optimizers.Adam(rates[i]),
                                    loss=make_loss(self.loss), batchnorm=self.batchnorm)
            chosen_all |= set(report.trainable_layers)
            if epochs:
                r, t = _fit(model, data, batch_size, seed + i, epochs, verbose,
                            None if log_dir is None else
                            log_dir if len(steps) == 1 else f"{log_dir}/stage_{i + 1}",
                            warmup=(rates[i], warmup_epochs))
                rows += [{**x, "stage": i + 1} for x in r]
                times += t
        return Trained(model, plan_report(model, plan, chosen_all), rows, times, before, bm,
                       lambda x, batch_size=8: predict(model, x, batch_size))


def _fit(model, train, batch_size: int, seed: int, epochs: int, verbose: int = 0,
         log_dir=None, warmup=(None, 0)):
    """Keras' ``fit`` on ``train`` (shuffled, seeded): ``(history rows, seconds per epoch)``;
    a NaN / inf loss raises :class:`Diverged`."""
    import keras

    timer = EpochTimer()
    ds = make_dataset(train[0], train[1], batch_size, shuffle=True, seed=seed)
    callbacks = [timer, keras.callbacks.TerminateOnNaN()]
    if log_dir is not None:
        callbacks.append(tensorboard_callback(log_dir))
    rate, warmup_epochs = warmup
    if warmup_epochs:   # Keras counts epochs from 0
        callbacks.append(keras.callbacks.LearningRateScheduler(
            lambda epoch, lr: rate * warmup_factor(epoch + 1, warmup_epochs)))
    history = model.fit(ds, epochs=epochs, verbose=verbose, shuffle=False, callbacks=callbacks)
    rows = history_rows(history)
    losses = [x.get("loss", np.nan) for x in rows]
    if len(losses) < epochs or not np.all(np.isfinite(losses)):
        raise Diverged(f"loss became NaN/inf at epoch {len(losses)}")
    return rows, timer.times
