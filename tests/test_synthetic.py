import numpy as np
import pytest
from skimage.filters import threshold_otsu

from keras_unet_ft.data import load_dataset
from keras_unet_ft.data.synthetic.ultrasound import Probe, point_sample, simulate_envelope
from keras_unet_ft.metrics import dice

BUILTIN = ["sim_bus", "synth_salient", "synth_cxr"]


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


def test_sim_bus_lesion_is_hypoechoic_and_has_classes():
    ds = load_dataset("sim_bus", n=6, size=64, seed=1, cache=False)
    assert set(ds.meta["class"]) <= {"benign", "malignant"}
    for img, m in zip(ds.images[..., 0], ds.masks[..., 0].astype(bool)):
        assert img[m].mean() < img[~m].mean()


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
