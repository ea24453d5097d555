"""k-fold splits, written once to JSON and reused by every plan (nnU-Net style)."""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import List, Optional, Sequence

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold


def make_folds(ids: Sequence[str], k: int = 5, seed: int = 0,
               strata: Optional[Sequence] = None) -> List[dict]:
    """``[{"train": [ids], "test": [ids]}, ...]``: shuffled k-fold, stratified when possible.

    Stratification is used when ``strata`` is given and every class has at least
    ``k`` members; otherwise plain shuffled ``KFold``.
    """
    ids = list(ids)
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique to make folds")
    if not 2 <= k <= len(ids):
        raise ValueError(f"k must be between 2 and the number of images ({len(ids)}), got {k}")
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


def load_or_make_folds(path, ids, k=5, seed=0, strata=None) -> List[dict]:
    """Read folds from ``path`` when they match ``ids`` and ``k``; else make and write them."""
    path = pathlib.Path(path)
    if path.exists():
        data = json.loads(path.read_text())
        folds = data["folds"]
        if len(folds) == k and sorted(i for f in folds for i in f["test"]) == sorted(ids):
            return folds
        raise ValueError(f"folds in {path} do not match this dataset ({len(ids)} images, k={k}); "
                         "delete the file or use another output folder")
    folds = make_folds(ids, k, seed, strata)
    write_json(path, {"k": k, "seed": seed, "stratified": strata is not None, "folds": folds})
    return folds


def write_json(path, obj) -> None:
    """Write JSON atomically (temporary file + rename)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1, default=_json_default)
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
