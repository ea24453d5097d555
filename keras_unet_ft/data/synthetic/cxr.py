"""Synthetic posterior-anterior chest radiographs with lung masks (``synth_cxr``).

A radiograph-like phantom (air dark, bone bright): body outline with neck,
sloping shoulders and upper arms, two lung fields of varied shape and size (the right lung,
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

from . import generate_images


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


def _smoothstep(u):
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3 - 2 * u)


def _body(rng, yy, xx, size) -> np.ndarray:
    """Soft-tissue density of the body: neck, sloping shoulders, a torso that widens
    slightly towards the abdomen, and both upper arms beside it (a dark gap of air
    between arm and chest wall), edges blurred."""
    neck_w = rng.uniform(0.07, 0.09)
    body_w = rng.uniform(0.38, 0.43)
    neck_y, shoulder_y = rng.uniform(0.02, 0.05), rng.uniform(0.15, 0.21)
    sh = _smoothstep((yy - neck_y) / (shoulder_y - neck_y))
    # the trapezius slope: steep beside the neck, flattening towards the shoulder tip
    half = neck_w + (body_w - neck_w) * sh ** 0.7 + rng.uniform(0.0, 0.03) * yy ** 2
    shift = rng.uniform(-0.015, 0.015)  # the patient is not exactly centred
    dx = np.abs(xx - 0.5 - shift)
    body = dx < half
    # upper arms: from the shoulders down the sides, narrowing
    gap, arm_w = rng.uniform(0.015, 0.03), rng.uniform(0.05, 0.08)
    arm_top = shoulder_y - 0.03
    arm = ((dx > half + gap) & (dx < half + gap + arm_w * (1 - 0.4 * yy))
           & (yy > arm_top)) | ((dx >= half) & (dx < half + gap + arm_w) & (np.abs(yy - arm_top) < 0.04))
    density = body.astype(np.float32) + 0.8 * arm
    return ndimage.gaussian_filter(density, size * 0.008)


def chest_xray(rng: np.random.Generator, size: int):
    """One synthetic chest X-ray ``(size, size)`` in [0, 1] and its lung mask."""
    yy, xx = np.mgrid[:size, :size] / size
    img = 0.05 + 0.55 * _body(rng, yy, xx, size)

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
    # ribs: posterior arcs from the spine, sloping down laterally (centre lines drawn
    # on one canvas, thickened and blurred once)
    ribs = np.zeros((size, size), bool)
    t = np.linspace(0, 1, 120)
    for k in range(10):
        y0 = 0.16 + k * rng.uniform(0.055, 0.065)
        for side in (-1, 1):
            x = 0.5 + side * (0.04 + 0.38 * t)
            y = y0 - 0.05 * np.sin(np.pi * t * 0.9) + 0.12 * t ** 2
            ribs[np.clip((y * size).astype(int), 0, size - 1),
                 np.clip((x * size).astype(int), 0, size - 1)] = True
    width = max(1.0, size * 0.012)
    ribs = ndimage.binary_dilation(ribs, iterations=max(1, int(width)))
    img += 0.08 * ndimage.gaussian_filter(ribs.astype(np.float32), width * 0.6)
    # clavicles
    clav = np.zeros((size, size), bool)
    for side in (-1, 1):
        rr, cc = draw.line(int(0.2 * size), int((0.5 + side * 0.05) * size),
                           int(rng.uniform(0.12, 0.16) * size), int((0.5 + side * 0.33) * size))
        clav[np.clip(rr, 0, size - 1), np.clip(cc, 0, size - 1)] = True
    clav = ndimage.binary_dilation(clav, iterations=max(1, size // 80))
    img += 0.15 * ndimage.gaussian_filter(clav.astype(np.float32), size * 0.006)
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
    return generate_images("synth_cxr", n, size, seed,
                           lambda rng, i, s: (*chest_xray(rng, s), None), progress)
