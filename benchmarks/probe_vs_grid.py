#!/usr/bin/env python
"""How often does a zero-training probe pick the plan the trained grid picks?

    python benchmarks/probe_vs_grid.py --root /tmp/corpus      # probes on every grid, scored
    python benchmarks/probe_vs_grid.py                         # scored from the committed files

Ground truth: ``benchmarks/probe_corpus.csv`` (``probe_corpus.py summarize``). The probes'
block scores of every target are computed at the grid's pretrained weights on at most 64 of
the training images of the grid's fold 0 (never its held-out images) and kept in
``benchmarks/probe_scores.json``, so the scoring reruns from committed files alone.

Every predictor (``probes.predictors()``: each probe under the ``mean`` and ``share`` rules,
and the baselines) is scored on four questions:

* **partial** - the best plan among the partial plans (every plan but ``all`` and ``none``):
  top-1 = its pick lies in the grid's tied-best group of the partial plans (paired 95 %
  interval of best − plan holds 0); regret = Dice of the grid's best partial plan minus the
  pick's (with the share of targets where the paired interval of that difference lies above
  0); Kendall tau between the predictor's order and the grid's Dice over the partial plans;
* **beats_all** - whether some partial plan beats all layers: the grid says yes when a
  partial plan is best and ``all`` is not in the tied-best group; the predictor says yes when
  it ranks a partial plan above ``all``; accuracy;
* **ranking** - the whole order of the trained plans (partial plans and ``all``): top-1 in the
  tied-best group, regret, Kendall tau;
* **c vs e** - the paper's own question, contracting or expanding, on the targets where the
  grid decides it (the paired interval of contracting − expanding excludes 0): the share where
  the predictor ranks the winner above the loser (``ce_correct``; ``ce_decided`` targets).

Costs in seconds per target: the probe (its own gradient or forward passes), the grid (the
training seconds of its runs, summed over plans and folds) and ``advise``'s successive halving:
measured where ``probe_corpus.py advise`` ran it (``ROOT/advice/PRE/TARGET/advice.json``, scored
as a predictor: its order; kept in ``benchmarks/probe_advise.json``), else estimated (its
plan-epochs by ``advise.halving_schedule`` at the grid's seconds per plan-epoch). The random
baseline is the mean over 200 seeded orders. The best probe is also chosen leaving each target
out (chosen on the others, scored on it), and every table is repeated on the targets where the
grid's best plan is shown better than the pretrained net untouched.

Writes the table to stdout, ``keras_unet_ft/probe_agreement.json`` (what ``unet-ft advise
--probe-only`` prints beside its ranking) and the figure ``--figure`` (regret against cost).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import pathlib
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402

from probe_corpus import CSV, PARTIAL, SCALE, targets_of  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
SCORES = HERE / "probe_scores.json"
AGREEMENT = HERE.parent / "keras_unet_ft" / "probe_agreement.json"   # shipped with the package
ADVISE = HERE / "probe_advise.json"
TRAINED = PARTIAL + ("all",)
RANDOM_SEEDS = 200


def read_corpus(path=CSV):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    out = {}
    for r in rows:
        out.setdefault((r["pretraining"], r["target"]), {})[r["plan"]] = r
    return out


# -- the probes on every grid ---------------------------------------------------------
def probe_target(root, pre: str, target_slug: str) -> dict:
    """Every probe's block scores (and seconds) for one grid of the corpus."""
    import keras

    from keras_unet_ft.blocks import BlockMap
    from keras_unet_ft.data.study_data import load_pretrain_data, load_target, target_folds
    from keras_unet_ft.layout import load_config_of, pretrained_folder, splits_path
    from keras_unet_ft.model import build_from_config, model_config
    from keras_unet_ft.probes import plan_blocks, run_probes

    folder = pathlib.Path(root) / pre
    cfg = load_config_of(folder)
    spec = next(t for t in targets_of(pre) if t == target_slug or f"name={target_slug}" in t)
    keras.backend.clear_session()
    model = build_from_config(model_config(cfg, cfg.model.kind))
    model.set_weights(keras.saving.load_model(
        pretrained_folder(folder, cfg.model.kind).model, compile=False).get_weights())
    bm = BlockMap(model)
    ds = load_target(cfg, spec)
    folds = target_folds(cfg, ds, splits_path(folder, spec))
    index = {i: j for j, i in enumerate(ds.ids)}
    tr = np.array([index[i] for i in folds[0]["train"]])
    pre_ds = load_pretrain_data(cfg)
    t = time.perf_counter()
    res = run_probes(model, bm, ds.images[tr], ds.masks[tr], pre_images=pre_ds.images,
                     loss=cfg.finetune.loss, batch_size=cfg.finetune.batch_size,
                     seed=cfg.study.seed)
    return {"probes": res, "seconds_all": time.perf_counter() - t,
            "blocks": {p: plan_blocks(p, bm) for p in TRAINED},
            "n_blocks": len(bm.blocks)}


def compute_scores(root, corpus, path=SCORES) -> dict:
    done = json.loads(path.read_text()) if path.exists() else {}
    for pre, target in corpus:
        key = f"{pre}/{target}"
        if key in done:
            continue
        t = time.perf_counter()
        done[key] = probe_target(root, pre, target)
        print(f"probed {key} in {time.perf_counter() - t:.1f} s", flush=True)
        path.write_text(json.dumps(done, indent=1))
    return done


# -- scoring -----------------------------------------------------------------------------
def kendall(order, dice) -> float:
    from scipy.stats import kendalltau

    pos = {p: -i for i, p in enumerate(order)}
    plans = list(order)
    tau = kendalltau([pos[p] for p in plans], [dice[p] for p in plans]).statistic
    return float(tau) if np.isfinite(tau) else 0.0


def _f(x) -> float:
    return float(x) if x not in ("", None) else math.nan


def score_one(order, grid) -> dict:
    """The three questions for one predictor's order on one target's grid."""
    dice = {p: _f(grid[p]["dice"]) for p in TRAINED}
    params = {p: int(_f(grid[p]["trainable_params"])) for p in TRAINED}
    part = [p for p in order if p in PARTIAL]
    pick = part[0]
    best_p = max(PARTIAL, key=lambda p: dice[p])
    r = grid[pick]
    out = {"partial_pick": pick,
           "partial_top1": int(r["tied_best_partial"] == "1"),
           "partial_regret": dice[best_p] - dice[pick],
           "partial_regret_decided": int(_f(r["best_partial_minus_ci_low"]) > 0),
           "partial_tau": kendall(part, dice)}
    truth = grid["all"]["tied_best"] != "1"
    said = order.index(part[0]) < order.index("all")
    out.update({"beats_all_truth": int(truth), "beats_all_said": int(said),
                "beats_all_correct": int(truth == said)})
    # contracting vs expanding where the grid decides it (the paired interval excludes 0)
    lo, hi = _f(grid["contracting"].get("c_minus_e_ci_low")), _f(
        grid["contracting"].get("c_minus_e_ci_high"))
    decided = lo > 0 or hi < 0
    said_c = order.index("contracting") < order.index("expanding")
    out["ce_correct"] = float(said_c == (lo > 0)) if decided else math.nan
    whole = [p for p in order if p in TRAINED]
    best = max(TRAINED, key=lambda p: dice[p])
    pick = whole[0]
    out.update({"ranking_pick": pick, "ranking_top1": int(grid[pick]["tied_best"] == "1"),
                "ranking_regret": dice[best] - dice[pick],
                "ranking_regret_decided": int(_f(grid[pick]["best_minus_ci_low"]) > 0),
                "ranking_tau": kendall(whole, dice), "pick_params": params[pick]})
    return out


METRICS = ("partial_top1", "partial_tau", "partial_regret", "partial_regret_decided",
           "beats_all_correct", "ranking_top1", "ranking_tau", "ranking_regret", "ce_correct")


def evaluate(corpus, scores):
    from keras_unet_ft.probes import predictors, rank_plans

    per = {}   # predictor -> list of per-target rows
    for (pre, target), grid in corpus.items():
        s = scores[f"{pre}/{target}"]
        bs = {k: v["scores"] for k, v in s["probes"].items()}
        blocks = {p: s["blocks"][p] for p in TRAINED}
        params = {p: int(_f(grid[p]["trainable_params"])) for p in TRAINED}
        grid_seconds = sum(_f(grid[p]["seconds"]) for p in TRAINED)
        for name in predictors():
            if name == "random":
                rows = [score_one(rank_plans(name, bs, blocks, params, seed=k), grid)
                        for k in range(RANDOM_SEEDS)]
                row = {m: float(np.mean([r[m] for r in rows])) for m in rows[0]
                       if not m.endswith("pick")}
                row["partial_pick"] = row["ranking_pick"] = "(random)"
            else:
                order = rank_plans(name, bs, blocks, params)
                if order is None:
                    continue
                row = score_one(order, grid)
            probe = name.split("/")[0].replace("feature_need", "feature").replace(
                "feature_good", "feature")
            row["seconds"] = (s["probes"][probe]["seconds"] if probe in s["probes"] else 0.0)
            row.update({"pretraining": pre, "target": target, "grid_seconds": grid_seconds})
            per.setdefault(name, []).append(row)
    return per


def advise_seconds(grid_seconds: float, n_plans: int = len(TRAINED)) -> float:
    """advise's successive halving at the grid's seconds per plan-epoch (an estimate)."""
    from keras_unet_ft.advise import halving_schedule

    epochs, folds = int(SCALE["finetune.epochs"]), int(SCALE["finetune.folds"])
    sched = halving_schedule(n_plans, epochs)
    plan_epochs, trained = 0.0, 0.0
    for r in sched:   # survivors go on from where they stopped: a rung adds its increment
        plan_epochs += r["plans"] * (r["epochs"] - trained)
        trained = r["epochs"]
    return grid_seconds / (n_plans * epochs * folds) * plan_epochs


def advise_rows(root, corpus) -> list:
    """advise's measured pick on the targets it ran on (``probe_corpus.py advise``), scored
    as a predictor: its best finalist, then the other plans in its order."""
    rows = []
    for (pre, target), grid in corpus.items():
        path = pathlib.Path(root) / "advice" / pre / target / "advice.json"
        if not path.exists():
            continue
        a = json.loads(path.read_text())
        order = [o["plan"] for o in a["order"]]
        order = [p for p in order if p in TRAINED] + [p for p in TRAINED if p not in order]
        row = score_one(order, grid)
        row.update({"pretraining": pre, "target": target,
                    "seconds": a["seconds"]["probe"] + a["seconds"]["halving"],
                    "grid_seconds": sum(_f(grid[p]["seconds"]) for p in TRAINED)})
        rows.append(row)
    return rows


def summary(per) -> list:
    out = []
    for name, rows in per.items():
        r = {"predictor": name, "targets": len(rows)}
        for m in METRICS:
            v = np.array([x.get(m, math.nan) for x in rows], float)
            # ce_correct: over the targets where the grid decides contracting vs expanding
            r[m] = float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
            if m == "ce_correct":
                r["ce_decided"] = int(np.isfinite(v).sum())
            if m.endswith("regret"):
                r[m + "_median"] = float(np.median(v))
        r["seconds_median"] = float(np.median([x["seconds"] for x in rows]))
        r["grid_seconds_median"] = float(np.median([x["grid_seconds"] for x in rows]))
        r["cost_share"] = r["seconds_median"] / r["grid_seconds_median"]
        r["goal"] = bool(r["partial_top1"] >= 0.7 and r["partial_tau"] >= 0.6
                         and r["partial_regret_median"] <= 0.01 and r["cost_share"] <= 0.02)
        out.append(r)
    return out


def _rank_key(rows) -> tuple:
    """How the best probe is chosen: top-1 on the partial question, then lower median regret,
    then higher tau."""
    return (np.mean([x["partial_top1"] for x in rows]),
            -np.median([x["partial_regret"] for x in rows]),
            np.mean([x["partial_tau"] for x in rows]))


def leave_one_out(per) -> dict:
    """The honest score of "use the best probe": for each target, the predictor chosen on the
    other targets (by :func:`_rank_key`) scored on it."""
    names = [n for n in per if "/" in n and "advise" not in n]
    keys = [(x["pretraining"], x["target"]) for x in per[names[0]]]
    out, chosen = [], []
    for i, k in enumerate(keys):
        best = max(names, key=lambda n: _rank_key([x for j, x in enumerate(per[n]) if j != i]))
        chosen.append(best)
        out.append(per[best][i])
    return {"targets": len(out), "chosen": dict(zip(*np.unique(chosen, return_counts=True)))
            if chosen else {},
            "partial_top1": float(np.mean([x["partial_top1"] for x in out])),
            "partial_tau": float(np.mean([x["partial_tau"] for x in out])),
            "partial_regret_median": float(np.median([x["partial_regret"] for x in out])),
            "partial_regret": float(np.mean([x["partial_regret"] for x in out]))}


def print_table(rows) -> None:
    head = ("predictor", "n", "P top-1", "P tau", "P regret med", "P regret mean",
            "P regret decided", "beats-all acc", "R top-1", "R tau", "R regret med",
            "c vs e acc (decided)", "s", "cost %", "goal")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        ce = (f"{100 * r['ce_correct']:.0f} % ({r['ce_decided']})" if r.get("ce_decided")
              else "- (0)")
        print(f"| {r['predictor']} | {r['targets']} | {100 * r['partial_top1']:.0f} % | "
              f"{r['partial_tau']:+.2f} | {r['partial_regret_median']:.3f} | "
              f"{r['partial_regret']:.3f} | {100 * r['partial_regret_decided']:.0f} % | "
              f"{100 * r['beats_all_correct']:.0f} % | {100 * r['ranking_top1']:.0f} % | "
              f"{r['ranking_tau']:+.2f} | {r['ranking_regret_median']:.3f} | {ce} | "
              f"{r['seconds_median']:.1f} | {100 * r['cost_share']:.1f} | "
              f"{'yes' if r['goal'] else 'no'} |")


def figure(rows, per, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    any_rows = per["rgn/mean"]
    grid = float(np.median([x["grid_seconds"] for x in any_rows]))
    adv = float(np.median([advise_seconds(x["grid_seconds"]) for x in any_rows]))
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colours = {"mean": "tab:blue", "share": "tab:orange"}
    points = []
    for r in rows:
        name = r["predictor"]
        rule = name.split("/")[1] if "/" in name and "advise" not in name else None
        x, y = max(r["seconds_median"], 0.05), r["partial_regret_median"]
        ax.scatter(x, y, s=40, c=colours.get(rule, "tab:gray"), marker="o" if rule else "s",
                   zorder=3)
        points.append((name, x, y, -1 if rule == "mean" else 1))  # mean rule labelled left
    ax.scatter([grid], [0.0], c="black", marker="*", s=120, zorder=3)
    ax.set_xscale("log")
    ax.set_xlim(0.03, 300)
    ax.autoscale_view()
    # labels: per side, from the top down, each at least a line below the labels placed
    # near it (points at the same spot, e.g. shift/mean under shift/share, get a line each)
    pt = fig.dpi / 72
    for side in (-1, 1):
        placed = []
        group = sorted((p for p in points if p[3] == side),
                       key=lambda p: -ax.transData.transform(p[1:3])[1])
        for name, x, y, _ in group:
            dx, dy = ax.transData.transform((x, y))
            ly = dy - 3 * pt
            near = [py for px, py in placed if abs(px - dx) < 110 * pt]
            if near and ly > min(near) - 10 * pt:
                ly = min(near) - 10 * pt
            placed.append((dx, ly))
            ax.annotate(name, (x, y), fontsize=7, xytext=(12 * side, (ly - dy) / pt),
                        textcoords="offset points", ha="right" if side < 0 else "left",
                        va="center", arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.5"},
                        bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none",
                              "alpha": 0.85}, zorder=2)
    ax.annotate("grid (all plans, all folds)", (grid, 0.0), fontsize=8, xytext=(-40, 8),
                textcoords="offset points")
    if not any("advise" in r["predictor"] for r in rows):
        ax.axvline(adv, color="gray", ls=":", lw=1)
        ax.text(adv, ax.get_ylim()[1] * 0.95,
                " advise's halving,\n cost estimated from\n the grid's seconds",
                fontsize=7, va="top", color="gray")
    ax.axvline(0.02 * grid, color="tab:red", ls="--", lw=0.8)
    ax.axhline(0.01, color="tab:red", ls="--", lw=0.8)
    ax.text(0.02 * grid, ax.get_ylim()[1] * 0.45, " 2 % of the grid", fontsize=7,
            color="tab:red")
    ax.set_xlabel("seconds per target (median; log scale)")
    ax.set_ylabel("median regret on the partial-plan question (Dice)")
    n = rows[0]["targets"]
    ax.set_title(f"Zero-training probes against full grids ({n} targets; "
                 "blue: mean rule, orange: share rule, grey: baselines)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", help="the corpus's results folders (probes computed there); "
                    "without it the committed probe scores are used")
    ap.add_argument("--csv", default=str(CSV))
    ap.add_argument("--advice", help="the folder holding advice/PRE/TARGET/advice.json "
                    "(default: --root)")
    ap.add_argument("--figure", default="docs/figures/probe_regret_vs_cost.png")
    ap.add_argument("--per-target", action="store_true", help="print every target's picks")
    a = ap.parse_args(argv)
    corpus = read_corpus(a.csv)
    scores = (compute_scores(a.root, corpus) if a.root else json.loads(SCORES.read_text()))
    per = evaluate(corpus, scores)
    adv_root = a.advice or a.root
    if adv_root:
        adv = advise_rows(adv_root, corpus)
        if adv:
            per["advise (halving, measured)"] = adv
            ADVISE.write_text(json.dumps(adv, indent=1) + "\n")
    elif ADVISE.exists():
        per["advise (halving, measured)"] = json.loads(ADVISE.read_text())
    rows = summary(per)
    print(f"{len(corpus)} targets; scale: {json.dumps(SCALE)}")
    print_table(rows)
    # the targets where fine-tuning learned something: the grid's best plan is shown better
    # than the pretrained net untouched (paired interval of best − none above 0), the
    # study's rule for recommending a plan at all (results.recommendation)
    learned = {k: g for k, g in corpus.items() if _f(g["none"]["best_minus_ci_low"]) > 0}
    per_l = {name: [x for x in xs if (x["pretraining"], x["target"]) in learned]
             for name, xs in per.items()}
    rows_l = summary({k: v for k, v in per_l.items() if v})
    print(f"\nthe {len(learned)} targets where the best plan is shown better than the "
          "pretrained net untouched:")
    print_table(rows_l)
    loo = leave_one_out(per)
    loo_l = leave_one_out(per_l)
    for name, r in (("all targets", loo), ("targets that learned", loo_l)):
        print(f"leave one target out ({name}, {r['targets']}): the best probe chosen on the "
              f"others: top-1 {100 * r['partial_top1']:.0f} %, tau {r['partial_tau']:+.2f}, "
              f"median regret {r['partial_regret_median']:.3f} (mean "
              f"{r['partial_regret']:.3f}); chosen: "
              + ", ".join(f"{k} x{v}" for k, v in r["chosen"].items()))
    if a.per_target:
        for name, rs in per.items():
            print(name, [(x["target"], x["partial_pick"], round(x["partial_regret"], 3))
                         for x in rs])
    grid = float(np.median([x["grid_seconds"] for x in per["rgn/mean"]]))
    adv = float(np.median([advise_seconds(x["grid_seconds"]) for x in per["rgn/mean"]]))
    print(f"grid: median {grid:.0f} s per target; advise's successive halving (estimate): "
          f"median {adv:.0f} s")
    probes_only = [r for r in rows if "/" in r["predictor"] and "advise" not in r["predictor"]]
    best = max(probes_only, key=lambda r: _rank_key(per[r["predictor"]]))
    AGREEMENT.write_text(json.dumps({
        "best": best["predictor"], "targets": len(corpus), "scale": SCALE,
        "grid_seconds_median": grid, "advise_seconds_median_estimate": adv,
        "note": "the best predictor chosen on the same corpus it is scored on (optimistic)",
        "predictors": rows, "learned_targets": len(learned), "predictors_learned": rows_l,
        "leave_one_out": {k: (v if k != "chosen" else {a: int(b) for a, b in v.items()})
                          for k, v in loo.items()},
        "leave_one_out_learned": {k: (v if k != "chosen" else {a: int(b) for a, b in v.items()})
                                  for k, v in loo_l.items()}},
        indent=1) + "\n")
    print(f"best probe: {best['predictor']}; wrote {AGREEMENT}")
    if a.figure:
        pathlib.Path(a.figure).parent.mkdir(parents=True, exist_ok=True)
        figure(rows, per, a.figure)
        print(f"wrote {a.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
