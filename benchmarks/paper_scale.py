#!/usr/bin/env python
"""What a paper-scale run cost and found : read a results folder of
``run_all.py --profile paper`` (whole or in part) and print, as Markdown:

* pretraining: epochs done of the profile's, images, seconds per epoch, images/s;
* per target and plan: folds done, Dice mean +- std over folds, steady-state training
  images/s (median over runs; the first epoch, which holds tracing / XLA compilation, left
  out), peak GPU memory, wall time per run (training + evaluation);
* the extrapolated wall time of the paper's whole grid (the ``paper`` plan set and both
  baselines, every fold and target; once and with the profile's ``study.seeds``): runs x
  the mean measured wall time per run, plus the profile's pretraining at the measured
  seconds per epoch. An estimate: frozen-heavy plans cost less than the measured ones.

Every number is read from the folder (each finished run's summary.json, pretrained/),
none is typed in; a study stopped by ``--max-minutes`` is read as far as it got. The GPU
recipe (a machine without TensorFlow: Keras on JAX) is in BENCHMARKS.md; anywhere::

    python experiments/run_all.py --profile paper --plans contracting,expanding \\
        --set study.seeds=1 --max-minutes 50 --out results/paper_cx
    python benchmarks/paper_scale.py results/paper_cx
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from keras_unet_ft.config import Config  # noqa: E402
from keras_unet_ft.io import read_csv  # noqa: E402
from keras_unet_ft.layout import load_config_of  # noqa: E402
from keras_unet_ft.plans import BASELINES, plan_set  # noqa: E402
from keras_unet_ft.results import collect  # noqa: E402


def _f(x):
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if v == v else None   # NaN -> None


def pretraining(out: pathlib.Path) -> dict:
    """Epochs, images and speed of the pretraining (finished or stopped part-way)."""
    dirs = sorted(p for p in (out / "pretrained").glob("**/") if
                  (p / "history.csv").exists() or (p / "history.partial.csv").exists())
    if not dirs:
        return {}
    d = dirs[0]
    summary = (json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists()
               else {})
    hist = (read_csv(d / "history.csv") if (d / "history.csv").exists()
            else read_csv(d / "history.partial.csv"))
    secs = [_f(r.get("seconds")) for r in hist if _f(r.get("seconds"))]
    steady = summary.get("steady_seconds_per_epoch") or (
        statistics.median(secs[1:] or secs) if secs else summary.get("seconds_per_epoch"))
    timed = len(secs) if secs else len(hist)
    return {"epochs_done": len(hist), "train_images": summary.get("train_images"),
            "seconds_per_epoch": steady, "steady": timed > 1,
            "finished": bool(summary), "best_val_loss": summary.get("best_val_loss")}


def not_ok(out: pathlib.Path) -> list:
    """Finished runs that do not count (diverged, failed): said, kept out of every number."""
    return [r for r in collect(out) if r["status"] != "ok" and r["plan"] == r["trained_as"]]


def process_peak_gib(out: pathlib.Path):
    """The highest process-wide GPU peak of any run (all a JAX process can tell)."""
    v = [_f(r.get("process_peak_gpu_memory_gib")) for r in collect(out)]
    v = [x for x in v if x is not None]
    return max(v) if v else None


def per_plan(out: pathlib.Path) -> list:
    # finished runs, mid-study too; each run once (not again under its aliases)
    rows = [r for r in collect(out) if r["status"] == "ok" and r["plan"] == r["trained_as"]]
    groups = {}
    for r in rows:
        groups.setdefault((r["target"], r["plan"]), []).append(r)
    table = []
    for (target, plan), rs in sorted(groups.items()):
        dice = [_f(r["dice_mean"]) for r in rs if _f(r["dice_mean"]) is not None]
        ips = [_f(r.get("images_per_second")) for r in rs if _f(r.get("images_per_second"))]
        # a run's own peak only where the backend could reset its counter (not JAX)
        mem = [_f(r.get("peak_gpu_memory_gib")) for r in rs if _f(r.get("peak_gpu_memory_gib"))]
        wall = [_f(r["train_seconds"]) for r in rs if _f(r["train_seconds"]) is not None]
        table.append({
            "target": target, "plan": plan, "folds": len(rs),
            "dice": statistics.mean(dice) if dice else None,
            "dice_sd": statistics.stdev(dice) if len(dice) > 1 else None,
            "images_per_second": statistics.median(ips) if ips else None,
            "peak_gib": max(mem) if mem else None,
            "run_seconds": statistics.mean(wall) if wall else None,
            "trainable_params": int(float(rs[0]["trainable_params"] or 0)),
            "backend": rs[0].get("backend") or "?", "precision": rs[0].get("precision"),
        })
    return table


def extrapolate(out: pathlib.Path, table: list, pre: dict) -> dict:
    cfg = load_config_of(out)
    plans = plan_set("paper") + list(BASELINES)
    trained = [t for t in table if t["plan"] not in BASELINES and t["run_seconds"]]
    if not trained:
        return {}
    per_run = statistics.mean(t["run_seconds"] for t in trained)
    runs = len(plans) * cfg.finetune.folds * len(cfg.data.targets)
    paper = Config()   # the paper's settings: 40 epochs on 10,000 images (10 % validation)
    scale = (paper.data.pretrain_n / cfg.data.pretrain_n) if cfg.data.pretrain_n else 1.0
    pre_s = ((pre["seconds_per_epoch"] * scale * paper.pretrain.epochs)
             if pre.get("seconds_per_epoch") else None)
    return {"plans": len(plans), "runs_once": runs,
            "per_run_seconds": per_run, "grid_seconds_once": runs * per_run,
            "pretrain_seconds": pre_s, "pretrain_epochs": paper.pretrain.epochs,
            "pretrain_images": paper.data.pretrain_n,
            "profile_seeds": load_profile_seeds(cfg)}


def load_profile_seeds(cfg) -> int:
    from keras_unet_ft.config import PROFILES

    return int(PROFILES.get(cfg.profile, {}).get("study.seeds", cfg.study.seeds))


def _fmt(v, spec=".3f", none="-"):
    return none if v is None else format(v, spec)


def markdown(out: pathlib.Path) -> str:
    pre = pretraining(out)
    table = per_plan(out)
    ex = extrapolate(out, table, pre)
    cfg = load_config_of(out)
    prov = (json.loads((out / "config.json").read_text()) if (out / "config.json").exists()
            else {})
    v = prov.get("versions", {})
    lines = [f"Results folder `{out}`: profile `{cfg.profile}`, {cfg.model.size} px, base "
             f"{cfg.model.base_filters}, {cfg.finetune.folds} folds, {cfg.finetune.epochs} "
             f"epochs x {cfg.finetune.augment_total} images, batch {cfg.finetune.batch_size}; "
             f"Keras {v.get('keras', '?')} on {v.get('keras_backend', '?')}, precision "
             f"{prov.get('precision', '?')}.", ""]
    if pre:
        ips = (pre["train_images"] / pre["seconds_per_epoch"]
               if pre.get("train_images") and pre.get("seconds_per_epoch") else None)
        paper = Config()
        lines += [f"Pretraining: {pre['epochs_done']} of {cfg.pretrain.epochs} epochs"
                  f"{'' if pre['finished'] else ' (stopped part-way)'} (the paper: "
                  f"{paper.pretrain.epochs} epochs of {paper.data.pretrain_n:,} images), "
                  f"{pre.get('train_images') or '?'} training images, "
                  f"{_fmt(pre.get('seconds_per_epoch'), '.1f')} s per epoch "
                  f"{'(median after the first)' if pre['steady'] else '(one epoch: compiling included)'}, "
                  f"{_fmt(ips, '.1f')} images/s (validation included), best validation loss "
                  f"{_fmt(pre.get('best_val_loss'), '.4f')}.", ""]
    lines += ["| target | plan | trainable params | folds | Dice mean +- sd | images/s | "
              "peak GPU GiB | training s per run |", "|---|---|---|---|---|---|---|---|"]
    for t in table:
        lines.append(f"| {t['target']} | {t['plan']} | {t['trainable_params']:,} | {t['folds']} | "
                     f"{_fmt(t['dice'])} +- {_fmt(t['dice_sd'])} | "
                     f"{_fmt(t['images_per_second'], '.1f')} | {_fmt(t['peak_gib'], '.2f')} | "
                     f"{_fmt(t['run_seconds'], '.0f')} |")
    bad = not_ok(out)
    if bad:
        lines += ["", f"Not counted above: {len(bad)} run(s) that did not finish ok: "
                  + "; ".join(f"{r['target']} {r['plan']} fold {r['fold']}: {r['status']}"
                              f"{' (' + r['reason'] + ')' if r.get('reason') else ''}"
                              for r in bad) + "."]
    peak = process_peak_gib(out)
    if peak is not None:
        lines += ["", f"Highest GPU memory of the process (every run so far, all models kept "
                  f"alive): {peak:.2f} GiB. Per-run peaks are shown where the backend can reset "
                  "its counter (TensorFlow, PyTorch), not on JAX."]
    if ex:
        once = ex["grid_seconds_once"] + (ex["pretrain_seconds"] or 0)
        repeated = ex["grid_seconds_once"] * ex["profile_seeds"] + (ex["pretrain_seconds"] or 0)
        lines += ["", f"Extrapolated paper grid: {ex['plans']} plans (baselines included) x "
                  f"{cfg.finetune.folds} folds x {len(cfg.data.targets)} targets = "
                  f"{ex['runs_once']} runs x {ex['per_run_seconds']:.0f} s (mean measured "
                  "training time per run) "
                  f"= {ex['grid_seconds_once'] / 3600:.2f} h"
                  + (f", + the paper's pretraining ({ex['pretrain_epochs']} epochs of "
                     f"{ex['pretrain_images']:,} images at the measured speed) "
                     f"{ex['pretrain_seconds'] / 3600:.2f} h"
                     if ex["pretrain_seconds"] else "")
                  + f": {once / 3600:.2f} h once; with the profile's {ex['profile_seeds']} "
                  f"repeats of the cross-validation "
                  f"{repeated / 3600:.2f} h. "
                  "An estimate: plans that freeze more than the measured ones cost less."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="results folder of run_all.py / unet-ft study")
    a = ap.parse_args(argv)
    out = pathlib.Path(a.out)
    if not (out / "runs.json").exists():
        print(f"error: {out} is not a results folder (no runs.json): run the study first",
              file=sys.stderr)
        return 2
    print(markdown(out), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
