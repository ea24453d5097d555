"""Zero-training probes (keras_unet_ft/probes.py, issue 36) on a tiny net: 32 px, base 4."""

import json
import math

import numpy as np
import pytest

from keras_unet_ft import probes


@pytest.fixture(scope="module")
def net():
    import keras

    from keras_unet_ft.blocks import BlockMap
    from keras_unet_ft.model import build_unet

    keras.utils.set_random_seed(0)
    model = build_unet((32, 32, 1), base_filters=4)
    rng = np.random.default_rng(0)
    x = rng.random((10, 32, 32, 1)).astype("float32")
    y = np.zeros_like(x, dtype="uint8")
    y[:, 8:20, 10:22] = 1
    x[y == 1] += 0.5
    return model, BlockMap(model), x, y


def test_rgn_is_advise_probe(net):
    from keras_unet_ft.advise import rgn_probe

    model, bm, x, y = net
    ours = probes.rgn_scores(model, bm, x, y, batch_size=4, batches=3, seed=2)
    theirs = {r["block"]: r["rgn"] for r in rgn_probe(model, bm, x, y, batch_size=4,
                                                      batches=3, seed=2)}
    np.testing.assert_allclose(ours, [theirs[b.index] for b in bm.blocks], rtol=1e-4)


def test_fisher_of_a_frozen_block_is_its_mean_squared_gradient(net):
    import tensorflow as tf

    from keras_unet_ft.runtime import make_loss

    model, bm, x, y = net
    block = bm.blocks[2]
    for name in block.weighted_layers:
        model.get_layer(name).trainable = False
    try:
        grads = list(probes.per_image_gradients(model, bm, x[:3], y[:3]))
        fisher = probes.fisher_scores(grads)
        # by hand: the same block's kernels and biases, watched although frozen
        vs = [v for n in block.weighted_layers for v in model.get_layer(n).weights
              if "moving" not in v.path]
        assert vs and not any(v.trainable for v in vs)
        loss = make_loss("bce")
        want = []
        for i in range(3):
            with tf.GradientTape() as tape:
                for v in vs:
                    tape.watch(v.value)
                value = loss(tf.constant(y[i:i + 1].astype("float32")),
                             model(x[i:i + 1], training=False))
            g = tape.gradient(value, [v.value for v in vs])
            want.append(sum(float(np.sum(np.square(a))) for a in g)
                        / sum(int(np.prod(v.shape)) for v in vs))
        assert fisher[2] > 0
        assert fisher[2] == pytest.approx(np.mean(want), rel=1e-4)
    finally:
        for name in block.weighted_layers:
            model.get_layer(name).trainable = True


def test_gps_shares_sum_to_one_and_follow_the_largest_gradients():
    big = [np.ones((3, 3, 1, 4)) * 10.0, np.zeros(4)]   # block 1: 4 filters, large gradients
    small = [np.ones((3, 3, 1, 36)) * 0.1]               # block 2: 36 small ones
    s = probes.gps_scores([[big, small]], top=0.1)      # one image
    assert s.sum() == pytest.approx(1.0)
    assert s[0] == pytest.approx(1.0)           # the top 10 % (4 of 40) are block 1's


def test_feature_quality_is_highest_where_features_separate_the_classes():
    rng = np.random.default_rng(0)
    masks = np.zeros((8, 16, 16, 1), "uint8")
    masks[:, 4:10, 5:12] = 1
    perfect = np.concatenate([masks.astype("float32"), rng.random((8, 16, 16, 2))], axis=-1)
    noise = rng.random((8, 16, 16, 3)).astype("float32")
    coarse = rng.random((8, 8, 8, 3)).astype("float32")   # lower resolution, upsampled
    q = [probes.feature_quality(f, masks) for f in (noise, perfect, coarse)]
    assert q[1] == pytest.approx(1.0)
    assert int(np.argmax(q)) == 1
    assert abs(q[0] - 0.5) < 0.15 and abs(q[2] - 0.5) < 0.15


def test_cka_of_identical_inputs_is_one_and_shift_zero():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(200, 5))
    assert probes.cka_covariance(a, a) == pytest.approx(1.0)
    assert probes.cka_covariance(a, rng.normal(size=(200, 5)) * [1, 10, 1, 1, 1]) < 0.9
    f = rng.normal(size=(4, 8, 8, 5)).astype("float32")
    assert probes.shift_scores([f], [f])[0] == pytest.approx(0.0, abs=0.1)


def test_block_features_and_run_probes(net):
    model, bm, x, y = net
    feats = probes.block_features(model, bm, x[:4])
    assert len(feats) == len(bm.blocks) and all(f.shape[0] == 4 and f.shape[-1] > 1
                                                for f in feats)
    res = probes.run_probes(model, bm, x, y, pre_images=x[::-1], batch_size=4)
    assert set(res) == set(probes.PROBES)
    for r in res.values():
        assert len(r["scores"]) == len(bm.blocks) and r["seconds"] >= 0
        assert all(math.isfinite(v) for v in r["scores"])


def test_ranking_of_plans(net):
    _, bm, _, _ = net
    blocks = {p: probes.plan_blocks(p, bm) for p in
              ("contracting", "expanding", "shallow_to_deep:1", "deep_to_shallow:1", "all")}
    assert blocks["shallow_to_deep:1"] == [1] and blocks["deep_to_shallow:1"] == [9]
    assert blocks["all"] == list(range(1, 10))
    deep = {"fisher": [0.0] * 8 + [1.0]}       # the probe points at the last block
    assert probes.rank_plans("fisher/mean", deep, blocks, {})[0] == "deep_to_shallow:1"
    assert probes.rank_plans("fisher/share", deep, blocks, {})[0] == "all"
    shallow = {"feature": [0.5] + [1.0] * 8}   # block 1's features separate nothing
    assert probes.rank_plans("feature_need/mean", shallow, blocks, {})[0] == "shallow_to_deep:1"
    assert probes.rank_plans("always_contracting", deep, blocks, {})[0] == "contracting"
    assert probes.rank_plans("always_all", deep, blocks, {})[0] == "all"
    assert sorted(probes.rank_plans("random", deep, blocks, {}, seed=3)) == sorted(blocks)
    assert probes.rank_plans("shift/mean", deep, blocks, {}) is None   # shift not run
    assert len(probes.predictors()) == 12 + len(probes.BASELINES)


@pytest.mark.slow
def test_advise_probe_only_cli(tmp_path):
    from keras_unet_ft.cli import main

    out = tmp_path / "advice"
    assert main(["advise", "--probe-only", "--target", "sim_bus", "--profile", "smoke",
                 "--out", str(out), "--set", "data.pretrain_n=16", "--no-cache"]) == 0
    a = json.loads((out / "advice.json").read_text())
    assert a["probe_only"] and a["ranking"] and a["n_probe_images"] <= probes.MAX_IMAGES
    assert set(a["probe_seconds"]) == set(probes.PROBES)
    md = (out / "ADVICE.md").read_text()
    assert "probe only (no training)" in md and a["predictor"] in md
    assert "How far to trust it" in md and "Best partial plan" in md
    assert a["best_partial"] in [r["plan"] for r in a["ranking"]]
