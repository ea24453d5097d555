"""Paired geometric augmentation (docs/paper.md A): the same transform for image and mask.

Shift, rotation, horizontal flip, shear and zoom by small random amounts
(defaults after zhixuhao / Cheng & Lam: rotation up to 0.2 rad, shift, shear
and zoom 0.05, flips). One affine transform per sample is drawn from a seeded
generator and applied with scikit-image: bilinear for the image, nearest for
the mask (which stays binary). Borders are filled by reflection, as Keras'
``ImageDataGenerator(fill_mode="reflect")`` would.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from skimage import transform

from ..exitcodes import UserError


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """Ranges of the random transforms (each drawn uniformly in [-r, r])."""

    rotation: float = 0.2      # radians
    shift: float = 0.05        # fraction of the size
    shear: float = 0.05        # radians
    zoom: float = 0.05         # relative scale change
    hflip: bool = True

    def __post_init__(self):
        for f in ("rotation", "shift", "shear", "zoom"):
            v = getattr(self, f)
            if not (0 <= v < 1):
                raise UserError(f"augmentation {f} must be in [0, 1), got {v!r}")


def random_affine(rng: np.random.Generator, shape, p: AugmentParams) -> transform.AffineTransform:
    """A random affine transform about the image centre."""
    h, w = shape
    rot = rng.uniform(-p.rotation, p.rotation)
    shear = rng.uniform(-p.shear, p.shear)
    zoom = 1 + rng.uniform(-p.zoom, p.zoom)
    ty, tx = rng.uniform(-p.shift, p.shift, 2) * (h, w)
    flip = -1.0 if (p.hflip and rng.random() < 0.5) else 1.0
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    to_origin = transform.AffineTransform(translation=-centre)
    core = transform.AffineTransform(scale=(zoom * flip, zoom), rotation=rot, shear=shear)
    back = transform.AffineTransform(translation=centre + (tx, ty))
    return to_origin + core + back


def augment_pair(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                 params: AugmentParams = AugmentParams()):
    """Apply one random transform to an ``(H, W[, 1])`` image and its mask."""
    img2 = image[..., 0] if image.ndim == 3 else image
    m2 = mask[..., 0] if mask.ndim == 3 else mask
    tf = random_affine(rng, img2.shape, params)
    inv = tf.inverse
    out_i = transform.warp(img2, inv, order=1, mode="reflect", preserve_range=True)
    out_m = transform.warp(m2.astype(np.float32), inv, order=0, mode="reflect",
                           preserve_range=True)
    out_i = out_i.astype(np.float32).reshape(image.shape)
    out_m = (out_m > 0.5).astype(mask.dtype).reshape(mask.shape)
    return out_i, out_m


def augment_to(images: np.ndarray, masks: np.ndarray, total: int = 600, seed: int = 0,
               params: AugmentParams = AugmentParams()):
    """Keep the originals and add transformed copies up to ``total`` images.

    The copies cycle through the originals (each gets about the same number of
    copies). Use it on the training part of a fold only, never before the split.

    Returns:
        ``(images, masks, source_index)``; ``source_index[i]`` is the original
        that image ``i`` was made from.

    Examples:
        >>> x = np.random.rand(3, 32, 32, 1).astype("float32")
        >>> xa, ma, src = augment_to(x, (x > 0.5).astype("uint8"), total=10)
        >>> xa.shape, src[:4].tolist()
        ((10, 32, 32, 1), [0, 1, 2, 0])
    """
    n = len(images)
    if len(masks) != n:
        raise ValueError(f"{n} images but {len(masks)} masks")
    if total < n:
        raise ValueError(f"total={total} is less than the {n} original images; "
                         "augment_to only adds images")
    rng = np.random.default_rng(seed)
    src = np.concatenate([np.arange(n), np.arange(total - n) % max(n, 1)]).astype(int)
    out_i = np.empty((total,) + images.shape[1:], images.dtype)
    out_m = np.empty((total,) + masks.shape[1:], masks.dtype)
    out_i[:n], out_m[:n] = images, masks
    for j in range(n, total):
        out_i[j], out_m[j] = augment_pair(images[src[j]], masks[src[j]], rng, params)
    return out_i, out_m, src
