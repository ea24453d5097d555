"""Training your own network: per network family and trainer, a block a plan freezes keeps
every weight and every BatchNorm moving statistic bit for bit, a trained block's BatchNorm
layers update their statistics (``finetune.batchnorm=auto``), and the reported trainable
parameters are exactly the trainable weights of the trained layers.

The default run covers a ``file:`` network (BatchNorm, a strided convolution down, a
transposed one up) on every trainer; ``-m e2e`` adds MobileNetV2 here and every encoder family
on every trainer (tests/e2e/test_e2e_own_network.py: a ResNet50 at 32 px costs seconds to build
and trace)."""

import numpy as np
import pytest

from conftest import tiny_config
from test_batchnorm import perturbed_weights
from keras_unet_ft import finetune

STATS = ("moving_mean", "moving_variance")
TRAINERS = ("selective", "masked", "keras")


def train_family(kind, trainer, plan="contracting", tmp_path=None):
    """One fine-tuning run of ``plan`` on ``kind`` (32 px, random encoder) with ``trainer``."""
    import keras

    from keras_unet_ft.model import build_from_config

    cfg = tiny_config(**{"model.kind": kind, "model.encoder_weights": "none",
                         "study.trainer": trainer, "finetune.learning_rate": "1e-2",
                         "finetune.batch_size": "4", "finetune.epochs": "1"})
    finetune.clear_shared()
    keras.utils.set_random_seed(0)
    init = perturbed_weights(build_from_config(cfg.model))
    x = np.random.default_rng(7).random((8, 32, 32, 1), dtype=np.float32)
    return finetune.FoldSession(cfg, 0, "fp32").train(plan, (x, (x > 0.55).astype(np.uint8)),
                                                     init)


def check_frozen_and_counts(tr):
    """Frozen layers bit-identical (statistics included); trained BatchNorm layers' moving
    statistics updated; an input Normalization layer's mean and variance (EfficientNet's)
    never change; the report's trainable count = the trained layers' weights less their
    moving statistics and normalisation constants."""
    import keras

    trained = set(tr.report.trainable_layers)
    assert trained, "the plan trains nothing"
    learnable, bn = 0, 0
    for layer in tr.model.layers:
        constants = isinstance(layer, keras.layers.Normalization)   # mean, variance, count
        for w, before in zip(layer.weights, tr.weights_before.get(layer.name, [])):
            name = w.path.rsplit("/", 1)[-1]
            same = np.array_equal(np.asarray(w), before)
            if layer.name not in trained:
                assert same, f"{w.path} of a frozen layer changed"
            elif name in STATS:
                assert not same, f"{w.path}: a trained BatchNorm did not update its statistics"
            elif constants:
                assert same, f"{w.path}: a Normalization layer's constants changed"
            if layer.name in trained and name not in STATS and not constants:
                learnable += int(np.prod(w.shape))
        bn += isinstance(layer, keras.layers.BatchNormalization)
    assert bn > 0, "no BatchNorm layer: the test checks nothing of them"
    assert tr.report.trainable_params == learnable
    assert tr.report.frozen_params == (sum(int(np.prod(w.shape)) for w in tr.model.weights)
                                       - learnable)


@pytest.mark.e2e   # a MobileNetV2 traced step costs seconds: under -m e2e
def test_mobilenetv2_unet_frozen_blocks_and_batchnorm_kept():
    tr = train_family("encoder:mobilenetv2", "selective")
    check_frozen_and_counts(tr)
    frozen = [b for b in tr.block_map.blocks if b.part == "expanding"]
    assert frozen and not set(tr.report.trainable_layers) & {
        n for b in frozen for n in b.weighted_layers}


@pytest.mark.parametrize("trainer", TRAINERS)
def test_file_network_frozen_blocks_and_batchnorm_kept_per_trainer(tmp_path, trainer):
    from test_own_network import _tiny_user_unet

    path = _tiny_user_unet(tmp_path / "net.keras")
    tr = train_family(f"file:{path}", trainer)
    check_frozen_and_counts(tr)
