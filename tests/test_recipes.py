"""Transfer recipes beyond freezing: reinit (nnU-Net's), Auto-RGN, the learning-rate warm-up."""

import numpy as np
import pytest

from conftest import tiny_config
from keras_unet_ft import finetune
from keras_unet_ft.plans import Plan, group_plans


def _tiny_init():
    import keras

    from keras_unet_ft.model import build_unet

    keras.utils.set_random_seed(0)
    init = build_unet((32, 32, 1), base_filters=4, dropout=0.0).get_weights()
    x = np.random.default_rng(7).random((8, 32, 32, 1), dtype=np.float32)
    return init, (x, (x > 0.55).astype(np.uint8))


def _by_layer(model, weights):
    out, i = {}, 0
    for layer in model.layers:
        n = len(layer.weights)
        if n:
            out[layer.name] = weights[i:i + n]
        i += n
    return out


@pytest.mark.parametrize("trainer, plan, fresh_blocks", [
    ("selective", "reinit:expanding", {6, 7, 8, 9}),
    ("keras", "reinit:blocks-4..5", {4, 5}),
])
def test_reinit_starts_the_named_part_afresh_and_trains_every_layer(trainer, plan, fresh_blocks):
    init, train = _tiny_init()
    finetune.clear_shared()
    session = finetune.FoldSession(tiny_config(**{"study.trainer": trainer}), 0, "fp32")
    tr = session.train(plan, train, init)
    bm = tr.block_map
    pre, scratch = _by_layer(bm.model, init), _by_layer(bm.model, session.scratch_weights())
    for b in bm.blocks:
        for name in b.weighted_layers:
            want = scratch[name] if b.index in fresh_blocks else pre[name]
            for got, w in zip(tr.weights_before[name], want):
                np.testing.assert_array_equal(got, w, err_msg=f"{plan}: {name}")
    assert tr.report.frozen_params == 0 and tr.report.trainable_params == bm.total_params


def test_reinit_beyond_the_blocks_is_an_error_naming_them():
    init, train = _tiny_init()
    finetune.clear_shared()
    with pytest.raises(ValueError, match="the model has 9 blocks"):
        finetune.FoldSession(tiny_config(), 0, "fp32").train("reinit:blocks-8..12", train, init)


@pytest.mark.parametrize("trainer", ["selective"])
def test_autorgn_scales_each_tensor_by_its_relative_gradient_norm(trainer):
    init, train = _tiny_init()
    finetune.clear_shared()
    c = tiny_config(**{"study.trainer": trainer, "finetune.epochs": "2"})
    session = finetune.FoldSession(c, 0, "fp32")
    tr = session.train("autorgn", train, init)
    assert [r["epoch"] for r in tr.history] == [1, 2]
    assert all(r["largest_rgn"] > 0 for r in tr.history)
    scales = np.array([float(s.numpy()) for s in session.trainer.scales])
    assert scales.max() == pytest.approx(1.0) and scales.min() >= 0 and scales.min() < 1
    assert tr.report.trainable_params == tr.block_map.total_params
    changed = [n for n, ws in tr.weights_before.items()
               if not all(np.array_equal(a, np.asarray(b)) for a, b in
                          zip(ws, tr.model.get_layer(n).get_weights()))]
    assert changed


def test_autorgn_needs_a_per_variable_trainer():
    init, train = _tiny_init()
    with pytest.raises(ValueError, match="study.trainer=selective"):
        finetune.FoldSession(tiny_config(**{"study.trainer": "keras"}), 0,
                             "fp32").train("autorgn", train, init)


@pytest.mark.parametrize("trainer", ["selective", "keras"])
def test_warmup_raises_the_rate_linearly_then_holds_it(trainer):
    init, train = _tiny_init()
    finetune.clear_shared()
    c = tiny_config(**{"study.trainer": trainer, "finetune.epochs": "4",
                       "finetune.warmup_epochs": "2", "finetune.learning_rate": "0.003"})
    tr = finetune.FoldSession(c, 0, "fp32").train("expanding", train, init)
    rates = [r["learning_rate"] for r in tr.history]
    np.testing.assert_allclose(rates, [0.001, 0.002, 0.003, 0.003], rtol=1e-6)


def test_recipes_are_never_merged_with_the_block_plan_of_the_same_layers(small_bm):
    plans = ["shallow_to_deep:9", "all", "reinit:expanding", "autorgn"]
    groups = group_plans(plans, {"unet": small_bm}, "unet")
    assert [g[0] for g in groups] == ["shallow_to_deep:9", "reinit:expanding", "autorgn"]
    assert Plan.parse("reinit:expanding").is_method and Plan.parse("autorgn").is_method


@pytest.fixture(scope="module")
def small_bm():
    from keras_unet_ft.blocks import BlockMap
    from keras_unet_ft.model import build_unet

    return BlockMap(build_unet((32, 32, 1), base_filters=4))


def test_a_key_added_later_at_its_default_does_not_invalidate_finished_runs():
    from keras_unet_ft.study import changed_keys

    old = {"finetune.epochs": 2}
    assert changed_keys(old, {"finetune.epochs": 2, "finetune.warmup_epochs": 0}) == []
    assert changed_keys(old, {"finetune.epochs": 2, "finetune.warmup_epochs": 2}) == \
        ["finetune.warmup_epochs: '(absent)' -> 2"]
