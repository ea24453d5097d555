"""Tidy tables from a results folder's files: results.csv, summary.csv, stats.csv, sizes*.csv.

Reads only the files the study wrote (``runs.json``, each run's ``summary.json``
and ``per_image.csv``) through :mod:`keras_unet_ft.layout`; builds no model and
imports neither Keras nor TensorFlow, so ``unet-ft report`` is cheap.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import logging
import math
import pathlib
from collections.abc import Mapping
from io import StringIO
from typing import Dict, Iterator, List, Optional

import numpy as np

from .io import read_csv, read_json, write_csv
from .layout import (BUDGETS, CONFIG, NESTED, NESTED_SUMMARY, RESULTS, SIZES, SIZES_SUMMARY, STATS,
                     SUMMARY, PER_IMAGE, Manifest, read_manifest, read_run_summary)
from .metrics import METRICS
from .plans import BASELINES
from .stats import bootstrap_ci, ci_verdict, comparison_pairs, holm, paired_tests

log = logging.getLogger("keras_unet_ft")
RESULT_FIELDS = (["target", "modality", "model", "plan", "trained_as", "repeat", "fold",
                  "status"]
                 + [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
                 + ["n_train", "n_test", "n_empty", "empty_predicted_empty",
                    "trainable_params", "frozen_params", "train_seconds",
                    "seconds_per_epoch", "images_per_second", "epochs", "seed", "precision",
                    "trainer", "backend", "peak_gpu_memory_gib", "process_peak_gpu_memory_gib",
                    "encoder_weights", "reason",
                    "run_dir"])
SIZE_FIELDS = (["target", "model", "plan", "n_originals", "augment", "fold", "status"]
               + [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
               + ["n_train", "n_test", "epochs", "train_seconds", "reason", "run_dir"])


def collect(out, manifest: Optional[Manifest] = None, sizes: bool = False,
            inner: bool = False) -> List[dict]:
    """One row per (target, plan, repeat, fold) of the study, aliases included.

    With ``sizes=True``: the runs of the dataset-size study instead, one row per
    (target, plan, training images, augmentation, fold), skipped ones included.
    With ``inner=True``: the nested selection's inner runs (scored on the inner
    validation images of each outer training fold). Runs not finished yet have no row.
    """
    out = pathlib.Path(out)
    manifest = manifest or read_manifest(out)
    targets = manifest.by_spec()
    modality = {spec: t.modality for spec, t in targets.items()}
    slug = {spec: t.slug for spec, t in targets.items()}
    rows = []
    for r in manifest.runs:
        if (r.n_train is not None) != sizes or bool(r.inner) != inner:
            continue
        s = read_run_summary(r.dir(out))
        if s is None:
            continue
        for plan in [r.plan] + list(r.aliases):
            row = {k: s.get(k, "") for k in (SIZE_FIELDS if sizes else RESULT_FIELDS)}
            row.update(target=slug[r.target], modality=modality[r.target],
                       model=r.model, plan=plan, trained_as=r.plan, fold=r.fold,
                       repeat=r.repeat,
                       status=s.get("status"),
                       reason=s.get("reason", ""),
                       run_dir=str(r.rel_dir()))
            if sizes:
                row.update(n_originals=r.n_train, augment=int(r.augment))
                row.pop("modality", None)
                row.pop("trained_as", None)
                row.pop("repeat", None)
            rows.append(row)
    return rows


def summarize_sizes(rows: List[dict]) -> List[dict]:
    """Mean and std over folds per (target, plan, training images, augmentation)."""
    groups: Dict[tuple, List[dict]] = {}
    for r in rows:
        key = (r["target"], r["plan"], int(r["n_originals"]), int(r["augment"]))
        groups.setdefault(key, []).append(r)
    out = []
    for (target, plan, n, aug), rs in sorted(groups.items()):
        ok = [r for r in rs if r["status"] == "ok"]
        row = {"target": target, "plan": plan, "n_originals": n, "augment": aug,
               "folds_ok": len(ok), "folds_skipped": sum(r["status"] == "skipped" for r in rs),
               "folds_failed": sum(r["status"] == "failed" for r in rs)}
        for m in METRICS:
            v = [_num(r.get(f"{m}_mean")) for r in ok]
            v = [x for x in v if not math.isnan(x)]   # runs of versions without this metric
            row[f"{m}_mean"] = float(np.mean(v)) if v else math.nan
            row[f"{m}_std"] = float(np.std(v)) if v else math.nan
        out.append(row)
    return out


def summarize(rows: List[dict]) -> List[dict]:
    """Mean and std over folds of the fold means, per target and plan (ok runs only)."""
    groups: Dict[tuple, List[dict]] = {}
    for r in rows:
        groups.setdefault((r["target"], r["plan"]), []).append(r)
    out = []
    for (target, plan), rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok"]
        row = {"target": target, "modality": rs[0]["modality"], "plan": plan,
               "trained_as": rs[0]["trained_as"], "folds_ok": len(ok), "folds_failed": len(rs) - len(ok)}
        for m in METRICS:
            v = [_num(r.get(f"{m}_mean")) for r in ok]
            v = [x for x in v if not math.isnan(x)]   # runs of versions without this metric
            row[f"{m}_mean"] = float(np.mean(v)) if v else math.nan
            row[f"{m}_std"] = float(np.std(v)) if v else math.nan
        for k in ("trainable_params",):
            row[k] = int(float(ok[0][k])) if ok else ""
        n_empty = [int(float(r["n_empty"])) for r in ok if r.get("n_empty") not in ("", None)]
        row["n_empty"] = sum(n_empty) if n_empty else ""
        pe = [(float(r["empty_predicted_empty"]), int(float(r["n_empty"]))) for r in ok
              if r.get("n_empty") not in ("", None) and int(float(r["n_empty"])) > 0]
        row["empty_predicted_empty"] = (sum(v * n for v, n in pe) / sum(n for _, n in pe)
                                        if pe else "")
        for k in ("train_seconds", "seconds_per_epoch"):
            v = [float(r[k]) for r in ok]
            row[k] = float(np.mean(v)) if v else math.nan
        # the steady state (each run's first epoch, which may hold a compilation, left out)
        ips = [(_num(r.get("images_per_second")), _num(r.get("n_train"))) for r in ok]
        ips = [(x, n) for x, n in ips if x > 0 and n > 0]
        row["images_per_second"] = float(np.median([x for x, _ in ips])) if ips else math.nan
        row["steady_seconds_per_epoch"] = (float(np.median([n / x for x, n in ips])) if ips
                                           else math.nan)
        # timing noise: how far apart the runs of this plan are (slowest / fastest run)
        row["seconds_per_epoch_spread"] = _spread(_num(r.get("seconds_per_epoch")) for r in ok)
        row["steady_seconds_per_epoch_spread"] = _spread(n / x for x, n in ips)
        out.append(row)
    return out


def add_intervals(out, summary: List[dict], rows: List[dict], metric: str = "dice"
                  ) -> List[dict]:
    """Each summary row gets the mean of ``metric`` over all held-out images of its ok
    runs and its 95 % bootstrap interval (images resampled within folds and repeats):
    ``dice_images_mean``, ``dice_ci_low``, ``dice_ci_high``."""
    for srow in summary:
        values, folds = [], []
        for r in rows:
            if (r["target"], r["plan"], r["status"]) == (srow["target"], srow["plan"], "ok"):
                v = [x[metric] for x in per_image(out, r).values()]
                values += v
                folds += [f"{r.get('repeat', 0)}/{r['fold']}"] * len(v)
        values = np.asarray(values, float)
        keep = np.isfinite(values)
        lo, hi = bootstrap_ci(values[keep], np.asarray(folds)[keep]) if keep.any() else (
            math.nan, math.nan)
        srow[f"{metric}_images_mean"] = float(values[keep].mean()) if keep.any() else math.nan
        srow[f"{metric}_ci_low"], srow[f"{metric}_ci_high"] = lo, hi
    return summary


def per_image(out, row: dict, with_empty: bool = False) -> Dict[str, dict]:
    """``{image id: {metric: value}}`` of a results row's run: the images with an object
    (whose mask is not empty), or every image with ``with_empty``."""
    path = pathlib.Path(out) / row["run_dir"] / PER_IMAGE
    return {r["id"]: {m: _num(r.get(m)) for m in METRICS} for r in read_csv(path)
            if with_empty or r.get("empty_mask", "0") in ("0", "")}


def _spread(seconds) -> float:
    """Slowest / fastest of the runs' seconds per epoch (1.0: equal); NaN with fewer than two
    timed runs (the spread is not known)."""
    v = [x for x in seconds if x > 0 and math.isfinite(x)]
    return max(v) / min(v) if len(v) >= 2 else math.nan


def _mean_of(values) -> float:
    """The mean of the finite values (NaN without any), as :func:`summarize` takes it."""
    v = [x for x in values if not math.isnan(x)]
    return float(np.mean(v)) if v else math.nan


def _num(v) -> float:
    """A number from a CSV cell; NaN when empty or absent (an older run's missing metric)."""
    return float(v) if v not in ("", None) else math.nan


def status_counts(out, manifest: Optional[Manifest] = None) -> Dict[str, int]:
    """How many trained runs of the grid (dataset-size runs included) have each status;
    ``missing`` counts the runs without a result yet."""
    manifest = manifest or read_manifest(out)
    counts: Dict[str, int] = {}
    for r in manifest.runs:
        s = read_run_summary(r.dir(out))
        status = s["status"] if s is not None else "missing"
        counts[status] = counts.get(status, 0) + 1
    return counts


def paired_stats(out, rows: List[dict], metric: str = "dice", units: int = 9) -> List[dict]:
    """Paired tests between plans, over folds (every repeat's folds) and over held-out images.

    Image-level pairs are (repeat, image): the 95 % interval of the mean difference
    resamples them within each (repeat, fold); the image-level t and Wilcoxon tests use
    each image's difference averaged over repeats (one value per image, independent).
    """
    by: Dict[tuple, Dict[tuple, dict]] = {}
    for r in rows:
        if r["status"] == "ok":
            unit = (int(r.get("repeat") or 0), int(r["fold"]))
            by.setdefault((r["target"], r["plan"]), {})[unit] = r
    result = []
    for target in dict.fromkeys(r["target"] for r in rows):
        plans = [p for (t, p) in by if t == target]
        params = {p: float(next(iter(by[(target, p)].values())).get("trainable_params") or 0)
                  for p in plans}
        means = {p: _mean_of(_num(r.get(f"{metric}_mean")) for r in by[(target, p)].values())
                 for p in plans}   # as summary.csv's (the ranking REPORT.md's findings use)
        for a, b, why in comparison_pairs(plans, units, params, means):
            ra, rb = by[(target, a)], by[(target, b)]
            common = sorted(set(ra) & set(rb))
            f = paired_tests([float(ra[u][f"{metric}_mean"]) for u in common],
                             [float(rb[u][f"{metric}_mean"]) for u in common])
            xa, xb, group, per = [], [], [], {}
            for u in common:
                ia, ib = per_image(out, ra[u]), per_image(out, rb[u])
                for i in sorted(set(ia) & set(ib)):
                    xa.append(ia[i][metric])
                    xb.append(ib[i][metric])
                    group.append(f"{u[0]}/{u[1]}")
                    per.setdefault(i, []).append((ia[i][metric], ib[i][metric]))
            im = paired_tests([np.mean([v[0] for v in per[i]]) for i in per],
                              [np.mean([v[1] for v in per[i]]) for i in per])
            lo, hi = bootstrap_ci(np.subtract(xa, xb), group)
            result.append({
                "target": target, "metric": metric, "plan_a": a, "plan_b": b, "why": why,
                "mean_a": float(np.mean(xa)) if xa else math.nan,
                "mean_b": float(np.mean(xb)) if xb else math.nan,
                "diff": float(np.mean(np.subtract(xa, xb))) if xa else math.nan,
                "ci_low": lo, "ci_high": hi, "verdict": ci_verdict(lo, hi),
                "folds_n": f["n"], "folds_t_p": f["t_p"], "folds_wilcoxon_p": f["wilcoxon_p"],
                "images_n": im["n"], "images_t_p": im["t_p"],
                "images_wilcoxon_p": im["wilcoxon_p"],
            })
    # one family of comparisons per target: Holm-corrected image-level Wilcoxon p-values
    for target in dict.fromkeys(r["target"] for r in result):
        fam = [r for r in result if r["target"] == target]
        for r, q in zip(fam, holm([r["images_wilcoxon_p"] for r in fam])):
            r["images_wilcoxon_p_holm"] = q
    return result


def epoch_seconds_key(rows: List[dict]) -> str:
    """The seconds-per-epoch column that REPORT.md's table, its speed finding and
    ``training_time.png`` all show for these summary rows: ``steady_seconds_per_epoch`` (the
    median epoch after the first, which holds tracing / compiling) where every row has it,
    else ``seconds_per_epoch`` (the mean epoch)."""
    rows = [r for r in rows if r["plan"].split("/")[-1] != "none"]
    steady = bool(rows) and all(_num(r.get("steady_seconds_per_epoch")) > 0 for r in rows)
    return "steady_seconds_per_epoch" if steady else "seconds_per_epoch"


def _image_scores(out, rows: List[dict], target: str, plan: str, metric: str) -> Dict[tuple, float]:
    """``{(repeat/fold, image id): score}`` over the ok runs of ``plan`` on ``target``."""
    scores = {}
    for r in rows:
        if (r["target"], r["plan"], r["status"]) == (target, plan, "ok"):
            unit = f"{r.get('repeat') or 0}/{r['fold']}"
            for i, m in per_image(out, r).items():
                if np.isfinite(m[metric]):
                    scores[(unit, i)] = m[metric]
    return scores


def mark_tied_best(out, summary: List[dict], rows: List[dict], metric: str = "dice"
                   ) -> List[dict]:
    """Per target, the plan with the highest image mean (baselines excluded) gets
    ``best = 1``; every plan (baselines included) gets the paired difference *best − plan*
    over the held-out images both scored, with its 95 % bootstrap interval (images resampled
    within folds and repeats): ``best_minus``, ``best_minus_ci_low``, ``best_minus_ci_high``.
    A candidate whose interval holds 0 (or lies below it) is not shown to be worse than the
    best: ``tied_best = 1`` (the best included). The paired interval is the one stats.csv
    uses; two plans' own intervals can overlap while their paired difference excludes 0.
    """
    for target in dict.fromkeys(r["target"] for r in summary):
        rs = [r for r in summary if r["target"] == target]
        cand = [r for r in rs if r["plan"].split("/")[-1] not in BASELINES
                and np.isfinite(_num(r.get(f"{metric}_images_mean")))]
        best = max(cand, key=lambda r: _num(r[f"{metric}_images_mean"]), default=None)
        ref = _image_scores(out, rows, target, best["plan"], metric) if best else {}
        for r in rs:
            r["best"] = int(r is best)
            lo = hi = diff = math.nan
            if best is not None and r is not best:
                diff, lo, hi = _paired(ref, _image_scores(out, rows, target, r["plan"], metric))
            elif r is best:
                lo = hi = diff = 0.0
            r[f"best_minus_{metric}"] = diff
            r[f"best_minus_{metric}_ci_low"], r[f"best_minus_{metric}_ci_high"] = lo, hi
            r["tied_best"] = int(r in cand and np.isfinite(lo) and lo <= 0.0)
    return summary


#: REPORT.md's parameter budgets: the share of the network's parameters a plan may train
PARAMETER_BUDGETS = (0.01, 0.10, 1.0)


def _paired(ref: dict, other: dict):
    """``(mean of ref − other, low, high)`` over the held-out images both plans scored
    (per-image scores keyed by (fold or repeat, image)); NaNs when they share none."""
    keys = sorted(set(ref) & set(other))
    if not keys:
        return math.nan, math.nan, math.nan
    d = np.array([ref[k] - other[k] for k in keys])
    lo, hi = bootstrap_ci(d, [k[0] for k in keys])
    return float(d.mean()), lo, hi


def budget_table(out, summary: List[dict], rows: List[dict], metric: str = "dice",
                 budgets=PARAMETER_BUDGETS) -> List[dict]:
    """Per target and parameter budget (a share of the network's parameters): the plan with
    the highest image mean among the plans that train at most that share (baselines left
    out), and the plans within the budget not shown worse than it (the paired interval of
    best − plan holds 0): one row each, ``budgets.csv``."""
    total = {}
    for r in rows:
        if r["status"] == "ok" and r.get("trainable_params") not in ("", None):
            total[(r["target"], r["plan"])] = (_num(r["trainable_params"])
                                               + _num(r.get("frozen_params")))
    out_rows = []
    cache: Dict[tuple, dict] = {}

    def scores(target, plan):   # each plan's per-image scores, read once for every budget
        if (target, plan) not in cache:
            cache[(target, plan)] = _image_scores(out, rows, target, plan, metric)
        return cache[(target, plan)]

    for target in dict.fromkeys(r["target"] for r in summary):
        cand = [r for r in summary if r["target"] == target
                and r["plan"].split("/")[-1] not in BASELINES
                and np.isfinite(_num(r.get(f"{metric}_images_mean")))
                and total.get((target, r["plan"]))]
        for budget in budgets:
            within = [r for r in cand
                      if _num(r["trainable_params"]) <= budget * total[(target, r["plan"])]]
            best = max(within, key=lambda r: _num(r[f"{metric}_images_mean"]), default=None)
            if best is None:
                out_rows.append({"target": target, "budget_percent": 100 * budget,
                                 "plans": 0, "best": "", "tied": ""})
                continue
            tied = [r["plan"] for r in within if r is not best
                    and _paired(scores(target, best["plan"]), scores(target, r["plan"]))[1]
                    <= 0.0]
            out_rows.append({
                "target": target, "budget_percent": 100 * budget, "plans": len(within),
                "best": best["plan"], "trainable_params": best["trainable_params"],
                f"{metric}_images_mean": best[f"{metric}_images_mean"],
                f"{metric}_ci_low": best.get(f"{metric}_ci_low"),
                f"{metric}_ci_high": best.get(f"{metric}_ci_high"),
                "tied": ";".join(tied)})
    return out_rows


def recommendation(summary: List[dict], target: str, metric: str = "dice") -> Optional[dict]:
    """What the study recommends for ``target``, read from summary rows (as written or as read
    back from summary.csv): ``{"best", "mean", "ci_low", "ci_high", "same" (plans trained as
    the best), "tied" (plans not shown worse), "not_better_than"}``; ``not_better_than`` lists
    the baselines (``none``, ``scratch``) the best plan is not shown better than by the paired
    interval of best − baseline (``[(baseline, diff, low, high)]``): when it is not empty the
    fine-tuned nets learned nothing the baseline lacks and no plan is to be recommended.
    None when the target has no best plan (every run failed)."""
    S = [r for r in summary if r["target"] == target]
    best = next((r for r in S if str(r.get("best")) == "1"), None)
    if best is None:
        return None
    same = [r["plan"] for r in S if r is not best and r["trained_as"] == best["trained_as"]]
    tied = [r["plan"] for r in S if str(r.get("tied_best")) == "1" and r is not best
            and r["plan"] not in same]
    worse = []
    for r in S:
        if r["plan"].split("/")[-1] not in BASELINES:
            continue
        d, lo, hi = (_num(r.get(f"best_minus_{metric}{x}")) for x in ("", "_ci_low", "_ci_high"))
        if not np.isfinite(lo):   # no paired images: the means decide, with the same margin
            d = _num(best.get(f"{metric}_images_mean")) - _num(r.get(f"{metric}_images_mean"))
            if np.isfinite(d) and d <= 0:
                worse.append((r["plan"], d, math.nan, math.nan))
        elif lo <= 0:
            worse.append((r["plan"], d, lo, hi))
    return {"best": best["plan"], "mean": _num(best.get(f"{metric}_images_mean")),
            "ci_low": _num(best.get(f"{metric}_ci_low")),
            "ci_high": _num(best.get(f"{metric}_ci_high")),
            "same": same, "tied": tied, "not_better_than": worse,
            "candidates": sum(r["plan"].split("/")[-1] not in BASELINES for r in S)}


def nested_selection(out, rows: List[dict], inner_rows: List[dict], metric: str = "dice"
                     ) -> List[dict]:
    """The nested (honest) estimate of "pick the best plan", one row per (target, repeat,
    fold): the plan with the best mean ``metric`` on the *inner* validation images of
    that outer fold's training images (ties: fewer trainable parameters), and its score
    on the outer test fold. Nothing of the outer test fold enters the choice.

    Returns rows ``target, repeat, fold, picked, inner_mean, outer_mean, n_images``; the
    per-image outer scores of the picks are in ``_values`` (for the interval)."""
    inner: Dict[tuple, Dict[str, dict]] = {}
    for r in inner_rows:
        key = (r["target"], int(r.get("repeat") or 0), int(r["fold"]))
        inner.setdefault(key, {})[r["plan"]] = r
    outer = {(r["target"], int(r.get("repeat") or 0), int(r["fold"]), r["plan"]): r
             for r in rows}
    result = []
    for (target, rep, fold), plans in sorted(inner.items()):
        scores, notes = {}, []
        bad = sorted(p for p, r in plans.items() if r["status"] != "ok")
        if bad:
            how = ", ".join(sorted({plans[p]["status"] for p in bad}))
            notes.append(f"not candidates (inner run {how}): {', '.join(bad)}")
        for plan, r in plans.items():
            if r["status"] != "ok":
                continue
            v = [x[metric] for x in per_image(out, r).values()]
            v = [x for x in v if np.isfinite(x)]
            if v:
                scores[plan] = float(np.mean(v))
        picked, values = "", []
        if not scores:
            notes.append("no inner run has a score (no inner validation image with an "
                         "object, or every inner run failed): fold left out of the estimate")
        else:
            picked = max(scores, key=lambda p: (
                scores[p], -float(plans[p].get("trainable_params") or 0), p))
            o = outer.get((target, rep, fold, picked))
            if o is None or o["status"] != "ok":
                notes.append(f"the pick's outer run is {o['status'] if o else 'missing'}: fold "
                             "left out of the estimate")
            else:
                values = [x[metric] for x in per_image(out, o).values()]
                values = [x for x in values if np.isfinite(x)]
        result.append({"target": target, "repeat": rep, "fold": fold, "picked": picked,
                       "inner_mean": scores.get(picked, math.nan),
                       "outer_mean": float(np.mean(values)) if values else math.nan,
                       "n_images": len(values), "note": "; ".join(notes), "_values": values})
    return result


def nested_summary(nested: List[dict], summary: List[dict], metric: str = "dice"
                   ) -> List[dict]:
    """Per target: the nested estimate (mean over the outer test images of each fold's
    pick, with its 95 % interval, resampled within folds and repeats) beside the naive
    best (the plan best on the test folds themselves: optimistic)."""
    out = []
    for target in dict.fromkeys(r["target"] for r in nested):
        rs = [r for r in nested if r["target"] == target]
        values = [v for r in rs for v in r["_values"]]
        groups = [f"{r['repeat']}/{r['fold']}" for r in rs for _ in r["_values"]]
        lo, hi = bootstrap_ci(values, groups) if values else (math.nan, math.nan)
        best = next((r for r in summary if r["target"] == target and r.get("best") == 1), None)
        out.append({"target": target, "nested_mean": float(np.mean(values)) if values
                    else math.nan, "nested_ci_low": lo, "nested_ci_high": hi,
                    "picks": ", ".join(f"{r['picked']} (repeat {r['repeat']}, fold {r['fold']})"
                                       for r in rs if r["picked"]),
                    "naive_best": best["plan"] if best else "",
                    "naive_mean": _num(best[f"{metric}_images_mean"]) if best else math.nan,
                    "folds_left_out": sum(not r["_values"] for r in rs),
                    "notes": " | ".join(f"repeat {r['repeat']}, fold {r['fold']}: {r['note']}"
                                        for r in rs if r["note"])})
    return out


#: the columns of each table a results folder holds (None: the rows' own keys)
TABLE_FIELDS = {RESULTS: RESULT_FIELDS, SIZES: SIZE_FIELDS,
                BUDGETS: ["target", "budget_percent", "plans", "best", "trainable_params",
                          "dice_images_mean", "dice_ci_low", "dice_ci_high", "tied"]}


def compute_tables(out, manifest: Optional[Manifest] = None) -> Dict[str, List[dict]]:
    """Every table of a results folder, by file name, from its runs: results.csv,
    summary.csv, stats.csv; nested.csv and nested_summary.csv when nested selection ran;
    sizes.csv and sizes_summary.csv when the dataset-size study ran. Nothing is written."""
    out = pathlib.Path(out)
    manifest = manifest or read_manifest(out)
    rows = collect(out, manifest)
    summary = mark_tied_best(out, add_intervals(out, summarize(rows), rows), rows)
    tables = {RESULTS: rows, SUMMARY: summary,
              STATS: paired_stats(out, rows, "dice", manifest.units()),
              BUDGETS: budget_table(out, summary, rows)}
    inner_rows = collect(out, manifest, inner=True)
    if inner_rows:
        nested = nested_selection(out, rows, inner_rows)
        tables[NESTED] = [{k: v for k, v in r.items() if k != "_values"} for r in nested]
        tables[NESTED_SUMMARY] = nested_summary(nested, summary)
    size_rows = collect(out, manifest, sizes=True)
    if size_rows:
        tables[SIZES] = size_rows
        tables[SIZES_SUMMARY] = summarize_sizes(size_rows)
    return tables


def table_fields(name: str, rows: List[dict]) -> List[str]:
    """The columns of the table ``name`` as written: :data:`TABLE_FIELDS`, else the first
    row's keys."""
    return TABLE_FIELDS.get(name) or (list(rows[0].keys()) if rows else ["target"])


def write_tables(out, manifest: Optional[Manifest] = None) -> Dict[str, List[dict]]:
    """Compute the tables (:func:`compute_tables`), then write each one; returns them."""
    tables = compute_tables(out, manifest)
    for name, rows in tables.items():
        write_csv(pathlib.Path(out) / name, rows, table_fields(name, rows))
    return tables


def as_read(rows: List[dict], fields: List[str]) -> List[dict]:
    """``rows`` as :func:`~keras_unet_ft.io.read_csv` gives them back once
    :func:`~keras_unet_ft.io.write_csv` wrote them with the columns ``fields``: every cell a
    string, an absent or None cell ``''``, other columns left out.

    Examples:
        >>> as_read([{"plan": "all", "dice_mean": 0.5, "best": 1, "note": None}],
        ...         ["plan", "dice_mean", "best", "note", "tied"])
        [{'plan': 'all', 'dice_mean': '0.5', 'best': '1', 'note': '', 'tied': ''}]
    """
    buf = StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return list(csv.DictReader(StringIO(buf.getvalue(), newline="")))


# -- the readers' view: a results folder read once, its rows typed --------------------------
@dataclasses.dataclass(eq=False)
class TableRow(Mapping):
    """A row of a results table as read from its CSV file: every cell by its column name
    (strings, as in the file: ``row["dice_mean"]``), and the columns readers select rows by
    as typed attributes (``row.target``, ``row.plan``)."""

    cells: Dict[str, str] = dataclasses.field(repr=False)

    def __getitem__(self, column: str) -> str:
        return self.cells[column]

    def __iter__(self) -> Iterator[str]:
        return iter(self.cells)

    def __len__(self) -> int:
        return len(self.cells)

    def num(self, column: str) -> float:
        """The cell as a number; NaN when empty, absent or not a number."""
        try:
            return float(self.cells.get(column))
        except (TypeError, ValueError):
            return math.nan


def _int(cell) -> int:
    return int(cell) if cell not in ("", None) else 0


@dataclasses.dataclass(eq=False)
class SummaryRow(TableRow):
    """A row of summary.csv: one plan on one target.

    Examples:
        >>> r = SummaryRow.from_csv({"target": "sim_bus", "plan": "none", "dice_mean": ""})
        >>> r.plan, r.is_baseline, r.num("dice_mean"), r["dice_mean"]
        ('none', True, nan, '')
    """

    target: str = ""
    plan: str = ""
    modality: str = ""
    trained_as: str = ""

    @classmethod
    def from_csv(cls, cells: dict) -> "SummaryRow":
        return cls(dict(cells), cells.get("target", ""), cells.get("plan", ""),
                   cells.get("modality", ""), cells.get("trained_as", ""))

    @property
    def is_baseline(self) -> bool:
        """Whether the plan is a baseline (``none``, ``scratch``) of any network."""
        return self.plan.split("/")[-1] in BASELINES


@dataclasses.dataclass(eq=False)
class ResultRow(TableRow):
    """A row of results.csv: one run (a plan on a target, a fold of a repeat)."""

    target: str = ""
    plan: str = ""
    modality: str = ""
    status: str = ""
    fold: int = 0
    repeat: int = 0
    run_dir: str = ""
    trainer: str = ""

    @classmethod
    def from_csv(cls, cells: dict) -> "ResultRow":
        return cls(dict(cells), cells.get("target", ""), cells.get("plan", ""),
                   cells.get("modality", ""), cells.get("status", ""),
                   _int(cells.get("fold")), _int(cells.get("repeat")),
                   cells.get("run_dir", ""), cells.get("trainer", ""))

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclasses.dataclass(eq=False)
class StatsRow(TableRow):
    """A row of stats.csv: plan A against plan B on a target (A − B, its interval, tests)."""

    target: str = ""
    plan_a: str = ""
    plan_b: str = ""
    why: str = ""
    verdict: str = ""

    @classmethod
    def from_csv(cls, cells: dict) -> "StatsRow":
        return cls(dict(cells), cells.get("target", ""), cells.get("plan_a", ""),
                   cells.get("plan_b", ""), cells.get("why", ""), cells.get("verdict", ""))


class LoadedFolder:
    """A results folder read once, for its readers (the figures, REPORT.md, the notebooks):
    ``runs.json`` as a :class:`~keras_unet_ft.layout.Manifest`, ``config.json``, and its
    tables, summary.csv, results.csv and stats.csv as typed rows. Each file is read at most
    once, when first asked for; ``out`` is where the folder is (the figures are saved there).

    :func:`keras_unet_ft.pipeline.aggregate` builds it from the tables it has just written
    (:meth:`from_tables`); ``unet-ft report`` and the notebooks :meth:`load` it.

    Examples:
        >>> F = LoadedFolder.from_tables("/tmp/r", {SUMMARY: [{"target": "t", "plan": "all"}]})
        >>> [(r.target, r.plan) for r in F.summary], F.stats
        ([('t', 'all')], [])
    """

    def __init__(self, out, tables: Optional[Dict[str, List[dict]]] = None,
                 manifest: Optional[Manifest] = None):
        self.out = pathlib.Path(out)
        self._tables: Dict[str, List[dict]] = dict(tables or {})
        if manifest is not None:
            self.manifest = manifest
        #: ``{run folder (results.csv's run_dir): per_image.csv of the run}`` (the images
        #: with an object, :func:`per_image`), each read once, when first asked for
        self.per_image: Dict[str, Dict[str, dict]] = _ReadOnce(
            lambda run_dir: per_image(self.out, {"run_dir": run_dir}))
        #: ``{run folder: summary.json of the run, None when absent}``, each read once
        self.run_summaries: Dict[str, Optional[dict]] = _ReadOnce(
            lambda run_dir: read_run_summary(self.out / run_dir))

    @classmethod
    def load(cls, out) -> "LoadedFolder":
        """The folder at ``out`` (read as each part is asked for); a LoadedFolder as it is."""
        return out if isinstance(out, LoadedFolder) else cls(out)

    @classmethod
    def from_tables(cls, out, tables: Dict[str, List[dict]],
                    manifest: Optional[Manifest] = None) -> "LoadedFolder":
        """The folder with the tables just computed (:func:`compute_tables`), each row as
        its CSV file gives it back; tables not among them are read from their files."""
        return cls(out, {name: as_read(rows, table_fields(name, rows))
                         for name, rows in tables.items()}, manifest)

    def table(self, name: str) -> List[dict]:
        """The rows of the table ``name`` (a file name, ``summary.csv``), as read from its
        file; none when an optional table (all but results.csv and summary.csv) is absent."""
        if name not in self._tables:
            path = self.out / name
            self._tables[name] = (read_csv(path) if path.exists() or name in (RESULTS, SUMMARY)
                                  else [])
        return self._tables[name]

    @functools.cached_property
    def manifest(self) -> Manifest:
        return read_manifest(self.out)

    @functools.cached_property
    def provenance(self) -> dict:
        """``config.json``: the config, package versions, git revision, precision."""
        return read_json(self.out / CONFIG)

    @property
    def config(self) -> dict:
        """The study's config, as written in ``config.json``."""
        return self.provenance["config"]

    @functools.cached_property
    def results(self) -> List[ResultRow]:
        return [ResultRow.from_csv(r) for r in self.table(RESULTS)]

    @functools.cached_property
    def summary(self) -> List[SummaryRow]:
        return [SummaryRow.from_csv(r) for r in self.table(SUMMARY)]

    @functools.cached_property
    def stats(self) -> List[StatsRow]:
        """The comparisons of stats.csv (rows that compare two plans)."""
        return [StatsRow.from_csv(r) for r in self.table(STATS) if r.get("plan_a")]

    @property
    def sizes_summary(self) -> List[dict]:
        return self.table(SIZES_SUMMARY)

    @property
    def nested_summary(self) -> List[dict]:
        return self.table(NESTED_SUMMARY)

    @property
    def budgets(self) -> List[dict]:
        return self.table(BUDGETS)


class _ReadOnce(dict):
    """``{key: loader(key)}``, each value loaded when its key is first asked for."""

    def __init__(self, loader):
        super().__init__()
        self._loader = loader

    def __missing__(self, key):
        value = self[key] = self._loader(key)
        return value
