"""One fine-tuning run: a plan trained on one fold, evaluated on its held-out images.

:class:`FoldSession` holds the model of one (target, fold, model kind) and trains
any plan on it; :func:`run_one` trains one plan and returns a typed
:class:`RunResult` (summary, per-image metrics, history, predictions, the model).
Writing the result into the results folder is the study's job.

Two trainers:

* ``masked`` (:class:`MaskedTrainer`): one traced train step per fold for every
  plan; a plan is a 0/1 gradient mask per variable. Adam starts from zero moments
  in every run, so a masked weight stays bit-identical - the same result as
  freezing it. Frozen layers' gradients are still computed (no speed gain).
* ``keras``: trainable flags and ``model.fit``, for fp16 loss scaling, ``tf.distribute``
  and the JAX / PyTorch backends (frozen layers cost less). One-stage plans without
  ``tf.distribute`` use :class:`KerasRuns`: one compiled model per trainable set, kept for
  the process, so no run recompiles what an earlier run compiled.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Dict, List, Optional

import numpy as np

from .config import Config
from .exitcodes import UserError
from .io import atomic_write
from .blocks import BlockMap
from .metrics import METRICS, batch_metrics
from .model import build_from_config, model_config
from .plans import Plan, PlanError
from .trainable import apply_plan, plan_report
from .runtime import (EpochTimer, NaNLossError, ScalarLog, backend, fresh_session, history_rows,
                      is_multiworker, peak_memory_bytes, reset_peak_memory, resolve_precision,
                      make_dataset, make_loss, predict, strategy_scope, tensorboard_callback)

log = logging.getLogger("keras_unet_ft")


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
    ``benchmarks/`` for the step time per plan). Used by the study when the
    precision is fp32 or bf16 and no distribution strategy is set; otherwise the
    study uses :func:`keras_unet_ft.trainable.apply_plan` + ``model.fit``.

    Args:
        model: a built model; all its layers are set trainable.
        learning_rate: Adam learning rate.
    """

    def __init__(self, model, learning_rate: float = 1e-4, loss: str = "bce"):
        import keras
        import tensorflow as tf

        self.model = model
        model.trainable = True
        for layer in model.layers:
            layer.trainable = True
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
        self._steps: Dict[tuple, object] = {}
        self._infer = tf.function(lambda x: model(x, training=False))

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
            grads = [g * tf.cast(m, g.dtype) for g, m in zip(grads, self.masks)]
            self._apply(grads, self.vars, scales)
            return loss

        return tf.function(step)

    def _step_for(self, x, y):
        key = ("masked", self._scaled)
        if key not in self._steps:
            self._steps[key] = self._make_step(self._scaled)
        return self._steps[key]

    def reset(self, weights=None, trainable_layers=(), learning_rate=None, plan=None,
              block_map=None):
        """Back to the initial state (or ``weights``), fresh optimizer, and
        :meth:`select` the trained variables."""
        for v, val in zip(self.model.variables, self._model_state):
            v.assign(val)
        if weights is not None:
            self.model.set_weights(weights)
        for v, val in zip(self.optimizer.variables, self._opt_state):
            v.assign(val)
        if learning_rate is not None:
            self.optimizer.learning_rate = float(learning_rate)
        self.select(trainable_layers, plan, block_map)

    def select(self, trainable_layers=(), plan=None, block_map=None):
        """Train the variables of ``trainable_layers`` from now on (weights and optimizer
        state kept: gradual unfreezing). ``plan`` narrows them to the variables it trains
        (``bitfit``: biases) and sets per-layer update factors (``llrd``; needs
        ``block_map``)."""
        layers = set(trainable_layers)
        keep = (lambda v: True) if plan is None else (lambda v: plan.trains_variable(v.path))
        chosen = frozenset(i for i, (v, name) in enumerate(zip(self.vars, self.var_layer))
                           if name in layers and keep(v))
        factors = plan.learning_rate_scales(block_map) if plan is not None else None
        for i, (m, s, name) in enumerate(zip(self.masks, self.scales, self.var_layer)):
            m.assign(1.0 if i in chosen else 0.0)
            s.assign(1.0 if factors is None else factors.get(name, 1.0))
        self._chosen, self._scaled = chosen, factors is not None

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
            times.append(time.perf_counter() - t0)
            rows.append({"epoch": epoch, "loss": loss})
            if log is not None:
                log(epoch, loss=loss, seconds=times[-1])
            if not np.isfinite(loss):
                raise NaNLossError(f"loss became NaN/inf at epoch {epoch}")
        return rows, times

    def predict(self, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
        out = [np.asarray(self._infer(images[i:i + batch_size].astype(np.float32, copy=False)))
               for i in range(0, len(images), batch_size)]
        return np.concatenate(out).astype(np.float32)


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

    def __init__(self, model, learning_rate: float = 1e-4, loss: str = "bce"):
        super().__init__(model, learning_rate, loss)
        self.trace_seconds: Dict[tuple, float] = {}
        self._last_trace = 0.0

    def _step_for(self, x, y):
        import tensorflow as tf

        key = (self._chosen, self._scaled)
        if key not in self._steps:
            sub = [self.vars[i] for i in sorted(self._chosen)]
            scales = [self.scales[i] for i in sorted(self._chosen)] if self._scaled else None

            def step(xb, yb):
                with tf.GradientTape() as tape:
                    pred = self.model(xb, training=True)
                    loss = self.loss_fn(yb, pred)
                grads = tape.gradient(loss, sub)
                self._apply(grads, sub, scales)
                return loss

            spec_x = tf.TensorSpec((None,) + tuple(x.shape[1:]), x.dtype)
            spec_y = tf.TensorSpec((None,) + tuple(y.shape[1:]), y.dtype)
            t0 = time.perf_counter()
            self._steps[key] = tf.function(step).get_concrete_function(spec_x, spec_y)
            self.trace_seconds[key] = self._last_trace = time.perf_counter() - t0
        return self._steps[key]

    def fit(self, dataset, epochs: int, log=None):
        """Train; returns ``(history rows, seconds per epoch)`` without the trace time
        (``self._last_trace`` holds it when this call traced); NaN loss raises.
        ``log(step, loss=..., seconds=...)`` is called after every epoch (TensorBoard)."""
        self._last_trace = 0.0
        if not self._chosen:
            raise ValueError("no trainable layers: nothing to train")
        rows, times = [], []
        for epoch in range(1, int(epochs) + 1):
            t0 = time.perf_counter()
            losses = []
            for x, y in dataset:
                losses.append(self._step_for(x, y)(x, y))
            loss = float(np.mean([float(v) for v in losses])) if losses else float("nan")
            times.append(time.perf_counter() - t0 - (self._last_trace if epoch == 1 else 0.0))
            rows.append({"epoch": epoch, "loss": loss})
            if log is not None:
                log(epoch, loss=loss, seconds=times[-1])
            if not np.isfinite(loss):
                raise NaNLossError(f"loss became NaN/inf at epoch {epoch}")
        return rows, times


#: one model + trainer per (network, precision), shared by every fold and target of a process
_SHARED: Dict[tuple, tuple] = {}


def shared_selective(mcfg, precision: str, deterministic: bool, learning_rate: float,
                     loss: str = "bce"):
    """The process's model, block map and :class:`SelectiveTrainer` for a network config."""
    key = (dataclasses.astuple(mcfg), precision, bool(deterministic), loss)
    if key not in _SHARED:
        # the first shared model starts a clean session; later ones keep the others alive
        resolved = fresh_session(0, precision, deterministic, clear=not _SHARED)
        model = build_from_config(mcfg)
        _SHARED[key] = (model, BlockMap(model), SelectiveTrainer(model, learning_rate, loss),
                        resolved)
    return _SHARED[key]


def clear_shared() -> None:
    """Forget the shared models (tests; a new Keras session)."""
    _SHARED.clear()
    _KERAS_RUNS.clear()


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
    key = (dataclasses.astuple(mcfg), precision, bool(deterministic), loss)
    if key not in _KERAS_RUNS:
        _KERAS_RUNS[key] = KerasRuns(mcfg, precision, deterministic, loss)
    return _KERAS_RUNS[key]


def resolve_trainer(trainer: str, precision: str, strategy=None, steps: int = 0) -> str:
    """``auto``: the selective trainer (one traced step per trainable set, frozen layers
    cost nothing, no retrace per run; BENCHMARKS.md), Keras' own for fp16 (loss
    scaling) or tf.distribute. ``masked`` stays available for comparison. On a Keras
    backend other than TensorFlow (``KERAS_BACKEND=jax`` or ``torch``) only Keras' own
    trainer exists, without ``--distribute``."""
    if trainer not in ("auto", "selective", "masked", "keras"):
        raise UserError(f"study.trainer must be auto, selective, masked or keras, got "
                        f"{trainer!r}")
    b = backend()
    if b != "tensorflow":
        if strategy is not None:
            raise UserError(f"--distribute needs the TensorFlow backend (KERAS_BACKEND is "
                            f"{b!r})")
        if trainer in ("selective", "masked"):
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
    if trainer in ("masked", "selective") and (strategy is not None or precision == "fp16"):
        raise UserError(f"the {trainer} trainer supports fp32/bf16 without tf.distribute; "
                        "use study.trainer=keras")
    return trainer


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


def weights_by_layer(model) -> Dict[str, List[np.ndarray]]:
    return {l.name: [np.array(w) for w in l.get_weights()] for l in model.layers if l.weights}


def relative_change(before, after, bm) -> Dict[str, float]:
    """``||W_after - W_before|| / ||W_before||`` per block (keys: block index as text)."""
    out = {}
    for b in bm.blocks:
        num = den = 0.0
        for name in b.weighted_layers:
            for w0, w1 in zip(before[name], after[name]):
                num += float(np.sum((w1.astype(np.float64) - w0) ** 2))
                den += float(np.sum(w0.astype(np.float64) ** 2))
        out[str(b.index)] = float(np.sqrt(num / den)) if den > 0 else 0.0
    return out


def _shifted(log, offset: int):
    """``log`` with its step moved by ``offset`` (stages and gradual epochs: one x axis)."""
    if log is None:
        return None
    return lambda step, **scalars: log(step + offset, **scalars)


@dataclasses.dataclass
class Trained:
    """What :meth:`FoldSession.train` returns."""

    model: object                 # the Keras model, trained
    report: object                # PlanReport: trainable layers and parameter counts
    history: List[dict]           # one row per epoch (and stage)
    epoch_seconds: List[float]
    weights_before: Dict[str, List[np.ndarray]]
    block_map: BlockMap
    predict: object               # images -> probabilities
    trace_seconds: float = 0.0    # tracing a train step in this run (selective: first use)


class FoldSession:
    """The model of one (target, fold, model kind) and how its plans are trained.

    With the masked trainer (default) the model is built and its train step
    traced once per fold; each plan then only resets weights, optimizer state
    and gradient masks. With the Keras trainer every plan rebuilds the model,
    applies the plan (``apply_plan``: trainable flags + recompile) and calls
    ``model.fit`` - needed for fp16 loss scaling and ``tf.distribute``.
    """

    def __init__(self, cfg: Config, fold: int, precision: str, strategy=None,
                 kind: Optional[str] = None):
        self.cfg, self.fold, self.strategy = cfg, fold, strategy
        self.mcfg = model_config(cfg, kind or cfg.model.kind)
        self.seed = cfg.study.seed + fold
        steps = cfg.finetune.epochs * -(-cfg.finetune.augment_total // cfg.finetune.batch_size)
        self.kind = resolve_trainer(cfg.study.trainer, precision, strategy, steps)
        self.precision = precision
        self.trainer = None
        self._scratch = None
        if self.kind == "masked":
            self.resolved = fresh_session(self.seed, precision, cfg.study.deterministic)
            self.model = build_from_config(self.mcfg)
            self.bm = BlockMap(self.model)
            self.trainer = MaskedTrainer(self.model, cfg.finetune.learning_rate,
                                         cfg.finetune.loss)
        elif self.kind == "multiworker":
            import keras

            keras.utils.set_random_seed(self.seed)
            self.resolved = resolve_precision(precision)
            keras.mixed_precision.set_global_policy(
                "mixed_bfloat16" if self.resolved == "bf16" else "float32")
            with strategy.scope():
                self.model = build_from_config(self.mcfg)
            self.bm = BlockMap(self.model)
        elif self.kind == "selective":
            self.model, self.bm, self.trainer, self.resolved = shared_selective(
                self.mcfg, precision, cfg.study.deterministic, cfg.finetune.learning_rate,
                cfg.finetune.loss)

    def scratch_weights(self):
        """Random initial weights of this fold (seeded), for the ``scratch`` baseline."""
        import keras

        if self._scratch is None:
            keras.utils.set_random_seed(self.seed)
            fresh = build_from_config(self.mcfg)
            self._scratch = fresh.get_weights()
            del fresh
        return self._scratch

    def train(self, plan, train, pretrained_weights, verbose: int = 0,
              log_dir=None) -> Trained:
        """Train ``plan`` (a :class:`Plan` or string) on ``train = (images, masks)``;
        with ``log_dir`` its epoch scalars go to TensorBoard event files there."""
        plan = Plan.parse(plan).bare
        ft = self.cfg.finetune
        # a random start trains every layer: one step, Plan("all")
        steps = [st if plan.from_pretrained else Plan("all") for st in plan.steps]
        lrs = [stage_learning_rate(self.cfg, i) for i in range(len(steps))]
        epochs = ft.epochs if plan.trains else 0
        init = pretrained_weights if plan.from_pretrained else None
        if self.kind == "selective" and init is None:
            init = self.scratch_weights()
        if self.kind in ("masked", "selective"):
            log = ScalarLog(log_dir) if log_dir is not None and epochs else None
            try:
                return self._train_masked(plan, steps, lrs, epochs, train, init, log)
            finally:
                if log is not None:
                    log.close()
        if self.kind not in plan.trainers:
            raise PlanError(f"plan {str(plan)!r} needs the {' or '.join(plan.trainers)} "
                            f"trainer; this run uses the {self.kind} trainer (study.trainer="
                            f"{self.cfg.study.trainer!r}, precision {self.precision!r}"
                            + (", --distribute multiworker" if self.kind == "multiworker"
                               else "") + "); set study.trainer=selective")
        if self.kind == "multiworker":
            return self._train_multiworker(plan, steps, lrs, epochs, train, init)
        return self._train_keras(plan, steps, lrs, epochs, train, init, verbose, log_dir)

    def _train_masked(self, plan, steps, lrs, epochs, train, init, log=None) -> Trained:
        import keras

        ft = self.cfg.finetune
        rows, times, chosen_all, trace = [], [], set(), 0.0
        for i, st in enumerate(steps):
            chosen = st.trainable_layers(self.bm) if plan.trains else frozenset()
            chosen_all |= chosen
            first = st.epoch_layers(self.bm, 1) if plan.trains else frozenset()
            if i == 0:
                self.trainer.reset(init, first, lrs[i], st, self.bm)
                keras.utils.set_random_seed(self.seed)
                before = weights_by_layer(self.model)
            else:  # next stage: keep the weights, fresh optimizer state
                self.trainer.reset(self.model.get_weights(), first, lrs[i], st, self.bm)
            if not epochs:
                continue
            ds = make_dataset(train[0], train[1], ft.batch_size, shuffle=True,
                              seed=self.seed + i)
            if st.layers_change:  # one more block each epoch, optimizer state kept
                r, t = [], []
                for e in range(1, epochs + 1):
                    self.trainer.select(st.epoch_layers(self.bm, e), st, self.bm)
                    re_, te = self.trainer.fit(ds, 1, _shifted(log, len(rows) + e - 1))
                    trace += getattr(self.trainer, "_last_trace", 0.0)
                    r.append({**re_[0], "epoch": e,
                              "trained_blocks": min(e, len(self.bm.blocks))})
                    t += te
            else:
                r, t = self.trainer.fit(ds, epochs, _shifted(log, len(rows)))
                trace += getattr(self.trainer, "_last_trace", 0.0)
            rows += [{**x, "stage": i + 1} for x in r]
            times += t
        report = plan_report(self.model, plan, chosen_all)
        return Trained(self.model, report, rows, times, before, self.bm, self.trainer.predict,
                       trace)

    def _train_multiworker(self, plan, steps, lrs, epochs, train, init) -> Trained:
        """Synchronous data parallel training over the workers of ``TF_CONFIG``: every
        worker runs this with the same data and seed; each step's global batch
        (``finetune.batch_size``) is split across the replicas and the gradients summed, so
        the result equals one process training on the same batches (a test checks it)."""
        import keras
        import tensorflow as tf

        ft, strategy, model = self.cfg.finetune, self.strategy, self.model
        n = strategy.num_replicas_in_sync
        if ft.batch_size % n:
            raise UserError(f"finetune.batch_size={ft.batch_size} must be a multiple of the "
                            f"{n} replicas of --distribute multiworker")
        loss_fn = make_loss(ft.loss, plain=True)   # each replica: its mean / replicas
        keras.utils.set_random_seed(self.seed)
        model.set_weights(init if init is not None else self.scratch_weights())
        before = weights_by_layer(model)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = \
            tf.data.experimental.AutoShardPolicy.DATA
        rows, times, chosen_all = [], [], set()
        for i, st in enumerate(steps):
            chosen = st.trainable_layers(self.bm) if plan.trains else frozenset()
            chosen_all |= chosen
            variables = [v for layer in model.layers if layer.name in chosen
                         for v in layer.trainable_weights]
            if not epochs or not variables:
                continue
            with strategy.scope():
                opt = keras.optimizers.Adam(lrs[i])
                opt.build(variables)

            def replica_step(x, y, opt=opt, variables=variables):
                with tf.GradientTape() as tape:
                    pred = model(x, training=True)
                    loss = loss_fn(y, tf.cast(pred, "float32")) / n   # mean over the global batch
                grads = tape.gradient(loss, variables)
                opt.apply_gradients(zip(grads, variables))
                return loss

            @tf.function
            def step(batch, replica_step=replica_step):
                per = strategy.run(replica_step, args=batch)
                return strategy.reduce(tf.distribute.ReduceOp.SUM, per, axis=None)

            ds = make_dataset(train[0], train[1], ft.batch_size, shuffle=True,
                              seed=self.seed + i).with_options(options)
            dist = strategy.experimental_distribute_dataset(ds)
            for epoch in range(1, epochs + 1):
                t0 = time.perf_counter()
                losses = [float(step(b)) for b in dist]
                loss = float(np.mean(losses)) if losses else float("nan")
                times.append(time.perf_counter() - t0)
                rows.append({"epoch": epoch, "loss": loss, "stage": i + 1})
                if not np.isfinite(loss):
                    raise NaNLossError(f"loss became NaN/inf at epoch {epoch}")
        report = plan_report(model, plan, chosen_all)
        return Trained(model, report, rows, times, before, self.bm,
                       lambda x, batch_size=8: predict(model, x, batch_size))

    def _train_keras_cached(self, plan, st, lr, epochs, train, init, verbose,
                            log_dir=None) -> Trained:
        """One-stage plans without ``tf.distribute``: :class:`KerasRuns` (no recompile)."""
        import keras

        ft = self.cfg.finetune
        runs = shared_keras_runs(self.mcfg, self.precision, self.cfg.study.deterministic, ft.loss)
        self.resolved = runs.resolved
        chosen = frozenset(st.trainable_layers(runs.block_map())) if plan.trains else frozenset()
        model, bm = runs.start(chosen, init if init is not None else self.scratch_weights(), lr)
        keras.utils.set_random_seed(self.seed)
        before = weights_by_layer(model)
        rows, times = [], []
        if epochs:
            r, times = _fit(model, train, ft.batch_size, self.seed, epochs, verbose, log_dir)
            rows = [{**x, "stage": 1} for x in r]
        report = plan_report(model, plan, chosen)
        # the first run of a trainable set compiles in its first epoch (kept in its time;
        # images_per_second leaves that epoch out)
        return Trained(model, report, rows, times, before, bm,
                       lambda x, batch_size=8: predict(model, x, batch_size))

    def _train_keras(self, plan, steps, lrs, epochs, train, init, verbose,
                     log_dir=None) -> Trained:
        import keras

        ft = self.cfg.finetune
        if self.strategy is None and len(steps) == 1:
            return self._train_keras_cached(plan, steps[0], lrs[0], epochs, train, init,
                                            verbose, log_dir)
        self.resolved = fresh_session(self.seed, self.precision, self.cfg.study.deterministic)
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
                                    optimizer=keras.optimizers.Adam(lrs[i]),
                                    loss=make_loss(ft.loss))
            chosen_all |= set(report.trainable_layers)
            if epochs:
                r, t = _fit(model, train, ft.batch_size, self.seed + i, epochs, verbose,
                            None if log_dir is None else
                            log_dir if len(steps) == 1 else f"{log_dir}/stage_{i + 1}")
                rows += [{**x, "stage": i + 1} for x in r]
                times += t
        report = plan_report(model, plan, chosen_all)
        return Trained(model, report, rows, times, before, bm,
                       lambda x, batch_size=8: predict(model, x, batch_size))


def _fit(model, train, batch_size: int, seed: int, epochs: int, verbose: int = 0,
         log_dir=None):
    """Keras' ``fit`` on ``train`` (shuffled, seeded): ``(history rows, seconds per epoch)``;
    a NaN / inf loss raises :class:`NaNLossError`."""
    import keras

    timer = EpochTimer()
    ds = make_dataset(train[0], train[1], batch_size, shuffle=True, seed=seed)
    callbacks = [timer, keras.callbacks.TerminateOnNaN()]
    if log_dir is not None:
        callbacks.append(tensorboard_callback(log_dir))
    history = model.fit(ds, epochs=epochs, verbose=verbose, shuffle=False, callbacks=callbacks)
    rows = history_rows(history)
    losses = [x.get("loss", np.nan) for x in rows]
    if len(losses) < epochs or not np.all(np.isfinite(losses)):
        raise NaNLossError(f"loss became NaN/inf at epoch {len(losses)}")
    return rows, timer.times


@dataclasses.dataclass
class RunResult:
    """One finished run: what the study writes into its folder."""

    summary: dict                 # summary.json (layout.RUN_SUMMARY_KEYS + metrics)
    per_image: List[dict]         # id + one value per metric
    history: List[dict]
    ids: List[str]
    predictions: np.ndarray       # bool (N, H, W), prediction > 0.5
    model: object                 # the trained Keras model (saved when asked)


DIVERGED_LOSS_RATIO = 2.0   # last epoch's loss above this multiple of the first: diverged
CONSTANT_PREDICTION = 1e-6  # probabilities spanning less than this: a dead net


def divergence(history: List[dict], probs: np.ndarray, weights=None) -> Optional[str]:
    """Why a finished run must not count (None when it may): non-finite weights (a net
    whose weights became NaN can keep a finite loss and predict nothing), a non-finite loss
    or prediction, a loss that ends far above where it started, or the same prediction for
    every pixel.

    Args:
        history: the epochs' logs (``loss`` read). probs: predicted probabilities.
        weights: the trained network's weights: ``{layer: [arrays]}`` or a list of arrays.
    """
    if weights is not None:
        named = (weights.items() if isinstance(weights, dict)
                 else ((f"tensor {i}", [w]) for i, w in enumerate(weights)))
        bad = [name for name, ws in named if any(not np.all(np.isfinite(np.asarray(w, float)))
                                                 for w in ws)]
        if bad:
            return (f"weights became non-finite (NaN or inf) in {len(bad)} layer(s), e.g. "
                    f"{', '.join(bad[:3])}")
    losses = [float(r.get("loss", np.nan)) for r in history]
    if losses and not np.all(np.isfinite(losses)):
        return f"loss became non-finite ({losses})"
    if probs.size and not np.all(np.isfinite(probs)):
        return "predictions became non-finite (NaN or inf)"
    if len(losses) >= 2 and losses[-1] > DIVERGED_LOSS_RATIO * losses[0]:
        return (f"loss rose from {losses[0]:.4g} to {losses[-1]:.4g} (more than "
                f"{DIVERGED_LOSS_RATIO}x)")
    if probs.size and float(np.ptp(probs)) < CONSTANT_PREDICTION:
        return f"every pixel of every test image is predicted {float(probs.flat[0]):.4g}"
    return None


def images_per_second(n_images: int, epoch_seconds: List[float]) -> Optional[float]:
    """Training images per second in the steady state: ``n_images`` over the median epoch
    after the first (whose time holds Keras' tracing / XLA compilation); the one epoch
    when there is only one; None without epochs.

    Examples:
        >>> images_per_second(600, [40.0, 10.0, 12.0, 11.0])
        54.54545454545455
    """
    times = list(epoch_seconds)[1:] or list(epoch_seconds)
    if not times or not n_images:
        return None
    t = float(np.median(times))
    return n_images / t if t > 0 else None


def run_one(cfg: Config, target: str, fold: int, plan: str, model_kind: str, train, test,
            pretrained_weights, session: FoldSession, verbose: int = 0,
            log_dir=None) -> RunResult:
    """Train ``plan`` on ``train``, evaluate on ``test = (images, masks, ids)``.

    Metrics are means over the test images *with an object* (images whose mask is
    empty would score Dice 1.0 by predicting nothing); for the images with an empty
    mask the share predicted empty is reported apart (``empty_predicted_empty``).
    A run whose training diverged gets status ``diverged`` (see :func:`divergence`):
    its numbers are kept in its files but out of every table's means and verdicts.
    """
    ft = cfg.finetune
    parsed = Plan.parse(plan)
    per_run = reset_peak_memory()   # False on JAX: one peak for the whole process
    t0 = time.perf_counter()
    try:
        tr = session.train(parsed, train, pretrained_weights, verbose, log_dir)
    except NaNLossError as e:
        raise Diverged(str(e)) from None
    train_seconds = time.perf_counter() - t0
    peak = peak_memory_bytes()
    probs = tr.predict(test[0], batch_size=max(ft.batch_size, 8))
    m = batch_metrics(test[1], probs)
    empty = test[1].reshape(len(test[1]), -1).max(axis=1) == 0
    pred_empty = (probs.reshape(len(probs), -1) > 0.5).sum(axis=1) == 0
    lesion = ~empty
    after = weights_by_layer(tr.model)
    change = None if not parsed.from_pretrained else relative_change(tr.weights_before, after,
                                                                  tr.block_map)
    ids = list(test[2])
    none = not parsed.trains
    report = tr.report
    total = report.trainable_params + report.frozen_params
    why = divergence(tr.history, probs, after)

    def mean(k):
        return float(np.mean(m[k][lesion])) if lesion.any() else float("nan")

    def std(k):
        return float(np.std(m[k][lesion])) if lesion.any() else float("nan")

    summary = {
        "status": "ok" if why is None else "diverged", "target": target, "fold": fold,
        "plan": plan, "model": model_kind,
        "encoder_weights": (session.mcfg.encoder_weights if model_kind == "vunet" else None),
        "n_train": int(len(train[0])), "n_test": int(len(ids)),
        "n_empty": int(empty.sum()),
        "empty_predicted_empty": (float(np.mean(pred_empty[empty])) if empty.any()
                                  else float("nan")),
        **{f"{k}_mean": mean(k) for k in METRICS},
        **{f"{k}_std": std(k) for k in METRICS},
        "trainable_params": 0 if none else report.trainable_params,
        "frozen_params": total if none else report.frozen_params,
        "trainable_layers": [] if none else list(report.trainable_layers),
        "train_seconds": train_seconds,
        "seconds_per_epoch": float(np.mean(tr.epoch_seconds)) if tr.epoch_seconds else 0.0,
        "images_per_second": images_per_second(len(train[0]), tr.epoch_seconds),
        "trace_seconds": tr.trace_seconds,
        "epochs": len(tr.history), "seed": session.seed, "precision": session.resolved,
        "trainer": session.kind, "backend": backend(),
        # GPU memory: this run's peak where the backend can reset its counter (TensorFlow,
        # PyTorch), and the process's peak so far (JAX has only that one)
        "peak_gpu_memory_gib": peak / 2**30 if peak is not None and per_run else None,
        "process_peak_gpu_memory_gib": None if peak is None else peak / 2**30,
        "weight_change": change,
    }
    if why is not None:
        summary["reason"] = f"diverged: {why}"
    per_image = [{"id": i, "empty_mask": int(empty[j]), **{k: float(m[k][j]) for k in METRICS}}
                 for j, i in enumerate(ids)]
    history = tr.history
    if len(tr.epoch_seconds) == len(history):
        history = [{**r, "seconds": float(t)} for r, t in zip(history, tr.epoch_seconds)]
    return RunResult(summary, per_image, history, ids, probs[..., 0] > 0.5, tr.model)


class Diverged(RuntimeError):
    """Training stopped on a non-finite loss: the run is recorded ``diverged``."""


def save_model(model, path) -> None:
    """Save the network (architecture + weights, no optimizer or loss) atomically: a
    ``.keras`` file that plain ``keras.models.load_model`` loads, no custom objects needed."""

    # rebuilt from its config: uncompiled, so no loss or optimizer is saved (clone_model
    # would compile the copy from the original's compile config)
    bare = type(model).from_config(model.get_config())
    bare.set_weights(model.get_weights())
    atomic_write(path, bare.save, suffix=".keras")
