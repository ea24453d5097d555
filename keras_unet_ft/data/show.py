"""A grid of images with their mask outlines, for looking at a dataset."""

from __future__ import annotations

import pathlib

import numpy as np


def show_grid(ds, n: int = 8, path=None, cols: int = 4, seed: int = 0, title: str = ""):
    """Draw ``n`` images of ``ds`` (evenly spaced) with red mask outlines; save to ``path``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = max(1, min(int(n), len(ds)))
    idx = np.linspace(0, len(ds) - 1, n).round().astype(int)
    cols = min(cols, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, idx):
        ax.imshow(ds.images[i, ..., 0], cmap="gray", vmin=0, vmax=1)
        if ds.masks[i].any():
            ax.contour(ds.masks[i, ..., 0], levels=[0.5], colors="red", linewidths=0.8)
        label = ds.ids[i]
        if "class" in ds.meta:
            label += f" ({ds.meta['class'][i]})"
        ax.set_title(label, fontsize=8)
    fig.suptitle(title or f"{ds.name}: {len(ds)} images, {ds.size[0]}x{ds.size[1]} "
                 "(red = mask outline)", fontsize=10)
    fig.tight_layout()
    if path:
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return fig
