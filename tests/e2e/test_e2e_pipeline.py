"""The pipeline end to end on the Cheng & Lam set (X-Unet, V-Unet, dataset-size study) and
`run_all.py` on a BUSI-layout folder."""

import pytest


@pytest.mark.slow
def test_cheng_study_end_to_end(tmp_path):
    from conftest import tiny_config
    from keras_unet_ft.figures import CHENG_FIG3, fig3_examples, fig_dice_vs_size
    from keras_unet_ft.pipeline import run

    cfg = tiny_config(**{"data.targets": "sim_lus", "study.plans": "cheng",
                         "study.baselines": "true", "model.encoder_weights": "none",
                         "sizes.counts": "4,6", "sizes.plans": "xunet/all",
                         "finetune.stage_learning_rates": "1e-3,5e-4",
                         "data.cache_dir": str(tmp_path / "cache")})
    out = run(cfg, tmp_path / "r", progress=False, figures=False)   # the tiny study draws all
    import csv

    rows = list(csv.DictReader(open(out / "results.csv")))
    plans = {r["plan"] for r in rows}
    assert plans == {"xunet/all", "xunet/freeze_bottleneck", "vunet/expanding:blocks>all",
                     "xunet/none", "xunet/scratch"}
    assert all(r["status"] == "ok" for r in rows)
    v = [r for r in rows if r["model"] == "vunet"]
    assert v and all(r["epochs"] == str(2 * cfg.finetune.epochs) for r in v)  # two stages
    report = (out / "REPORT.md").read_text()
    assert "Cheng & Lam" in report and "random VGG16 encoder" in report
    assert "0.814 ± 0.007" in report
    png = fig3_examples(out, "sim_lus", plans=CHENG_FIG3, name="examples_vunet_vs_xunet")
    assert png.exists()
    # the dataset-size study ran with the cheng plans (4 training images per fold here)
    sizes = list(csv.DictReader(open(out / "sizes.csv")))
    assert len(sizes) == 2 * 2 * cfg.finetune.folds
    for r in sizes:
        n, aug = int(r["n_originals"]), int(r["augment"])
        if n > 4:
            assert r["status"] == "skipped" and "fewer than 6" in r["reason"]
        else:
            assert r["status"] == "ok" and int(r["n_train"]) == (2 * n if aug else n)
    assert "### Dice vs training-set size" in report and "Skipped" in report
    assert fig_dice_vs_size(out) == out / "figures" / "dice_vs_training_size.png"
    assert (out / "figures" / "dice_vs_training_size.png").exists()


@pytest.mark.slow
def test_run_all_on_a_busi_layout_with_options_then_a_changed_rerun(tiny_study, tmp_path):
    """The issue's check: a BUSI-layout folder with spec options; normal images (empty
    masks) left out; a rerun with another --set stops and names the keys (exit 2)."""
    import csv
    import os
    import pathlib
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    from conftest import reuse_pretrained

    root = tmp_path / "BUSI" / "Dataset_BUSI_with_GT"
    rng = np.random.default_rng(0)
    for cls, n in (("benign", 6), ("malignant", 4), ("normal", 3)):
        for i in range(1, n + 1):
            img = (rng.random((40, 48)) * 255).astype(np.uint8)
            mask = np.zeros((40, 48), np.uint8)
            if cls != "normal":
                mask[10:25, 12:30] = 255
                img[10:25, 12:30] //= 3
            (root / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.stack([img] * 3, -1)).save(root / cls / f"{cls} ({i}).png")
            Image.fromarray(mask).save(root / cls / f"{cls} ({i})_mask.png")
    run_all = pathlib.Path(__file__).parents[2] / "experiments" / "run_all.py"
    out = tmp_path / "out"
    base = [sys.executable, str(run_all), "--profile", "smoke", "--out", str(out),
            "--target", f"busi:{tmp_path / 'BUSI'}?include_normal=false", "--jobs", "1",
            "--set", "data.pretrain_n=18", "--set", "pretrain.epochs=1",
            "--set", "finetune.epochs=1", "--set", "finetune.augment_total=8",
            "--set", "study.plans=contracting,expanding", "--set", "study.baselines=false",
            "--set", f"data.cache_dir={tmp_path / 'cache'}", "--no-figures"]
    env = {**os.environ, "UNET_FT_NO_PROGRESS": "1"}
    reuse_pretrained(tiny_study, out)    # the same pretraining settings: not pretrained again
    first = subprocess.run(base, capture_output=True, text=True, env=env)
    assert first.returncode in (0, 3), first.stderr[-2000:]
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 4 and all(int(r["n_empty"]) == 0 for r in rows if r["status"] == "ok")
    assert sum(int(r["n_test"]) for r in rows if r["plan"] == "contracting") == 10  # no normal
    assert (out / "REPORT.md").exists() and not list(out.glob("figures/*.png"))  # --no-figures
    again = subprocess.run(base + ["--set", "finetune.learning_rate=0.001"],
                           capture_output=True, text=True, env=env)
    assert again.returncode == 2
    assert "finetune.learning_rate: 0.0001 -> 0.001" in again.stderr
