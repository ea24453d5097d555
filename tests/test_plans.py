import re

import numpy as np
import pytest

import keras

from keras_unet_ft.blocks import BlockMap
from keras_unet_ft.cli import main
from keras_unet_ft.model import build_unet, build_xunet
from keras_unet_ft.plans import Plan, group_plans, plan_set
from keras_unet_ft.trainable import apply_plan, plan_matrix


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
    ("llrd", "expected llrd:GAMMA"),
    ("llrd:0", "0 < GAMMA <= 1"),
    ("llrd:1.5", "0 < GAMMA <= 1"),
    ("gradual", "needs a direction"),
    ("gradual:sideways", "needs a direction in"),
    ("bitfit:2", "takes no argument"),
    ("llrd:0.5>all", "a stage is a plain plan"),
    ("lora", "expected lora:R"),
    ("lora:0", "positive integer rank, e.g. lora:4; got 0"),
    ("lora:2.5", "expected lora:R"),
    ("ssf:2", "takes no argument"),
    ("ssf>all", "a stage is a plain plan"),
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


def test_plan_sets():
    p = plan_set("paper")
    assert len(p) == 20 and p[:2] == ["contracting", "expanding"]
    assert len(plan_set("tuffc")) == 30
    assert plan_set("all, contracting") == ["all", "contracting"]


@pytest.mark.parametrize("text, model, steps, baseline", [
    ("xunet/all", "xunet", ["all"], False),
    ("vunet/expanding:blocks>all", "vunet", ["expanding:blocks", "all"], False),
    ("expanding:blocks>all", None, ["expanding:blocks", "all"], False),
    ("xunet/none", "xunet", ["none"], True),
    ("scratch", None, ["scratch"], True),
    ("layers:^enc>x", None, ["layers:^enc>x"], False),  # a regex may hold '>'
])
def test_model_prefix_stages_and_baselines_parse_and_print(text, model, steps, baseline):
    p = Plan.parse(text)
    assert p.model == model and [str(s) for s in p.steps] == steps
    assert p.is_baseline == baseline and str(p) == text


@pytest.mark.parametrize("text, message", [
    ("all>", "bad staged plan"),
    ("none>all", "a stage is a plain plan"),
    ("resnet/all", "unknown plan 'resnet/all'"),
])
def test_bad_grammar(text, message):
    with pytest.raises(ValueError, match=message):
        Plan.parse(text)


def test_staged_plan_trains_the_union_of_its_stages(small):
    _, bm = small
    p = Plan.parse("expanding:blocks>shallow_to_deep:1")
    assert p.trainable_layers(bm) == _blocks(bm, [1, 6, 7, 8, 9])
    with pytest.raises(ValueError, match="one stage at a time"):
        apply_plan(small[0], p, compile=False)


def test_plan_sets_follow_the_model_depth():
    assert plan_set("paper", {"path": 7, "level": 4})[-1] == "deep_to_shallow:7"
    assert plan_set("smoke")[2:5] == ["shallow_to_deep:1", "shallow_to_deep:5",
                                      "shallow_to_deep:9"]
    assert plan_set("cheng") == ["xunet/all", "xunet/freeze_bottleneck",
                                 "vunet/expanding:blocks>all"]
    with pytest.raises(ValueError, match="unknown plan 'sidways'"):
        plan_set("all,sidways")
    with pytest.raises(ValueError, match="no plans"):
        plan_set(" , ")


def test_depth_3_study_grid_has_7_block_plans():
    from conftest import tiny_config
    from keras_unet_ft.study import list_runs

    cfg = tiny_config(**{"model.depth": "3", "study.plans": "paper", "data.targets": "sim_bus"})
    runs, plans, maps = list_runs(cfg, cfg.data.targets)
    assert maps["unet"].units("path") == 7
    assert "shallow_to_deep:7" in plans and "shallow_to_deep:9" not in plans
    fold0 = [r for r in runs if r.fold == 0]
    full = next(r for r in fold0 if r.plan == "shallow_to_deep:7")
    assert full.aliases == ["deep_to_shallow:7"]


def test_group_plans_trains_equal_layer_sets_once(small):
    from keras_unet_ft.plans import group_plans

    _, bm = small
    groups = group_plans(["all", "shallow_to_deep:9", "deep_to_shallow:9", "none", "scratch",
                          "shallow_to_deep:5@level"], {"unet": bm}, "unet")
    assert groups == [("all", ["shallow_to_deep:9", "deep_to_shallow:9",
                               "shallow_to_deep:5@level"], "unet"),
                      ("none", [], "unet"), ("scratch", [], "unet")]


def test_plan_matrix_rows(small):

    _, bm = small
    rows = {r.plan: r for r in plan_matrix(["contracting", "deep_to_shallow:2@level", "none"], bm)}
    assert rows["contracting"].cells == ["X"] * 4 + ["x"] + ["."] * 4  # bottleneck conv1 only
    assert rows["deep_to_shallow:2@level"].cells == ["."] * 3 + ["X"] * 3 + ["."] * 3
    assert rows["none"].trainable_params == 0 and rows["none"].trainable_layers == []
    assert rows["contracting"].trainable_layers[0] == "enc1_conv1"


@pytest.mark.parametrize("model, expected", [
    ("unet", "contracting"), ("xunet", "freeze_bottleneck"), ("vunet", "expanding:blocks"),
])
def test_cli_plans_matrix_for_each_network(capsys, model, expected):
    assert main(["plans", "--matrix", "--model", model, "--size", "64", "--base-filters", "4"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith(expected + " "))
    assert len(line.split()) == 1 + 9 + 2 and "columns: block index" in out


def test_cli_matrix_of_a_plan_set_leaves_out_other_models(capsys):
    assert main(["plans", "--matrix", "--model", "xunet", "--plans", "cheng", "--size", "64",
                 "--base-filters", "4"]) == 0
    out = capsys.readouterr().out
    assert "xunet/freeze_bottleneck" not in out and "\nfreeze_bottleneck " in out
    assert "left out, plans for another model: vunet/expanding:blocks>all" in out


@pytest.mark.slow
def test_docs_plans_md_is_current():
    """docs/plans.md is generated (`unet-ft plans --write-doc docs/plans.md`)."""
    import pathlib

    from keras_unet_ft.cli import plans_doc

    path = pathlib.Path(__file__).parents[1] / "docs" / "plans.md"
    assert path.read_text() == plans_doc(), (
        "docs/plans.md is stale: run `unet-ft plans --write-doc docs/plans.md`")


@pytest.mark.parametrize("text", ["bitfit", "llrd:0.5", "llrd:1", "gradual:top",
                                  "gradual:bottom", "xunet/bitfit", "bitfit>all"])
def test_method_plans_print_and_parse_back(text):
    assert str(Plan.parse(text)) == text


def test_method_plans_resolve(small):
    model, bm = small
    every = frozenset(n for b in bm.blocks for n in b.weighted_layers)
    assert _trainable(bm, "llrd:0.5") == every == _trainable(bm, "gradual:top")
    scales = Plan.parse("llrd:0.5").learning_rate_scales(bm)
    assert scales["head_out"] == 1.0 and scales["enc1_conv1"] == 0.5 ** 8
    assert Plan.parse("all").learning_rate_scales(bm) is None
    top, bottom = Plan.parse("gradual:top"), Plan.parse("gradual:bottom")
    assert top.epoch_layers(bm, 2) == _blocks(bm, [8, 9])
    assert bottom.epoch_layers(bm, 1) == _blocks(bm, [1])
    assert top.epoch_layers(bm, 20) == every
    rows = {r.plan: r for r in plan_matrix(["bitfit", "all"], bm)}
    biases = sum(int(w.shape[0]) for w in model.weights if w.path.endswith("/bias"))
    assert rows["bitfit"].trainable_params == biases and set(rows["bitfit"].cells) == {"b"}
    with pytest.raises(ValueError, match="trainer=selective"):
        apply_plan(model, "bitfit", compile=False)


def test_method_plans_are_never_merged_with_all(small):
    _, bm = small
    groups = group_plans(["all", "llrd:0.5", "gradual:top", "shallow_to_deep:9"],
                         {"unet": bm}, "unet")
    assert [(g[0], g[1]) for g in groups] == [("all", ["shallow_to_deep:9"]),
                                             ("llrd:0.5", []), ("gradual:top", [])]


@pytest.mark.parametrize("given, expected", [
    ("shallow_to_deep:1,3,5", ["shallow_to_deep:1", "shallow_to_deep:3", "shallow_to_deep:5"]),
    ("deep_to_shallow:2@level,4@level,all",
     ["deep_to_shallow:2@level", "deep_to_shallow:4@level", "all"]),
    ("xunet/only_block:1,2", ["xunet/only_block:1", "xunet/only_block:2"]),
])
def test_comma_shorthand_for_unit_plans(given, expected):
    from keras_unet_ft.plans import plan_set

    assert plan_set(given) == expected


@pytest.mark.parametrize("given, message", [
    ("papr", "did you mean paper?"),
    ("contractng", "did you mean contracting?"),
    ("sideways", "plan sets: paper, tuffc, faithful, smoke, cheng, methods, shift"),
    ("contracting,3", "unknown plan '3'"),
])
def test_unknown_plans_name_plan_sets_and_the_closest(given, message):
    from keras_unet_ft.plans import plan_set

    with pytest.raises(ValueError, match=re.escape(message)):
        plan_set(given)


#: one example per plan kind: a new row of plans.KIND_SPECS needs a row here
KIND_EXAMPLES = {
    "all": "all", "none": "none", "scratch": "scratch", "freeze_bottleneck": "freeze_bottleneck",
    "contracting": "contracting:blocks", "expanding": "expanding",
    "shallow_to_deep": "shallow_to_deep:3@level", "deep_to_shallow": "deep_to_shallow:2",
    "only_block": "only_block:5", "layers": "layers:^enc", "bitfit": "bitfit",
    "llrd": "llrd:0.5", "gradual": "gradual:top", "staged": "expanding:blocks>bitfit",
    "reinit": "reinit:blocks-6..9", "autorgn": "autorgn", "ssf": "ssf", "lora": "lora:4",
}


def test_every_plan_kind_has_an_example_row():
    from keras_unet_ft.plans import KIND_SPECS

    assert set(KIND_EXAMPLES) == set(KIND_SPECS)


@pytest.mark.parametrize("kind, text", KIND_EXAMPLES.items())
def test_every_plan_kind_parses_prints_and_resolves(kind, text, small):
    _, bm = small
    p = Plan.parse(text)
    assert p.kind == kind and str(p) == text and Plan.parse(str(p)) == p
    layers = p.trainable_layers(bm)
    assert layers <= {n for b in bm.blocks for n in b.weighted_layers}
    assert bool(layers) == p.trains
    if "keras" not in p.trainers:  # what Keras' flags cannot express names the trainer to use
        with pytest.raises(ValueError, match="trainer=selective"):
            apply_plan(small[0], p.steps[0] if len(p.steps) == 1 else p.steps[-1],
                       compile=False)


@pytest.mark.parametrize("text, method, block, pretrained, trainers", [
    ("contracting", False, True, True, ("selective", "masked", "keras", "multiworker")),
    ("bitfit", True, False, True, ("selective", "masked")),
    ("expanding:blocks>bitfit", False, False, True, ("selective", "masked")),
    ("scratch", False, False, False, ("selective", "masked", "keras", "multiworker")),
    ("xunet/all", False, False, True, ("selective", "masked", "keras", "multiworker")),
])
def test_what_a_plan_says_of_itself(text, method, block, pretrained, trainers):
    p = Plan.parse(text)
    assert ((p.is_method, p.is_block_plan, p.from_pretrained, p.trainers)
            == (method, block, pretrained, trainers))
