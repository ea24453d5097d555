"""Synchronous data-parallel training over the workers of ``TF_CONFIG``
(``--distribute multiworker``): the package's own loop, since Keras 3's ``fit`` fails
there (keras-team/keras#20585)."""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np

from ..blocks import BlockMap
from ..exitcodes import UserError
from ..model import build_from_config
from ..plans import Plan
from ..runtime import Diverged, make_dataset, make_loss, predict, resolve_precision
from ..trainable import is_batchnorm, plan_report, trained_layers
from .base import Trained, stage_layers, trainer, warmup_factor, weights_by_layer


@trainer
class MultiworkerTrainer:
    """The :class:`~.base.Trainer` protocol over ``tf.distribute.MultiWorkerMirroredStrategy``:
    every worker runs it with the same data and seed; each step's global batch
    (``finetune.batch_size``) is split across the replicas and the gradients summed, so
    the result equals one process training on the same batches (a test checks it).
    A BatchNormalization layer a stage does not train (every one with
    ``finetune.batchnorm=frozen``) is ``trainable = False``: inference mode, its moving
    statistics kept."""

    name = "multiworker"

    @classmethod
    def build(cls, cfg, mcfg, seed: int, precision: str, strategy=None) -> "MultiworkerTrainer":
        return cls(mcfg, seed, precision, cfg.finetune.loss, strategy, cfg.finetune.batchnorm)

    def __init__(self, mcfg, seed: int, precision: str, loss: str, strategy,
                 batchnorm: str = "auto"):
        import keras

        keras.utils.set_random_seed(seed)
        self.resolved = resolve_precision(precision)
        keras.mixed_precision.set_global_policy(
            "mixed_bfloat16" if self.resolved == "bf16" else "float32")
        with strategy.scope():
            self.model = build_from_config(mcfg)
        self.bm = BlockMap(self.model)
        self.loss, self.strategy, self.batchnorm = loss, strategy, batchnorm

    def train(self, plan: Plan, steps: Sequence[Plan], rates: Sequence[float], epochs: int,
              data, init, scratch: Callable[[], list], *, seed: int, batch_size: int,
              verbose: int = 0, log_dir=None, warmup_epochs: int = 0) -> Trained:
        import keras
        import tensorflow as tf

        strategy, model = self.strategy, self.model
        n = strategy.num_replicas_in_sync
        if batch_size % n:
            raise UserError(f"finetune.batch_size={batch_size} must be a multiple of the "
                            f"{n} replicas of --distribute multiworker")
        loss_fn = make_loss(self.loss, plain=True)   # each replica: its mean / replicas
        keras.utils.set_random_seed(seed)
        model.set_weights(init if init is not None else scratch())
        before = weights_by_layer(model)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA)
        rows, times, chosen_all = [], [], set()
        for i, st in enumerate(steps):
            chosen = trained_layers(model, stage_layers(plan, st, self.bm), self.batchnorm)
            chosen_all |= chosen
            for layer in model.layers:   # a frozen BatchNormalization: inference mode
                if is_batchnorm(layer):
                    layer.trainable = layer.name in chosen
            variables = [v for layer in model.layers if layer.name in chosen
                         for v in layer.trainable_weights]
            if not epochs or not variables:
                continue
            with strategy.scope():
                opt = keras.optimizers.Adam(rates[i])
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

            ds = make_dataset(data[0], data[1], batch_size, shuffle=True,
                              seed=seed + i).with_options(options)
            dist = strategy.experimental_distribute_dataset(ds)
            for epoch in range(1, epochs + 1):
                if warmup_epochs:
                    opt.learning_rate = rates[i] * warmup_factor(epoch, warmup_epochs)
                t0 = time.perf_counter()
                losses = [float(step(b)) for b in dist]
                loss = float(np.mean(losses)) if losses else float("nan")
                times.append(time.perf_counter() - t0)
                rows.append({"epoch": epoch, "loss": loss, "stage": i + 1})
                if not np.isfinite(loss):
                    raise Diverged(f"loss became NaN/inf at epoch {epoch}")
        return Trained(model, plan_report(model, plan, chosen_all), rows, times, before, self.bm,
                       lambda x, batch_size=8: predict(model, x, batch_size))
