"""Montgomery County chest X-ray set (Jaeger et al., 2014): 138 images, manual lung masks."""

from ._common import check_unpaired, find_dir, image_files, read_pairs, require_dir

LAYOUT = ("  ROOT/CXR_png/*.png\n  ROOT/ManualMask/leftMask/*.png\n"
          "  ROOT/ManualMask/rightMask/*.png     (ROOT may be MontgomerySet or the folder above)")


def load(root, size=(256, 256), skip_unpaired=False, classes=None, strict=False,
         progress=True):
    root = require_dir(root, "montgomery", LAYOUT)
    cxr = find_dir(root, "CXR_png", "montgomery", LAYOUT)
    base = cxr.parent
    left = {p.stem: p for p in image_files(find_dir(base, "ManualMask/leftMask", "montgomery", LAYOUT))}
    right = {p.stem: p for p in image_files(find_dir(base, "ManualMask/rightMask", "montgomery", LAYOUT))}
    items, missing = [], []
    for p in image_files(cxr):
        if p.stem in left and p.stem in right:
            items.append((p.stem, p, [left[p.stem], right[p.stem]]))
        else:
            missing.append(p.name)
    check_unpaired("montgomery", missing, skip_unpaired, len(items), "both lung masks", root)
    return read_pairs("montgomery", items, size, str(root), classes=classes, progress=progress,
                      strict=strict)
