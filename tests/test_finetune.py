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
    assert session.trainer_name == "keras"
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
        assert session.trainer_name == "selective"
        traces.append(session.train(plan, train, init).trace_seconds)
    assert traces[0] > 0 and traces[1] > 0 and traces[3] > 0      # first use of a set
    assert traces[2] == 0 and traces[4] == 0                       # reused across folds


# -- plan kinds beyond freezing: llrd, gradual, bitfit; the loss choice --------------------
def _tiny_init(dropout="0"):
    import keras

    from keras_unet_ft.model import build_unet

    keras.utils.set_random_seed(0)
    init = build_unet((32, 32, 1), base_filters=4, dropout=float(dropout)).get_weights()
    x = np.random.default_rng(7).random((8, 32, 32, 1), dtype=np.float32)
    return init, (x, (x > 0.55).astype(np.uint8))


def _changed_blocks(tr):
    """Block indices with any weight different from before training."""
    out = set()
    for b in tr.block_map.blocks:
        for name in b.weighted_layers:
            now = tr.model.get_layer(name).get_weights()
            if any(not np.array_equal(a, w) for a, w in zip(tr.weights_before[name], now)):
                out.add(b.index)
    return out


@pytest.mark.parametrize("trainer", ["selective", "masked"])
def test_llrd_scales_each_blocks_update_by_gamma_powers(trainer):
    """One Adam step (first step: |update| = lr for every weight with a gradient):
    the update of block k under llrd:0.5 is 0.5^(N-k) times the update under ``all``."""
    init, train = _tiny_init()
    x, y = train[0][:4], train[1][:4]
    delta = {}
    for plan in ("all", "llrd:0.5"):
        finetune.clear_shared()
        c = tiny_config(**{"study.trainer": trainer, "model.dropout": "0",
                           "finetune.batch_size": "4", "finetune.epochs": "1"})
        tr = finetune.FoldSession(c, 0, "fp32").train(plan, (x, y), init)
        delta[plan] = {name: [np.abs(a.astype(np.float64) - b) for a, b in
                              zip(tr.weights_before[name], tr.model.get_layer(name).get_weights())]
                       for name in tr.weights_before}
        bm = tr.block_map
    n = len(bm.blocks)
    for b in bm.blocks:
        full = np.concatenate([d.ravel() for name in b.weighted_layers for d in delta["all"][name]])
        part = np.concatenate([d.ravel() for name in b.weighted_layers
                               for d in delta["llrd:0.5"][name]])
        moved = full > 1e-7
        ratio = float(np.median(part[moved] / full[moved]))
        assert ratio == pytest.approx(0.5 ** (n - b.index), rel=2e-3), (b.index, ratio)


@pytest.mark.parametrize("plan, epochs, expected", [
    ("gradual:top", 1, {9}), ("gradual:top", 3, {7, 8, 9}),
    ("gradual:bottom", 2, {1, 2}),
])
def test_gradual_trains_one_more_block_each_epoch(plan, epochs, expected):
    init, train = _tiny_init()
    finetune.clear_shared()
    c = tiny_config(**{"finetune.epochs": str(epochs)})
    tr = finetune.FoldSession(c, 0, "fp32").train(plan, train, init)
    assert _changed_blocks(tr) == expected
    assert [r["trained_blocks"] for r in tr.history] == list(range(1, epochs + 1))
    assert [r["epoch"] for r in tr.history] == list(range(1, epochs + 1))


@pytest.mark.parametrize("trainer", ["selective", "masked"])
def test_bitfit_changes_biases_only(trainer):
    init, train = _tiny_init()
    finetune.clear_shared()
    c = tiny_config(**{"study.trainer": trainer})
    tr = finetune.FoldSession(c, 0, "fp32").train("bitfit", train, init)
    n_bias = 0
    for layer in tr.model.layers:
        for w, before in zip(layer.weights, tr.weights_before.get(layer.name, [])):
            same = np.array_equal(np.asarray(w), before)
            if w.path.endswith("/bias"):
                n_bias += int(w.shape[0])
                assert not same, w.path
            else:
                assert same, w.path
    assert tr.report.trainable_params == n_bias


def test_method_plans_need_the_selective_or_masked_trainer():
    init, train = _tiny_init()
    c = tiny_config(**{"study.trainer": "keras"})
    with pytest.raises(ValueError, match="study.trainer=selective"):
        finetune.FoldSession(c, 0, "fp32").train("llrd:0.5", train, init)


@pytest.mark.parametrize("loss", ["dice", "bce+dice"])   # bce: the default, every other test
def test_loss_choice_trains(loss):
    init, train = _tiny_init()
    finetune.clear_shared()
    c = tiny_config(**{"finetune.loss": loss, "finetune.epochs": "2"})
    tr = finetune.FoldSession(c, 0, "fp32").train("all", train, init)
    losses = [r["loss"] for r in tr.history]
    assert all(np.isfinite(losses))
    if loss == "dice":
        assert 0.0 <= min(losses) and max(losses) <= 1.0


def test_loss_values():
    from keras_unet_ft.runtime import make_loss

    y = np.zeros((2, 4, 4, 1), np.float32)
    y[0, :2] = 1.0
    p = np.full_like(y, 0.5)
    dice = float(make_loss("dice")(y, p))
    # image 0: inter 4, |Y| 8, |P| 8 -> 1 - 9/17; image 1: inter 0, |Y| 0, |P| 8 -> 1 - 1/9
    assert dice == pytest.approx(((1 - 9 / 17) + (1 - 1 / 9)) / 2, rel=1e-5)
    both = float(make_loss("bce+dice")(y, p))
    assert both == pytest.approx(dice + float(np.log(2.0)), rel=1e-4)
    with pytest.raises(ValueError, match="unknown loss 'focal'"):
        make_loss("focal")


@pytest.mark.parametrize("n, seconds, expected", [
    (600, [40.0, 10.0, 12.0, 11.0], 600 / 11),   # the first epoch (tracing) left out
    (100, [5.0], 20.0),                           # one epoch: that one
    (100, [], None),
    (0, [1.0, 1.0], None),
])
def test_images_per_second(n, seconds, expected):
    got = finetune.images_per_second(n, seconds)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_keras_trainer_compiles_once_per_trainable_set_and_runs_do_not_depend_on_order():
    """Keras' trainer keeps one compiled model per trainable set: a later run of the same
    set reuses its train function, and a run gives the same weights whatever ran before it
    in the process (variables, optimizer state and seeds reset)."""
    import keras

    from keras_unet_ft.model import build_unet

    keras.utils.set_random_seed(0)
    init = build_unet((32, 32, 1), base_filters=4).get_weights()   # dropout on: seeds matter
    rng = np.random.default_rng(1)
    x = rng.random((16, 32, 32, 1), dtype=np.float32)
    train = (x, (x > 0.6).astype(np.uint8))
    c = tiny_config(**{"study.trainer": "keras", "finetune.epochs": "2",
                       "finetune.batch_size": "4"})

    def run(fold, plan):
        tr = finetune.FoldSession(c, fold, "fp32").train(plan, train, init)
        return tr, [np.array(w) for w in tr.model.get_weights()]

    finetune.clear_shared()
    alone = run(1, "contracting")[1]
    finetune.clear_shared()
    first, _ = run(0, "contracting")
    step = first.model.train_function
    other, _ = run(0, "expanding")
    assert other.model is not first.model            # another trainable set: its own model
    again, w = run(1, "contracting")
    assert again.model is first.model and again.model.train_function is step   # no recompile
    for a, b in zip(w, alone):
        np.testing.assert_array_equal(a, b)           # as if it had run first
    trained = set(again.report.trainable_layers)
    for layer in again.model.layers:
        if layer.weights:
            same = all(np.array_equal(a, b) for a, b in zip(layer.get_weights(),
                                                            again.weights_before[layer.name]))
            assert same == (layer.name not in trained), layer.name


@pytest.mark.parametrize("history, probs, weights, expected", [
    ([{"loss": 0.7}, {"loss": 0.69}], [0.1, 0.9], [np.ones(3)], None),
    ([{"loss": 0.7}, {"loss": 0.69}], [0.1, 0.9], [np.array([1.0, np.nan])],
     "weights became non-finite (NaN or inf) in 1 layer(s), e.g. tensor 0"),
    ([{"loss": 0.7}, {"loss": 0.69}], [0.1, 0.9], {"enc1_conv1": [np.array([np.inf])]},
     "e.g. enc1_conv1"),
    ([{"loss": 0.7}, {"loss": 0.69}], [0.1, np.nan], None, "predictions became non-finite"),
    ([{"loss": 0.7}, {"loss": float("nan")}], [0.1, 0.9], None, "loss became non-finite"),
])
def test_divergence_reads_weights_and_predictions(history, probs, weights, expected):
    from keras_unet_ft.finetune import divergence

    why = divergence(history, np.asarray(probs, float), weights)
    assert (why is None) if expected is None else (expected in why), why


def _count_builds(monkeypatch):
    """Count every ``build_from_config`` call, whichever module of the package makes it."""
    import sys

    from keras_unet_ft import model as model_module

    build, calls = model_module.build_from_config, []

    def counting(mcfg, *args, **kw):
        calls.append(mcfg.kind)
        return build(mcfg, *args, **kw)

    for name, mod in list(sys.modules.items()):
        if name.startswith("keras_unet_ft") and getattr(mod, "build_from_config", None) is build:
            monkeypatch.setattr(mod, "build_from_config", counting)
    return calls


@pytest.mark.parametrize("trainer", ["selective", "masked"])
def test_one_finetune_run_builds_its_network_once(trainer, tmp_path, monkeypatch):
    """``deploy.finetune_model`` from a ``.keras`` file: the file's check, the block map, the
    fold's seeded random weights (``scratch``, ``reinit``) and the training all use the one
    network the trainer builds (``reinit:expanding`` needs all three; ``scratch`` reads the
    same seeded weights)."""
    from keras_unet_ft import deploy, trainers
    from keras_unet_ft.model import build_unet

    trainers.clear_shared()
    build_unet((32, 32, 1), base_filters=4).save(tmp_path / "pre.keras")
    cfg = tiny_config(**{"data.cache_dir": str(tmp_path / "cache"), "study.trainer": trainer})
    calls = _count_builds(monkeypatch)
    s = deploy.finetune_model(cfg, "sim_bus", "reinit:expanding", tmp_path / "out",
                              pretrained=tmp_path / "pre.keras")
    assert s["status"] == "ok" and s["trainer"] == trainer
    assert calls == ["unet"]


def test_a_pretrained_file_that_does_not_fit_is_refused_by_the_trainers_network(tmp_path):
    from keras_unet_ft import deploy, trainers
    from keras_unet_ft.exitcodes import UserError
    from keras_unet_ft.model import build_unet

    trainers.clear_shared()
    build_unet((32, 32, 1), base_filters=8).save(tmp_path / "pre.keras")
    cfg = tiny_config(**{"data.cache_dir": str(tmp_path / "cache")})
    with pytest.raises(UserError, match="does not fit the network of this config"):
        deploy.finetune_model(cfg, "sim_bus", "all", tmp_path / "out",
                              pretrained=tmp_path / "pre.keras")
    assert not (tmp_path / "out" / "model.keras").exists()
