"""HC18, fetal head circumference (van den Heuvel et al., PLoS ONE 2018).

The training set's annotations are ellipse *outlines* (``000_HC_Annotation.png``);
the loader fills each outline to a head mask. The test set has no annotations and
is not read. HC18 stands in for the TUFFC paper's second, undisclosed human
ultrasound set (fetal head being the best guess).
"""

import numpy as np
from scipy import ndimage

from ._common import LayoutError, check_unpaired, find_dir, image_files, read_pairs, require_dir
from ...exitcodes import UserError
from ..preprocess import binarize_mask, read_image

LAYOUT = ("  ROOT/training_set/000_HC.png, 000_HC_Annotation.png, 001_HC.png, ...\n"
          "  ROOT/training_set_pixel_size_and_HC.csv   (not needed)\n"
          "  (ROOT may also be the folder above training_set)")
SUFFIX = "_Annotation"


def filled_outline(path) -> np.ndarray:
    """The region inside an annotated outline, as 0/255 uint8 (an error names the file
    when the outline is not closed)."""
    outline, _ = binarize_mask(read_image(path))
    filled = ndimage.binary_fill_holes(outline)
    if filled.sum() <= outline.sum():
        raise UserError(f"hc18: the outline in {path} is not closed; cannot fill it")
    return filled.astype(np.uint8) * 255


def load(root, size=(256, 256), skip_unpaired=False, classes=None, progress=True):
    root = require_dir(root, "hc18", LAYOUT)
    folder = find_dir(root, "training_set", "hc18", LAYOUT)
    files = image_files(folder)
    notes = {p.stem[: -len(SUFFIX)]: p for p in files if p.stem.endswith(SUFFIX)}
    images = [p for p in files if not p.stem.endswith(SUFFIX)]
    if not images:
        raise LayoutError(f"hc18: no images in {folder}. Expected layout:\n{LAYOUT}")
    items, missing = [], []
    for p in images:
        if p.stem in notes:
            items.append((p.stem, p, [notes[p.stem]]))
        else:
            missing.append(p.name)
    check_unpaired("hc18", missing, skip_unpaired, len(items), "an annotation", root)
    return read_pairs("hc18", items, size, str(folder), classes=classes, progress=progress,
                      read_mask=filled_outline)
