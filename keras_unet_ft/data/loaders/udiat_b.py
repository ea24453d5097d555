"""UDIAT breast ultrasound "Dataset B" (Yap et al., 2018): 163 images, 110 benign / 53 malignant."""

import csv
import logging

from ._common import find_dir, image_files, pair_by_stem, read_pairs, require_dir
from ...exitcodes import UserError

log = logging.getLogger("keras_unet_ft.data")
LAYOUT = ("  ROOT/original/*.png\n  ROOT/GT/*.png        (same stem)\n"
          "  ROOT/DatasetB.xlsx   (optional; columns Image, Type) or DatasetB.csv")


def _read_classes(root):
    """``{stem: type}`` from DatasetB.xlsx (openpyxl) or DatasetB.csv, when present."""
    rows = None
    xlsx = sorted(root.glob("*.xlsx"))
    csvs = sorted(root.glob("*.csv"))
    if xlsx:
        from openpyxl import load_workbook

        try:
            ws = load_workbook(xlsx[0], read_only=True, data_only=True).active
            rows = [[c for c in r] for r in ws.iter_rows(values_only=True)]
        except Exception as e:  # noqa: BLE001
            raise UserError(f"udiat_b: cannot read class list {xlsx[0]}: {e}") from None
    elif csvs:
        with open(csvs[0], newline="") as f:
            rows = list(csv.reader(f))
    if not rows:
        return None
    header = [str(h).strip().lower() if h is not None else "" for h in rows[0]]
    if "image" not in header or "type" not in header:
        raise UserError(f"udiat_b: class list in {root} needs columns 'Image' and 'Type', "
                        f"found {rows[0]}")
    ii, ti = header.index("image"), header.index("type")
    out = {}
    for r in rows[1:]:
        if r and r[ii] is not None and str(r[ii]).strip():
            stem = str(r[ii]).strip()
            stem = stem.rsplit(".", 1)[0] if stem.lower().endswith(".png") else stem
            out[stem] = str(r[ti]).strip().lower()
    return out


def load(root, size=(256, 256), skip_unpaired=False, classes=None, strict=False,
         progress=True):
    root = require_dir(root, "udiat_b", LAYOUT)
    imgs = image_files(find_dir(root, "original", "udiat_b", LAYOUT))
    masks = {p.stem: [p] for p in image_files(find_dir(root, "GT", "udiat_b", LAYOUT))}
    items = pair_by_stem("udiat_b", imgs, masks, skip_unpaired)
    meta, warnings = {}, []
    labels = _read_classes(find_dir(root, "original", "udiat_b", LAYOUT).parent)
    if labels:
        def lookup(stem):
            for key in (stem, stem.lstrip("0"), str(int(stem)) if stem.isdigit() else stem):
                if key in labels:
                    return labels[key]
            return "unknown"
        meta["class"] = [lookup(s) for s, _, _ in items]
        unlisted = [s for (s, _, _), c in zip(items, meta["class"]) if c == "unknown"]
        if unlisted:
            warnings.append(f"udiat_b: {len(unlisted)} image(s) are not in the class list, "
                            f"e.g. {unlisted[:5]}; their class is 'unknown'")
            log.warning("%s", warnings[-1])
    else:
        log.info("udiat_b: no DatasetB.xlsx / .csv in %s; no class metadata", root)
    return read_pairs("udiat_b", items, size, str(root), meta=meta, classes=classes,
                      progress=progress, strict=strict, warnings=warnings)
