"""Any ``images/`` + ``masks/`` folder pair, matched by stem: bring your own modality."""

from ._common import find_dir, image_files, pair_by_stem, read_pairs, require_dir

LAYOUT = ("  ROOT/images/NAME.(png|jpg|bmp|tif|gif)\n"
          "  ROOT/masks/NAME[SUFFIX].(png|...)   (SUFFIX e.g. _mask; set with mask_suffix)")


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
    items = pair_by_stem("folder", imgs, masks, skip_unpaired)
    return read_pairs("folder", items, size, str(root), classes=classes, progress=progress)
