import numpy as np
import pytest

import keras

from keras_unet_ft.blocks import BlockMap
from keras_unet_ft.cli import main
from keras_unet_ft.model import build_unet, build_xunet
from keras_unet_ft.plans import Plan, apply_plan


@pytest.fixture(scope="module")
def small():
    model = build_unet((32, 32, 1), base_filters=4)
    return model, BlockMap(model)


def test_block_map_of_paper_model_matches_paper_shares():
    bm = BlockMap(build_unet())
    shares = [round(r["share_percent"], 2) for r in bm.table()]
    assert shares == [0.12, 0.71, 2.85, 11.41, 45.62, 29.57, 7.39, 1.85, 0.47]
    assert [b.part for b in bm.blocks] == ["contracting"] * 4 + ["bottleneck"] + ["expanding"] * 4
    assert [b.level for b in bm.blocks] == [1, 2, 3, 4, 5, 4, 3, 2, 1]
    assert "head_out" in bm.blocks[-1].layers and "dec4_concat" in bm.blocks[5].layers
    assert sum(b.params for b in bm.blocks) == 31_031_685


def test_paper_split_parameter_counts():
    m = build_unet()
    assert apply_plan(m, "contracting", compile=False).trainable_params == 9_403_840
    assert apply_plan(m, "expanding", compile=False).trainable_params == 21_627_845
    # Cheng & Lam: the two bottleneck convs frozen
    assert apply_plan(build_xunet(), "freeze_bottleneck", compile=False).frozen_params == 14_157_824


def _trainable(bm, text):
    return Plan.parse(text).trainable_layers(bm)


def _blocks(bm, idx):
    return {n for i in idx for n in bm.blocks[i - 1].weighted_layers}


@pytest.mark.parametrize("text, blocks", [
    ("all", range(1, 10)),
    ("none", []),
    ("shallow_to_deep:1", [1]),
    ("shallow_to_deep:3", [1, 2, 3]),
    ("deep_to_shallow:1", [9]),
    ("deep_to_shallow:4", [6, 7, 8, 9]),
    ("only_block:5", [5]),
    ("shallow_to_deep:1@level", [1, 9]),
    ("shallow_to_deep:2@level", [1, 2, 8, 9]),
    ("deep_to_shallow:1@level", [5]),
    ("deep_to_shallow:2@level", [4, 5, 6]),
    ("only_block:2@level", [2, 8]),
    ("contracting:blocks", [1, 2, 3, 4, 5]),
    ("expanding:blocks", [6, 7, 8, 9]),
    ("freeze_bottleneck", [1, 2, 3, 4, 6, 7, 8, 9]),
])
def test_plan_kinds_under_both_schemes(small, text, blocks):
    _, bm = small
    assert _trainable(bm, text) == _blocks(bm, blocks)
    assert str(Plan.parse(text)) == text


def test_paper_split_puts_second_bottleneck_conv_in_expanding(small):
    _, bm = small
    c, e = _trainable(bm, "contracting"), _trainable(bm, "expanding")
    assert "bottleneck_conv1" in c and "bottleneck_conv2" in e
    assert not c & e and c | e == _trainable(bm, "all")


def test_full_plans_coincide(small):
    _, bm = small
    full = _trainable(bm, "all")
    assert _trainable(bm, "shallow_to_deep:9") == _trainable(bm, "deep_to_shallow:9") == full
    assert _trainable(bm, "shallow_to_deep:5@level") == full


def test_layers_regex_plan(small):
    _, bm = small
    assert _trainable(bm, "layers:^enc1_") == {"enc1_conv1", "enc1_conv2"}
    with pytest.raises(ValueError, match="matches no weighted layer"):
        _trainable(bm, "layers:^nothing")


@pytest.mark.parametrize("text, message", [
    ("sideways", "unknown plan 'sideways'"),
    ("shallow_to_deep", "expected shallow_to_deep:K"),
    ("shallow_to_deep:x", "bad plan 'shallow_to_deep:x'"),
    ("shallow_to_deep:0", "positive integer k, got 0"),
    ("only_block:2@depth", "unknown depth scheme 'depth'"),
    ("all:3", "takes no argument"),
    ("contracting:halves", "unknown split 'halves'"),
    ("layers:(", "bad regular expression"),
    ("", "non-empty string"),
])
def test_bad_plan_strings(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        Plan.parse(text)


def test_k_beyond_units_is_an_error(small):
    _, bm = small
    with pytest.raises(ValueError, match=r"valid k: 1..5"):
        _trainable(bm, "shallow_to_deep:6@level")


def test_training_step_changes_only_trainable_weights():
    keras.utils.set_random_seed(0)
    model = build_unet((32, 32, 1), base_filters=4, dropout=0.0)
    report = apply_plan(model, "shallow_to_deep:2", optimizer=keras.optimizers.Adam(1e-2))
    before = {l.name: [w.copy() for w in l.get_weights()] for l in model.layers if l.weights}
    x = np.random.default_rng(0).random((4, 32, 32, 1), dtype=np.float32)
    y = (x > 0.5).astype("float32")
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    for name, ws in before.items():
        after = model.get_layer(name).get_weights()
        same = all(np.array_equal(a, b) for a, b in zip(ws, after))
        if name in report.trainable_layers:
            assert not same, f"{name} should have changed"
        else:
            assert same, f"{name} is frozen but changed"
    assert set(report.trainable_layers) == {"enc1_conv1", "enc1_conv2", "enc2_conv1", "enc2_conv2"}


def test_cli_plans_prints_table_and_plan(capsys):
    assert main(["plans", "--plan", "contracting"]) == 0
    out = capsys.readouterr().out
    assert "31,031,685" in out and "45.62%" in out and "0.47%" in out
    assert "9,403,840 trainable" in out
    assert main(["plans", "--size", "100"]) == 2
    assert "divisible" in capsys.readouterr().err
