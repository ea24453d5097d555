"""JSRT chest radiographs (247 raw images) with the SCR lung masks (van Ginneken et al., 2006)."""

import numpy as np

from ._common import check_unpaired, LayoutError, image_files, read_pairs, require_dir
from ...exitcodes import UserError

LAYOUT = ("  ROOT/**/*.IMG                          JSRT: raw 2048x2048, 16-bit big-endian,\n"
          "                                         12-bit values, no header\n"
          "  ROOT/**/masks/left lung/*.gif          SCR masks, 1024x1024 (fold1/, fold2/ or flat)\n"
          "  ROOT/**/masks/right lung/*.gif")
JSRT_SHAPE = (2048, 2048)
JSRT_MAX = 4095


def read_jsrt(path, invert: bool = True) -> np.ndarray:
    """A JSRT ``.IMG`` as float32 in [0, 1] at half resolution (1024x1024, like SCR).

    JSRT stores larger values for *darker* film density; ``invert=True`` gives
    the usual display (air dark, bone bright).
    """
    raw = np.fromfile(path, dtype=">u2")
    if raw.size != JSRT_SHAPE[0] * JSRT_SHAPE[1]:
        raise UserError(f"jsrt_scr: {path} has {raw.size * 2} bytes; a JSRT .IMG has "
                        f"{JSRT_SHAPE[0] * JSRT_SHAPE[1] * 2} (2048x2048, 16-bit big-endian)")
    img = raw.reshape(JSRT_SHAPE).astype(np.float32)
    if img.max() > JSRT_MAX:
        raise UserError(f"jsrt_scr: {path} has values up to {int(img.max())}; expected 12-bit "
                        f"(<= {JSRT_MAX}). Is it little-endian or not a JSRT image?")
    img = img.reshape(1024, 2, 1024, 2).mean(axis=(1, 3)) / JSRT_MAX  # 2x2 binning to SCR size
    return 1.0 - img if invert else img


def load(root, size=(256, 256), invert=True, skip_unpaired=False, classes=None,
         strict=False, progress=True):
    root = require_dir(root, "jsrt_scr", LAYOUT)
    imgs = sorted(p for p in root.rglob("*") if p.suffix.upper() == ".IMG")
    if not imgs:
        raise LayoutError(f"jsrt_scr: no *.IMG under {root}. Expected layout:\n{LAYOUT}")
    lungs = {}
    for side in ("left lung", "right lung"):
        dirs = sorted(p for p in root.rglob(side) if p.is_dir())
        if not dirs:
            raise LayoutError(f"jsrt_scr: no '{side}' mask folder under {root}. "
                              f"Expected layout:\n{LAYOUT}")
        for d in dirs:
            for f in image_files(d, (".gif", ".png")):
                lungs.setdefault(f.stem, {})[side] = f
    items, missing = [], []
    for p in imgs:
        m = lungs.get(p.stem, {})
        if len(m) == 2:
            items.append((p.stem, p, [m["left lung"], m["right lung"]]))
        else:
            missing.append(p.name)
    check_unpaired("jsrt_scr", missing, skip_unpaired, len(items), "both lung masks", root)
    return read_pairs("jsrt_scr", items, size, str(root),
                      read=lambda p: read_jsrt(p, invert), classes=classes, progress=progress,
                      strict=strict)
