"""Simulated breast ultrasound B-mode images with lesion masks (``sim_bus``).

The journal version of the paper adds simulated ultrasound images (docs/paper.md B);
this module makes them with the linear (convolution) imaging model, anatomy first:

1. **Tissue**: an echogenicity map of the breast as real B-mode images show it, on
   a 40 x 40 mm field of view (:func:`breast_phantom`): a bright skin line;
   subcutaneous fat, hypoechoic, with thin septa and oblique Cooper's ligaments; a
   layered, streaky fibroglandular layer - thin bright strands and flat dark fat
   islands, much wider than tall, tilted and undulating with the layers; retromammary
   fat; the pectoralis muscle with striations; the dark chest wall, sometimes a rib
   with its acoustic shadow; what a reader must tell from a mass - oval hypoechoic fat
   lobules (Poisson, 5 on average) and refraction shadows under Cooper's ligaments.
   One lesion in the upper half of the image (like real ones), from anechoic to
   nearly iso-echoic: benign (oval, circumscribed, often posterior enhancement and
   edge shadows, a few calcified ones shadowing) or malignant (irregular or
   spiculated, heterogeneous, blurred margin, sometimes an echogenic halo, mostly
   posterior shadowing); posterior features taper at their sides over 0.5-1.5 mm.
2. **Scatterers**: random positions (uniform) and Gaussian amplitudes scaled by
   the echogenicity, 10 per RF grid cell, about 200 per resolution cell (fully
   developed speckle), on a fine RF grid (4 samples per half wavelength axially).
3. **Imaging**: convolution with a pulse-echo point-spread function - a
   Gaussian-modulated cosine at ``f0`` (5 MHz) along depth and a Gaussian beam
   laterally, narrowest at a transmit focus drawn per image - then
   frequency-dependent depth attenuation (0.75 dB/cm/MHz) with an imperfect
   time-gain compensation that may leave the image darker with depth, electronic
   noise, the envelope by Hilbert transform along depth.
4. **Display**: the envelope is point-sampled to the target size, log-compressed
   to a 40-66 dB dynamic range (the scanner's setting, drawn per image), lightly
   smoothed (the scanner's speckle reduction) and scaled to [0, 1]; sometimes the
   scanner's screen stays around it (black borders, text, a depth scale, caliper
   crosses; never over the lesion).

Held against 163 real breast-ultrasound images (:mod:`.realism`): the medians of
lesion contrast, dark distractors in the background, edge strength, lesion area and
depth, posterior shadowing, speckle grain (about 2 x 4 px at 256 px) and dark pixels
all lie inside the real interquartile ranges (a test checks it). A net fine-tuned on
``sim_bus`` alone segments real lesions: ``unet-ft data realism REAL --pretrained MODEL``
measures how far, on any real folder (:mod:`keras_unet_ft.transfer`; the figures are in
docs/results.md). ``sim_bus_simple``
keeps the first generator (the lesion is the only dark region; a brightness rule
finds it). The envelope of a homogeneous region is Rayleigh distributed
(mean / std = 1.91); a test checks it. ``python benchmarks/bench.py data`` times it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional

import numpy as np
from scipy import ndimage, signal

from . import generate_images
from ...config import SHIFTS, parse_shift, shift_amount  # noqa: F401 (SHIFTS: the kinds, re-exported)
from ...exitcodes import UserError

#: bumped when an image of the same seed changes (the dataset cache is keyed by it)
GENERATOR_VERSION = 4
C_SOUND = 1540.0  # m/s
AXIAL_REPEAT = 4  # the tissue map is built 4x coarser in depth than the RF grid


@dataclasses.dataclass(frozen=True)
class Probe:
    """Acquisition parameters of the linear imaging model."""

    f0: float = 5e6                 # centre frequency, Hz
    cycles_sigma: float = 0.6       # Gaussian pulse envelope sigma, in periods
    beam_sigma_mm: float = 0.28     # lateral PSF sigma at the focus
    depth_mm: float = 40.0
    width_mm: float = 40.0
    atten_db_cm_mhz: float = 0.75
    scatterers_per_cell: float = 10.0  # per RF grid cell (~200 per resolution cell)
    noise_db: float = -75.0           # electronic noise relative to mean tissue echo
    focus_mm: Optional[float] = None  # transmit focus depth: the beam widens away from it
    beam_sigma_far_mm: Optional[float] = None  # lateral sigma at the top and bottom edge

    def grid(self, size: int):
        """RF grid (axial samples, lateral lines) for an output of ``size`` pixels."""
        nx = max(256, int(size))  # lateral lines resolve the beam (sigma ~2 lines)
        half_wave_mm = C_SOUND / self.f0 / 2 * 1e3
        nz = int(math.ceil(self.depth_mm / (half_wave_mm / 4)))
        nz = -(-nz // 64) * 64  # a length the FFT of the Hilbert transform likes
        return nz, nx


def _pulse(probe: Probe, dz_mm: float) -> np.ndarray:
    """Axial pulse-echo response: Gaussian-modulated cosine, in depth samples."""
    period_mm = C_SOUND / probe.f0 / 2 * 1e3     # round trip: one period = lambda / 2 in depth
    sigma_mm = probe.cycles_sigma * period_mm
    half = int(math.ceil(4 * sigma_mm / dz_mm))
    z = np.arange(-half, half + 1) * dz_mm
    return np.exp(-0.5 * (z / sigma_mm) ** 2) * np.cos(2 * np.pi * z / period_mm)


POISSON_TABLE_BITS = 16


@functools.lru_cache(maxsize=8)
def _sqrt_poisson_table(mean: float) -> np.ndarray:
    """``sqrt(k)`` for k ~ Poisson(``mean``) by inverse CDF on 2**16 equiprobable bins:
    one 16-bit draw and a table look-up per cell (each probability within 2**-16)."""
    from scipy import stats

    u = (np.arange(2 ** POISSON_TABLE_BITS) + 0.5) / 2 ** POISSON_TABLE_BITS
    return np.sqrt(stats.poisson.ppf(u, mean)).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _beam_matrix(nx: int, sigma_lines: float, lines: tuple) -> np.ndarray:
    """Lateral beam profile as a matrix: ``rf[:, j] = field @ B[:, j]`` for each wanted
    line (Gaussian, edges repeated - the same numbers as ``gaussian_filter1d``)."""
    full = ndimage.gaussian_filter1d(np.eye(nx, dtype=np.float32), sigma_lines, axis=1,
                                     mode="nearest")
    return np.ascontiguousarray(full[:, list(lines)])


def _analytic_envelope(rf: np.ndarray) -> np.ndarray:
    """``|rf + i H(rf)|`` along axis 0, the Hilbert transform via a real FFT."""
    from scipy import fft

    n = rf.shape[0]
    spec = fft.rfft(rf, axis=0)
    spec *= -1j
    spec[0] = 0
    if n % 2 == 0:
        spec[-1] = 0
    return np.hypot(rf, fft.irfft(spec, n=n, axis=0).astype(np.float32))


def sample_index(n: int, size: int) -> np.ndarray:
    """Indices of ``size`` evenly spread samples of ``n`` (the point-sampling grid)."""
    return np.linspace(0, n - 1, size).round().astype(int)


def simulate_envelope(echo: np.ndarray, rng: np.random.Generator, probe: Probe = Probe(),
                      attenuation: bool = True, tgc_error_db: float = 0.0,
                      lines=None, gain_falloff_db: float = 0.0) -> np.ndarray:
    """Envelope of the RF signal for an echogenicity map on the RF grid.

    Args:
        echo: ``(nz, nx)`` scatterer amplitude scale (echogenicity) per RF cell.
        rng: random generator for scatterer positions/amplitudes and noise.
        probe: acquisition parameters.
        attenuation: apply depth attenuation and time-gain compensation.
        tgc_error_db: peak error of the TGC curve (its residual varies smoothly
            with depth).
        lines: the lateral RF lines to form (indices into ``nx``); None = all. The
            scatterers are drawn on the whole grid either way; an image of 64
            columns needs only 64 beamformed lines.
        gain_falloff_db: attenuation the time-gain compensation leaves uncorrected at
            the deepest row (linear in depth): images that darken with depth.

    Returns:
        The envelope ``(nz, len(lines))``, before log compression.
    """
    nz, nx = echo.shape
    dz = probe.depth_mm / nz
    dx = probe.width_mm / nx
    lines = tuple(range(nx)) if lines is None else tuple(int(i) for i in lines)
    # Scatterers at uniformly random positions (on the RF grid) with N(0, 1)
    # amplitudes: a cell holding k of them sums to N(0, k), so drawing the count
    # k ~ Poisson(density) and one normal per cell is exactly that sum, at the cost
    # of one draw per cell whatever the density (the count by a table: 10x faster
    # than rng.poisson).
    table = _sqrt_poisson_table(float(probe.scatterers_per_cell))
    field = np.take(table, rng.integers(0, len(table), (nz, nx), dtype=np.uint16))
    field *= rng.standard_normal((nz, nx), dtype=np.float32)
    field *= echo
    # pulse-echo PSF = lateral beam x axial pulse: separable and linear, so the beam
    # (a matrix product that forms only the wanted lines) goes first
    if probe.focus_mm is None or probe.beam_sigma_far_mm is None:
        rf = field @ _beam_matrix(nx, probe.beam_sigma_mm / dx, lines)
    else:  # focused beam: narrow at the focus, wider above and below (blended bands)
        z_mm = (np.arange(nz, dtype=np.float32) + 0.5) * dz
        knots = np.array([0.0, probe.focus_mm, probe.depth_mm], np.float32)
        sigmas = (probe.beam_sigma_far_mm, probe.beam_sigma_mm, probe.beam_sigma_far_mm)
        rf = np.zeros((nz, len(lines)), np.float32)
        for b, sig in enumerate(sigmas):
            w = np.interp(z_mm, knots, np.eye(3, dtype=np.float32)[b]).astype(np.float32)
            rows = w > 0
            rf[rows] += w[rows, None] * (field[rows] @ _beam_matrix(nx, sig / dx, lines))
    pulse = _pulse(probe, dz)
    rf = signal.fftconvolve(rf, pulse.astype(np.float32)[:, None], mode="same", axes=0)
    ref = math.sqrt(probe.scatterers_per_cell) * np.sqrt(np.sum(pulse ** 2))  # rms echo
    noise = ref * 10 ** (probe.noise_db / 20) * rng.standard_normal(rf.shape, dtype=np.float32)
    if attenuation:
        # the echo loses 2 * alpha * f0 * z dB on its round trip; electronic noise is added
        # at the receiver, then the time-gain compensation amplifies both
        z_cm = (np.arange(nz) + 0.5) * dz / 10
        loss_db = 2 * probe.atten_db_cm_mhz * probe.f0 / 1e6 * z_cm
        residual = tgc_error_db * np.sin(np.pi * z_cm / z_cm[-1] * rng.uniform(0.5, 1.5)
                                          + rng.uniform(0, np.pi))
        rf *= (10 ** (-loss_db / 20))[:, None].astype(np.float32)
        rf += noise
        falloff = gain_falloff_db * z_cm / z_cm[-1]
        rf *= (10 ** ((loss_db + residual - falloff) / 20))[:, None].astype(np.float32)
    else:
        rf += noise
    return _analytic_envelope(rf)


def point_sample(a: np.ndarray, size: int, cols: bool = True) -> np.ndarray:
    """Point-sample a 2-D array to ``size x size`` (keeps speckle statistics);
    ``cols=False``: rows only (the columns were already formed at the sampled lines)."""
    rows = sample_index(a.shape[0], size)
    if not cols:
        return a[rows]
    return a[np.ix_(rows, sample_index(a.shape[1], size))]


def log_compress(env: np.ndarray, dynamic_range_db: float) -> np.ndarray:
    """Log compression to ``dynamic_range_db``, scaled to [0, 1]."""
    ref = np.percentile(env, 99.5) + 1e-12
    db = 20 * np.log10(env / ref + 1e-12)
    return np.clip((db + dynamic_range_db) / dynamic_range_db, 0.0, 1.0).astype(np.float32)


def smooth_noise(rng, shape, sigma, lo=0.0, hi=1.0):
    """A smooth random field scaled to [lo, hi]."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    f = (f - f.min()) / (f.max() - f.min() + 1e-12)
    return lo + (hi - lo) * f


@functools.lru_cache(maxsize=32)
def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Linear interpolation from ``n_in`` to ``n_out`` samples as a matrix."""
    pos = np.linspace(0, n_in - 1, n_out)
    lo = np.floor(pos).astype(int).clip(0, n_in - 2)
    w = pos - lo
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), lo] = 1 - w
    m[np.arange(n_out), lo + 1] = w
    return m


# ---------------------------------------------------------------------------
# breast anatomy
def _lesion_shape(rng, malignant: bool, fov_mm: float, scale: float = 1.0):
    """Lesion centre, polar radius function and label."""
    if malignant:
        r0 = scale * rng.uniform(3.5, 7.5)
        aspect = rng.uniform(0.8, 1.3)          # often taller than wide
        n_harm = 6
        amps = rng.uniform(0.04, 0.15, n_harm) / np.arange(1, n_harm + 1) ** 0.5
        spikes = rng.integers(0, 9)
    else:
        r0 = scale * rng.uniform(3.0, 8.0)
        aspect = rng.uniform(0.45, 0.8)         # wider than tall, parallel to the skin
        n_harm = 3
        amps = rng.uniform(0.0, 0.05, n_harm) / np.arange(1, n_harm + 1)
        spikes = 0
    phases = rng.uniform(0, 2 * np.pi, n_harm)
    spike_angles = rng.uniform(0, 2 * np.pi, spikes)
    spike_len = rng.uniform(0.15, 0.5, spikes)
    spike_width = rng.uniform(0.06, 0.15, spikes)

    def radius(theta):
        r = np.ones_like(theta)
        for k in range(n_harm):
            r += amps[k] * np.cos((k + 2) * theta + phases[k])
        for a, l, w in zip(spike_angles, spike_len, spike_width):
            d = np.angle(np.exp(1j * (theta - a)))
            r += l * np.exp(-0.5 * (d / w) ** 2)
        return r0 * r

    radius.rmax = r0 * (1 + amps.sum() + (spike_len.max() if spikes else 0.0))
    return r0, aspect, radius


def _anatomy_grid(rng, nz: int, nx: int, probe: Probe, dtype=None):
    """Depth and lateral positions (mm) of the map's cells, and two drawing helpers:
    ``field(sigma, lo, hi)`` (a smooth random field, made coarse and interpolated) and
    ``wave(amp, period)`` (a random-phase lateral undulation, for layer boundaries)."""
    Z = ((np.arange(nz) + 0.5) / nz * probe.depth_mm)[:, None]
    X = ((np.arange(nx) + 0.5) / nx * probe.width_mm)[None, :]
    if dtype is not None:
        Z, X = Z.astype(dtype), X.astype(dtype)
    coarse = (max(8, nz // 8), max(8, nx // 4))
    up_z, up_x = _interp_matrix(nz, coarse[0]), _interp_matrix(nx, coarse[1]).T

    def field(sigma, lo, hi):
        return up_z @ smooth_noise(rng, coarse, sigma, lo, hi).astype(np.float32) @ up_x

    def wave(amp, per):
        return amp * np.sin(2 * np.pi * X / per + rng.uniform(0, 2 * np.pi))

    return Z, X, field, wave


def _below(inside: np.ndarray, sigma: float = 2.5):
    """The region under a lesion, softened at its sides by ``sigma`` lines (where
    posterior shadowing or enhancement acts); None when the lesion is not on the grid."""
    cols = inside.any(axis=0)
    if not cols.any():
        return None
    nz = inside.shape[0]
    bottom = np.where(cols, nz - 1 - np.argmax(inside[::-1], axis=0), 0)
    below = (np.arange(nz)[:, None] > bottom[None, :]) & cols[None, :]
    return ndimage.gaussian_filter1d(below.astype(np.float32), sigma, axis=1)


def _inside(x_mm, z_mm, cx, cz, aspect, radius):
    """Lesion indicator on the grid ``z_mm (nz, 1) x x_mm (1, nx)``."""
    dx = x_mm - cx
    dz = (z_mm - cz) / aspect
    dist = np.hypot(dx, dz)
    out = np.zeros(dist.shape, bool)
    near = dist <= radius.rmax                      # evaluate the boundary only near it
    out[near] = dist[near] <= radius(np.arctan2(*np.broadcast_arrays(dz, dx))[near])
    return out


def breast_phantom_simple(rng: np.random.Generator, nz: int, nx: int, probe: Probe,
                          malignant: bool):
    """Echogenicity map ``(nz, nx)`` and the lesion description.

    The map is smooth at the scale of an RF sample, so callers build it on a
    grid ~4x coarser in depth than the RF grid and repeat it (see
    :func:`simulate_breast_image`).
    """
    Z, X, field, wave = _anatomy_grid(rng, nz, nx, probe)
    skin = rng.uniform(1.2, 2.2) + wave(0.15, rng.uniform(20, 60))
    fat_bottom = skin + rng.uniform(4, 12) + wave(rng.uniform(0.5, 2.0), rng.uniform(15, 40))
    muscle_top = rng.uniform(28, 37) + wave(rng.uniform(0.5, 1.5), rng.uniform(20, 60))

    echo = np.empty((nz, nx), np.float32)
    fat = field(3, 0.12, 0.35)
    gland = field(2.5, 0.6, 1.4) * rng.uniform(0.8, 1.2)
    echo[:] = np.where(Z < fat_bottom, fat, gland)
    # Cooper's ligaments: thin bright curves in the fat
    for _ in range(rng.integers(2, 6)):
        zc = rng.uniform(skin.mean() + 1, fat_bottom.mean())
        curve = zc + wave(rng.uniform(1, 3), rng.uniform(10, 30))
        echo += 0.9 * np.exp(-0.5 * ((Z - curve) / 0.25) ** 2) * (Z < fat_bottom)
    # skin: bright thin line
    echo = np.where(Z < skin, 1.6 + 0.4 * field(2, 0, 1), echo)
    echo += 1.5 * np.exp(-0.5 * ((Z - skin) / 0.2) ** 2)
    # pectoral muscle: striated, medium echogenicity
    stri = 0.45 + 0.35 * (np.sin(2 * np.pi * (Z + 0.2 * X) / rng.uniform(1.2, 2.0)) > 0.6)
    echo = np.where(Z > muscle_top, stri * field(2, 0.7, 1.1), echo)

    # the lesion
    r0, aspect, radius = _lesion_shape(rng, malignant, probe.width_mm)
    cx = rng.uniform(0.3, 0.7) * probe.width_mm
    zmin = fat_bottom.max() + r0 * aspect * 0.6
    zmax = max(zmin + 0.5, muscle_top.min() - r0 * aspect * 1.1)
    cz = rng.uniform(zmin, zmax) if zmax > zmin else zmin
    inside = _inside(X, Z, cx, cz, aspect, radius)
    level = rng.uniform(0.03, 0.10) if malignant else rng.uniform(0.03, 0.16)
    internal = field(1.5, 0.7, 1.3)
    # soft boundary (one RF line ~ 0.15 mm)
    soft = ndimage.gaussian_filter(inside.astype(np.float32), (0.7, 1.0))
    echo = echo * (1 - soft) + level * internal * soft
    if malignant and rng.random() < 0.5:  # echogenic halo
        ring = ndimage.gaussian_filter(inside.astype(np.float32), (3, 4)) - soft
        echo += 0.8 * np.clip(ring, 0, None)
    # posterior shadowing (malignant) or enhancement (benign, cyst-like)
    below = _below(inside)
    if below is not None:
        if malignant:
            factor = rng.uniform(0.15, 0.5)
        else:
            factor = rng.uniform(1.0, 1.6) if rng.random() < 0.6 else 1.0
        echo = echo * (1 + (factor - 1) * below)
    lesion = dict(cx=cx, cz=cz, aspect=aspect, radius=radius)
    return np.clip(echo, 0, None).astype(np.float32), lesion


def simulate_breast_image_simple(rng: np.random.Generator, size: int, malignant: bool,
                                 probe: Probe = Probe()):
    """``sim_bus_simple``: one image of the first generator (the lesion is the only dark
    region: a U-Net finds it from brightness alone) and its lesion mask (uint8)."""
    nz, nx = probe.grid(size)
    echo, lesion = breast_phantom_simple(rng, -(-nz // AXIAL_REPEAT), nx, probe, malignant)
    echo = np.repeat(echo, AXIAL_REPEAT, axis=0)[:nz]
    env = simulate_envelope(echo, rng, probe, tgc_error_db=rng.uniform(0, 3),
                            lines=sample_index(nx, size))
    img = log_compress(point_sample(env, size, cols=False), rng.uniform(50, 60))
    # the mask on the output grid, evaluated at the same points that were sampled
    z = (np.linspace(0, nz - 1, size).round() + 0.5) / nz * probe.depth_mm
    x = (np.linspace(0, nx - 1, size).round() + 0.5) / nx * probe.width_mm
    mask = _inside(x[None, :], z[:, None], lesion["cx"], lesion["cz"], lesion["aspect"], lesion["radius"])
    return img, mask.astype(np.uint8)


# ---------------------------------------------------------------------------
# the breast as real B-mode images show it (``sim_bus``)
#: speckle grain about 2 x 4 px (axial x lateral) at 256 px over 40 mm, as in real breast
#: B-mode images; the beam is narrowest at the transmit focus (drawn per image)
BREAST_PROBE = Probe(cycles_sigma=0.7, beam_sigma_mm=0.2, focus_mm=16.0,
                     beam_sigma_far_mm=0.38)
SPECKLE_REDUCTION = (0.9, 1.0)  # px at 256: the scanner's smoothing of the log image (sigma)
LESION_SCALE = 1.15             # lesion radii x this: areas like real ones (% of the image)
BLACK_LEVEL = (0.0, 0.08)       # grey of a pixel without echo, drawn per image
MIMICS = 5.0                    # mean number of oval hypoechoic fat lobules per image


def _aniso(rng, shape, sigma_px, warp=None):
    """A zero-mean, unit-variance random field smoothed by ``sigma_px`` (rows, columns):
    wide and flat for ``sigma`` larger along the columns, the grain of breast tissue.
    ``warp`` (per column, in rows) shifts each column: the layers' tilt and undulation."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_px,
                                mode="wrap")
    f -= f.mean()
    f /= f.std() + 1e-12
    if warp is not None:
        rows = (np.arange(shape[0])[:, None] - warp[None, :]) % shape[0]
        f = np.take_along_axis(f, rows.astype(int), axis=0)
    return f


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def _lesion_mimics(rng, echo, X, Z, lobule_depths, ligaments_mm, width_mm):
    """``echo`` with what a reader must tell from a mass: oval hypoechoic fat lobules
    (Poisson, :data:`MIMICS` on average; 1-4.5 mm wide, 0.3-0.7 as tall, their centre
    darkened by 55-90 %, centres between ``lobule_depths`` mm) and 0-2 refraction
    shadows - soft dark columns (0.4-2 mm sigma, 30-70 % darker) from about the depth
    of the Cooper's ligaments (``ligaments_mm`` +- 3 mm) down.

    Examples:
        >>> Z, X = np.mgrid[0:40:0.5, 0:40:0.5]
        >>> out = _lesion_mimics(np.random.default_rng(0), np.ones_like(Z), X, Z, (5, 30), 8, 40)
        >>> bool(out.max() <= 1 and out.min() < 0.5)
        True
    """
    for _ in range(rng.poisson(MIMICS)):
        a_mm = rng.uniform(1.0, 4.5)
        b_mm = a_mm * rng.uniform(0.3, 0.7)
        mx = rng.uniform(0, width_mm)
        mz = rng.uniform(*lobule_depths)
        d = np.hypot((X - mx) / a_mm, (Z - mz) / b_mm)
        lobule = _sigmoid((1 - d) / rng.uniform(0.05, 0.25))
        echo = echo * (1 - rng.uniform(0.55, 0.9) * lobule)
    for _ in range(rng.integers(0, 3)):
        sx, sw = rng.uniform(0, width_mm), rng.uniform(0.4, 2.0)
        top = rng.uniform(ligaments_mm - 3, ligaments_mm + 3)
        column = np.exp(-0.5 * ((X - sx) / sw) ** 2) * _sigmoid((Z - top) / 0.5)
        echo = echo * (1 - rng.uniform(0.3, 0.7) * column)
    return echo


def breast_phantom(rng: np.random.Generator, nz: int, nx: int, probe: Probe, malignant: bool):
    """Echogenicity map ``(nz, nx)`` of a breast as B-mode images show it, and the lesion.

    Layers from the skin down, each a band that undulates laterally: a bright skin line;
    subcutaneous fat (hypoechoic, flat lobules, oblique Cooper's ligaments); the
    fibroglandular layer - layered and streaky: thin bright strands and flat dark fat
    islands, much wider than tall, some tilted; retromammary fat; the pectoralis
    muscle (striated); the chest wall, dark, sometimes a rib with its acoustic shadow;
    lesion mimics - oval hypoechoic fat lobules and soft refraction shadows. The lesion
    lies in the upper half, like real ones: echogenicity from anechoic (cysts) through
    hypoechoic to nearly iso-echoic; benign ones oval and circumscribed, malignant ones
    irregular or spiculated and heterogeneous inside; margins sharp to blurred; posterior
    enhancement, shadowing or none, tapering at its sides; compressed (brighter) tissue
    around it, an echogenic halo sometimes; edge shadows beside some benign ones. Built
    on a grid ~4x coarser in depth than the RF grid.
    """
    depth = probe.depth_mm
    Z, X, field, wave = _anatomy_grid(rng, nz, nx, probe, np.float32)
    dz, dx = depth / nz, probe.width_mm / nx
    px = lambda sz, sx: (sz / dz, sx / dx)        # noqa: E731  (mm -> map cells)
    skin = rng.uniform(0.6, 1.8) + wave(0.15, rng.uniform(20, 60))
    fat_bottom = skin + rng.uniform(2, 12) + wave(rng.uniform(0.5, 2.5), rng.uniform(12, 35))
    muscle_top = rng.uniform(0.5, 0.85) * depth + wave(rng.uniform(0.5, 2.0),
                                                        rng.uniform(20, 60))
    muscle_bottom = muscle_top + rng.uniform(3, 7)
    retro = muscle_top - rng.uniform(0.5, 3.0)
    tilt = rng.uniform(-0.25, 0.25)                 # the layers' slope (rows per column)
    warp = (tilt * (np.arange(nx) - nx / 2) + wave(rng.uniform(0.2, 1.5) / dz,
                                                   rng.uniform(20, 60))[0])

    # fibroglandular tissue: a flat, layered texture - bright strands on a medium ground,
    # dark flat fat islands; how much of each varies from breast to breast
    ground = np.exp(0.35 * _aniso(rng, (nz, nx), px(1.0, 4.0), warp))
    strand_scale = (rng.uniform(0.12, 0.3), rng.uniform(1.5, 5.0))
    strands = _aniso(rng, (nz, nx), px(*strand_scale), warp)
    strands = np.clip(strands - rng.uniform(0.6, 1.4), 0, None) * rng.uniform(1.5, 4.0)
    islands = _sigmoid((_aniso(rng, (nz, nx), px(rng.uniform(0.4, 1.5), rng.uniform(1.5, 5)),
                               warp) - rng.uniform(0.0, 1.2)) / 0.15)
    gland_level = rng.uniform(0.5, 1.0)
    gland = gland_level * ground * (1 + strands) * (1 - rng.uniform(0.6, 0.9) * islands)
    # subcutaneous fat: dark flat lobules between thin septa, oblique ligaments
    fat = rng.uniform(0.1, 0.3) * np.exp(0.3 * _aniso(rng, (nz, nx), px(0.8, 2.5), warp))
    septa = _aniso(rng, (nz, nx), px(0.12, rng.uniform(1.0, 3.0)), warp)
    fat = fat * (1 + 2.0 * np.clip(septa - 1.2, 0, None))
    echo = np.where(Z < fat_bottom, fat, gland).astype(np.float32)
    for _ in range(rng.integers(1, 5)):           # Cooper's ligaments, oblique bright curves
        zc = rng.uniform(skin.mean() + 0.5, fat_bottom.mean() + 2)
        curve = zc + wave(rng.uniform(1, 4), rng.uniform(8, 30))
        echo += 0.6 * np.exp(-0.5 * ((Z - curve) / 0.15) ** 2) * (Z < fat_bottom + 2)
    echo = np.where((Z > retro) & (Z <= muscle_top), fat, echo)
    echo = np.where(Z < skin, 0.8 + 0.4 * field(2, 0, 1), echo)
    echo += 1.2 * np.exp(-0.5 * ((Z - skin) / 0.15) ** 2)
    stri = 0.3 + 0.8 * np.clip(_aniso(rng, (nz, nx), px(0.15, 3.0), warp) - 0.5, 0, None)
    echo = np.where((Z > muscle_top) & (Z <= muscle_bottom), stri * field(2, 0.4, 0.9), echo)
    echo += 0.8 * np.exp(-0.5 * ((Z - muscle_bottom) / 0.2) ** 2)   # fascia
    echo = np.where(Z > muscle_bottom, field(3, 0.02, 0.1) * (1 + np.clip(strands, 0, 2)),
                    echo)
    if rng.random() < 0.3:  # a rib: bright anterior surface, full shadow behind it
        rx, rw = rng.uniform(0.15, 0.85) * probe.width_mm, rng.uniform(4, 9)
        top = muscle_bottom + rng.uniform(1, 4) + 0.08 * (X - rx) ** 2 / rw
        cols = np.abs(X - rx) < rw
        echo = np.where((Z > top) & cols, 0.02 * echo, echo)
        echo += 2.0 * np.exp(-0.5 * ((Z - top) / 0.25) ** 2) * cols

    echo = _lesion_mimics(rng, echo, X, Z, (float(skin.mean()) + 1.5, float(retro.mean())),
                          float(fat_bottom.mean()), probe.width_mm)

    # the lesion, in the upper half like real ones
    r0, aspect, radius = _lesion_shape(rng, malignant, probe.width_mm, LESION_SCALE)
    cx = rng.uniform(0.2, 0.8) * probe.width_mm
    cz = max(rng.uniform(0.14, 0.5) * depth, float(skin.max()) + 0.8 * r0 * aspect + 0.5)
    inside = _inside(X, Z, cx, cz, aspect, radius)
    u = rng.random()
    if malignant:   # hypoechoic, sometimes markedly; heterogeneous inside
        level = rng.uniform(0.015, 0.06) if u < 0.3 else rng.uniform(0.06, 0.3)
        internal = np.exp(rng.uniform(0.2, 0.6) * _aniso(rng, (nz, nx), px(0.4, 0.6)))
        blur_mm = rng.uniform(0.05, 0.8)
    else:           # cysts (anechoic), hypoechoic masses, a few nearly iso-echoic
        level = (rng.uniform(0.006, 0.03) if u < 0.25 else rng.uniform(0.02, 0.25) if u < 0.85
                 else rng.uniform(0.25, 0.6))
        internal = np.exp(rng.uniform(0.0, 0.4) * _aniso(rng, (nz, nx), px(0.5, 0.8)))
        blur_mm = rng.uniform(0.02, 0.4)
    soft = ndimage.gaussian_filter(inside.astype(np.float32), px(blur_mm, blur_mm))
    # the tissue around a mass is compressed (brighter) in a rim of 0.5-2 mm
    rim = ndimage.gaussian_filter(inside.astype(np.float32), px(*(2 * [rng.uniform(0.5, 2)])))
    rim = np.clip(rim - soft, 0, None)
    echo = echo * (1 + rng.uniform(0.0, 0.3) * rim / max(rim.max(), 1e-6))
    echo = echo * (1 - soft) + level * gland_level * internal * soft
    if malignant and rng.random() < 0.4:  # echogenic halo
        echo += 0.6 * rim
    below = _below(inside, rng.uniform(0.5, 1.5) / dx)   # tapering sides, 0.5-1.5 mm
    if below is not None:
        if malignant:
            factor = rng.uniform(0.05, 0.4) if rng.random() < 0.7 else 1.0
        else:
            v = rng.random()  # cysts and fibroadenomas enhance; some (calcified) shadow
            factor = (rng.uniform(1.5, 3.5) if v < 0.6 else rng.uniform(0.2, 0.6) if v < 0.75
                      else 1.0)
        echo = echo * (1 + (factor - 1) * below)
        if not malignant and rng.random() < 0.5:   # edge shadows beside a round mass
            cols = np.nonzero(inside.any(axis=0))[0]
            for c in (cols[0], cols[-1]):
                edge = np.exp(-0.5 * ((np.arange(nx) - c) / max(0.25 / dx, 1)) ** 2)
                echo = echo * (1 - 0.8 * edge[None, :] * (below > 0.01))
    lesion = dict(cx=cx, cz=cz, aspect=aspect, radius=radius)
    return np.clip(echo, 0, None).astype(np.float32), lesion


def scanner_display(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray,
                    p_border: float = 0.4, p_text: float = 0.5, p_calipers: float = 0.3
                    ) -> np.ndarray:
    """What many public breast-US images keep of the scanner's screen, never over the
    lesion: black borders, text-like marks, a depth scale, caliper crosses."""
    img = img.copy()
    n = img.shape[0]
    rows, cols = np.nonzero(mask)
    r0, r1 = (rows.min(), rows.max()) if rows.size else (n, -1)
    c0, c1 = (cols.min(), cols.max()) if cols.size else (n, -1)
    free = np.ones_like(mask, bool)
    if rows.size:
        free[max(0, r0 - 3):r1 + 4, max(0, c0 - 3):c1 + 4] = False
    if rng.random() < p_border:
        left = min(int(rng.uniform(0.0, 0.08) * n), max(0, c0 - 4))
        right = min(int(rng.uniform(0.0, 0.08) * n), max(0, n - 1 - c1 - 4))
        top = min(int(rng.uniform(0.0, 0.05) * n), max(0, r0 - 4))
        bottom = min(int(rng.uniform(0.0, 0.06) * n), max(0, n - 1 - r1 - 4))
        img[:, :left] = 0
        img[:, n - right:] = 0
        img[:top] = 0
        img[n - bottom:] = 0
    g = max(1, n // 128)   # glyph pixel
    if rng.random() < p_text:   # a line of text-like marks, top or bottom
        y = int(rng.uniform(0.01, 0.05) * n) if rng.random() < 0.5 else int(
            rng.uniform(0.9, 0.97) * n)
        x = int(rng.uniform(0.02, 0.4) * n)
        for _ in range(rng.integers(4, 14)):
            glyph = rng.random((5, 3)) < 0.55
            block = np.kron(glyph, np.ones((g, g), bool))
            h, w = block.shape
            if y + h < n and x + w < n and free[y:y + h, x:x + w].all():
                img[y:y + h, x:x + w][block] = rng.uniform(0.75, 1.0)
            x += w + g
    if rng.random() < 0.5:   # depth scale: dots down one side
        x = int(rng.uniform(0.005, 0.03) * n) if rng.random() < 0.5 else n - 1 - int(
            rng.uniform(0.005, 0.03) * n)
        for y in range(int(0.05 * n), n - g, max(2, n // 10)):
            if free[y:y + g, x:x + g].all():
                img[y:y + g, x:x + g] = 0.9
    if rows.size and rng.random() < p_calipers:   # '+' marks beside the lesion's ends
        arm = max(2, n // 64)
        for y, x in ((int(rows[cols.argmin()]), c0 - 2 * arm - 2),
                     (int(rows[cols.argmax()]), c1 + 2 * arm + 2)):
            if arm <= y < n - arm and arm <= x < n - arm:
                cross = np.zeros_like(mask, bool)
                cross[y, x - arm:x + arm + 1] = True
                cross[y - arm:y + arm + 1, x] = True
                img[cross & ~mask.astype(bool)] = 1.0
    return img



def check_shift(shift) -> str:
    """``shift`` (``KIND`` or ``KIND:STRENGTH``, :func:`~keras_unet_ft.config.parse_shift`)
    when valid, else a :class:`UserError` naming the kinds."""
    parse_shift(shift)
    return shift


def simulate_breast_image(rng: np.random.Generator, size: int, malignant: bool,
                          probe: Probe = BREAST_PROBE, shift: str = "none"):
    """One B-mode image ``(size, size)`` in [0, 1] and its lesion mask (uint8); ``shift``
    changes one thing of :data:`SHIFTS` after every random draw of the reference image, so
    the same ``rng`` state gives the same breast, lesion and speckle draws; ``KIND:S`` scales
    the amount of the change by ``S`` (:func:`~keras_unet_ft.config.shift_amount`)."""
    shift, strength = parse_shift(shift)
    amount = shift_amount(shift, strength)
    probe = dataclasses.replace(probe, focus_mm=rng.uniform(0.3, 0.6) * probe.depth_mm)
    if shift == "speckle":
        probe = dataclasses.replace(probe, cycles_sigma=amount * probe.cycles_sigma,
                                    beam_sigma_mm=amount * probe.beam_sigma_mm,
                                    beam_sigma_far_mm=amount * probe.beam_sigma_far_mm)
    nz, nx = probe.grid(size)
    echo, lesion = breast_phantom(rng, -(-nz // AXIAL_REPEAT), nx, probe, malignant)
    echo = np.repeat(echo, AXIAL_REPEAT, axis=0)[:nz]
    tgc, falloff = rng.uniform(0, 3), rng.uniform(0, 30)
    if shift == "gain":
        falloff += amount
    env = simulate_envelope(echo, rng, probe, tgc_error_db=tgc, lines=sample_index(nx, size),
                            gain_falloff_db=falloff)
    dr = rng.uniform(40, 66) + (amount if shift == "contrast" else 0.0)
    img = log_compress(point_sample(env, size, cols=False), dr)
    img = ndimage.gaussian_filter(img, np.array(SPECKLE_REDUCTION) * size / 256)
    if shift == "blur":
        img = ndimage.gaussian_filter(img, amount * size / 256)
    black = rng.uniform(*BLACK_LEVEL)   # the grey map's floor: echo-free areas are not all 0
    img = black + (1 - black) * img
    z = (np.linspace(0, nz - 1, size).round() + 0.5) / nz * probe.depth_mm
    x = (np.linspace(0, nx - 1, size).round() + 0.5) / nx * probe.width_mm
    mask = _inside(x[None, :], z[:, None], lesion["cx"], lesion["cz"], lesion["aspect"],
                   lesion["radius"]).astype(np.uint8)
    img = scanner_display(rng, img, mask)
    if shift == "rim":   # what the mask marks: the lesion and the tissue around it
        r = max(1.0, amount * size / probe.depth_mm)
        yy, xx = np.mgrid[-int(r):int(r) + 1, -int(r):int(r) + 1]
        mask = ndimage.binary_dilation(mask, yy ** 2 + xx ** 2 <= r * r).astype(np.uint8)
    return img, mask


def sim_bus(n: int = 163, size: int = 256, seed: int = 0, malignant_fraction: float = 53 / 163,
            progress: bool = True, shift: str = "none"):
    """The ``sim_bus`` dataset: simulated breast ultrasound with lesion masks.

    Args:
        n: number of images (UDIAT Dataset B has 163).
        size: output height and width.
        seed: one seed for the whole set; image ``i`` depends on ``(seed, i)`` only.
        malignant_fraction: share of malignant-like lesions (Dataset B: 53 / 163).
        shift: one kind of domain shift of :data:`SHIFTS` relative to the reference set
            (``none``), everything else the same for the same seed: ``speckle``, ``gain``,
            ``blur``, ``contrast`` (input-level) or ``rim`` (output-level: what the mask
            marks). ``KIND:S`` sets the strength of the dial: ``S`` times the amount of
            strength 1 (``speckle:2``: pulse and beam 5 times as wide instead of 3;
            ``blur:2``: a Gaussian of 5 px instead of 2.5), ``S`` in (0, 10].
            ``sim_bus?shift=blur`` or ``sim_bus?shift=blur:2`` in a target spec.

    Returns:
        A :class:`~keras_unet_ft.data.dataset.Dataset` with ``meta["class"]``
        ``"benign"`` / ``"malignant"``.

    Examples:
        >>> a = sim_bus(n=2, size=64, seed=3, progress=False)
        >>> b = sim_bus(n=2, size=64, seed=3, progress=False, shift="rim")
        >>> bool((b.masks >= a.masks).all() and b.masks.sum() > a.masks.sum())
        True
    """
    shift = check_shift("none" if shift is None else shift)   # ?shift=none reads as None
    return breast_dataset("sim_bus", n, size, seed, malignant_fraction, progress,
                          functools.partial(simulate_breast_image, shift=shift))


def sim_bus_simple(n: int = 163, size: int = 256, seed: int = 0,
                   malignant_fraction: float = 53 / 163, progress: bool = True):
    """``sim_bus_simple``: the first generator (before the anatomy-driven ``sim_bus``):
    the lesion is the only dark region of the image, so brightness alone finds it. Kept
    for comparison and for results made with it."""
    return breast_dataset("sim_bus_simple", n, size, seed, malignant_fraction, progress,
                          simulate_breast_image_simple)


def breast_dataset(name, n, size, seed, malignant_fraction, progress, simulate):
    """Images ``simulate(rng, size, malignant) -> (image, mask)``, benign or malignant-like
    with probability ``malignant_fraction``, class in ``meta["class"]``."""
    if not 0 <= malignant_fraction <= 1:
        raise UserError(f"malignant_fraction must be in [0, 1], got {malignant_fraction!r}")

    def one(rng, i, size):
        malignant = bool(rng.random() < malignant_fraction)
        img, mask = simulate(rng, size, malignant)
        return img, mask, {"class": "malignant" if malignant else "benign"}

    return generate_images(name, n, size, seed, one, progress)
