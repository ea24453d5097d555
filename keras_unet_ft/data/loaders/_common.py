"""Helpers shared by the loaders of real datasets."""

from __future__ import annotations

import logging
import pathlib
from typing import Callable, Dict, List, Optional, Sequence

from tqdm.auto import tqdm

from ...exitcodes import UserError
from ..dataset import Dataset
from ..preprocess import (IMAGE_EXTENSIONS, binarize_mask, parse_classes, read_image, stack,
                          to_gray)

log = logging.getLogger("keras_unet_ft.data")


class LayoutError(FileNotFoundError):
    """The folder does not have the layout the loader expects."""


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
    """Error (or, with ``skip_unpaired``, a warning) listing the first unpaired images."""
    if missing:
        msg = f"{name}: {len(missing)} image(s) without {what}, e.g. {missing[:5]}"
        if not skip_unpaired:
            raise UserError(msg + f" (to leave them out add ?skip_unpaired=true to the dataset, "
                            f"e.g. {name}:ROOT?skip_unpaired=true; `unet-ft data` also takes "
                            "--skip-unpaired)")
        log.warning("%s; left out", msg)
    if not n_pairs:
        raise UserError(f"{name}: no image/mask pairs found" + (f" under {root}" if root else ""))


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


def read_pairs(name: str, items: Sequence[tuple], size, source: str,
               read: Optional[Callable] = None, meta: Optional[Dict[str, list]] = None,
               progress: bool = True, classes=None,
               read_mask: Optional[Callable] = None) -> Dataset:
    """Read ``(stem, image_path, [mask_paths])`` items; masks are OR-ed together.

    Errors name the file: unreadable files, masks whose size differs from their
    image's. Masks in any encoding (see :func:`binarize_mask`; ``classes`` keeps
    only those colours of class-coded colour masks); graded ones are thresholded
    at half range (logged once). ``read_mask`` reads a mask file another way (HC18's
    outlines are filled).
    """
    classes = parse_classes(classes)
    read = read or read_image
    pairs, thresholded = [], []
    for stem, ip, mps in tqdm(items, desc=f"reading {name}", leave=False,
                              disable=not progress or len(items) < 50):
        img = to_gray(read(ip))
        mask = None
        for mp in mps:
            raw = read_mask(mp) if read_mask else read_image(mp)
            m, fixed = binarize_mask(raw, classes)
            if fixed:
                thresholded.append(pathlib.Path(mp).name)
            if m.shape != img.shape:
                raise UserError(f"{name}: mask {mp} is {m.shape[1]}x{m.shape[0]} but its image "
                                f"{ip} is {img.shape[1]}x{img.shape[0]}; expected the same size")
            mask = m if mask is None else (mask | m)
        pairs.append((img, mask))
    if thresholded:
        log.info("%s: %d non-binary mask(s) thresholded at half their range, e.g. %s",
                 name, len(thresholded), thresholded[:3])
    return stack(name, pairs, size, [s for s, _, _ in items], meta or {}, source)
