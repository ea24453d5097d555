"""Synthetic posterior-anterior chest radiographs with lung masks (``synth_cxr``).

A radiograph-like phantom (air dark, bone bright): body outline with shoulders
and soft tissue, two lung fields of varied shape and size (the right lung,
on the image's left, shorter and wider; costophrenic angles), the heart shadow
overlapping the left lung, mediastinum and spine, ribs as bright arcs crossing
the lungs, clavicles, diaphragm domes, vascular markings, then blur, noise and
exposure variation. Mask = union of both lungs, without the heart shadow (as the
SCR masks of JSRT draw them).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import draw


def _lung_polygon(rng, side: int, size: int):
    """Outline of one lung (side -1 = image left = patient's right)."""
    cx = 0.5 + side * rng.uniform(0.17, 0.22)
    top = rng.uniform(0.14, 0.22)
    bottom = rng.uniform(0.68, 0.8) - (0.04 if side < 0 else 0.0)  # liver lifts the right dome
    half_w = rng.uniform(0.13, 0.17) + (0.01 if side < 0 else 0.0)
    t = np.linspace(0, 1, 40)
    # lateral border: convex, from apex to costophrenic angle
    lat_x = cx + side * half_w * np.sin(np.pi / 2 * np.sqrt(t)) * rng.uniform(1.0, 1.15)
    lat_y = top + (bottom - top) * t
    # diaphragm dome: from the lateral angle back to the medial border
    dome_x = np.linspace(lat_x[-1], cx - side * half_w * 0.75, 20)
    u = np.linspace(0, 1, 20)
    dome_y = bottom - rng.uniform(0.04, 0.08) * np.sin(np.pi * u) - 0.04 * u
    # medial border: nearly straight up to the apex
    med_x = np.linspace(dome_x[-1], cx - side * half_w * 0.45, 30)
    med_y = np.linspace(dome_y[-1], top + 0.04, 30)
    xs = np.concatenate([lat_x, dome_x, med_x]) * size
    ys = np.concatenate([lat_y, dome_y, med_y]) * size
    rr, cc = draw.polygon(ys, xs, (size, size))
    m = np.zeros((size, size), bool)
    m[rr, cc] = True
    return ndimage.binary_closing(m, iterations=2), cx


def chest_xray(rng: np.random.Generator, size: int):
    """One synthetic chest X-ray ``(size, size)`` in [0, 1] and its lung mask."""
    yy, xx = np.mgrid[:size, :size] / size
    # body: soft tissue attenuation (bright) against air (dark)
    body_w = rng.uniform(0.40, 0.47)
    body = (np.abs(xx - 0.5) / body_w) ** 2 + ((yy - 1.05) / 1.0) ** 4 < 1
    shoulders = (yy > rng.uniform(0.06, 0.12)) & (np.abs(xx - 0.5) < body_w + 0.02)
    body = body | (shoulders & (yy > 0.1))
    body = ndimage.gaussian_filter(body.astype(np.float32), size * 0.01)
    img = 0.05 + 0.55 * body

    right, cxr_ = _lung_polygon(rng, -1, size)
    left, cxl = _lung_polygon(rng, +1, size)
    lungs = right | left
    # heart: an ellipse in the lower mediastinum, bulging into the left lung
    hy, hx = rng.uniform(0.56, 0.64), 0.5 + rng.uniform(0.04, 0.08)
    heart = ((xx - hx) / rng.uniform(0.13, 0.17)) ** 2 + ((yy - hy) / rng.uniform(0.11, 0.14)) ** 2 < 1
    lungs = lungs & ~heart
    air = ndimage.gaussian_filter(lungs.astype(np.float32), size * 0.006)
    markings = ndimage.gaussian_filter(rng.standard_normal((size, size)), size * 0.012)
    markings = markings / (np.abs(markings).max() + 1e-6)
    hilum = np.exp(-(((xx - 0.5) / 0.16) ** 2 + ((yy - 0.45) / 0.12) ** 2))
    img = img - air * (rng.uniform(0.3, 0.42) - 0.08 * markings - 0.12 * hilum)

    # spine and mediastinum
    spine = np.exp(-0.5 * ((xx - 0.5) / rng.uniform(0.025, 0.035)) ** 2) * (yy > 0.05)
    vert = 0.5 + 0.5 * np.cos(2 * np.pi * yy / rng.uniform(0.045, 0.06))
    img += 0.12 * spine * (0.7 + 0.3 * vert)
    # ribs: posterior arcs from the spine, sloping down laterally
    for k in range(10):
        y0 = 0.16 + k * rng.uniform(0.055, 0.065)
        for side in (-1, 1):
            t = np.linspace(0, 1, 60)
            x = 0.5 + side * (0.04 + 0.38 * t)
            y = y0 - 0.05 * np.sin(np.pi * t * 0.9) + 0.12 * t ** 2
            rr, cc = np.clip((y * size).astype(int), 0, size - 1), np.clip((x * size).astype(int), 0, size - 1)
            rib = np.zeros((size, size), np.float32)
            rib[rr, cc] = 1
            width = max(1.0, size * 0.012)
            rib = ndimage.gaussian_filter(ndimage.binary_dilation(rib > 0, iterations=max(1, int(width))).astype(np.float32), width * 0.6)
            img += 0.08 * rib
    # clavicles
    for side in (-1, 1):
        rr, cc = draw.line(int(0.2 * size), int((0.5 + side * 0.05) * size),
                           int(rng.uniform(0.12, 0.16) * size), int((0.5 + side * 0.33) * size))
        cl = np.zeros((size, size), np.float32)
        cl[rr, cc] = 1
        img += 0.15 * ndimage.gaussian_filter(ndimage.binary_dilation(cl > 0, iterations=max(1, size // 80)).astype(np.float32), size * 0.006)
    # heart and diaphragm are soft tissue: already bright where not lung
    # exposure, blur, noise
    img = np.clip(img, 0, None)
    img = img / (img.max() + 1e-6)
    img = img ** rng.uniform(0.8, 1.3) * rng.uniform(0.85, 1.0) + rng.uniform(0.0, 0.08)
    img = ndimage.gaussian_filter(img, rng.uniform(0.3, 1.0) * size / 256)
    img = img + rng.normal(0, rng.uniform(0.005, 0.02), img.shape)
    return np.clip(img, 0, 1).astype(np.float32), lungs.astype(np.uint8)


def synth_cxr(n: int = 240, size: int = 256, seed: int = 0, progress: bool = True):
    """The ``synth_cxr`` dataset: synthetic chest X-rays with both lungs as the mask."""
    from . import generate_images

    return generate_images("synth_cxr", n, size, seed,
                           lambda rng, i, s: (*chest_xray(rng, s), None), progress)
