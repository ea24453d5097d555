"""The real pipeline end to end at tiny scale: files, resume, failures, report, determinism."""

import csv
import json
import os

import numpy as np
import pytest

from conftest import tiny_config
from keras_unet_ft import finetune
from keras_unet_ft import study as study_mod
from keras_unet_ft.pipeline import run
from keras_unet_ft.study import parse_shard, run_study


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
    assert "Findings of the paper" in report and "Failed or diverged runs" in report


def test_second_invocation_trains_nothing(tiny_study, monkeypatch):
    out, cfg = tiny_study
    calls = []
    monkeypatch.setattr(finetune.FoldSession, "train",
                        lambda self, *a, **k: calls.append(a) or pytest.fail("trained"))
    run_study(cfg, out, progress=False)
    assert calls == []


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


def test_seeds_repeat_the_grid_and_nested_adds_inner_runs_without_baselines():
    cfg = tiny_config(**{"study.seeds": "2", "study.nested": "true",
                         "data.targets": "sim_bus", "study.plans": "contracting,expanding"})
    runs, _, _ = study_mod.list_runs(cfg, cfg.data.targets)
    outer = [r for r in runs if not r.inner]
    inner = [r for r in runs if r.inner]
    assert len(outer) == 2 * 2 * 4 and len(inner) == 2 * 2 * 2   # repeats x folds x plans
    assert {r.plan for r in inner} == {"contracting", "expanding"}
    assert len({r.rel_dir() for r in runs}) == len(runs)
    assert str(inner[0].rel_dir()) == "runs/sim_bus/contracting/fold_0_inner"
    assert any(str(r.rel_dir()).endswith("fold_1_repeat_1_inner") for r in inner)
    from keras_unet_ft.config import repeat_config, repeat_seed
    assert repeat_seed(cfg, 0) == cfg.study.seed != repeat_seed(cfg, 1)
    assert repeat_config(cfg, 1).study.seed == repeat_seed(cfg, 1) and repeat_config(cfg, 0) is cfg


@pytest.mark.slow
def test_rerun_with_other_settings_names_the_keys_and_trains_nothing(tiny_study, tmp_path,
                                                                     monkeypatch):
    import shutil

    out, cfg = tiny_study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = (copy / "config.json").read_text()
    changed = tiny_config(**{"data.cache_dir": cfg.data.cache_dir, "finetune.epochs": "2",
                             "finetune.learning_rate": "0.001"})
    monkeypatch.setattr(finetune.FoldSession, "train",
                        lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ValueError) as e:
        run(changed, copy, progress=False)
    msg = str(e.value)
    assert "finetune.epochs: 1 -> 2" in msg and "finetune.learning_rate: 0.0001 -> 0.001" in msg
    assert "--force" in msg
    assert (copy / "config.json").read_text() == before   # nothing rewritten


def test_the_same_target_twice_is_an_error(tmp_path):
    cfg = tiny_config(**{"data.targets": "sim_bus,sim_bus?seed=1"})
    from keras_unet_ft.data.study_data import check_targets

    check_targets(cfg.data.targets)                       # other options: other data
    with pytest.raises(ValueError, match="target 'sim_bus' is the same data as 'sim_bus'"):
        check_targets(["sim_bus", "sim_bus"])
    with pytest.raises(ValueError, match="same data"):
        check_targets([f"folder:{tmp_path}/x", f"folder:{tmp_path}/./x"])


@pytest.mark.slow
def test_a_truncated_pretrained_model_says_how_to_recover(tiny_study, tmp_path):
    import shutil

    out, cfg = tiny_study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "pretrained" / "model.keras").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="may be truncated: run again with --force-pretrain"):
        run_study(cfg, copy, progress=False)


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4"}, (0, 4)),
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1",
      "SLURM_ARRAY_TASK_MAX": "3"}, (2, 3)),
    ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "0",
      "SLURM_ARRAY_TASK_MAX": "4"}, "not one step apart"),
    ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "3"}, "must be integers"),
])
def test_slurm_shard_from_the_array_variables(env, expected):
    from keras_unet_ft.study import slurm_shard

    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            slurm_shard(env)
    else:
        assert slurm_shard(env) == expected


def _hold_in_another_process(path, content):
    """A live process holding the study lock of ``path`` with ``content`` (a config)."""
    import subprocess
    import sys

    code = ("import sys, time\nfrom keras_unet_ft.io import hold_shared\n"
            f"assert hold_shared({str(path)!r}, sys.stdin.read()) is None\n"
            "print('held', flush=True)\ntime.sleep(120)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    p.stdin.write(content)
    p.stdin.close()
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_study_with_another_config_is_refused_at_once(tmp_path):
    import json

    from keras_unet_ft.config import load_config
    from keras_unet_ft.study import claim_folder

    out = tmp_path / "r"
    a = load_config("smoke", {"finetune.epochs": "2"})
    b = load_config("smoke", {"finetune.epochs": "60"})
    other = _hold_in_another_process(out / ".study.lock", json.dumps(a.to_dict(), sort_keys=True))
    try:
        with pytest.raises(ValueError, match=r"being written right now by another study .*"
                                             r"finetune.epochs: 2 -> 60"):
            claim_folder(b, out)
        claim_folder(a, out)            # the same config shares the folder (shards)
    finally:
        other.kill()
        other.wait()
    from keras_unet_ft.io import release

    release(out / ".study.lock")
    claim_folder(b, out)                # the holder is gone: the folder is free again
    release(out / ".study.lock")


def test_one_process_moving_to_another_config_takes_the_lock_anew(tmp_path):
    """The lock is keyed by the resolved folder and its content follows this process's config:
    a live holder of the old config refuses the new one, whatever the path's spelling."""
    import pathlib

    from keras_unet_ft.config import load_config
    from keras_unet_ft.io import release
    from keras_unet_ft.study import claim_folder

    out = tmp_path / "r"
    a = load_config("smoke", {"finetune.epochs": "2"})
    b = load_config("smoke", {"finetune.epochs": "3"})
    claim_folder(a, out)
    claim_folder(a, pathlib.Path(os.path.relpath(out)))          # same folder, other spelling
    other = _hold_in_another_process(out / ".study.lock", json.dumps(a.to_dict(), sort_keys=True))
    try:
        with pytest.raises(ValueError, match="finetune.epochs: 2 -> 3"):
            claim_folder(b, out)
    finally:
        other.kill()
        other.wait()
    claim_folder(b, out)
    assert json.loads((out / ".study.lock").read_text())["finetune"]["epochs"] == 3
    release(out / ".study.lock")
