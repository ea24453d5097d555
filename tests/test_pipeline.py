"""The pipeline end to end on the Cheng & Lam set (X-Unet, V-Unet, dataset-size study)."""

import pytest


@pytest.mark.parametrize("args, message", [
    (["--set", "study.seeds=0"], "bad value for study.seeds: 0; expected a number > 0"),
    (["--set", "finetune.folds=1"], "bad value for finetune.folds: 1; expected a number >= 2"),
    (["--set", "nosuch.key=1"], "nosuch"),
    (["--set", "model.size=100"], "must be divisible by 2**depth = 16"),
])
def test_run_all_bad_settings_are_an_error_not_a_traceback(tmp_path, capsys, args, message):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[1] / "experiments" / "run_all.py"
    spec = importlib.util.spec_from_file_location("run_all_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--profile", "smoke", "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("run_all: error: ") and message in err, err
    assert not (tmp_path / "out").exists()   # nothing started


def test_closing_lines_recommend_as_the_report_does(tmp_path):
    from conftest import make_handmade_results
    from keras_unet_ft.pipeline import closing_lines
    from keras_unet_ft.results import write_tables

    out = make_handmade_results(tmp_path / "r")
    assert closing_lines(out) == []          # no tables yet: nothing to recommend from
    write_tables(out)
    lines = closing_lines(out)
    assert lines[0].startswith("sim_bus: fine-tune contracting (Dice 0.825 [")
    # contracting:blocks trains the same layers as contracting: expanding is the other plan
    assert lines[0].endswith("; the other plan is shown worse")
    assert lines[-1] == f"report: {out / 'REPORT.md'}"


def test_closing_lines_of_a_one_plan_study_say_it_was_the_only_one(tmp_path):
    """"every other plan is worse" was said where there was no other plan."""
    from conftest import make_handmade_results
    from keras_unet_ft.io import read_csv
    from keras_unet_ft.io import write_csv
    from keras_unet_ft.pipeline import closing_lines
    from keras_unet_ft.results import write_tables

    out = make_handmade_results(tmp_path / "r")
    write_tables(out)
    rows = [r for r in read_csv(out / "summary.csv") if r["plan"] == "contracting"]
    write_csv(out / "summary.csv", rows)
    assert closing_lines(out)[0].endswith("; the only plan compared: it says nothing about "
                                          "which layers")


def test_closing_lines_name_a_targets_data_warnings(tmp_path):
    from conftest import make_handmade_results
    from keras_unet_ft.io import read_json, write_json
    from keras_unet_ft.pipeline import closing_lines
    from keras_unet_ft.results import write_tables

    out = make_handmade_results(tmp_path / "r")
    m = read_json(out / "runs.json")
    m["targets"][0]["notes"] = ["sim_bus: 12 images with an object over 3 folds, about 4 per "
                                "test fold (fewer than 10): each fold's Dice ..."]
    write_json(out / "runs.json", m)
    write_tables(out)
    assert closing_lines(out)[0] == ("sim_bus: 1 data warning(s), in REPORT.md: 12 images with "
                                     "an object over 3 folds, about 4 per test fold")


#: failed / diverged runs (plan, fold, status, what the study recorded) -> whether the closing
#: message offers --retry-failed, and a piece of it
RETRY_HINTS = [
    ([("expanding", 0, "failed", {"reason": "ResourceExhaustedError: OOM", "retry": True})],
     True, "1 failed run(s) of 6"),
    ([("expanding", 0, "failed", {"reason": "FloatingPointError: x"})],  # an earlier version
     True, "--retry-failed redoes them"),
    ([("expanding", 0, "failed", {"reason": "PlanError: plan 'autorgn' needs ...",
                                  "retry": False})],
     False, "a retry with the same settings repeats them"),
    ([("expanding", 0, "failed", {"reason": "PlanError: plan 'autorgn' needs ..."})],
     False, "a retry with the same settings repeats them"),
    ([("expanding", 0, "diverged", {"reason": "diverged: loss became NaN/inf at epoch 1"})],
     False, "1 diverged run(s) of 6"),
    ([("expanding", 0, "diverged", {"reason": "diverged: loss became NaN"}),
      ("expanding", 1, "failed", {"reason": "OSError: cut", "retry": True})],
     True, "--retry-failed redoes the 1 that failed by a fault of the moment; for the other 1"),
]


@pytest.mark.parametrize("bad, offered, words", RETRY_HINTS)
def test_retry_failed_is_offered_only_where_a_retry_can_help(bad, offered, words, tmp_path):
    import json

    from conftest import make_handmade_results
    from keras_unet_ft.pipeline import EXIT_RUNS_FAILED, outcome

    out = make_handmade_results(tmp_path / "r", failed=[(p, f) for p, f, *_ in bad])
    for plan, fold, status, extra in bad:
        path = out / "runs" / "sim_bus" / plan / f"fold_{fold}" / "summary.json"
        s = json.loads(path.read_text())
        s.update(status=status, **extra)
        path.write_text(json.dumps(s))
    code, message = outcome(out)
    assert code == EXIT_RUNS_FAILED
    assert ("--retry-failed" in message) == offered, message
    assert words in message
