"""``model.kind=file:PATH``: your own .keras network, loaded, checked, rebuilt at a size."""

import keras
import numpy as np
import pytest

from keras_unet_ft.blocks import BlockMap
from keras_unet_ft.exitcodes import UserError
from keras_unet_ft.usermodel import (clear_cache, file_digest, load_user_model,
                                     user_model_weights)

L = keras.layers


def tiny_unet(size=32, channels=1, name="mine"):
    x = keras.Input((size, size, channels), name="image")
    e = L.Conv2D(4, 3, padding="same", activation="relu", name="e1")(x)
    d = L.MaxPooling2D(name="pool")(e)
    b = L.Conv2D(8, 3, padding="same", activation="relu", name="b1")(d)
    u = L.UpSampling2D(name="up")(b)
    c = L.Concatenate(name="cat")([e, u])
    y = L.Conv2D(1, 1, activation="sigmoid", name="out")(c)
    return keras.Model(x, y, name=name)


def save(model, tmp_path, name="net.keras"):
    path = tmp_path / name
    model.save(path)
    clear_cache()
    return path


def test_round_trip_keeps_the_weights_and_the_outputs(tmp_path):
    m = tiny_unet()
    path = save(m, tmp_path)
    got = load_user_model(path)
    x = np.random.default_rng(0).random((2, 32, 32, 1), dtype=np.float32)
    np.testing.assert_allclose(got.predict(x, verbose=0), m.predict(x, verbose=0), atol=1e-5)
    assert [l.name for l in got.layers] == [l.name for l in m.layers]   # flat, not nested
    assert got.get_layer("out").dtype_policy.name == "float32"
    for a, b in zip(user_model_weights(path), m.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert file_digest(path) == file_digest(path) and len(file_digest(path)) == 64
    bm = BlockMap(got)
    assert [b.part for b in bm.blocks] == ["contracting", "bottleneck", "expanding"]
    assert bm.block_of["cat"] == 3 and bm.block_of["pool"] == 1


def test_rebuilt_at_another_size_with_the_same_weights(tmp_path):
    path = save(tiny_unet(32), tmp_path)
    m = load_user_model(path, size=64)
    assert m.input.shape == (None, 64, 64, 1) and m.output.shape == (None, 64, 64, 1)
    for a, b in zip(m.get_weights(), user_model_weights(path, 64)):
        np.testing.assert_array_equal(a, b)


def test_a_three_channel_net_gets_the_grey_image_tiled_inside(tmp_path):
    path = save(tiny_unet(32, channels=3), tmp_path)
    m = load_user_model(path)
    assert m.input.shape == (None, 32, 32, 1)
    assert isinstance(m.get_layer("image"), L.Concatenate)
    assert m.predict(np.zeros((1, 32, 32, 1), np.float32), verbose=0).shape == (1, 32, 32, 1)


def test_layers_follow_the_global_dtype_policy_but_the_output(tmp_path):
    path = save(tiny_unet(), tmp_path)
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        m = load_user_model(path)
    finally:
        keras.config.set_dtype_policy(before)
    assert m.get_layer("e1").dtype_policy.name == "mixed_bfloat16"
    assert m.get_layer("out").dtype_policy.name == "float32"


def dense_net():
    x = keras.Input((32, 32, 1))
    h = L.Flatten()(L.MaxPooling2D()(L.Conv2D(2, 3, padding="same")(x)))
    h = L.Reshape((16, 16, 1))(L.Dense(256)(h))
    y = L.Conv2D(1, 1, activation="sigmoid")(L.UpSampling2D()(h))
    return keras.Model(x, y)


def two_inputs():
    a, b = keras.Input((32, 32, 1)), keras.Input((32, 32, 1))
    h = L.UpSampling2D()(L.MaxPooling2D()(L.Concatenate()([a, b])))
    return keras.Model([a, b], L.Conv2D(1, 1, activation="sigmoid")(h))


def two_outputs():
    x = keras.Input((32, 32, 1))
    h = L.UpSampling2D()(L.MaxPooling2D()(x))
    return keras.Model(x, [L.Conv2D(1, 1, activation="sigmoid")(h),
                           L.Conv2D(1, 1, activation="sigmoid")(h)])


def softmax3():
    x = keras.Input((32, 32, 1))
    h = L.UpSampling2D()(L.MaxPooling2D()(x))
    return keras.Model(x, L.Conv2D(3, 1, activation="softmax")(h))


def flat_net():
    x = keras.Input((32, 32, 1))
    return keras.Model(x, L.Conv2D(1, 3, padding="same", activation="sigmoid")(x))


def smaller_output():
    x = keras.Input((32, 32, 1))
    return keras.Model(x, L.Conv2D(1, 1, activation="sigmoid")(L.MaxPooling2D()(x)))


@pytest.mark.parametrize("make, size, match", [
    (dense_net, 64, r"input size is fixed at 32x32 and it cannot be rebuilt at 64x64"),
    (two_inputs, None, r"has 2 inputs; expected one image input"),
    (two_outputs, None, r"has 2 outputs; expected one sigmoid output"),
    (softmax3, None, r"output \(32, 32, 3\) and activation 'softmax'; expected one channel"),
    (flat_net, None, r"no layer changes the spatial resolution"),
    (smaller_output, None, r"its output at input 32x32 is \(16, 16, 1\)"),
])
def test_networks_that_do_not_fit_are_refused_in_one_sentence(tmp_path, make, size, match):
    path = save(make(), tmp_path)
    with pytest.raises(UserError, match=match) as e:
        load_user_model(path, size=size)
    assert str(e.value).count("\n") == 0 and str(path) in str(e.value)


def test_the_fixed_size_net_loads_at_its_own_size(tmp_path):
    path = save(dense_net(), tmp_path)
    assert load_user_model(path, size=32).output.shape == (None, 32, 32, 1)


@pytest.mark.parametrize("content, match", [
    (None, "does not exist"),
    (b"not a zip", "is not a Keras model"),
    ("dir", "is not a file"),
])
def test_files_that_are_no_keras_model_are_refused(tmp_path, content, match):
    path = tmp_path / "net.keras"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=match):
        load_user_model(path)


def test_a_custom_layer_keras_cannot_load_is_named(tmp_path):
    class Twice(L.Layer):
        def call(self, x):
            return 2 * x

    x = keras.Input((32, 32, 1))
    h = L.UpSampling2D()(L.MaxPooling2D()(Twice(name="twice")(x)))
    path = save(keras.Model(x, L.Conv2D(1, 1, activation="sigmoid")(h)), tmp_path)
    with pytest.raises(UserError, match="uses layer .twice. of class .Twice. .* that Keras cannot load"):
        load_user_model(path)


def test_a_sequential_net_is_accepted(tmp_path):
    m = keras.Sequential([keras.Input((32, 32, 1)), L.Conv2D(2, 3, padding="same"),
                          L.MaxPooling2D(), L.UpSampling2D(),
                          L.Conv2D(1, 1), L.Activation("sigmoid", name="act")])
    path = save(m, tmp_path)
    got = load_user_model(path, 32)
    assert got.get_layer("act").dtype_policy.name == "float32"


def test_unet_ft_plans_prints_the_block_map_of_your_network(tmp_path, capsys):
    from keras_unet_ft.cli import main

    path = save(tiny_unet(), tmp_path)
    assert main(["plans", "--model", f"file:{path}", "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "input 64x64x1" in out and "3 blocks, 2 levels" in out
    assert main(["plans", "--model", f"file:{path}", "--size", "32", "--matrix",
                 "--plans", "all,only_block:1..N"]) == 0
    assert "only_block:3" in capsys.readouterr().out
    assert main(["plans", "--model", f"file:{tmp_path / 'none.keras'}"]) == 2
