"""stats: paired tests and the comparisons a report makes, as tables."""

import math

import numpy as np

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


def test_bootstrap_interval_covers_a_known_difference():
    """Per-image differences drawn around a true mean of 0.05 in 3 folds: the 95 %
    interval holds 0.05 in about 95 % of repeated experiments, and excludes 0."""
    from keras_unet_ft.stats import bootstrap_ci

    rng = np.random.default_rng(0)
    covered, excluded_zero = 0, 0
    for rep in range(200):
        d = rng.normal(0.05, 0.1, 150)
        lo, hi = bootstrap_ci(d, np.repeat([0, 1, 2], 50), n_boot=500, seed=rep)
        covered += lo <= 0.05 <= hi
        excluded_zero += lo > 0
    assert 0.88 <= covered / 200 <= 0.99, covered
    assert excluded_zero / 200 > 0.9


@pytest.mark.parametrize("p, expected", [
    ([0.01, 0.04, 0.03], [0.03, 0.06, 0.06]),
    ([0.001, 0.5], [0.002, 0.5]),
    ([0.02, 0.02, 0.02], [0.06, 0.06, 0.06]),
    ([0.04, 0.01, math.nan], [0.04, 0.02, math.nan]),
    ([0.6, 0.9], [1.0, 1.0]),   # capped at 1, never below an earlier (smaller) p's
])
def test_holm_adjustment(p, expected):
    from keras_unet_ft.stats import holm

    got = holm(p)
    assert all((math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)
               for a, b in zip(got, expected)), got


@pytest.mark.parametrize("lo, hi, expected", [
    (0.01, 0.05, "yes"), (-0.05, -0.01, "no"), (-0.01, 0.02, "tied"),
    (math.nan, 0.1, "unknown"),
])
def test_ci_verdict(lo, hi, expected):
    from keras_unet_ft.stats import ci_verdict

    assert ci_verdict(lo, hi) == expected
