#!/usr/bin/env python
"""The corpus of ground truths for the zero-training probes: full grids of a small
plan set on many targets, at a reduced scale (47 grids: about 70 minutes on 2 vCPUs).

    nice -n 10 python benchmarks/probe_corpus.py run --root /tmp/corpus      # the grids
    python benchmarks/probe_corpus.py summarize --root /tmp/corpus            # the CSV
    nice -n 10 python benchmarks/probe_corpus.py advise --root /tmp/corpus \
        --targets salient/bus bus/shift_rim                                    # advise on some
    python benchmarks/probe_corpus.py advise-budget --root /tmp/corpus --budget 0.15
    python benchmarks/probe_corpus.py score-budget --root /tmp/corpus      # probe order or not

``PROBE_CORPUS_BUSI=../shared/data/busi_dev`` before ``run``, ``summarize`` and
``probe_vs_grid.py --root`` adds a folder of real breast ultrasound (images/, masks/) as a target
of the pretrainings in :data:`BUSI_PRETRAININGS` (measured, never shipped: the folder is the
user's). ``--only PRE`` runs some pretrainings (two at a time suit 2 vCPUs).

``run`` starts one ``unet-ft study`` per pretraining (each a results folder under ROOT,
every target a full grid of :data:`PLANS` over :data:`SCALE`'s folds), the pretrainings side
by side (one thread each). A study that is stopped goes on from its finished runs when run
again. ``summarize`` reads each folder's runs (``results.collect``), computes the image-level
Dice with its 95 % interval and the paired tied-best groups, and writes
``benchmarks/probe_corpus.csv``: one row per (pretraining, target, plan) with

* ``dice`` (mean over every held-out image with an object), ``dice_ci_low``/``_high``;
* ``tied_best``: the plan's paired interval of best − plan holds 0 (the best over every plan
  but ``none``), as ``results.mark_tied_best``; ``tied_best_partial``: the same among the
  partial plans only (every plan but ``all`` and ``none``: the paper's question);
* ``best_minus``/``_ci_low``/``_ci_high`` against the best partial plan (partial plans) or
  the best plan (``all``);
* ``trainable_params``, ``seconds`` (training seconds summed over folds);
* ``c_minus_e``/``_ci_low``/``_ci_high``: the target's contracting − expanding Dice, paired
  over held-out images (the same on each of the target's rows).

The scale is stated in :data:`SCALE`: the `quick` profile's network (64 px, base 8), 2 folds,
4 fine-tuning epochs on the fold's training images as they are (``augment_total=1``: no
augmented copies beyond them), pretraining on 1,200 images for 5 epochs. It is far smaller than
`quick` (3 folds, 12 epochs, 200 augmented images, 2,400 x 8 pretraining): its nets are less
trained and its verdicts noisier; it is what a shared 2-vCPU machine allowed in one session.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import pathlib
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

HERE = pathlib.Path(__file__).resolve().parent
CSV = HERE / "probe_corpus.csv"

#: the plans of every grid: the paper's split, both block curves at K = 1, 3 (of 9 blocks),
#: all layers, and the pretrained net untouched (``none``, no training)
PLANS = ("none", "contracting", "expanding", "shallow_to_deep:1", "shallow_to_deep:3",
         "deep_to_shallow:1", "deep_to_shallow:3", "all")
PARTIAL = tuple(p for p in PLANS if p not in ("none", "all"))

#: the reduced scale of the corpus (``--set`` of every study)
SCALE = {
    "model.size": 64, "model.base_filters": 8,
    "data.pretrain_n": 1200, "pretrain.epochs": 5, "pretrain.batch_size": 8,
    "pretrain.learning_rate": 3e-4,
    "finetune.folds": 2, "finetune.epochs": 4, "finetune.augment_total": 1,
    "finetune.batch_size": 8, "finetune.learning_rate": 3e-4,
    "study.baselines": "false",
}

#: the shift dial (``sim_bus?shift=KIND:S``) at strength 3 for every kind and at 2 for three:
#: the strength-1 shifts barely move the pretrained nets
DIAL = ([f"sim_bus?shift={k}:3&name=shift_{k}3" for k in ("speckle", "gain", "blur",
                                                              "contrast", "rim")]
        + [f"sim_bus?shift={k}:2&name=shift_{k}2" for k in ("speckle", "blur", "rim")])

#: pretraining -> (pretraining dataset, targets); a target's ``name=`` is its slug
PRETRAININGS = {
    "bus": ("sim_bus?seed=1000", [
        "sim_bus?name=bus",
        "sim_bus?shift=rim&name=shift_rim",
        "synth_cxr?n=163&name=cxr",
        "sim_lus?n=163&name=lus",
        "sim_bus?shift=speckle&name=shift_speckle",
        "sim_bus?n=50&seed=11&name=bus_n50",
        "sim_bus?shift=contrast&name=shift_contrast",
        "sim_bus?seed=7&name=bus_s7",
        "sim_bus?shift=gain&name=shift_gain",
        "sim_bus?shift=blur&name=shift_blur",
        "sim_bus?seed=13&name=bus_s13",
        "sim_bus?n=600&seed=12&name=bus_n600",
    ] + DIAL),
    "salient": ("synth_salient", [
        "sim_bus?name=bus",
        "sim_bus?shift=rim&name=shift_rim",
        "synth_cxr?n=163&name=cxr",
        "sim_lus?n=163&name=lus",
        "sim_bus?shift=speckle&name=shift_speckle",
        "sim_bus?seed=7&name=bus_s7",
        "sim_bus?shift=contrast&name=shift_contrast",
        "sim_bus?n=50&seed=11&name=bus_n50",
        "sim_bus?shift=gain&name=shift_gain",
        "sim_bus?shift=blur&name=shift_blur",
    ] + DIAL[:5]),
    # the same generated pretraining set at two other sizes (pretraining size alone can turn
    # the contracting-vs-expanding verdict)
    "salient2400": ("synth_salient", [
        "sim_bus?name=bus", "sim_lus?n=163&name=lus", "sim_bus?shift=speckle:3&name=shift_speckle3",
        "sim_bus?shift=rim&name=shift_rim",
    ]),
    "salient850": ("synth_salient", [
        "sim_bus?name=bus", "sim_lus?n=163&name=lus", "sim_bus?shift=speckle:3&name=shift_speckle3",
        "sim_bus?shift=rim&name=shift_rim",
    ]),
}
#: settings of a pretraining beside :data:`SCALE` (``data.pretrain_n`` of the size variants)
PRETRAIN_SETTINGS = {"salient2400": {"data.pretrain_n": 2400},
                     "salient850": {"data.pretrain_n": 850}}
#: real breast ultrasound, measured, never shipped: ``PROBE_CORPUS_BUSI=FOLDER`` (images/ and
#: masks/, e.g. ../shared/data/busi_dev) adds it as a target of these pretrainings
BUSI_ENV = "PROBE_CORPUS_BUSI"
BUSI_PRETRAININGS = ("bus", "salient", "salient2400", "salient850")


def targets_of(pre: str) -> list:
    """The target specs of one pretraining's grids (the real set when ``PROBE_CORPUS_BUSI``
    names its folder)."""
    out = list(PRETRAININGS[pre][1])
    busi = os.environ.get(BUSI_ENV)
    if busi and pre in BUSI_PRETRAININGS:
        out.append(f"folder:{busi}?modality=ultrasound&name=busi_dev")
    return out


def settings_of(pre: str) -> dict:
    """:data:`SCALE` with the pretraining's own settings."""
    return dict(SCALE, **PRETRAIN_SETTINGS.get(pre, {}))


def study_command(pre: str, root) -> list:
    """The ``unet-ft study`` command of one pretraining's grids."""
    data = PRETRAININGS[pre][0]
    cmd = ["unet-ft", "study", "--profile", "quick", "--out", str(pathlib.Path(root) / pre),
           "--pretrain", data, "--plans", ",".join(PLANS), "--no-figures", "--quiet",
           "--threads", "1"]
    for k, v in settings_of(pre).items():
        cmd += ["--set", f"{k}={v}"]
    for t in targets_of(pre):
        cmd += ["--target", t]
    return cmd


def advise_command(pre: str, target: str, root) -> list:
    """``unet-ft advise`` (successive halving) on one target of the corpus, at its scale and
    with its pretrained net: the measured point of advise beside the probes."""
    data, _ = PRETRAININGS[pre]
    slug = target.split("name=")[1] if "name=" in target else target.split("?")[0]
    cmd = ["unet-ft", "advise", "--profile", "quick", "--target", target,
           "--pretrained", str(pathlib.Path(root) / pre),
           "--out", str(pathlib.Path(root) / "advice" / pre / slug),
           "--plans", ",".join(p for p in PLANS if p != "none"), "--threads", "1",
           "--set", f"data.pretrain={data}"]
    for k, v in settings_of(pre).items():
        cmd += ["--set", f"{k}={v}"]
    return cmd


def run_advise(root, targets) -> int:
    """advise on ``targets`` (``pre/slug``), one after the other."""
    rc = 0
    for key in targets:
        pre, slug = key.split("/")
        spec = next(t for t in targets_of(pre) if t == slug or f"name={slug}" in t)
        cmd = advise_command(pre, spec, root)
        print(" ".join(cmd), flush=True)
        t0 = time.perf_counter()
        with open(pathlib.Path(root) / "advise.log", "a") as log:
            rc |= subprocess.call(cmd, stdout=log, stderr=log)
        print(f"{key}: {time.perf_counter() - t0:.0f} s", flush=True)
    return rc


#: ``advise`` with its first rung in the plan set's order (no probe ordering): the package's
#: advise with ``_predicted_order`` replaced, for the budget comparison only
GIVEN_ORDER = (
    "import sys; import keras_unet_ft.advise as a; "
    "a._predicted_order = lambda *x, **k: {'predictor': 'the plan set', 'order': None, "
    "'reason': 'the plan set order (benchmark)', 'agreement': None, "
    "'agreement_learned': None, 'seconds': 0.0}; "
    "from keras_unet_ft.cli import main; sys.exit(main(sys.argv[1:]))")
ORDERS = ("probe", "given")


def learned_targets(path=CSV) -> list:
    """``PRE/SLUG`` of the corpus's targets where the grid's best plan is shown better than the
    pretrained net untouched (the paired interval of best − none above 0)."""
    with open(path) as f:
        return [f"{r['pretraining']}/{r['target']}" for r in csv.DictReader(f)
                if r["plan"] == "none" and r["best_minus_ci_low"]
                and float(r["best_minus_ci_low"]) > 0]


def run_advise_budget(root, targets, budget: float) -> int:
    """advise under a budget of ``budget`` minutes that ends its first rung, twice per target
    and at the same time (the two share the CPUs alike): the first rung in the probe's order
    and in the plan set's order."""
    rc = 0
    for key in targets:
        pre, slug = key.split("/")
        spec = next(t for t in targets_of(pre) if t == slug or f"name={slug}" in t)
        procs = []
        for order in ORDERS:
            cmd = advise_command(pre, spec, root)
            i = cmd.index("--out")
            cmd[i + 1] = str(pathlib.Path(root) / "advice_budget" / order / pre / slug)
            cmd += ["--budget", f"{budget:g}"]
            if order == "given":
                cmd = [sys.executable, "-c", GIVEN_ORDER] + cmd[1:]
            log = open(pathlib.Path(root) / f"advise_budget_{order}.log", "a")
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=log))
        t0 = time.perf_counter()
        rc |= max(p.wait() for p in procs)
        print(f"{key}: {time.perf_counter() - t0:.0f} s", flush=True)
    return rc


def score_advise_budget(root, path=CSV) -> None:
    """The pick of each order against the grid: Dice regret (grid's best trained plan minus the
    pick), whether the pick is in the tied-best group, plans trained in rung 1."""
    import json

    import numpy as np

    with open(path) as f:
        grid = {}
        for r in csv.DictReader(f):
            grid.setdefault(f"{r['pretraining']}/{r['target']}", {})[r["plan"]] = r
    per = {o: [] for o in ORDERS}
    for key, g in grid.items():
        got = {}
        for order in ORDERS:
            a = pathlib.Path(root) / "advice_budget" / order / key / "advice.json"
            if a.exists():
                got[order] = json.loads(a.read_text())
        if len(got) < 2:
            continue
        best = max(float(g[p]["dice"]) for p in PLANS if p != "none")
        for order, a in got.items():
            pick = a["best"]
            per[order].append({"target": key, "pick": pick,
                               "regret": best - float(g[pick]["dice"]),
                               "tied": g[pick]["tied_best"] == "1",
                               "trained": a["rungs"][0]["plans"],
                               "stopped": bool(a["stopped"])})
    for order, rows in per.items():
        if not rows:
            continue
        print(f"{order}: {len(rows)} targets, pick tied-best "
              f"{100 * np.mean([r['tied'] for r in rows]):.0f} %, regret median "
              f"{np.median([r['regret'] for r in rows]):.3f} mean "
              f"{np.mean([r['regret'] for r in rows]):.3f}, plans trained in rung 1 median "
              f"{np.median([r['trained'] for r in rows]):g}, first rung cut on "
              f"{sum(r['stopped'] for r in rows)}")
        for r in rows:
            print(f"  {r['target']}: {r['pick']} regret {r['regret']:.3f} tied {r['tied']} "
                  f"rung 1 {r['trained']} plans")


def run(root, only=None) -> int:
    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    procs = []
    for pre in PRETRAININGS:
        if only and pre not in only:
            continue
        cmd = study_command(pre, root)
        print(" ".join(cmd), flush=True)
        log = open(root / f"{pre}.log", "a")
        procs.append((pre, time.perf_counter(), subprocess.Popen(cmd, stdout=log, stderr=log)))
    rc = 0
    for pre, t0, p in procs:
        rc |= p.wait()
        print(f"{pre}: exit {p.returncode}, {time.perf_counter() - t0:.0f} s", flush=True)
    return rc


# -- the summary ------------------------------------------------------------------------
def _fmt(x):
    return "" if x is None or (isinstance(x, float) and not math.isfinite(x)) else (
        f"{x:.4f}" if isinstance(x, float) else x)


def grid_rows(folder, pre: str):
    """Rows of the summary CSV for one results folder."""
    import numpy as np

    from keras_unet_ft.results import _image_scores, _paired, collect
    from keras_unet_ft.stats import bootstrap_ci

    rows = collect(folder)
    out = []
    for target in dict.fromkeys(r["target"] for r in rows):
        rs = [r for r in rows if r["target"] == target]
        plans = [p for p in PLANS if any(r["plan"] == p and r["status"] == "ok" for r in rs)]
        if set(plans) != set(PLANS):
            print(f"{pre}/{target}: grid not complete ({len(plans)} of {len(PLANS)} plans); "
                  "left out", file=sys.stderr)
            continue
        if not all(sum(r["plan"] == p and r["status"] == "ok" for r in rs)
                   == int(SCALE["finetune.folds"]) for p in plans):
            print(f"{pre}/{target}: some folds missing; left out", file=sys.stderr)
            continue
        scores = {p: _image_scores(folder, rows, target, p, "dice") for p in plans}
        dice = {p: float(np.mean(list(s.values()))) for p, s in scores.items()}
        ci = {}
        for p, s in scores.items():
            keys = sorted(s)
            ci[p] = bootstrap_ci([s[k] for k in keys], [k[0] for k in keys])
        best = max((p for p in plans if p != "none"), key=lambda p: dice[p])
        bestp = max(PARTIAL, key=lambda p: dice[p])
        # the paper's question on this target: contracting − expanding, paired
        ce, ce_lo, ce_hi = _paired(scores["contracting"], scores["expanding"])
        for p in plans:
            d, lo, hi = (0.0, 0.0, 0.0) if p == best else _paired(scores[best], scores[p])
            dp, lop, hip = ((0.0, 0.0, 0.0) if p == bestp else _paired(scores[bestp], scores[p]))
            r0 = next(r for r in rs if r["plan"] == p and r["status"] == "ok")
            secs = sum(float(r["train_seconds"] or 0) for r in rs
                       if r["plan"] == p and r["status"] == "ok")
            out.append({
                "pretraining": pre, "target": target, "plan": p,
                "dice": dice[p], "dice_ci_low": ci[p][0], "dice_ci_high": ci[p][1],
                "best": int(p == best), "tied_best": int(p != "none" and lo <= 0.0),
                "best_minus": d, "best_minus_ci_low": lo, "best_minus_ci_high": hi,
                "best_partial": int(p == bestp),
                "tied_best_partial": int(p in PARTIAL and lop <= 0.0),
                "best_partial_minus": dp if p in PARTIAL else "",
                "best_partial_minus_ci_low": lop if p in PARTIAL else "",
                "best_partial_minus_ci_high": hip if p in PARTIAL else "",
                "trainable_params": int(float(r0["trainable_params"] or 0)),
                "seconds": secs, "n_images": len(scores[p]),
                "c_minus_e": ce, "c_minus_e_ci_low": ce_lo, "c_minus_e_ci_high": ce_hi})
    return out


def summarize(root, path=CSV) -> list:
    rows = []
    for pre in PRETRAININGS:
        folder = pathlib.Path(root) / pre
        if (folder / "runs.json").exists():
            rows += grid_rows(folder, pre)
    if not rows:
        raise SystemExit(f"no finished grid under {root}")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(v) for k, v in r.items()})
    n = len({(r["pretraining"], r["target"]) for r in rows})
    print(f"wrote {path}: {n} targets, {len(rows)} rows")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["run", "summarize", "commands", "advise", "advise-budget",
                                     "score-budget"])
    ap.add_argument("--budget", type=float, default=0.5,
                    help="advise-budget: minutes (enough for part of the first rung)")
    ap.add_argument("--targets", nargs="*", default=[],
                    help="advise: the targets as PRETRAINING/SLUG (e.g. bus/shift_rim)")
    ap.add_argument("--root", default="/tmp/corpus")
    ap.add_argument("--only", action="append", help="pretraining(s) to run")
    ap.add_argument("--csv", default=str(CSV))
    a = ap.parse_args(argv)
    if a.what == "commands":
        for pre in PRETRAININGS:
            print(" ".join(f"'{c}'" if "?" in c or "&" in c else c
                           for c in study_command(pre, a.root)))
        return 0
    if a.what == "run":
        return run(a.root, a.only)
    if a.what == "advise":
        return run_advise(a.root, a.targets)
    if a.what == "advise-budget":
        return run_advise_budget(a.root, a.targets or learned_targets(), a.budget)
    if a.what == "score-budget":
        score_advise_budget(a.root)
        return 0
    summarize(a.root, pathlib.Path(a.csv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
