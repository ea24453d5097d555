"""One fine-tuning run: a plan trained on one fold, evaluated on its held-out images.

:class:`FoldSession` holds the trainer of one (target, fold, model kind) - the one
``study.trainer`` resolves to (:mod:`keras_unet_ft.trainers`) - and trains any plan with
it; :func:`evaluate` scores held-out images (the study, ``finetune`` and ``advise`` alike);
:func:`run_one` trains one plan and returns a typed :class:`RunResult` (summary, per-image
metrics, history, predictions, the model). Writing the result into the results folder is
the study's job.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Dict, List, Optional

import numpy as np

from .config import Config
from .io import atomic_write
from .layout import RunSummary
from .metrics import METRICS, batch_metrics
from .model import build_from_config, loads_weights, model_config
from .blocks import BlockMap
from .plans import Plan, PlanError, check_trainer
from .runtime import Diverged, backend, peak_memory_bytes, reset_peak_memory
from .trainable import mixed_weights
from .trainers import (Trained, clear_shared, make_trainer, resolve_trainer,
                       stage_learning_rate, weights_by_layer)

__all__ = ["Diverged", "FoldSession", "RunResult", "check_trainable", "clear_shared",
           "divergence", "evaluate", "images_per_second", "resolve_trainer", "run_one",
           "save_model", "stage_learning_rate"]

log = logging.getLogger("keras_unet_ft")


def check_trainable(cfg: Config, plans, precision: str, strategy=None,
                    distribute: Optional[str] = None) -> None:
    """Refuse before any training the plans that the trainer ``study.trainer`` resolves to
    (:func:`~keras_unet_ft.trainers.resolve_trainer`) cannot train, e.g. ``autorgn`` with
    ``study.trainer=keras``: every run of them would fail alike."""
    trainer = resolve_trainer(cfg.study.trainer, precision, strategy)
    setting = f"study.trainer={cfg.study.trainer}"
    if trainer != cfg.study.trainer:
        setting += f" with precision {precision}" + (f" and --distribute {distribute}"
                                                     if distribute else "")
    check_trainer(list(dict.fromkeys(str(p) for p in plans)), trainer, setting)


class FoldSession:
    """The trainer of one (target, fold, model kind) and how a plan is handed to it.

    Args:
        cfg: the config (``study.trainer``, ``finetune.*``, the seed).
        fold: the fold (its seed is ``study.seed + fold``).
        precision: ``fp32``, ``bf16``, ``fp16`` or ``auto``.
        strategy: a ``tf.distribute`` strategy, or None.
        kind: the network (``unet``, ``xunet``, ``vunet``); the config's by default.
    """

    def __init__(self, cfg: Config, fold: int, precision: str, strategy=None,
                 kind: Optional[str] = None):
        self.cfg, self.fold, self.strategy, self.precision = cfg, fold, strategy, precision
        self.mcfg = model_config(cfg, kind or cfg.model.kind)
        self.seed = cfg.study.seed + fold
        self.trainer = make_trainer(cfg, self.mcfg, self.seed, precision, strategy)
        self._scratch = None
        self._bm = None

    @property
    def trainer_name(self) -> str:
        """``selective``, ``masked``, ``keras`` or ``multiworker``."""
        return self.trainer.name

    @property
    def resolved(self) -> str:
        """The precision the trainer trains in."""
        return self.trainer.resolved

    @property
    def bm(self):
        """The block map of the trainer's model (the trainers that hold one model)."""
        return self.trainer.bm

    def block_map(self):
        """The block map of this fold's network (the trainer's, or one built to read)."""
        bm = getattr(self.trainer, "bm", None)
        if bm is None:
            if self._bm is None:
                mcfg = (self.mcfg.model_copy(update={"encoder_weights": None})
                        if self.mcfg.kind == "vunet" else self.mcfg)
                self._bm = BlockMap(build_from_config(mcfg))
            bm = self._bm
        return bm

    @property
    def model(self):
        """The trainer's model (the trainers that hold one model; Keras' builds per run), or
        None."""
        return getattr(self.trainer, "model", None)

    def scratch_weights(self):
        """Random initial weights of this fold (seeded), for the ``scratch`` baseline: the
        weights the trainer's model was built with when it was built right after seeding
        this fold's seed (no second build) from initialisers alone, else those of a network
        built after seeding, every weight from its initialiser (not a file's or an encoder's
        weights: :func:`~keras_unet_ft.model.loads_weights`)."""
        import keras

        if self._scratch is None:
            if (getattr(self.trainer, "initial_seed", None) == self.seed
                    and not loads_weights(self.mcfg)):
                self._scratch = self.trainer.initial_weights()
            else:   # a network built with loaded weights (file:, an encoder's): built again
                keras.utils.set_random_seed(self.seed)
                fresh = build_from_config(self.mcfg, random=True)
                self._scratch = fresh.get_weights()
                del fresh
        return self._scratch

    def train(self, plan, train, pretrained_weights, verbose: int = 0,
              log_dir=None) -> Trained:
        """Train ``plan`` (a :class:`Plan` or string) on ``train = (images, masks)``;
        with ``log_dir`` its epoch scalars go to TensorBoard event files there."""
        plan = Plan.parse(plan).bare
        if self.trainer.name not in plan.trainers:
            raise PlanError(f"plan {str(plan)!r} needs the {' or '.join(plan.trainers)} "
                            f"trainer; this run uses the {self.trainer.name} trainer "
                            f"(study.trainer={self.cfg.study.trainer!r}, precision "
                            f"{self.precision!r}"
                            + (", --distribute multiworker" if self.trainer.name == "multiworker"
                               else "") + "); set study.trainer=selective")
        ft = self.cfg.finetune
        # a random start trains every layer: one step, Plan("all")
        steps = [st if plan.from_pretrained else Plan("all") for st in plan.steps]
        rates = [stage_learning_rate(self.cfg, i) for i in range(len(steps))]
        init = pretrained_weights if plan.from_pretrained else None
        fresh = plan.fresh_layers(self.block_map()) if init is not None else frozenset()
        if fresh:   # reinit: some layers start from the fold's random weights
            init = mixed_weights(self.block_map().model, init, self.scratch_weights(), fresh)
        return self.trainer.train(
            plan, steps, rates, ft.epochs if plan.trains else 0, train, init,
            self.scratch_weights, seed=self.seed, batch_size=ft.batch_size, verbose=verbose,
            log_dir=log_dir, warmup_epochs=ft.warmup_epochs)


@dataclasses.dataclass
class Evaluation:
    """How a trained net segments held-out images (:func:`evaluate`)."""

    ids: List[str]
    probs: np.ndarray               # predicted probabilities (N, H, W, 1)
    metrics: Dict[str, np.ndarray]  # per image, per metric
    empty: np.ndarray               # the image's mask is empty
    predicted_empty: np.ndarray     # nothing predicted (probability > 0.5 nowhere)
    diverged: Optional[str]         # why the run must not count (:func:`divergence`), or None

    @property
    def has_object(self) -> np.ndarray:
        return ~self.empty

    def mean(self, metric: str) -> float:
        """Mean over the images with an object (NaN when none has one)."""
        values = self.metrics[metric][self.has_object]
        return float(np.mean(values)) if values.size else float("nan")

    def std(self, metric: str) -> float:
        values = self.metrics[metric][self.has_object]
        return float(np.std(values)) if values.size else float("nan")

    def empty_predicted_empty(self) -> float:
        """Share of the images with an empty mask predicted empty (NaN when none)."""
        return (float(np.mean(self.predicted_empty[self.empty])) if self.empty.any()
                else float("nan"))

    def rows(self) -> List[dict]:
        """``per_image.csv``: id, whether the mask is empty, one column per metric."""
        return [{"id": i, "empty_mask": int(self.empty[j]),
                 **{k: float(self.metrics[k][j]) for k in METRICS}}
                for j, i in enumerate(self.ids)]

    def object_scores(self, metric: str = "dice") -> Dict[str, float]:
        """``{id: score}`` of the images with an object."""
        return {i: float(self.metrics[metric][j]) for j, i in enumerate(self.ids)
                if not self.empty[j]}


def evaluate(predict, images: np.ndarray, masks: np.ndarray, ids, history: List[dict],
             weights=None, batch_size: int = 8) -> Evaluation:
    """Score a trained net on held-out ``images``: every metric per image, which masks are
    empty and which predictions, and whether the run diverged (:func:`divergence` on its
    ``history``, predictions and ``weights``). The one scoring of the study, ``finetune``
    and ``advise``.

    Args:
        predict: ``(images, batch_size=...) -> probabilities``.
        images, masks: ``(N, H, W, 1)``; ids: one per image.
        history: the training's epoch rows (``loss``).
        weights: the trained weights (``{layer: [arrays]}`` or a list), or None.
        batch_size: prediction batch (at least 8).
    """
    probs = predict(images, batch_size=max(int(batch_size), 8))
    empty = masks.reshape(len(masks), -1).max(axis=1) == 0
    predicted_empty = (probs.reshape(len(probs), -1) > 0.5).sum(axis=1) == 0
    return Evaluation(list(ids), probs, batch_metrics(masks, probs), empty, predicted_empty,
                      divergence(history, probs, weights))


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
    A non-finite loss during training raises :class:`Diverged`.
    """
    parsed = Plan.parse(plan)
    per_run = reset_peak_memory()   # False on JAX: one peak for the whole process
    t0 = time.perf_counter()
    tr = session.train(parsed, train, pretrained_weights, verbose, log_dir)
    train_seconds = time.perf_counter() - t0
    peak = peak_memory_bytes()
    after = weights_by_layer(tr.model)
    ev = evaluate(tr.predict, test[0], test[1], test[2], tr.history, after,
                  cfg.finetune.batch_size)
    change = (relative_change(tr.weights_before, after, tr.block_map)
              if parsed.from_pretrained else None)
    none = not parsed.trains
    report = tr.report
    total = report.trainable_params + report.frozen_params
    summary = RunSummary.judged(
        ev.diverged, target=target, fold=fold, plan=plan, model=model_kind, **{
        "encoder_weights": (session.mcfg.encoder_weights
                            if model_kind == "vunet" or model_kind.startswith("encoder:")
                            else None),
        "n_train": int(len(train[0])), "n_test": len(ev.ids), "n_empty": int(ev.empty.sum()),
        "empty_predicted_empty": ev.empty_predicted_empty(),
        **{f"{k}_mean": ev.mean(k) for k in METRICS},
        **{f"{k}_std": ev.std(k) for k in METRICS},
        "trainable_params": 0 if none else report.trainable_params,
        "frozen_params": total if none else report.frozen_params,
        "trainable_layers": [] if none else list(report.trainable_layers),
        "train_seconds": train_seconds,
        "seconds_per_epoch": float(np.mean(tr.epoch_seconds)) if tr.epoch_seconds else 0.0,
        "images_per_second": images_per_second(len(train[0]), tr.epoch_seconds),
        "trace_seconds": tr.trace_seconds,
        "epochs": len(tr.history), "seed": session.seed, "precision": session.resolved,
        "trainer": session.trainer_name, "backend": backend(),
        # GPU memory: this run's peak where the backend can reset its counter (TensorFlow,
        # PyTorch), and the process's peak so far (JAX has only that one)
        "peak_gpu_memory_gib": peak / 2**30 if peak is not None and per_run else None,
        "process_peak_gpu_memory_gib": None if peak is None else peak / 2**30,
        "weight_change": change,
    }).to_dict()
    history = tr.history
    if len(tr.epoch_seconds) == len(history):
        history = [{**r, "seconds": float(t)} for r, t in zip(history, tr.epoch_seconds)]
    return RunResult(summary, ev.rows(), history, ev.ids, ev.probs[..., 0] > 0.5, tr.model)


def save_model(model, path) -> None:
    """Save the network (architecture + weights, no optimizer or loss) atomically: a
    ``.keras`` file that plain ``keras.models.load_model`` loads, no custom objects needed."""

    # rebuilt from its config: uncompiled, so no loss or optimizer is saved (clone_model
    # would compile the copy from the original's compile config)
    bare = type(model).from_config(model.get_config())
    for layer in bare.layers:   # a plan's frozen flags (BatchNorm in inference mode) are the
        layer.trainable = True  # trainer's business, not the saved network's
    bare.set_weights(model.get_weights())
    atomic_write(path, bare.save, suffix=".keras")
