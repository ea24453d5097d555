"""Any ``images/`` + ``masks/`` folder pair, matched by stem: bring your own modality."""

from ._common import OptionHint, find_dir, image_files, pair_by_stem, read_pairs, require_dir

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
         skip_unpaired=False, classes=None, strict=False, progress=True):
    root = require_dir(root, "folder", LAYOUT)
    imgs = image_files(find_dir(root, images_dir, "folder", LAYOUT, depth=0))
    every = {}   # every mask by its stem, whatever its suffix
    for p in image_files(find_dir(root, masks_dir, "folder", LAYOUT, depth=0)):
        every.setdefault(p.stem, []).append(p)
    masks = {}
    for stem, paths in every.items():
        if mask_suffix:
            if not stem.endswith(mask_suffix):
                continue
            stem = stem[: -len(mask_suffix)]
        masks.setdefault(stem, []).extend(paths)
    stems = {p.stem for p in imgs}
    if imgs and not any(s in masks for s in stems):   # nothing pairs: which suffix would?
        suffix = suffix_of(imgs, every)
        if suffix and suffix != mask_suffix:
            raise OptionHint(f"folder: the masks under {root} are named like the images plus "
                             f"{suffix!r} (e.g. {imgs[0].stem}{suffix}); give ", "", "folder",
                             root, mask_suffix=suffix)
        if mask_suffix and any(s in every for s in stems):
            raise OptionHint(f"folder: no mask under {root} is named like an image plus "
                             f"{mask_suffix!r}, but masks are named like the images themselves "
                             f"(e.g. {imgs[0].name}); give ", "", "folder", root,
                             mask_suffix=None)
    items = pair_by_stem("folder", imgs, masks, skip_unpaired)
    return read_pairs("folder", items, size, str(root), classes=classes, progress=progress,
                      strict=strict)
