"""The pipeline end to end on the Cheng & Lam set (X-Unet, V-Unet, dataset-size study)."""

import pytest


@pytest.mark.slow
def test_cheng_study_end_to_end(tmp_path):
    from conftest import tiny_config
    from keras_unet_ft.figures import CHENG_FIG3, fig3_examples
    from keras_unet_ft.pipeline import run

    cfg = tiny_config(**{"data.targets": "sim_lus", "study.plans": "cheng",
                         "study.baselines": "true", "model.encoder_weights": "none",
                         "sizes.counts": "2,4,6", "sizes.plans": "xunet/all",
                         "finetune.stage_learning_rates": "1e-3,5e-4",
                         "data.cache_dir": str(tmp_path / "cache")})
    out = run(cfg, tmp_path / "r", progress=False)
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
    assert len(sizes) == 3 * 2 * cfg.finetune.folds
    for r in sizes:
        n, aug = int(r["n_originals"]), int(r["augment"])
        if n > 4:
            assert r["status"] == "skipped" and "fewer than 6" in r["reason"]
        else:
            assert r["status"] == "ok" and int(r["n_train"]) == (2 * n if aug else n)
    assert "### Dice vs training-set size" in report and "Skipped" in report
    assert (out / "figures" / "dice_vs_training_size.png").exists()
