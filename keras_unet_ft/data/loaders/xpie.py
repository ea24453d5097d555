"""XPIE (Xia et al., CVPR 2017): 10,000 natural images with salient-object masks."""

from typing import Optional

from ._common import find_dir, image_files, pair_by_stem, read_pairs, require_dir

LAYOUT = "  ROOT/Images/*.jpg\n  ROOT/Grounds/*.png   (same stem as the image)"


def load(root, size=(256, 256), skip_unpaired=False, limit: Optional[int] = None, classes=None,
         strict=False, progress=True):
    """Read XPIE; images become grayscale (as in the paper)."""
    root = require_dir(root, "xpie", LAYOUT)
    imgs = image_files(find_dir(root, "Images", "xpie", LAYOUT))
    masks = {p.stem: [p] for p in image_files(find_dir(root, "Grounds", "xpie", LAYOUT))}
    items = pair_by_stem("xpie", imgs, masks, skip_unpaired)
    if limit:
        items = items[: int(limit)]
    return read_pairs("xpie", items, size, str(root), classes=classes, progress=progress,
                      strict=strict)
