#!/usr/bin/env python
"""Does ``unet-ft advise`` give the sweep's answer, and how much sooner?

    python experiments/run_all.py --out results/quick                 # the sweep (timed)
    unet-ft advise --target sim_bus --pretrained results/quick --out advice/sim_bus
    unet-ft advise --target synth_cxr --pretrained results/quick --out advice/synth_cxr
    python benchmarks/advise_vs_sweep.py results/quick advice/sim_bus advice/synth_cxr \\
        --sweep-seconds 2324 --pretrain-seconds 188

For each advice folder, against the sweep's summary (cross-validated Dice over every
held-out image, baselines left out):

* the rank correlation (Spearman, Kendall) between the sweep's ranking of the plans and
  advise's order (plans that reached a later rung first, then their score there);
* whether advise's pick lies in the sweep's tied-best group (plans whose paired 95 %
  interval of best − plan holds 0, ``results.mark_tied_best``) and the pick's sweep Dice;
* the speed-up in wall time: the sweep's fine-tuning grid (``--sweep-seconds`` minus
  ``--pretrain-seconds``) over advise's probe + halving time, and with pretraining
  counted once on both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from scipy import stats  # noqa: E402

from keras_unet_ft.plans import BASELINES  # noqa: E402
from keras_unet_ft.results import add_intervals, collect, mark_tied_best, summarize  # noqa: E402


def compare(sweep, advice: dict) -> dict:
    slug = advice["target_slug"]
    rows = collect(sweep)
    summary = mark_tied_best(sweep, add_intervals(sweep, summarize(rows), rows), rows)
    S = {r["plan"]: r for r in summary if r["target"] == slug
         and r["plan"].split("/")[-1] not in BASELINES}
    order = [o["plan"] for o in advice["order"] if o["plan"] in S]
    sweep_rank = sorted(order, key=lambda p: -S[p]["dice_images_mean"])
    pos_a = [order.index(p) for p in order]
    pos_s = [sweep_rank.index(p) for p in order]
    pick = advice["recommendation"]
    tied = [p for p in sweep_rank if S[p]["tied_best"]]
    return {
        "target": slug, "plans": len(order),
        "spearman": float(stats.spearmanr(pos_a, pos_s)[0]),
        "kendall": float(stats.kendalltau(pos_a, pos_s)[0]),
        "pick": pick, "pick_sweep_dice": S[pick]["dice_images_mean"],
        "pick_sweep_rank": sweep_rank.index(pick) + 1,
        "sweep_best": sweep_rank[0], "sweep_best_dice": S[sweep_rank[0]]["dice_images_mean"],
        "pick_in_sweep_tied_best": pick in tied, "sweep_tied_best": tied,
        "advise_tied": advice["tied_with_best"],
        "advise_seconds": advice["seconds"]["probe"] + advice["seconds"]["halving"],
        "plan_epochs": advice["epochs_trained"], "sweep_plan_epochs": advice["sweep_epochs"],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", help="the study's results folder")
    p.add_argument("advice", nargs="+", help="advise output folders (advice.json)")
    p.add_argument("--sweep-seconds", type=float, required=True,
                   help="wall time of the sweep (run_all), seconds")
    p.add_argument("--pretrain-seconds", type=float, default=0.0,
                   help="of which pretraining, seconds")
    args = p.parse_args(argv)
    rows = [compare(pathlib.Path(args.sweep),
                    json.loads((pathlib.Path(a) / "advice.json").read_text()))
            for a in args.advice]
    print("| target | plans | Spearman | Kendall | advise's pick (sweep rank, Dice) | sweep best "
          "| pick in sweep's tied-best group | sweep's tied-best group | plan-epochs advise / "
          "sweep | advise s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['target']} | {r['plans']} | {r['spearman']:.2f} | {r['kendall']:.2f} | "
              f"{r['pick']} ({r['pick_sweep_rank']}, {r['pick_sweep_dice']:.3f}) | "
              f"{r['sweep_best']} ({r['sweep_best_dice']:.3f}) | "
              f"{'yes' if r['pick_in_sweep_tied_best'] else 'no'} | "
              f"{len(r['sweep_tied_best'])} plans | {r['plan_epochs']:g} / "
              f"{r['sweep_plan_epochs']} | {r['advise_seconds']:.0f} |")
    grid = args.sweep_seconds - args.pretrain_seconds
    adv = sum(r["advise_seconds"] for r in rows)
    print(f"\nfine-tuning: sweep grid {grid:.0f} s vs advise {adv:.0f} s -> "
          f"{grid / adv:.1f}x less wall time")
    print(f"with pretraining once on each side: {args.sweep_seconds:.0f} s vs "
          f"{adv + args.pretrain_seconds:.0f} s -> "
          f"{args.sweep_seconds / (adv + args.pretrain_seconds):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
