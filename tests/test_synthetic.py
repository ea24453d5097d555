import numpy as np
import pytest
from skimage.filters import threshold_otsu

from keras_unet_ft.data import load_dataset
from keras_unet_ft.data.synthetic.ultrasound import Probe, point_sample, simulate_envelope
from keras_unet_ft.metrics import dice

BUILTIN = ["sim_bus", "sim_bus_simple", "synth_salient", "synth_cxr"]


@pytest.mark.parametrize("name", BUILTIN)
def test_deterministic_ranges_and_shapes(name):
    a = load_dataset(name, n=3, size=48, seed=7, cache=False)
    b = load_dataset(name, n=3, size=48, seed=7, cache=False)
    c = load_dataset(name, n=3, size=48, seed=8, cache=False)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape == a.masks.shape == (3, 48, 48, 1)
    assert a.images.dtype == np.float32 and 0 <= a.images.min() and a.images.max() <= 1
    assert set(np.unique(a.masks)) <= {0, 1}
    assert all(m.any() for m in a.masks)
    # image i does not depend on how many images are made
    d = load_dataset(name, n=1, size=48, seed=7, cache=False)
    np.testing.assert_array_equal(d.images[0], a.images[0])


def test_speckle_is_rayleigh_like():
    """Homogeneous region, before log compression: mean / std of the envelope ~ 1.91."""
    probe = Probe()
    nz, nx = probe.grid(128)
    rng = np.random.default_rng(0)
    env = simulate_envelope(np.ones((nz, nx), np.float32), rng, probe, attenuation=False)
    e = point_sample(env, 128)[16:-16, 16:-16]
    snr = e.mean() / e.std()
    assert snr == pytest.approx(1.91, abs=0.06)


@pytest.mark.parametrize("name", ["sim_bus", "sim_bus_simple"])
def test_sim_bus_lesions_are_mostly_hypoechoic_and_have_classes(name):
    """Darker than the tissue right around them in most images (as in real breast
    ultrasound, where some benign lesions are nearly iso-echoic)."""
    from scipy import ndimage

    ds = load_dataset(name, n=12, size=64, seed=1, cache=False)
    assert set(ds.meta["class"]) <= {"benign", "malignant"}
    ratios = []
    for img, m in zip(ds.images[..., 0], ds.masks[..., 0].astype(bool)):
        ring = ndimage.binary_dilation(m, iterations=4) & ~m
        ratios.append(img[m].mean() / img[ring].mean())
    assert np.median(ratios) < 0.85, ratios


def test_salient_is_not_solved_by_one_threshold():
    """Otsu's threshold (either polarity) gives a mean Dice far below a trained net's."""
    ds = load_dataset("synth_salient", n=40, size=64, seed=0, cache=False)
    scores = []
    for img, m in zip(ds.images[..., 0], ds.masks[..., 0]):
        t = threshold_otsu(img)
        scores.append(max(dice(m, img > t), dice(m, img <= t)))
    assert np.mean(scores) < 0.6, np.mean(scores)


def test_sim_bus_must_is_seeded_and_explains_a_missing_pymust(monkeypatch):
    pytest.importorskip("pymust")
    a = load_dataset("sim_bus_must", n=2, size=32, seed=1, scatterers=300, cache=False)
    b = load_dataset("sim_bus_must", n=2, size=32, seed=1, scatterers=300, cache=False)
    np.testing.assert_array_equal(a.images, b.images)  # own generator, not NumPy's global state
    assert a.images.shape == (2, 32, 32, 1) and 0 <= a.images.min() and a.images.max() <= 1
    assert set(np.unique(a.masks)) <= {0, 1} and a.masks.sum() > 0
    monkeypatch.setitem(__import__("sys").modules, "pymust", None)
    with pytest.raises(ImportError, match=r"keras-unet-ft\[sim\]"):
        load_dataset("sim_bus_must", n=1, size=32, cache=False)


@pytest.mark.slow
def test_sim_bus_statistics_lie_inside_real_breast_ultrasound():
    """At 256 px over 120 images, every statistic's median lies inside the interquartile
    range of 163 real breast-ultrasound images, and the shadow statistic spreads like
    the real one; the first generator fails on the dark distractors (the lesion was the
    only dark region)."""
    from keras_unet_ft.data.synthetic.realism import (REAL_BREAST_US, compare,
                                                      image_statistics, summarize)

    def measure(name, n=120):
        ds = load_dataset(name, n=n, size=256, seed=1, cache=False, progress=False)
        return summarize(image_statistics(x, m) for x, m in zip(ds.images, ds.masks))

    got = measure("sim_bus")
    assert all(compare(got).values()), {k: got[k] for k, ok in compare(got).items() if not ok}
    lo, _, hi = got["shadow"]
    real_lo, _, real_hi = REAL_BREAST_US["shadow"]
    assert (hi - lo) > 0.6 * (real_hi - real_lo), got["shadow"]
    assert got["otsu_dice"][1] < 0.4, got["otsu_dice"]   # a threshold does not find lesions
    old = measure("sim_bus_simple", n=40)   # its failure is a gross one
    assert not compare(old)["distractor"]


def test_a_changed_generator_is_not_served_from_the_cache(tmp_path, monkeypatch):
    from keras_unet_ft.data.synthetic import ultrasound

    a = load_dataset("sim_bus", n=2, size=32, seed=3, cache_directory=tmp_path)
    assert len(list(tmp_path.glob("sim_bus-*.npz"))) == 1
    monkeypatch.setattr(ultrasound, "GENERATOR_VERSION", ultrasound.GENERATOR_VERSION + 1)
    b = load_dataset("sim_bus", n=2, size=32, seed=3, cache_directory=tmp_path)
    assert len(list(tmp_path.glob("sim_bus-*.npz"))) == 2   # a new key, not the old file
    np.testing.assert_array_equal(a.images, b.images)


def test_cli_data_stats_prints_the_statistics_beside_real_ones(capsys):
    from keras_unet_ft.cli import main

    assert main(["data", "stats", "sim_bus_simple", "--count", "6", "--size", "64",
                 "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert "distractor" in out and "0.4 [0.24-0.54]" in out and "grain_lat" in out
    for line in out.splitlines():
        if line.startswith(("contrast", "distractor", "dark")):
            assert line.rstrip().endswith(("yes", "NO")), line


def _correlation_length(field: np.ndarray, axis: int) -> int:
    """Lag (cells) where the autocorrelation of ``field`` along ``axis`` falls below 0.5."""
    x = field - field.mean()
    spec = np.abs(np.fft.rfft(x, axis=axis)) ** 2
    ac = np.fft.irfft(spec, n=x.shape[axis], axis=axis).mean(axis=1 - axis)
    return int(np.argmax(ac / ac[0] < 0.5))


def test_sim_bus_tissue_is_layered_wider_than_tall(monkeypatch):
    """The fibroglandular texture of ``sim_bus`` is flat, like real breast tissue: its
    lateral correlation length (mm) is several times its axial one (measured without the
    lesion mimics: a refraction shadow darkens every depth of its column alike)."""
    from keras_unet_ft.data.synthetic import ultrasound
    from keras_unet_ft.data.synthetic.ultrasound import AXIAL_REPEAT, BREAST_PROBE, breast_phantom

    monkeypatch.setattr(ultrasound, "_lesion_mimics", lambda rng, echo, *args: echo)

    nz, nx = BREAST_PROBE.grid(64)
    nz //= AXIAL_REPEAT
    ratios = []
    for seed in range(6):
        echo, _ = breast_phantom(np.random.default_rng(seed), nz, nx, BREAST_PROBE, False)
        band = np.log(echo[int(0.45 * nz):int(0.6 * nz)] + 1e-3)   # inside the gland
        dz_mm, dx_mm = BREAST_PROBE.depth_mm / nz, BREAST_PROBE.width_mm / nx
        ratios.append(_correlation_length(band, 1) * dx_mm / (_correlation_length(band, 0) * dz_mm))
    assert np.median(ratios) > 3, ratios


@pytest.mark.parametrize("mimics", [3.0])
def test_sim_bus_lesion_mimics_are_dark_flat_ovals_and_soft_shadow_columns(mimics, monkeypatch):
    """Fat lobules (between the depths given) are dark ovals, most wider than tall and
    1-9 mm wide (two may touch), about :data:`MIMICS` per image; refraction shadows are
    columns: below their top they darken every depth alike; tissue away from both is
    untouched."""
    from scipy import ndimage

    from keras_unet_ft.data.synthetic import ultrasound
    from keras_unet_ft.data.synthetic.ultrasound import _lesion_mimics

    monkeypatch.setattr(ultrasound, "MIMICS", mimics)
    Z, X = np.mgrid[0:40:0.1, 0:40:0.1]
    counts, sizes = [], []
    for seed in range(20):
        out = _lesion_mimics(np.random.default_rng(seed), np.ones_like(Z), X, Z, (6, 14), 26, 40)
        upper = out[Z[:, 0] < 20]                      # lobules only (shadows start >= 23 mm)
        labels, n = ndimage.label(upper < 0.6)
        counts.append(n)
        sizes += [((sl[0].stop - sl[0].start) * 0.1, (sl[1].stop - sl[1].start) * 0.1)
                  for sl in ndimage.find_objects(labels)]
        assert upper[:20].min() > 0.98, seed           # above the lobules: untouched
        deep = out[Z[:, 0] > 33]                         # shadows only: the same at every depth
        np.testing.assert_allclose(deep, deep[:1].repeat(len(deep), 0), rtol=1e-3)
    assert 0.5 * mimics < np.mean(counts) <= 1.3 * mimics, counts
    flat = [w > h and 1 <= w <= 9.5 for h, w in sizes]
    assert np.mean(flat) >= 0.8, sizes


def test_sim_bus_lesions_range_from_anechoic_to_nearly_isoechoic():
    from scipy import ndimage

    ds = load_dataset("sim_bus", n=40, size=64, seed=2, cache=False, progress=False)
    ratios = []
    for img, m in zip(ds.images[..., 0], ds.masks[..., 0].astype(bool)):
        ring = ndimage.binary_dilation(m, iterations=3) & ~m
        ratios.append(img[m].mean() / img[ring].mean())
    assert min(ratios) < 0.3 and max(ratios) > 0.75, sorted(ratios)


@pytest.mark.parametrize("shift, level", [("speckle", "input"), ("gain", "input"),
                                          ("blur", "input"), ("contrast", "input"),
                                          ("rim", "output")])
def test_a_shift_changes_one_thing_of_the_same_breasts(shift, level):
    """The same seed gives the same lesions: input-level shifts keep the masks and change
    the image; the output-level one keeps the image and grows the mask around the lesion."""
    from keras_unet_ft.data.synthetic.ultrasound import SHIFTS, sim_bus

    ref = sim_bus(n=3, size=64, seed=4, progress=False)
    got = sim_bus(n=3, size=64, seed=4, progress=False, shift=shift)
    assert SHIFTS[shift][0] == level
    if level == "input":
        np.testing.assert_array_equal(got.masks, ref.masks)
        assert np.abs(got.images - ref.images).mean() > 0.01
    else:
        np.testing.assert_array_equal(got.images, ref.images)
        assert (got.masks >= ref.masks).all() and got.masks.sum() > 1.3 * ref.masks.sum()


@pytest.mark.parametrize("shift, stat", [
    ("gain", lambda d: d.images[:, 48:].mean() / d.images[:, :16].mean()),   # deep vs top
    ("blur", lambda d: np.abs(np.diff(d.images, axis=2)).mean()),           # edge energy
    ("contrast", lambda d: d.images.std()),
])
def test_each_input_shift_moves_its_own_statistic_down(shift, stat):
    from keras_unet_ft.data.synthetic.ultrasound import sim_bus

    ref = sim_bus(n=4, size=64, seed=2, progress=False)
    assert stat(sim_bus(n=4, size=64, seed=2, progress=False, shift=shift)) < 0.9 * stat(ref)


def test_an_unknown_shift_names_the_kinds():
    from keras_unet_ft.config import SHIFT_KINDS
    from keras_unet_ft.data.registry import load_dataset
    from keras_unet_ft.data.synthetic.ultrasound import SHIFTS

    assert tuple(SHIFTS) == SHIFT_KINDS          # the shift profile has a target per kind
    ref = load_dataset("sim_bus?shift=none&n=2", size=32, cache=False, progress=False)
    np.testing.assert_array_equal(ref.images, load_dataset("sim_bus?n=2", size=32, cache=False,
                                                           progress=False).images)
    with pytest.raises(ValueError, match="shift='noise'; expected KIND or KIND:STRENGTH with "
                                         "KIND one of none, speckle"):
        load_dataset("sim_bus?shift=noise&n=2", size=32, cache=False, progress=False)


@pytest.mark.parametrize("shift, stat", [
    ("speckle", lambda d: np.abs(np.diff(d.images, axis=2)).mean()),        # finer grain
    ("gain", lambda d: d.images[:, 48:].mean() / d.images[:, :16].mean()),
    ("blur", lambda d: np.abs(np.diff(d.images, axis=2)).mean()),
    ("contrast", lambda d: d.images.std()),
    ("rim", lambda d: -float(d.masks.sum())),                              # a wider rim
])
def test_the_dial_turns_each_shift_further_and_strength_1_is_the_plain_kind(shift, stat):
    """``KIND:1`` is ``KIND`` to the bit; ``KIND:2`` moves the kind's own statistic further
    from the reference than ``KIND:1``, ``KIND:0.5`` less far."""
    from keras_unet_ft.data.synthetic.ultrasound import sim_bus

    def make(s):
        return sim_bus(n=3, size=64, seed=5, progress=False, shift=s)

    plain, one = make(shift), make(f"{shift}:1")
    np.testing.assert_array_equal(plain.images, one.images)
    np.testing.assert_array_equal(plain.masks, one.masks)
    ref, half, two = make("none"), make(f"{shift}:0.5"), make(f"{shift}:2")
    assert stat(ref) > stat(half) > stat(one) > stat(two), (
        stat(ref), stat(half), stat(one), stat(two))


@pytest.mark.parametrize("value, message", [
    ("blur:0", "strength after ':' must be a number in \\(0, 10\\], got '0'"),
    ("blur:-1", "got '-1'"),
    ("blur:11", "got '11'"),
    ("blur:nan", "got 'nan'"),
    ("blur:x", "got 'x'"),
    ("none:2", "the reference set has no strength"),
    ("speckel:2", "did you mean 'speckle'"),
])
def test_a_bad_strength_of_the_dial_is_one_sentence(value, message):
    from keras_unet_ft.data.registry import load_dataset

    with pytest.raises(ValueError, match=message):
        load_dataset(f"sim_bus?shift={value}&n=2", size=32, cache=False, progress=False)


def test_the_shift_table_of_the_report_names_the_strength():
    from keras_unet_ft.config import describe_shift

    assert describe_shift("speckle") == ("input", "coarser speckle: a pulse and a beam 3 times "
                                                  "as wide")
    assert describe_shift("blur:2")[1] == "a blurrier display: a Gaussian of 5 px (at 256 px) over the image"
    assert describe_shift("rim:2") == ("output", "the mask marks the lesion with its "
                                                 "surrounding 3 mm (rim, halo)")
