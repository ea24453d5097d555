"""Cheng & Lam's follow-up: V-Unet, X-Unet plans, simulated lung ultrasound."""

import numpy as np
import pytest

import keras

from keras_unet_ft.blocks import BlockMap
from keras_unet_ft.data import load_dataset
from keras_unet_ft.trainable import apply_plan
from keras_unet_ft.vunet import build_vunet


def test_vunet_builds_trains_a_step_and_maps_blocks():
    keras.utils.set_random_seed(0)
    m = build_vunet((32, 32, 1), encoder_weights=None)
    bm = BlockMap(m)
    assert [b.part for b in bm.blocks].count("expanding") == 4
    assert bm.blocks[4].weighted_layers == ("block5_conv1", "block5_conv2", "block5_conv3")
    rep = apply_plan(m, "expanding:blocks")  # Cheng's first stage: decoder only
    assert rep.frozen_params == 14_714_688  # all of VGG16 without its top
    x = np.random.default_rng(0).random((2, 32, 32, 1), dtype=np.float32)
    before = m.get_layer("block1_conv1").get_weights()[0].copy()
    m.fit(x, (x > 0.5).astype("float32"), epochs=1, verbose=0)
    np.testing.assert_array_equal(before, m.get_layer("block1_conv1").get_weights()[0])
    assert m.predict(x, verbose=0).shape == (2, 32, 32, 1)


def test_vunet_loads_local_encoder_weights(tmp_path):
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "vgg16_notop.weights.h5"
    vgg.save_weights(path)
    m = build_vunet((32, 32, 1), encoder_weights=str(path))
    np.testing.assert_array_equal(m.get_layer("block3_conv2").get_weights()[0],
                                  vgg.get_layer("block3_conv2").get_weights()[0])


def test_vunet_without_weights_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not available offline"):
        build_vunet((32, 32, 1))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_vunet((32, 32, 1), encoder_weights=str(tmp_path / "missing.h5"))
    with pytest.raises(ValueError, match="grayscale"):
        build_vunet((32, 32, 3), encoder_weights=None)


def test_sim_lus_deterministic_ranges_and_rib_shadow():
    a = load_dataset("sim_lus", n=3, size=64, seed=3, cache=False)
    b = load_dataset("sim_lus", n=3, size=64, seed=3, cache=False)
    np.testing.assert_array_equal(a.images, b.images)
    assert 0 <= a.images.min() and a.images.max() <= 1 and set(np.unique(a.masks)) == {0, 1}
    for img, m in zip(a.images[..., 0], a.masks[..., 0].astype(bool)):
        rows, cols = np.nonzero(m)
        below = img[rows.max() + 4:, cols.min():cols.max() + 1]
        assert img[m].mean() > 2 * below.mean()  # bright cortex, dark acoustic shadow
    p = load_dataset("sim_lus", n=2, size=64, seed=3, target="pleura", cache=False)
    assert not np.array_equal(p.masks, a.masks[:2])
