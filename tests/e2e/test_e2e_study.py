"""Studies of their own beside the tiny one: faults, determinism, repeats + nested selection,
shards (processes, Slurm arrays, a fresh folder)."""

import csv
import json
import os
import re

import pytest

from conftest import TINY, reuse_pretrained, tiny_config
from keras_unet_ft import finetune
from keras_unet_ft.pipeline import run


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def faulty_study(tiny_study, tmp_path_factory):
    """One 4-run study on sim_bus with two faults: ``contracting`` fold 0 diverges, ``expanding``
    fold 1 raises. (Two tests once ran a study each, one fault apiece; each fault is on its own
    plan here, so what each test reads is as it was.)"""
    from keras_unet_ft.runtime import Diverged

    cfg = tiny_config(**{"data.targets": "sim_bus", "study.plans": "contracting,expanding",
                         "study.baselines": "false"})
    real = finetune.FoldSession.train
    faults = {("contracting", 0): Diverged("loss became NaN/inf at epoch 1"),
              ("expanding", 1): FloatingPointError("simulated divergence")}

    def faulty(self, plan, *a, **k):
        if (str(plan), self.fold) in faults:
            raise faults[(str(plan), self.fold)]
        return real(self, plan, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(finetune.FoldSession, "train", faulty)
        return run(cfg, reuse_pretrained(tiny_study, tmp_path_factory.mktemp("faulty") / "r"),
                   progress=False, figures=False)


def test_failed_run_is_recorded_and_others_finish(faulty_study):
    out = faulty_study
    rows = _rows(out / "results.csv")
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(rows) == 4 and len(failed) == 1
    assert "simulated divergence" in failed[0]["reason"]
    assert (failed[0]["plan"], failed[0]["fold"]) == ("expanding", "1")
    assert {r["status"] for r in rows if r["plan"] == "expanding" or r["fold"] == "1"} <= {
        "ok", "failed"}                                  # the others finished
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
    run(cfg2, again, progress=False, figures=False)
    a = {(r["plan"], r["fold"]): r["dice_mean"] for r in _rows(out / "results.csv")
         if r["target"] == "sim_bus"}
    b = {(r["plan"], r["fold"]): r["dice_mean"] for r in _rows(again / "results.csv")}
    assert len(b) == 4 and all(a[k] == v for k, v in b.items())


@pytest.mark.slow
def test_repeats_and_nested_selection_end_to_end(tiny_study, tmp_path):
    """study.seeds=2 + study.nested: each repeat has its own folds and seeds; the report
    gives the best plan, the plans tied with it and the nested estimate."""
    out = tmp_path / "r"
    cfg = tiny_config(**{"study.seeds": "2", "study.nested": "true", "data.targets": "sim_bus",
                         "study.plans": "contracting,expanding", "study.baselines": "false",
                         "data.cache_dir": str(tmp_path / "cache")})
    run(cfg, reuse_pretrained(tiny_study, out), progress=False, figures=False)
    folds0 = json.loads((out / "splits/sim_bus.json").read_text())["folds"]
    folds1 = json.loads((out / "splits/sim_bus_repeat_1.json").read_text())["folds"]
    assert folds0 != folds1
    s0 = json.loads((out / "runs/sim_bus/expanding/fold_0/summary.json").read_text())
    s1 = json.loads((out / "runs/sim_bus/expanding/fold_0_repeat_1/summary.json").read_text())
    assert (s0["repeat"], s1["repeat"]) == (0, 1) and s0["seed"] != s1["seed"]
    inner = json.loads((out / "runs/sim_bus/expanding/fold_0_inner/summary.json").read_text())
    assert inner["inner"] is True and inner["n_test"] < s0["n_test"] + s0["n_train"]
    nested = _rows(out / "nested.csv")
    assert [(r["repeat"], r["fold"]) for r in nested] == [("0", "0"), ("0", "1"), ("1", "0"),
                                                        ("1", "1")]
    assert {r["picked"] for r in nested} <= {"contracting", "expanding"}
    report = (out / "REPORT.md").read_text()
    assert "repeated 2 times" in report and "### Which plan?" in report
    assert "Nested selection" in report
    assert "_inner" not in (out / "results.csv").read_text()


@pytest.mark.slow
def test_parallel_shard_processes_share_one_folder(tiny_study, tmp_path):
    cfg = tiny_config(**{"data.targets": "sim_bus", "study.plans": "contracting,expanding",
                         "study.baselines": "false",
                         "data.cache_dir": str(tmp_path / "cache")})
    out = run(cfg, reuse_pretrained(tiny_study, tmp_path / "r"), jobs=2, progress=False,
              figures=False)
    rows = _rows(out / "results.csv")
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    assert (out / "REPORT.md").exists()


def test_diverged_runs_are_listed_kept_out_and_fail_the_exit_code(faulty_study):
    from keras_unet_ft.pipeline import EXIT_RUNS_FAILED, outcome

    out = faulty_study
    rows = {(r["plan"], r["fold"]): r for r in _rows(out / "results.csv")}
    assert rows[("contracting", "0")]["status"] == "diverged"
    assert rows[("contracting", "1")]["status"] == "ok"
    summary = {r["plan"]: r for r in _rows(out / "summary.csv")}
    assert summary["contracting"]["folds_ok"] == "1"       # kept out of the mean
    report = (out / "REPORT.md").read_text()
    assert "sim_bus / contracting / fold 0: diverged: loss became NaN/inf" in report
    code, message = outcome(out)
    assert code == EXIT_RUNS_FAILED and "1 diverged" in message


@pytest.mark.slow
def test_a_slurm_job_array_shares_one_results_folder(tiny_study, tmp_path, monkeypatch, capsys):
    """prepare -> two array tasks (shards from the Slurm variables) -> report, as the
    examples/slurm scripts run them; the report refuses a partial grid."""
    from keras_unet_ft.cli import main

    for k in list(os.environ):
        if k.startswith("SLURM_"):
            monkeypatch.delenv(k)
    out = tmp_path / "r"
    sets = []
    for k, v in {**TINY, "data.targets": "sim_bus", "study.plans": "contracting,expanding",
                 "study.baselines": "false", "data.cache_dir": str(tmp_path / "c")}.items():
        sets += ["--set", f"{k}={v}"]
    reuse_pretrained(tiny_study, out)      # prepare reuses it (pretraining: tested elsewhere)
    assert main(["study", "--profile", "smoke", "--out", str(out), "--prepare-only",
                 "--quiet"] + sets) == 0
    assert (out / "config.json").exists() and list(out.glob("pretrained/**/model.keras"))
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    assert main(["study", "--config", str(out / "config.json"), "--out", str(out),
                 "--quiet"]) == 0
    assert "shard 0/2" in capsys.readouterr().err
    assert not (out / "REPORT.md").exists()
    assert main(["report", str(out), "--no-figures"]) == 4     # task 1 has not run yet
    assert not (out / "REPORT.md").exists()
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert main(["study", "--config", str(out / "config.json"), "--out", str(out),
                 "--quiet"]) == 0
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    monkeypatch.delenv("SLURM_ARRAY_TASK_COUNT")
    assert main(["report", str(out), "--no-figures"]) == 0
    assert len(list(out.glob("runs/*/*/fold_*/summary.json"))) == 4
    assert (out / "REPORT.md").exists()


@pytest.mark.slow
def test_two_shards_into_a_fresh_folder_pretrain_once(tmp_path):
    """Two shard processes (a Slurm array without --prepare-only) once raced over the
    pretraining checkpoint and both failed on every rerun."""
    import os
    import subprocess
    import sys

    from conftest import TINY

    sets = [a for k, v in {**TINY, "data.targets": "sim_bus", "study.plans": "contracting",
                           "study.baselines": "false", "pretrain.epochs": "2",
                           "data.cache_dir": str(tmp_path / "cache")}.items()
            for a in ("--set", f"{k}={v}")]
    cmd = [sys.executable, "-m", "keras_unet_ft.cli", "study", "--profile", "smoke",
           "--out", str(tmp_path / "r"), "--no-aggregate", "--quiet"] + sets
    env = {**os.environ, "UNET_FT_CACHE": str(tmp_path / "cache")}
    procs = [subprocess.Popen(cmd + ["--shard", f"{i}/2"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    from keras_unet_ft.io import read_csv

    assert ([int(r["epoch"]) for r in read_csv(tmp_path / "r" / "pretrained" / "history.csv")]
            == [1, 2])
    assert (sorted(p.name for p in (tmp_path / "r" / "runs" / "sim_bus" / "contracting").iterdir())
            == ["fold_0", "fold_1"])
