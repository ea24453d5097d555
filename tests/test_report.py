"""report: exact sentences and tables from hand-made results (no model, no training)."""

import pytest
from scipy import stats as sps

from conftest import make_handmade_results
from keras_unet_ft.report import _p, findings, write_report
from keras_unet_ft.results import write_tables


@pytest.fixture
def report_text(tmp_path):
    out = make_handmade_results(tmp_path / "r")
    write_tables(out)
    return write_report(out).read_text()


def test_paper_table_beside_ours(report_text):
    assert ("| fine-tune contracting, freeze expanding | 0.80 ± 0.03 | 0.825 ± 0.025 | "
            "1.4 % ± 0.5 | 1.75 ± 0.25 % | 0.78 ± 0.03 | 0.775 ± 0.025 |") in report_text
    assert ("| fine-tune expanding, freeze contracting | 0.72 ± 0.04 | 0.600 ± 0.050 | "
            "1.9 % ± 0.6 | 4.00 ± 0.50 % | 0.71 ± 0.05 | 0.550 ± 0.050 |") in report_text


def test_finding_sentence_is_computed(report_text):
    p_img = sps.ttest_rel([0.9, 0.8, 0.85, 0.75], [0.7, 0.6, 0.6, 0.5]).pvalue
    p_fold = sps.ttest_rel([0.85, 0.8], [0.65, 0.55]).pvalue
    p_wil = sps.wilcoxon([0.9, 0.8, 0.85, 0.75], [0.7, 0.6, 0.6, 0.5]).pvalue
    # every image of a fold gains the same: resampling within folds cannot move the mean
    assert (f"Contracting > expanding on sim_bus (paper, breast US: 0.80 vs 0.72): **yes "
            f"(contracting better; 95 % CI [+0.225, +0.225])**, Dice 0.825 vs 0.600 (+0.225; "
            f"95 % bootstrap interval over images, resampled within folds: [+0.225, +0.225]), "
            f"paired t-test over images p = {_p(p_img)}, Wilcoxon p = {_p(p_wil)} "
            f"(Holm-corrected over this target's 1 comparisons: {_p(p_wil)}), over "
            f"folds p = {_p(p_fold)}.") in report_text
    assert "| contracting:blocks | contracting | 2/2 | 0.825 ± 0.025 |" in report_text


def test_failed_run_listed_and_kept_out(tmp_path):
    out = make_handmade_results(tmp_path / "r", failed=[("expanding", 1)])
    write_tables(out)
    text = write_report(out).read_text()
    assert "- sim_bus / expanding / fold 1: FloatingPointError: diverged" in text
    assert "| expanding |  | 1/2 | 0.650 ± 0.000 |" in text


def _S(**dice):
    return {p: {"plan": p, "dice_mean": str(d), "trainable_params": "",
                "seconds_per_epoch": "1.0"} for p, d in dice.items()}


@pytest.mark.parametrize("modality, S, units, expected", [
    ("xray", _S(contracting=0.97, expanding=0.96), 9,
     "Contracting ≈ expanding on t (paper, chest X-ray: 0.98 vs 0.98): **yes**"),
    ("xray", _S(contracting=0.97, expanding=0.90), 9,
     "Contracting ≈ expanding on t (paper, chest X-ray: 0.98 vs 0.98): **no**"),
    ("ultrasound", _S(contracting=0.70, expanding=0.80), 9,
     "Contracting > expanding on t (paper, breast US: 0.80 vs 0.72): **no**"),
    # the all-layers plan follows the model: 7 blocks at depth 3
    ("ultrasound", _S(**{"shallow_to_deep:7": 0.9, "scratch": 0.5, "shallow_to_deep:1": 0.8}), 7,
     "Beyond the paper: best fine-tuning plan shallow_to_deep:7 (0.900) vs training from "
     "scratch (0.500)"),
    ("ultrasound", _S(**{"shallow_to_deep:1": 0.8, "shallow_to_deep:2": 0.85,
                         "deep_to_shallow:1": 0.6, "deep_to_shallow:2": 0.7,
                         "shallow_to_deep:3": 0.9, "deep_to_shallow:3": 0.9}), 3,
     "Shallow→deep curve above deep→shallow on t (paper, Fig. 4, breast US): **yes**, above at "
     "2 of 2 points (K = 1, 2), mean Dice difference +0.175."),
    # the faithful plan set stops at K = 7 of 9: every K is a point of the curves
    ("ultrasound", _S(**{"shallow_to_deep:1": 0.2, "deep_to_shallow:1": 0.1,
                         "shallow_to_deep:3": 0.6, "deep_to_shallow:3": 0.7,
                         "shallow_to_deep:7": 0.9, "deep_to_shallow:7": 0.8}), 9,
     "above at 2 of 3 points (K = 1, 3, 7), mean Dice difference +0.033."),
])
def test_findings_table(modality, S, units, expected):
    text = "\n".join(findings("t", modality, S, [], "keras", units))
    assert expected in text, text


@pytest.mark.parametrize("trainer, ips, expected", [
    # Keras' fit: steady-state images/s (each trainable set compiles in its first run only)
    ("keras", ("40", "20"), "**yes**, 40.0 vs 20.0 training images per second (2.00x; Keras' fit"),
    ("keras", ("10", "20"), "**no**, 10.0 vs 20.0 training images per second"),
    # results without images/s (older versions): epoch times, retrace said
    ("keras", ("", ""), "1.00 vs 1.00 s per epoch (1.00x; Keras' fit: each run's first epoch"),
    ("selective", ("40", "20"), "s per epoch (1.00x; selective trainer"),
])
def test_speed_finding_per_trainer(trainer, ips, expected):
    S = _S(all=0.9, **{"shallow_to_deep:1": 0.8})
    S["shallow_to_deep:1"]["images_per_second"], S["all"]["images_per_second"] = ips
    text = "\n".join(findings("t", "ultrasound", S, [], trainer, 9))
    assert expected in text, text


def test_speed_not_claimed_with_the_masked_trainer():
    S = _S(all=0.9, **{"shallow_to_deep:1": 0.8})
    text = "\n".join(findings("t", "ultrasound", S, [], "masked", 9))
    assert "**not measured**" in text


def test_methods_section_names_both_comparisons():
    from keras_unet_ft.report import methods_section

    S = {"bitfit": {"trainable_params": "431"}, "deep_to_shallow:1": {"trainable_params": "649"},
         "all": {"trainable_params": "121725"}}
    stats = [
        {"target": "t", "plan_a": "bitfit", "plan_b": "deep_to_shallow:1", "mean_a": "0.7",
         "mean_b": "0.6", "diff": "0.1", "images_wilcoxon_p": "0.001"},
        {"target": "t", "plan_a": "bitfit", "plan_b": "all", "mean_a": "0.7", "mean_b": "0.8",
         "diff": "-0.1", "images_wilcoxon_p": "0.001"},
        {"target": "t", "plan_a": "contracting", "plan_b": "expanding", "mean_a": "0.7",
         "mean_b": "0.8", "diff": "-0.1", "images_wilcoxon_p": "0.001"},
    ]
    text = "\n".join(methods_section(S, stats, "t"))
    assert "| bitfit | 431 | 0.700 | deep_to_shallow:1 | 649 | 0.600 | 0.100 |" in text
    assert "| bitfit | 431 | 0.700 | all | 121,725 | 0.800 | -0.100 |" in text
    assert "contracting" not in text
    assert methods_section(S, stats[2:], "t") == []
