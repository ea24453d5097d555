"""How much a breast-ultrasound set looks like real breast ultrasound, in numbers.

:func:`image_statistics` measures one image with its lesion mask (the statistics of
the project's measuring script ``us_stats.py``); :func:`summarize` gives the median
and interquartile range per statistic over a set; :data:`REAL_BREAST_US` holds the
same numbers measured on 163 real breast-ultrasound images with a lesion (benign +
malignant, at 256 x 256), the targets ``sim_bus`` is held against (a test checks
that each median of ``sim_bus`` lies inside the real interquartile range).

Statistics (median [IQR] over images whose mask has >= 20 pixels):

* ``contrast`` - mean grey inside the lesion / mean grey in a ring 4-12 px around it
* ``distractor`` - share of non-lesion pixels (outside the ring) darker than the
  lesion's median grey: how much of the background a brightness rule would confuse
* ``edge`` - mean |gradient| on the lesion boundary / mean |gradient| of the image
* ``area`` - lesion area, % of the image; ``depth`` - lesion centre row / height
* ``shadow`` - mean grey in a band below the lesion / beside-below it (< 1: shadowing)
* ``grain_ax``, ``grain_lat`` - speckle grain: lag (px) where the autocorrelation of
  the high-pass background falls to 0.5, along rows (axial) and columns (lateral)
* ``dark`` - share of pixels with grey < 0.05 (shadows, black borders)
* ``otsu_dice`` - Dice of the better of Otsu / inverted Otsu after a 5 px median
  filter: how far plain thresholding gets
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional

import numpy as np
from scipy import ndimage as ndi

from ...exitcodes import UserError

#: 163 real breast-ultrasound images with a lesion, at 256 x 256: (25th, median, 75th)
REAL_BREAST_US: Dict[str, tuple] = {
    "distractor": (0.24, 0.40, 0.54),
    "contrast": (0.46, 0.58, 0.69),
    "edge": (1.5, 1.9, 2.7),
    "area": (3.0, 5.6, 12.4),
    "depth": (0.24, 0.32, 0.44),
    "shadow": (0.74, 1.03, 1.39),
    "grain_ax": (2.0, 2.0, 2.0),
    "grain_lat": (4.0, 4.0, 4.0),
    "dark": (0.004, 0.039, 0.11),
}
MIN_LESION_PIXELS = 20


def _grain(x: np.ndarray, background: np.ndarray, axis: int) -> float:
    hp = x - ndi.gaussian_filter(x, 4)
    hp = np.where(background, hp, 0.0)
    f = np.fft.rfft2(hp)
    ac = np.fft.irfft2(np.abs(f) ** 2, s=hp.shape)
    ac = ac / ac[0, 0]
    line = ac[:20, 0] if axis == 0 else ac[0, :20]
    below = np.nonzero(line < 0.5)[0]
    return float(below[0]) if len(below) else 20.0


def image_statistics(image: np.ndarray, mask: np.ndarray) -> Optional[Dict[str, float]]:
    """The statistics of one grey image in [0, 1] and its lesion mask (None: lesion
    smaller than :data:`MIN_LESION_PIXELS`)."""
    from skimage.filters import threshold_otsu

    x = np.asarray(image, np.float64).squeeze()
    m = np.asarray(mask).squeeze() > 0
    if x.shape != m.shape or x.ndim != 2:
        raise ValueError(f"expected a 2-D image and mask of one shape, got {x.shape} and "
                         f"{m.shape}")
    if m.sum() < MIN_LESION_PIXELS:
        return None
    ring = ndi.binary_dilation(m, iterations=12) & ~ndi.binary_dilation(m, iterations=4)
    outside = ~ndi.binary_dilation(m, iterations=12)
    gy, gx = np.gradient(ndi.gaussian_filter(x, 1))
    g = np.hypot(gx, gy)
    edge = m ^ ndi.binary_erosion(m)
    rows, cols = np.nonzero(m)
    h, w = x.shape
    below = np.zeros_like(m)
    r1 = min(h, rows.max() + 1 + 40)
    below[rows.max() + 1:r1, cols.min():cols.max() + 1] = True
    side = np.zeros_like(m)
    width = cols.max() - cols.min() + 1
    side[rows.max() + 1:r1, max(0, cols.min() - width):cols.min()] = True
    side[rows.max() + 1:r1, cols.max() + 1:min(w, cols.max() + 1 + width)] = True
    shadow = (x[below].mean() / max(x[side].mean(), 1e-6) if below.any() and side.any()
              else np.nan)
    med = ndi.median_filter(x, 5)
    t = threshold_otsu(med)
    dices = [2 * (p & m).sum() / (p.sum() + m.sum()) for p in (med > t, med <= t)]
    return dict(
        contrast=x[m].mean() / max(x[ring].mean(), 1e-6),
        distractor=float((x[outside] < np.median(x[m])).mean()),
        edge=g[edge].mean() / max(g.mean(), 1e-9),
        area=100 * m.mean(),
        depth=rows.mean() / h,
        shadow=shadow,
        grain_ax=_grain(x, outside, 0),
        grain_lat=_grain(x, outside, 1),
        dark=float((x < 0.05).mean()),
        otsu_dice=max(dices),
    )


def summarize(rows: Iterable[Optional[Dict[str, float]]]) -> Dict[str, tuple]:
    """``{statistic: (25th percentile, median, 75th percentile)}`` over images."""
    rows = [r for r in rows if r]
    if not rows:
        raise UserError("no image with a lesion of >= "
                        f"{MIN_LESION_PIXELS} pixels to measure")
    out = {}
    for k in rows[0]:
        v = np.array([r[k] for r in rows], float)
        v = v[np.isfinite(v)]
        out[k] = tuple(float(q) for q in np.percentile(v, [25, 50, 75]))
    return out


def compare(summary: Dict[str, tuple], real: Dict[str, tuple] = REAL_BREAST_US) -> Dict[str, bool]:
    """Whether each statistic's median lies inside the real interquartile range."""
    return {k: real[k][0] <= summary[k][1] <= real[k][2] for k in real if k in summary}
