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
    assert [(s["plan_a"], s["plan_b"], s["images_n"]) for s in stats] == \
        [("contracting", "expanding", "4")]
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
