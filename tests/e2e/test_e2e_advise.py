"""End to end: `unet-ft advise` on the smoke profile, and advise beside a study."""

import json

import pytest


@pytest.mark.slow
def test_advise_on_the_smoke_profile_writes_its_files_and_picks_a_plan(tmp_path):
    from keras_unet_ft.advise import advise
    from keras_unet_ft.config import load_config
    from keras_unet_ft.plans import plan_set

    cfg = load_config("smoke", {"data.cache_dir": str(tmp_path / "cache"),
                                "data.pretrain_n": "18", "pretrain.epochs": "1",
                                "data.target_n": "16", "finetune.augment_total": "16"})
    out = tmp_path / "advice"
    plans = "contracting,expanding,shallow_to_deep:1,deep_to_shallow:1,gradual:top"
    a = advise(cfg, "sim_bus", out, plans=plans, progress=False)
    saved = json.loads((out / "advice.json").read_text())
    text = (out / "ADVICE.md").read_text()
    assert saved["recommendation"] == a["recommendation"] and saved["best"] == a["best"]
    assert a["best"] in plan_set(plans) and a["best"] in a["tied_with_best"]
    # recommended only when shown better than the pretrained net untouched
    assert a["recommendation"] == (a["best"] if a["baseline"]["ci_low"] > 0 else None)
    opening = (f"**Fine-tune `{a['best']}`**" if a["recommendation"] else
               f"**No plan is recommended**: the best finalist, `{a['best']}`")
    assert opening in text and "## Probe" in text
    assert [r["plans"] for r in a["rungs"]] == [5, 3, 2] and a["stopped"] is None
    # survivors go on (0.5 + 0.5 + 1 epochs), except gradual:top, trained again each rung
    g = int("gradual:top" in a["rungs"][1]["scores"])   # retrained: the whole 1 epoch
    assert a["rungs"][1]["epochs_added"] == pytest.approx((3 - g) * 0.5 + g * 1.0)
    assert a["epochs_trained"] < a["sweep_epochs"]
    assert len(a["probe"]) == 9 and a["n_train"] + a["n_val"] == a["n_images"]
    assert (out / "pretrained" / "model.keras").exists()
    # a budget that ends after the first rung: said so, the advice is that rung's best
    b = advise(cfg, "sim_bus", tmp_path / "short", plans=plans, budget_minutes=0.05,
               pretrained=out / "pretrained" / "model.keras", progress=False)
    assert b["stopped"] and len(b["rungs"]) == 1
    assert "budget ended the search early" in (tmp_path / "short" / "ADVICE.md").read_text()


@pytest.mark.slow
def test_advise_and_the_study_agree_where_nothing_learns(tiny_study, tmp_path, capsys):
    """At a learning rate too small to move any prediction, neither recommends a plan."""
    from conftest import reuse_pretrained, tiny_config
    from keras_unet_ft.cli import main
    from keras_unet_ft.pipeline import run
    from keras_unet_ft.results import recommendation

    over = {"data.targets": "sim_bus", "study.plans": "contracting,expanding",
            "finetune.learning_rate": "1e-12", "data.cache_dir": str(tmp_path / "c")}
    cfg = tiny_config(**over)
    out = run(cfg, reuse_pretrained(tiny_study, tmp_path / "study"), progress=False,
              figures=False)
    from keras_unet_ft.io import read_csv

    rec = recommendation(read_csv(out / "summary.csv"), "sim_bus")
    assert rec["not_better_than"] and "No plan is recommended" in (out / "REPORT.md").read_text()
    sets = [a for k, v in {**__import__("conftest").TINY, **over}.items()
            for a in ("--set", f"{k}={v}")]
    code = main(["advise", "--profile", "smoke", "--target", "sim_bus", "--plans",
                 "contracting,expanding", "--pretrained", str(out), "--out",
                 str(tmp_path / "advice")] + sets)
    said = capsys.readouterr()
    a = json.loads((tmp_path / "advice" / "advice.json").read_text())
    assert code == 0 and a["recommendation"] is None
    assert "No plan is recommended" in said.out and "too small to learn" in said.err
