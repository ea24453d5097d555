"""Simulated lung ultrasound with rib masks (``sim_lus``, Cheng & Lam's task).

Same physics as :mod:`.ultrasound` (scatterers, pulse-echo PSF, attenuation +
TGC, Hilbert envelope, log compression), with the anatomy of an intercostal
lung scan on a linear probe (depth 50 mm):

* chest wall: skin, subcutaneous fat and intercostal muscle layers with speckle;
* ribs (1-2 per image): bright curved anterior cortex (strong specular
  reflectors) with a complete posterior acoustic shadow;
* the pleural line: a bright, slightly wavy horizontal reflector between the
  ribs, about 5 mm below the rib surface;
* below the pleura, aerated lung: no tissue echoes, only A-lines - horizontal
  reverberations of the pleural line at multiples of its depth, fading with
  depth - plus weak diffuse clutter.

Mask = the ribs (their bright cortex band); ``target="pleura"`` gives the pleural
line instead.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from . import generate_images
from .ultrasound import Probe, log_compress, point_sample, sample_index, simulate_envelope
from ...exitcodes import UserError

LUNG_PROBE = Probe(depth_mm=50.0, width_mm=40.0)


def lung_image(rng: np.random.Generator, size: int, target: str = "ribs",
               probe: Probe = LUNG_PROBE):
    """One lung ultrasound image ``(size, size)`` in [0, 1] and its mask."""
    if target not in ("ribs", "pleura"):
        raise UserError(f"sim_lus target must be 'ribs' or 'pleura', got {target!r}")
    nz, nx = probe.grid(size)
    nzc = -(-nz // 4)
    z = ((np.arange(nzc) + 0.5) / nzc * probe.depth_mm)[:, None]
    x = ((np.arange(nx) + 0.5) / nx * probe.width_mm)[None, :]

    # chest wall
    skin = rng.uniform(1.0, 2.0)
    fat = skin + rng.uniform(3.0, 7.0)
    rib_depth = fat + rng.uniform(4.0, 9.0)          # top of the rib cortex
    echo = np.where(z < skin, 1.5, np.where(z < fat, 0.35, 0.8)).astype(np.float32)
    echo = echo * np.ones((1, nx), np.float32)
    stri = 1 + 0.35 * np.sin(2 * np.pi * (z + 0.1 * x) / rng.uniform(1.0, 2.0))
    echo = np.where((z > fat) & (z < rib_depth + 6), echo * stri, echo)

    # ribs: 1 or 2 curved cortices (12-18 mm wide) with a shadow beneath
    n_ribs = int(rng.integers(1, 3))
    if n_ribs == 1:
        centres = [rng.uniform(0.2, 0.8) * probe.width_mm]
    else:
        gap = rng.uniform(20.0, 26.0)
        c0 = rng.uniform(0.5 * probe.width_mm - gap / 2 - 4, 0.5 * probe.width_mm - gap / 2 + 4)
        centres = [c0, c0 + gap]
    rib_mask = np.zeros((nzc, nx), bool)
    shadow = np.zeros((nzc, nx), bool)
    half_widths = []
    for cx in centres:
        hw = rng.uniform(6.0, 9.0)
        half_widths.append(hw)
        top = rib_depth + rng.uniform(-1.0, 1.0) + 2.0 * ((x - cx) / hw) ** 2  # convex surface
        inside = np.abs(x - cx) < hw
        thick = rng.uniform(1.0, 1.6)
        rib_mask |= inside & (z >= top) & (z < top + thick)
        shadow |= inside & (z >= top + thick)
    # pleural line between / beside the ribs, ~5 mm deeper than the rib surface
    pleura_z = rib_depth + rng.uniform(4.0, 6.0) + 0.3 * np.sin(2 * np.pi * x / rng.uniform(8, 20))
    pleura = (np.abs(z - pleura_z) < 0.5) & ~shadow & ~rib_mask
    lung = (z > pleura_z + 0.5) & ~shadow
    echo = np.where(lung, 0.05, echo)
    # A-lines: reverberations of the pleural line at multiples of its depth
    for k in (2, 3, 4):
        depth = k * pleura_z.mean()
        if depth < probe.depth_mm:
            a_line = (np.abs(z - depth) < 0.5) & lung
            echo = np.where(a_line, 2.5 * 0.6 ** (k - 1), echo)
    echo = np.where(pleura, 4.0, echo)
    echo = np.where(rib_mask, 6.0, echo)
    echo = np.where(shadow, 0.02, echo)
    echo = ndimage.gaussian_filter1d(echo, 0.8, axis=1)
    echo = np.repeat(echo, 4, axis=0)[:nz]

    env = simulate_envelope(echo, rng, probe, tgc_error_db=rng.uniform(0, 3),
                            lines=sample_index(nx, size))
    img = log_compress(point_sample(env, size, cols=False), rng.uniform(50, 60))
    rows = (np.linspace(0, nz - 1, size).round() // 4).astype(int)
    cols = np.linspace(0, nx - 1, size).round().astype(int)
    m = rib_mask if target == "ribs" else pleura
    return img, m[np.ix_(rows, cols)].astype(np.uint8)


def sim_lus(n: int = 500, size: int = 256, seed: int = 0, target: str = "ribs",
            progress: bool = True):
    """The ``sim_lus`` dataset: simulated lung ultrasound; mask = ribs (or pleura).

    500 images by default, so that 5-fold cross-validation leaves 400 training images
    per fold for the largest size of the dataset-size study."""
    return generate_images("sim_lus", n, size, seed,
                           lambda rng, i, s: (*lung_image(rng, s, target), None), progress)
