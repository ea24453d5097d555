"""Built-in data the package makes itself, deterministically from a seed."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from ...exitcodes import UserError
from ...progress import progress_bar
from ..dataset import Dataset


def generate_images(name: str, n: int, size: int, seed: int,
                    one: Callable[[np.random.Generator, int, int], tuple],
                    progress: bool = True, desc: str = "") -> Dataset:
    """Run ``one(rng, index, size) -> (image, mask, meta)`` for ``n`` images.

    Image ``i`` depends only on ``(seed, i)`` (one child seed per image), so the
    first images of a larger set equal a smaller set's.
    """
    n, size = int(n), int(size)
    if n < 1:
        raise UserError(f"{name}: number of images must be >= 1, got {n}")
    if size < 16:
        raise UserError(f"{name}: image size must be >= 16 pixels, got {size}")
    children = np.random.SeedSequence(int(seed)).spawn(n)
    images = np.empty((n, size, size, 1), np.float32)
    masks = np.empty((n, size, size, 1), np.uint8)
    meta: dict = {}
    disable = (not progress) or n < 20 or bool(os.environ.get("UNET_FT_NO_PROGRESS"))
    workers = max(1, min(int(os.environ.get("UNET_FT_DATA_WORKERS", os.cpu_count() or 1)), 8))

    def run(i):
        return one(np.random.default_rng(children[i]), i, size)

    # numpy / scipy release the GIL in the heavy parts, so threads scale; results
    # are collected in order, so the output does not depend on the worker count.
    # One BLAS thread per worker: nested BLAS threads made 2 workers on 2 cores no
    # faster than one (14 vs 24 images/s for sim_bus at 256 px).
    from threadpoolctl import threadpool_limits

    with ThreadPoolExecutor(workers) as pool, threadpool_limits(1 if workers > 1 else None):
        results = pool.map(run, range(n))
        bar = progress_bar(results, total=n, desc=desc or f"generating {name}",
                           disable=disable, leave=False, unit="image")
        for i, (img, mask, m) in enumerate(bar):
            images[i, ..., 0] = np.clip(img, 0, 1)
            masks[i, ..., 0] = mask > 0
            for k, v in (m or {}).items():
                meta.setdefault(k, []).append(v)
    ids = [f"{name}_{i:05d}" for i in range(n)]
    return Dataset(name, images, masks, ids, meta, source=f"generated(seed={seed})")
