"""Use the result: fine-tune one plan on all images, segment new images, export the model.

Three steps after a study (``unet-ft finetune``, ``unet-ft predict``, ``unet-ft export``):

* :func:`finetune_model` trains one plan (the study's recommendation, say) on every
  image of a target - or on all but a seeded validation share - from a pretrained
  model, and writes ``model.keras`` (plain Keras: ``keras.models.load_model`` loads it
  with no custom objects), ``history.csv``, ``summary.json`` and ``config.json``.
* :func:`predict_images` segments image files (every format the loaders read) with a
  saved model and writes, at each input's own size, the probability map, the binary
  mask and an overlay as PNG, plus ``predictions.csv``.
* :func:`export_model` writes a TensorFlow SavedModel or a TFLite file.

Images are prepared as the loaders prepare them (luminance in [0, 1], resized with
anti-aliasing to the model's input); probabilities are resized back to the input's
size (bilinear) before the threshold.

Examples:
    >>> from keras_unet_ft.config import load_config
    >>> cfg = load_config("smoke")
    >>> summary = finetune_model(cfg, "sim_bus", "deep_to_shallow:3", "model_dir")  # doctest: +SKIP
    >>> predict_images("model_dir", ["scans/"], "masks/")                           # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import time
from typing import List, Optional, Sequence

import numpy as np

from .config import EXPORT_FORMATS, THRESHOLD, Config, model_family, pretrained_by_package
from .data.preprocess import (IMAGE_EXTENSIONS, largest_value, read_image, resize_image, to_gray,
                              twelve_bit)
from .data.study_data import fold_arrays, load_target
from .exitcodes import UserError
from .finetune import FoldSession, check_trainable, evaluate, save_model
from .io import atomic_write, write_csv, write_json
from .layout import (MANIFEST, PREDICT_RECORD, PREDICTIONS_TABLE, RUNS, ModelFolder,
                     RunSummary, predicted_image, pretrained_folder, weights_path)
from .metrics import METRICS
from .model import build_from_config, model_config
from .plans import Plan
from .pretrain import pretrained_weights_by_kind
from .provenance import write_provenance
from .runtime import Diverged, get_strategy, is_chief, resolve_precision

log = logging.getLogger("keras_unet_ft")

OVERLAY_COLOUR = (1.0, 0.15, 0.1)  # red tint over the predicted foreground
OVERLAY_ALPHA = 0.4


# -- finding and loading a model ----------------------------------------------------------
def resolve_model(path) -> pathlib.Path:
    """The ``.keras`` file behind ``path``: the file itself, a ``unet-ft finetune`` output
    folder or a study's run folder (``runs/<target>/<plan>/fold_<k>``) holding ``model.keras``.

    Raises:
        FileNotFoundError: nothing there, or a study folder (which run is meant is named
            in the message).
    """
    p = pathlib.Path(path)
    if p.is_file():
        if p.suffix != ".keras":
            raise UserError(f"{p}: expected a Keras model file (.keras), a finetune output "
                            "folder or a study run folder")
        return p
    if p.is_dir():
        if weights_path(p).exists():
            return weights_path(p)
        if (p / MANIFEST).exists() or (p / RUNS).is_dir():
            kept = sorted(str(q.parent) for q in p.glob("runs/**/model.keras"))
            hint = (f"; runs with a kept model: {', '.join(kept[:5])}"
                    + (f" (+{len(kept) - 5} more)" if len(kept) > 5 else "") if kept else
                    "; it kept no fine-tuned model (study.save_weights=all keeps every run's)")
            raise FileNotFoundError(f"{p} is a study folder: give one run folder{hint}")
        raise FileNotFoundError(f"no model.keras in {p}")
    raise FileNotFoundError(f"model {p} not found")


def load_model(path):
    """Load a saved segmentation model (no compile); errors name the file."""
    import keras

    import zipfile

    path = resolve_model(path)
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path} is not a Keras model file (a .keras file is the zip archive "
                        "that model.save writes)")
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - any reader error means the same to the user
        raise UserError(f"cannot read the model {path} ({e.__class__.__name__}: "
                        f"{str(e)[:200]})") from None


# -- finetune ----------------------------------------------------------------------------
def split_ids(ids: Sequence[str], val_fraction: float, seed: int, strata=None):
    """Seeded training / validation ids (stratified by class when every class has >= 2)."""
    ids = list(ids)
    if not 0 <= val_fraction < 1:
        raise UserError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    n_val = int(round(val_fraction * len(ids)))
    if val_fraction and not 1 <= n_val < len(ids):
        raise UserError(f"val_fraction={val_fraction} of {len(ids)} images leaves "
                        f"{n_val} for validation; give a larger share or more images")
    if not n_val:
        return ids, []
    from sklearn.model_selection import train_test_split

    use = strata if strata is not None and min(
        np.unique(strata, return_counts=True)[1]) >= 2 else None
    try:
        tr, va = train_test_split(ids, test_size=n_val, random_state=seed, stratify=use)
    except ValueError:  # too few images per class for a stratified split
        tr, va = train_test_split(ids, test_size=n_val, random_state=seed)
    return sorted(tr, key=ids.index), sorted(va, key=ids.index)


def _check_fits(weights, mcfg, source, model=None) -> None:
    """The pretrained weights must fit the network the config builds (``model``: that
    network, already built; built here when None)."""
    if model is None:
        model = build_from_config(mcfg)
    want = [tuple(w.shape) for w in model.get_weights()]
    got = [tuple(np.shape(w)) for w in weights]
    if want != got:
        first = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want),
                                                                                    len(got)))
        raise UserError(
            f"the pretrained model {source} does not fit the network of this config "
            f"(model.kind={mcfg.kind}, model.size={mcfg.size}, "
            f"model.base_filters={mcfg.base_filters}, model.depth={mcfg.depth}): "
            f"{len(got)} weights vs {len(want)}, first difference at weight {first} "
            f"({got[first] if first < len(got) else '-'} vs "
            f"{want[first] if first < len(want) else '-'}); pass the --set model.* it was "
            "pretrained with, or a study folder as --pretrained")


def pretrained_weights(cfg: Config, kind: str, out, pretrained=None, precision="fp32",
                       verbose: int = 0, check: bool = True):
    """Starting weights: a ``.keras`` file, a study folder's pretrained model, or (None)
    pretraining as the study does, into ``out/pretrained`` (reused when there). A file's
    weights are checked against the config's network (:func:`_check_fits`) unless ``check``
    is False (the caller checks them against the network it has built)."""
    import keras

    mcfg = model_config(cfg, kind)
    if pretrained is None:
        weights = pretrained_weights_by_kind(cfg, out, [kind], precision, verbose)[kind]
        if model_family(kind) == "file":      # the file is the pretrained network
            return weights, kind.partition(":")[2]
        if not pretrained_by_package(mcfg):   # encoder weights + a seeded random decoder
            return weights, f"{kind} (encoder weights {mcfg.encoder_weights or 'none'})"
        return weights, str(pretrained_folder(out, kind, cfg.model.kind).model)
    p = pathlib.Path(pretrained)
    if p.is_dir():
        p = pretrained_folder(p, kind, cfg.model.kind).model
    if not p.exists():
        raise FileNotFoundError(f"pretrained model {p} not found")
    try:
        weights = keras.saving.load_model(p, compile=False).get_weights()
    except Exception as e:  # noqa: BLE001
        raise UserError(f"cannot read the pretrained model {p} ({e.__class__.__name__}: "
                        f"{str(e)[:200]})") from None
    if check:
        _check_fits(weights, mcfg, p)
    return weights, str(p)


def check_finetune_out(out, force: bool = False) -> None:
    """``finetune --out`` must not be a study's results folder, nor hold a model of another
    run unless ``force``: nothing is overwritten without a word."""
    out = pathlib.Path(out)
    if (out / MANIFEST).exists() or (out / RUNS).is_dir():
        raise FileExistsError(f"{out} is a study's results folder; give finetune its own --out "
                              "(the study's config.json and runs would be overwritten)")
    if weights_path(out).exists() and not force:
        raise FileExistsError(f"{weights_path(out)} exists (another fine-tuned model); give "
                              "another --out, or --force to replace it")


def finetune_model(cfg: Config, target: str, plan: str, out, pretrained=None,
                   val_fraction: float = 0.0, verbose: int = 0,
                   distribute: Optional[str] = None, force: bool = False) -> dict:
    """Train ``plan`` on all images of ``target`` (or all but a validation share).

    Args:
        cfg: the config (model, fine-tuning settings, seed; ``study.trainer``).
        target: a dataset spec, e.g. ``busi:/data/Dataset_BUSI_with_GT``.
        plan: a plan string (``deep_to_shallow:3``, ``xunet/all``, ``llrd:0.5``, ...).
        out: output folder: ``model.keras``, ``history.csv``, ``summary.json``,
            ``config.json`` (and ``pretrained/`` when it pretrains).
        pretrained: a pretrained ``.keras`` file or a study folder (its pretrained model);
            None pretrains on ``data.pretrain`` first, as the study does.
        val_fraction: share of images held out (seeded, stratified by class) and scored.
        distribute: ``mirrored`` (the GPUs of this machine) or ``multiworker`` (one run over
            the machines of ``TF_CONFIG``: start the same command on each; the chief, worker
            0, writes the files, the others write nothing; needs ``pretrained``).
        force: replace a model already in ``out``.

    Returns:
        The summary written to ``summary.json``.
    """
    check_finetune_out(out, force)
    strategy = get_strategy(distribute)   # multiworker: before any other TensorFlow op
    chief = is_chief(strategy)
    if distribute == "multiworker" and pretrained is None:
        raise UserError("--distribute multiworker needs --pretrained (a .keras file or a study "
                        "folder every worker can read): pretraining is not distributed")
    out = pathlib.Path(out)
    parsed = Plan.parse(plan)
    kind = parsed.model_or(cfg.model.kind)
    precision = resolve_precision(cfg.study.precision)
    check_trainable(cfg, [parsed], precision, strategy, distribute)   # before any training
    if cfg.study.tensorboard:
        from .runtime import require_tensorboard

        require_tensorboard()
    ds = load_target(cfg, target)
    tr_ids, va_ids = split_ids(ds.ids, val_fraction, cfg.study.seed, ds.strata())
    if chief:
        write_provenance(cfg, out, precision)
    weights, source = pretrained_weights(cfg, kind, out, pretrained, precision, verbose,
                                         check=False)
    # the run's one network: the trainer's model (built once) checks the file's weights, and
    # its block map and initial weights serve the run
    session = FoldSession(cfg, 0, precision, strategy, kind)
    if pretrained is not None:
        _check_fits(weights, session.mcfg, source, session.model)
    train, test = fold_arrays(cfg, ds, {"train": tr_ids, "test": va_ids}, 0)
    t0 = time.perf_counter()
    log_dir = pathlib.Path(cfg.study.tensorboard) / "finetune" if cfg.study.tensorboard else None
    try:
        tr = session.train(parsed, train, weights, verbose, log_dir)
    except Diverged as e:   # nothing worth keeping: say so, keep no model
        summary = RunSummary.judged(str(e), status_last=True, target=target,
                                    plan=str(parsed)).to_dict()
        if chief:
            write_json(ModelFolder(out).summary, summary)
        return summary
    seconds = time.perf_counter() - t0
    if chief:
        write_csv(ModelFolder(out).history, tr.history)
    summary = {
        "target": target, "plan": str(parsed), "model": kind, "pretrained": source,
        "n_images": len(ds), "n_train": len(tr_ids), "n_train_augmented": int(len(train[0])),
        "n_val": len(va_ids), "val_ids": va_ids, "epochs": len(tr.history),
        "final_loss": tr.history[-1]["loss"] if tr.history else None,
        "trainable_params": tr.report.trainable_params, "frozen_params": tr.report.frozen_params,
        "train_seconds": seconds, "input_size": cfg.model.size, "threshold": THRESHOLD,
        "trainer": session.trainer_name, "precision": session.resolved, "seed": session.seed,
        "replicas": strategy.num_replicas_in_sync if strategy is not None else 1,
    }
    # the study's scoring and divergence test, on the validation images (else on some
    # training images, for the divergence test alone)
    held = test if va_ids else (train[0][:16], train[1][:16], tr_ids[:16])
    ev = evaluate(tr.predict, held[0], held[1], held[2], tr.history, tr.model.get_weights(),
                  cfg.finetune.batch_size)
    summary = RunSummary.judged(ev.diverged, status_last=True, **summary).to_dict()
    if ev.diverged is None and chief:   # a diverged net is no model to use: none is written
        save_model(tr.model, weights_path(out))
    if va_ids:
        summary["n_val_empty"] = int(ev.empty.sum())
        for k in METRICS:
            summary[f"val_{k}_mean"] = ev.mean(k)
    if chief:
        write_json(ModelFolder(out).summary, summary)
    return summary


# -- predict -------------------------------------------------------------------------------
def list_images(inputs: Sequence) -> List[pathlib.Path]:
    """Image files named by ``inputs`` (files, or folders: their image files, sorted)."""
    files: List[pathlib.Path] = []
    for item in inputs:
        p = pathlib.Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir()
                           if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise FileNotFoundError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {p}")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"image or folder {p} not found")
    seen = {}
    for f in files:
        if f.stem in seen and seen[f.stem] != f:
            raise UserError(f"two inputs would write the same outputs: {seen[f.stem]} and {f} "
                            "(same name); predict them into separate --out folders")
        seen[f.stem] = f
    return list(dict.fromkeys(files))


@dataclasses.dataclass
class Prediction:
    """One segmented image (arrays at the input's own size)."""

    path: pathlib.Path
    image: np.ndarray          # luminance in [0, 1]
    probability: np.ndarray    # float32 in [0, 1]
    mask: np.ndarray           # bool


def segment(model, paths: Sequence, threshold: float = THRESHOLD,
            batch_size: int = 8) -> List[Prediction]:
    """Segment image files with a loaded model; outputs at each input's size."""
    from skimage import transform

    from .runtime import predict

    if not 0 < threshold < 1:
        raise UserError(f"threshold must be in (0, 1), got {threshold!r}")
    h, w = (int(d) for d in model.input_shape[1:3])
    raws = [read_image(p) for p in paths]
    largest = [largest_value(r) for r in raws]
    # the loaders' rule: 16-bit images that all stay below 4096 are 12-bit data (scaled by
    # 4095, as the training images were), said once
    factor, note = twelve_bit(f"the {len(paths)} image(s) to segment", largest)
    if note:
        log.warning(note)
    grays = [np.clip(to_gray(r) * (factor if v is not None else 1.0), 0, 1)
             for r, v in zip(raws, largest)]
    del raws
    x = np.stack([np.clip(resize_image(g, (h, w)), 0, 1) for g in grays])[..., None]
    probs = predict(model, x.astype(np.float32), batch_size)[..., 0]
    out = []
    for p, g, pr in zip(paths, grays, probs):
        full = pr if pr.shape == g.shape else transform.resize(
            pr, g.shape, order=1, anti_aliasing=False, preserve_range=True)
        full = np.clip(full, 0, 1).astype(np.float32)
        out.append(Prediction(pathlib.Path(p), g, full, full > threshold))
    return out


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RGB uint8: the image in grey, the mask tinted, its outline drawn."""
    from skimage.segmentation import find_boundaries

    rgb = np.repeat(image[..., None], 3, axis=-1).astype(np.float32)
    tint = np.asarray(OVERLAY_COLOUR, np.float32)
    rgb[mask] = (1 - OVERLAY_ALPHA) * rgb[mask] + OVERLAY_ALPHA * tint
    rgb[find_boundaries(mask, mode="inner")] = tint
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def _save_png(path, array) -> None:
    from skimage import io as skio

    atomic_write(path, lambda tmp: skio.imsave(tmp, array, check_contrast=False),
                 suffix=".png")


def predict_images(model, inputs: Sequence, out, threshold: float = THRESHOLD,
                   batch_size: int = 8, overlays: bool = True) -> List[dict]:
    """Segment image files and write ``<name>_prob.png`` (probability x 255),
    ``<name>_mask.png`` (0 / 255), ``<name>_overlay.png`` and ``predictions.csv``.

    Args:
        model: a ``.keras`` file, a finetune output folder or a study run folder.
        inputs: image files and / or folders of images.
        out: output folder.
        threshold: probability above which a pixel is foreground.

    Returns:
        One row per image (file, size, foreground share, highest probability).
    """
    out = pathlib.Path(out)
    path = resolve_model(model)
    net = load_model(path)
    files = list_images(inputs)
    rows = []
    for i in range(0, len(files), 32):   # bounded memory for large folders
        for pr in segment(net, files[i:i + 32], threshold, batch_size):
            stem = pr.path.stem
            _save_png(predicted_image(out, stem, "prob"), np.round(pr.probability * 255).astype(np.uint8))
            _save_png(predicted_image(out, stem, "mask"), pr.mask.astype(np.uint8) * 255)
            if overlays:
                _save_png(predicted_image(out, stem, "overlay"), overlay(pr.image, pr.mask))
            rows.append({"file": str(pr.path), "height": pr.mask.shape[0],
                         "width": pr.mask.shape[1],
                         "foreground_percent": 100.0 * float(pr.mask.mean()),
                         "max_probability": float(pr.probability.max())})
    write_csv(out / PREDICTIONS_TABLE, rows)
    write_json(out / PREDICT_RECORD, {"model": str(path), "threshold": threshold,
                                      "n_images": len(rows)})
    return rows


# -- export ---------------------------------------------------------------------------------
def export_model(model, fmt: str, out=None, force: bool = False) -> pathlib.Path:
    """Export a saved model as a TensorFlow SavedModel folder or a TFLite file.

    The export is written beside its place and then swapped in, so an interrupted export
    leaves the earlier one (or nothing) there, never half of one.

    Args:
        model: a ``.keras`` file, finetune output folder or study run folder.
        fmt: ``savedmodel`` or ``tflite``.
        out: the folder (SavedModel) or file (TFLite); default next to the model
            (``savedmodel/``, ``model.tflite``).
        force: replace an earlier export there (a SavedModel folder, a TFLite file); any
            other file or non-empty folder is never replaced.
    """
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"unknown export format {fmt!r}; expected one of "
                        f"{', '.join(EXPORT_FORMATS)}")
    if not has_tensorflow():
        raise UserError(f"exporting to {fmt} needs TensorFlow (SavedModel and TFLite are "
                        "TensorFlow formats): pip install tensorflow-cpu, or keep the .keras "
                        "file, which every Keras backend loads")
    path = resolve_model(model)
    default = "savedmodel" if fmt == "savedmodel" else "model.tflite"
    target = pathlib.Path(out) if out else path.parent / default
    check_export_target(target, fmt, force)
    net = as_float32(load_model(path))
    if fmt == "savedmodel":
        _swap_in(target, lambda tmp: net.export(tmp, format="tf_saved_model", verbose=False))
        return target
    import tempfile

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        net.export(tmp, format="tf_saved_model", verbose=False)
        data = tf.lite.TFLiteConverter.from_saved_model(tmp).convert()
    atomic_write(target, lambda t: pathlib.Path(t).write_bytes(data), suffix=".tflite")
    return target


#: a TFLite file holds this at bytes 4..8 (its FlatBuffer identifier)
TFLITE_MAGIC = b"TFL3"


def check_export_target(target: pathlib.Path, fmt: str, force: bool) -> None:
    """Refuse to write an export over anything but an earlier export, and over that
    without ``force``: errors name the path and the fix."""
    if fmt == "savedmodel":
        if target.is_file():
            raise FileExistsError(f"{target} is a file; --format savedmodel writes a folder: "
                                  "give another --out")
        if not target.exists() or not any(target.iterdir()):
            return
        if not (target / "saved_model.pb").exists():
            raise FileExistsError(f"{target} exists and is not empty, and is no SavedModel "
                                  "(no saved_model.pb): give another --out")
        if not force:
            raise FileExistsError(f"{target} exists and is not empty (a SavedModel); give "
                                  "another --out, or --force to replace it")
        return
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a folder; --format tflite writes a file, e.g. "
                                f"{target / 'model.tflite'}")
    if not target.exists():
        return
    if not force:
        raise FileExistsError(f"{target} exists; give another --out, or --force to replace it")
    with open(target, "rb") as f:
        head = f.read(8)
    if head[4:8] != TFLITE_MAGIC:
        raise FileExistsError(f"{target} exists and is no TFLite file; --force replaces only "
                              "an earlier export: give another --out")


def _swap_in(target: pathlib.Path, write) -> None:
    """``write(folder)`` into a new folder beside ``target``, then put it in ``target``'s
    place (an earlier ``target`` is moved aside first and removed last); on an error the
    new folder is removed and ``target`` is as it was."""
    import shutil
    import tempfile

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.new-"))
    old = None
    try:
        write(str(tmp))
        if target.exists():
            old = pathlib.Path(tempfile.mkdtemp(dir=target.parent,
                                                prefix=f".{target.name}.old-"))
            os.replace(target, old / target.name)
        os.replace(tmp, target)
    except BaseException:
        if old is not None and not target.exists():   # put the earlier export back
            os.replace(old / target.name, target)
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def as_float32(net):
    """``net`` with every layer computing in float32: a model trained under a mixed policy
    (``mixed_bfloat16`` on AMX CPUs, ``mixed_float16`` on GPUs) keeps that policy when saved,
    and TFLite has no bf16 convolution ("'tf.Conv2D' op is neither a custom op nor a flex
    op"). The weights of a mixed-precision model are float32 already, so they are copied as
    they are; a float32 model is returned unchanged.

    Examples:
        >>> net32 = as_float32(load_model("models/busi"))   # doctest: +SKIP
    """
    import keras

    if all(layer.dtype_policy.name == "float32" for layer in net.layers):
        return net

    def clone(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    copy = keras.models.clone_model(net, clone_function=clone)
    copy.set_weights([np.asarray(w, dtype="float32") for w in net.get_weights()])
    return copy


def has_tensorflow() -> bool:
    """Whether TensorFlow is installed (the export formats need it, whatever the backend)."""
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


__all__ = ["EXPORT_FORMATS", "THRESHOLD", "export_model", "finetune_model",
           "list_images", "load_model", "overlay", "predict_images", "resolve_model",
           "segment", "split_ids"]
