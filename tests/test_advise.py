"""unet-ft advise: the gradient probe, the halving schedule, the advice files, bad inputs."""

import json

import numpy as np
import pytest

from keras_unet_ft.advise import halving_schedule


@pytest.mark.parametrize("n, epochs, expected", [
    (19, 12, [(19, 0.75), (10, 1.5), (5, 3.0), (3, 6.0), (2, 12.0)]),
    (7, 2, [(7, 0.5), (4, 1.0), (2, 2.0)]),
    (2, 5, [(2, 5.0)]),
    (1, 3, [(1, 3.0)]),
])
def test_halving_schedule_doubles_the_budget_up_to_the_full_epochs(n, epochs, expected):
    assert [(r["plans"], r["epochs"]) for r in halving_schedule(n, epochs)] == expected


@pytest.mark.parametrize("n, epochs", [(0, 3), (3, 0)])
def test_halving_schedule_rejects_nothing_to_do(n, epochs):
    with pytest.raises(ValueError, match="successive halving needs"):
        halving_schedule(n, epochs)


def test_rgn_probe_is_the_relative_gradient_norm_of_each_block():
    import keras
    import tensorflow as tf

    from keras_unet_ft.advise import rgn_probe
    from keras_unet_ft.blocks import BlockMap
    from keras_unet_ft.model import build_unet

    keras.utils.set_random_seed(0)
    model = build_unet((32, 32, 1), base_filters=4, depth=2)
    bm = BlockMap(model)
    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 32, 1), dtype=np.float32)
    y = (x > 0.6).astype(np.uint8)
    rows = rgn_probe(model, bm, x, y, batch_size=4, batches=1)
    assert sorted(r["rank"] for r in rows) == list(range(1, len(bm.blocks) + 1))
    assert [r["rank"] for r in rows] == sorted(r["rank"] for r in rows)
    assert all(r["rgn"] > 0 for r in rows)
    # by hand, for the deepest block: ||g|| / ||w|| of its weights, the same batch (all 4)
    last = bm.blocks[-1]
    vs = [v for layer in model.layers if layer.name in last.weighted_layers
          for v in layer.trainable_weights]
    with tf.GradientTape() as tape:
        loss = keras.losses.binary_crossentropy(tf.cast(y, "float32"),
                                                model(x, training=False))
        loss = tf.reduce_mean(loss)
    g = tape.gradient(loss, vs)
    want = float(tf.linalg.global_norm(g) / tf.linalg.global_norm(vs))
    got = next(r["rgn"] for r in rows if r["block"] == last.index)
    assert got == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize("argv, message", [
    (["--budget", "-1"], "--budget must be a number of minutes > 0, got -1.0"),
    (["--plans", "none,scratch"], "no plans to compare"),
    (["--plans", "xunet/all"], "advise compares plans of the study's model"),
])
def test_advise_bad_inputs_exit_2_with_the_value(tmp_path, capsys, argv, message):
    from keras_unet_ft.cli import main

    code = main(["advise", "--profile", "smoke", "--target", "sim_bus", "--out",
                 str(tmp_path / "a"), "--set", f"data.cache_dir={tmp_path / 'c'}"] + argv)
    assert code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("budget, epochs, images", [(0.75, 1, 150), (1.5, 2, 150), (3.0, 3, 200),
                                                    (0.01, 1, 2), (12.0, 12, 200)])
def test_a_budget_is_image_steps(budget, epochs, images):
    from keras_unet_ft.advise import _budget_arrays

    x = np.arange(200, dtype=np.float32).reshape(200, 1, 1, 1)
    (xs, ys), e = _budget_arrays((x, x), budget, seed=0)
    assert (e, len(xs)) == (epochs, images)
    assert len(set(xs.ravel().tolist())) == images   # distinct images, no repeats


def test_a_survivor_goes_on_from_its_weights_and_adam_state(tmp_path):
    """Between rungs a plan keeps its weights and Adam state (the step counter adds up) and
    its frozen layers stay the pretrained ones."""
    import keras

    from conftest import tiny_config
    from keras_unet_ft.advise import Candidate, _go_on, resumable
    from keras_unet_ft.finetune import FoldSession, clear_shared
    from keras_unet_ft.model import build_from_config, model_config

    clear_shared()
    cfg = tiny_config(**{"finetune.batch_size": "4"})
    keras.utils.set_random_seed(1)
    pre = build_from_config(model_config(cfg, "unet")).get_weights()
    rng = np.random.default_rng(0)
    x = rng.random((8, 32, 32, 1), dtype=np.float32)
    y = (x > 0.6).astype(np.uint8)
    val = (x[:4], y[:4], ["a", "b", "c", "d"])
    session = FoldSession(cfg, 0, "fp32", None, "unet")
    assert resumable("expanding", session.trainer_name)
    assert not resumable("gradual:top", session.trainer_name)
    assert not resumable("ssf", session.trainer_name) and not resumable("lora:2", "selective")
    c = Candidate("expanding", [], "unet")
    _go_on(c, cfg, session, pre, (x, y), val, 1.0, seed=0)
    first = [w.copy() for w in c.state[0]]
    per_image, params = _go_on(c, cfg, session, pre, (x, y), val, 1.0, seed=1)
    it = session.trainer.optimizer.iterations.numpy()
    assert it == 4 and c.trained == 2.0 and len(c.history) == 2   # 2 x (8 images / 4)
    assert set(per_image) <= {"a", "b", "c", "d"} and params > 0
    names = [v.path for v in session.model.weights]
    changed = [n for n, a, b in zip(names, first, c.state[0]) if not np.array_equal(a, b)]
    assert changed and not any(n.startswith("enc") for n in changed), changed
    for n, a, b in zip(names, pre, c.state[0]):
        if n.split("/")[0].startswith("enc"):
            np.testing.assert_array_equal(a, b)   # contracting part frozen throughout


def test_a_diverged_plan_is_dropped_and_named(tmp_path, monkeypatch):
    """No training here: each plan's validation Dice is given; one plan diverges at rung 1.
    It never goes on, never ranks, and ADVICE.md lists it."""
    import keras

    import keras_unet_ft.advise as adv
    from keras_unet_ft.config import load_config
    from keras_unet_ft.finetune import Diverged
    from keras_unet_ft.model import build_from_config, model_config

    cfg = load_config("smoke", {"data.cache_dir": str(tmp_path / "cache")})
    pre = tmp_path / "pre.keras"
    build_from_config(model_config(cfg, "unet")).save(pre)
    given = {"contracting": 0.5, "shallow_to_deep:1": 0.3, "deep_to_shallow:1": 0.4}

    def fake(c, cfg_, session, weights, train, val, epochs, seed):
        if c.plan == "expanding":
            raise Diverged("loss became non-finite ([nan])")
        c.trained += epochs
        ids = [i for j, i in enumerate(val[2]) if val[1][j].max() > 0]
        return {i: given[c.plan] + 0.01 * (k % 3) for k, i in enumerate(ids)}, 100

    monkeypatch.setattr(adv, "_go_on", fake)
    keras.utils.set_random_seed(0)
    a = adv.advise(cfg, "sim_bus", tmp_path / "a", progress=False, pretrained=pre,
                   plans="contracting,expanding,shallow_to_deep:1,deep_to_shallow:1")
    assert a["recommendation"] == "contracting"
    assert a["rungs"][0]["scores"]["expanding"] is None
    assert all("expanding" not in r["scores"] for r in a["rungs"][1:])
    assert "expanding" not in [r["plan"] for r in a["ranking"]]
    bad = [o for o in a["order"] if o["status"] != "ok"]
    assert [(o["plan"], o["last_score"]) for o in bad] == [("expanding", None)]
    assert ("Left out (diverged, failed or not trained): expanding: loss became non-finite"
            in (tmp_path / "a" / "ADVICE.md").read_text())


@pytest.mark.parametrize("plans", ["contracting,expanding,shallow_to_deep:1,deep_to_shallow:1",
                                   "deep_to_shallow:1,shallow_to_deep:1,expanding,contracting"])
def test_the_first_rung_goes_in_the_probe_s_order_and_a_budget_ending_it_keeps_the_first(
        tmp_path, monkeypatch, plans):
    """The first rung trains the plans in the order of the best measured predictor (its
    probe run on the training images); a budget that ends the first rung keeps the plans
    trained so far (the predicted best) as the finalists and names the ones left out. Each
    plan "takes" 60 s of a fake clock; the budget of 2.5 min fits two."""
    import types

    import keras

    import keras_unet_ft.advise as adv
    from keras_unet_ft.config import load_config
    from keras_unet_ft.model import build_from_config, model_config

    cfg = load_config("smoke", {"data.cache_dir": str(tmp_path / "cache")})
    pre = tmp_path / "pre.keras"
    build_from_config(model_config(cfg, "unet")).save(pre)
    clock = [0.0]
    monkeypatch.setattr(adv, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    trained = []

    def fake(c, cfg_, session, weights, train, val, epochs, seed):
        clock[0] += 60.0
        trained.append(c.plan)
        c.trained += epochs
        ids = [i for j, i in enumerate(val[2]) if val[1][j].max() > 0]
        return {i: 0.5 - 0.1 * len(trained) + 0.01 * (k % 3) for k, i in enumerate(ids)}, 100

    monkeypatch.setattr(adv, "_go_on", fake)
    keras.utils.set_random_seed(0)
    a = adv.advise(cfg, "sim_bus", tmp_path / "a", progress=False, pretrained=pre, plans=plans,
                   budget_minutes=2.5)
    first = a["first_rung_order"]
    assert first["predictor"] == adv.probe_agreement()["best"]
    assert sorted(first["order"]) == sorted(plans.split(","))
    assert trained == first["order"][:2]                 # the predicted best first, then cut
    assert [r["plan"] for r in a["ranking"]] == trained and a["best"] == trained[0]
    assert len(a["rungs"]) == 1 and set(a["rungs"][0]["scores"]) == set(trained)
    left = {o["plan"]: o for o in a["order"] if o["status"] != "ok"}
    assert set(left) == set(first["order"][2:])
    assert all(o["status"] == "not_trained" for o in left.values())
    assert "stopped during rung 1" in a["stopped"] and first["order"][3] in a["stopped"]
    text = (tmp_path / "a" / "ADVICE.md").read_text()
    assert f"Rung 1 trained the plans in the order the zero-training probe `{first['predictor']}`" in text
    assert "the budget ended the first rung" in text and "**The budget ended the search early**" in text


@pytest.mark.parametrize("none_dice, recommended", [
    (0.1, "contracting"),   # every plan far above the pretrained net untouched
    (0.5, None),            # the best equals it on every image: interval [0, 0], a tie
    (0.7, None),            # the untouched net is better
    (None, None),           # the untouched net predicts non-finite values: nothing to compare
])
def test_advise_recommends_only_a_plan_shown_better_than_the_untouched_net(
        tmp_path, monkeypatch, none_dice, recommended):
    """advise once dropped the baselines and opened ADVICE.md with "Fine-tune X" where the
    study, on the same data and net, recommended no plan (X not shown better than none)."""
    import keras

    import keras_unet_ft.advise as adv
    from keras_unet_ft.config import load_config
    from keras_unet_ft.finetune import RunResult
    from keras_unet_ft.model import build_from_config, model_config

    cfg = load_config("smoke", {"data.cache_dir": str(tmp_path / "cache")})
    pre = tmp_path / "pre.keras"
    build_from_config(model_config(cfg, "unet")).save(pre)
    given = {"contracting": 0.5, "expanding": 0.3}

    def fake_go_on(c, cfg_, session, weights, train, val, epochs, seed):
        c.trained += epochs
        ids = [i for j, i in enumerate(val[2]) if val[1][j].max() > 0]
        return {i: given[c.plan] + 0.01 * (k % 3) for k, i in enumerate(ids)}, 100

    def fake_run_one(cfg_, target, fold, plan, kind, train, val, weights, session):
        assert plan == "none" and weights is not None
        if none_dice is None:
            return RunResult({"status": "diverged", "reason": "diverged: non-finite predictions"},
                             [], [], list(val[2]), None, None)
        rows = [{"id": i, "dice": (none_dice + 0.01 * (k % 3)) if val[1][k].max() > 0 else 1.0,
                 "empty_mask": not val[1][k].max() > 0} for k, i in enumerate(val[2])]
        return RunResult({"status": "ok"}, rows, [], list(val[2]), None, None)

    monkeypatch.setattr(adv, "_go_on", fake_go_on)
    monkeypatch.setattr(adv, "run_one", fake_run_one)
    keras.utils.set_random_seed(0)
    a = adv.advise(cfg, "sim_bus", tmp_path / "a", progress=False, pretrained=pre,
                   plans="contracting,expanding")
    text = (tmp_path / "a" / "ADVICE.md").read_text()
    assert a["recommendation"] == recommended and a["best"] == "contracting"
    assert a["baseline"]["plan"] == "none"
    if none_dice is None:
        assert a["baseline"]["verdict"] == "unknown"
        assert "the untouched net has no Dice: diverged: non-finite predictions" in text
    else:
        assert a["baseline"]["best_minus_none"] == pytest.approx(0.5 - none_dice)
    assert "profile checks that the pipeline runs" in text        # smoke: said at the top
    assert json.loads((tmp_path / "a" / "advice.json").read_text())["profile"] == "smoke"
    if recommended:
        assert "**Fine-tune `contracting`**" in text and "No plan is recommended" not in text
    else:
        assert "**No plan is recommended**: the best finalist, `contracting`" in text
        assert "Fine-tune `" not in text
    assert "| none (pretrained net untouched, not trained) |" in text


def test_going_on_needs_a_resumable_trainer():
    """A trainer without the :class:`~keras_unet_ft.trainers.Resumable` methods is refused in
    one sentence before anything is trained."""
    import types

    from conftest import tiny_config
    from keras_unet_ft.advise import Candidate, _go_on
    from keras_unet_ft.trainers import KerasFitTrainer

    cfg = tiny_config()
    session = types.SimpleNamespace(trainer=KerasFitTrainer(cfg.model, "fp32", True, "bce"),
                                    bm=None)
    with pytest.raises(TypeError, match="the keras trainer cannot go on from a saved state"):
        _go_on(Candidate("expanding", [], "unet"), cfg, session, None, None, None, 1.0, seed=0)


@pytest.mark.parametrize("kind, unknown", [("unet", False), ("encoder:resnet50", True),
                                           ("file:/x/net.keras", True)])
def test_the_agreement_sentence_names_the_network_it_was_measured_on(kind, unknown):
    """The shipped agreement was measured on the paper's U-Net: on another network the
    sentence says its agreement there is unknown, never lends it the U-Net's numbers."""
    from keras_unet_ft.advise import agreement_sentence, probe_agreement

    measured = probe_agreement()
    row = next(r for r in measured["predictors"] if r["predictor"] == measured["best"])
    text = agreement_sentence({"predictor": measured["best"], "agreement": row,
                               "agreement_scale": measured["scale"], "network_kind": kind,
                               "network": f"net {kind}"})
    assert "full grids of the paper's U-Net, 64 px, base 8" in text
    assert f"{100 * row['partial_top1']:.0f} % of targets" in text
    assert ("its agreement is unknown" in text) == unknown
    if unknown:
        assert f"on net {kind} its agreement is unknown" in text
