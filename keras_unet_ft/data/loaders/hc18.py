"""HC18, fetal head circumference (van den Heuvel et al., PLoS ONE 2018).

The training set's annotations are ellipse *outlines* (``000_HC_Annotation.png``);
the loader fills each outline to a head mask. A few outlines are not closed (the head
is cut by the image border, e.g. ``186_HC_Annotation.png``): they are closed along the
border, on the side an ellipse fitted to the outline's points says is the head (an
outline with a gap: by that ellipse), and the dataset's warnings count them. An
outline no ellipse fits (a few scattered pixels) is left out by name, or refuses the
dataset with ``strict=true``. The test set has no annotations and is not
read. HC18 stands in for the TUFFC paper's second, undisclosed human ultrasound set
(fetal head being the best guess).
"""

import logging
import pathlib

import numpy as np
from scipy import ndimage
from skimage.measure import EllipseModel

from ._common import LayoutError, check_unpaired, find_dir, image_files, read_pairs, require_dir
from ...exitcodes import UserError
from ..preprocess import binarize_mask, read_image

log = logging.getLogger("keras_unet_ft.data")
LAYOUT = ("  ROOT/training_set/000_HC.png, 000_HC_Annotation.png, 001_HC.png, ...\n"
          "  ROOT/training_set_pixel_size_and_HC.csv   (not needed)\n"
          "  (ROOT may also be the folder above training_set; an outline cut by the border\n"
          "  is closed along it, one that cannot be filled is left out: strict=true refuses it)")
SUFFIX = "_Annotation"
#: an open outline is filled only when an ellipse fits its points (mean distance at most
#: MAX_RESIDUAL px). An outline that meets the border is closed along the border: the parts
#: of the image it cuts off that lie mostly inside the ellipse are the head, kept when they
#: agree with the ellipse (IoU at least MIN_AGREEMENT). An outline with a gap is filled by
#: the ellipse itself when its points cover at least MIN_COVERAGE of the ellipse's arc
#: inside the image.
MAX_RESIDUAL = 2.0
MIN_AGREEMENT = 0.6
MIN_COVERAGE = 0.8


def _ellipse_fit(outline: np.ndarray):
    rr, cc = np.nonzero(outline)
    if len(rr) < 10:
        return None
    pts = np.column_stack([cc, rr]).astype(float)
    model = EllipseModel.from_estimate(pts)
    if not model:
        return None
    if (not np.all(np.isfinite([*model.center, *model.axis_lengths, model.theta]))
            or min(model.axis_lengths) < 2):
        return None
    if np.mean(np.abs(model.residuals(pts))) > MAX_RESIDUAL:
        return None
    return model


def _inside(model, shape) -> np.ndarray:
    (xc, yc), (a, b), theta = model.center, model.axis_lengths, model.theta
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    dx, dy = xx - xc, yy - yc
    u = dx * np.cos(theta) + dy * np.sin(theta)
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _coverage(model, outline: np.ndarray) -> float:
    """The share of the ellipse's arc inside the image that lies within 2 px of the outline."""
    h, w = outline.shape
    xy = model.predict_xy(np.linspace(0, 2 * np.pi, 2000, endpoint=False))
    step = np.linalg.norm(np.diff(np.vstack([xy, xy[:1]]), axis=0), axis=1)   # arc length
    seen = (xy[:, 0] > -0.5) & (xy[:, 0] < w - 0.5) & (xy[:, 1] > -0.5) & (xy[:, 1] < h - 0.5)
    if not seen.any():
        return 0.0
    x = np.round(xy[seen, 0]).astype(int)
    y = np.round(xy[seen, 1]).astype(int)
    near = ndimage.distance_transform_edt(~outline)[y, x] <= 2
    return float(step[seen][near].sum() / step[seen].sum())


def fitted_ellipse(outline: np.ndarray):
    """The head inside an open ``outline`` (bool), closed along the image border or by the
    ellipse through its points, or None when no ellipse fits them (see :data:`MAX_RESIDUAL`)."""
    model = _ellipse_fit(outline)
    if model is None:
        return None
    inside = _inside(model, outline.shape)
    parts, n = ndimage.label(~outline)
    if n >= 2:   # the outline meets the border: the parts it cuts off inside the ellipse
        region = np.zeros(outline.shape, bool)
        for k in range(1, n + 1):
            part = parts == k
            if inside[part].mean() > 0.5:
                region |= part
        region |= outline
        if (region & inside).sum() >= MIN_AGREEMENT * (region | inside).sum():
            return region
    return inside if _coverage(model, outline) >= MIN_COVERAGE else None


def filled_outline(path, closed=None) -> np.ndarray:
    """The region inside an annotated outline, as 0/255 uint8. An outline that is not
    closed is filled by a fitted ellipse (its file name is appended to ``closed``); an
    error names the file when no ellipse fits it either."""
    outline, _ = binarize_mask(read_image(path))
    filled = ndimage.binary_fill_holes(outline)
    if (filled & ~outline).sum() < 0.5 * outline.sum():   # no inside: the outline is open
        ellipse = fitted_ellipse(outline)
        if ellipse is None:
            raise UserError(f"hc18: the outline in {path} is not closed and no ellipse fits its "
                            f"{int(outline.sum())} pixels; cannot fill it")
        filled = ndimage.binary_fill_holes(ellipse | outline)
        if closed is not None:
            closed.append(pathlib.Path(path).name)
    return filled.astype(np.uint8) * 255


def load(root, size=(256, 256), skip_unpaired=False, classes=None, strict=False,
         progress=True):
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
    closed = []
    ds = read_pairs("hc18", items, size, str(folder), classes=classes, progress=progress,
                    read_mask=lambda p: filled_outline(p, closed), strict=strict)
    kept = set(ds.ids)
    closed = [c for c in closed if pathlib.Path(c).stem[: -len(SUFFIX)] in kept]
    if closed:
        msg = (f"hc18: {len(closed)} outline(s) not closed (the head cut by the image border, "
               f"or a gap) are closed along the border or by an ellipse fitted to their points: "
               f"{', '.join(closed[:10])}{' ...' if len(closed) > 10 else ''}")
        log.warning("%s", msg)
        ds.warnings.insert(0, msg)
    return ds
