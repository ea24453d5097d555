"""Helpers shared by the loaders of real datasets."""

from __future__ import annotations

import logging
import pathlib
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ...exitcodes import UserError
from ...progress import progress_bar
from ..dataset import Dataset
from ..preprocess import (IMAGE_EXTENSIONS, binarize_mask, largest_value, parse_classes,
                          read_image, stack, to_gray, twelve_bit)

log = logging.getLogger("keras_unet_ft.data")


class LayoutError(FileNotFoundError):
    """The folder does not have the layout the loader expects."""


class OptionHint(UserError):
    """An error whose fix is a loader option: ``before + TARGET + after``, where TARGET is the
    user's own dataset spec with ``options`` set (every other option kept; a value of None
    removes the option). :func:`~keras_unet_ft.data.registry.load_dataset` writes it with
    the spec as given; alone, TARGET reads ``NAME:ROOT?KEY=VALUE``."""

    def __init__(self, before: str, after: str, name: str, root, **options):
        self.before, self.after, self.options = before, after, options
        add = "&".join(f"{k}={v}" for k, v in options.items() if v is not None)
        super().__init__(before + f"{name}:{root}" + (f"?{add}" if add else "") + after)

    def for_target(self, target: str) -> UserError:
        return UserError(self.before + target + self.after)


#: more than this share of a dataset's image/mask pairs unreadable refuses the dataset: a
#: systematic fault (a wrong format, masks of another resolution) rather than a few odd files
MAX_LEFT_OUT_SHARE = 0.5


def require_dir(root, name: str, layout: str) -> pathlib.Path:
    if root is None:
        raise LayoutError(f"{name}: a root folder is needed, e.g. {name}:/data/{name}. "
                          f"Expected layout:\n{layout}")
    root = pathlib.Path(root).expanduser()
    if not root.is_dir():
        raise LayoutError(f"{name}: root folder {root} does not exist. Expected layout:\n{layout}")
    return root


def find_dir(root: pathlib.Path, rel: str, name: str, layout: str, depth: int = 2) -> pathlib.Path:
    """``root/rel`` or, for a root one or two levels above, the first match below it."""
    direct = root / rel
    if direct.is_dir():
        return direct
    for d in range(1, depth + 1):
        hits = sorted(p for p in root.glob("/".join(["*"] * d) + "/" + rel) if p.is_dir())
        if hits:
            return hits[0]
    raise LayoutError(f"{name}: no folder {rel!r} under {root}. Expected layout:\n{layout}")


def image_files(folder: pathlib.Path, exts: Sequence[str] = IMAGE_EXTENSIONS) -> List[pathlib.Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in exts and not p.name.startswith("."))


def check_unpaired(name: str, missing: List[str], skip_unpaired: bool, n_pairs: int,
                   what: str = "a mask", root=None) -> None:
    """Error (or, with ``skip_unpaired``, a warning) listing the first unpaired images. When
    no image pairs, the error says so and suggests no option (leaving the unpaired out
    would leave nothing)."""
    where = f" under {root}" if root else ""
    if missing and not n_pairs:
        raise UserError(f"{name}: none of the {len(missing)} image(s){where} has {what}, e.g. "
                        f"{missing[:5]}; expected the layout of `unet-ft data list`")
    if missing:
        msg = f"{name}: {len(missing)} image(s) without {what}, e.g. {missing[:5]}"
        if not skip_unpaired:
            raise OptionHint(msg + f" (to leave them out and keep the {n_pairs} with {what}, "
                             "give ", "; `unet-ft data` also takes --skip-unpaired)",
                             name, root if root else "ROOT", skip_unpaired="true")
        log.warning("%s; left out", msg)
    if not n_pairs:
        raise UserError(f"{name}: no image/mask pairs found{where}")


def check_unique_stems(name: str, files: List[pathlib.Path], what: str = "images") -> None:
    """Two files with one stem (``a.png`` and ``a.jpg``) cannot be told apart: an error."""
    seen: Dict[str, pathlib.Path] = {}
    for p in files:
        if p.stem in seen:
            raise UserError(f"{name}: {what} {seen[p.stem]} and {p} have the same name without "
                            "extension; keep one of them")
        seen[p.stem] = p


def pair_by_stem(name: str, images: List[pathlib.Path], masks: Dict[str, list],
                 skip_unpaired: bool) -> List[tuple]:
    """``[(stem, image_path, [mask_paths])]``; error (or warning) on unpaired images."""
    check_unique_stems(name, images)
    pairs, missing = [], []
    for p in images:
        m = masks.get(p.stem)
        if m:
            pairs.append((p.stem, p, m))
        else:
            missing.append(p.name)
    check_unpaired(name, missing, skip_unpaired, len(pairs))
    return pairs


def left_out(name: str, reasons: List[str], total: int, strict: bool, warnings: List[str],
             what: str = "image/mask pair(s)") -> None:
    """Files that cannot be read: left out with a warning naming each (also added to
    ``warnings``), refused with ``strict`` or when they are more than
    :data:`MAX_LEFT_OUT_SHARE` of the ``total``."""
    if not reasons:
        return
    listed = "; ".join(reasons[:5]) + (f"; and {len(reasons) - 5} more" if len(reasons) > 5
                                      else "")
    if strict:
        raise UserError(f"{name}: {len(reasons)} of {total} {what} cannot be read (strict=true "
                        f"refuses the dataset; without it they are left out): {listed}")
    if len(reasons) > MAX_LEFT_OUT_SHARE * total:
        raise UserError(f"{name}: {len(reasons)} of {total} {what} cannot be read, more than "
                        f"{MAX_LEFT_OUT_SHARE:.0%}, so the dataset is refused rather than read "
                        f"in part: {listed}")
    msg = f"{name}: {len(reasons)} of {total} {what} cannot be read and are left out: {listed}"
    log.warning("%s", msg)
    warnings.append(msg)


def read_pairs(name: str, items: Sequence[tuple], size, source: str,
               read: Optional[Callable] = None, meta: Optional[Dict[str, list]] = None,
               progress: bool = True, classes=None,
               read_mask: Optional[Callable] = None, strict: bool = False,
               warnings: Optional[List[str]] = None) -> Dataset:
    """Read ``(stem, image_path, [mask_paths])`` items; masks are OR-ed together.

    A pair that cannot be read (a file that is empty, corrupt or no image; a mask whose
    size differs from its image's) is left out, named in a warning (see :func:`left_out`;
    ``strict`` refuses the dataset instead). Masks in any encoding (see
    :func:`binarize_mask`; ``classes`` keeps only those colours of class-coded colour
    masks); graded ones are thresholded at half range (logged once). 16-bit images that
    all stay below 4096 are 12-bit data, scaled by 4095 (said once). ``read_mask`` reads a
    mask file another way (HC18's outlines are filled). ``warnings``: sentences the loader
    already has for the Dataset's ``warnings``.
    """
    classes = parse_classes(classes)
    read = read or read_image
    warnings = list(warnings or [])
    meta = meta or {}
    pairs, kept, thresholded, bad, largest = [], [], [], [], []
    for k, (stem, ip, mps) in enumerate(progress_bar(items, desc=f"reading {name}",
                                                     leave=False, unit="file",
                                                     disable=not progress or len(items) < 50)):
        graded = []
        try:
            raw = read(ip)
            img = to_gray(raw)
            mask = None
            for mp in mps:
                m, fixed = binarize_mask(read_mask(mp) if read_mask else read_image(mp), classes)
                if fixed:
                    graded.append(pathlib.Path(mp).name)
                if m.shape != img.shape:
                    raise UserError(f"mask {mp} is {m.shape[1]}x{m.shape[0]} but its image {ip} "
                                    f"is {img.shape[1]}x{img.shape[0]}; expected the same size")
                mask = m if mask is None else (mask | m)
        except UserError as e:
            bad.append(str(e).removeprefix(f"{name}: "))
            continue
        except OSError as e:   # a loader's own reader (JSRT's raw files)
            bad.append(f"cannot read {ip}: {e.strerror or e}")
            continue
        largest.append(largest_value(raw))
        pairs.append((img, mask))
        kept.append(k)
        thresholded += graded
    left_out(name, bad, len(items), strict, warnings)
    factor, note = twelve_bit(name, largest)
    if note:
        pairs = [(np.clip(img * factor, 0, 1) if v is not None else img, m)
                 for (img, m), v in zip(pairs, largest)]
        log.warning("%s", note)
        warnings.append(note)
    if thresholded:
        log.info("%s: %d non-binary mask(s) thresholded at half their range, e.g. %s",
                 name, len(thresholded), thresholded[:3])
    return stack(name, pairs, size, [items[k][0] for k in kept],
                 {key: [v[k] for k in kept] for key, v in meta.items()}, source, warnings)
