"""Reading and preprocessing images and masks; the on-disk cache.

* Grayscale: RGB(A) images become luminance (alpha dropped); 8- and 16-bit
  integers are scaled to [0, 1] by their type's range, floats are kept. A dataset
  whose 16-bit images all stay below 4096 holds 12-bit data (CT, X-ray): the
  loaders scale it by 4095 instead of 65535 and say so (:func:`twelve_bit`).
* Resize to the target size: images anti-aliased (bilinear), masks by nearest
  neighbour after binarisation, so they stay binary.
* Masks in any common encoding (:func:`binarize_mask`): 0/255, label values,
  palette and RGB(A) colour masks, class-coded colours; graded masks
  (JPEG-compressed) are thresholded at half their range and the loader says so.
  A dataset whose masks are all empty is an error; more than
  ``EMPTY_WARN_SHARE`` empty masks is a warning. Masks that lose their object only
  when resized (an image of an extreme aspect ratio squashed to a square) are said
  apart, naming the aspect ratio (:func:`check_lost_masks`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import warnings

import numpy as np
from skimage import color, io, transform

from ..exitcodes import UserError
from ..io import atomic_savez
from .dataset import Dataset

log = logging.getLogger("keras_unet_ft.data")
CACHE_VERSION = 4  # bump when preprocessing changes: old caches are rebuilt
#                   (3: real sets keep each image's size before resizing; 4: 12-bit data in
#                   16-bit files scaled by 4095, files that cannot be read left out, warnings kept)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")


def read_image(path) -> np.ndarray:
    """Read an image file with scikit-image; a clear error names a bad file."""
    path = pathlib.Path(path)
    try:
        if path.stat().st_size == 0:
            raise UserError(f"cannot read image file {path}: the file is empty (0 bytes)")
    except OSError as e:
        raise UserError(f"cannot read image file {path}: {e.strerror or e}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = io.imread(path)
    except Exception as e:  # noqa: BLE001 - any reader error means the same to the user
        # imageio's last resort names a video plugin ("pip install imageio[pyav]") for any
        # file it cannot decode: the file is not an image, whatever its name says
        why = ("not an image in a format this package reads (PNG, JPEG, BMP, TIFF, GIF)"
               if "pyav" in str(e) or "Could not find a backend" in str(e)
               else f"{e.__class__.__name__}: {str(e)[:200]}")
        raise UserError(f"cannot read image file {path}: {why}") from None
    if a.ndim == 4:  # animated GIF: first frame
        a = a[0]
    if a.ndim not in (2, 3) or a.size == 0:
        raise UserError(f"{path}: expected a 2-D grayscale or RGB(A) image, got shape {a.shape}")
    return a


def _scale(a: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.bool_):
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    a = a.astype(np.float32)
    return a / a.max() if a.max() > 1.0 else a


TWELVE_BIT = 4095   # the largest 12-bit value


def largest_value(raw: np.ndarray):
    """The largest value of a 16-bit unsigned image (alpha channel left out), else None."""
    if raw.dtype != np.uint16:
        return None
    if raw.ndim == 3 and raw.shape[-1] in (2, 4):
        raw = raw[..., :-1]
    return int(raw.max())


def twelve_bit(name: str, largest) -> tuple[float, str]:
    """The factor a dataset's 16-bit images (already divided by 65535) are multiplied by, and
    the sentence that says so (``""`` when nothing changes). ``largest``: each 16-bit image's
    largest value. When all stay below 4096 the data is 12-bit: it is scaled by 4095, not
    read at 1/16 of its range.

    Examples:
        >>> twelve_bit("x", [4000, 3000])[0] == 65535 / 4095
        True
        >>> twelve_bit("x", [4000, 60000])
        (1.0, '')
    """
    largest = [v for v in largest if v is not None]
    if not largest or max(largest) > TWELVE_BIT:
        return 1.0, ""
    return 65535.0 / TWELVE_BIT, (
        f"{name}: the {len(largest)} 16-bit image(s) hold values up to {max(largest)} only "
        f"(below 4096): read as 12-bit data, scaled to [0, 1] by {TWELVE_BIT} instead of 65535")


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


#: colours a class-coded mask may use (``classes=red,green``), RGB in [0, 1]
NAMED_COLOURS = {"red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1), "yellow": (1, 1, 0),
                 "cyan": (0, 1, 1), "magenta": (1, 0, 1), "white": (1, 1, 1)}
COLOUR_TOLERANCE = 0.35   # RGB distance (0-1 scale) within which a pixel has a named colour
DARK = 0.25               # a colour pixel whose channels are all below this is black background


def parse_classes(classes) -> tuple:
    """``"red,green"`` (or a list) -> ``("red", "green")``; unknown colours are errors."""
    if classes in (None, "", ()):
        return ()
    names = [c.strip().lower() for c in (classes.split(",") if isinstance(classes, str)
                                         else classes) if str(c).strip()]
    bad = [c for c in names if c not in NAMED_COLOURS]
    if bad:
        raise UserError(f"unknown mask colour(s) {bad} in classes={classes!r}; expected "
                        f"names from {', '.join(NAMED_COLOURS)}")
    return tuple(names)


def binarize_mask(a: np.ndarray, classes=()) -> tuple[np.ndarray, bool]:
    """Foreground (bool) of a mask in any common encoding, and whether it was thresholded.

    * grayscale integers: 0 / full scale (0/255) and small label values (0/1, 0/2,
      0/1/2/3, ... below half the type's range) -> every value > 0 is foreground;
      anything reaching half the range (graded, JPEG-compressed 0/255) is
      thresholded at half the range (reported as thresholded);
    * floats: thresholded at half their maximum;
    * RGB(A) with equal channels: as grayscale;
    * colour (palette PNGs are read as RGB(A)): transparent pixels are background;
      the background colour is black (pixels whose channels are all below ``DARK``)
      when the mask has any, else its most frequent colour; every other colour is
      foreground. ``classes`` (e.g. ``("red", "green")``) keeps only pixels of
      those colours (class-coded masks such as BUS-UCLM's).
    """
    raw = np.asarray(a)
    if raw.ndim == 3 and raw.shape[-1] == 1:
        raw = raw[..., 0]
    alpha = None
    if raw.ndim == 3 and raw.shape[-1] in (2, 4):
        alpha = raw[..., -1]
        raw = raw[..., :-1]
        if raw.shape[-1] == 1:
            raw = raw[..., 0]
    if (raw.ndim == 3 and np.array_equal(raw[..., 0], raw[..., 1])
            and np.array_equal(raw[..., 0], raw[..., 2]) and not classes):
        raw = raw[..., 0]
    transparent = None
    if alpha is not None:
        full = np.iinfo(alpha.dtype).max if np.issubdtype(alpha.dtype, np.integer) else 1.0
        if alpha.min() < full:
            transparent = alpha < full / 2
    if raw.ndim == 2:
        fg, thresholded = _gray_foreground(raw)
    else:
        fg, thresholded = _colour_foreground(_scale(raw), parse_classes(classes), transparent)
    if transparent is not None:
        fg = fg & ~transparent
    return fg, thresholded


def _gray_foreground(raw: np.ndarray) -> tuple[np.ndarray, bool]:
    if np.issubdtype(raw.dtype, np.bool_):
        return raw.astype(bool), False
    if np.issubdtype(raw.dtype, np.integer):
        full = np.iinfo(raw.dtype).max
        values = np.unique(raw)
        if values.max() < full / 2 or np.all(np.isin(values, (0, full))):
            return raw > 0, False       # labels or exactly 0 / full scale
        return raw >= full / 2, True    # graded: threshold at half range
    g = raw.astype(np.float32)
    top = float(g.max()) if g.size else 0.0
    if top <= 0:
        return np.zeros(g.shape, bool), False
    values = np.unique(g)
    return g >= top / 2, not np.all(np.isin(values, (0.0, top)))


def _colour_foreground(rgb: np.ndarray, classes: tuple, transparent) -> tuple[np.ndarray, bool]:
    if classes:
        fg = np.zeros(rgb.shape[:2], bool)
        for c in classes:
            fg |= np.linalg.norm(rgb - np.array(NAMED_COLOURS[c]), axis=-1) < COLOUR_TOLERANCE
        return fg, False
    dark = rgb.max(axis=-1) < DARK
    if dark.any() or (transparent is not None and transparent.any()):
        return ~dark, False   # black (or transparent) background: every colour is foreground
    # no black anywhere: the most frequent colour is the background
    flat = (np.round(rgb * 255).astype(np.int32) @ np.array([65536, 256, 1])).ravel()
    values, counts = np.unique(flat, return_counts=True)
    bg = values[np.argmax(counts)]
    bg_rgb = np.array([(bg >> 16) & 255, (bg >> 8) & 255, bg & 255]) / 255.0
    return np.linalg.norm(rgb - bg_rgb, axis=-1) >= COLOUR_TOLERANCE, False


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


def stack(name, pairs, size, ids, meta, source, warnings=None) -> Dataset:
    """Resize ``(image, mask)`` float/bool pairs and assemble a Dataset (``warnings``: the
    loader's sentences for :attr:`Dataset.warnings`)."""
    n = len(pairs)
    images = np.empty((n, size[0], size[1], 1), np.float32)
    masks = np.empty((n, size[0], size[1], 1), np.uint8)
    for i, (img, m) in enumerate(pairs):
        images[i, ..., 0] = np.clip(resize_image(img, size), 0, 1)
        masks[i, ..., 0] = resize_mask(m, size)
    if pairs and "original_size" not in meta:   # the shapes before resizing (aspect check)
        meta = {**meta, "original_size": [f"{img.shape[1]}x{img.shape[0]}" for img, _ in pairs]}
    ds = Dataset(name, images, masks, list(ids), meta, source, list(warnings or []))
    check_lost_masks(ds, [bool(np.any(m)) for _, m in pairs], [img.shape[:2] for img, _ in pairs])
    check_empty_masks(ds, source)
    return ds


def check_lost_masks(ds: Dataset, had_object, shapes) -> int:
    """Masks with an object before resizing and none after: resizing an image of an extreme
    aspect ratio (1000x10 to 32x32) samples past thin objects. An error when no mask keeps
    its object (it names the cause, not the encoding), else a warning. Returns the number lost."""
    n = len(ds)
    if not n:
        return 0
    after = ds.masks.reshape(n, -1).max(axis=1) > 0
    lost = [i for i in range(n) if had_object[i] and not after[i]]
    if not lost:
        return 0
    ratios = [max(w / h, h / w) for h, w in (shapes[i] for i in lost)]
    worst = lost[int(np.argmax(ratios))]
    h, w = shapes[worst]
    cause = (f"(e.g. {ds.ids[worst]}, {w}x{h} px, aspect ratio {max(ratios):.0f}:1): squashing "
             "images of such an aspect ratio to that size erases thin objects; crop, pad or tile "
             "the images to a squarer shape first, or give a larger size")
    if not after.any():
        raise UserError(f"{ds.name}: all {n} masks are empty after resizing to "
                        f"{ds.size[1]}x{ds.size[0]}, though {sum(map(bool, had_object))} had an "
                        f"object before {cause}")
    msg = (f"{ds.name}: {len(lost)} of the {sum(map(bool, had_object))} masks with an object "
           f"are empty after resizing to {ds.size[1]}x{ds.size[0]} {cause}")
    log.warning("%s", msg)
    ds.warnings.append(msg)
    return len(lost)


EMPTY_WARN_SHARE = 0.2  # more empty masks than this is said out loud


def check_empty_masks(ds: Dataset, where: str = "") -> int:
    """Error when every mask is empty (a mask encoding this loader cannot read, or no
    lesions at all); warning above ``EMPTY_WARN_SHARE``. Returns the number empty."""
    n = len(ds)
    empty = int((ds.masks.reshape(n, -1).max(axis=1) == 0).sum()) if n else 0
    if n and empty == n:
        raise UserError(f"{ds.name}: all {n} masks are empty after reading{' ' + where if where else ''}; "
                        "the masks may use an encoding that is not a foreground on black "
                        "(give classes=red,green for class-coded colour masks) or hold no "
                        "objects at all")
    if n and empty / n > EMPTY_WARN_SHARE:
        log.warning("%s: %d of %d masks (%.0f %%) are empty; the study reports them apart "
                    "(Dice over images with an object; the share of empty images predicted "
                    "empty)", ds.name, empty, n, 100.0 * empty / n)
    elif empty:
        log.info("%s: %d of %d masks are empty (kept, reported apart)", ds.name, empty, n)
    return empty


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
                           info["source"], list(info.get("warnings", [])))
    except Exception as e:  # noqa: BLE001 - a corrupt cache is rebuilt, never trusted
        log.warning("cache %s is unreadable (%s); rebuilding", path, e)
        return None


def save_cached(path: pathlib.Path, key: str, ds: Dataset) -> None:
    """Write atomically (temporary file + rename). A cache that cannot be written (a
    read-only or full disk) is said once and skipped: the data is in memory all the same."""
    info = json.dumps({"name": ds.name, "ids": ds.ids, "meta": ds.meta, "source": ds.source,
                       "warnings": ds.warnings})
    try:
        atomic_savez(path, compress=False, key=key, info=info, images=ds.images, masks=ds.masks)
    except OSError as e:
        log.warning("%s: cannot write the dataset cache %s (%s); going on without it (set "
                    "UNET_FT_CACHE or data.cache_dir to a writable folder, or --no-cache)",
                    ds.name, path, e.strerror or e)
