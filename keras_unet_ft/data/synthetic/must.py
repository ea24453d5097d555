"""High-fidelity simulated breast ultrasound with ``pymust`` (``sim_bus_must``).

An optional mode for small sets and for checking the fast linear model of
:mod:`.ultrasound`: the same breast phantom and lesion, imaged by the MUST
toolbox (``pip install "keras-unet-ft[sim]"``): a 128-element 7.6 MHz linear
array (MUST's ``L11-5v``), one plane wave at 0 degrees, ``simus`` for the
element RF signals, I/Q demodulation, delay-and-sum beamforming
(``dasmtx``) directly at the output pixels, an exponential
time-gain compensation fitted to the image, then the same log compression as
the fast model.

Choices (measured on a 2-core CPU, see BENCHMARKS.md):

* ``fnumber = 1.5`` on receive: MUST's default full, unweighted aperture
  washes out the lesion contrast.
* Scatterers are drawn from the image's own seeded generator (``genscat``
  uses NumPy's global state) and fed to ``simus`` in chunks of 2,000.
* Time: about 4 CPU-ms per scatterer here (4,000 scatterers ~17 s); with the
  default 20,000 scatterers a 128-px image takes ~65 s on 2 cores. Never the
  default dataset.
"""

from __future__ import annotations

import numpy as np

from .ultrasound import Probe, breast_dataset, breast_phantom, log_compress, _inside
from ...exitcodes import UserError

MUST_PROBE = "L11-5v"
CHUNK = 2000
DEPTH_START_MM = 1.0


def _require_pymust():
    try:
        import pymust
    except ImportError as e:
        raise ImportError("sim_bus_must needs the optional package pymust: "
                          'pip install "keras-unet-ft[sim]" (or pip install pymust)') from e
    return pymust


def simulate_breast_image_must(rng: np.random.Generator, size: int, malignant: bool,
                               scatterers: int = 20000):
    """One B-mode image ``(size, size)`` in [0, 1] made by MUST, and its lesion mask."""
    pymust = _require_pymust()
    if scatterers < 1:
        raise UserError(f"scatterers must be >= 1, got {scatterers!r}")
    param = pymust.getparam(MUST_PROBE)
    param.fnumber = 1.5
    width_mm = param.Nelements * param.pitch * 1e3
    probe = Probe(width_mm=width_mm, depth_mm=40.0)
    nzc, nxc = 256, 256
    echo, lesion = breast_phantom(rng, nzc, nxc, probe, malignant)
    # scatterers: uniform positions, N(0, 1) amplitudes scaled by the echogenicity
    xs_mm = rng.uniform(0, width_mm, scatterers)
    zs_mm = rng.uniform(DEPTH_START_MM, probe.depth_mm, scatterers)
    iz = np.minimum((zs_mm / probe.depth_mm * nzc).astype(int), nzc - 1)
    ix = np.minimum((xs_mm / width_mm * nxc).astype(int), nxc - 1)
    rc = rng.standard_normal(scatterers) * echo[iz, ix]
    x_m, z_m = (xs_mm - width_mm / 2) * 1e-3, zs_mm * 1e-3
    delays = pymust.txdelay(param, 0)
    parts = []
    for i in range(0, scatterers, CHUNK):  # RF is linear in the scatterers: sum the chunks
        part = pymust.simus(x_m[i:i + CHUNK], z_m[i:i + CHUNK], rc[i:i + CHUNK], delays, param)
        parts.append(part[0] if isinstance(part, tuple) else part)
    rf = np.zeros((max(len(p) for p in parts), parts[0].shape[1]))
    for p in parts:  # chunks end at their deepest scatterer's echo: pad with zeros
        rf[:len(p)] += p
    iq = pymust.rf2iq(rf, param)  # param.fc given: no random scan-line choice inside
    # beamform at the output pixels (point sampling, as the fast model)
    xo_mm = (np.arange(size) + 0.5) / size * width_mm
    zo_mm = DEPTH_START_MM + (np.arange(size) + 0.5) / size * (probe.depth_mm - DEPTH_START_MM)
    xg, zg = np.meshgrid((xo_mm - width_mm / 2) * 1e-3, zo_mm * 1e-3)
    das = pymust.dasmtx(1j * np.array(iq.shape), xg, zg, delays, param)
    bf = (das @ iq.flatten(order="F")).reshape(xg.shape, order="F")
    env = np.abs(bf)
    # time-gain compensation: an exponential law fitted to the mean envelope per depth
    # (pymust.tgc does the same with NumPy's global random state, so not here)
    row = np.log(env.mean(axis=1) + 1e-12)
    slope = np.polyfit(np.arange(size), row, 1)[0]
    env = env * np.exp(-slope * np.arange(size))[:, None]
    img = log_compress(env.astype(np.float32), rng.uniform(50, 60))
    mask = _inside(xo_mm[None, :], zo_mm[:, None], lesion["cx"], lesion["cz"], lesion["aspect"],
                   lesion["radius"])
    return img, mask.astype(np.uint8)


def sim_bus_must(n: int = 8, size: int = 128, seed: int = 0, malignant_fraction: float = 53 / 163,
                 scatterers: int = 20000, progress: bool = True):
    """The ``sim_bus_must`` dataset: :func:`.ultrasound.sim_bus`'s phantoms imaged by MUST.

    Args:
        n: number of images (each takes minutes at the default scatterer count).
        size: output height and width (beamformed directly at these pixels).
        seed: one seed; image ``i`` depends on ``(seed, i)`` only.
        malignant_fraction: share of malignant-like lesions.
        scatterers: scatterers per image. 20,000 is ~13 per mm^2, below the ~10 per
            resolution cell of fully developed speckle (several 100,000 here, hours per
            image): the speckle is coarser than a real scanner's.
    """
    _require_pymust()
    return breast_dataset("sim_bus_must", n, size, seed, malignant_fraction, progress,
                          lambda rng, s, m: simulate_breast_image_must(rng, s, m, scatterers))
