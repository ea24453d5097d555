"""Grayscale natural-looking scenes with one salient object (``synth_salient``).

The offline stand-in for grayscale XPIE (the paper's pretraining set). Texture
comes from the real photographs that ship inside scikit-image's wheel
(``skimage.data``; only images present without a download) and scikit-learn's
two sample images. Each scene:

* a background: a random crop of one photograph, rotated / flipped, with a
  random contrast, gamma and illumination gradient;
* one salient object - a smooth random blob, a star-like polygon or a union of
  ellipses, 8-40 % of the image - filled with a crop of *another* photograph,
  with its own contrast and a brightness shift of random sign (so a single
  intensity threshold does not separate it), pasted with a soft edge;
* 0-3 smaller, low-contrast distractor shapes that are not part of the mask;
* blur and noise.

The mask is the object's shape (before edge softening).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
from scipy import ndimage
from skimage import color, draw, transform

from . import generate_images

# natural photographs in skimage's wheel (no download), grayscale or RGB
SKIMAGE_PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "coins", "rocket", "brick",
                  "grass", "gravel", "moon", "horse", "immunohistochemistry", "clock",
                  "hubble_deep_field", "cell", "retina")
TEXTURE_SIZE = 320


def _to_gray(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 3:
        a = color.rgb2gray(a[..., :3])
    a = a.astype(np.float32)
    if a.max() > 1.0:
        a = a / 255.0
    return a


@functools.lru_cache(maxsize=1)
def texture_sources():
    """Grayscale float32 photographs, each resized to at most ``TEXTURE_SIZE``."""
    from skimage import data

    out = []
    for name in SKIMAGE_PHOTOS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img = getattr(data, name)()
        except Exception:  # not in this wheel, or would need a download
            continue
        out.append((name, img))
    try:
        from sklearn.datasets import load_sample_images

        sk = load_sample_images()
        out += [(f"sklearn_{i}", im) for i, im in enumerate(sk.images)]
    except Exception:
        pass
    if len(out) < 4:
        raise RuntimeError("synth_salient needs the photographs shipped with scikit-image; "
                           f"found only {[n for n, _ in out]}")
    result = []
    for name, img in out:
        g = _to_gray(img)
        if name == "horse":  # a silhouette: invert to a bright background and soften
            g = ndimage.gaussian_filter(g, 2)
        scale = TEXTURE_SIZE / max(g.shape)
        if scale < 1:
            g = transform.rescale(g, scale, anti_aliasing=True).astype(np.float32)
        result.append((name, g))
    return tuple(result)


def _crop(rng, tex: np.ndarray, size: int) -> np.ndarray:
    """A random crop of a texture, rotated/flipped, resized to ``size``."""
    h, w = tex.shape
    side = int(rng.uniform(0.35, 1.0) * min(h, w))
    y = rng.integers(0, h - side + 1)
    x = rng.integers(0, w - side + 1)
    c = tex[y:y + side, x:x + side]
    c = np.rot90(c, rng.integers(0, 4))
    if rng.random() < 0.5:
        c = c[:, ::-1]
    c = transform.resize(c, (size, size), order=1, anti_aliasing=side > size)
    lo, hi = np.percentile(c, (1, 99))
    return np.clip((c - lo) / (hi - lo + 1e-6), 0, 1).astype(np.float32)


def _shape(rng, size: int, area_range=(0.08, 0.40)) -> np.ndarray:
    """A random object shape: smooth blob, star polygon or union of ellipses."""
    area = rng.uniform(*area_range) * size * size
    r = np.sqrt(area / np.pi)
    cy, cx = rng.uniform(0.3, 0.7, 2) * size
    kind = rng.integers(0, 3)
    mask = np.zeros((size, size), bool)
    if kind == 0:  # smooth blob
        yy, xx = np.mgrid[:size, :size]
        theta = np.arctan2(yy - cy, xx - cx)
        rad = np.ones_like(theta)
        for k in range(2, 6):
            rad += rng.uniform(0, 0.25) / k * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        a = rng.uniform(0.6, 1.0)
        mask = np.hypot((yy - cy) * a, (xx - cx)) <= r * rad
    elif kind == 1:  # star-like polygon
        n = rng.integers(5, 12)
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = r * rng.uniform(0.55, 1.35, n)
        rr, cc = draw.polygon(cy + rad * np.sin(ang), cx + rad * np.cos(ang), (size, size))
        mask[rr, cc] = True
    else:  # union of ellipses
        for _ in range(rng.integers(2, 5)):
            oy, ox = rng.normal(0, 0.45 * r, 2)
            rr, cc = draw.ellipse(cy + oy, cx + ox, r * rng.uniform(0.35, 0.8),
                                  r * rng.uniform(0.35, 0.8), (size, size),
                                  rotation=rng.uniform(0, np.pi))
            mask[rr, cc] = True
    if mask.sum() < 0.01 * size * size:  # degenerate draw: fall back to a disc
        rr, cc = draw.disk((size / 2, size / 2), max(2.0, r), shape=(size, size))
        mask[:] = False
        mask[rr, cc] = True
    return mask


def _contrast(rng, img: np.ndarray, lo, hi) -> np.ndarray:
    a, b = np.sort(rng.uniform(lo, hi, 2))
    if b - a < 0.2:
        b = min(1.0, a + 0.2)
    return a + (b - a) * img


def salient_scene(rng: np.random.Generator, size: int):
    """One scene ``(size, size)`` in [0, 1] and its object mask."""
    tex = texture_sources()
    i_bg, i_obj = rng.choice(len(tex), 2, replace=False)
    bg = _contrast(rng, _crop(rng, tex[i_bg][1], size), 0.0, 1.0)
    yy, xx = np.mgrid[:size, :size] / size
    bg = bg + rng.uniform(-0.25, 0.25) * (yy - 0.5) + rng.uniform(-0.25, 0.25) * (xx - 0.5)
    bg = np.clip(bg, 0, 1) ** rng.uniform(0.7, 1.4)

    # distractors: smaller, lower contrast, not in the mask
    for _ in range(rng.integers(0, 4)):
        d = _shape(rng, size, (0.01, 0.05))
        fill = _contrast(rng, _crop(rng, tex[rng.integers(len(tex))][1], size), 0.1, 0.9)
        alpha = (ndimage.gaussian_filter(d.astype(np.float32), rng.uniform(0.5, 2))
                 * rng.uniform(0.3, 0.7))
        bg = bg * (1 - alpha) + fill * alpha

    mask = _shape(rng, size)
    fill = _contrast(rng, _crop(rng, tex[i_obj][1], size), 0.0, 1.0)
    # shift the object's mean brightness away from the local background, random sign
    inside_bg = bg[mask].mean() if mask.any() else 0.5
    shift = rng.uniform(0.08, 0.3) * (1 if rng.random() < 0.5 else -1)
    fill = np.clip(fill - fill[mask].mean() + inside_bg + shift, 0, 1)
    alpha = ndimage.gaussian_filter(mask.astype(np.float32), rng.uniform(0.4, 1.5))
    img = bg * (1 - alpha) + fill * alpha
    img = ndimage.gaussian_filter(img, rng.uniform(0.0, 1.0))
    img = img + rng.normal(0, rng.uniform(0.0, 0.04), img.shape)
    return np.clip(img, 0, 1).astype(np.float32), mask.astype(np.uint8)


def synth_salient(n: int = 10000, size: int = 256, seed: int = 0, progress: bool = True):
    """The ``synth_salient`` dataset (stand-in for grayscale XPIE, 10,000 images)."""
    return generate_images("synth_salient", n, size, seed,
                           lambda rng, i, s: (*salient_scene(rng, s), None), progress)
