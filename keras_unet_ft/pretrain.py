"""Pretraining: one U-Net (or X-Unet) trained on salient-object images, saved once, reused.

docs/paper.md A: XPIE, 10,000 natural images converted to grayscale, 40 epochs,
10 % held out for validation, no augmentation; the model with the best validation
loss is kept. Here the built-in ``synth_salient`` stands in for XPIE unless
``data.pretrain`` names a copy of it. V-Unet is not pretrained here: its encoder is
VGG16's ImageNet weights (a file the user names) and its decoder starts random.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import time
from typing import Dict

import numpy as np

from .config import Config
from .data.study_data import load_pretrain_data
from .io import atomic_write_text, write_csv
from .layout import pretrained_dir
from .model import build_from_config, model_config
from .runtime import (EpochTimer, NaNLossError, fresh_session, history_rows, make_dataset,
                      strategy_scope)

log = logging.getLogger("keras_unet_ft")


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


def pretrained_weights_by_kind(cfg: Config, out, kinds, precision, verbose=0, force=False,
                               strategy=None) -> Dict[str, list]:
    """Starting weights per model kind: U-Net / X-Unet pretrained on the salient-object set
    (reused when present); V-Unet = its VGG16 encoder weights + a seeded random decoder."""
    import keras

    result, pre_data = {}, None
    for kind in dict.fromkeys(kinds):
        sub = dataclasses.replace(cfg, model=model_config(cfg, kind))
        if kind == "vunet":
            fresh_session(cfg.study.seed, precision)
            result[kind] = build_from_config(sub.model).get_weights()
            continue
        d = pretrained_dir(out, kind, cfg.model.kind)
        if not ((d / "model.keras").exists() and not force):
            pre_data = pre_data or load_pretrain_data(cfg)
        path = pretrain(sub, pre_data, d, precision=precision, verbose=verbose, force=force,
                        strategy=strategy)
        try:
            result[kind] = keras.saving.load_model(path, compile=False).get_weights()
        except Exception as e:  # noqa: BLE001 - any reader error means the same here
            raise ValueError(f"cannot read the pretrained model {path} ({e.__class__.__name__}: "
                             f"{str(e)[:200]}); it may be truncated: run again with "
                             "--force-pretrain to pretrain it anew") from None
    return result
