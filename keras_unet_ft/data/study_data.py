"""The data of a study's config: its targets, its pretraining set and each fold's arrays.

Built-in data get the study's seed (targets ``seed + 1``, so a target never
repeats the pretraining images) and the config's image counts; real data are read
from the folder in the spec. Augmentation happens inside each training fold only
(docs/paper.md D: no leakage), with the same augmented set for every plan of a fold.
"""

from __future__ import annotations

import pathlib
from typing import Optional

import numpy as np

from ..config import Config
from ..exitcodes import UserError
from .augment import AugmentParams, augment_to
from ..io import read_json, write_json
from .folds import inner_split, load_or_make_folds
from ..layout import target_slug
from .registry import REGISTRY, TARGET_OPTIONS, load_dataset, split_spec


def load_target(cfg: Config, spec: str):
    """The target dataset ``spec`` at the config's image size (options in the spec win)."""
    name, _, given = split_spec(spec)
    opts = {}
    if REGISTRY[name].kind == "builtin":
        if "seed" not in given:
            opts["seed"] = cfg.study.seed + 1
        if cfg.data.target_n and "n" not in given:
            opts["n"] = cfg.data.target_n
    return load_dataset(spec, size=cfg.model.size, cache=cfg.data.cache,
                        cache_directory=cfg.data.cache_dir, **opts)


def load_pretrain_data(cfg: Config):
    """The pretraining dataset (``data.pretrain``) at the config's image size."""
    name, _, given = split_spec(cfg.data.pretrain)
    opts = {}
    if REGISTRY[name].kind == "builtin":
        if "seed" not in given:
            opts["seed"] = cfg.study.seed
        if cfg.data.pretrain_n and "n" not in given:
            opts["n"] = cfg.data.pretrain_n
    elif cfg.data.pretrain_n and name == "xpie" and "limit" not in given and "n" not in given:
        opts["limit"] = cfg.data.pretrain_n
    return load_dataset(cfg.data.pretrain, size=cfg.model.size, cache=cfg.data.cache,
                        cache_directory=cfg.data.cache_dir, **opts)


def target_key(spec: str) -> tuple:
    """What makes two target specs the same data: name, resolved folder, options."""
    name, root, options = split_spec(spec)
    root = str(pathlib.Path(root).expanduser().resolve()) if root else None
    return (name, root, tuple(sorted((k, v) for k, v in options.items()
                                     if k not in TARGET_OPTIONS)))


#: fewer images with an object than this per test fold make a fold's Dice and the
#: intervals rest on too few images: said out loud
MIN_OBJECTS_PER_FOLD = 10
#: images whose width / height differ by more than this factor are "of mixed aspect ratios"
ASPECT_TOLERANCE = 1.1


def data_notes(ds, folds: int, name: Optional[str] = None) -> list:
    """What a reader of the results must know about a target's images, as sentences (each
    is logged as a warning by the study and printed in REPORT.md): the loader's warnings
    (files left out, outlines closed, 12-bit data rescaled; ``ds.warnings``), images of
    mixed aspect ratios (each is resized to a square, which squashes some of them), and
    fewer than :data:`MIN_OBJECTS_PER_FOLD` images with an object per test fold. ``name``:
    the target's name in the results (default the dataset's)."""
    notes, name = list(getattr(ds, "warnings", [])), name or ds.name
    sizes = ds.meta.get("original_size") or []
    if sizes:
        wh = [tuple(int(v) for v in s.split("x")) for s in sizes]
        ratios = [w / h for w, h in wh if h]
        lo, hi = min(ratios), max(ratios)
        if hi / lo > ASPECT_TOLERANCE:
            i, j = ratios.index(lo), ratios.index(hi)
            notes.append(f"{name}: images of mixed aspect ratios (width / height from "
                         f"{lo:.2f}, e.g. {ds.ids[i]} {sizes[i]}, to {hi:.2f}, e.g. "
                         f"{ds.ids[j]} {sizes[j]}); each is resized to "
                         f"{ds.images.shape[2]}x{ds.images.shape[1]}, which squashes some of "
                         "them: crop or pad them to one shape first to keep their proportions")
    n_obj = int((ds.masks.reshape(len(ds), -1).max(axis=1) > 0).sum()) if len(ds) else 0
    if folds and n_obj / folds < MIN_OBJECTS_PER_FOLD:
        notes.append(f"{name}: {n_obj} images with an object over {folds} folds, about "
                     f"{n_obj / folds:.0f} per test fold (fewer than {MIN_OBJECTS_PER_FOLD}): "
                     "each fold's Dice and every interval rest on very few images")
    return notes


def check_targets(targets) -> None:
    """The same target twice would train every run twice and understate the spread; two
    targets of one name would share a results folder."""
    seen, names = {}, {}
    for t in targets:
        k = target_key(t)
        if k in seen:
            raise UserError(f"target {t!r} is the same data as {seen[k]!r}; give each target "
                            "once")
        seen[k] = t
        slug = target_slug(t)
        if slug in names:
            raise UserError(f"targets {names[slug]!r} and {t!r} would both be named {slug!r}; "
                            "give one of them another name with ?name=NAME")
        names[slug] = t


def target_folds(cfg: Config, ds, path):
    """The folds of a target, made once (seeded, stratified by class when possible,
    near-duplicate images kept in one fold) and read back from ``path`` afterwards."""
    if cfg.finetune.folds > len(ds):
        raise UserError(f"finetune.folds={cfg.finetune.folds} but {ds.name} has only "
                        f"{len(ds)} images")
    if "fold" in ds.meta:  # the publishers' folds (e.g. BUS-BRA's patient-level ones)
        given = sorted(set(ds.meta["fold"]))
        if given != list(range(cfg.finetune.folds)):
            raise UserError(f"{ds.name} comes with {len(given)} official folds; set "
                            f"finetune.folds={len(given)} to use them")
        folds = [{"train": [i for i, f in zip(ds.ids, ds.meta["fold"]) if f != k],
                  "test": [i for i, f in zip(ds.ids, ds.meta["fold"]) if f == k]}
                 for k in given]
        if not pathlib.Path(path).exists():
            write_json(path, {"k": len(given), "seed": None, "official": True, "folds": folds,
                              "duplicate_groups": []})
        return load_or_make_folds(path, ds.ids, cfg.finetune.folds)
    return load_or_make_folds(path, ds.ids, cfg.finetune.folds, cfg.study.seed, ds.strata(),
                              images=ds.images)


def inner_fold(cfg: Config, ds, fold: dict, fold_index: int, path) -> dict:
    """The inner split of an outer fold's training images (nested selection, ``advise``):
    ``{"train": ids, "test": ids}`` with about ``1 / finetune.folds`` of them held out,
    stratified by class, near-duplicate groups of the folds file ``path`` kept together.
    The outer fold's test images are never in it."""
    train = list(fold["train"])
    cls = ds.strata()
    strata = None
    if cls is not None:
        of = dict(zip(ds.ids, cls))
        strata = [of[i] for i in train]
    groups = read_json(path).get("duplicate_groups", []) if pathlib.Path(path).exists() else []
    k = max(2, min(cfg.finetune.folds, len(train)))
    return inner_split(train, k, cfg.study.seed + 101 * (fold_index + 1), strata, groups)


def fold_arrays(cfg: Config, ds, fold: dict, fold_index: int,
                n_train: Optional[int] = None, augment: bool = True):
    """Training (augmented) and test arrays of a fold.

    Returns ``((images, masks), (images, masks, ids))``. With ``n_train``
    (dataset-size study): a seeded subset of ``n_train`` training images - nested,
    so the 50 images are among the 100 - augmented to ``sizes.augment_factor *
    n_train`` images, or used as they are when ``augment`` is False.
    """
    index = {i: j for j, i in enumerate(ds.ids)}
    tr = np.array([index[i] for i in fold["train"]], dtype=int)
    te = np.array([index[i] for i in fold["test"]], dtype=int)
    ft = cfg.finetune
    params = AugmentParams(ft.rotation, ft.shift, ft.shear, ft.zoom, ft.hflip)
    total = max(ft.augment_total, len(tr))
    if n_train is not None:
        if n_train > len(tr):
            raise UserError(f"n_train={n_train} but the fold has {len(tr)} training images")
        order = np.random.default_rng([cfg.study.seed, fold_index, 7]).permutation(len(tr))
        tr = tr[np.sort(order[:n_train])]
        total = int(cfg.sizes.augment_factor) * n_train if augment else n_train
    xa, ma, _ = augment_to(ds.images[tr], ds.masks[tr], total=total,
                           seed=cfg.study.seed * 1000 + fold_index, params=params)
    return (xa, ma), (ds.images[te], ds.masks[te], [ds.ids[i] for i in te])
