"""layout: the results folder's names, slugs and per-run files."""

import json
import os
import re
import stat

import numpy as np
import pytest

from keras_unet_ft.io import atomic_write_text, read_json
from keras_unet_ft.layout import (RunSpec, load_predictions, plan_slug, read_run_summary,
                                  save_predictions, target_slug)


@pytest.mark.parametrize("plan, slug", [
    ("contracting", "contracting"),
    ("shallow_to_deep:3@level", "shallow_to_deep-3-level"),
    ("vunet/expanding:blocks>all", "vunet-expanding-blocks-all"),
    ("layers:^enc", "layers-" + __import__("hashlib").sha1(b"layers:^enc").hexdigest()[:8]),
])
def test_plan_slugs(plan, slug):
    assert plan_slug(plan) == slug


def test_target_slug_hashes_the_root():
    assert target_slug("sim_bus") == "sim_bus"
    a, b = target_slug("busi:/data/A"), target_slug("busi:/data/B")
    assert a.startswith("busi-") and a != b


def test_run_spec_round_trip_and_folder():
    r = RunSpec("sim_lus", 2, "xunet/all", ["xunet/shallow_to_deep:9"], "xunet", 50, False)
    d = r.to_dict()
    assert d["dir"] == "runs/sim_lus/sizes/n0050-noaug/xunet-all/fold_2"
    assert RunSpec.from_dict(json.loads(json.dumps(d))) == r


def test_predictions_round_trip(tmp_path):
    pred = np.random.default_rng(0).random((3, 5, 7)) > 0.5
    save_predictions(tmp_path, ["a", "b", "c"], pred)
    back = load_predictions(tmp_path)
    assert list(back) == ["a", "b", "c"] and np.array_equal(back["b"], pred[1])


@pytest.mark.parametrize("content, message", [
    ('{"status": "ok", "target": "t"}', "lacks"),
    ('{"status": "weird"}', "status 'weird'"),
    ('{"status": "ok", ', "not valid JSON"),
])
def test_bad_run_summaries_name_the_file(tmp_path, content, message):
    (tmp_path / "summary.json").write_text(content)
    with pytest.raises(ValueError, match=message) as e:
        read_run_summary(tmp_path)
    assert "summary.json" in str(e.value)


def test_atomic_writes_leave_readable_files(tmp_path):
    path = tmp_path / "sub" / "x.json"
    atomic_write_text(path, '{"a": 1}')
    assert read_json(path) == {"a": 1}
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]  # no temporary left


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "nowhere", "is not a folder; a results folder is what `unet-ft study"),
    (lambda d: d, "is not a results folder (no runs.json, no config.json)"),
])
def test_report_on_a_folder_that_is_no_results_folder(tmp_path, make, message, capsys):
    from keras_unet_ft.cli import main

    assert main(["report", str(make(tmp_path))]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("damage, message", [
    (lambda m: m.pop("targets"), "is not a study's runs.json (KeyError: 'targets')"),
    (lambda m: m["models"]["unet"].pop("units"), "is not a study's runs.json (TypeError"),
    (lambda m: m.update(version=99), "has version 99; this package reads version 1"),
])
def test_a_damaged_runs_json_is_a_bad_input_naming_the_file(tmp_path, damage, message):
    from conftest import make_handmade_results
    from keras_unet_ft.exitcodes import UserError
    from keras_unet_ft.layout import MANIFEST, read_manifest

    out = make_handmade_results(tmp_path / "r")
    m = read_json(out / MANIFEST)
    damage(m)
    (out / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(UserError, match=re.escape(message)):
        read_manifest(out)
    assert read_manifest(make_handmade_results(tmp_path / "ok")).units() == 9


def test_run_summaries_are_built_in_one_place_with_a_closed_status(tmp_path):
    """RunSummary: the status is one of STATUSES (a typo is an error where the summary is
    built, not a file the readers refuse later); summary.json keeps its keys and their order
    (the study's runs: status first; a fine-tuned model folder's: status after its facts)."""
    from keras_unet_ft.layout import STATUSES, RunSummary, write_run_summary

    assert STATUSES == ("ok", "diverged", "failed", "skipped")
    with pytest.raises(ValueError, match="not 'done'"):
        RunSummary.of("done", target="t")
    with pytest.raises(ValueError, match="not 'weird'"):
        write_run_summary(tmp_path, {"status": "weird"})
    ok = RunSummary.judged(None, target="t", fold=0)
    assert ok.ok and ok.reason == "" and list(ok.to_dict()) == ["status", "target", "fold"]
    bad = RunSummary.judged("loss is nan", status_last=True, target="t", plan="all")
    assert bad.to_dict() == {"target": "t", "plan": "all", "status": "diverged",
                             "reason": "diverged: loss is nan"}
    assert list(bad.to_dict()) == ["target", "plan", "status", "reason"]
    failed = RunSummary.of("failed", target="t", reason="OSError: disk", retry=True)
    write_run_summary(tmp_path, failed)
    assert list(read_json(tmp_path / "summary.json")) == ["status", "target", "reason", "retry"]
    assert RunSummary.from_dict(read_json(tmp_path / "summary.json")) == failed
