"""benchmarks/paper_scale.py: the paper-scale figures read from a results folder."""

import importlib.util
import pathlib
import statistics

import pytest

from conftest import make_handmade_results

ROOT = pathlib.Path(__file__).parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("paper_scale", ROOT / "benchmarks" /
                                                  "paper_scale.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("missing, failed, folds, dice", [
    ((), (), 2, statistics.mean([0.85, 0.8])),
    ((("contracting", 1),), (), 1, 0.85),           # a study stopped part-way: what is done
    ((), (("contracting", 0),), 1, 0.8),            # a failed run is not counted
])
def test_paper_scale_reads_the_folder(tmp_path, missing, failed, folds, dice):
    from keras_unet_ft.plans import plan_set

    out = make_handmade_results(tmp_path / "r", failed=failed, missing=missing)
    ps = _script()
    table = {(t["target"], t["plan"]): t for t in ps.per_plan(out)}
    c = table[("sim_bus", "contracting")]
    assert (c["folds"], c["trainable_params"], c["run_seconds"]) == (folds, 150, 2.0)
    assert c["dice"] == pytest.approx(dice)
    assert ("sim_bus", "contracting:blocks") not in table      # an alias is not a second run
    ex = ps.extrapolate(out, list(table.values()), {})
    assert ex["runs_once"] == (len(plan_set("paper")) + 2) * 2 * 1   # plans+baselines, folds, targets
    assert ex["grid_seconds_once"] == pytest.approx(ex["runs_once"] * 2.0)
    assert ex["pretrain_seconds"] is None                       # no pretraining in the folder
    text = ps.markdown(out)
    assert f"| sim_bus | contracting | 150 | {folds} | {dice:.3f}" in text
    assert f"= {ex['runs_once']} runs x 2 s" in text
    assert ("Not counted above: 1 run(s)" in text) == bool(failed)


def test_paper_scale_needs_a_results_folder(tmp_path, capsys):
    assert _script().main([str(tmp_path)]) == 2
    assert "is not a results folder" in capsys.readouterr().err
