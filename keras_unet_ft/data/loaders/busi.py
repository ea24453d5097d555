"""BUSI, Breast Ultrasound Images (Al-Dhabyani et al., 2020): benign / malignant / normal."""

import re

from ._common import check_unpaired, LayoutError, image_files, read_pairs, require_dir

LAYOUT = ("  ROOT/benign/benign (1).png, benign (1)_mask.png[, benign (1)_mask_1.png ...]\n"
          "  ROOT/malignant/...\n  ROOT/normal/...      (ROOT may also be the folder above "
          "Dataset_BUSI_with_GT)")
CLASSES = ("benign", "malignant", "normal")
_MASK = re.compile(r"^(?P<stem>.+?)_mask(_\d+)?$")


def _class_root(root):
    if (root / "benign").is_dir() or (root / "malignant").is_dir():
        return root
    for p in sorted(root.glob("*")):
        if p.is_dir() and ((p / "benign").is_dir() or (p / "malignant").is_dir()):
            return p
    raise LayoutError(f"busi: no benign/ or malignant/ folder under {root}. "
                      f"Expected layout:\n{LAYOUT}")


def load(root, size=(256, 256), include_normal=True, skip_unpaired=False, classes=None,
         strict=False, progress=True):
    """Read BUSI; a lesion's extra masks (``_mask_1``, ``_mask_2``) are united with the first."""
    root = _class_root(require_dir(root, "busi", LAYOUT))
    items, labels, missing = [], [], []
    for cls in CLASSES:
        if cls == "normal" and not include_normal:
            continue
        folder = root / cls
        if not folder.is_dir():
            continue
        files = image_files(folder)
        masks = {}
        images = []
        for p in files:
            m = _MASK.match(p.stem)
            if m:
                masks.setdefault(m.group("stem"), []).append(p)
            else:
                images.append(p)
        for p in images:
            if p.stem in masks:
                items.append((p.stem, p, sorted(masks[p.stem])))
                labels.append(cls)
            else:
                missing.append(f"{cls}/{p.name}")
    check_unpaired("busi", missing, skip_unpaired, len(items), "a mask", root)
    return read_pairs("busi", items, size, str(root), meta={"class": labels}, classes=classes,
                      progress=progress, strict=strict)
