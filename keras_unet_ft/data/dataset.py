"""The in-memory dataset every loader and generator returns."""

from __future__ import annotations

import dataclasses
import logging
from typing import Dict, List, Optional

import numpy as np

log = logging.getLogger("keras_unet_ft.data")


@dataclasses.dataclass
class Dataset:
    """Images and masks of one dataset, preprocessed to one size.

    Attributes:
        name: dataset name (registry name, e.g. ``busi`` or ``sim_bus``).
        images: float32 array ``(N, H, W, 1)`` in [0, 1].
        masks: uint8 array ``(N, H, W, 1)`` with values 0 / 1.
        ids: one id (file stem) per image.
        meta: per-image metadata, each value a list of length N
            (e.g. ``{"class": ["benign", "malignant", ...]}``).
        source: where the data came from (a folder, or ``generated(seed=...)``).
        warnings: what a reader of results on this data must know about how it was read
            (files left out, outlines closed, 12-bit images rescaled), one sentence each;
            the study prints them under "Data warnings" in REPORT.md.
    """

    name: str
    images: np.ndarray
    masks: np.ndarray
    ids: List[str]
    meta: Dict[str, list] = dataclasses.field(default_factory=dict)
    source: str = ""
    warnings: List[str] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        n = len(self.images)
        if self.images.ndim != 4 or self.images.shape[-1] != 1:
            raise ValueError(f"{self.name}: images must be (N, H, W, 1), got {self.images.shape}")
        if self.masks.shape != self.images.shape:
            raise ValueError(f"{self.name}: masks {self.masks.shape} differ from images "
                             f"{self.images.shape}")
        if len(self.ids) != n:
            raise ValueError(f"{self.name}: {len(self.ids)} ids for {n} images")
        for k, v in self.meta.items():
            if len(v) != n:
                raise ValueError(f"{self.name}: metadata {k!r} has {len(v)} values for {n} images")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self):
        return self.images.shape[1:3]

    def strata(self) -> Optional[List[str]]:
        """Class labels to stratify folds by, when the dataset has them."""
        return self.meta.get("class")

    def subset(self, index) -> "Dataset":
        index = np.asarray(index, dtype=int)
        return Dataset(self.name, self.images[index], self.masks[index],
                       [self.ids[i] for i in index],
                       {k: [v[i] for i in index] for k, v in self.meta.items()}, self.source,
                       list(self.warnings))

    def summary(self) -> str:
        empty = int((self.masks.reshape(len(self), -1).max(axis=1) == 0).sum()) if len(self) else 0
        fg = float(self.masks.mean()) * 100 if len(self) else 0.0
        extra = ""
        if "class" in self.meta:
            vals, counts = np.unique(self.meta["class"], return_counts=True)
            extra = ", " + ", ".join(f"{v}: {c}" for v, c in zip(vals, counts))
        return (f"{self.name}: {len(self)} images of {self.size[0]}x{self.size[1]}, "
                f"foreground {fg:.1f} %, {empty} empty masks{extra}")
