"""Use the result: finetune -> predict round trip, plain-Keras loading, export, errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from skimage import io as skio

from conftest import tiny_config
from keras_unet_ft import deploy, finetune
from keras_unet_ft.cli import main


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three images of other sizes and formats than the model's 32 x 32 grey input."""
    d = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(0)
    skio.imsave(d / "a.png", (rng.random((50, 70)) * 255).astype(np.uint8))
    skio.imsave(d / "b.jpg", (rng.random((40, 40, 3)) * 255).astype(np.uint8))
    skio.imsave(d / "c.tif", (rng.random((33, 64)) * 65535).astype(np.uint16))
    (d / "notes.txt").write_text("not an image")
    return d


@pytest.fixture(scope="module")
def tuned(tiny_study, tmp_path_factory):
    """``unet-ft finetune`` from the tiny study's folder (its pretrained model and config),
    with LoRA: its learned factors are merged into the kernels, so every use below (predict,
    plain-Keras loading, SavedModel / TFLite export) sees an ordinary U-Net."""
    out, _ = tiny_study
    dest = tmp_path_factory.mktemp("tuned") / "model"
    finetune.clear_shared()
    code = main(["finetune", "--target", "sim_bus", "--plan", "lora:4",
                 "--pretrained", str(out), "--out", str(dest), "--val-fraction", "0.25"])
    assert code == 0
    return dest


def test_finetune_writes_model_history_summary(tuned, tiny_study):
    _, cfg = tiny_study
    s = json.loads((tuned / "summary.json").read_text())
    assert s["plan"] == "lora:4" and s["n_val"] == 2 and s["n_train"] == 6
    assert 0 <= s["val_dice_mean"] <= 1 and s["input_size"] == cfg.model.size
    assert s["pretrained"].endswith("pretrained/model.keras")
    assert (tuned / "history.csv").read_text().startswith("epoch,loss")
    saved = json.loads((tuned / "config.json").read_text())["config"]
    assert saved["model"]["size"] == 32  # the study's config, not the quick profile's 64


def test_predict_writes_masks_at_the_inputs_size(tuned, images, tmp_path):
    rows = deploy.predict_images(tuned, [images], tmp_path / "p")
    assert [os.path.basename(r["file"]) for r in rows] == ["a.png", "b.jpg", "c.tif"]
    for name, shape in (("a", (50, 70)), ("b", (40, 40)), ("c", (33, 64))):
        mask = skio.imread(tmp_path / "p" / f"{name}_mask.png")
        prob = skio.imread(tmp_path / "p" / f"{name}_prob.png")
        over = skio.imread(tmp_path / "p" / f"{name}_overlay.png")
        assert mask.shape == prob.shape == shape and over.shape == shape + (3,)
        assert set(np.unique(mask)) <= {0, 255}
        # the mask is the thresholded probability map
        assert np.array_equal(mask > 0, prob > 0.5 * 255) or abs(
            int((mask > 0).sum()) - int((prob > 127).sum())) <= 2
    csv = (tmp_path / "p" / "predictions.csv").read_text().splitlines()
    assert csv[0] == "file,height,width,foreground_percent,max_probability" and len(csv) == 4


def test_saved_model_loads_in_a_fresh_process_with_plain_keras(tuned):
    code = ("import keras, numpy as np; m = keras.models.load_model(%r); "
            "print(m.predict(np.zeros((1, 32, 32, 1), 'float32'), verbose=0).shape)"
            % str(tuned / "model.keras"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "(1, 32, 32, 1)" in r.stdout
    assert "keras_unet_ft" not in r.stderr


def test_keras_trainer_with_custom_loss_saves_a_plain_model(tmp_path):
    """Keras' trainer compiles the (custom) Dice loss into the model; what is saved is
    the bare network, loadable without the package."""
    from keras_unet_ft.model import build_unet

    init = build_unet((32, 32, 1), base_filters=4).get_weights()
    x = np.random.default_rng(3).random((4, 32, 32, 1), dtype=np.float32)
    c = tiny_config(**{"study.trainer": "keras", "finetune.loss": "bce+dice"})
    tr = finetune.FoldSession(c, 0, "fp32").train("expanding", (x, x > 0.5), init)
    finetune.save_model(tr.model, tmp_path / "model.keras")
    code = "import keras; keras.models.load_model(%r)" % str(tmp_path / "model.keras")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_predict_accepts_a_study_run_folder(tiny_study, images, tmp_path):
    out, _ = tiny_study
    run = out / "runs/sim_bus/shallow_to_deep-9/fold_0"
    assert main(["predict", str(run), str(images / "a.png"), "--out", str(tmp_path)]) == 0
    assert skio.imread(tmp_path / "a_mask.png").shape == (50, 70)


def test_export_savedmodel_and_tflite(tuned, tmp_path):
    import tensorflow as tf

    saved = deploy.export_model(tuned, "savedmodel", tmp_path / "sm")
    loaded = tf.saved_model.load(str(saved))
    y = loaded.serve(tf.zeros((1, 32, 32, 1)))
    assert tuple(y.shape) == (1, 32, 32, 1)
    lite = deploy.export_model(tuned / "model.keras", "tflite", tmp_path / "m.tflite")
    assert lite.stat().st_size > 10_000 and lite.read_bytes()[4:8] == b"TFL3"
    with pytest.raises(FileExistsError, match="not empty"):
        deploy.export_model(tuned, "savedmodel", tmp_path / "sm")


def test_tflite_export_of_a_bf16_trained_model(tmp_path):
    """A model trained under ``mixed_bfloat16`` (precision auto on an AMX CPU) exports to
    TFLite, which has no bf16 convolution, and the file computes what the model computes."""
    import keras
    import tensorflow as tf

    from keras_unet_ft.model import build_unet

    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 32, 1)).astype("float32")
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        net = build_unet((32, 32, 1), base_filters=4, depth=2)
        net.compile("adam", "binary_crossentropy")
        net.fit(x, (x > 0.5).astype("float32"), epochs=1, batch_size=2, verbose=0)
        assert net.get_layer("enc1_conv1").dtype_policy.name == "mixed_bfloat16"
        net.save(tmp_path / "model.keras")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    lite = deploy.export_model(tmp_path / "model.keras", "tflite", tmp_path / "m.tflite")
    interpreter = tf.lite.Interpreter(model_path=str(lite))
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], [1, 32, 32, 1])
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x[:1])
    interpreter.invoke()
    y_lite = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    y_keras = deploy.as_float32(deploy.load_model(tmp_path / "model.keras")).predict(x[:1], verbose=0)
    np.testing.assert_allclose(y_lite, y_keras, atol=1e-4)
    assert deploy.export_model(tmp_path / "model.keras", "savedmodel", tmp_path / "sm").is_dir()


@pytest.mark.parametrize("args, message", [
    (["predict", "{missing}", "{images}", "--out", "{tmp}"], "not found"),
    (["predict", "{study}", "{images}", "--out", "{tmp}"], "is a study folder: give one run"),
    (["predict", "{tuned}", "{images}/notes.txt", "--out", "{tmp}"], "cannot read image file"),
    (["predict", "{tuned}", "{empty}", "--out", "{tmp}"], "no image files"),
    (["predict", "{tuned}", "{images}", "--threshold", "1.5", "--out", "{tmp}"],
     "threshold must be in (0, 1)"),
    (["predict", "{tuned}/history.csv", "{images}", "--out", "{tmp}"], "expected a Keras model"),
    (["finetune", "--profile", "smoke", "--set", "model.base_filters=8", "--target", "sim_bus",
      "--set", "model.size=32", "--set", "data.target_n=8", "--plan", "all",
      "--pretrained", "{study}/pretrained/model.keras", "--out", "{tmp}"],
     "does not fit the network of this config"),
    (["finetune", "--target", "sim_bus", "--plan", "llrd:3", "--out", "{tmp}"],
     "0 < GAMMA <= 1"),
    (["finetune", "--target", "sim_bus", "--plan", "all", "--pretrained", "{study}",
      "--val-fraction", "1.5", "--out", "{tmp}"], "val_fraction must be in [0, 1)"),
    # nothing overwritten without a word: a study folder, another model, a TFLite file
    (["finetune", "--target", "sim_bus", "--plan", "all", "--pretrained", "{study}",
      "--out", "{study}"], "is a study's results folder; give finetune its own --out"),
    (["finetune", "--target", "sim_bus", "--plan", "all", "--pretrained", "{study}",
      "--out", "{tuned}"], "model.keras exists (another fine-tuned model)"),
    (["export", "{tuned}", "--format", "tflite", "--out", "{images}/a.png"],
     "a.png exists; give another --out, or --force"),
    (["finetune", "--target", "sim_bus", "--plan", "all", "--pretrained", "{study}",
      "--set", "finetune.learning_rate=inf", "--out", "{tmp}"],
     "finetune.learning_rate: expected a finite number, got 'inf'"),
])
def test_use_commands_fail_clearly(args, message, tuned, tiny_study, images, tmp_path, capsys):
    out, _ = tiny_study
    (tmp_path / "empty").mkdir()
    fill = {"missing": str(tmp_path / "nope"), "images": str(images), "tmp": str(tmp_path / "o"),
            "study": str(out), "tuned": str(tuned), "empty": str(tmp_path / "empty")}
    before = {p: p.read_bytes() for d in (out, tuned, images) for p in sorted(d.rglob("*"))
              if p.is_file()}
    assert main([a.format(**fill) for a in args]) == 2
    assert message in capsys.readouterr().err
    assert before == {p: p.read_bytes() for d in (out, tuned, images)
                      for p in sorted(d.rglob("*")) if p.is_file()}   # nothing changed


def test_finetune_config_records_its_target_as_a_list_that_loads_back(tuned):
    from keras_unet_ft.config import config_from_dict

    data = json.loads((tuned / "config.json").read_text())
    assert data["config"]["data"]["targets"] == ["sim_bus"]
    assert config_from_dict(data["config"]).data.targets == ["sim_bus"]


def test_a_net_with_nan_weights_is_diverged_and_no_model_is_written(tiny_study, tmp_path,
                                                                   monkeypatch, capsys):
    """A net whose weights became NaN can keep a finite loss and predict nothing."""
    out, _ = tiny_study
    real = finetune.FoldSession.train

    def poisoned(self, *a, **k):
        tr = real(self, *a, **k)
        w = tr.model.get_weights()
        w[0] = np.full_like(w[0], np.nan)
        tr.model.set_weights(w)
        return tr

    monkeypatch.setattr(finetune.FoldSession, "train", poisoned)
    code = main(["finetune", "--target", "sim_bus", "--plan", "all", "--pretrained", str(out),
                 "--out", str(tmp_path / "nan"), "--val-fraction", "0.25"])
    assert code == 3
    assert "weights became non-finite" in capsys.readouterr().err
    assert not (tmp_path / "nan" / "model.keras").exists()


def test_same_name_in_two_folders_is_an_error(tmp_path):
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        skio.imsave(tmp_path / d / "scan.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="same outputs"):
        deploy.list_images([tmp_path / "x", tmp_path / "y"])


@pytest.mark.parametrize("fraction, n_val", [(0.0, 0), (0.25, 2), (0.5, 4)])
def test_split_ids_is_seeded_and_stratified(fraction, n_val):
    ids = [f"i{k}" for k in range(8)]
    strata = ["benign", "malignant"] * 4
    tr, va = deploy.split_ids(ids, fraction, 0, strata)
    assert len(va) == n_val and sorted(tr + va) == sorted(ids)
    assert (tr, va) == deploy.split_ids(ids, fraction, 0, strata)
    if n_val:
        assert {strata[ids.index(i)] for i in va} == {"benign", "malignant"}


def test_tensorboard_scalars_from_the_selective_trainer(tmp_path):
    import tensorflow as tf

    from keras_unet_ft.model import build_unet

    finetune.clear_shared()
    init = build_unet((32, 32, 1), base_filters=4).get_weights()
    x = np.random.default_rng(4).random((8, 32, 32, 1), dtype=np.float32)
    c = tiny_config(**{"finetune.epochs": "3"})
    tr = finetune.FoldSession(c, 0, "fp32").train("gradual:top", (x, x > 0.5), init,
                                                  log_dir=tmp_path / "tb")
    steps = {}
    for f in (tmp_path / "tb").glob("events.out.tfevents.*"):
        for ev in tf.compat.v1.train.summary_iterator(str(f)):
            for v in ev.summary.value:
                steps.setdefault(v.tag, []).append(ev.step)
    assert steps["epoch_loss"] == [1, 2, 3] and steps["epoch_seconds"] == [1, 2, 3]
    assert len(tr.history) == 3


def test_tensorboard_from_keras_fit(tmp_path):
    from keras_unet_ft.model import build_unet

    init = build_unet((32, 32, 1), base_filters=4).get_weights()
    x = np.random.default_rng(5).random((4, 32, 32, 1), dtype=np.float32)
    c = tiny_config(**{"study.trainer": "keras", "finetune.epochs": "2"})
    finetune.FoldSession(c, 0, "fp32").train("expanding", (x, x > 0.5), init,
                                             log_dir=tmp_path / "tb")
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))


def test_a_diverged_finetune_is_said_and_fails(tiny_study, tmp_path, monkeypatch, capsys):
    """A NaN loss leaves no model and exit code 3; the summary says why."""
    from keras_unet_ft.runtime import Diverged

    def boom(self, *a, **k):
        raise Diverged("loss became NaN/inf at epoch 1")

    monkeypatch.setattr(finetune.FoldSession, "train", boom)
    out, _ = tiny_study
    dest = tmp_path / "m"
    assert main(["finetune", "--target", "sim_bus", "--plan", "all", "--pretrained", str(out),
                 "--out", str(dest)]) == 3
    assert "diverged" in capsys.readouterr().err
    assert json.loads((dest / "summary.json").read_text())["status"] == "diverged"
    assert not (dest / "model.keras").exists()


def _free_ports(n):
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _lonely_worker(tmp_path, timeout):
    """Worker 0 of a two-worker TF_CONFIG whose worker 1 never starts."""
    import json
    import os
    import subprocess
    import sys

    ports = _free_ports(2)
    env = {**os.environ, "UNET_FT_PEER_TIMEOUT": str(timeout),
           "TF_CONFIG": json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                                    "task": {"type": "worker", "index": 0}})}
    pre = tmp_path / "pre.keras"
    pre.write_bytes(b"")   # never read: the cluster does not come up
    cmd = [sys.executable, "-m", "keras_unet_ft.cli", "finetune", "--profile", "smoke",
           "--target", "sim_bus", "--plan", "all", "--pretrained", str(pre), "--out",
           str(tmp_path / "o"), "--distribute", "multiworker"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_a_missing_peer_ends_a_multiworker_run_after_its_timeout(tmp_path):
    import time

    t0 = time.time()
    p = _lonely_worker(tmp_path, 3)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1, err
    assert "waited 3 s for the others of TF_CONFIG" in err and "Traceback" not in err
    assert time.time() - t0 < 60
    assert not (tmp_path / "o" / "model.keras").exists()


def test_sigterm_ends_a_multiworker_run_waiting_for_peers(tmp_path):
    import signal
    import time

    p = _lonely_worker(tmp_path, 300)
    time.sleep(8)                       # TensorFlow started and waits for worker 1
    t0 = time.time()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 128 + signal.SIGTERM and "stopped by SIGTERM" in err
    assert time.time() - t0 < 10


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny U-Net as model.keras, with its SavedModel (sm/) and TFLite (m.tflite) exports."""
    from keras_unet_ft.model import build_unet

    d = tmp_path_factory.mktemp("export")
    build_unet((32, 32, 1), base_filters=4, depth=2).save(d / "model.keras")
    deploy.export_model(d / "model.keras", "savedmodel", d / "sm")
    deploy.export_model(d / "model.keras", "tflite", d / "m.tflite")
    return d


#: an export onto what --out holds (an earlier export, another file or folder), with or without
#: --force -> exit code and a piece of the message; a refused export changes nothing
EXPORT_ONTO = [
    ("savedmodel", "export", ["--force"], 0, "exported savedmodel"),
    ("tflite", "export", ["--force"], 0, "exported tflite"),
    ("savedmodel", "export", [], 2, "is not empty (a SavedModel); give another --out, or --force"),
    ("tflite", "export", [], 2, "exists; give another --out, or --force to replace it"),
    ("savedmodel", "folder", ["--force"], 2, "is no SavedModel (no saved_model.pb)"),
    ("tflite", "file", ["--force"], 2, "exists and is no TFLite file"),
    ("savedmodel", "file", ["--force"], 2, "is a file; --format savedmodel writes a folder"),
]


@pytest.mark.parametrize("fmt, there, force, code, message", EXPORT_ONTO)
def test_export_force_replaces_an_earlier_export_and_nothing_else(fmt, there, force, code,
                                                                  message, exported, tmp_path,
                                                                  capsys):
    import shutil

    out = tmp_path / ("sm" if fmt == "savedmodel" else "m.tflite")
    if there == "export" and fmt == "savedmodel":
        shutil.copytree(exported / "sm", out)
        (out / "earlier.txt").write_text("the earlier export")
    elif there == "export":
        shutil.copy2(exported / "m.tflite", out)
        os.utime(out, (0, 0))
    elif there == "folder":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    else:
        out.write_text("mine")
    before = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    assert main(["export", str(exported / "model.keras"), "--format", fmt, "--out", str(out)]
                + force) == code
    captured = capsys.readouterr()
    assert message in (captured.out if code == 0 else captured.err)
    if code:
        assert before == {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
        return
    assert [p.name for p in tmp_path.iterdir()] == [out.name]   # swapped in, nothing beside
    if fmt == "savedmodel":
        assert (out / "saved_model.pb").exists() and not (out / "earlier.txt").exists()
    else:
        assert out.stat().st_mtime > 0 and out.read_bytes()[4:8] == b"TFL3"


@pytest.mark.parametrize("largest, expected", [(4000, 4000 / 4095), (60000, 60000 / 65535)])
def test_predict_scales_12_bit_images_as_the_loaders_do(tmp_path, caplog, largest, expected):
    """The loaders read 16-bit images that stay below 4096 as 12-bit data; segment once
    read them at 1/16 of that range, so a model saw other inputs than in training."""
    import keras
    from skimage import io as skio

    from keras_unet_ft.deploy import segment

    img = np.zeros((32, 32), np.uint16)
    img[8:24, 8:24] = largest
    path = tmp_path / "a.png"
    skio.imsave(path, img, check_contrast=False)
    x = keras.Input((32, 32, 1))
    # the input, as given (float32 whatever the global dtype policy an earlier test left)
    identity = keras.Model(x, keras.layers.Activation("linear", dtype="float32")(x))
    (p,) = segment(identity, [path])
    assert float(p.probability.max()) == pytest.approx(expected, rel=1e-4)
    assert ("12-bit" in caplog.text) == (largest < 4096)
