"""End to end: a study stopped by its time budget (in the grid, in pretraining) continues
and writes what an uninterrupted one writes."""

import pytest

from conftest import tiny_config

#: the columns of results.csv that depend on the numbers trained (not on timing or paths)
_SCORES = ("status", "dice_mean", "dice_std", "pixel_error_mean", "adjusted_rand_mean",
           "hd95_mean", "n_test", "trainable_params")


@pytest.mark.slow
def test_study_within_max_minutes_stops_cleanly_then_continues(tiny_study, tmp_path):
    from conftest import reuse_pretrained
    from keras_unet_ft.pipeline import EXIT_INCOMPLETE, outcome, run

    cfg = tiny_config(**{"data.targets": "sim_bus", "study.plans": "contracting,expanding",
                         "study.baselines": "false", "data.cache_dir": str(tmp_path / "c")})
    out = run(cfg, reuse_pretrained(tiny_study, tmp_path / "r"), progress=False,
              max_minutes=1e-4)
    code, message = outcome(out)
    assert code == EXIT_INCOMPLETE and "4 run(s) not done yet" in message
    assert not (out / "REPORT.md").exists()                    # no report of a partial grid
    run(cfg, out, progress=False, figures=False)
    assert outcome(out)[0] in (0, 3) and (out / "REPORT.md").exists()


@pytest.mark.slow
def test_a_study_stopped_during_pretraining_writes_the_results_of_an_uninterrupted_one(tmp_path):
    """A shift study stopped during pretraining and run again once differed from an
    uninterrupted one in every run (Dice by up to 0.008, REPORT.md's verdicts moved)."""
    from keras_unet_ft.io import read_csv
    from keras_unet_ft.pipeline import EXIT_INCOMPLETE, outcome, run

    cfg = tiny_config(**{"data.targets": "sim_bus", "study.plans": "contracting,expanding",
                         "study.baselines": "false", "pretrain.epochs": "2",
                         "data.cache_dir": str(tmp_path / "c")})
    whole = run(cfg, tmp_path / "whole", progress=False, figures=False)
    out = run(cfg, tmp_path / "resumed", progress=False, max_minutes=1e-4)
    assert outcome(out)[0] == EXIT_INCOMPLETE
    assert len(read_csv(out / "pretrained" / "history.partial.csv")) == 1   # stopped after epoch 1
    run(cfg, out, progress=False, figures=False)
    a, b = read_csv(whole / "results.csv"), read_csv(out / "results.csv")
    cols = [c for c in a[0] if c in _SCORES]
    assert len(a) == len(b) == 4 and len(cols) == len(_SCORES)
    key = ("target", "plan", "fold")
    assert (sorted((tuple(r[k] for k in key), [r[c] for c in cols]) for r in a)
            == sorted((tuple(r[k] for k in key), [r[c] for c in cols]) for r in b))
