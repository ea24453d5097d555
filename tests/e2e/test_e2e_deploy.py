"""End to end: one fine-tuning run over two local multiworker processes equals one process."""

import numpy as np
import pytest

from test_deploy import _free_ports


@pytest.mark.slow
def test_one_finetune_run_over_two_local_workers_equals_one_process(tmp_path):
    """--distribute multiworker (tf.distribute.MultiWorkerMirroredStrategy, the package's own loop:
    Keras 3's fit fails there): two local CPU workers train the same global batches as one
    process, the chief writes the model, the other worker writes nothing."""
    import json
    import os
    import subprocess
    import sys

    import keras

    from keras_unet_ft.config import load_config
    from keras_unet_ft.model import build_from_config, model_config

    # fp32 and TensorFlow's own kernels pinned: precision auto is bf16 on CPUs with
    # AVX512-BF16, and oneDNN picks other blockings for a batch of 1 and of 2; either alone
    # moves the weights of the two loops apart by more than the tolerance below
    plain = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"}
    sets = ["--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "model.dropout=0",
            "--set", "finetune.learning_rate=1e-3", "--set", "data.target_n=12",
            "--set", "finetune.augment_total=16", "--precision", "fp32"]
    cfg = load_config("smoke", {"model.dropout": "0"})
    keras.utils.set_random_seed(3)
    pre = tmp_path / "pre.keras"
    build_from_config(model_config(cfg, "unet")).save(pre)
    args = ["finetune", "--profile", "smoke", "--target", "sim_bus", "--plan", "expanding",
            "--pretrained", str(pre)] + sets
    base = [sys.executable, "-m", "keras_unet_ft.cli"]
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = []
    for i in (1, 0):
        env = {**plain, "TF_CONFIG": json.dumps({"cluster": cluster,
                                                      "task": {"type": "worker", "index": i}})}
        out_i = tmp_path / ("multi" if i == 0 else "multi_w1")
        procs.append(subprocess.Popen(base + args + ["--out", str(out_i), "--distribute",
                                                     "multiworker"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    assert "worker done (ok)" in logs[0]
    assert not (tmp_path / "multi_w1").exists()           # the non-chief wrote nothing
    one = subprocess.run(base + args + ["--out", str(tmp_path / "one")], env=plain, capture_output=True,
                         text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    summary = json.loads((tmp_path / "multi" / "summary.json").read_text())
    assert summary["replicas"] == 2 and summary["trainer"] == "multiworker"
    a = keras.saving.load_model(tmp_path / "multi" / "model.keras", compile=False).get_weights()
    b = keras.saving.load_model(tmp_path / "one" / "model.keras", compile=False).get_weights()
    assert max(float(np.max(np.abs(x - y))) for x, y in zip(a, b)) < 1e-5
    start = keras.saving.load_model(pre, compile=False).get_weights()
    assert any(float(np.max(np.abs(x - y))) > 1e-3 for x, y in zip(a, start))   # it trained
