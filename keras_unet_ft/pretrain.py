"""Pretraining: one U-Net (or X-Unet) trained on salient-object images, saved once, reused.

docs/paper.md A: XPIE, 10,000 natural images converted to grayscale, 40 epochs,
10 % held out for validation, no augmentation; the model with the best validation
loss is kept. Here the built-in ``synth_salient`` stands in for XPIE unless
``data.pretrain`` names a copy of it. V-Unet is not pretrained here: its encoder is
VGG16's ImageNet weights (a file the user names) and its decoder starts random.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil
import time
from typing import Dict, Optional

import numpy as np

from .config import Config, model_family, pretrained_by_package
from .data.study_data import load_pretrain_data
from .exitcodes import UserError
from .io import FileLock, atomic_write_text, read_csv, read_json, write_csv
from .layout import ModelFolder, pretrained_folder
from .model import build_from_config, model_config, model_identity
from .runtime import (EpochTimer, Diverged, epoch_ordered_dataset, epoch_progress,
                      fresh_session, make_dataset,
                      progress_wanted, strategy_scope, tensorboard_callback)

log = logging.getLogger("keras_unet_ft")


def compile_model(model, learning_rate: float):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy")
    return model


def pretrain(cfg, dataset, out_dir, precision: str = "fp32", verbose: int = 0,
             force: bool = False, strategy=None, deadline: Optional[float] = None
             ) -> pathlib.Path:
    """Pretrain on ``dataset`` (salient objects) and save the best-validation model; one
    process at a time per folder (a lock file beside the model): shard processes started
    into a fresh folder wait for the first one's model and reuse it instead of racing.
    See :func:`_pretrain` for the rest."""
    with FileLock(ModelFolder(out_dir).lock):
        return _pretrain(cfg, dataset, out_dir, precision, verbose, force, strategy, deadline)


def _pretrain(cfg, dataset, out_dir, precision: str = "fp32", verbose: int = 0,
              force: bool = False, strategy=None, deadline: Optional[float] = None
              ) -> pathlib.Path:
    """Pretrain on ``dataset`` (salient objects) and save the best-validation model.

    Writes ``out_dir/model.keras`` (best validation loss), ``history.csv`` and
    ``summary.json``. When ``model.keras`` exists for the same model, data and
    pretraining config, it is reused; with another config it is an error
    (unless ``force``). Every epoch is checkpointed (model, optimizer, epoch: Keras'
    ``BackupAndRestore``; the best model so far and the history): a pretraining
    killed at any moment continues from its last finished epoch when called again.
    With ``deadline`` (``time.time()`` seconds) it stops after the last epoch that
    ends before it and raises :class:`TimeUp`.
    """
    import keras

    folder = ModelFolder(out_dir)
    out_dir, model_path = folder.path, folder.model
    if not pretrained_by_package(cfg.model):
        raise UserError(f"model.kind={cfg.model.kind} is not pretrained by the package "
                        f"({_not_pretrained_why(cfg.model)}); nothing to pretrain")
    key = {"model": cfg.model.model_dump(), "pretrain": cfg.pretrain.model_dump(),
           "data": {"pretrain": cfg.data.pretrain, "pretrain_n": cfg.data.pretrain_n},
           "seed": cfg.study.seed}
    if model_family(cfg.model.kind) != "builtin":   # the encoder's starting weights
        key["identity"] = model_identity(cfg.model)
    key_path = folder.config
    if model_path.exists() and key_path.exists() and not force:
        old = json.loads(key_path.read_text())
        if old == json.loads(json.dumps(key)):
            log.info("pretrained model %s exists for this config: reused", model_path)
            return model_path
        raise UserError(f"{model_path} was pretrained with another config; use another "
                        "output folder or --force-pretrain to retrain")
    pc = cfg.pretrain
    if not 0 < pc.val_fraction < 1:
        raise UserError(f"pretrain.val_fraction must be in (0, 1), got {pc.val_fraction}")
    resolved = fresh_session(cfg.study.seed, precision, cfg.study.deterministic)
    n = len(dataset)
    order = np.random.default_rng(cfg.study.seed).permutation(n)
    if n < 2:
        raise UserError(f"pretraining on {dataset.name} needs at least 2 images (one to train, "
                        f"one to validate); it has {n}")
    n_val = min(n - 1, max(1, int(round(pc.val_fraction * n))))
    val, train = order[:n_val], order[n_val:]
    with strategy_scope(strategy):
        model = compile_model(build_from_config(cfg.model), pc.learning_rate)
    # each epoch's order drawn from (seed, epoch): a resumed pretraining sees the same orders
    tr, epoch_order = epoch_ordered_dataset(dataset.images[train], dataset.masks[train],
                                            pc.batch_size, cfg.study.seed)
    va = make_dataset(dataset.images[val], dataset.masks[val], pc.batch_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp_model, backup, partial = folder.tmp_model, folder.backup, folder.partial_history
    started = folder.started
    if force or not started.exists() or read_json(started) != json.loads(json.dumps(key)):
        for p in (partial, tmp_model):   # a different (or forced) pretraining: start over
            p.unlink(missing_ok=True)
        shutil.rmtree(backup, ignore_errors=True)
        atomic_write_text(started, json.dumps(key, indent=1, sort_keys=True))
    else:
        bad = unreadable_checkpoint(backup, partial, tmp_model)
        if bad:   # killed while a checkpoint was written: set it aside, start over
            for q in (backup, partial, tmp_model):
                if q.exists():
                    aside = q.with_name(q.name + ".bad")   # the latest bad one is kept
                    if aside.is_dir():
                        shutil.rmtree(aside)
                    else:
                        aside.unlink(missing_ok=True)
                    os.replace(q, aside)
            log.warning("pretraining checkpoint %s is unreadable (or from an older version, without "
                        "the random state an exact resume needs); it is set aside as %s.bad "
                        "and pretraining starts again from its first epoch "
                        "(--force-pretrain starts over on purpose)", bad, bad)
        elif backup.exists():
            log.info("pretraining resumes from its last finished epoch (%s)", backup)
    done = _epochs(partial)
    best_so_far = min((r["val_loss"] for r in done), default=None)
    timer = EpochTimer()
    # order matters for a kill between two of them: the history row first (a repeated epoch
    # is read once), then the best model, then the checkpoint that says the epoch is done
    callbacks = [timer,   # first: its per-epoch seconds go into history.csv
                 epoch_order,
                 keras.callbacks.CSVLogger(str(partial), append=True),
                 best_model(tmp_model, best_so_far),
                 atomic_backup(backup),
                 keras.callbacks.TerminateOnNaN()]
    if deadline is not None:
        callbacks.append(stop_before(deadline))
    if not verbose and progress_wanted():   # verbose: Keras' own per-epoch lines instead
        callbacks.append(epoch_progress(pc.epochs, len(train), initial=len(done)))
    if cfg.study.tensorboard:
        callbacks.append(tensorboard_callback(pathlib.Path(cfg.study.tensorboard) / "pretrain"
                                              / cfg.model.kind))
    t0 = time.perf_counter()
    model.fit(tr, validation_data=va, epochs=pc.epochs, verbose=verbose, shuffle=False,
              callbacks=callbacks)
    seconds = time.perf_counter() - t0
    rows = [{**r, "epoch": r["epoch"] + 1} for r in _epochs(partial)]
    if len(rows) < pc.epochs and rows and all(np.isfinite(r["loss"]) for r in rows):
        raise TimeUp(f"pretraining stopped after epoch {len(rows)} of {pc.epochs} to keep "
                     "within --max-minutes; run again to continue")
    # a call killed after the best model was moved into place finishes here again
    moved = not tmp_model.exists() and model_path.exists()
    if (not tmp_model.exists() and not moved) or any(not np.isfinite(r.get("loss", 0.0))
                                                     for r in rows):
        raise Diverged(f"pretraining diverged (loss {rows[-1].get('loss') if rows else '?'})")
    write_csv(folder.history, rows)
    if not moved:
        os.replace(tmp_model, model_path)
    best = min(rows, key=lambda r: r["val_loss"]) if rows else {}
    atomic_write_text(folder.summary, json.dumps({
        "train_images": int(len(train)), "val_images": int(n_val), "epochs": pc.epochs,
        "best_epoch": best.get("epoch"), "best_val_loss": best.get("val_loss"),
        "seconds": seconds, "seconds_per_epoch": float(np.mean(timer.times)) if timer.times else None,
        # the steady state: the median epoch after the first (which holds tracing / compiling)
        "steady_seconds_per_epoch": (float(np.median(timer.times[1:] or timer.times))
                                     if timer.times else None),
        "precision": resolved, "dataset": dataset.name, "source": dataset.source,
    }, indent=1))
    atomic_write_text(key_path, json.dumps(key, indent=1, sort_keys=True))
    partial.unlink(missing_ok=True)
    started.unlink(missing_ok=True)
    shutil.rmtree(backup, ignore_errors=True)
    return model_path


def _epochs(partial: pathlib.Path) -> list:
    """The finished epochs of ``history.partial.csv`` as numbers (``epoch`` 0-based, as
    Keras' CSVLogger writes it), one row per epoch: an epoch repeated after a kill is read
    once, its last row kept."""
    if not partial.exists():
        return []
    by_epoch = {}
    for r in read_csv(partial):
        row = {k: (int(v) if k == "epoch" else float(v)) for k, v in r.items()}
        by_epoch[row["epoch"]] = row
    return [by_epoch[k] for k in sorted(by_epoch)]


def unreadable_checkpoint(backup: pathlib.Path, partial: pathlib.Path,
                          best: pathlib.Path) -> Optional[pathlib.Path]:
    """The first file of a pretraining checkpoint that cannot be read back (a process
    killed while writing it), or None: Keras' weights and epoch in ``backup/``, the history
    so far, the best model so far."""
    import zipfile

    import h5py

    # the files keras.callbacks.BackupAndRestore writes into its folder (Keras' names)
    weights, meta = backup / "latest.weights.h5", backup / "training_metadata.json"
    try:
        if weights.exists():
            with h5py.File(weights, "r") as f:
                f.visititems(lambda name, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)
                if EPOCH_ATTR not in f.attrs:   # an older version's: no random state to resume
                    return weights
    except Exception:  # noqa: BLE001 - any reader error: the file is unusable
        return weights
    try:
        if meta.exists():
            int(json.loads(meta.read_text())["epoch"])
    except Exception:  # noqa: BLE001
        return meta
    try:
        _epochs(partial)
    except Exception:  # noqa: BLE001
        return partial
    try:
        if best.exists():
            with zipfile.ZipFile(best) as z:
                if z.testzip() is not None:
                    return best
    except Exception:  # noqa: BLE001
        return best
    return None


def best_model(path: pathlib.Path, best: Optional[float]):
    """A Keras callback saving the model atomically (temporary file + rename) after each
    epoch whose validation loss is the lowest so far (``best``: the lowest of earlier calls)."""
    import keras

    from .io import atomic_write

    class _Best(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best = best

        def on_epoch_end(self, epoch, logs=None):
            v = float((logs or {}).get("val_loss", np.nan))
            if np.isfinite(v) and (self.best is None or v < self.best):
                self.best = v
                atomic_write(path, self.model.save, suffix=".keras")

    return _Best()


def atomic_backup(backup: pathlib.Path):
    """Keras' ``BackupAndRestore`` (weights, optimizer and epoch after every epoch; restored
    by the next ``fit``) with each file written atomically: a kill while it writes leaves
    the previous epoch's checkpoint, never half a file."""
    import keras

    from .io import atomic_write, atomic_write_text

    class _Atomic(keras.callbacks.BackupAndRestore):
        def _save_model(self):
            backup.mkdir(parents=True, exist_ok=True)

            def write(tmp):   # one file: weights, optimizer, random state and its epoch
                import h5py

                self.model.save_weights(tmp, overwrite=True)
                with h5py.File(tmp, "a") as f:
                    f.attrs[EPOCH_ATTR] = int(self._current_epoch)
                    for k, v in random_state(self.model).items():
                        f.attrs[RANDOM_ATTR + k] = v

            atomic_write(self._weights_path, write, suffix=".weights.h5")
            atomic_write_text(self._training_metadata_path, json.dumps(
                {"epoch": self._current_epoch, "batch": self._last_batch_seen}))

        def on_train_begin(self, logs=None):
            import h5py

            saved = {}
            if pathlib.Path(self._weights_path).exists():
                with h5py.File(self._weights_path, "r") as f:
                    attrs = dict(f.attrs)
                if EPOCH_ATTR in attrs:   # the weights' own epoch decides (a kill may have
                    # come between the weights and the metadata file)
                    atomic_write_text(self._training_metadata_path, json.dumps(
                        {"epoch": int(attrs[EPOCH_ATTR]), "batch": 0}))
                saved = {k[len(RANDOM_ATTR):]: v for k, v in attrs.items()
                         if k.startswith(RANDOM_ATTR)}
            super().on_train_begin(logs)   # weights, optimizer, epoch
            if pathlib.Path(self._weights_path).exists():
                restore_random_state(self.model, saved)

    return _Atomic(str(backup), save_freq="epoch", delete_checkpoint=False)


#: attributes of a pretraining checkpoint's weights file (``backup/latest.weights.h5``): the
#: epochs it holds, and the states of the model's seed generators (dropout), which Keras'
#: ``save_weights`` leaves out
EPOCH_ATTR, RANDOM_ATTR = "unet_ft_epoch", "unet_ft_random:"


def _seed_variables(model) -> list:
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def random_state(model) -> dict:
    """The model's variables that are not weights (its seed generators' states), by path."""
    return {v.path.replace("/", "|"): np.asarray(v.numpy()) for v in _seed_variables(model)}


def restore_random_state(model, saved) -> None:
    """Assign :func:`random_state`'s values back (a mismatch is an error, never ignored)."""
    mine = {v.path.replace("/", "|"): v for v in _seed_variables(model)}
    if set(mine) != set(saved.keys()):
        raise ValueError(f"the checkpoint's random state holds {sorted(saved.keys())}, the "
                         f"model {sorted(mine)}")
    for k, v in mine.items():
        v.assign(saved[k])


class TimeUp(RuntimeError):
    """A time budget (``--max-minutes``) ran out; what is done is kept, a rerun continues."""


def _not_pretrained_why(mcfg) -> str:
    if model_family(mcfg.kind) == "file":
        return "a file: network is the pretrained net"
    if mcfg.kind == "vunet":
        return "V-Unet starts from its VGG16 encoder's weights"
    return "model.pretrain_on_salient=false: the encoder's weights and a random decoder"


def stop_before(deadline: float):
    """A Keras callback stopping training after the epoch that would end past ``deadline``
    (``time.time()`` seconds), judged by the longest epoch so far."""
    import keras

    class _Stop(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self._longest, self._t = 0.0, time.time()

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.time()

        def on_epoch_end(self, epoch, logs=None):
            self._longest = max(self._longest, time.time() - self._t)
            if time.time() + self._longest > deadline:
                self.model.stop_training = True

    return _Stop()


def pretrained_weights_by_kind(cfg: Config, out, kinds, precision, verbose=0, force=False,
                               strategy=None, deadline: Optional[float] = None
                               ) -> Dict[str, list]:
    """Starting weights per model kind: U-Net / X-Unet (and ``encoder:NAME`` with
    ``model.pretrain_on_salient``) pretrained on the salient-object set (reused when
    present); V-Unet and ``encoder:NAME`` otherwise = the encoder's weights + a seeded
    random decoder; a ``file:`` network = the file's weights (it is the pretrained net)."""
    import keras

    result, pre_data = {}, None
    for kind in dict.fromkeys(kinds):
        sub = cfg.model_copy(update={"model": model_config(cfg, kind)})
        if not pretrained_by_package(sub.model):
            fresh_session(cfg.study.seed, precision)
            result[kind] = build_from_config(sub.model).get_weights()
            continue
        d = pretrained_folder(out, kind, cfg.model.kind)
        if not (d.model.exists() and not force):
            pre_data = pre_data or load_pretrain_data(cfg)
        path = pretrain(sub, pre_data, d.path, precision=precision, verbose=verbose, force=force,
                        strategy=strategy, deadline=deadline)
        try:
            result[kind] = keras.saving.load_model(path, compile=False).get_weights()
        except Exception as e:  # noqa: BLE001 - any reader error means the same here
            raise UserError(f"cannot read the pretrained model {path} ({e.__class__.__name__}: "
                            f"{str(e)[:200]}); it may be truncated: run again with "
                            "--force-pretrain to pretrain it anew") from None
    return result
