"""The trainers whose state the package holds: one traced train step per fold
(:class:`MaskedTrainer`) or per set of trainable layers (:class:`SelectiveTrainer`, the
default), a plan switch being only an assignment of weights, optimizer state and trained
variables. Both train any plan kind (per-variable masks, per-layer rates, per-epoch sets).

BatchNormalization: every layer stays trainable for the masks, except the BatchNormalization
layers a plan does not train (and all of them with ``finetune.batchnorm=frozen``): those are
set ``trainable = False``, so Keras runs them in inference mode and their moving statistics
stay bit for bit. Which of them run in training mode is part of every traced step's key."""

from __future__ import annotations

import time
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from ..blocks import BlockMap
from ..config import section_key
from ..model import build_from_config
from ..plans import Plan
from ..runtime import Diverged, fresh_session, make_dataset, make_loss
from ..trainable import is_batchnorm, plan_report, trained_layers
from .base import (Trained, optional_log, shifted, stage_layers, trainer, warmup_factor,
                   weights_by_layer)


@trainer
class MaskedTrainer:
    """Trains any fine-tuning plan of one model with a single traced train step.

    Keras 3 retraces its train function whenever ``trainable`` flags change
    (after ``compile``), which costs seconds per plan on a CPU - more than the
    training itself at small sizes. This trainer computes every weight's gradient
    and multiplies it by a 0/1 mask per variable before Adam. Adam starts from
    zero moments for every run, so a masked (zero) gradient leaves the weight
    bit-identical: the result is the same as freezing the layer, and a study
    switches plans by assigning masks, weights and optimizer state - no retrace.
    The price: a frozen layer's weight gradient is computed anyway (see
    ``benchmarks/`` for the step time per plan). Kept for comparison
    (``study.trainer=masked``); the default is :class:`SelectiveTrainer`.

    A BatchNormalization layer of a frozen block runs in inference mode (its moving
    statistics are not a gradient a mask could zero): :meth:`select` sets it
    ``trainable = False``, and the traced step of that set of training-mode layers is
    cached apart.

    Args:
        model: a built model; all its layers are set trainable.
        learning_rate: Adam learning rate.
        batchnorm: ``finetune.batchnorm``: ``auto`` / ``train`` (a trained block's
            BatchNormalization layers train: batch statistics, moving statistics updated,
            gamma and beta learned) or ``frozen`` (inference mode, nothing of them changes).
    """

    def __init__(self, model, learning_rate: float = 1e-4, loss: str = "bce",
                 resolved: str = "fp32", batchnorm: str = "auto"):
        import keras
        import tensorflow as tf

        self.model, self.resolved = model, resolved
        self.bm = BlockMap(model)
        self.last_trace = 0.0   # seconds the last fit spent tracing a step (selective)
        model.trainable = True
        for layer in model.layers:
            layer.trainable = True
        trained_layers(model, (), batchnorm)   # a bad mode fails here
        self.batchnorm = batchnorm
        self._bn = tuple(l.name for l in model.layers if is_batchnorm(l))
        self._bn_train: frozenset = frozenset(self._bn)   # in training mode
        owner = {}
        for layer in model.layers:
            for w in layer.trainable_weights:
                owner[id(w)] = layer.name
        self.vars = list(model.trainable_weights)
        self.var_layer = [owner[id(v)] for v in self.vars]
        self.masks = [tf.Variable(1.0, trainable=False, dtype="float32") for _ in self.vars]
        # per-variable update factors (llrd): w <- w_old + scale * (w_adam - w_old)
        self.scales = [tf.Variable(1.0, trainable=False, dtype="float32") for _ in self.vars]
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.optimizer.build(self.vars)
        self.loss_name = loss
        self.loss_fn = make_loss(loss)
        self._model_state = [np.array(v.numpy()) for v in model.variables]  # incl. seed states
        self._opt_state = [np.array(v.numpy()) for v in self.optimizer.variables]
        self._chosen: frozenset = frozenset()   # indices of the trained variables
        self._scaled = False
        self._reparam = None                     # ssf / lora: the learned tensors, or None
        self._reparams: Dict[tuple, object] = {}
        self._steps: Dict[tuple, object] = {}
        self._infer = tf.function(lambda x: model(x, training=False))
        #: the seed the model was built under right after seeding (its initial weights are
        #: then the seeded random weights of that seed), or None when not known
        self.initial_seed: Optional[int] = None

    name = "masked"

    @classmethod
    def build(cls, cfg, mcfg, seed: int, precision: str, strategy=None) -> "MaskedTrainer":
        """The trainer of one fold (``seed``), on a model built for it (:func:`masked_trainer`)."""
        return masked_trainer(mcfg, seed, precision, cfg.study.deterministic,
                              cfg.finetune.learning_rate, cfg.finetune.loss,
                              cfg.finetune.batchnorm)

    def initial_weights(self) -> list:
        """The model's weights as built (``get_weights()`` order), whatever it trained since."""
        at = {id(v): i for i, v in enumerate(self.model.variables)}
        return [np.array(self._model_state[at[id(w)]]) for w in self.model.weights]

    def train(self, plan: Plan, steps: Sequence[Plan], rates: Sequence[float], epochs: int,
              data, init, scratch: Callable[[], list], *, seed: int, batch_size: int,
              verbose: int = 0, log_dir=None, warmup_epochs: int = 0) -> Trained:
        """The :class:`~.base.Trainer` protocol: stage after stage on this trainer's model,
        each a reset of weights, optimizer state and trained variables (no retrace);
        ``gradual`` plans select one more block each epoch, optimizer state kept;
        ``autorgn`` sets each tensor's update factor before every epoch; a warm-up sets the
        rate of each of a stage's first ``warmup_epochs`` epochs."""
        import keras

        log = optional_log(log_dir if epochs else None)
        rows, times, chosen_all, trace = [], [], set(), 0.0
        try:
            for i, st in enumerate(steps):
                chosen_all |= trained_layers(self.model, stage_layers(plan, st, self.bm),
                                             self.batchnorm)
                first = st.epoch_layers(self.bm, 1) if plan.trains else frozenset()
                if i == 0:
                    self.reset(init, first, rates[i], st, self.bm, seed=seed)
                    keras.utils.set_random_seed(seed)
                    before = weights_by_layer(self.model)
                else:  # next stage: keep the weights, fresh optimizer state
                    self.reset(self.model.get_weights(), first, rates[i], st, self.bm,
                               seed=seed + i)
                if not epochs:
                    continue
                ds = make_dataset(data[0], data[1], batch_size, shuffle=True, seed=seed + i)
                if st.layers_change or st.adaptive or warmup_epochs:   # epoch by epoch
                    r, t = [], []
                    probe = (data[0][:batch_size], data[1][:batch_size])
                    for e in range(1, epochs + 1):
                        extra = {}
                        if st.layers_change:   # one more block each epoch, optimizer state kept
                            self.select(st.epoch_layers(self.bm, e), st, self.bm)
                            extra["trained_blocks"] = min(e, len(self.bm.blocks))
                        if st.adaptive:
                            extra["largest_rgn"] = self.adapt(*probe)
                        if warmup_epochs:
                            extra["learning_rate"] = rates[i] * warmup_factor(e, warmup_epochs)
                            self._set_rate(extra["learning_rate"], st)
                        re_, te = self.fit(ds, 1, shifted(log, len(rows) + e - 1))
                        trace += self.last_trace
                        r.append({**re_[0], "epoch": e, **extra})
                        t += te
                else:
                    r, t = self.fit(ds, epochs, shifted(log, len(rows)))
                    trace += self.last_trace
                rows += [{**x, "stage": i + 1} for x in r]
                times += t
        finally:
            if log is not None:
                log.close()
        report = plan_report(self.model, plan, chosen_all)
        return Trained(self.model, report, rows, times, before, self.bm, self.predict, trace)

    def adapt(self, images, masks) -> float:
        """Auto-RGN (Lee et al. 2023): each trained tensor's update factor becomes its
        relative gradient norm ``||g|| / ||w||`` on ``images`` over the largest of them (so
        the most changing tensor keeps the full rate); returns that largest ratio."""
        import tensorflow as tf

        idx = sorted(self._chosen)
        sub = [self.vars[i] for i in idx]
        x = tf.convert_to_tensor(np.asarray(images, np.float32))
        y = tf.convert_to_tensor(np.asarray(masks, np.float32))
        with tf.GradientTape() as tape:
            loss = self.loss_fn(y, self.model(x, training=False))
        grads = tape.gradient(loss, sub)
        ratios = []
        for g, v in zip(grads, sub):
            w = float(tf.norm(tf.cast(v.value, "float32")))
            gn = 0.0 if g is None else float(tf.norm(tf.cast(g, "float32")))
            ratios.append(gn / w if w > 0 else 0.0)
        top = max(ratios, default=0.0)
        for i, r in zip(idx, ratios):
            self.scales[i].assign(r / top if top > 0 else 1.0)
        self._scaled = True
        return top

    def state(self) -> tuple:
        """``(weights, optimizer variables)``: where a run stands, to go on from later."""
        return (self.model.get_weights(), [np.array(v.numpy()) for v in self.optimizer.variables])

    def restore_optimizer(self, state: tuple) -> None:
        """Set the optimizer's variables (Adam moments, step) of a :meth:`state`; after
        :meth:`reset` with its weights, training goes on where that run stopped."""
        for v, value in zip(self.optimizer.variables, state[1]):
            v.assign(value)

    def _set_rate(self, learning_rate: float, plan=None) -> None:
        """The rate of the trained variables (the learned tensors of ``ssf`` / ``lora``
        at the plan kind's multiple of it)."""
        self.optimizer.learning_rate = float(learning_rate)
        if self._reparam is not None:
            self._reparam.set_rate(float(learning_rate) * plan.spec.rate_factor)

    def _update(self, grads, sub, scales):
        """The step's update: Adam on ``sub`` (:meth:`_apply`), or for ``ssf`` / ``lora``
        on the learned tensors, whose gradients follow from ``sub``'s."""
        if self._reparam is not None:
            self._reparam.apply({id(v): g for v, g in zip(sub, grads)})
        else:
            self._apply(grads, sub, scales)

    def _apply(self, grads, sub, scales):
        """Adam on ``sub``; with ``scales`` each variable's update is multiplied by its
        factor (an update, not a gradient, factor: Adam normalises gradients away)."""
        if scales is None:
            self.optimizer.apply_gradients(zip(grads, sub))
            return
        old = [v.value + 0 for v in sub]
        self.optimizer.apply_gradients(zip(grads, sub))
        for v, o, s in zip(sub, old, scales):
            v.assign(o + s * (v.value - o))

    def _make_step(self, scaled: bool):
        import tensorflow as tf

        scales = self.scales if scaled else None

        def step(x, y):
            with tf.GradientTape() as tape:
                pred = self.model(x, training=True)
                loss = self.loss_fn(y, pred)
            grads = tape.gradient(loss, self.vars)
            grads = [tf.zeros_like(v.value) if g is None else g * tf.cast(m, g.dtype)
                     for g, v, m in zip(grads, self.vars, self.masks)]
            self._update(grads, self.vars, scales)
            return loss

        return tf.function(step)

    def _step_for(self, x, y):
        key = ("masked", self._scaled, id(self._reparam), self._bn_train)
        if key not in self._steps:
            self._steps[key] = self._make_step(self._scaled)
        return self._steps[key]

    def reset(self, weights=None, trainable_layers=(), learning_rate=None, plan=None,
              block_map=None, seed: int = 0):
        """Back to the initial state (or ``weights``), fresh optimizer, and
        :meth:`select` the trained variables; for ``ssf`` / ``lora`` the learned tensors
        start afresh on these weights (``seed`` draws LoRA's ``U``)."""
        for v, val in zip(self.model.variables, self._model_state):
            v.assign(val)
        if weights is not None:
            self.model.set_weights(weights)
        for v, val in zip(self.optimizer.variables, self._opt_state):
            v.assign(val)
        self.select(trainable_layers, plan, block_map)
        rate = float(np.array(self.optimizer.learning_rate) if learning_rate is None
                     else learning_rate)
        self._set_rate(rate, plan)
        if self._reparam is not None:
            self._reparam.start(seed, rate * plan.spec.rate_factor)

    def select(self, trainable_layers=(), plan=None, block_map=None):
        """Train the variables of ``trainable_layers`` from now on (weights and optimizer
        state kept: gradual unfreezing). ``plan`` narrows them to the variables it trains
        (``bitfit``: biases) and sets per-layer update factors (``llrd``; needs
        ``block_map``). A BatchNormalization layer runs in training mode only when it is
        trained (among ``trainable_layers``, ``finetune.batchnorm`` not ``frozen``, an update
        factor above 0, no ``ssf`` / ``lora``); every other one in inference mode."""
        layers = set(trained_layers(self.model, trainable_layers, self.batchnorm))
        keep = (lambda v: True) if plan is None else (lambda v: plan.trains_variable(v.path))
        chosen = frozenset(i for i, (v, name) in enumerate(zip(self.vars, self.var_layer))
                           if name in layers and keep(v))
        factors = plan.learning_rate_scales(block_map) if plan is not None else None
        for i, (m, s, name) in enumerate(zip(self.masks, self.scales, self.var_layer)):
            m.assign(1.0 if i in chosen else 0.0)
            s.assign(1.0 if factors is None else factors.get(name, 1.0))
        self._chosen, self._scaled = chosen, factors is not None
        self._set_batchnorm(frozenset(
            n for n in self._bn if n in layers and not (plan is not None and plan.reparam)
            and (factors is None or factors.get(n, 1.0) > 0)))
        self._reparam = None
        if plan is not None and plan.reparam and layers:
            key = (str(plan.bare), frozenset(layers))
            if key not in self._reparams:   # its variables live as long as the trainer
                from .reparam import make_reparam

                self._reparams[key] = make_reparam(plan, self.model, layers, 1e-3)
            self._reparam = self._reparams[key]

    def _set_batchnorm(self, training: frozenset) -> None:
        """The BatchNormalization layers ``training`` run in training mode, the others
        (``trainable = False``) in inference mode, in every step traced from now on."""
        for name in self._bn:
            self.model.get_layer(name).trainable = name in training
        self._bn_train = training

    def fit(self, dataset, epochs: int, log=None):
        """Train; returns ``(history rows, seconds per epoch)``; NaN loss raises.
        ``log(step, loss=..., seconds=...)`` is called after every epoch (TensorBoard)."""
        rows, times = [], []
        for epoch in range(1, int(epochs) + 1):
            t0 = time.perf_counter()
            # one traced step per batch, no host sync until the epoch ends (a whole epoch
            # inside one graph was 2-3x slower here: the loop body is not optimised alike)
            losses = [self._step_for(x, y)(x, y) for x, y in dataset]
            loss = float(np.mean([float(v) for v in losses])) if losses else float("nan")
            # the selective trainer's first epoch may trace a step: not training time
            times.append(time.perf_counter() - t0 - (self.last_trace if epoch == 1 else 0.0))
            rows.append({"epoch": epoch, "loss": loss})
            if log is not None:
                log(epoch, loss=loss, seconds=times[-1])
            if not np.isfinite(loss):
                raise Diverged(f"loss became NaN/inf at epoch {epoch}")
        return rows, times

    def predict(self, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
        out = [np.asarray(self._infer(images[i:i + batch_size].astype(np.float32, copy=False)))
               for i in range(0, len(images), batch_size)]
        return np.concatenate(out).astype(np.float32)


@trainer
class SelectiveTrainer(MaskedTrainer):
    """One traced train step per *set* of trainable layers, cached for the process.

    The step of a set computes the gradients of that set's variables only, so
    backpropagation stops below the shallowest trained layer and frozen layers
    cost no weight gradients (what Keras' own trainer saves after a recompile),
    while a plan switch is still only an assignment of weights and optimizer state
    (what the masked trainer saves): each set is traced once, when first used, and
    reused across folds and targets. Adam's state starts at zero in every run, as
    in the masked trainer, so the trained weights are the same up to float order.

    Attributes:
        trace_seconds: ``{trainable set: seconds}`` the first use of each set took
            to trace.
    """

    name = "selective"

    @classmethod
    def build(cls, cfg, mcfg, seed: int, precision: str, strategy=None) -> "SelectiveTrainer":
        """The process's shared trainer of this network (:func:`shared_trainer`)."""
        return shared_trainer(cls, mcfg, precision, cfg.study.deterministic,
                              cfg.finetune.learning_rate, cfg.finetune.loss,
                              cfg.finetune.batchnorm)

    def __init__(self, model, learning_rate: float = 1e-4, loss: str = "bce",
                 resolved: str = "fp32", batchnorm: str = "auto"):
        super().__init__(model, learning_rate, loss, resolved, batchnorm)
        self.trace_seconds: Dict[tuple, float] = {}

    def _step_for(self, x, y):
        import tensorflow as tf

        key = (self._chosen, self._scaled, id(self._reparam), self._bn_train)
        if key not in self._steps:
            sub = [self.vars[i] for i in sorted(self._chosen)]
            scales = [self.scales[i] for i in sorted(self._chosen)] if self._scaled else None

            def step(xb, yb):
                with tf.GradientTape() as tape:
                    pred = self.model(xb, training=True)
                    loss = self.loss_fn(yb, pred)
                grads = tape.gradient(loss, sub)
                self._update(grads, sub, scales)
                return loss

            spec_x = tf.TensorSpec((None,) + tuple(x.shape[1:]), x.dtype)
            spec_y = tf.TensorSpec((None,) + tuple(y.shape[1:]), y.dtype)
            t0 = time.perf_counter()
            self._steps[key] = tf.function(step).get_concrete_function(spec_x, spec_y)
            self.trace_seconds[key] = self.last_trace = time.perf_counter() - t0
        return self._steps[key]

    def train(self, plan, steps, rates, epochs, data, init, scratch, **kw) -> Trained:
        """As :meth:`MaskedTrainer.train`; the shared model holds the previous run's weights,
        so a random start (``scratch``) is the fold's seeded random weights."""
        return super().train(plan, steps, rates, epochs, data,
                             scratch() if init is None else init, scratch, **kw)

    def fit(self, dataset, epochs: int, log=None):
        """Train; returns ``(history rows, seconds per epoch)`` without the trace time
        (``self.last_trace`` holds it when this call traced); NaN loss raises.
        ``log(step, loss=..., seconds=...)`` is called after every epoch (TensorBoard)."""
        self.last_trace = 0.0
        if not self._chosen:
            raise ValueError("no trainable layers: nothing to train")
        return super().fit(dataset, epochs, log)


#: one model + trainer per (network, precision), shared by every fold and target of a process
_SHARED: Dict[tuple, object] = {}


def shared_trainer(cls, mcfg, precision: str, deterministic: bool, learning_rate: float,
                   loss: str = "bce", batchnorm: str = "auto"):
    """The process's :class:`SelectiveTrainer` (with its model) for a network config and
    ``finetune.batchnorm``: built once, reused by every fold and target. (The masked trainer
    is built per fold: see :func:`masked_trainer`.)"""
    key = (section_key(mcfg), precision, bool(deterministic), loss, batchnorm)
    if key not in _SHARED:
        # the first shared model starts a clean session; later ones keep the others alive
        resolved = fresh_session(0, precision, deterministic, clear=not _SHARED)
        _SHARED[key] = cls(build_from_config(mcfg), learning_rate, loss, resolved, batchnorm)
        _SHARED[key].initial_seed = 0   # built right after fresh_session seeded 0
    return _SHARED[key]


def masked_trainer(mcfg, seed: int, precision: str, deterministic: bool,
                   learning_rate: float, loss: str = "bce",
                   batchnorm: str = "auto") -> MaskedTrainer:
    """A :class:`MaskedTrainer` on a model built for one fold (a fresh, seeded session)."""
    resolved = fresh_session(seed, precision, deterministic)
    out = MaskedTrainer(build_from_config(mcfg), learning_rate, loss, resolved, batchnorm)
    out.initial_seed = int(seed)   # built right after fresh_session seeded it
    return out
