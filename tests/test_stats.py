"""stats: paired tests and the comparisons a report makes, as tables."""

import math

import pytest
from scipy import stats as sps

from keras_unet_ft.stats import comparison_pairs, paired_tests


def test_paired_tests_match_scipy():
    a, b = [0.9, 0.8, 0.85, 0.75], [0.7, 0.6, 0.6, 0.5]
    r = paired_tests(a, b)
    assert r["n"] == 4 and r["mean_diff"] == pytest.approx(0.225)
    assert r["t_p"] == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert r["wilcoxon_p"] == pytest.approx(sps.wilcoxon(a, b).pvalue)


@pytest.mark.parametrize("a, b, t_p", [
    ([0.5, 0.5], [0.5, 0.5], 1.0),      # identical: no difference at all
    ([0.5], [0.4], math.nan),           # one pair: undefined
])
def test_paired_tests_edge_cases(a, b, t_p):
    got = paired_tests(a, b)["t_p"]
    assert (math.isnan(got) and math.isnan(t_p)) or got == t_p


def test_paired_tests_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in length"):
        paired_tests([1, 2], [1])


@pytest.mark.parametrize("plans, units, expected", [
    (["contracting", "expanding"], 9, [("contracting", "expanding", "the paper's split")]),
    (["shallow_to_deep:2", "deep_to_shallow:2", "deep_to_shallow:7"], 9,
     [("shallow_to_deep:2", "deep_to_shallow:2", "same number of units (Fig. 4)"),
      ("shallow_to_deep:2", "deep_to_shallow:7", "complementary parts")]),
    (["shallow_to_deep:2", "deep_to_shallow:5"], 7,          # depth 3: 7 blocks
     [("shallow_to_deep:2", "deep_to_shallow:5", "complementary parts")]),
    (["shallow_to_deep:1@level", "deep_to_shallow:1@level", "deep_to_shallow:4@level",
      "shallow_to_deep:5@level"], 9,
     [("shallow_to_deep:1@level", "deep_to_shallow:1@level", "same number of units (Fig. 4)"),
      ("shallow_to_deep:1@level", "deep_to_shallow:4@level", "complementary parts")]),
    (["shallow_to_deep:7", "scratch"], 7,
     [("shallow_to_deep:7", "scratch", "transfer vs random init")]),
    (["shallow_to_deep:9", "scratch"], 7, []),               # not the all-layers plan at 7
    (["all", "scratch", "xunet/all"], 9, [("all", "scratch", "transfer vs random init")]),
])
def test_comparison_pairs(plans, units, expected):
    assert comparison_pairs(plans, units) == expected


@pytest.mark.parametrize("plans, params, expected", [
    # bitfit (431) is nearest to deep_to_shallow:1 (649) in log ratio, then vs all layers
    (["shallow_to_deep:1", "deep_to_shallow:1", "all", "bitfit"],
     {"shallow_to_deep:1": 188, "deep_to_shallow:1": 649, "all": 121725, "bitfit": 431},
     [("bitfit", "deep_to_shallow:1", "nearest block plan in trainable parameters"),
      ("bitfit", "all", "another way to fine-tune vs all layers")]),
    # llrd trains every layer: its nearest block plan is all layers, named once
    (["contracting", "shallow_to_deep:9", "llrd:0.5"],
     {"contracting": 36940, "shallow_to_deep:9": 121725, "llrd:0.5": 121725},
     [("llrd:0.5", "shallow_to_deep:9",
       "all layers = the nearest block plan in trainable parameters")]),
    # no parameter counts: only the all-layers comparison
    (["all", "gradual:top"], None,
     [("gradual:top", "all", "another way to fine-tune vs all layers")]),
])
def test_method_plans_are_compared_with_block_plans(plans, params, expected):
    got = [p for p in comparison_pairs(plans, 9, params)
           if p[0] in ("bitfit", "llrd:0.5", "gradual:top")]
    assert got == expected
