"""One fine-tuning run: both trainers freeze exactly the frozen layers; stages; strategies."""

import numpy as np
import pytest

from conftest import tiny_config
from keras_unet_ft import finetune


def test_masked_trainer_matches_keras_trainer_semantics(tiny_study):
    """Both trainers leave frozen layers bit-identical and move the trained ones."""
    import keras

    out, cfg = tiny_study
    pre = keras.saving.load_model(out / "pretrained/model.keras", compile=False)
    weights = pre.get_weights()
    rng = np.random.default_rng(0)
    x = rng.random((8, 32, 32, 1), dtype=np.float32)
    train = (x, (x > 0.5).astype(np.uint8))
    for trainer in ("selective", "masked", "keras"):
        c = tiny_config(**{"study.trainer": trainer})
        session = finetune.FoldSession(c, 0, "fp32")
        tr = session.train("shallow_to_deep:2", train, weights)
        model, report, rows, before = tr.model, tr.report, tr.history, tr.weights_before
        assert rows and np.isfinite(rows[-1]["loss"])
        for layer in model.layers:
            if not layer.weights:
                continue
            same = all(np.array_equal(a, b) for a, b in zip(before[layer.name], layer.get_weights()))
            assert same == (layer.name not in report.trainable_layers), (trainer, layer.name)


def test_mirrored_strategy_code_path_on_cpu(tiny_study):
    import keras

    from keras_unet_ft.runtime import get_strategy

    out, cfg = tiny_study
    weights = keras.saving.load_model(out / "pretrained/model.keras", compile=False).get_weights()
    x = np.random.default_rng(1).random((8, 32, 32, 1), dtype=np.float32)
    session = finetune.FoldSession(cfg, 0, "fp32", get_strategy("mirrored"))
    assert session.kind == "keras"
    rows = session.train("expanding", (x, (x > 0.5).astype(np.uint8)), weights).history
    assert len(rows) == cfg.finetune.epochs


def test_stage_learning_rates_reach_each_stage(tiny_study, trainer="masked"):
    """A staged plan ``A>B`` trains stage 2 with its own rate: a vanishing second rate
    leaves the layers frozen in stage 1 where the pretrained net had them."""
    import keras

    out, _ = tiny_study
    weights = keras.saving.load_model(out / "pretrained/model.keras", compile=False).get_weights()
    x = np.random.default_rng(2).random((8, 32, 32, 1), dtype=np.float32)
    train = (x, (x > 0.5).astype(np.uint8))
    moved = {}
    for rates in ("1e-3,1e-3", "1e-3,1e-12"):
        c = tiny_config(**{"study.trainer": trainer, "finetune.stage_learning_rates": rates})
        session = finetune.FoldSession(c, 0, "fp32")
        tr = session.train("expanding:blocks>all", train, weights)
        model, rows, before = tr.model, tr.history, tr.weights_before
        assert [r["stage"] for r in rows] == [1, 2]
        w0, w1 = before["enc1_conv1"][0], model.get_layer("enc1_conv1").get_weights()[0]
        moved[rates] = float(np.abs(w1 - w0).max())
    assert moved["1e-3,1e-3"] > 1e-4 and moved["1e-3,1e-12"] < 1e-6, moved


@pytest.mark.parametrize("trainer, precision, strategy, steps, expected", [
    ("auto", "fp32", None, 10, "selective"),
    ("auto", "bf16", None, 5000, "selective"),
    ("auto", "fp16", None, 10, "keras"),
    ("masked", "fp32", None, 10, "masked"),
    ("keras", "fp32", None, 10, "keras"),
])
def test_resolve_trainer(trainer, precision, strategy, steps, expected):
    assert finetune.resolve_trainer(trainer, precision, strategy, steps) == expected


def test_masked_trainer_refuses_fp16():
    with pytest.raises(ValueError, match="use study.trainer=keras"):
        finetune.resolve_trainer("masked", "fp16")


@pytest.mark.parametrize("losses, probs, expected", [
    ([0.7, 0.5, 0.4], np.linspace(0, 1, 8), None),
    ([0.7, float("nan")], np.linspace(0, 1, 8), "non-finite"),
    ([0.7, float("inf")], np.linspace(0, 1, 8), "non-finite"),
    ([0.3, 0.9], np.linspace(0, 1, 8), "loss rose from 0.3 to 0.9"),
    ([0.7, 0.6], np.full(8, 0.25), "every pixel of every test image is predicted 0.25"),
    ([], np.full(8, 0.0), "every pixel"),           # a baseline that predicts nothing
    ([], np.linspace(0, 1, 8), None),
])
def test_divergence_table(losses, probs, expected):
    why = finetune.divergence([{"loss": v} for v in losses], probs)
    assert (why is None) if expected is None else (expected in why), why


def test_selective_trainer_matches_keras_fit_and_freezes_exactly():
    """Same seed, same data order, no dropout: the selective trainer's weights equal
    Keras' ``fit`` after ``apply_plan`` (float tolerance); frozen ones stay bit-identical."""
    import keras

    from keras_unet_ft.model import build_unet

    keras.utils.set_random_seed(0)
    init = build_unet((32, 32, 1), base_filters=4, dropout=0.0).get_weights()
    rng = np.random.default_rng(5)
    x = rng.random((16, 32, 32, 1), dtype=np.float32)
    train = (x, (x > 0.6).astype(np.uint8))
    got = {}
    for trainer in ("selective", "keras"):
        finetune.clear_shared()
        c = tiny_config(**{"study.trainer": trainer, "model.dropout": "0",
                           "finetune.learning_rate": "1e-3", "finetune.epochs": "1",
                           "finetune.batch_size": "4"})   # 4 Adam steps
        tr = finetune.FoldSession(c, 0, "fp32").train("deep_to_shallow:3", train, init)
        got[trainer] = {l.name: [np.array(w) for w in l.get_weights()]
                        for l in tr.model.layers if l.weights}
        trained = set(tr.report.trainable_layers)
        for name, ws in got[trainer].items():
            same = all(np.array_equal(a, b) for a, b in zip(ws, tr.weights_before[name]))
            assert same == (name not in trained), (trainer, name)
    for name, ws in got["keras"].items():
        for a, b in zip(ws, got["selective"][name]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)


def test_selective_trainer_traces_each_trainable_set_once():
    import keras

    from keras_unet_ft.model import build_unet

    finetune.clear_shared()
    keras.utils.set_random_seed(0)
    init = build_unet((32, 32, 1), base_filters=4).get_weights()
    x = np.random.default_rng(1).random((8, 32, 32, 1), dtype=np.float32)
    train = (x, (x > 0.5).astype(np.uint8))
    c = tiny_config()
    traces = []
    for fold, plan in ((0, "expanding"), (0, "contracting"), (1, "expanding"),
                       (1, "deep_to_shallow:9"), (1, "shallow_to_deep:9")):
        session = finetune.FoldSession(c, fold, "fp32")
        assert session.kind == "selective"
        traces.append(session.train(plan, train, init).trace_seconds)
    assert traces[0] > 0 and traces[1] > 0 and traces[3] > 0      # first use of a set
    assert traces[2] == 0 and traces[4] == 0                       # reused across folds
