"""Collect a study's run folders into tidy tables: results.csv, summary.csv, stats.csv."""

from __future__ import annotations

import csv
import json
import logging
import math
import pathlib
from typing import Dict, List, Optional

import numpy as np

from .config import Config, config_from_dict
from .metrics import METRICS
from .stats import comparison_pairs, paired_tests
from .training import write_csv

log = logging.getLogger("keras_unet_ft")
RESULT_FIELDS = (["target", "modality", "model", "plan", "trained_as", "fold", "status"]
                 + [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
                 + ["n_train", "n_test", "trainable_params", "frozen_params", "train_seconds",
                    "seconds_per_epoch", "epochs", "seed", "precision", "trainer",
                    "encoder_weights", "reason",
                    "run_dir"])


def read_csv(path) -> List[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load_config_of(out) -> Config:
    data = json.loads((pathlib.Path(out) / "config.json").read_text())
    return config_from_dict(data["config"])


SIZE_FIELDS = (["target", "model", "plan", "n_originals", "augment", "fold", "status"]
               + [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
               + ["n_train", "n_test", "epochs", "train_seconds", "reason", "run_dir"])


def collect(out, cfg: Optional[Config] = None, sizes: bool = False) -> List[dict]:
    """One row per (target, plan, fold) of the study, aliases included.

    With ``sizes=True``: the runs of the dataset-size study instead, one row per
    (target, plan, training images, augmentation, fold), skipped ones included.
    """
    from .study import MODALITY, list_runs, target_slug
    from .data.registry import parse_spec

    out = pathlib.Path(out)
    cfg = cfg or load_config_of(out)
    runs, _, _ = list_runs(cfg, cfg.data.targets)
    rows = []
    for r in runs:
        if (r.n_train is not None) != sizes:
            continue
        s_path = r.dir(out) / "summary.json"
        if not s_path.exists():
            continue
        s = json.loads(s_path.read_text())
        for plan in [r.plan] + list(r.aliases):
            row = {k: s.get(k, "") for k in (SIZE_FIELDS if sizes else RESULT_FIELDS)}
            row.update(target=target_slug(r.target),
                       modality=MODALITY.get(parse_spec(r.target)[0], "other"),
                       model=r.model, plan=plan, trained_as=r.plan, fold=r.fold,
                       status=s.get("status"),
                       reason=s.get("reason", ""),
                       run_dir=str(r.dir(out).relative_to(out)))
            if sizes:
                row.update(n_originals=r.n_train, augment=int(r.augment))
                row.pop("modality", None)
                row.pop("trained_as", None)
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
            v = [float(r[f"{m}_mean"]) for r in ok]
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
            v = [float(r[f"{m}_mean"]) for r in ok]
            row[f"{m}_mean"] = float(np.mean(v)) if v else math.nan
            row[f"{m}_std"] = float(np.std(v)) if v else math.nan
        for k in ("trainable_params",):
            row[k] = int(float(ok[0][k])) if ok else ""
        for k in ("train_seconds", "seconds_per_epoch"):
            v = [float(r[k]) for r in ok]
            row[k] = float(np.mean(v)) if v else math.nan
        out.append(row)
    return out


def per_image(out, row: dict) -> Dict[str, dict]:
    """``{image id: {metric: value}}`` of a results row's run."""
    path = pathlib.Path(out) / row["run_dir"] / "per_image.csv"
    return {r["id"]: {m: float(r[m]) for m in METRICS} for r in read_csv(path)}


def paired_stats(out, rows: List[dict], metric: str = "dice", units: int = 9) -> List[dict]:
    """Paired tests between plans, over folds and over held-out images."""
    by: Dict[tuple, Dict[int, dict]] = {}
    for r in rows:
        if r["status"] == "ok":
            by.setdefault((r["target"], r["plan"]), {})[int(r["fold"])] = r
    result = []
    for target in dict.fromkeys(r["target"] for r in rows):
        plans = [p for (t, p) in by if t == target]
        for a, b, why in comparison_pairs(plans, units):
            ra, rb = by[(target, a)], by[(target, b)]
            folds = sorted(set(ra) & set(rb))
            f = paired_tests([float(ra[k][f"{metric}_mean"]) for k in folds],
                             [float(rb[k][f"{metric}_mean"]) for k in folds])
            ia, ib = {}, {}
            for k in folds:
                ia.update(per_image(out, ra[k]))
                ib.update(per_image(out, rb[k]))
            ids = sorted(set(ia) & set(ib))
            im = paired_tests([ia[i][metric] for i in ids], [ib[i][metric] for i in ids])
            result.append({
                "target": target, "metric": metric, "plan_a": a, "plan_b": b, "why": why,
                "mean_a": im["mean_a"], "mean_b": im["mean_b"], "diff": im["mean_diff"],
                "folds_n": f["n"], "folds_t_p": f["t_p"], "folds_wilcoxon_p": f["wilcoxon_p"],
                "images_n": im["n"], "images_t_p": im["t_p"],
                "images_wilcoxon_p": im["wilcoxon_p"],
            })
    return result


def aggregate(out, cfg: Optional[Config] = None, report: bool = True, figures: bool = True):
    """Write results.csv, summary.csv, stats.csv and (optionally) REPORT.md and figures."""
    from .blocks import BlockMap
    from .training import build_from_config

    out = pathlib.Path(out)
    cfg = cfg or load_config_of(out)
    rows = collect(out, cfg)
    write_csv(out / "results.csv", rows, RESULT_FIELDS)
    summary = summarize(rows)
    write_csv(out / "summary.csv", summary)
    import keras

    keras.backend.clear_session()
    units = BlockMap(build_from_config(cfg.model)).units("path")
    st = paired_stats(out, rows, "dice", units)
    write_csv(out / "stats.csv", st, list(st[0].keys()) if st else ["target"])
    size_rows = collect(out, cfg, sizes=True)
    if size_rows:
        write_csv(out / "sizes.csv", size_rows, SIZE_FIELDS)
        write_csv(out / "sizes_summary.csv", summarize_sizes(size_rows))
    if figures:
        try:
            from .figures import make_all_figures
        except ImportError:
            make_all_figures = None
        if make_all_figures is not None:
            try:
                make_all_figures(out, steps=cfg.study.am_steps)
            except Exception as e:  # noqa: BLE001 - figures must not lose the results
                log.warning("figures failed: %s", e)
    if report:
        from .report import write_report

        write_report(out)
    return out
