"""Your own network: ``file:PATH`` and ``encoder:NAME`` through the whole pipeline, and a bad
``file:`` refused in one sentence before anything is written."""

import json
import pathlib

import pytest

from conftest import TINY


def _tiny_user_unet(path, size=32, inputs=1, out_channels=1, activation="sigmoid",
                    down=True):
    """A small U-Net of the kind users bring: conv + BatchNorm, a strided convolution down,
    a transposed convolution up, a skip concatenation; saved as ``.keras``."""
    import keras
    from keras import layers

    ins = [keras.Input((size, size, 1), name=f"image{i}") for i in range(inputs)]
    x = ins[0] if inputs == 1 else layers.Concatenate()(ins)
    x = layers.Conv2D(4, 3, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    s1 = layers.ReLU(name="stem_relu")(x)
    if down:
        x = layers.Conv2D(8, 3, strides=2, padding="same", name="down_conv")(s1)
        x = layers.BatchNormalization(name="down_bn")(x)
        x = layers.ReLU(name="down_relu")(x)
        x = layers.Conv2D(8, 3, padding="same", name="mid_conv")(x)
        x = layers.Conv2DTranspose(4, 2, strides=2, padding="same", name="up_conv")(x)
        x = layers.Concatenate(name="skip_concat")([s1, x])
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="out_conv")(x)
    out = layers.Conv2D(out_channels, 1, activation=activation, name="head")(x)
    model = keras.Model(ins, out, name="my_unet")
    # kernels no initialiser draws (as a pretrained net's): scaled and shifted a little
    model.set_weights([w * 1.1 + 0.01 if w.ndim == 4 else w for w in model.get_weights()])
    model.save(path)
    return path


def _no_files(out: pathlib.Path) -> bool:
    return not out.exists() or not any(out.iterdir())


BAD_FILES = [
    ("not a model", "not_a_model", "is not a Keras model"),
    ("two inputs", "two_inputs", "input"),
    ("softmax, 3 channels", "softmax3", "channel"),
    ("no resolution change", "flat", "resolution"),
]


@pytest.mark.parametrize("label,kind,words", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_file_network_is_one_sentence_and_exit_2(tmp_path, capsys, label, kind, words):
    from keras_unet_ft.cli import main

    path = tmp_path / "net.keras"
    if kind == "not_a_model":
        path.write_text("this is not a zip archive")
    elif kind == "two_inputs":
        _tiny_user_unet(path, inputs=2)
    elif kind == "softmax3":
        _tiny_user_unet(path, out_channels=3, activation="softmax")
    else:
        _tiny_user_unet(path, down=False)
    out = tmp_path / "out"
    code = main(["study", "--profile", "smoke", "--model", f"file:{path}", "--out", str(out),
                 "--target", "sim_bus"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert any(words.lower() in line.lower() and "net.keras" in line for line in err), err
    assert _no_files(out)


def test_missing_file_network_refused_before_the_backend(tmp_path, capsys):
    from keras_unet_ft.cli import main

    code = main(["study", "--profile", "smoke", "--model", f"file:{tmp_path}/nope.keras",
                 "--out", str(tmp_path / "out")])
    assert code == 2
    assert "nope.keras is not a file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_pretrain_refuses_a_file_network(tmp_path, capsys):
    from keras_unet_ft.cli import main

    path = _tiny_user_unet(tmp_path / "net.keras")
    code = main(["pretrain", "--profile", "smoke", "--model", f"file:{path}",
                 "--out", str(tmp_path / "out")])
    assert code == 2
    assert "nothing to pretrain" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _study_args(out, *extra, plans="contracting,expanding"):
    sets = {**TINY, "data.targets": "sim_bus", "study.plans": plans, "study.baselines": "false"}
    args = ["study", "--profile", "smoke", "--out", str(out)]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    return args + list(extra)


def _check_report(out: pathlib.Path, description: str, layer: str):
    report = (out / "REPORT.md").read_text()
    assert "## The network" in report
    assert description in report
    assert layer in report                       # its blocks name its own layers
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert figures, "no figures"
    manifest = json.loads((out / "runs.json").read_text())
    assert (manifest["models"][manifest["model"]]["description"] == description
            or description in manifest["models"][manifest["model"]]["description"])
    return report


@pytest.mark.e2e   # a study of its own: under -m e2e
@pytest.mark.slow
def test_study_on_a_file_network_end_to_end(tmp_path):
    """``--model file:NET.keras``: no pretraining, its sha256 in every run's fingerprint,
    REPORT.md and the figures name its blocks."""
    from keras_unet_ft.cli import main
    from keras_unet_ft.usermodel import file_digest

    path = _tiny_user_unet(tmp_path / "net.keras")
    out = tmp_path / "out"
    assert main(_study_args(out, "--model", f"file:{path}",
                            plans="contracting,expanding,all,shallow_to_deep:2,"
                                  "deep_to_shallow:2")) == 0
    assert not (out / "pretrained" / "history.csv").exists()   # the file is the pretrained net
    report = _check_report(out, "net.keras", "down_conv")
    figures = {p.stem for p in (out / "figures").glob("*.png")}
    assert {"fig4_dice_vs_blocks", "fig5_activation_maximization", "param_share"} <= figures
    assert file_digest(path)[:8] in report
    summary = next((out / "runs").rglob("summary.json"))
    assert (json.loads(summary.read_text())["fingerprint"]["model.identity"]["sha256"]
            == file_digest(path))


@pytest.mark.e2e   # finetune, predict, export, advise: under -m e2e
@pytest.mark.slow
def test_finetune_predict_export_and_advise_on_a_file_network(tmp_path):
    """The rest of the pipeline on your own network (BatchNorm included): ``finetune`` keeps
    the file as its source and the frozen BatchNorm statistics bit for bit, ``predict`` and
    ``export`` (SavedModel, TFLite) take the result, ``advise`` ranks plans on it."""
    import keras
    import numpy as np
    import tensorflow as tf
    from skimage import io as skio

    from keras_unet_ft.cli import main
    from keras_unet_ft.deploy import export_model

    path = _tiny_user_unet(tmp_path / "net.keras")
    before = keras.saving.load_model(path, compile=False)
    sets = []
    for k, v in {**TINY, "data.targets": "sim_bus"}.items():
        sets += ["--set", f"{k}={v}"]
    tuned = tmp_path / "tuned"
    assert main(["finetune", "--profile", "smoke", "--model", f"file:{path}", *sets,
                 "--target", "sim_bus", "--plan", "expanding:blocks", "--out", str(tuned)]) == 0
    summary = json.loads((tuned / "summary.json").read_text())
    assert summary["pretrained"] == str(path)
    after = keras.saving.load_model(tuned / "model.keras", compile=False)
    for name in ("stem_conv", "stem_bn", "down_bn"):   # contracting blocks: frozen
        for a, b in zip(before.get_layer(name).get_weights(), after.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(before.get_layer("out_conv").get_weights()[0],
                              after.get_layer("out_conv").get_weights()[0])
    scans = tmp_path / "scans"
    scans.mkdir()
    skio.imsave(scans / "a.png", (np.random.default_rng(0).random((40, 50)) * 255)
                .astype(np.uint8))
    assert main(["predict", str(tuned), str(scans), "--out", str(tmp_path / "pred")]) == 0
    assert skio.imread(tmp_path / "pred" / "a_mask.png").shape == (40, 50)
    saved = export_model(tuned, "savedmodel", tmp_path / "sm")
    loaded = tf.saved_model.load(str(saved))   # kept: its variables live as long as it does
    y = loaded.serve(tf.zeros((1, 32, 32, 1)))
    assert tuple(y.shape) == (1, 32, 32, 1)
    lite = export_model(tuned, "tflite", tmp_path / "m.tflite")
    assert lite.read_bytes()[4:8] == b"TFL3"
    advice = tmp_path / "advice"
    assert main(["advise", "--profile", "smoke", "--model", f"file:{path}", *sets,
                 "--target", "sim_bus", "--plans", "contracting:blocks,expanding:blocks,all",
                 "--out", str(advice)]) == 0
    a = json.loads((advice / "advice.json").read_text())
    assert set(a["rungs"][0]["scores"]) == {"contracting:blocks", "expanding:blocks", "all"}
    assert a["network"].startswith("net.keras (your network")
    assert "Network: net.keras (your network" in (advice / "ADVICE.md").read_text()


def test_scratch_on_a_file_network_starts_from_random_weights_not_the_files(tmp_path):
    """``scratch`` (and a ``reinit`` plan's fresh layers) on your own network: the layers'
    seeded initial weights, never the file's (which are the pretrained net)."""
    import numpy as np

    from conftest import tiny_config
    from keras_unet_ft import finetune
    from keras_unet_ft.usermodel import user_model_weights

    path = _tiny_user_unet(tmp_path / "net.keras")
    cfg = tiny_config(**{"model.kind": f"file:{path}"})
    finetune.clear_shared()
    a = finetune.FoldSession(cfg, 0, "fp32").scratch_weights()
    finetune.clear_shared()
    b = finetune.FoldSession(cfg, 0, "fp32").scratch_weights()
    saved = user_model_weights(path, 32)
    kernels = [i for i, w in enumerate(saved) if w.ndim == 4]
    assert all(not np.array_equal(a[i], saved[i]) for i in kernels)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))   # seeded: the same twice
    import keras

    from keras_unet_ft import usermodel
    from keras_unet_ft.model import build_from_config

    usermodel.clear_cache()          # the file read for the first time here, or not: the same
    keras.utils.set_random_seed(5)
    cold = build_from_config(cfg.model, random=True).get_weights()
    keras.utils.set_random_seed(5)
    warm = build_from_config(cfg.model, random=True).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(cold, warm))
