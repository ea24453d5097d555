"""results: tables from the files of a hand-made results folder (exact numbers)."""

import subprocess
import sys

import pytest

from conftest import make_handmade_results
from keras_unet_ft.io import read_csv
from keras_unet_ft.results import collect, summarize, write_tables


def test_rows_one_per_plan_and_fold_aliases_included(tmp_path):
    out = make_handmade_results(tmp_path / "r", failed=[("expanding", 1)], missing=[("none", 1)])
    rows = collect(out)
    got = [(r["plan"], r["trained_as"], r["fold"], r["status"]) for r in rows]
    assert got == [
        ("contracting", "contracting", 0, "ok"), ("contracting:blocks", "contracting", 0, "ok"),
        ("expanding", "expanding", 0, "ok"), ("none", "none", 0, "ok"),
        ("contracting", "contracting", 1, "ok"), ("contracting:blocks", "contracting", 1, "ok"),
        ("expanding", "expanding", 1, "failed"),
    ]  # the unfinished run (none, fold 1) has no row
    failed = [r for r in rows if r["status"] == "failed"][0]
    assert failed["reason"] == "FloatingPointError: diverged" and failed["dice_mean"] == ""
    assert rows[0]["run_dir"] == "runs/sim_bus/contracting/fold_0"
    assert {r["modality"] for r in rows} == {"ultrasound"}


@pytest.mark.parametrize("plan, folds_ok, folds_failed, dice_mean, dice_std", [
    ("contracting", 2, 0, 0.825, 0.025),
    ("contracting:blocks", 2, 0, 0.825, 0.025),
    ("expanding", 1, 1, 0.65, 0.0),      # the failed fold is kept out of the mean
])
def test_summary_over_ok_folds(tmp_path, plan, folds_ok, folds_failed, dice_mean, dice_std):
    out = make_handmade_results(tmp_path / "r", failed=[("expanding", 1)])
    row = {r["plan"]: r for r in summarize(collect(out))}[plan]
    assert (row["folds_ok"], row["folds_failed"]) == (folds_ok, folds_failed)
    assert row["dice_mean"] == pytest.approx(dice_mean)
    assert row["dice_std"] == pytest.approx(dice_std)


def test_write_tables_writes_the_files(tmp_path):
    out = make_handmade_results(tmp_path / "r")
    tables = write_tables(out)
    assert len(read_csv(out / "results.csv")) == len(tables["results.csv"]) == 8
    stats = read_csv(out / "stats.csv")
    assert ([(s["plan_a"], s["plan_b"], s["images_n"]) for s in stats]
            == [("contracting", "expanding", "4")])
    assert float(stats[0]["diff"]) == pytest.approx(0.225)


def test_results_and_report_import_no_keras_or_tensorflow():
    code = ("import sys; import keras_unet_ft.results, keras_unet_ft.report, "
            "keras_unet_ft.layout, keras_unet_ft.plans; "
            "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_folder_without_runs_json_says_how_to_get_it(tmp_path):
    out = make_handmade_results(tmp_path / "r")
    (out / "runs.json").unlink()
    with pytest.raises(FileNotFoundError, match="unet-ft study --config"):
        collect(out)


def _add_runs(out, specs, dice_of):
    """Add runs (``RunSpec``s) to a hand-made folder: manifest entries, summary, per-image."""
    import json

    from keras_unet_ft.io import read_json, write_csv, write_json

    m = read_json(out / "runs.json")
    m["runs"] += [r.to_dict() for r in specs]
    write_json(out / "runs.json", m)
    for r in specs:
        d = r.dir(out)
        d.mkdir(parents=True, exist_ok=True)
        values = dice_of(r)
        write_csv(d / "per_image.csv", [{"id": i, "dice": v, "pixel_error": 1.0,
                                         "adjusted_rand": v} for i, v in values.items()])
        mean = sum(values.values()) / len(values)
        (d / "summary.json").write_text(json.dumps({
            "status": "ok", "target": r.target, "fold": r.fold, "plan": r.plan, "model": "unet",
            "aliases": r.aliases, "n_train": 8, "n_test": len(values), "dice_mean": mean,
            "dice_std": 0.0, "pixel_error_mean": 1.0, "pixel_error_std": 0.0,
            "adjusted_rand_mean": mean, "adjusted_rand_std": 0.0,
            "trainable_params": {"contracting": 150, "expanding": 300}.get(r.plan, 0),
            "frozen_params": 0, "trainable_layers": [], "train_seconds": 1.0,
            "seconds_per_epoch": 1.0, "epochs": 2, "seed": 0, "precision": "fp32",
            "trainer": "masked", "weight_change": None, "repeat": r.repeat,
            "inner": r.inner}))


def _nested_folder(tmp_path):
    """Outer test folds: contracting better (HANDMADE_DICE). Inner validation images (x*, never
    outer test images): expanding better in fold 0, contracting in fold 1."""
    from keras_unet_ft.layout import RunSpec

    out = make_handmade_results(tmp_path / "r")
    inner_dice = {("contracting", 0): 0.3, ("expanding", 0): 0.6,
                  ("contracting", 1): 0.7, ("expanding", 1): 0.4}
    specs = [RunSpec("sim_bus", k, p, [], "unet", inner=True) for k in (0, 1)
             for p in ("contracting", "expanding")]
    _add_runs(out, specs, lambda r: {f"x{r.fold}{j}": inner_dice[(r.plan, r.fold)]
                                     for j in range(3)})
    return out


def test_nested_selection_picks_on_the_inner_split_and_scores_on_the_outer_fold(tmp_path):
    from keras_unet_ft.io import write_csv
    from keras_unet_ft.layout import RunSpec
    from keras_unet_ft.results import NESTED, NESTED_SUMMARY

    out = _nested_folder(tmp_path)
    tables = write_tables(out)
    rows = [(r["fold"], r["picked"], r["outer_mean"]) for r in tables[NESTED]]
    assert rows == [(0, "expanding", pytest.approx(0.65)), (1, "contracting", pytest.approx(0.8))]
    s = tables[NESTED_SUMMARY][0]
    assert s["nested_mean"] == pytest.approx((0.7 + 0.6 + 0.85 + 0.75) / 4)
    assert s["naive_best"] == "contracting" and s["naive_mean"] == pytest.approx(0.825)
    assert s["nested_ci_low"] <= s["nested_mean"] <= s["nested_ci_high"]
    # inner runs stay out of every other table
    assert all(not r["run_dir"].endswith("_inner") for r in tables["results.csv"])
    # poison the outer test fold: whatever expanding scores there, fold 0 still picks it
    for k, v in ((0, 0.0), (1, 1.0)):
        spec = RunSpec("sim_bus", k, "expanding", [], "unet")
        write_csv(spec.dir(out) / "per_image.csv",
                  [{"id": i, "dice": v, "pixel_error": 1.0, "adjusted_rand": v}
                   for i in ({0: ["a", "b"], 1: ["c", "d"]}[k])])
    again = write_tables(out)[NESTED]
    assert [(r["fold"], r["picked"]) for r in again] == [(0, "expanding"), (1, "contracting")]
    assert again[0]["outer_mean"] == 0.0  # the pick's outer score is read, never its choice
    assert (out / "nested.csv").exists() and (out / "nested_summary.csv").exists()


def test_tied_best_marks_plans_not_shown_worse_than_the_best(tmp_path):
    out = make_handmade_results(tmp_path / "r")
    summary = {r["plan"]: r for r in write_tables(out)["summary.csv"]}
    assert summary["contracting"]["best"] == 1
    assert summary["expanding"]["best"] == 0
    # contracting is 0.2 above expanding on every image; baselines never count as tied
    assert summary["expanding"]["tied_best"] == 0 and summary["none"]["tied_best"] == 0
    assert summary["expanding"]["best_minus_dice"] == pytest.approx(0.225)
    assert summary["contracting:blocks"]["tied_best"] == 1


@pytest.mark.parametrize("shift, tied", [
    (0.02, 0),     # the plans' own intervals overlap, yet every image is 0.02 worse: not tied
    (0.0, 1),      # the same scores: tied
])
def test_tied_best_is_decided_by_the_paired_interval(tmp_path, shift, tied):
    spread = {("contracting", 0): [0.9, 0.3], ("contracting", 1): [0.8, 0.2],
              ("none", 0): [0.1, 0.1], ("none", 1): [0.1, 0.1]}
    spread.update({("expanding", f): [v - shift for v in spread[("contracting", f)]]
                   for f in (0, 1)})
    out = make_handmade_results(tmp_path / "r", dice=spread)
    summary = {r["plan"]: r for r in write_tables(out)["summary.csv"]}
    c, e = summary["contracting"], summary["expanding"]
    assert e["dice_ci_high"] >= c["dice_ci_low"]          # the plans' intervals overlap
    assert e["tied_best"] == tied
    assert e["best_minus_dice_ci_low"] == pytest.approx(shift, abs=1e-9)


def test_repeats_pair_images_within_each_repeat(tmp_path):
    """study.seeds: a second repeat of the cross-validation adds its pairs; the image-level
    tests use one (repeat-averaged) difference per image, the interval every pair."""
    from keras_unet_ft.layout import RunSpec

    out = make_handmade_results(tmp_path / "r")
    shift = {"contracting": 0.0, "expanding": 0.1, "none": 0.0}
    ids = {0: ["b", "c"], 1: ["a", "d"]}   # the repeat's own folds
    specs = [RunSpec("sim_bus", k, p, ["contracting:blocks"] if p == "contracting" else [],
                     "unet", repeat=1) for k in (0, 1) for p in ("contracting", "expanding")]
    _add_runs(out, specs, lambda r: {i: 0.5 + shift[r.plan] for i in ids[r.fold]})
    tables = write_tables(out)
    st = tables["stats.csv"][0]
    assert ((st["plan_a"], st["plan_b"], st["folds_n"], st["images_n"])
            == ("contracting", "expanding", 4, 4))
    # 4 pairs of repeat 0 (diff 0.225 on average) and 4 of repeat 1 (diff -0.1)
    assert st["diff"] == pytest.approx((0.225 * 4 - 0.1 * 4) / 8)
    rows = [r for r in tables["results.csv"] if r["plan"] == "expanding"]
    assert sorted((r["repeat"], r["fold"]) for r in rows) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    summary = {r["plan"]: r for r in tables["summary.csv"]}
    assert summary["expanding"]["folds_ok"] == 4


def test_nested_selection_says_when_a_pick_or_a_candidate_did_not_finish_ok(tmp_path):
    """A failed inner run is no candidate (said); a pick whose outer run failed leaves its
    fold out of the estimate (said in nested.csv, nested_summary.csv and REPORT.md)."""
    import json

    from keras_unet_ft.layout import RunSpec
    from keras_unet_ft.report import write_report
    from keras_unet_ft.results import NESTED, NESTED_SUMMARY

    out = _nested_folder(tmp_path)
    # fold 0: the inner run of expanding failed -> contracting is picked, and its outer run
    # failed too -> fold 0 is left out
    for spec in (RunSpec("sim_bus", 0, "expanding", [], "unet", inner=True),
                 RunSpec("sim_bus", 0, "contracting", ["contracting:blocks"], "unet")):
        (spec.dir(out) / "summary.json").write_text(json.dumps({
            "status": "failed", "target": "sim_bus", "fold": 0, "plan": spec.plan,
            "aliases": spec.aliases, "reason": "RuntimeError: boom"}))
    tables = write_tables(out)
    fold0 = tables[NESTED][0]
    assert fold0["picked"] == "contracting" and fold0["n_images"] == 0
    assert "not candidates (inner run failed): expanding" in fold0["note"]
    assert "the pick's outer run is failed: fold left out of the estimate" in fold0["note"]
    s = tables[NESTED_SUMMARY][0]
    assert s["folds_left_out"] == 1
    assert s["nested_mean"] == pytest.approx((0.85 + 0.75) / 2)   # fold 1 only, said so
    text = write_report(out).read_text()
    assert "**1 fold(s) left out of the nested estimate**" in text


@pytest.mark.parametrize("field, value", [
    ("target", "../../evil"), ("target", "/etc"), ("plan", ".."), ("fold", "../x"),
])
def test_a_tampered_runs_json_never_leads_outside_the_folder(tmp_path, field, value):
    from keras_unet_ft.io import read_json, write_json

    out = make_handmade_results(tmp_path / "r")
    m = read_json(out / "runs.json")
    m["runs"][0][field] = value
    write_json(out / "runs.json", m)
    with pytest.raises(ValueError, match="does not name a folder inside the results folder"):
        write_tables(out)


def test_the_best_plan_per_parameter_budget(tmp_path):
    """budgets.csv: within each share of the parameters, the best plan and those not shown
    worse; a budget no plan fits says so (no best)."""
    from conftest import make_handmade_results
    from keras_unet_ft.results import budget_table

    out = make_handmade_results(tmp_path / "r")
    tables = write_tables(out)
    rows = {float(r["budget_percent"]): r for r in tables["budgets.csv"]}
    assert set(rows) == {1.0, 10.0, 100.0}
    assert rows[1.0]["plans"] == 0 and rows[1.0]["best"] == "" and rows[10.0]["best"] == ""
    best = next(r for r in tables["summary.csv"] if r["best"] == 1)
    assert rows[100.0]["best"] == best["plan"] and rows[100.0]["plans"] == 3
    # 40 %: only contracting (150 of 450 parameters) and its alias fit; nothing is tied
    # with a plan outside the budget
    (r40,) = budget_table(out, tables["summary.csv"], tables["results.csv"], budgets=(0.4,))
    assert r40["best"] in ("contracting", "contracting:blocks") and "expanding" not in r40["tied"]


def _timed(plan, fold, seconds, n_train="", ips=""):
    return {"target": "t", "modality": "ultrasound", "plan": plan, "trained_as": plan,
            "status": "ok", "fold": fold, "dice_mean": "0.5", "trainable_params": "10",
            "n_empty": "", "train_seconds": "1", "seconds_per_epoch": seconds,
            "n_train": n_train, "images_per_second": ips}


@pytest.mark.parametrize("runs, spread, steady_spread", [
    # the timing noise REPORT.md's speed finding counts beyond: slowest / fastest run
    ([("1.0", "10", "10"), ("1.3", "10", "8")], 1.3, 1.25),
    ([("2.0", "", ""), ("2.0", "", "")], 1.0, None),
    ([("2.0", "10", "5")], None, None),   # one run: not known
])
def test_summary_gives_the_spread_of_seconds_per_epoch(runs, spread, steady_spread):
    import math

    from keras_unet_ft.results import summarize

    row = summarize([_timed("p", k, *r) for k, r in enumerate(runs)])[0]
    for key, want in (("seconds_per_epoch_spread", spread),
                      ("steady_seconds_per_epoch_spread", steady_spread)):
        assert math.isnan(row[key]) if want is None else row[key] == pytest.approx(want), row


def test_a_loaded_folder_holds_the_tables_as_their_files_give_them(tmp_path):
    """LoadedFolder.from_tables (what pipeline.aggregate hands the figures and the report)
    holds every table as read back from the CSV just written: the same cells as
    LoadedFolder.load of the folder, typed rows for the readers."""
    from keras_unet_ft.layout import RESULTS, STATS, SUMMARY
    from keras_unet_ft.results import LoadedFolder, ResultRow, SummaryRow

    out = make_handmade_results(tmp_path / "r", failed=[("expanding", 1)])
    computed = LoadedFolder.from_tables(out, write_tables(out))
    loaded = LoadedFolder.load(out)
    for name in (RESULTS, SUMMARY, STATS):
        assert computed.table(name) == loaded.table(name) == read_csv(out / name)
    assert all(isinstance(r, SummaryRow) for r in computed.summary)
    assert all(isinstance(r, ResultRow) for r in computed.results)
    row = next(r for r in computed.results if not r.ok)
    assert (row.target, row.plan, row.fold, row.repeat, row.status) == (
        "sim_bus", "expanding", 1, 0, "failed")
    assert row["reason"] == "FloatingPointError: diverged" and dict(row) == row.cells
    assert [(s.plan_a, s.plan_b) for s in computed.stats] == [
        (s["plan_a"], s["plan_b"]) for s in read_csv(out / STATS)]
    assert LoadedFolder.load(computed) is computed
    assert computed.config == loaded.config and computed.manifest == loaded.manifest
