"""The real pipeline end to end at tiny scale: files, resume, failures, report, determinism."""

import csv
import json
import re

import numpy as np
import pytest

from conftest import tiny_config
from keras_unet_ft import study as study_mod
from keras_unet_ft.study import parse_shard, plan_set, run_study


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_files_and_results_rows(tiny_study):
    out, cfg = tiny_study
    for name in ("config.json", "results.csv", "summary.csv", "stats.csv", "REPORT.md",
                 "pretrained/model.keras", "pretrained/history.csv", "splits/sim_bus.json"):
        assert (out / name).exists(), name
    prov = json.loads((out / "config.json").read_text())
    assert prov["config"]["model"]["size"] == 32 and "keras" in prov["versions"]
    assert "git_revision" in prov
    rows = _rows(out / "results.csv")
    # 2 targets x 2 folds x (6 plans + none + scratch)
    assert len(rows) == 2 * 2 * 8
    assert {r["status"] for r in rows} == {"ok"}
    d9 = [r for r in rows if r["plan"] == "deep_to_shallow:9"]
    assert d9 and all(r["trained_as"] == "shallow_to_deep:9" for r in d9)  # trained once
    run = out / rows[0]["run_dir"]
    for name in ("summary.json", "per_image.csv", "history.csv", "predictions.npz"):
        assert (run / name).exists()
    s = json.loads((run / "summary.json").read_text())
    for key in ("dice_mean", "dice_std", "pixel_error_mean", "adjusted_rand_mean",
                "trainable_params", "train_seconds", "seconds_per_epoch", "epochs", "seed",
                "status", "weight_change"):
        assert key in s
    none = [r for r in rows if r["plan"] == "none"]
    assert all(r["epochs"] == "0" and r["trainable_params"] == "0" for r in none)


def test_frozen_blocks_did_not_move(tiny_study):
    out, _ = tiny_study
    s = json.loads((out / "runs/sim_bus/deep_to_shallow-1/fold_0/summary.json").read_text())
    wc = s["weight_change"]
    assert wc["9"] > 0 and all(wc[str(b)] == 0.0 for b in range(1, 9))


def test_report_numbers_equal_results(tiny_study):
    out, _ = tiny_study
    rows = _rows(out / "results.csv")
    report = (out / "REPORT.md").read_text()
    for target in ("sim_bus", "synth_cxr"):
        section = report.split(f"## {target}")[1]
        for plan in ("contracting", "expanding", "shallow_to_deep:1"):
            vals = [float(r["dice_mean"]) for r in rows
                    if r["target"] == target and r["plan"] == plan]
            expected = f"{np.mean(vals):.3f} ± {np.std(vals):.3f}"
            line = next(l for l in section.splitlines() if l.startswith(f"| {plan} |"))
            assert expected in line, (line, expected)
    assert "Findings of the paper" in report and "Failed runs" in report


def test_second_invocation_trains_nothing(tiny_study, monkeypatch):
    out, cfg = tiny_study
    calls = []
    monkeypatch.setattr(study_mod.FoldSession, "train",
                        lambda self, *a, **k: calls.append(a) or pytest.fail("trained"))
    run_study(cfg, out, progress=False)
    assert calls == []


def test_failed_run_is_recorded_and_others_finish(tmp_path, monkeypatch):
    cfg = tiny_config(**{"data.targets": "sim_bus", "study.plans": "contracting,expanding",
                         "study.baselines": "false"})
    real = study_mod.FoldSession.train

    def flaky(self, plan, *a, **k):
        if plan == "expanding" and self.fold == 1:
            raise FloatingPointError("simulated divergence")
        return real(self, plan, *a, **k)

    monkeypatch.setattr(study_mod.FoldSession, "train", flaky)
    out = tmp_path / "r"
    run_study(cfg, out, progress=False)
    rows = _rows(out / "results.csv")
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(rows) == 4 and len(failed) == 1
    assert "simulated divergence" in failed[0]["reason"]
    report = (out / "REPORT.md").read_text()
    assert re.search(r"sim_bus / expanding / fold 1: FloatingPointError: simulated divergence",
                     report)
    summary = _rows(out / "summary.csv")
    assert [r["folds_failed"] for r in summary if r["plan"] == "expanding"] == ["1"]


def test_same_seed_gives_identical_metrics(tiny_study, tmp_path):
    out, cfg = tiny_study
    again = tmp_path / "again"
    cfg2 = tiny_config(**{"data.targets": "sim_bus", "data.cache_dir": cfg.data.cache_dir,
                          "study.plans": "contracting,shallow_to_deep:1",
                          "study.baselines": "false"})
    run_study(cfg2, again, progress=False)
    a = {(r["plan"], r["fold"]): r["dice_mean"] for r in _rows(out / "results.csv")
         if r["target"] == "sim_bus"}
    b = {(r["plan"], r["fold"]): r["dice_mean"] for r in _rows(again / "results.csv")}
    assert len(b) == 4 and all(a[k] == v for k, v in b.items())


def test_masked_trainer_matches_keras_trainer_semantics(tiny_study):
    """Both trainers leave frozen layers bit-identical and move the trained ones."""
    import keras

    out, cfg = tiny_study
    pre = keras.saving.load_model(out / "pretrained/model.keras", compile=False)
    weights = pre.get_weights()
    rng = np.random.default_rng(0)
    x = rng.random((8, 32, 32, 1), dtype=np.float32)
    train = (x, (x > 0.5).astype(np.uint8))
    for trainer in ("masked", "keras"):
        c = tiny_config(**{"study.trainer": trainer})
        session = study_mod.FoldSession(c, 0, "fp32")
        model, report, rows, times, before, bm, _ = session.train("shallow_to_deep:2", train, weights)
        assert rows and np.isfinite(rows[-1]["loss"])
        for layer in model.layers:
            if not layer.weights:
                continue
            same = all(np.array_equal(a, b) for a, b in zip(before[layer.name], layer.get_weights()))
            assert same == (layer.name not in report.trainable_layers), (trainer, layer.name)


def test_mirrored_strategy_code_path_on_cpu(tiny_study):
    import keras

    from keras_unet_ft.training import get_strategy

    out, cfg = tiny_study
    weights = keras.saving.load_model(out / "pretrained/model.keras", compile=False).get_weights()
    x = np.random.default_rng(1).random((8, 32, 32, 1), dtype=np.float32)
    session = study_mod.FoldSession(cfg, 0, "fp32", get_strategy("mirrored"))
    assert session.kind == "keras"
    model, report, rows, *_ = session.train("expanding", (x, (x > 0.5).astype(np.uint8)), weights)
    assert len(rows) == cfg.finetune.epochs


def test_shards_partition_the_runs():
    cfg = tiny_config()
    runs, _, _ = study_mod.list_runs(cfg, cfg.data.targets)
    n = len(runs)
    shards = [[r for j, r in enumerate(runs) if j % 3 == i] for i in range(3)]
    assert sum(len(s) for s in shards) == n
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "x", "1/0"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_plan_sets():
    p = plan_set("paper")
    assert len(p) == 20 and p[:2] == ["contracting", "expanding"]
    assert len(plan_set("tuffc")) == 30
    assert plan_set("all, contracting") == ["all", "contracting"]


def test_config_overrides_and_errors():
    from keras_unet_ft.config import load_config, parse_set

    cfg = load_config("paper")
    assert (cfg.model.size, cfg.model.base_filters, cfg.finetune.folds) == (256, 64, 5)
    assert (cfg.pretrain.epochs, cfg.finetune.epochs, cfg.finetune.augment_total) == (40, 20, 600)
    assert load_config("quick", parse_set(["finetune.epochs=3"])).finetune.epochs == 3
    with pytest.raises(ValueError, match="unknown config key 'finetune.epochz'"):
        load_config("quick", {"finetune.epochz": 1})
    with pytest.raises(ValueError, match="unknown profile"):
        load_config("huge")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_set(["epochs"])


def test_parallel_shard_processes_share_one_folder(tmp_path):
    from keras_unet_ft.study import run_study_parallel

    cfg = tiny_config(**{"data.targets": "sim_bus", "study.plans": "contracting,expanding",
                         "study.baselines": "false",
                         "data.cache_dir": str(tmp_path / "cache")})
    out = run_study_parallel(cfg, tmp_path / "r", jobs=2, progress=False)
    rows = _rows(out / "results.csv")
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    assert (out / "REPORT.md").exists()


def test_stage_learning_rates_reach_each_stage(tiny_study, trainer="masked"):
    """A staged plan ``A>B`` trains stage 2 with its own rate: a vanishing second rate
    leaves the layers frozen in stage 1 where the pretrained net had them."""
    import keras

    out, _ = tiny_study
    weights = keras.saving.load_model(out / "pretrained/model.keras", compile=False).get_weights()
    x = np.random.default_rng(2).random((8, 32, 32, 1), dtype=np.float32)
    train = (x, (x > 0.5).astype(np.uint8))
    moved = {}
    for rates in ("1e-3,1e-3", "1e-3,1e-12"):
        c = tiny_config(**{"study.trainer": trainer, "finetune.stage_learning_rates": rates})
        session = study_mod.FoldSession(c, 0, "fp32")
        model, report, rows, _, before, _, _ = session.train("expanding:blocks>all", train, weights)
        assert [r["stage"] for r in rows] == [1, 2]
        w0, w1 = before["enc1_conv1"][0], model.get_layer("enc1_conv1").get_weights()[0]
        moved[rates] = float(np.abs(w1 - w0).max())
    assert moved["1e-3,1e-3"] > 1e-4 and moved["1e-3,1e-12"] < 1e-6, moved


@pytest.mark.parametrize("key,value,match", [
    ("finetune.stage_learning_rates", "1e-5,fast", "stage_learning_rates must be positive"),
    ("finetune.stage_learning_rates", "-1e-5", "stage_learning_rates must be positive"),
    ("sizes.counts", "50,0", "sizes.counts must be positive whole numbers"),
    ("sizes.counts", "50,1.5", "sizes.counts must be positive whole numbers"),
    ("sizes.run", "maybe", "sizes.run must be auto, yes or no"),
])
def test_size_study_and_stage_rate_errors_name_the_value(tmp_path, key, value, match):
    cfg = tiny_config(**{"sizes.run": "yes", "study.plans": "all,expanding:blocks>all", key: value})
    with pytest.raises(ValueError, match=match):
        run_study(cfg, tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "runs").exists()  # nothing trained


def test_size_subsets_are_nested_and_augmented_by_the_factor():
    from keras_unet_ft.data.dataset import Dataset

    cfg = tiny_config(**{"sizes.augment_factor": "3"})
    n = 20
    imgs = np.random.default_rng(0).random((n, 16, 16, 1), dtype=np.float32)
    ds = Dataset("t", imgs, (imgs > 0.5).astype(np.uint8), [f"i{k}" for k in range(n)])
    fold = {"train": ds.ids[:16], "test": ds.ids[16:]}
    picked = {}
    for size in (4, 8, 16):
        for aug in (False, True):
            (x, y), (xt, _, ids) = study_mod._fold_arrays(cfg, ds, fold, 0, size, aug)
            assert len(x) == (3 * size if aug else size) and ids == ds.ids[16:]
            picked[size] = {float(v) for v in x[:size, 0, 0, 0]}  # originals come first
    assert picked[4] < picked[8] < picked[16]  # nested subsets
    with pytest.raises(ValueError, match="n_train=17 but the fold has 16"):
        study_mod._fold_arrays(cfg, ds, fold, 0, 17, True)


def test_cpu_threads_left_alone_for_small_nets_and_after_start():
    import tensorflow as tf

    from keras_unet_ft.training import configure_cpu_threads

    before = tf.config.threading.get_inter_op_parallelism_threads()
    assert configure_cpu_threads(8) is None  # small nets keep TensorFlow's default
    tf.constant(1.0) + 1  # TensorFlow running: changing it now must not raise
    assert configure_cpu_threads(64) in (None, 1)
    assert tf.config.threading.get_inter_op_parallelism_threads() in (before, 1)
