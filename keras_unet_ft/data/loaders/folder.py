"""Any ``images/`` + ``masks/`` folder pair, matched by stem: bring your own modality."""

from ._common import find_dir, image_files, pair_by_stem, read_pairs, require_dir
from ...exitcodes import UserError

LAYOUT = ("  ROOT/images/NAME.(png|jpg|bmp|tif|gif)\n"
          "  ROOT/masks/NAME[SUFFIX].(png|...)   (SUFFIX e.g. _mask; set with mask_suffix)")


def suffix_of(images, masks) -> str:
    """The suffix by which mask names differ from image names (``a.png`` / ``a_mask.png`` ->
    ``_mask``) when no image pairs by its plain name and most images pair with one suffix;
    else ``""``."""
    stems = {p.stem for p in images}
    if not stems or any(s in masks for s in stems):
        return ""
    counts = {}
    for m in masks:   # split each mask name where a suffix may start: _mask, -seg, .label
        for i in range(1, len(m)):
            if not m[i].isalnum() and m[:i] in stems:
                counts[m[i:]] = counts.get(m[i:], 0) + 1
    best = max(counts, key=counts.get, default="")
    return best if best and counts[best] >= max(1, len(stems) // 2) else ""


def load(root, size=(256, 256), mask_suffix="", images_dir="images", masks_dir="masks",
         skip_unpaired=False, classes=None, progress=True):
    root = require_dir(root, "folder", LAYOUT)
    imgs = image_files(find_dir(root, images_dir, "folder", LAYOUT, depth=0))
    masks = {}
    for p in image_files(find_dir(root, masks_dir, "folder", LAYOUT, depth=0)):
        stem = p.stem
        if mask_suffix:
            if not stem.endswith(mask_suffix):
                continue
            stem = stem[: -len(mask_suffix)]
        masks.setdefault(stem, []).append(p)
    if not mask_suffix:
        suffix = suffix_of(imgs, masks)
        if suffix:
            raise UserError(f"folder: the masks under {root} are named like the images plus "
                            f"{suffix!r} (e.g. {imgs[0].stem}{suffix}); give "
                            f"folder:{root}?mask_suffix={suffix}")
    items = pair_by_stem("folder", imgs, masks, skip_unpaired)
    return read_pairs("folder", items, size, str(root), classes=classes, progress=progress)
