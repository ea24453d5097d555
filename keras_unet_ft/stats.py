"""Paired statistics between fine-tuning plans (scipy.stats).

Two levels of pairing, both reported:

* over folds - the fold means of two plans (n = number of folds);
* over held-out images - per-image scores pooled over all folds (n = number of
  images); every image is held out exactly once, and both plans are evaluated
  on it after training on the same augmented set.

Tests: paired t-test (``ttest_rel``) and Wilcoxon signed-rank (``wilcoxon``).
With few folds the Wilcoxon test cannot reach small p-values (n = 3 folds:
p >= 0.25); the image-level tests are the informative ones there.
"""

from __future__ import annotations

import math
import warnings
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy import stats

from .plans import CURVE_KINDS, Plan, all_layers_plan


def paired_tests(a: Sequence[float], b: Sequence[float]) -> Dict[str, float]:
    """Mean difference (a - b), paired t-test p and Wilcoxon p (NaN when undefined)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.shape} vs {b.shape}")
    out = {"n": int(a.size), "mean_a": float(np.mean(a)) if a.size else math.nan,
           "mean_b": float(np.mean(b)) if b.size else math.nan,
           "mean_diff": float(np.mean(a - b)) if a.size else math.nan,
           "t_p": math.nan, "wilcoxon_p": math.nan}
    d = a - b
    if a.size >= 2 and np.any(d != 0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out["t_p"] = float(stats.ttest_rel(a, b).pvalue)
            try:
                out["wilcoxon_p"] = float(stats.wilcoxon(a, b).pvalue)
            except ValueError:
                pass
    elif a.size >= 2:
        out["t_p"] = out["wilcoxon_p"] = 1.0
    return out


N_BOOTSTRAP = 2000
CI_LEVEL = 0.95


def bootstrap_ci(values: Sequence[float], groups: Optional[Sequence] = None,
                 n_boot: int = N_BOOTSTRAP, level: float = CI_LEVEL, seed: int = 0
                 ) -> Tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (e.g. paired per-image
    differences), resampling with replacement *within* each group (fold, seed), so
    every resample keeps the design's share of each fold.

    Examples:
        >>> lo, hi = bootstrap_ci([0.1, 0.2, 0.3, 0.2, 0.25, 0.15])
        >>> lo < 0.2 < hi
        True
    """
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return (math.nan, math.nan)
    g = np.zeros(v.size, int) if groups is None else np.unique(np.asarray(groups),
                                                               return_inverse=True)[1]
    rng = np.random.default_rng(seed)
    total = np.zeros(n_boot)
    for k in np.unique(g):
        part = v[g == k]
        total += part[rng.integers(0, part.size, (n_boot, part.size))].sum(axis=1)
    means = total / v.size
    alpha = (1 - level) / 2
    return (float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha)))


def holm(pvalues: Sequence[float]) -> List[float]:
    """Holm-Bonferroni adjusted p-values of one family of tests (NaN stays NaN).

    Examples:
        >>> holm([0.01, 0.04, 0.03])
        [0.03, 0.06, 0.06]
    """
    p = np.asarray(pvalues, dtype=float)
    ok = np.flatnonzero(np.isfinite(p))
    out = np.full(p.shape, math.nan)
    m = ok.size
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return [float(round(x, 12)) if np.isfinite(x) else math.nan for x in out]


def ci_verdict(lo: float, hi: float) -> str:
    """``yes`` (A better: the interval of A - B lies above 0), ``no`` (below 0) or
    ``tied`` (it holds 0, [0, 0] included: two plans equal on every image are a tie);
    ``unknown`` without an interval (no image both plans scored).

    Examples:
        >>> [ci_verdict(*b) for b in ((0.01, 0.02), (-0.02, -0.01), (-0.01, 0.01), (0.0, 0.0))]
        ['yes', 'no', 'tied', 'tied']
    """
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "unknown"
    if lo == hi == 0.0:
        return "tied"
    return "yes" if lo > 0 else "no" if hi < 0 else "tied"


#: the plan TUFFC calls "often the worst strategy": fine-tuning only the last block
LAST_BLOCK = "deep_to_shallow:1"


def is_path_block_plan(plan: str) -> bool:
    """A point of Fig. 4's path-scheme curves (``shallow_to_deep:K`` / ``deep_to_shallow:K``)."""
    return plan.startswith(("shallow_to_deep:", "deep_to_shallow:")) and not plan.endswith("@level")


def worst_block_partner(means: Mapping[str, float]) -> Optional[str]:
    """The block plan that "fine-tuning only the last block is the worst block plan" is
    decided against: the lowest other block plan (path scheme) by mean Dice, or the second
    lowest when the last block is itself the lowest. None without the last-block plan or with
    fewer than three block plans that have a mean.

    Examples:
        >>> worst_block_partner({"deep_to_shallow:1": 0.5, "shallow_to_deep:1": 0.6,
        ...                      "deep_to_shallow:2": 0.4})
        'deep_to_shallow:2'
        >>> worst_block_partner({"deep_to_shallow:1": 0.3, "shallow_to_deep:1": 0.6,
        ...                      "deep_to_shallow:2": 0.4})
        'deep_to_shallow:2'
    """
    blocks = [p for p, v in means.items() if is_path_block_plan(p) and np.isfinite(v)]
    if LAST_BLOCK not in blocks or len(blocks) < 3:
        return None
    ranked = sorted(blocks, key=lambda p: (means[p], p))
    return ranked[1] if ranked[0] == LAST_BLOCK else ranked[0]


def comparison_pairs(plans: Sequence[str], units: int = 9,
                     params: Optional[Mapping[str, float]] = None,
                     means: Optional[Mapping[str, float]] = None) -> List[Tuple[str, str, str]]:
    """``(plan_a, plan_b, why)`` pairs present in ``plans``.

    contracting vs expanding; shallow_to_deep:K vs deep_to_shallow:K (the two
    curves of Fig. 4 at the same number of units) and vs deep_to_shallow:(N-K)
    (complementary parts of the network), under both depth schemes; the
    all-layers plan vs scratch (transfer vs random initialisation); every other way to
    fine-tune (``bitfit``, ``llrd``, ``gradual``) vs the block plan nearest to it in
    trainable parameters (``params``) and vs the all-layers plan.

    Args:
        plans: the study's plan strings.
        units: number of blocks of the model (path scheme); the level scheme's count
            is read from the plans.
        params: trainable parameters per plan (for the methods' nearest block plan).
        means: mean Dice per plan: adds the last block against the block plan it is ranked
            against (:func:`worst_block_partner`) when no other pair compares the two.
    """
    have = set(plans)
    parsed = {p: Plan.parse(p) for p in plans}
    pairs = []
    if {"contracting", "expanding"} <= have:
        pairs.append(("contracting", "expanding", "the paper's split"))
    n_level = max((q.k for q in parsed.values()
                   if any(q.curve_k(kind, "level") for kind in CURVE_KINDS)), default=0)
    for scheme, n in (("", units), ("@level", n_level)):
        for k in range(1, n):
            a, b = f"shallow_to_deep:{k}{scheme}", f"deep_to_shallow:{k}{scheme}"
            if {a, b} <= have:
                pairs.append((a, b, "same number of units (Fig. 4)"))
            c = f"deep_to_shallow:{n - k}{scheme}"
            if {a, c} <= have:
                pairs.append((a, c, "complementary parts"))
    full = all_layers_plan(units)
    if {"all", "scratch"} <= have:
        pairs.append(("all", "scratch", "transfer vs random init"))
    elif {full, "scratch"} <= have:
        pairs.append((full, "scratch", "transfer vs random init"))
    everything = "all" if "all" in have else full if full in have else None
    blocks = [p for p, q in parsed.items() if q.is_block_plan]
    for m, q in parsed.items():
        if not q.is_method or q.model is not None:
            continue
        near = None
        if params and blocks and params.get(m):
            near = min(blocks, key=lambda b: (abs(math.log(max(params.get(b) or 1, 1)
                                                           / params[m])), b))
            pairs.append((m, near, "all layers = the nearest block plan in trainable "
                          "parameters" if near == everything else
                          "nearest block plan in trainable parameters"))
        if everything and everything != near:
            pairs.append((m, everything, "another way to fine-tune vs all layers"))
    partner = worst_block_partner(means) if means else None
    if partner and not any({a, b} == {LAST_BLOCK, partner} for a, b, _ in pairs):
        pairs.append((LAST_BLOCK, partner, "is the last block the worst block plan? (TUFFC)"))
    return pairs
