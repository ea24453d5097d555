"""Training: sessions, precision, input pipelines, pretraining and one fine-tuning run.

Defaults follow PAPER.md D (the paper does not state them): Adam with learning
rate 1e-4, binary cross-entropy, batch size 2 - zhixuhao's choices.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import logging
import os
import pathlib
import tempfile
import time
from typing import Optional

import numpy as np

log = logging.getLogger("keras_unet_ft")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_POLICY = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


# ---------------------------------------------------------------------------
# precision and sessions
@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def resolve_precision(precision: str = "auto") -> str:
    """``auto`` -> fp16 on a GPU, bf16 on CPUs with AMX / AVX512-BF16, else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if has_gpu():
        return "fp16"
    flags = _cpu_flags()
    if "amx_bf16" in flags or "avx512_bf16" in flags:
        return "bf16"
    return "fp32"


def fresh_session(seed: int, precision: str = "fp32", deterministic: bool = False) -> str:
    """Clear Keras' state, seed everything, then set the dtype policy.

    ``clear_session()`` resets the global dtype policy, so the policy is set
    after it (every time). Returns the resolved precision.
    """
    import keras
    import tensorflow as tf

    keras.backend.clear_session()
    keras.utils.set_random_seed(int(seed))
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    resolved = resolve_precision(precision)
    keras.mixed_precision.set_global_policy(_POLICY[resolved])
    return resolved


def set_threads(n: Optional[int]) -> None:
    """Limit TensorFlow's intra-op threads (call before TensorFlow runs anything)."""
    if n:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(int(n))
        tf.config.threading.set_inter_op_parallelism_threads(max(1, int(n)))


LARGE_BASE_FILTERS = 32  # from here on one conv keeps every core busy by itself


def configure_cpu_threads(base_filters: int) -> Optional[int]:
    """On a machine without a GPU, run one TensorFlow op at a time for large nets.

    Measured on 2 cores (BENCHMARKS.md): the paper's U-Net (base 64, 256 px) trains
    at 0.35 images/s with one inter-op thread vs 0.24 with TensorFlow's default
    (concurrent ops fight over the cores); the quick net (base 8, 64 px) is faster
    with the default (125 vs 100 images/s). Returns the value set, or None when left
    alone (small net, a GPU, or TensorFlow already running).
    """
    if base_filters < LARGE_BASE_FILTERS or has_gpu():
        return None
    import tensorflow as tf

    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already initialised (e.g. in a notebook)
        return None
    return 1


def get_strategy(distribute: Optional[str] = None):
    """``None`` -> no strategy; ``"mirrored"`` -> ``tf.distribute.MirroredStrategy``."""
    if distribute in (None, "", "none"):
        return None
    if distribute == "mirrored":
        import tensorflow as tf

        return tf.distribute.MirroredStrategy()
    raise ValueError(f"distribute must be 'mirrored' or none, got {distribute!r}")


def strategy_scope(strategy):
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


# ---------------------------------------------------------------------------
# input pipelines
def make_dataset(images: np.ndarray, masks: np.ndarray, batch_size: int, shuffle: bool = False,
                 seed: int = 0):
    """A ``tf.data`` pipeline of (image, float mask) batches with prefetch."""
    import tensorflow as tf

    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ds = tf.data.Dataset.from_tensor_slices((images.astype(np.float32, copy=False),
                                             masks.astype(np.float32)))
    if shuffle:
        ds = ds.shuffle(len(images), seed=int(seed), reshuffle_each_iteration=True)
    return ds.batch(int(batch_size)).prefetch(tf.data.AUTOTUNE)


def predict(model, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Probabilities ``(N, H, W, 1)`` as float32."""
    out = model.predict(images.astype(np.float32, copy=False), batch_size=batch_size, verbose=0)
    return np.asarray(out, dtype=np.float32)


# ---------------------------------------------------------------------------
# files
def atomic_write_text(path, text: str) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_csv(path, rows, fieldnames=None) -> None:
    """Write dict rows as CSV atomically."""
    import io

    rows = list(rows)
    fieldnames = fieldnames or (list(rows[0].keys()) if rows else [])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fieldnames, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    atomic_write_text(path, buf.getvalue())


def history_rows(history) -> list:
    h = history.history if history is not None else {}
    n = len(next(iter(h.values()))) if h else 0
    return [{"epoch": i + 1, **{k: float(v[i]) for k, v in h.items()}} for i in range(n)]


class EpochTimer:
    """A Keras callback recording seconds per epoch."""

    def __new__(cls):
        import keras

        class _Timer(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.times = []

            def on_epoch_begin(self, epoch, logs=None):
                self._t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.times.append(time.perf_counter() - self._t)

        return _Timer()


class NaNLossError(RuntimeError):
    """Training stopped on a NaN loss (Keras' TerminateOnNaN)."""


# ---------------------------------------------------------------------------
# pretraining
def build_from_config(mcfg):
    from .model import build_model

    kw = dict(input_shape=(mcfg.size, mcfg.size, 1))
    if mcfg.kind == "unet":
        kw.update(base_filters=mcfg.base_filters, depth=mcfg.depth, dropout=mcfg.dropout)
    elif mcfg.kind == "xunet":
        kw.update(base_filters=mcfg.base_filters, depth=mcfg.depth)
    else:
        kw.update(encoder_weights=mcfg.encoder_weights)
    return build_model(mcfg.kind, **kw)


def compile_model(model, learning_rate: float):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy")
    return model


def pretrain(cfg, dataset, out_dir, precision: str = "fp32", verbose: int = 0,
             force: bool = False, strategy=None) -> pathlib.Path:
    """Pretrain on ``dataset`` (salient objects) and save the best-validation model.

    Writes ``out_dir/model.keras`` (best validation loss), ``history.csv`` and
    ``summary.json``. When ``model.keras`` exists for the same model, data and
    pretraining config, it is reused; with another config it is an error
    (unless ``force``).
    """
    import keras

    out_dir = pathlib.Path(out_dir)
    model_path = out_dir / "model.keras"
    key = {"model": vars(cfg.model).copy(), "pretrain": vars(cfg.pretrain).copy(),
           "data": {"pretrain": cfg.data.pretrain, "pretrain_n": cfg.data.pretrain_n},
           "seed": cfg.study.seed}
    key_path = out_dir / "config.json"
    if model_path.exists() and key_path.exists() and not force:
        old = json.loads(key_path.read_text())
        if old == json.loads(json.dumps(key)):
            log.info("pretrained model %s exists for this config: reused", model_path)
            return model_path
        raise ValueError(f"{model_path} was pretrained with another config; use another "
                         "output folder or --force-pretrain to retrain")
    pc = cfg.pretrain
    if not 0 < pc.val_fraction < 1:
        raise ValueError(f"pretrain.val_fraction must be in (0, 1), got {pc.val_fraction}")
    resolved = fresh_session(cfg.study.seed, precision, cfg.study.deterministic)
    n = len(dataset)
    order = np.random.default_rng(cfg.study.seed).permutation(n)
    n_val = max(1, int(round(pc.val_fraction * n)))
    val, train = order[:n_val], order[n_val:]
    with strategy_scope(strategy):
        model = compile_model(build_from_config(cfg.model), pc.learning_rate)
    tr = make_dataset(dataset.images[train], dataset.masks[train], pc.batch_size, True,
                      cfg.study.seed)
    va = make_dataset(dataset.images[val], dataset.masks[val], pc.batch_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp_model = out_dir / "model.tmp.keras"
    timer = EpochTimer()
    callbacks = [keras.callbacks.ModelCheckpoint(str(tmp_model), monitor="val_loss",
                                                 save_best_only=True),
                 keras.callbacks.TerminateOnNaN(), timer]
    t0 = time.perf_counter()
    hist = model.fit(tr, validation_data=va, epochs=pc.epochs, verbose=verbose, shuffle=False,
                     callbacks=callbacks)
    seconds = time.perf_counter() - t0
    rows = history_rows(hist)
    if not tmp_model.exists() or any(not np.isfinite(r.get("loss", 0.0)) for r in rows):
        raise NaNLossError(f"pretraining diverged (loss {rows[-1].get('loss') if rows else '?'})")
    write_csv(out_dir / "history.csv", rows)
    os.replace(tmp_model, model_path)
    best = min(rows, key=lambda r: r["val_loss"]) if rows else {}
    atomic_write_text(out_dir / "summary.json", json.dumps({
        "train_images": int(len(train)), "val_images": int(n_val), "epochs": pc.epochs,
        "best_epoch": best.get("epoch"), "best_val_loss": best.get("val_loss"),
        "seconds": seconds, "seconds_per_epoch": float(np.mean(timer.times)) if timer.times else None,
        "precision": resolved, "dataset": dataset.name, "source": dataset.source,
    }, indent=1))
    atomic_write_text(key_path, json.dumps(key, indent=1, sort_keys=True))
    return model_path


# ---------------------------------------------------------------------------
# one traced training step for every plan of a fold
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
    study uses :func:`keras_unet_ft.plans.apply_plan` + ``model.fit``.

    Args:
        model: a built model; all its layers are set trainable.
        learning_rate: Adam learning rate.
    """

    def __init__(self, model, learning_rate: float = 1e-4):
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
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.optimizer.build(self.vars)
        self.loss_fn = keras.losses.BinaryCrossentropy()
        self._model_state = [np.array(v.numpy()) for v in model.variables]  # incl. seed states
        self._opt_state = [np.array(v.numpy()) for v in self.optimizer.variables]
        self._step = tf.function(self._train_step)
        self._infer = tf.function(lambda x: model(x, training=False))

    def _train_step(self, x, y):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            pred = self.model(x, training=True)
            loss = self.loss_fn(y, pred)
        grads = tape.gradient(loss, self.vars)
        grads = [g * tf.cast(m, g.dtype) for g, m in zip(grads, self.masks)]
        self.optimizer.apply_gradients(zip(grads, self.vars))
        return loss

    def reset(self, weights=None, trainable_layers=(), learning_rate=None):
        """Back to the initial state (or ``weights``), fresh optimizer, masks for a plan."""
        for v, val in zip(self.model.variables, self._model_state):
            v.assign(val)
        if weights is not None:
            self.model.set_weights(weights)
        for v, val in zip(self.optimizer.variables, self._opt_state):
            v.assign(val)
        if learning_rate is not None:
            self.optimizer.learning_rate = float(learning_rate)
        chosen = set(trainable_layers)
        for m, name in zip(self.masks, self.var_layer):
            m.assign(1.0 if name in chosen else 0.0)

    def fit(self, dataset, epochs: int):
        """Train; returns ``(history rows, seconds per epoch)``; NaN loss raises."""
        rows, times = [], []
        for epoch in range(1, int(epochs) + 1):
            t0 = time.perf_counter()
            # one traced step per batch, no host sync until the epoch ends (a whole epoch
            # inside one graph was 2-3x slower here: the loop body is not optimised alike)
            losses = [self._step(x, y) for x, y in dataset]
            loss = float(np.mean([float(v) for v in losses])) if losses else float("nan")
            times.append(time.perf_counter() - t0)
            rows.append({"epoch": epoch, "loss": loss})
            if not np.isfinite(loss):
                raise NaNLossError(f"loss became NaN/inf at epoch {epoch}")
        return rows, times

    def predict(self, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
        out = [np.asarray(self._infer(images[i:i + batch_size].astype(np.float32, copy=False)))
               for i in range(0, len(images), batch_size)]
        return np.concatenate(out).astype(np.float32)
