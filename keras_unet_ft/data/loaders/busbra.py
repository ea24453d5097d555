"""BUS-BRA, breast ultrasound with BI-RADS (Gómez-Flores et al., Medical Physics 2024).

1,875 images of 1,064 patients, every one with a lesion mask; ``bus_data.csv`` gives
each image's pathology (benign / malignant) and ``5-fold-cv.csv`` the publishers'
patient-level folds (``kFold`` 1-5), which ``folds=official`` uses instead of random
ones (copies of one patient never straddle training and test).
"""

import csv
import logging

from ._common import LayoutError, check_unpaired, find_dir, image_files, read_pairs, require_dir
from ...exitcodes import UserError

LAYOUT = ("  ROOT/Images/bus_0001-l.png ...\n"
          "  ROOT/Masks/mask_0001-l.png ...\n"
          "  ROOT/bus_data.csv        (ID, Pathology, ...)\n"
          "  ROOT/5-fold-cv.csv       (ID, kFold: the official patient-level folds)\n"
          "  (ROOT may also be the folder above BUSBRA)")
FOLDS_FILE = "5-fold-cv.csv"
log = logging.getLogger("keras_unet_ft.data")


def _read_csv(path):
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def _stem(value: str) -> str:
    v = str(value).strip()
    return v[:-4] if v.lower().endswith(".png") else v


def load(root, size=(256, 256), folds="random", skip_unpaired=False, classes=None,
         strict=False, progress=True):
    """Read BUS-BRA; ``folds="official"`` records the publishers' folds (meta ``fold``)."""
    if folds not in ("random", "official"):
        raise UserError(f"busbra: option folds={folds!r}; expected random or official")
    root = require_dir(root, "busbra", LAYOUT)
    img_dir = find_dir(root, "Images", "busbra", LAYOUT)
    base = img_dir.parent
    mask_dir = find_dir(base, "Masks", "busbra", LAYOUT, depth=0)
    masks = {p.stem.replace("mask_", "bus_", 1): p for p in image_files(mask_dir)}
    items, missing = [], []
    for p in image_files(img_dir):
        if p.stem in masks:
            items.append((p.stem, p, [masks[p.stem]]))
        else:
            missing.append(p.name)
    check_unpaired("busbra", missing, skip_unpaired, len(items), "a mask", root)
    meta, warnings = {}, []
    data = base / "bus_data.csv"
    if data.exists():
        rows = {_stem(r["ID"]): r for r in _read_csv(data) if r.get("ID")}
        meta["class"] = [str(rows.get(s, {}).get("Pathology", "unknown")).strip().lower()
                         for s, _, _ in items]
        unlisted = [s for s, _, _ in items if s not in rows]
        if unlisted:
            warnings.append(f"busbra: {len(unlisted)} image(s) are not in {data}, e.g. "
                            f"{unlisted[:5]}; their class is 'unknown'")
            log.warning("%s", warnings[-1])
    if folds == "official":
        path = base / FOLDS_FILE
        if not path.exists():
            raise LayoutError(f"busbra: folds=official needs {path}. Expected layout:\n{LAYOUT}")
        rows = {_stem(r["ID"]): r for r in _read_csv(path) if r.get("ID")}
        lost = [s for s, _, _ in items if s not in rows]
        if lost:
            raise UserError(f"busbra: {len(lost)} image(s) have no fold in {path}, e.g. "
                            f"{lost[:5]}")
        try:
            meta["fold"] = [int(rows[s]["kFold"]) - 1 for s, _, _ in items]
        except (KeyError, ValueError) as e:
            raise UserError(f"busbra: {path} needs a whole-number kFold column ({e})") from None
    return read_pairs("busbra", items, size, str(base), meta=meta, classes=classes,
                      progress=progress, strict=strict, warnings=warnings)
