"""The runtime of training: precision, CPU threads, distribution, sessions, input pipelines.

Everything here is about *how* training runs, not *what* is trained:

* the Keras backend: TensorFlow runs everything; JAX or PyTorch (``KERAS_BACKEND``) run
  Keras' own trainer (``study.trainer=keras``), pretraining and evaluation, on arrays
  batched by :func:`make_dataset` without ``tf.data``;

* precision ``auto`` -> fp16 mixed precision on a GPU, bf16 on CPUs with AMX /
  AVX512-BF16, else fp32 (docs/paper.md: bf16 was 3-4x slower on a CPU without AMX);
* :func:`fresh_session` clears Keras, seeds everything and sets the dtype policy
  *after* ``clear_session()`` (which resets it);
* :func:`configure_cpu_threads`: one inter-op thread for large nets on CPU-only
  machines (measured in BENCHMARKS.md);
* ``tf.data`` pipelines, prediction in batches, an epoch timer callback.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
import time
from typing import Optional, Tuple

import numpy as np

from .config import LOSSES, PRECISIONS
from .exitcodes import UserError
# the progress display lives at the bottom of the package (data loading uses it too)
from .progress import (NO_PROGRESS_ENV, PLAIN_PROGRESS_STEP, PlainProgress,  # noqa: F401
                       progress_bar, progress_wanted)

log = logging.getLogger("keras_unet_ft")
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


#: the Python module each Keras backend needs
BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch",
                   "numpy": "numpy", "openvino": "openvino"}


def configured_backend() -> str:
    """The backend Keras will choose, read as Keras reads it but without importing Keras:
    ``KERAS_BACKEND``, else ``"backend"`` in ``$KERAS_HOME/keras.json`` (``~/.keras``), else
    ``tensorflow``."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as f:
            return str(json.load(f).get("backend") or "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def require_installed_backend(prog: str) -> None:
    """Exit with status 2 and one line naming the fix when the configured Keras backend's
    package is not installed (instead of Keras' traceback at the first import)."""
    import importlib.util

    name = configured_backend()
    module = BACKEND_MODULES.get(name, name)
    if importlib.util.find_spec(module) is not None:
        return
    others = [b for b in ("tensorflow", "jax", "torch") if b != name
              and importlib.util.find_spec(b) is not None]
    fix = ("pip install -e '.[cpu]' (TensorFlow for CPUs; '.[gpu]' with CUDA)"
           if name == "tensorflow" else f"pip install {module}")
    print(f"{prog}: error: Keras' backend is {name!r} (KERAS_BACKEND, else keras.json, else "
          f"tensorflow) but {module} is not installed: {fix}"
          + (f", or use the installed one: KERAS_BACKEND={others[0]}" if others else ""),
          file=sys.stderr)
    raise SystemExit(2)


@contextlib.contextmanager
def _stderr_silenced():
    """Send the process's file descriptor 2 to /dev/null for the block: TensorFlow 2.21
    writes its absl / oneDNN start-up notices there from C++, where neither
    ``TF_CPP_MIN_LOG_LEVEL`` nor Python's ``sys.stderr`` reaches. A Python exception
    raised inside still reaches the user: the descriptor is restored before it propagates."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def import_backend(verbose: bool = False) -> str:
    """Import Keras and its backend once, at a command's start, and return the backend's
    name. Unless ``verbose``, the backend's start-up notices (TensorFlow: "All log messages
    before absl::InitializeLog()", "oneDNN custom operations are on", CUDA probing) are not
    shown; ``TF_CPP_MIN_LOG_LEVEL`` is set to 3 unless the user set it, which also quiets
    TensorFlow's later C++ notices.

    Examples:
        >>> import_backend()          # doctest: +SKIP
        'tensorflow'
    """
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    module = BACKEND_MODULES.get(configured_backend(), configured_backend())
    with (contextlib.nullcontext() if verbose else _stderr_silenced()):
        if module == "tensorflow":
            import tensorflow  # noqa: F401  (its notices are printed at import)
        import keras
    if not verbose:   # TensorFlow's Python INFO lines ("Assets written to: /tmp/...")
        logging.getLogger("tensorflow").setLevel(logging.WARNING)
    return keras.backend.backend()


def backend() -> str:
    """Keras' backend: ``tensorflow`` (every trainer), ``jax`` or ``torch`` (Keras' own)."""
    import keras

    return keras.backend.backend()


def has_gpu() -> bool:
    """Whether the Keras backend sees a GPU."""
    b = backend()
    if b == "jax":
        import jax

        return jax.default_backend() in ("gpu", "cuda", "rocm")
    if b == "torch":
        import torch

        return bool(torch.cuda.is_available())
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def reset_peak_memory() -> bool:
    """Start a new peak for :func:`peak_memory_bytes` where the backend can (TensorFlow,
    PyTorch); False where it cannot (no GPU, JAX: one peak for the life of the process), so
    a later peak is the process's, not a run's."""
    try:
        if not has_gpu():
            return False
        b = backend()
        if b == "torch":
            import torch

            torch.cuda.reset_peak_memory_stats()
            return True
        if b == "tensorflow":
            import tensorflow as tf

            tf.config.experimental.reset_memory_stats("GPU:0")
            return True
    except Exception as e:  # noqa: BLE001 - a counter that cannot be reset: no per-run peak
        log.debug("peak GPU memory not reset: %s", e)
    return False


def peak_memory_bytes() -> Optional[int]:
    """Peak accelerator memory of this process since :func:`reset_peak_memory` (bytes), or
    None without a GPU.

    TensorFlow: ``tf.config.experimental.get_memory_info("GPU:0")["peak"]``; JAX: the
    first device's ``memory_stats()["peak_bytes_in_use"]``; PyTorch:
    ``torch.cuda.max_memory_allocated()``.
    """
    try:
        if not has_gpu():
            return None
        b = backend()
        if b == "jax":
            import jax

            stats = jax.local_devices()[0].memory_stats() or {}
            return int(stats["peak_bytes_in_use"]) if "peak_bytes_in_use" in stats else None
        if b == "torch":
            import torch

            return int(torch.cuda.max_memory_allocated())
        import tensorflow as tf

        return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
    except Exception as e:  # a backend without the counter: no number rather than a wrong one
        log.debug("peak GPU memory not available: %s", e)
        return None


def resolve_precision(precision: str = "auto") -> str:
    """``auto`` -> fp16 on a GPU, bf16 on CPUs with AMX / AVX512-BF16, else fp32."""
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if has_gpu():
        return "fp16"
    flags = _cpu_flags()
    if "amx_bf16" in flags or "avx512_bf16" in flags:
        return "bf16"
    return "fp32"


_SAID: list = []   # the determinism note of another backend: said once per process


def fresh_session(seed: int, precision: str = "fp32", deterministic: bool = False,
                  clear: bool = True) -> str:
    """Clear Keras' state (unless ``clear`` is False: models kept alive stay usable),
    seed everything, then set the dtype policy.

    ``clear_session()`` resets the global dtype policy, so the policy is set
    after it (every time). Returns the resolved precision.
    """
    import keras

    if clear:
        keras.backend.clear_session()
    keras.utils.set_random_seed(int(seed))
    if deterministic and backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif deterministic and not _SAID and has_gpu():
        _SAID.append(True)
        log.info("study.deterministic sets TensorFlow's op determinism only; on %s GPUs use "
                 "its own switch (JAX: XLA_FLAGS=--xla_gpu_deterministic_ops=true)", backend())
    resolved = resolve_precision(precision)
    keras.mixed_precision.set_global_policy(_POLICY[resolved])
    return resolved


def set_threads(n: Optional[int]) -> None:
    """Limit TensorFlow's intra-op threads (call before TensorFlow runs anything; the
    other backends take theirs from their own settings, e.g. ``XLA_FLAGS``)."""
    if n and backend() == "tensorflow":
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
    if base_filters < LARGE_BASE_FILTERS or backend() != "tensorflow" or has_gpu():
        return None
    import tensorflow as tf

    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already initialised (e.g. in a notebook)
        return None
    return 1


_MULTIWORKER = []
#: the file descriptor on which a supervised multiworker process says its cluster is up
PEERS_READY_FD = "UNET_FT_PEERS_READY_FD"


def get_strategy(distribute: Optional[str] = None):
    """``None`` -> no strategy; ``"mirrored"`` -> ``tf.distribute.MirroredStrategy`` (the GPUs
    of one machine); ``"multiworker"`` -> ``tf.distribute.MultiWorkerMirroredStrategy`` over
    the machines of ``TF_CONFIG`` (made once per process, before any other TensorFlow op)."""
    if distribute in (None, "", "none"):
        return None
    if distribute == "mirrored":
        import tensorflow as tf

        return tf.distribute.MirroredStrategy()
    if distribute == "multiworker":
        if _MULTIWORKER:
            return _MULTIWORKER[0]
        worker_task()   # TF_CONFIG checked before TensorFlow starts
        import signal

        import tensorflow as tf

        strategy = tf.distribute.MultiWorkerMirroredStrategy()   # blocks until all are up
        # one collective: every worker answers (the constructor alone may return before)
        strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)
        # TensorFlow's coordination service catches SIGTERM (to note a preemption) and goes
        # on: a user's SIGTERM ends the worker again
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        ready = os.environ.get(PEERS_READY_FD)
        if ready:   # the supervising process (unet-ft) waits for this line
            os.write(int(ready), b"up\n")
        _MULTIWORKER.append(strategy)
        return _MULTIWORKER[0]
    raise UserError(f"distribute must be 'mirrored', 'multiworker' or none, got {distribute!r}")


def worker_task() -> Tuple[str, int, int]:
    """``(type, index, workers)`` of this process from ``TF_CONFIG``; errors name what is
    missing. Example ``TF_CONFIG``: ``{"cluster": {"worker": ["host1:12345",
    "host2:12345"]}, "task": {"type": "worker", "index": 0}}``."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise UserError('--distribute multiworker needs TF_CONFIG, e.g. {"cluster": {"worker": '
                        '["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
                        " (the same cluster on every machine, each its own index)")
    try:
        cfg = json.loads(raw)
        workers = list(cfg["cluster"].get("worker", [])) + list(cfg["cluster"].get("chief", []))
        kind, index = str(cfg["task"]["type"]), int(cfg["task"]["index"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UserError(f"TF_CONFIG is not a cluster + task JSON object: {raw[:200]!r}") from None
    if not workers:
        raise UserError(f"TF_CONFIG names no workers: {raw[:200]!r}")
    return kind, index, len(workers)


def is_chief(strategy=None) -> bool:
    """Whether this process writes the results: always, except the non-chief workers of a
    multi-worker run (the chief is ``chief`` 0, else ``worker`` 0)."""
    if strategy is None or not _MULTIWORKER or strategy is not _MULTIWORKER[0]:
        return True
    kind, index, _ = worker_task()
    has_chief = "chief" in json.loads(os.environ["TF_CONFIG"])["cluster"]
    return kind == "chief" or (not has_chief and kind == "worker" and index == 0)


def is_multiworker(strategy) -> bool:
    return strategy is not None and bool(_MULTIWORKER) and strategy is _MULTIWORKER[0]


def strategy_scope(strategy):
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


# ---------------------------------------------------------------------------
# input pipelines
def make_dataset(images: np.ndarray, masks: np.ndarray, batch_size: int, shuffle: bool = False,
                 seed: int = 0, numpy: bool = False):
    """Batches of (image, float mask): a ``tf.data`` pipeline with prefetch on TensorFlow,
    a :class:`keras.utils.PyDataset` of array batches on the other backends (``numpy=True``
    forces it). With ``shuffle`` the order is a seeded permutation, drawn anew every epoch.
    """
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if numpy or backend() != "tensorflow":
        return _array_batches(images, masks, int(batch_size), shuffle, int(seed))
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images.astype(np.float32, copy=False),
                                             masks.astype(np.float32)))
    if shuffle:
        ds = ds.shuffle(len(images), seed=int(seed), reshuffle_each_iteration=True)
    return ds.batch(int(batch_size)).prefetch(tf.data.AUTOTUNE)


def epoch_ordered_dataset(images: np.ndarray, masks: np.ndarray, batch_size: int, seed: int,
                          numpy: bool = False):
    """Batches of (image, float mask) for ``model.fit`` whose order in epoch ``e`` is a
    permutation drawn from ``(seed, e)`` alone, and the Keras callback that tells the
    dataset which epoch is starting: a training resumed at epoch ``e`` (``BackupAndRestore``)
    sees the order an uninterrupted one sees there. (``make_dataset``'s reshuffling draws
    each epoch's order from how many epochs the dataset has served, which restarts at 0 in
    a new process.)

    Returns:
        ``(dataset, callback)``: pass both to ``fit`` (``callbacks=[callback, ...]``).

    Examples:
        >>> import numpy as np
        >>> x = np.arange(4, dtype="float32").reshape(4, 1, 1, 1)
        >>> ds, cb = epoch_ordered_dataset(x, x > 1, 4, seed=0, numpy=True)
        >>> cb.on_epoch_begin(3); a = ds[0][0].ravel()
        >>> cb.on_epoch_begin(0); cb.on_epoch_begin(3); bool((ds[0][0].ravel() == a).all())
        True
    """
    import keras

    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n, batch_size, seed = len(images), int(batch_size), int(seed)
    if numpy or backend() != "tensorflow":
        data = _array_batches(images, masks, batch_size, True, seed)

        class _NumpyEpoch(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                data.order = np.random.default_rng([seed, int(epoch)]).permutation(n)

        data.on_epoch_end = lambda: None   # the order is the callback's, per epoch
        return data, _NumpyEpoch()
    import tensorflow as tf

    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    x = tf.constant(images.astype(np.float32, copy=False))
    y = tf.constant(masks.astype(np.float32))

    def order(_):
        return tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))

    ds = (tf.data.Dataset.from_tensors(0).map(order).unbatch().batch(batch_size)
          .map(lambda i: (tf.gather(x, i), tf.gather(y, i)))
          .apply(tf.data.experimental.assert_cardinality(-(-n // batch_size)))
          .prefetch(tf.data.AUTOTUNE))

    class _TfEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, e, logs=None):
            epoch.assign(int(e))

    cb = _TfEpoch()
    cb.epoch_variable = epoch   # kept alive with the callback
    return ds, cb


def _array_batches(images, masks, batch_size: int, shuffle: bool, seed: int):
    import keras

    class ArrayBatches(keras.utils.PyDataset):
        """Array batches in a seeded order, reshuffled at every epoch's end."""

        def __init__(self):
            super().__init__()
            self.x = images.astype(np.float32, copy=False)
            self.y = masks.astype(np.float32)
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(self.x)) if shuffle else np.arange(len(self.x))

        def __len__(self):
            return -(-len(self.x) // batch_size)

        def __getitem__(self, i):
            if not 0 <= i < len(self):
                raise IndexError(f"batch {i} of {len(self)}")
            idx = self.order[i * batch_size:(i + 1) * batch_size]
            return self.x[idx], self.y[idx]

        def on_epoch_end(self):
            if shuffle:
                self.order = self.rng.permutation(len(self.x))

    return ArrayBatches()


def predict(model, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Probabilities ``(N, H, W, 1)`` as float32."""
    out = model.predict(images.astype(np.float32, copy=False), batch_size=batch_size, verbose=0)
    return np.asarray(out, dtype=np.float32)


DICE_SMOOTH = 1.0  # added to numerator and denominator of the soft Dice (empty masks: loss 0)


def make_loss(name: str = "bce", plain: bool = False):
    """The fine-tuning loss ``name`` as a function ``(y_true, y_pred) -> scalar``.

    Args:
        name: ``bce`` (binary cross-entropy, the paper's), ``dice`` (soft Dice per image,
            ``1 - (2|Y.P| + 1) / (|Y| + |P| + 1)``, averaged over the batch) or ``bce+dice``
            (their sum).
        plain: plain functions only (no ``keras.losses.Loss`` object, which divides by the
            replicas by itself inside a ``tf.distribute`` replica context).

    Examples:
        >>> import numpy as np
        >>> y = np.ones((1, 4, 4, 1), "float32")
        >>> round(float(make_loss("dice")(y, y)), 6)
        0.0
    """
    import keras

    if name not in LOSSES:
        raise UserError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}")
    ops = keras.ops
    bce = (keras.losses.BinaryCrossentropy() if not plain else
           lambda y_true, y_pred: ops.mean(keras.losses.binary_crossentropy(
               ops.cast(y_true, "float32"), ops.cast(y_pred, "float32"))))

    def dice(y_true, y_pred):
        y = ops.cast(y_true, "float32")
        p = ops.cast(y_pred, "float32")
        axes = tuple(range(1, len(p.shape)))
        inter = ops.sum(y * p, axis=axes)
        den = ops.sum(y, axis=axes) + ops.sum(p, axis=axes)
        return ops.mean(1.0 - (2.0 * inter + DICE_SMOOTH) / (den + DICE_SMOOTH))

    if name == "bce":
        return bce
    if name == "dice":
        return dice
    return lambda y_true, y_pred: bce(y_true, y_pred) + dice(y_true, y_pred)


def history_rows(history) -> list:
    h = history.history if history is not None else {}
    n = len(next(iter(h.values()))) if h else 0
    return [{"epoch": i + 1, **{k: float(v[i]) for k, v in h.items()}} for i in range(n)]


class EpochTimer:
    """A Keras callback recording seconds per epoch (``times``), also put into the epoch's
    logs as ``seconds`` for the callbacks after it (place it first)."""

    def __new__(cls):
        import keras

        class _Timer(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.times = []

            def on_epoch_begin(self, epoch, logs=None):
                self._t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.times.append(time.perf_counter() - self._t)
                if logs is not None:   # callbacks after it (CSVLogger, History) record it
                    logs["seconds"] = self.times[-1]

        return _Timer()


def epoch_progress(epochs: int, images: int, desc: str = "pretraining", initial: int = 0):
    """A Keras callback showing progress over ``epochs`` (:func:`progress_bar`: a tqdm bar on
    a terminal, plain lines elsewhere): loss, validation loss and training images per second
    of the last epoch, and the time left (from the epochs so far). ``initial``: epochs
    already done (a resumed training)."""
    import keras

    class _Bar(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.bar = progress_bar(total=epochs, initial=initial, desc=desc, unit="epoch")

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            seconds = max(time.perf_counter() - self._t, 1e-9)
            post = {k: f"{float(logs[k]):.4f}" for k in ("loss", "val_loss") if k in logs}
            post["images/s"] = f"{images / seconds:.1f}"
            self.bar.set_postfix(post, refresh=False)
            self.bar.update(1)

        def on_train_end(self, logs=None):
            self.bar.close()

    return _Bar()


TENSORBOARD_HINT = "pip install 'keras-unet-ft[tensorboard]'"


def require_tensorboard() -> None:
    """Fail early, with the fix, when ``--tensorboard`` is asked without TensorBoard."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise UserError(f"--tensorboard needs the tensorboard package: {TENSORBOARD_HINT}"
                        ) from None


def tensorboard_callback(log_dir):
    """Keras' TensorBoard callback (epoch scalars, no graph or profile) writing to ``log_dir``."""
    import keras

    require_tensorboard()
    return keras.callbacks.TensorBoard(str(log_dir), write_graph=False, update_freq="epoch",
                                       profile_batch=0)


class ScalarLog:
    """Epoch scalars of the selective and masked trainers as TensorBoard event files,
    under the names Keras' callback uses (``epoch_loss``, ``epoch_seconds``), so every
    run of a study reads alike in TensorBoard.

    Args:
        log_dir: the run's folder of event files (created).
    """

    def __init__(self, log_dir):
        import tensorflow as tf

        require_tensorboard()
        self._tf = tf
        self.writer = tf.summary.create_file_writer(str(log_dir))

    def __call__(self, step: int, **scalars) -> None:
        with self.writer.as_default():
            for name, value in scalars.items():
                self._tf.summary.scalar(f"epoch_{name}", float(value), step=int(step))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Diverged(RuntimeError):
    """Training diverged: a non-finite loss stopped it, or its weights, predictions or loss
    show it after (:func:`keras_unet_ft.finetune.divergence`). The one exception for that
    event: the study records the run ``diverged``, ``finetune`` keeps no model, ``advise``
    drops the plan."""
