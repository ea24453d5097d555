"""Normalisation layers under every trainer (``finetune.batchnorm``): a block a plan freezes
keeps its BatchNormalization layers in inference mode, their moving statistics bit for bit;
a trained block's BatchNormalization layers train (``auto``) or stay untouched
(``frozen``); the reported trainable parameters are exactly the weights that may change."""

import numpy as np
import pytest

from conftest import tiny_config
from keras_unet_ft import finetune
from keras_unet_ft.config import TRAINER_SPECS
from keras_unet_ft.plans import Plan, PlanError

STATS = ("moving_mean", "moving_variance")


def norm_unet(norm="batch", size=32, base=4, depthwise=False, use_bias=True):
    """A 2-level U-Net (5 blocks): conv + normalisation + ReLU twice per block, max-pooling
    down, up-sampling up, concatenated skips; ``depthwise``: dec1's first conv is a 3x3
    DepthwiseConv2D."""
    import keras
    from keras import layers

    def normalise(name):
        if norm == "batch":
            return layers.BatchNormalization(name=name)
        if norm == "group":
            return layers.GroupNormalization(groups=2, name=name)
        return layers.LayerNormalization(name=name)

    def block(x, name, filters):
        for i in (1, 2):
            if depthwise and name == "dec1" and i == 1:
                x = layers.DepthwiseConv2D(3, padding="same", name=f"{name}_dw")(x)
            else:
                x = layers.Conv2D(filters, 3, padding="same", use_bias=use_bias,
                                  name=f"{name}_conv{i}")(x)
            x = normalise(f"{name}_bn{i}")(x)
            x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
        return x

    inp = keras.Input((size, size, 1), name="image")
    e1 = block(inp, "enc1", base)
    e2 = block(layers.MaxPooling2D(name="enc1_pool")(e1), "enc2", 2 * base)
    b = block(layers.MaxPooling2D(name="enc2_pool")(e2), "bott", 4 * base)
    d2 = block(layers.Concatenate(name="dec2_cat")([layers.UpSampling2D(name="dec2_up")(b), e2]),
               "dec2", 2 * base)
    d1 = block(layers.Concatenate(name="dec1_cat")([layers.UpSampling2D(name="dec1_up")(d2), e1]),
               "dec1", base)
    out = layers.Conv2D(1, 1, activation="sigmoid", name="head")(d1)
    return keras.Model(inp, out, name=f"{norm}_unet")


def perturbed_weights(model, seed=3):
    """The model's weights with BatchNorm statistics and gamma/beta away from their initial
    values (inference and training mode then differ)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for w in layer.weights:
            name = w.path.rsplit("/", 1)[-1]
            if name in ("moving_mean", "beta"):
                w.assign(rng.normal(0, 0.1, w.shape).astype("float32"))
            elif name in ("moving_variance", "gamma"):
                w.assign(rng.uniform(0.5, 2.0, w.shape).astype("float32"))
    return model.get_weights()


@pytest.fixture
def network(monkeypatch):
    """``network(**kw)``: every trainer builds :func:`norm_unet` (``kw``) for its model;
    returns ``(pretrained weights, (images, masks))``: moving statistics and gamma away
    from their initial values, so inference and training mode differ."""
    import keras

    from keras_unet_ft.trainers import keras_fit, multiworker, selective

    def make(**kw):
        build = lambda mcfg, **_: norm_unet(**kw)   # noqa: E731
        for module in (selective, keras_fit, multiworker, finetune):
            monkeypatch.setattr(module, "build_from_config", build)
        finetune.clear_shared()
        keras.utils.set_random_seed(0)
        weights = perturbed_weights(norm_unet(**kw))
        x = np.random.default_rng(7).random((8, 32, 32, 1), dtype=np.float32)
        return weights, (x, (x > 0.55).astype(np.uint8))

    yield make
    finetune.clear_shared()


def _train(trainer, plan, mode, init, data, epochs=1):
    cfg = tiny_config(**{"study.trainer": trainer, "finetune.batchnorm": mode,
                         "finetune.learning_rate": "1e-2", "finetune.epochs": str(epochs),
                         "finetune.batch_size": "4"})
    return finetune.FoldSession(cfg, 0, "fp32").train(plan, data, init)


def _expected(tr, plan, mode, epochs):
    """``(reported layers, layers the run changed)``, read from the plan and the mode: a
    gradual plan reports every layer it may train and changes those of its last epoch."""
    from keras_unet_ft.trainable import trained_layers

    p, bm = Plan.parse(plan), tr.block_map
    reported = trained_layers(tr.model, frozenset().union(*p.stage_layers(bm)), mode)
    changed = (trained_layers(tr.model, p.epoch_layers(bm, epochs), mode)
               if p.layers_change else reported)
    return reported, changed


def _size(w):
    return int(np.prod(w.shape))


def check_run(tr, plan, mode, epochs=1):
    """Frozen layers bit-identical (moving statistics included); trained ones changed in
    every weight the plan learns, their moving statistics updated unless ``frozen``; the
    report counts exactly those weights."""
    import keras

    p = Plan.parse(plan)
    reported, trained = _expected(tr, plan, mode, epochs)
    assert set(tr.report.trainable_layers) == set(reported)
    learnable = 0
    for layer in tr.model.layers:
        if not layer.weights:
            continue
        bn = isinstance(layer, keras.layers.BatchNormalization)
        for w, before in zip(layer.weights, tr.weights_before[layer.name]):
            name = w.path.rsplit("/", 1)[-1]
            same = np.array_equal(np.asarray(w), before)
            if layer.name not in trained:
                assert same, (plan, mode, w.path, "frozen layer changed")
            elif name in STATS:
                assert bn and not same, (plan, mode, w.path, "moving statistics not updated")
            elif p.reparam == "lora" and name == "bias":
                assert same, (plan, w.path)
            elif p.adaptive and name == "bias":
                pass   # a bias before a training-mode BatchNorm: gradient ~0, autorgn step ~0
            else:
                assert not same, (plan, mode, w.path, "trained weight unchanged")
            if layer.name in reported and name not in STATS:
                learnable += _size(w) if not p.reparam == "lora" or name == "kernel" else 0
        if bn and mode == "frozen":
            assert layer.name not in reported
    if p.reparam == "ssf":
        learnable = sum(2 * int(tr.model.get_layer(n).kernel.shape[-1]) for n in reported)
    elif p.reparam == "lora":
        learnable = sum(p.rank * (int(np.prod(k.shape[:-1])) + int(k.shape[-1]))
                        for k in (tr.model.get_layer(n).kernel for n in reported))
    assert tr.report.trainable_params == learnable
    total = sum(_size(w) for w in tr.model.weights)
    assert tr.report.frozen_params == (total if p.reparam else total - learnable)


# one traced step per (trainer, trained set): the table keeps the runs few (the
# switching test below trains expanding and contracting under auto on both trainers).
# Every trainer a study may name has a row (from config.TRAINER_SPECS: a new trainer is
# checked without a line here); multiworker runs only under TF_CONFIG's workers
FAST = [(name, "shallow_to_deep:1", "frozen") for name, spec in TRAINER_SPECS.items()
        if spec.study] + [
    ("selective", "gradual:top", "auto"), ("selective", "llrd:0.5", "frozen"),
    ("selective", "lora:2", "auto"),
    ("keras", "shallow_to_deep:1", "auto"), ("keras", "expanding", "frozen"),
]
SLOW = [
    ("selective", "contracting", "frozen"),
    ("selective", "contracting", "auto"), ("selective", "ssf", "auto"),
    ("selective", "expanding", "train"), ("selective", "shallow_to_deep:1", "auto"),
    ("selective", "llrd:0.5", "auto"), ("selective", "gradual:bottom", "frozen"),
    ("selective", "autorgn", "auto"), ("selective", "expanding:blocks>all", "frozen"),
    ("masked", "expanding", "auto"), ("masked", "contracting", "frozen"),
    ("masked", "gradual:top", "auto"),
    ("masked", "llrd:0.5", "auto"), ("masked", "ssf", "auto"), ("masked", "lora:2", "frozen"),
    ("keras", "contracting", "auto"), ("keras", "contracting", "frozen"),
    ("keras", "expanding:blocks>all", "auto"),
]


@pytest.mark.parametrize("trainer, plan, mode", FAST)
def test_batchnorm_frozen_with_its_block_trained_with_it(network, trainer, plan, mode):
    init, data = network()
    epochs = 2 if Plan.parse(plan).layers_change else 1
    tr = _train(trainer, plan, mode, init, data, epochs)
    check_run(tr, plan, mode, epochs)


@pytest.mark.e2e   # the wider table: under -m e2e (the FAST table above runs by default)
@pytest.mark.slow
@pytest.mark.parametrize("trainer, plan, mode", SLOW)
def test_batchnorm_table_every_trainer_and_plan_kind(network, trainer, plan, mode):
    init, data = network()
    epochs = 2 if Plan.parse(plan).layers_change else 1
    tr = _train(trainer, plan, mode, init, data, epochs)
    check_run(tr, plan, mode, epochs)


@pytest.mark.parametrize("trainer", ["masked", "selective"])
def test_a_trainer_switching_plans_switches_its_batchnorm_modes(network, trainer):
    """One trainer, plan after plan (the masked trainer: one per fold; the selective one:
    one per process): each plan's BatchNorm modes are its own, never the last traced
    step's; a set traced once is reused by the next fold."""
    init, data = network()
    cfg = tiny_config(**{"study.trainer": trainer, "finetune.learning_rate": "1e-2",
                         "finetune.batch_size": "4"})
    session = finetune.FoldSession(cfg, 0, "fp32")
    for plan in ("expanding", "contracting"):
        check_run(session.train(plan, data, init), plan, "auto")
    if trainer == "selective":
        tr = finetune.FoldSession(cfg, 1, "fp32").train("expanding", data, init)
        assert tr.trace_seconds == 0
        check_run(tr, "expanding", "auto")


@pytest.mark.parametrize("norm, trainer, plan", [
    ("group", "selective", "contracting"), ("layer", "keras", "shallow_to_deep:1"),
])
def test_layer_and_group_norm_gamma_beta_train_and_freeze_with_their_block(
        network, norm, trainer, plan):
    """No moving statistics: gamma and beta follow their block, whatever
    ``finetune.batchnorm`` (which concerns BatchNormalization only)."""
    init, data = network(norm=norm)
    tr = _train(trainer, plan, "frozen", init, data)
    assert any("_bn" in n for n in tr.report.trainable_layers)
    check_run(tr, plan, "auto", 1)


def test_the_multiworker_loop_keeps_frozen_batchnorm_in_inference_mode(network):
    """The multiworker trainer's own loop under one replica (the default strategy; several
    workers need TF_CONFIG and processes: tests/test_deploy.py)."""
    import tensorflow as tf

    from keras_unet_ft.trainers import MultiworkerTrainer

    init, data = network()
    cfg = tiny_config()
    for mode in ("auto", "frozen"):
        trainer = MultiworkerTrainer(cfg.model, 0, "fp32", "bce", tf.distribute.get_strategy(),
                                     mode)
        plan = Plan.parse("shallow_to_deep:1")
        tr = trainer.train(plan, plan.steps, [1e-2], 1, data, init, lambda: None, seed=0,
                           batch_size=4)
        check_run(tr, "shallow_to_deep:1", mode)


def test_the_paper_split_keeps_each_batchnorm_with_the_conv_it_follows(network):
    from keras_unet_ft.blocks import BlockMap

    network()
    bm = BlockMap(norm_unet())
    contracting = Plan.parse("contracting").trainable_layers(bm)
    # conv 1..2P+1 = 5: enc1, enc2 and the bottleneck's first conv, each with its norm
    assert contracting == {"enc1_conv1", "enc1_bn1", "enc1_conv2", "enc1_bn2", "enc2_conv1",
                           "enc2_bn1", "enc2_conv2", "enc2_bn2", "bott_conv1", "bott_bn1"}
    expanding = Plan.parse("expanding").trainable_layers(bm)
    assert "bott_bn2" in expanding and not expanding & contracting


@pytest.mark.parametrize("mode, expected", [("auto", 204), ("train", 204), ("frozen", 188)])
def test_plan_matrix_counts_gamma_beta_never_moving_statistics(network, mode, expected):
    """enc1: conv1 9*1*4+4 = 40, conv2 9*4*4+4 = 148, two BatchNorms of 4 channels:
    gamma + beta 8 each (their 16 moving statistics never count)."""
    from keras_unet_ft.blocks import BlockMap
    from keras_unet_ft.trainable import format_matrix, plan_matrix

    bm = BlockMap(norm_unet())
    row, = plan_matrix(["shallow_to_deep:1"], bm, batchnorm=mode)
    assert row.trainable_params == expected
    assert ("enc1_bn1" in row.trainable_layers) == (mode != "frozen")
    assert row.cells[0] == "X"   # the whole block the mode lets train
    assert "204" in format_matrix(plan_matrix(["shallow_to_deep:1"], bm), bm)


def test_lora_refuses_a_depthwise_kernel_naming_the_layer(network):
    init, data = network(depthwise=True)
    with pytest.raises(PlanError, match=r"cannot train layer 'dec1_dw' \(DepthwiseConv2D\)"):
        _train("selective", "lora:2", "auto", init, data)


def test_ssf_refuses_a_convolution_without_bias_naming_the_layer(network):
    init, data = network(use_bias=False)
    with pytest.raises(PlanError, match=r"cannot train layer 'enc1_conv1' \(Conv2D without"):
        _train("selective", "ssf", "auto", init, data)


def test_a_bad_batchnorm_mode_is_one_sentence():
    from keras_unet_ft.trainable import trained_layers

    with pytest.raises(PlanError, match="finetune.batchnorm must be auto, train or frozen"):
        trained_layers(norm_unet(), {"enc1_bn1"}, "fixed")
