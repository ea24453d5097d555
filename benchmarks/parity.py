"""Dice of bf16 vs fp32 on one small study: same data, folds, seed and plans.

    python benchmarks/parity.py [OUT]           # default OUT=/tmp/unet_ft_parity

Runs the quick profile on ``sim_bus`` with three plans (contracting, expanding,
all) and a smaller pretraining (600 images x 4 epochs) twice - ``fp32`` and
``bf16`` (the ``mixed_bfloat16`` policy, sigmoid and loss in fp32) - and prints
Dice per plan (mean +- std over folds), the paired difference over held-out
images, and the wall time of each precision. Results stay in OUT/<precision>/.
"""

import csv
import os
import pathlib
import sys
import time

import numpy as np

os.environ.setdefault("UNET_FT_NO_PROGRESS", "1")

from keras_unet_ft.config import load_config  # noqa: E402
from keras_unet_ft.results import write_tables  # noqa: E402
from keras_unet_ft.study import run_study  # noqa: E402

PLANS = "contracting,expanding,all"
OVERRIDES = {"data.targets": "sim_bus", "study.plans": PLANS, "study.baselines": "false",
             "data.pretrain_n": "600", "pretrain.epochs": "4"}


def per_image(out):
    """{(plan, image id): dice} of a finished study."""
    res = {}
    for row in csv.DictReader(open(out / "results.csv")):
        for r in csv.DictReader(open(out / row["run_dir"] / "per_image.csv")):
            res[(row["plan"], r["id"])] = float(r["dice"])
    return res


def main(root):
    root = pathlib.Path(root)
    summaries, images, seconds = {}, {}, {}
    for prec in ("fp32", "bf16"):
        cfg = load_config("quick", {**OVERRIDES, "study.precision": prec})
        t = time.perf_counter()
        out = run_study(cfg, root / prec, progress=False)
        seconds[prec] = time.perf_counter() - t
        write_tables(out)
        summaries[prec] = {r["plan"]: r for r in csv.DictReader(open(out / "summary.csv"))}
        images[prec] = per_image(out)
    print(f"\n## bf16 vs fp32 Dice, quick profile on sim_bus ({PLANS}), same folds and seed\n")
    print("| plan | fp32 Dice | bf16 Dice | bf16 − fp32 (mean over images) | max abs per image |")
    print("|---|---|---|---|---|")
    for plan in PLANS.split(","):
        a, b = summaries["fp32"][plan], summaries["bf16"][plan]
        ids = sorted(k for k in images["fp32"] if k[0] == plan and k in images["bf16"])
        d = np.array([images["bf16"][k] - images["fp32"][k] for k in ids])
        print(f"| {plan} | {float(a['dice_mean']):.3f} ± {float(a['dice_std']):.3f} | "
              f"{float(b['dice_mean']):.3f} ± {float(b['dice_std']):.3f} | {d.mean():+.4f} "
              f"(n={len(d)}) | {np.abs(d).max():.3f} |")
    print(f"\nwall time (pretraining + {3 * len(PLANS.split(','))} runs, no figures): "
          f"fp32 {seconds['fp32']:.0f} s, bf16 {seconds['bf16']:.0f} s "
          f"(bf16 / fp32 = {seconds['bf16'] / seconds['fp32']:.2f})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/unet_ft_parity")
