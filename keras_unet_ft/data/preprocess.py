"""Reading and preprocessing images and masks; the on-disk cache.

* Grayscale: RGB(A) images become luminance (alpha dropped); 8- and 16-bit
  integers are scaled to [0, 1] by their type's range, floats are kept.
* Resize to the target size: images anti-aliased (bilinear), masks by nearest
  neighbour after binarisation, so they stay binary.
* Masks that are not binary (graded, JPEG-compressed, 0/255 or 0/1) are
  thresholded at half their type's range (or half their max for floats); the
  loader says so once in the log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import tempfile
import warnings

import numpy as np
from skimage import color, io, transform

from .dataset import Dataset

log = logging.getLogger("keras_unet_ft.data")
CACHE_VERSION = 2  # bump when preprocessing changes: old caches are rebuilt
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")


def read_image(path) -> np.ndarray:
    """Read an image file with scikit-image; a clear error names a bad file."""
    path = pathlib.Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = io.imread(path)
    except Exception as e:  # noqa: BLE001 - any reader error means the same to the user
        raise ValueError(f"cannot read image file {path}: {e.__class__.__name__}: {e}") from None
    if a.ndim == 4:  # animated GIF: first frame
        a = a[0]
    if a.ndim not in (2, 3) or a.size == 0:
        raise ValueError(f"{path}: expected a 2-D grayscale or RGB(A) image, got shape {a.shape}")
    return a


def _scale(a: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.bool_):
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    a = a.astype(np.float32)
    return a / a.max() if a.max() > 1.0 else a


def to_gray(a: np.ndarray) -> np.ndarray:
    """Luminance in [0, 1] (float32) of a grayscale, RGB or RGBA array."""
    if a.ndim == 3:
        if a.shape[-1] == 1:
            a = a[..., 0]
        elif a.shape[-1] == 2:  # gray + alpha
            a = a[..., 0]
        else:
            return color.rgb2gray(_scale(a[..., :3])).astype(np.float32)
    return _scale(a)


def binarize_mask(a: np.ndarray) -> tuple[np.ndarray, bool]:
    """Binary mask (bool) and whether the input needed thresholding.

    Exactly 0 / full-scale (e.g. 0/255 in 8 bits) is binary as it is. Integer
    masks whose values are only 0 and 1 are label images (0/1). Anything else
    (graded, JPEG-compressed) is thresholded at half the type's range.
    """
    raw = np.asarray(a)
    if raw.ndim == 3 and raw.shape[-1] in (2, 4):  # drop alpha
        raw = raw[..., : raw.shape[-1] - 1]
    if raw.ndim == 3 and raw.shape[-1] == 1:
        raw = raw[..., 0]
    if np.issubdtype(raw.dtype, np.integer) and raw.ndim == 2 and raw.max() <= 1:
        return raw > 0, False  # 0/1 labels
    g = to_gray(raw)
    values = np.unique(g)
    if np.all(np.isin(values, (0.0, 1.0))):
        return g > 0.5, False
    return g >= 0.5, True


def resize_image(a: np.ndarray, size) -> np.ndarray:
    if a.shape[:2] == tuple(size):
        return a.astype(np.float32)
    return transform.resize(a, size, order=1, anti_aliasing=True, preserve_range=True
                            ).astype(np.float32)


def resize_mask(m: np.ndarray, size) -> np.ndarray:
    if m.shape[:2] == tuple(size):
        return m.astype(np.uint8)
    return transform.resize(m.astype(np.uint8), size, order=0, anti_aliasing=False,
                            preserve_range=True).astype(np.uint8)


def stack(name, pairs, size, ids, meta, source, empty_note=True) -> Dataset:
    """Resize ``(image, mask)`` float/bool pairs and assemble a Dataset."""
    n = len(pairs)
    images = np.empty((n, size[0], size[1], 1), np.float32)
    masks = np.empty((n, size[0], size[1], 1), np.uint8)
    for i, (img, m) in enumerate(pairs):
        images[i, ..., 0] = np.clip(resize_image(img, size), 0, 1)
        masks[i, ..., 0] = resize_mask(m, size)
    ds = Dataset(name, images, masks, list(ids), meta, source)
    empty = int((masks.reshape(n, -1).max(axis=1) == 0).sum()) if n else 0
    if empty and empty_note:
        log.info("%s: %d of %d masks are empty (kept)", name, empty, n)
    return ds


# ---------------------------------------------------------------------------
# cache
def cache_dir(explicit=None) -> pathlib.Path:
    """``explicit``, else ``$UNET_FT_CACHE``, else ``~/.cache/keras-unet-ft``."""
    d = explicit or os.environ.get("UNET_FT_CACHE") or pathlib.Path.home() / ".cache" / "keras-unet-ft"
    return pathlib.Path(d)


def cache_key(**parts) -> str:
    parts = {**parts, "cache_version": CACHE_VERSION}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_cached(path: pathlib.Path, key: str):
    """The cached Dataset at ``path`` if it is intact and has ``key``; else None."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                log.info("cache %s is stale; rebuilding", path)
                return None
            info = json.loads(str(z["info"]))
            return Dataset(info["name"], z["images"], z["masks"], info["ids"], info["meta"],
                           info["source"])
    except Exception as e:  # noqa: BLE001 - a corrupt cache is rebuilt, never trusted
        log.warning("cache %s is unreadable (%s); rebuilding", path, e)
        return None


def save_cached(path: pathlib.Path, key: str, ds: Dataset) -> None:
    """Write atomically (temporary file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    info = json.dumps({"name": ds.name, "ids": ds.ids, "meta": ds.meta, "source": ds.source})
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez(tmp, key=key, info=info, images=ds.images, masks=ds.masks)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
