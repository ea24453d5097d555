"""Keras backends other than TensorFlow (``KERAS_BACKEND=jax`` / ``torch``): Keras' own
trainer on array batches (no ``tf.data``), the trainer choice, peak GPU memory.

The CI machine has TensorFlow only: the non-TensorFlow code paths are exercised here under
TensorFlow by making :func:`runtime.backend` answer ``jax``; the last test runs a real
study on JAX in a subprocess where JAX is installed (skipped elsewhere)."""

import importlib.util
import json

import numpy as np
import pytest

from conftest import tiny_config
from keras_unet_ft import finetune, runtime, trainers


@pytest.fixture
def as_jax(monkeypatch):
    """The package's view of the backend is ``jax`` (Keras itself still runs TensorFlow)."""
    monkeypatch.setattr(runtime, "backend", lambda: "jax")
    monkeypatch.setattr(finetune, "backend", lambda: "jax")
    monkeypatch.setattr(trainers, "backend", lambda: "jax")
    monkeypatch.setattr(runtime, "has_gpu", lambda: False)   # JAX itself is not installed


@pytest.mark.parametrize("n, batch, shuffle", [(10, 4, True), (10, 4, False), (8, 8, True),
                                               (3, 5, False)])
def test_array_batches_cover_every_image_once_per_epoch(n, batch, shuffle):
    x = np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1)
    ds = runtime.make_dataset(x, (x > 4).astype(np.uint8), batch, shuffle=shuffle, seed=3,
                              numpy=True)
    assert len(ds) == -(-n // batch)
    epochs = []
    for _ in range(3):
        xs = [ds[i] for i in range(len(ds))]
        assert all(b[0].dtype == np.float32 and b[1].dtype == np.float32 for b in xs)
        assert all(np.array_equal(b[1], (b[0] > 4).astype(np.float32)) for b in xs)  # pairs kept
        order = np.concatenate([b[0].ravel() for b in xs])
        assert sorted(order.tolist()) == list(range(n))
        epochs.append(order.tolist())
        ds.on_epoch_end()
    if shuffle and n > 3:
        assert epochs[0] != epochs[1]          # a new order every epoch ...
        again = runtime.make_dataset(x, x, batch, shuffle=True, seed=3, numpy=True)
        assert (np.concatenate([again[i][0].ravel() for i in range(len(again))]).tolist()
                == epochs[0])                    # ... from the seed
    if not shuffle:
        assert epochs[0] == list(range(n)) == epochs[2]
    with pytest.raises(IndexError):
        ds[len(ds)]


@pytest.mark.parametrize("images, masks, batch, message", [
    (4, 3, 2, "4 images but 3 masks"),
    (4, 4, 0, "batch_size must be >= 1, got 0"),
])
def test_array_batches_check_their_arguments(images, masks, batch, message):
    with pytest.raises(ValueError, match=message):
        runtime.make_dataset(np.zeros((images, 4, 4, 1)), np.zeros((masks, 4, 4, 1)), batch,
                             numpy=True)


def test_array_batches_train_like_tf_data():
    """Keras' fit on the array batches gives the weights ``tf.data`` gives (same order)."""
    import keras

    from keras_unet_ft.model import build_unet

    rng = np.random.default_rng(0)
    x = rng.random((12, 32, 32, 1), dtype=np.float32)
    y = (x > 0.6).astype(np.uint8)
    got = []
    for numpy in (False, True):
        keras.utils.set_random_seed(0)
        m = build_unet((32, 32, 1), base_filters=4, depth=2, dropout=0.0)
        m.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
        m.fit(runtime.make_dataset(x, y, 4, numpy=numpy), epochs=2, verbose=0, shuffle=False)
        got.append(m.get_weights())
    for a, b in zip(*got):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("trainer, strategy, expected", [
    ("auto", None, "keras"),
    ("keras", None, "keras"),
    ("selective", None, "the selective trainer needs the TensorFlow backend"),
    ("masked", None, "the masked trainer needs the TensorFlow backend"),
    ("auto", object(), "--distribute needs the TensorFlow backend"),
])
def test_other_backends_train_with_keras_own_trainer(as_jax, trainer, strategy, expected):
    if expected == "keras":
        assert finetune.resolve_trainer(trainer, "fp32", strategy) == "keras"
    else:
        with pytest.raises(ValueError, match=expected + r" \(KERAS_BACKEND is 'jax'\)"):
            finetune.resolve_trainer(trainer, "fp32", strategy)


def test_a_run_on_the_array_path_freezes_exactly_and_reports_its_backend(as_jax, monkeypatch):
    """The whole fine-tuning run as on JAX: Keras' trainer, array batches, frozen layers
    bit-identical, trained ones moved, the backend and (no GPU here) no memory figure."""
    import keras

    from keras_unet_ft.model import build_unet

    seen = []
    real = runtime._array_batches
    monkeypatch.setattr(runtime, "_array_batches", lambda *a: seen.append(a) or real(*a))
    keras.utils.set_random_seed(0)
    init = build_unet((32, 32, 1), base_filters=4).get_weights()
    rng = np.random.default_rng(1)
    x = rng.random((12, 32, 32, 1), dtype=np.float32)
    y = (x > 0.6).astype(np.uint8)
    cfg = tiny_config(**{"finetune.epochs": "2", "finetune.batch_size": "4"})
    session = finetune.FoldSession(cfg, 0, "fp32")
    assert session.trainer_name == "keras"
    res = finetune.run_one(cfg, "sim_bus", 0, "deep_to_shallow:2", "unet", (x, y),
                           (x[:4], y[:4], ["a", "b", "c", "d"]), init, session)
    assert seen, "the run did not use the array batches"
    s = res.summary
    assert ((s["trainer"], s["backend"], s["peak_gpu_memory_gib"], s["epochs"])
            == ("keras", "jax", None, 2))
    assert [r["epoch"] for r in res.history] == [1, 2] and all(r["seconds"] > 0
                                                                 for r in res.history)
    assert s["images_per_second"] == pytest.approx(12 / res.history[1]["seconds"])
    trained = set(s["trainable_layers"])
    assert 0 < len(trained) < len([l for l in res.model.layers if l.weights]), trained
    before = {l.name: w for l, w in zip([l for l in res.model.layers if l.weights],
                                        _by_layer(init, res.model))}
    for layer in res.model.layers:
        if not layer.weights:
            continue
        same = all(np.array_equal(a, b) for a, b in zip(layer.get_weights(), before[layer.name]))
        assert same == (layer.name not in trained), layer.name


def _by_layer(flat, model):
    out, i = [], 0
    for layer in model.layers:
        if layer.weights:
            k = len(layer.weights)
            out.append(flat[i:i + k])
            i += k
    return out


def test_peak_memory_is_none_without_a_gpu():
    assert runtime.reset_peak_memory() is False
    assert runtime.peak_memory_bytes() is None


@pytest.mark.parametrize("resettable, per_run", [(True, 1.5), (False, None)])
def test_a_runs_gpu_peak_is_only_called_its_own_where_the_counter_was_reset(
        monkeypatch, resettable, per_run):
    """JAX keeps one peak per process: a run after a bigger one would show the bigger one's
    memory, so the run's own peak is left empty and the process peak is named as such."""
    monkeypatch.setattr(finetune, "reset_peak_memory", lambda: resettable)
    monkeypatch.setattr(finetune, "peak_memory_bytes", lambda: int(1.5 * 2**30))
    x = np.random.default_rng(0).random((8, 32, 32, 1), dtype=np.float32)
    y = (x > 0.6).astype(np.uint8)
    cfg = tiny_config(**{"finetune.epochs": "1"})
    res = finetune.run_one(cfg, "sim_bus", 0, "none", "unet", (x, y), (x[:2], y[:2], ["a", "b"]),
                           None, finetune.FoldSession(cfg, 0, "fp32"))
    assert res.summary["peak_gpu_memory_gib"] == per_run
    assert res.summary["process_peak_gpu_memory_gib"] == 1.5


def test_advise_says_it_needs_tensorflow(monkeypatch, tmp_path):
    from keras_unet_ft import advise

    monkeypatch.setattr(advise, "backend", lambda: "jax")
    with pytest.raises(ValueError, match="advise needs the TensorFlow backend .*KERAS_BACKEND "
                                         "is 'jax'"):
        advise.advise(tiny_config(), "sim_bus", tmp_path / "advice")


def test_export_without_tensorflow_says_what_is_needed(monkeypatch, tmp_path):
    from keras_unet_ft import deploy

    monkeypatch.setattr(deploy, "has_tensorflow", lambda: False)
    for fmt in deploy.EXPORT_FORMATS:
        with pytest.raises(ValueError, match=f"exporting to {fmt} needs TensorFlow"):
            deploy.export_model(tmp_path / "model.keras", fmt)


@pytest.mark.parametrize("env, keras_json, expected", [
    ({"KERAS_BACKEND": "jax"}, {"backend": "torch"}, "jax"),     # the variable wins
    ({}, {"backend": "torch"}, "torch"),                          # then keras.json
    ({}, None, "tensorflow"),                                     # then Keras' default
    ({}, "not json", "tensorflow"),
])
def test_configured_backend_is_read_as_keras_reads_it(monkeypatch, tmp_path, env, keras_json,
                                                       expected):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    if keras_json is not None:
        (tmp_path / "keras.json").write_text(keras_json if isinstance(keras_json, str)
                                             else json.dumps(keras_json))
    assert runtime.configured_backend() == expected


def test_a_missing_backend_is_one_line_with_the_fix(monkeypatch, capsys):
    monkeypatch.setenv("KERAS_BACKEND", "nosuchbackend")
    with pytest.raises(SystemExit) as e:
        runtime.require_installed_backend("unet-ft")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert (err.startswith("unet-ft: error: Keras' backend is 'nosuchbackend'")
            and "nosuchbackend is not installed: pip install nosuchbackend" in err)
    installed = next(b for b in ("tensorflow", "jax", "torch")
                     if importlib.util.find_spec(b) is not None)
    assert f"or use the installed one: KERAS_BACKEND={installed}" in err   # named
    monkeypatch.setenv("KERAS_BACKEND", installed)
    runtime.require_installed_backend("unet-ft")      # installed: nothing happens
