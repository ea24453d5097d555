"""k-fold splits, written once to JSON and reused by every plan (nnU-Net style)."""

from __future__ import annotations

import logging
import pathlib
from typing import List, Optional, Sequence

import numpy as np
from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

from ..exitcodes import UserError
from ..io import read_json, write_json

log = logging.getLogger("keras_unet_ft.data")


def make_folds(ids: Sequence[str], k: int = 5, seed: int = 0,
               strata: Optional[Sequence] = None) -> List[dict]:
    """``[{"train": [ids], "test": [ids]}, ...]``: shuffled k-fold, stratified when possible.

    Stratification is used when ``strata`` is given and every class has at least
    ``k`` members; otherwise plain shuffled ``KFold``.
    """
    ids = list(ids)
    if len(set(ids)) != len(ids):
        raise UserError("ids must be unique to make folds")
    if not 2 <= k <= len(ids):
        raise UserError(f"k must be between 2 and the number of images ({len(ids)}), got {k}")
    x = np.zeros(len(ids))
    if strata is not None:
        _, counts = np.unique(np.asarray(strata), return_counts=True)
        if len(counts) > 1 and counts.min() >= k:
            splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
            splits = splitter.split(x, np.asarray(strata))
        else:
            splits = KFold(n_splits=k, shuffle=True, random_state=seed).split(x)
    else:
        splits = KFold(n_splits=k, shuffle=True, random_state=seed).split(x)
    return [{"train": [ids[i] for i in tr], "test": [ids[i] for i in te]} for tr, te in splits]


DUPLICATE_DISTANCE = 6   # perceptual-hash bits within which two images may be copies
DUPLICATE_MAD = 0.02     # ... and their mean absolute pixel difference (0-1 scale) below this
# Measured on the built-in sets: distinct images that look alike (synthetic chest X-rays,
# whose perceptual hashes often differ by <= 4 bits) differ by 0.04 or more per pixel;
# a copy re-saved with JPEG-like noise differs by about 0.01.


def near_duplicate_groups(images: np.ndarray, max_distance: int = DUPLICATE_DISTANCE,
                          max_mad: float = DUPLICATE_MAD) -> List[int]:
    """A group number per image; near-identical images share one.

    Two images are copies of one when their perceptual hashes (``imagehash.phash`` of
    the preprocessed image) are within ``max_distance`` bits *and* their pixels differ
    by less than ``max_mad`` on average (the hash alone groups different chest X-rays,
    which share their coarse layout). Public ultrasound sets hold copies of one lesion
    (BUSI: about 19 %, Pawłowska et al. 2023); random folds would put them in training
    and test alike.
    """
    import imagehash
    from PIL import Image

    hashes = []
    for img in images:
        a = np.clip(np.asarray(img)[..., 0] * 255, 0, 255).astype(np.uint8)
        hashes.append(imagehash.phash(Image.fromarray(a)))
    parent = list(range(len(hashes)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(hashes)):
        for j in range(i + 1, len(hashes)):
            if (hashes[i] - hashes[j] <= max_distance
                    and float(np.mean(np.abs(images[i] - images[j]))) < max_mad):
                parent[find(j)] = find(i)
    roots = {}
    return [roots.setdefault(find(i), len(roots)) for i in range(len(hashes))]


def make_group_folds(ids: Sequence[str], groups: Sequence[int], k: int = 5, seed: int = 0,
                     strata: Optional[Sequence] = None) -> List[dict]:
    """Folds that keep every group of near-duplicates in one fold, stratified by class as far
    as the groups allow (``StratifiedGroupKFold``)."""
    ids = list(ids)
    x = np.zeros(len(ids))
    n_groups = len(set(groups))
    if not 2 <= k <= n_groups:
        raise UserError(f"k must be between 2 and the number of distinct images "
                        f"({n_groups} after grouping near-duplicates), got {k}")
    if strata is not None:
        splits = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(
            x, np.asarray(strata), np.asarray(groups))
    else:
        splits = GroupKFold(n_splits=k).split(x, groups=np.asarray(groups))
    return [{"train": [ids[i] for i in tr], "test": [ids[i] for i in te]} for tr, te in splits]


def load_or_make_folds(path, ids, k=5, seed=0, strata=None, images=None) -> List[dict]:
    """Read folds from ``path`` when they match ``ids`` and ``k``; else make and write them.

    With ``images``, near-duplicate images are grouped (:func:`near_duplicate_groups`)
    and each group kept in one fold; the file records the groups. Without duplicates
    the folds are the plain (stratified) k-fold ones.
    """
    path = pathlib.Path(path)
    if path.exists():
        data = read_json(path)
        folds = data.get("folds") if isinstance(data, dict) else None
        if not isinstance(folds, list):
            raise UserError(f"{path} holds no folds; delete it to have the folds made again")
        if len(folds) == k and sorted(i for f in folds for i in f["test"]) == sorted(ids):
            return folds
        raise UserError(f"folds in {path} do not match this dataset ({len(ids)} images, k={k}); "
                        "delete the file or use another output folder")
    groups = near_duplicate_groups(images) if images is not None else list(range(len(ids)))
    dup = {}
    for i, g in zip(ids, groups):
        dup.setdefault(g, []).append(i)
    dup_groups = [v for v in dup.values() if len(v) > 1]
    if dup_groups:
        folds = make_group_folds(ids, groups, k, seed, strata)
        log.warning("%s: %d groups of near-duplicate images (%d images) kept within one fold "
                    "each", path.stem, len(dup_groups), sum(len(v) for v in dup_groups))
    else:
        folds = make_folds(ids, k, seed, strata)
    write_json(path, {"k": k, "seed": seed, "stratified": strata is not None, "folds": folds,
                      "duplicate_groups": dup_groups})
    return folds


def inner_split(ids: Sequence[str], k: int, seed: int = 0, strata: Optional[Sequence] = None,
                duplicate_groups: Sequence[Sequence[str]] = ()) -> dict:
    """One inner split of an outer fold's training ids: ``{"train": [...], "test": [...]}``,
    the first of ``k`` folds (about ``1/k`` held out), stratified by class when every class
    has ``k`` members, every group of near-duplicates on one side.

    Nested selection and ``unet-ft advise`` choose on the ``test`` side and never see the
    outer test fold.

    Examples:
        >>> s = inner_split([f"i{j}" for j in range(9)], 3, duplicate_groups=[["i0", "i1"]])
        >>> len(s["test"]), ("i0" in s["test"]) == ("i1" in s["test"])
        (3, True)
    """
    ids = list(ids)
    where = {i: n for n, i in enumerate(ids)}
    groups = list(range(len(ids)))
    for g in duplicate_groups:
        members = [where[i] for i in g if i in where]
        for m in members[1:]:
            groups[m] = groups[members[0]]
    if len(set(groups)) < len(groups):
        folds = make_group_folds(ids, groups, k, seed, strata)
    else:
        use = None
        if strata is not None:
            _, counts = np.unique(np.asarray(strata), return_counts=True)
            use = strata if counts.min() >= k else None
        folds = make_folds(ids, k, seed, use)
    return folds[0]
