"""The paper's metrics, per image: Dice, pixel error (%), adjusted Rand index; and the
95th-percentile Hausdorff distance (HD95, in pixels and in % of the image diagonal).

Predictions are thresholded at 0.5 (``p > 0.5`` is foreground, as in the
paper); ground truth is binarised the same way. Conventions for empty masks
(docs/paper.md D):

* Dice: ``2 TP / (|GT| + |P|)``; when ground truth and prediction are both
  empty, Dice = 1.0 (a perfect answer); one empty and the other not: 0.0.
* Pixel error: percentage of pixels whose label is wrong (0 for a perfect
  prediction, 100 for the complement).
* Adjusted Rand index: scikit-learn's ``adjusted_rand_score`` of the two pixel
  labelings. When both labelings put every pixel in one cluster and agree
  (e.g. both empty) it is 1.0; when the ground truth is one cluster and the
  prediction is not (or vice versa) it is 0.0 (scikit-learn's convention).
* HD95: the larger of the two directed 95th percentiles of the distances from
  each mask's boundary pixels to the other's boundary (MONAI's definition), in
  pixels. Both empty: 0; one empty and the other not: the image diagonal (the
  largest distance there is, instead of infinity, so that means stay finite).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import adjusted_rand_score

THRESHOLD = 0.5
METRICS = ("dice", "pixel_error", "adjusted_rand", "hd95", "hd95_percent")
#: metrics where lower is better (the rest: higher is better)
LOWER_IS_BETTER = ("pixel_error", "hd95", "hd95_percent")


def binarize(x, threshold: float = THRESHOLD) -> np.ndarray:
    """``x > threshold`` as a boolean array."""
    return np.asarray(x) > threshold


def _pair(y_true, y_pred):
    t = binarize(y_true)
    p = binarize(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"shapes differ: ground truth {t.shape} vs prediction {p.shape}")
    return t, p


def dice(y_true, y_pred) -> float:
    """Dice coefficient of one image (1.0 when both masks are empty).

    Examples:
        >>> dice([[1, 1], [0, 0]], [[1, 0], [0, 0]])
        0.6666666666666666
    """
    t, p = _pair(y_true, y_pred)
    denom = int(t.sum()) + int(p.sum())
    if denom == 0:
        return 1.0
    return 2.0 * int(np.logical_and(t, p).sum()) / denom


def pixel_error(y_true, y_pred) -> float:
    """Percentage of wrongly labelled pixels of one image.

    Examples:
        >>> pixel_error([[1, 1], [0, 0]], [[1, 0], [0, 0]])
        25.0
    """
    t, p = _pair(y_true, y_pred)
    return 100.0 * float(np.mean(t != p))


def adjusted_rand(y_true, y_pred) -> float:
    """Adjusted Rand index of the two pixel labelings of one image.

    Examples:
        >>> adjusted_rand([[1, 1], [0, 0]], [[1, 1], [0, 0]])
        1.0
    """
    t, p = _pair(y_true, y_pred)
    return float(adjusted_rand_score(t.ravel(), p.ravel()))


def _boundary(m: np.ndarray) -> np.ndarray:
    return m & ~ndimage.binary_erosion(m, border_value=0)


def hd95(y_true, y_pred) -> float:
    """95th-percentile Hausdorff distance of one image, in pixels (see the module notes).

    Examples:
        >>> a = np.zeros((8, 8)); a[2:6, 2:6] = 1
        >>> b = np.zeros((8, 8)); b[2:6, 3:7] = 1
        >>> hd95(a, b)
        1.0
    """
    t, p = _pair(y_true, y_pred)
    t, p = np.squeeze(t), np.squeeze(p)
    if not t.any() and not p.any():
        return 0.0
    if not t.any() or not p.any():
        return float(np.hypot(*t.shape))
    bt, bp = _boundary(t), _boundary(p)
    to_p = ndimage.distance_transform_edt(~bp)[bt]
    to_t = ndimage.distance_transform_edt(~bt)[bp]
    return float(max(np.percentile(to_p, 95), np.percentile(to_t, 95)))


def batch_metrics(y_true, y_pred) -> dict:
    """Per-image metrics of a batch ``(N, H, W[, 1])``.

    Returns:
        ``{metric: array(N)}`` for every metric of :data:`METRICS`.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"shapes differ: ground truth {y_true.shape} vs prediction {y_pred.shape}")
    if y_true.ndim < 3:
        raise ValueError(f"expected a batch (N, H, W[, 1]), got shape {y_true.shape}")
    out = {m: np.empty(len(y_true), dtype=np.float64) for m in METRICS}
    for i, (t, p) in enumerate(zip(y_true, y_pred)):
        out["dice"][i] = dice(t, p)
        out["pixel_error"][i] = pixel_error(t, p)
        out["adjusted_rand"][i] = adjusted_rand(t, p)
        out["hd95"][i] = hd95(t, p)
        out["hd95_percent"][i] = 100.0 * out["hd95"][i] / float(np.hypot(*t.shape[:2]))
    return out
