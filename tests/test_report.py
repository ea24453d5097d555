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


def test_paper_table_beside_this_run(report_text):
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
    assert "| expanding | - | 1/2 | 0.650 ± 0.000 |" in text


def _S(**dice):
    return {p: {"plan": p, "dice_mean": str(d), "trainable_params": "",
                "seconds_per_epoch": "1.0"} for p, d in dice.items()}


@pytest.mark.parametrize("modality, S, units, expected", [
    ("xray", _S(contracting=0.97, expanding=0.96), 9,
     "Contracting ≈ expanding on t (paper, chest X-ray: 0.98 vs 0.98), equivalent within a "
     "margin of ±0.03 Dice: **yes**, Dice 0.970 vs 0.960 (difference +0.010; |difference| "
     "0.010, no interval)"),
    ("xray", _S(contracting=0.97, expanding=0.90), 9,
     "Contracting ≈ expanding on t (paper, chest X-ray: 0.98 vs 0.98), equivalent within a "
     "margin of ±0.03 Dice: **no**"),
    ("ultrasound", _S(contracting=0.70, expanding=0.80), 9,
     "Contracting > expanding on t (paper, breast US: 0.80 vs 0.72): **no**"),
    # the all-layers plan follows the model: 7 blocks at depth 3
    ("ultrasound", _S(**{"shallow_to_deep:7": 0.9, "scratch": 0.5, "shallow_to_deep:1": 0.8}), 7,
     "Beyond the paper: best fine-tuning plan shallow_to_deep:7 (0.900) vs training from "
     "scratch (0.500)"),
    ("ultrasound", _S(**{"shallow_to_deep:1": 0.8, "shallow_to_deep:2": 0.85,
                         "deep_to_shallow:1": 0.6, "deep_to_shallow:2": 0.7,
                         "shallow_to_deep:3": 0.9, "deep_to_shallow:3": 0.9}), 3,
     "Shallow→deep curve above deep→shallow on t (paper, Fig. 4, breast US; decided: above at "
     "more than half of the K = 1, 2 and a mean Dice difference of at least +0.01): **yes**: "
     "above at 2 of 2 points (K = 1, 2), mean difference +0.175."),
    # the faithful plan set stops at K = 7 of 9: every K is a point of the curves
    ("ultrasound", _S(**{"shallow_to_deep:1": 0.2, "deep_to_shallow:1": 0.1,
                         "shallow_to_deep:3": 0.6, "deep_to_shallow:3": 0.7,
                         "shallow_to_deep:7": 0.9, "deep_to_shallow:7": 0.8}), 9,
     "**yes**: above at 2 of 3 points (K = 1, 7), mean difference +0.033."),
    # REPORT.md once said "no, above at 2 of 2 points": the rule's failing part is named
    ("ultrasound", _S(**{"shallow_to_deep:1": 0.112, "deep_to_shallow:1": 0.110,
                         "shallow_to_deep:5": 0.112, "deep_to_shallow:5": 0.108}), 9,
     "**no** — the mean difference is below +0.01: above at 2 of 2 points (K = 1, 5), mean "
     "difference +0.003."),
    # "above at 1 of 8 points (K = 1, 2, ..., 8)" listed every K: only those above are listed
    ("ultrasound", _S(**{**{f"shallow_to_deep:{k}": 0.5 for k in range(1, 9)},
                         **{f"deep_to_shallow:{k}": 0.6 for k in range(1, 9)},
                         "shallow_to_deep:3": 0.7}), 9,
     "**no** — not above at more than half of the points: above at 1 of 8 points (K = 3), "),
    ("ultrasound", _S(**{"shallow_to_deep:1": 0.5, "deep_to_shallow:1": 0.6}), 9,
     "**no** — not above at more than half of the points: above at 0 of 1 points, mean"),
    # "deep_to_shallow:1 ranks 4 of 4" read as the worst of the plans for the best of them
    ("ultrasound", _S(**{"shallow_to_deep:1": 0.79, "deep_to_shallow:1": 0.80,
                         "shallow_to_deep:5": 0.78, "deep_to_shallow:5": 0.77}), 9,
     "**no**, deep_to_shallow:1 is number 1 of 4 block plans from the best (Dice 0.800; lowest: "
     "deep_to_shallow:5 0.770; no paired interval (stats.csv has no row comparing the two))."),
    ("xray", _S(**{"shallow_to_deep:1": 0.95, "deep_to_shallow:1": 0.94}), 9,
     "Shallow→deep and deep→shallow curves close on t (paper, Fig. 4, X-ray), within a margin "
     "of ±0.03 Dice on average: **yes**, mean |difference| 0.010 over K = 1; shallow→deep "
     "above at 1 of 1 points (K = 1)."),
    # "gives higher Dice (0.064 vs 0.064)": equal to three decimals is said as such
    ("ultrasound", {p: {**r, "trainable_params": n} for (p, r), n in zip(
        _S(contracting=0.0641, expanding=0.0639).items(), ("10", "20"))}, 9,
     "and fine-tuning it gives the same Dice to three decimals (0.064)."),
])
def test_findings_table(modality, S, units, expected):
    text = "\n".join(findings("t", modality, S, [], "keras", units))
    assert expected in text, text


@pytest.mark.parametrize("trainer, steady, expected", [
    # the steady state (median epoch after the first, which compiles), as the table shows it
    ("keras", ("0.5", "1.0"), "**yes**, 0.50 vs 1.00 s per epoch (2.00x; median epoch after"),
    ("keras", ("2.0", "1.0"), "**no**, 2.00 vs 1.00 s per epoch"),
    # results without a steady state (older versions): mean epoch times, retrace said
    ("keras", ("", ""), "1.00 vs 1.00 s per epoch (1.00x; Keras' fit: each run's first epoch"),
    ("selective", ("", ""), "s per epoch (1.00x; selective trainer"),
])
def test_speed_finding_per_trainer(trainer, steady, expected):
    S = _S(all=0.9, **{"shallow_to_deep:1": 0.8})
    S["shallow_to_deep:1"]["steady_seconds_per_epoch"], S["all"]["steady_seconds_per_epoch"] = steady
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


@pytest.mark.parametrize("lo, hi, expected", [
    # REPORT.md once said "yes" with the interval [+0.009, +0.016] and never named a margin
    ("0.009", "0.016", "**yes**, Dice 0.970 vs 0.958 (difference +0.012; 95 % interval "
                       "[+0.009, +0.016] inside ±0.03)"),
    ("0.010", "0.050", "**no**, Dice 0.970 vs 0.958 (difference +0.012; 95 % interval "
                       "[+0.010, +0.050] reaches beyond ±0.03)"),
])
def test_xray_equivalence_is_decided_by_its_interval_and_margin(lo, hi, expected):
    S = _S(contracting=0.970, expanding=0.958)
    stats = [{"target": "t", "plan_a": "contracting", "plan_b": "expanding", "ci_low": lo,
              "ci_high": hi, "verdict": "yes", "diff": "0.012"}]
    text = "\n".join(findings("t", "xray", S, stats, "keras", 9))
    assert "equivalent within a margin of ±0.03 Dice: " + expected in text, text


@pytest.mark.parametrize("verdict, lo, hi, words", [
    ("yes", "0.01", "0.02", "gives higher Dice (0.800 vs 0.700, 95 % interval of the difference"),
    ("no", "-0.02", "-0.01", "gives lower Dice (0.800 vs 0.700"),
    ("tied", "-0.1", "0.3", "gives a Dice not told apart from the other's (0.800 vs 0.700; the "
                            "95 % interval of the difference, [-0.100, +0.300], holds 0)"),
])
def test_parameter_sentence_follows_the_paired_interval(verdict, lo, hi, words):
    S = _S(contracting=0.8, expanding=0.7)
    S["contracting"]["trainable_params"], S["expanding"]["trainable_params"] = "10", "20"
    stats = [{"target": "t", "plan_a": "contracting", "plan_b": "expanding", "ci_low": lo,
              "ci_high": hi, "verdict": verdict, "diff": "0.1"}]
    text = "\n".join(findings("t", "ultrasound", S, stats, "keras", 9))
    assert "The contracting part has 0.50x the expanding part's parameters" in text
    assert words in text, text


def test_no_trained_as_column_without_aliases(tmp_path):
    from keras_unet_ft.report import plans_table

    S = {p: {"plan": p, "trained_as": p, "folds_ok": "2", "folds_failed": "0",
             "trainable_params": "5", "seconds_per_epoch": "2.33",
             "steady_seconds_per_epoch": "0.15", "train_seconds": "1"} for p in ("a", "b")}
    text = "\n".join(plans_table(S))
    assert "trained as" not in text and "|  |" not in text
    # the seconds training_time.png draws (the steady state), named in the header
    assert "s / epoch (median after the 1st)" in text and "| 0.15 |" in text
    assert "2.33" not in text


def test_a_best_plan_no_better_than_the_pretrained_net_is_not_recommended(tmp_path):
    """The smoke report once named a "best plan" among nets that learned nothing."""
    flat = {("contracting", 0): [0.5, 0.5], ("contracting", 1): [0.25, 0.25],
            ("expanding", 0): [0.4, 0.4], ("expanding", 1): [0.2, 0.2],
            ("none", 0): [0.5, 0.5], ("none", 1): [0.25, 0.25]}
    out = make_handmade_results(tmp_path / "r", dice=flat)
    write_tables(out)
    text = write_report(out).read_text()
    top = text.split("Every number below")[0]
    assert "**The smoke profile checks that the pipeline runs; its nets are too small" in top
    assert ("**No plan is recommended for sim_bus**: the best fine-tuning plan, contracting "
            "(Dice 0.375), is not shown better than none (best − none: +0.000, 95 % interval "
            "[+0.000, +0.000])") in top
    assert "Best on the held-out images" not in text


def test_a_recommendation_names_the_plans_not_shown_worse(report_text):
    assert ("Best on the held-out images: **contracting** (= contracting:blocks, the same "
            "layers), Dice 0.825 [") in report_text
    assert ("The other plan is worse by the paired 95 % interval of best − plan."
            in report_text)
    assert "No plan is recommended" not in report_text


def test_data_warnings_of_a_target_are_printed(tmp_path):
    from keras_unet_ft.io import read_json, write_json

    out = make_handmade_results(tmp_path / "r")
    m = read_json(out / "runs.json")
    m["targets"][0]["notes"] = ["sim_bus: images of mixed aspect ratios (width / height ...)"]
    write_json(out / "runs.json", m)
    write_tables(out)
    text = write_report(out).read_text()
    assert ("## sim_bus (ultrasound)\n\n**Data warnings:**\n\n- sim_bus: images of mixed "
            "aspect ratios") in text


def _stat(target, a, b, diff, lo, hi, verdict):
    return {"target": target, "plan_a": a, "plan_b": b, "diff": diff, "ci_low": lo,
            "ci_high": hi, "verdict": verdict}


def test_shift_section_says_which_side_wins_per_shift_as_its_interval_does():
    from types import SimpleNamespace as T

    from keras_unet_ft.report import shift_section

    targets = [T(spec="sim_bus?shift=none&name=ref", slug="ref"),
               T(spec="sim_bus?shift=blur&name=blurred", slug="blurred"),
               T(spec="sim_bus?shift=rim&name=rimmed", slug="rimmed"),
               T(spec="folder:/x", slug="x")]
    summary = [{"target": "ref", "plan": "none", "dice_mean": "0.7"},
               {"target": "blurred", "plan": "none", "dice_mean": "0.4"}]
    stats = [_stat("ref", "contracting", "expanding", "0.005", "-0.01", "0.02", "tied"),
             _stat("blurred", "contracting", "expanding", "0.05", "0.02", "0.08", "yes"),
             _stat("rimmed", "contracting", "expanding", "-0.04", "-0.06", "-0.01", "no"),
             _stat("blurred", "shallow_to_deep:1", "deep_to_shallow:1", "0.1", "0.05", "0.2",
                   "yes")]
    text = "\n".join(shift_section(targets, summary, stats, units=9))
    assert "## Which blocks under which domain shift" in text
    assert ("| blurred | blur: " in text
            and "| input | 0.400 | 0.050 [+0.020, +0.080] shallow |" in text)
    assert ("| rimmed | rim: " in text
            and "| output | - | -0.040 [-0.060, -0.010] deep | - |" in text)
    assert "0.005 [-0.010, +0.020] tied" in text
    assert "contracting vs expanding - none: tied, blur: shallow, rim: deep" in text
    assert "| x |" not in text and "shallow_to_deep:5" not in text   # no such comparison
    assert shift_section(targets[:1] + targets[3:], summary, stats, units=9) == []


NAN = float("nan")


@pytest.mark.parametrize("modality, S, expected, absent", [
    # REPORT.md said "**no** ... mean difference +nan" when every run of one side diverged
    ("ultrasound", _S(**{"shallow_to_deep:1": 0.5, "deep_to_shallow:1": NAN,
                         "shallow_to_deep:5": 0.6, "deep_to_shallow:5": NAN}),
     "Shallow→deep curve above deep→shallow on t (paper, Fig. 4, breast US): **cannot be "
     "decided** — every run of deep_to_shallow:1 and deep_to_shallow:5 failed or diverged (no "
     "Dice), so no K has both curves.", "nan"),
    ("xray", _S(**{"shallow_to_deep:1": NAN, "deep_to_shallow:1": 0.9}),
     "curves close on t (paper, Fig. 4, X-ray): **cannot be decided** — every run of "
     "shallow_to_deep:1 failed or diverged", "nan"),
    # a K with a lost side is no point of the curves, and is named
    ("ultrasound", _S(**{"shallow_to_deep:1": 0.7, "deep_to_shallow:1": 0.5,
                         "shallow_to_deep:5": 0.6, "deep_to_shallow:5": NAN}),
     "**yes**: above at 1 of 1 points (K = 1), mean difference +0.200 (K = 5 left out: every "
     "run of deep_to_shallow:5 failed or diverged (no Dice)).", "nan"),
    ("ultrasound", _S(contracting=NAN, expanding=0.6),
     "Contracting > expanding on t (paper, breast US: 0.80 vs 0.72): **cannot be decided** — "
     "every run of contracting failed or diverged (no Dice).", "**no**"),
    ("ultrasound", _S(**{"deep_to_shallow:1": NAN, "shallow_to_deep:1": 0.6,
                         "shallow_to_deep:2": 0.7, "deep_to_shallow:2": 0.5}),
     "the worst block plan (TUFFC: 'fine-tuning the last layers is often the worst "
     "strategy'): **cannot be decided** — every run of deep_to_shallow:1 failed or diverged "
     "(no Dice).", "number"),
    ("ultrasound", {**_S(all=0.9), "shallow_to_deep:1": {"plan": "shallow_to_deep:1",
                                                          "dice_mean": "0.8",
                                                          "seconds_per_epoch": "nan"}},
     "faster than the whole network (TUFFC): **cannot be decided** — no seconds per epoch for "
     "shallow_to_deep:1 (no ok run timed).", "**no**"),
])
def test_a_side_with_no_dice_cannot_be_decided(modality, S, expected, absent):
    text = "\n".join(findings("t", modality, S, [], "keras", 9))
    assert expected in text, text
    assert absent not in text.replace(expected, ""), text


def _last_block_S():
    return _S(**{"deep_to_shallow:1": 0.18640, "deep_to_shallow:2": 0.18638,
                 "shallow_to_deep:1": 0.3, "shallow_to_deep:2": 0.4})


@pytest.mark.parametrize("row, expected", [
    # "worst block plan: **no**" once compared 0.18640 with 0.18638: their interval holds 0
    (_stat("t", "deep_to_shallow:1", "deep_to_shallow:2", "0.00002", "0.0", "0.0", "tied"),
     "**tied** — not told apart from deep_to_shallow:2 (the paired interval holds 0), "
     "deep_to_shallow:1 is number 3 of 4 block plans from the best (Dice 0.186; lowest: "
     "deep_to_shallow:2 0.186; deep_to_shallow:1 − deep_to_shallow:2 over the held-out images "
     "both scored: 0.000, 95 % interval [+0.000, +0.000])."),
    (_stat("t", "deep_to_shallow:1", "deep_to_shallow:2", "0.00002", "-0.00001", "0.00004",
           "tied"), "interval [-1e-05, +4e-05])"),
    # decided by the interval above 0: the last block is better than the lowest plan
    (_stat("t", "deep_to_shallow:1", "deep_to_shallow:2", "0.00002", "0.00001", "0.00003",
           "yes"), "**no**, deep_to_shallow:1 is number 3 of 4"),
    # the row in the other order is read as its mirror image
    (_stat("t", "deep_to_shallow:2", "deep_to_shallow:1", "-0.00002", "-0.00003", "-0.00001",
           "no"), "**no**, deep_to_shallow:1 is number 3 of 4 block plans from the best (Dice "
                  "0.186; lowest: deep_to_shallow:2 0.186; deep_to_shallow:1 − deep_to_shallow:2 "
                  "over the held-out images both scored: 0.000, 95 % interval [+1e-05, +3e-05])"),
    # the means and the interval disagree: said so, no verdict
    (_stat("t", "deep_to_shallow:1", "deep_to_shallow:2", "-0.00002", "-0.00003", "-0.00001",
           "no"), "**cannot be decided** — the fold means and the paired interval"),
])
def test_last_block_verdict_follows_its_paired_interval(row, expected):
    text = "\n".join(findings("t", "ultrasound", _last_block_S(), [row], "keras", 9))
    assert expected in text, text


def test_the_last_block_is_paired_with_the_plan_it_is_ranked_against():
    from keras_unet_ft.stats import comparison_pairs

    means = {"deep_to_shallow:1": 0.18640, "deep_to_shallow:2": 0.18638,
             "shallow_to_deep:1": 0.3, "shallow_to_deep:2": 0.4}
    assert comparison_pairs(list(means), 9, means=means)[-1] == (
        "deep_to_shallow:1", "deep_to_shallow:2", "is the last block the worst block plan? (TUFFC)")
    means["shallow_to_deep:1"] = 0.1   # already compared (same number of units): not twice
    pairs = comparison_pairs(list(means), 9, means=means)
    assert sum({a, b} == {"shallow_to_deep:1", "deep_to_shallow:1"} for a, b, _ in pairs) == 1


def test_plans_equal_on_every_image_are_tied(tmp_path):
    same = {("contracting", 0): [0.6, 0.5], ("contracting", 1): [0.4, 0.3],
            ("expanding", 0): [0.6, 0.5], ("expanding", 1): [0.4, 0.3],
            ("none", 0): [0.1, 0.1], ("none", 1): [0.1, 0.1]}
    out = make_handmade_results(tmp_path / "r", dice=same)
    write_tables(out)
    text = write_report(out).read_text()
    assert ("breast US: 0.80 vs 0.72): **tied (the difference lies in [+0.000, +0.000])**"
            in text), text


@pytest.mark.parametrize("a, b, spreads, expected", [
    # "faster: **yes**" once rested on 1.10x while the runs of a plan differed by more
    ("1.0", "1.1", ("1.3", "1.05"), "**tied** — within the timing noise, 1.00 vs 1.10 s per "
     "epoch (1.10x; median epoch after the first, which holds the tracing / compiling; timing "
     "noise: the runs of each plan differ by up to 1.30x (slowest / fastest run), so a ratio "
     "counts beyond 1.30x)."),
    ("1.0", "1.5", ("1.3", "1.05"), "**yes**, 1.00 vs 1.50 s per epoch (1.50x;"),
    ("1.5", "1.0", ("1.3", "1.05"), "**no**, 1.50 vs 1.00 s per epoch (0.67x;"),
    # a spread smaller than the floor: the floor
    ("1.0", "1.08", ("1.01", "1.02"), "**tied** — within the timing noise"),
    ("1.0", "1.2", ("1.01", "1.02"), "**yes**, 1.00 vs 1.20 s per epoch (1.20x; median epoch "
     "after the first, which holds the tracing / compiling; timing noise: the runs of each "
     "plan differ by up to 1.02x (slowest / fastest run), so a ratio counts beyond 1.10x)."),
    # one timed run per plan: the spread is not known, a fixed margin
    ("1.0", "1.2", ("nan", "nan"), "**tied** — within the timing noise, 1.00 vs 1.20 s per "
     "epoch (1.20x; median epoch after the first, which holds the tracing / compiling; timing "
     "noise not known (a single timed run of a plan), so a ratio counts beyond a fixed 1.25x)."),
    ("1.0", "1.3", ("", ""), "**yes**, 1.00 vs 1.30 s per epoch"),
])
def test_speed_verdict_counts_beyond_the_timing_noise(a, b, spreads, expected):
    S = _S(all=0.9, **{"shallow_to_deep:1": 0.8})
    for p, x, sp in (("shallow_to_deep:1", a, spreads[0]), ("all", b, spreads[1])):
        S[p]["steady_seconds_per_epoch"], S[p]["steady_seconds_per_epoch_spread"] = x, sp
    text = "\n".join(findings("t", "ultrasound", S, [], "selective", 9))
    assert expected in text, text


def _rec_rows(*plans):
    """Summary rows of one target: the first plan is the best, the others not shown worse."""
    return {p: {"target": "t", "plan": p, "trained_as": p, "best": str(int(i == 0)),
                "tied_best": "1", "dice_images_mean": str(0.8 - 0.1 * i), "dice_ci_low": "0.7",
                "dice_ci_high": "0.9", "best_minus_dice": "0"} for i, p in enumerate(plans)}


@pytest.mark.parametrize("plans, expected, absent", [
    # "every other plan is worse" was said where there was no other plan
    (("contracting",), "Only one plan was compared: **contracting**, Dice 0.800 [0.700, 0.900]. "
     "With no other fine-tuning plan in this study, it says nothing about which layers to "
     "fine-tune.", "other plan"),
    (("contracting", "expanding"), "Best on the held-out images: **contracting**, Dice 0.800 "
     "[0.700, 0.900]. Plans not shown to be worse (the paired 95 % interval of best − plan "
     "holds 0): expanding (1 of 1).", "Only one"),
])
def test_choice_with_one_plan_says_only_one_was_compared(plans, expected, absent):
    from keras_unet_ft.report import choice_section

    text = "\n".join(choice_section(_rec_rows(*plans), [], "t"))
    assert expected in text, text
    assert absent not in text
