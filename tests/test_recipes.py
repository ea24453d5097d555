"""Transfer recipes beyond freezing: reinit (nnU-Net's), Auto-RGN, the learning-rate warm-up,
SSF and LoRA (learned tensors merged into plain kernels)."""

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
    plans = ["shallow_to_deep:9", "all", "reinit:expanding", "autorgn", "ssf", "lora:2"]
    groups = group_plans(plans, {"unet": small_bm}, "unet")
    assert [g[0] for g in groups] == ["shallow_to_deep:9", "reinit:expanding", "autorgn", "ssf",
                                      "lora:2"]
    assert all(Plan.parse(p).is_method for p in plans[2:])


# -- ssf and lora: the learned tensors' parameters, exact -------------------------------
def _expected_params(bm, plan):
    """By hand: 2 per output channel of every conv (ssf); R (kh kw cin + cout) per 3x3 conv."""
    n = 0
    for name in (n for b in bm.blocks for n in b.weighted_layers):
        kh, kw, cin, cout = bm.model.get_layer(name).kernel.shape
        if plan == "ssf":
            n += 2 * cout
        elif (kh, kw) == (3, 3):
            n += int(plan.split(":")[1]) * (kh * kw * cin + cout)
    return n


@pytest.mark.parametrize("plan", ["ssf", "lora:1", "lora:4"])
def test_ssf_and_lora_trainable_counts_are_exact(plan, small_bm):
    from keras_unet_ft.trainable import plan_matrix

    row = plan_matrix([plan], small_bm)[0]
    assert row.trainable_params == _expected_params(small_bm, plan) > 0
    assert (set(row.cells) == {"P"}) if plan == "ssf" else ("p" in row.cells)  # lora: 3x3 only


def _trained(trainer, plan):
    """``plan`` trained 2 epochs by ``trainer`` from the tiny pretrained weights, with its
    trainable count checked against the count by hand."""
    init, train = _tiny_init()
    finetune.clear_shared()
    c = tiny_config(**{"study.trainer": trainer, "finetune.epochs": "2"})
    tr = finetune.FoldSession(c, 0, "fp32").train(plan, train, init)
    assert tr.report.trainable_params == _expected_params(tr.block_map, plan)
    return tr


@pytest.mark.parametrize("trainer", ["selective"])   # the masked step: the lora test below
def test_ssf_scales_every_kernel_channel_and_freezes_the_rest(trainer):
    tr = _trained(trainer, "ssf")
    moved = 0
    for name, (k0, b0) in tr.weights_before.items():
        k1, b1 = tr.model.get_layer(name).get_weights()
        gamma = (k1 / np.where(k0 == 0, 1, k0)).reshape(-1, k0.shape[-1])
        # W = W0 * gamma: one factor per output channel, the same for every kernel entry
        np.testing.assert_allclose(gamma, np.broadcast_to(gamma[:1], gamma.shape), atol=1e-5,
                                   err_msg=name)
        beta = b1 - b0 * gamma[0]
        moved += int(np.abs(gamma[0] - 1).max() > 0) + int(np.abs(beta).max() > 0)
    assert moved == 2 * len(tr.weights_before)    # every scale and shift learned


@pytest.mark.parametrize("trainer", ["masked"])      # the selective step: the ssf test above
def test_lora_updates_are_low_rank_and_only_in_3x3_kernels(trainer):
    tr = _trained(trainer, "lora:2")
    assert "head_out" not in tr.report.trainable_layers
    for name, (k0, b0) in tr.weights_before.items():
        k1, b1 = tr.model.get_layer(name).get_weights()
        np.testing.assert_array_equal(b1, b0, err_msg=name)          # biases frozen
        delta = (k1.astype(np.float64) - k0).reshape(-1, k0.shape[-1])
        if k0.shape[:2] != (3, 3):
            np.testing.assert_array_equal(k1, k0, err_msg=name)      # 2x2, 1x1 frozen
            continue
        s = np.linalg.svd(delta, compute_uv=False)
        assert s[0] > 0, name
        assert s[2:].max(initial=0) < 1e-3 * s[0], (name, s)          # rank 2 (float noise)


def test_a_merged_lora_and_ssf_layer_computes_what_the_unmerged_one_does():
    """The merged kernel (what the trainer writes and a saved model holds) against the
    adapter written out: conv(x, W0) + conv(x, reshape(U V)) + b0, and gamma (conv + b0) + beta."""
    import keras
    import tensorflow as tf

    from keras_unet_ft.trainers.reparam import SSF, LoRA

    layer = keras.layers.Conv2D(6, 3, padding="same")
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 5)).astype(np.float32)
    layer(x)
    layer.bias.assign(np.linspace(-1, 1, 6).astype(np.float32))
    w0, b0 = (np.array(w) for w in layer.get_weights())
    conv = lambda k: tf.nn.conv2d(x, k, 1, "SAME").numpy()   # noqa: E731

    lora = LoRA([layer], 1e-3, rank=2)
    lora.start(seed=3, learning_rate=1e-3)
    u, v = lora.variables
    v.assign(np.random.default_rng(2).normal(size=v.shape).astype(np.float32))
    lora.merge()
    unmerged = conv(w0) + conv((u.numpy() @ v.numpy()).reshape(w0.shape)) + b0
    np.testing.assert_allclose(np.asarray(layer(x)), unmerged, rtol=1e-4, atol=1e-4)

    layer.set_weights([w0, b0])
    ssf = SSF([layer], 1e-3)
    ssf.start(seed=0, learning_rate=1e-3)
    gamma, beta = ssf.variables
    gamma.assign(np.linspace(0.5, 1.5, 6).astype(np.float32))
    beta.assign(np.linspace(-0.2, 0.2, 6).astype(np.float32))
    ssf.merge()
    unmerged = gamma.numpy() * (conv(w0) + b0) + beta.numpy()
    np.testing.assert_allclose(np.asarray(layer(x)), unmerged, rtol=1e-4, atol=1e-4)


def test_the_learned_tensors_gradients_follow_from_the_kernels():
    """dL/dgamma, dL/dbeta, dL/dU, dL/dV by the chain rule equal TensorFlow's own
    gradients of the adapter written out."""
    import keras
    import tensorflow as tf

    from keras_unet_ft.trainers.reparam import SSF, LoRA

    layer = keras.layers.Conv2D(4, 3, padding="same")
    x = tf.constant(np.random.default_rng(4).normal(size=(2, 6, 6, 3)).astype(np.float32))
    layer(x)
    w0, b0 = (tf.constant(np.array(w)) for w in layer.get_weights())
    loss_of = lambda y: tf.reduce_sum(tf.sin(y))   # noqa: E731

    def kernel_grads():
        with tf.GradientTape() as tape:
            loss = loss_of(layer(x))
        gk, gb = tape.gradient(loss, [layer.kernel, layer.bias])
        return {id(layer.kernel): gk, id(layer.bias): gb}

    lora = LoRA([layer], 1e-3, rank=2)
    lora.start(seed=5, learning_rate=1e-3)
    lora.variables[1].assign(np.full((2, 4), 0.3, np.float32))
    lora.merge()
    ours = lora._grads(kernel_grads())
    u, v = (tf.Variable(t.numpy()) for t in lora.variables)
    with tf.GradientTape() as tape:
        k = w0 + tf.reshape(u @ v, w0.shape)
        loss = loss_of(tf.nn.conv2d(x, k, 1, "SAME") + b0)
    for a, b in zip(ours, tape.gradient(loss, [u, v])):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), rtol=1e-4, atol=1e-5)

    layer.set_weights([w0.numpy(), b0.numpy()])
    ssf = SSF([layer], 1e-3)
    ssf.start(seed=0, learning_rate=1e-3)
    ssf.variables[0].assign(np.array([0.5, 1.0, 1.5, 2.0], np.float32))
    ssf.merge()
    ours = ssf._grads(kernel_grads())
    g, bt = (tf.Variable(t.numpy()) for t in ssf.variables)
    with tf.GradientTape() as tape:
        loss = loss_of(g * (tf.nn.conv2d(x, w0, 1, "SAME") + b0) + bt)
    for a, b in zip(ours, tape.gradient(loss, [g, bt])):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), rtol=1e-4, atol=1e-5)


def test_ssf_and_lora_need_a_per_variable_trainer():
    init, train = _tiny_init()
    for plan in ("ssf", "lora:2"):
        with pytest.raises(ValueError, match="study.trainer=selective"):
            finetune.FoldSession(tiny_config(**{"study.trainer": "keras"}), 0,
                                 "fp32").train(plan, train, init)


@pytest.fixture(scope="module")
def small_bm():
    from keras_unet_ft.blocks import BlockMap
    from keras_unet_ft.model import build_unet

    return BlockMap(build_unet((32, 32, 1), base_filters=4))


def test_a_key_added_later_at_its_default_does_not_invalidate_finished_runs():
    from keras_unet_ft.study import changed_keys

    old = {"finetune.epochs": 2}
    assert changed_keys(old, {"finetune.epochs": 2, "finetune.warmup_epochs": 0}) == []
    assert (changed_keys(old, {"finetune.epochs": 2, "finetune.warmup_epochs": 2})
            == ["finetune.warmup_epochs: '(absent)' -> 2"])
