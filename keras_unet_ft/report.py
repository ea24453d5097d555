"""REPORT.md of a results folder: the paper's numbers beside this run's, all computed.

Every number in the report is read from results.csv / summary.csv / stats.csv
of that folder (written by the same run) and its ``runs.json``; the papers'
numbers come from :mod:`keras_unet_ft.references` (docs/paper.md). Each finding
of the paper gets one computed sentence saying whether this run reproduces it.
No model is built and no Keras is imported.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Dict, List

import numpy as np

from .config import (TOO_SMALL_TO_LEARN, ModelConfig, describe_shift, model_family, parse_shift,
                     pretrained_by_package)
from .exitcodes import UserError
from .io import atomic_write_text, read_json
from .layout import REPORT, figures_dir, pretrained_folder, spec_options, splits_file
from .plans import Plan, all_layers_plan
from .results import LoadedFolder, epoch_seconds_key, recommendation
from .stats import LAST_BLOCK, is_path_block_plan, worst_block_partner
from .references import CHENG, CHENG_TEST, PAPER, PAPER_CONTRACTING_RATIO, PAPER_DATA

CLOSE_DICE = 0.03   # "close" curves / scores on X-ray (the paper's Fig. 4 spread)
MIN_DIFF = 0.01     # a Dice difference smaller than this is no difference
ALPHA = 0.05
#: a speed-up counts only beyond the timing noise: the runs of each plan differ by up to
#: their slowest / fastest ratio, never taken below TIME_NOISE_FLOOR; where a plan has one
#: timed run (the spread is not known), a fixed TIME_NOISE_UNKNOWN
TIME_NOISE_FLOOR = 1.10
TIME_NOISE_UNKNOWN = 1.25
UNDECIDED = "cannot be decided"


def _sign(diff: float) -> str:
    """The verdict of a difference without an interval: yes (above 0), no (below), tied
    (exactly 0), cannot be decided (no number)."""
    if not math.isfinite(diff):
        return UNDECIDED
    return "yes" if diff > 0 else "no" if diff < 0 else "tied"


def _no_dice(plans) -> str:
    """The reason a comparison cannot be decided: these plans have no ok run."""
    plans = list(plans)
    return (f"every run of {' and '.join(plans)} failed or diverged (no Dice)" if plans
            else "no Dice")


def _verdict(diff: float, p) -> str:
    """yes: A beats B by >= MIN_DIFF with p < ALPHA; 'direction only' when not significant;
    tied when the difference is exactly 0; cannot be decided without a difference."""
    try:
        p = float(p)
    except (TypeError, ValueError):
        p = math.nan
    if not math.isfinite(diff):
        return f"{UNDECIDED} (no difference: a side has no Dice)"
    if diff == 0:
        return "tied (difference 0)"
    if diff >= MIN_DIFF and p < ALPHA:
        return "yes"
    if diff > 0:
        return "direction only (difference < 0.01 or p >= 0.05)"
    return "no"


def _interval(row, prefix: str = "", sign: str = "+") -> str:
    """``[lo, hi]`` of a row's 95 % interval (``<prefix>ci_low`` / ``_high``), or '-'
    (tables of older versions, or no images)."""
    try:
        lo, hi = float(row[f"{prefix}ci_low"]), float(row[f"{prefix}ci_high"])
    except (KeyError, TypeError, ValueError):
        return "-"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "-"
    text = f"[{lo:{sign}.3f}, {hi:{sign}.3f}]"
    if (lo, hi) != (0.0, 0.0) and all(float(f"{x:.3f}") == 0 for x in (lo, hi)):
        # [+0.000, +0.000] beside "yes" would contradict it: two significant digits instead
        text = f"[{lo:{sign}.2g}, {hi:{sign}.2g}]"
    return text


def _ci(row) -> str:
    """A stats row's interval of A - B (signed)."""
    return _interval(row)


def _plan_ci(row) -> str:
    """A plan's interval of its mean Dice over held-out images (summary.csv)."""
    return _interval(row, "dice_", "")


def _ci_verdict(row, a="A", b="B") -> str:
    """The interval's verdict in words (``yes`` / ``no`` / ``tied``)."""
    v = row.get("verdict")
    if v == "yes":
        return f"yes ({a} better; 95 % CI {_ci(row)})"
    if v == "no":
        return f"no ({b} better; 95 % CI {_ci(row)})"
    if v == "tied":
        return f"tied (the difference lies in {_ci(row)})"
    return _verdict(float(row.get("diff", "nan") or "nan"), row.get("images_wilcoxon_p"))


def _bounds(row):
    """The (low, high) of a stats row's interval, or None."""
    try:
        lo, hi = float(row["ci_low"]), float(row["ci_high"])
    except (KeyError, TypeError, ValueError):
        return None
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else None


def _within_margin(diff: float, row, margin: float = CLOSE_DICE):
    """Equivalence within ``±margin``: decided by the 95 % interval of the difference when
    the row has one (all of it inside the margin), else by the difference itself. Returns
    ``(ok, words saying how)``."""
    b = _bounds(row)
    if b is None:
        return abs(diff) < margin, f"|difference| {abs(diff):.3f}, no interval"
    inside = -margin < b[0] and b[1] < margin
    return inside, (f"95 % interval {_ci(row)} "
                    + ("inside" if inside else "reaches beyond") + f" ±{margin}")


def _compare_words(a: float, b: float, row) -> str:
    """"higher Dice" / "lower Dice" only when the paired interval says so; otherwise that the
    two cannot be told apart (or are equal to three decimals)."""
    v = row.get("verdict") if row else None
    if v == "yes":
        return f"higher Dice ({a:.3f} vs {b:.3f}, 95 % interval of the difference {_ci(row)})"
    if v == "no":
        return f"lower Dice ({a:.3f} vs {b:.3f}, 95 % interval of the difference {_ci(row)})"
    if v == "tied":
        return (f"a Dice not told apart from the other's ({a:.3f} vs {b:.3f}; the 95 % interval of "
                f"the difference, {_ci(row)}, holds 0)")
    if f"{a:.3f}" == f"{b:.3f}":
        return f"the same Dice to three decimals ({a:.3f})"
    return f"{'higher' if a > b else 'lower'} Dice ({a:.3f} vs {b:.3f}; no interval)"


def _f(x, nd=3) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(x) else f"{x:.{nd}f}"


def _p(x) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "-"
    if math.isnan(x):
        return "n/a"
    return f"{x:.2g}" if x >= 1e-4 else "<1e-4"


def _pm(row, metric, nd=3) -> str:
    mean = _f(row.get(f"{metric}_mean"), nd)
    return "-" if mean == "-" else f"{mean} ± {_f(row.get(f'{metric}_std'), nd)}"


def _paper_pm(v, nd=2, unit="") -> str:
    m, s = v
    return f"{m:.{nd}f}{unit}" + (f" ± {s:.{nd}f}" if s is not None else "")


def _units(summary, prefix, scheme=""):
    """The K of the ``prefix:K`` plans (``prefix`` = ``shallow_to_deep:`` ...) of a scheme."""
    kind, want = prefix.rstrip(":"), ("level" if scheme == "@level" else "path")
    ks = []
    for r in summary:
        try:
            p = Plan.parse(r["plan"])
        except ValueError:
            continue
        if p.curve_k(kind, want) is not None:
            ks.append(p.k)
    return sorted(set(ks))


def trainer_of(trainers) -> str:
    """The trainer a target's timings speak for: ``masked`` if any run used it (its times say
    nothing per plan), else ``keras`` if any run used Keras' fit, else ``selective``."""
    trainers = set(trainers)
    return "masked" if "masked" in trainers else "keras" if "keras" in trainers else "selective"


def _pair_row(st: Dict[tuple, dict], a: str, b: str):
    """The stats row of A − B in either order, as A − B (a reversed row's difference,
    interval and verdict flipped); None when no row compares the two."""
    if (a, b) in st:
        return st[(a, b)]
    row = st.get((b, a))
    if row is None:
        return None
    flipped = dict(row, plan_a=a, plan_b=b,
                   verdict={"yes": "no", "no": "yes"}.get(row.get("verdict"), row.get("verdict")))
    for key in ("diff", "ci_low", "ci_high"):
        flipped[key] = -float(row[key]) if row.get(key) not in ("", None) else ""
    flipped["ci_low"], flipped["ci_high"] = flipped["ci_high"], flipped["ci_low"]
    return flipped


def _curve_findings(target, modality, S, st, dice, units) -> List[str]:
    """Fig. 4's shallow→deep against deep→shallow: above (ultrasound) or close (X-ray). A K
    where a side has no Dice (every run failed or diverged) is no point of the curves: it is
    named, and with no point left the finding cannot be decided."""
    ks = [k for k in _units(list(S.values()), "shallow_to_deep:")
          if f"deep_to_shallow:{k}" in S and k < units]   # K = N is 'all' for both
    if not ks or modality not in ("ultrasound", "xray"):
        return []
    lost = [p for k in ks for p in (f"shallow_to_deep:{k}", f"deep_to_shallow:{k}")
            if math.isnan(dice(p))]
    dropped = sorted({int(p.split(":")[1]) for p in lost})
    ks = [k for k in ks if k not in dropped]
    claim = (f"Shallow→deep curve above deep→shallow on {target} (paper, Fig. 4, breast US)"
             if modality == "ultrasound" else
             f"Shallow→deep and deep→shallow curves close on {target} (paper, Fig. 4, X-ray)")
    if not ks:
        return [f"{claim}: **{UNDECIDED}** — {_no_dice(lost)}, so no K has both curves."]
    left_out = (f" (K = {', '.join(map(str, dropped))} left out: {_no_dice(lost)})"
                if dropped else "")
    diffs = [dice(f"shallow_to_deep:{k}") - dice(f"deep_to_shallow:{k}") for k in ks]
    above_k = [k for k, d in zip(ks, diffs) if d > 0]
    above = len(above_k)
    mean_diff = sum(diffs) / len(diffs)
    sig = [k for k in ks if st.get((f"shallow_to_deep:{k}", f"deep_to_shallow:{k}"),
                                   {}).get("verdict") == "yes"]
    where = (f"above at {above} of {len(ks)} points"
             + (f" (K = {', '.join(map(str, above_k))})" if above_k else "")
             + (f", significantly (paired interval above 0) at K = {', '.join(map(str, sig))}"
                if sig else ""))
    if modality == "ultrasound":
        many, far = above > len(ks) / 2, mean_diff >= MIN_DIFF
        ok = many and far
        why = ("" if ok else " — not above at more than half of the points"
               if not many else f" — the mean difference is below +{MIN_DIFF}")
        return [f"{claim.replace(', breast US)', ', breast US;')} decided: above at more than "
                f"half of the K = {', '.join(map(str, ks))} and a mean Dice difference of at "
                f"least +{MIN_DIFF}): **{'yes' if ok else 'no'}**{why}: {where}, mean "
                f"difference {mean_diff:+.3f}{left_out}."]
    mad = sum(abs(d) for d in diffs) / len(diffs)
    return [f"{claim}, within a margin of ±{CLOSE_DICE} Dice on average: "
            f"**{'yes' if mad < CLOSE_DICE else 'no'}**, mean |difference| {mad:.3f} over K = "
            f"{', '.join(map(str, ks))}; shallow→deep {where}{left_out}."]


def _last_block_finding(S, st, dice) -> List[str]:
    """TUFFC's "fine-tuning the last layers is often the worst strategy": the last block
    against the block plan it is ranked against (:func:`~keras_unet_ft.stats.worst_block_partner`),
    decided by their paired interval (stats.csv) where there is one: tied when it holds 0."""
    blocks = [p for p in S if is_path_block_plan(p)]
    if LAST_BLOCK not in S or len(blocks) <= 2:
        return []
    claim = ("Fine-tuning only the last block is the worst block plan (TUFFC: 'fine-tuning "
             "the last layers is often the worst strategy')")
    lost = [p for p in blocks if math.isnan(dice(p))]
    partner = worst_block_partner({p: dice(p) for p in blocks})
    if partner is None:
        return [f"{claim}: **{UNDECIDED}** — {_no_dice(lost)}"
                + ("." if LAST_BLOCK in lost else ", so fewer than three block plans have a Dice.")]
    ranked = sorted((p for p in blocks if p not in lost), key=lambda p: (dice(p), p))
    rank = ranked.index(LAST_BLOCK) + 1
    lowest = rank == 1
    d = dice(LAST_BLOCK) - dice(partner)
    row = _pair_row(st, LAST_BLOCK, partner)
    v = row.get("verdict") if row else None
    if v in ("yes", "no", "tied"):
        paired = (f"; {LAST_BLOCK} − {partner} over the held-out images both scored: "
                  f"{_f(row.get('diff'))}, 95 % interval {_ci(row)}")
        if v == "tied":
            word, why = "tied", (f" — not told apart from {partner} (the paired interval "
                                 "holds 0)")
        elif (v == "no") == lowest:
            word, why = ("yes" if lowest else "no"), ""
        else:
            word, why = UNDECIDED, (" — the fold means and the paired interval over images "
                                    f"order {LAST_BLOCK} and {partner} differently")
    else:
        paired = "; no paired interval (stats.csv has no row comparing the two)"
        word, why = (("tied", f" — the same Dice as {partner}") if d == 0
                     else ("yes" if lowest else "no", ""))
    left = f"; left out: {_no_dice(lost)}" if lost else ""
    return [f"{claim}: **{word}**{why}, {LAST_BLOCK} is number {len(ranked) - rank + 1} of "
            f"{len(ranked)} block plans from the best (Dice {dice(LAST_BLOCK):.3f}; lowest: "
            f"{ranked[0]} {dice(ranked[0]):.3f}"
            + (f", next: {partner} {dice(partner):.3f}" if lowest else "")
            + f"{paired}{left})."]


def _speed_finding(shallow: dict, full: dict, rows: List[dict], trainer: str) -> List[str]:
    """TUFFC's "fine-tuning the shallowest block is faster than the whole network", decided
    beyond the timing noise: a ratio of seconds per epoch counts only when it exceeds how far
    apart the runs of each plan are (slowest / fastest, at least ``TIME_NOISE_FLOOR``), or a
    fixed ``TIME_NOISE_UNKNOWN`` when a plan has a single timed run."""
    key = epoch_seconds_key(rows)   # the table's and training_time.png's
    a = float(shallow.get(key) or "nan")
    b = float(full.get(key) or "nan")
    claim = "Fine-tuning the shallowest block is faster than the whole network (TUFFC)"
    if not (a > 0 and b > 0):
        return [f"{claim}: **{UNDECIDED}** — no seconds per epoch for "
                f"{' and '.join(r['plan'] for r, x in ((shallow, a), (full, b)) if not x > 0)} "
                "(no ok run timed)."]
    how = ("median epoch after the first, which holds the tracing / compiling"
           if key == "steady_seconds_per_epoch" else
           "selective trainer, epoch times without the one-off trace"
           if trainer == "selective" else
           "Keras' fit: each run's first epoch includes its retrace")
    spreads = [float(r.get(f"{key}_spread") or "nan") for r in (shallow, full)]
    if all(math.isfinite(x) for x in spreads):
        noise = max(max(spreads), TIME_NOISE_FLOOR)
        margin = (f"timing noise: the runs of each plan differ by up to {max(spreads):.2f}x "
                  f"(slowest / fastest run), so a ratio counts beyond {noise:.2f}x")
    else:
        noise = TIME_NOISE_UNKNOWN
        margin = (f"timing noise not known (a single timed run of a plan), so a ratio counts "
                  f"beyond a fixed {noise:.2f}x")
    word = "yes" if b / a > noise else "no" if a / b > noise else "tied"
    why = " — within the timing noise" if word == "tied" else ""
    return [f"{claim}: **{word}**{why}, {a:.2f} vs {b:.2f} s per epoch ({b / a:.2f}x; {how}; "
            f"{margin})."]


def findings(target: str, modality: str, S: Dict[str, dict], stats: List[dict],
             trainer: str = "keras", units: int = 9) -> List[str]:
    """One computed sentence per finding of the paper that this target can test.

    Args:
        target: target slug. modality: ``ultrasound``, ``xray`` or ``other``.
        S: summary rows of the target by plan. stats: rows of stats.csv.
        trainer: ``selective``, ``masked`` or ``keras`` (the masked trainer cannot time plans).
        units: blocks of the model (the all-layers plan is ``shallow_to_deep:units``).
    """
    out = []
    st = {(r["plan_a"], r["plan_b"]): r for r in stats if r["target"] == target}

    def dice(p):
        return float(S[p]["dice_mean"]) if p in S and S[p]["dice_mean"] not in ("", "nan") else math.nan

    c, e = dice("contracting"), dice("expanding")
    pair = st.get(("contracting", "expanding"), {})
    both = "contracting" in S and "expanding" in S
    lost = [p for p in ("contracting", "expanding") if p in S and math.isnan(dice(p))]
    if both and lost and modality in ("ultrasound", "xray"):
        claim = ("Contracting > expanding on {t} (paper, breast US: 0.80 vs 0.72)"
                 if modality == "ultrasound" else
                 "Contracting ≈ expanding on {t} (paper, chest X-ray: 0.98 vs 0.98)")
        out.append(claim.format(t=target) + f": **{UNDECIDED}** — {_no_dice(lost)}.")
    if not math.isnan(c) and not math.isnan(e):
        if modality == "ultrasound":
            verdict = (_ci_verdict(pair, "contracting", "expanding")
                       if pair.get("verdict") in ("yes", "no", "tied")
                       else _verdict(c - e, pair.get("images_t_p")))
            out.append(f"Contracting > expanding on {target} (paper, breast US: 0.80 vs 0.72): "
                       f"**{verdict}**, Dice {c:.3f} vs {e:.3f} "
                       f"({c - e:+.3f}; 95 % bootstrap interval over images, resampled within "
                       f"folds: {_ci(pair)}), "
                       f"paired t-test over images p = {_p(pair.get('images_t_p'))}, "
                       f"Wilcoxon p = {_p(pair.get('images_wilcoxon_p'))} (Holm-corrected over "
                       f"this target's {sum(1 for r in stats if r['target'] == target)} "
                       f"comparisons: {_p(pair.get('images_wilcoxon_p_holm'))}), "
                       f"over folds p = {_p(pair.get('folds_t_p'))}.")
        elif modality == "xray":
            ok, how = _within_margin(c - e, pair)
            out.append(f"Contracting ≈ expanding on {target} (paper, chest X-ray: 0.98 vs 0.98), "
                       f"equivalent within a margin of ±{CLOSE_DICE} Dice: **{'yes' if ok else 'no'}**"
                       f", Dice {c:.3f} vs {e:.3f} (difference {c - e:+.3f}; {how}), "
                       f"paired t-test over images p = {_p(pair.get('images_t_p'))}.")
        tc = S["contracting"].get("trainable_params")
        te = S["expanding"].get("trainable_params")
        if tc and te:
            ratio = float(tc) / float(te)
            out.append(f"The contracting part has {ratio:.2f}x the expanding part's parameters "
                       f"(paper: 'almost half', {PAPER_CONTRACTING_RATIO}), and fine-tuning it "
                       f"gives {_compare_words(c, e, pair)}.")
    out += _curve_findings(target, modality, S, st, dice, units)
    out += _last_block_finding(S, st, dice)
    full = "all" if "all" in S else (all_layers_plan(units) if all_layers_plan(units) in S
                                     else None)
    if full and "shallow_to_deep:1" in S and trainer == "masked":
        out.append("Fine-tuning the shallowest block is faster than the whole network (TUFFC): "
                   "**not measured** - this study used the masked trainer, where every plan "
                   "computes all gradients (one traced step for all plans); run with "
                   "`--set study.trainer=auto` (the selective trainer) to time plans.")
    elif full and "shallow_to_deep:1" in S:
        out += _speed_finding(S["shallow_to_deep:1"], S[full], list(S.values()), trainer)
    if full and "scratch" in S and not math.isnan(dice("scratch")):
        best = max((p for p in S if p not in ("none", "scratch") and not math.isnan(dice(p))),
                   key=dice, default=None)
        if best:
            out.append(f"Beyond the paper: best fine-tuning plan {best} ({dice(best):.3f}) vs "
                       f"training from scratch ({dice('scratch'):.3f}) vs the pretrained net "
                       f"without fine-tuning ({_f(S.get('none', {}).get('dice_mean'))}).")
    return out


def cheng_section(S, results, target) -> List[str]:
    """Cheng & Lam's numbers beside this run's, and their findings checked."""
    enc = {r.get("encoder_weights") for r in results if r["target"] == target
           and r.get("model") == "vunet"}
    L = ["### Cheng & Lam (lung ultrasound, rib segmentation) beside this run", "",
         "| model / plan | Cheng Dice (5-fold CV) | this run Dice | this run pixel error % |",
         "|---|---|---|---|"]
    for p, r in S.items():
        if not p.startswith(("xunet/", "vunet/")):
            continue
        ref = CHENG.get(p)
        if ref:
            ref_s = f"{ref[0]:.3f} ± {ref[1]:.3f}"
            if p == "xunet/all":
                ref_s += f" (test split ≈ {CHENG_TEST['xunet']:.2f})"
        elif p.startswith("vunet/") and not p.endswith(("/none", "/scratch")):
            ref_s = f"≈ {CHENG_TEST['vunet']:.2f} (their test split)"
        else:
            ref_s = "-"
        L.append(f"| {p} | {ref_s} | {_pm(r, 'dice')} | {_pm(r, 'pixel_error', 2)} |")
    L.append("")
    vu = [p for p in S if p.startswith("vunet/")]
    if vu:
        w = next(iter(enc), None)
        label = ("ImageNet VGG16 encoder" if w not in (None, "", "None")
                 else "**random VGG16 encoder (no ImageNet weights given): not transfer learning**")
        L += [f"V-Unet runs used: {label}.", ""]

    def d(p):
        try:
            return float(S[p]["dice_mean"])
        except (KeyError, ValueError):
            return math.nan

    a, b = d("xunet/all"), d("xunet/freeze_bottleneck")
    if not math.isnan(a) and not math.isnan(b):
        L.append(f"- Fine-tuning all layers slightly better than freezing the bottleneck (Cheng: "
                 f"0.814 vs 0.799): **{_sign(a - b)}**, {a:.3f} vs {b:.3f} "
                 f"({a - b:+.4f}).")
    if vu and not math.isnan(a):
        v = d(vu[0])
        L.append(f"- V-Unet Dice above X-Unet (Cheng: ≈0.86 vs ≈0.83): "
                 f"**{_sign(v - a)}**, {v:.3f} vs {a:.3f} ({v - a:+.4f}).")
    return L + [""]


def sizes_section(rows: List[dict], target: str) -> List[str]:
    """The dataset-size study of ``target``: Dice per size with / without augmentation,
    and Cheng & Lam's two claims (data size and augmentation matter) checked."""
    rows = [r for r in rows if r["target"] == target]
    if not rows:
        return []
    L = ["### Dice vs training-set size (Cheng & Lam's data-size study)", "",
         "Cheng & Lam: 200 vs 400 frames (V-Unet), 400 vs 600 (X-Unet), the extra frames being "
         "flips; \"data size and augmentation matter\". Here: nested subsets of each training "
         "fold, used as they are or augmented; Dice mean ± std over folds (folds run).", "",
         "| model / plan | training images | no augmentation | augmented |", "|---|---|---|---|"]
    by = {(r["plan"], int(r["n_originals"]), int(r["augment"])): r for r in rows}
    plans = list(dict.fromkeys(r["plan"] for r in rows))
    skipped = []
    for p in plans:
        for n in sorted({k[1] for k in by if k[0] == p}):
            cells = []
            for aug in (0, 1):
                r = by.get((p, n, aug))
                if r is None or int(r["folds_ok"]) == 0:
                    cells.append("-")
                    if r is not None and int(r["folds_skipped"]):
                        skipped.append(f"{p} n={n}")
                else:
                    cells.append(f"{_pm(r, 'dice')} ({r['folds_ok']})")
            L.append(f"| {p} | {n} | {cells[0]} | {cells[1]} |")
    L.append("")
    if skipped:
        L += ["Skipped (a fold has fewer training images): "
              + ", ".join(dict.fromkeys(skipped)) + ".", ""]
    for p in plans:
        for aug, label in ((1, "augmented"), (0, "no augmentation")):
            pts = sorted((int(r["n_originals"]), float(r["dice_mean"])) for r in rows
                         if r["plan"] == p and int(r["augment"]) == aug and int(r["folds_ok"]))
            if len(pts) >= 2:
                (n0, d0), (n1, d1) = pts[0], pts[-1]
                L.append(f"- {p}, {label}: more data helps: **{_sign(d1 - d0)}**, "
                         f"{n0} → {n1} images: {d0:.3f} → {d1:.3f} ({d1 - d0:+.4f}).")
        diffs = [float(by[(p, n, 1)]["dice_mean"]) - float(by[(p, n, 0)]["dice_mean"])
                 for (q, n, a) in by if q == p and a == 1 and (p, n, 0) in by
                 and int(by[(p, n, 1)]["folds_ok"]) and int(by[(p, n, 0)]["folds_ok"])]
        if diffs:
            L.append(f"- {p}: augmentation helps: **{_sign(float(np.mean(diffs)))}**, "
                     f"augmented − not, averaged over {len(diffs)} sizes: {np.mean(diffs):+.4f} "
                     f"Dice (better at {sum(d > 0 for d in diffs)} of {len(diffs)}).")
    return L + [""]


def methods_section(S: Dict[str, dict], stats: List[dict], target: str) -> List[str]:
    """Other ways to fine-tune (BitFit, layer-wise rate decay, gradual unfreezing) beside
    the block plan nearest in trainable parameters and the all-layers plan."""
    rows = [s for s in stats if s["target"] == target
            and Plan.parse(s["plan_a"]).is_method]
    if not rows:
        return []
    L = ["### Other ways to fine-tune, beside block freezing", "",
         "Each method against the block plan nearest to it in trainable parameters and "
         "against training all layers; paired over held-out images (Dice).", "",
         "| method | trainable params | Dice | compared with | its trainable params | its Dice "
         "| A − B | 95 % CI | images: Wilcoxon p | better? |",
         "|---|---|---|---|---|---|---|---|---|---|"]

    def n(plan):
        v = S.get(plan, {}).get("trainable_params")
        return f"{int(float(v)):,}" if v not in ("", None) else "-"

    for s in rows:
        a, b = s["plan_a"], s["plan_b"]
        L.append(f"| {a} | {n(a)} | {_f(s['mean_a'])} | {b} | {n(b)} | {_f(s['mean_b'])} | "
                 f"{_f(s['diff'])} | {_ci(s)} | {_p(s['images_wilcoxon_p'])} | "
                 f"{_ci_verdict(s, a, b)} |")
    return L + [""]


SHIFT_PAIRS = (("contracting", "expanding"), ("shallow_to_deep:1", "deep_to_shallow:1"))


def shift_section(targets, summary: List[dict], stats: List[dict], units: int) -> List[str]:
    """Which blocks win under which kind of domain shift: one row per ``sim_bus?shift=KIND``
    target (``unet-ft study --profile shift``), the shallow plan against the deep plan
    that trains as many blocks, paired over held-out images; [] with fewer than two such
    targets.

    Args:
        targets: the manifest's targets (``spec``, ``slug``).
        summary, stats: summary.csv and stats.csv rows.
        units: blocks of the model (``shallow_to_deep:MID`` vs ``deep_to_shallow:MID``).
    """
    shifted = []
    for t in targets:
        name, options = spec_options(t.spec)
        if name == "sim_bus" and "shift" in options:
            try:
                parse_shift(options["shift"])
            except UserError:
                continue
            shifted.append((t.slug, options["shift"]))
    if len(shifted) < 2:
        return []
    mid = (units + 1) // 2
    pairs = SHIFT_PAIRS + ((f"shallow_to_deep:{mid}", f"deep_to_shallow:{mid}"),)
    by = {(s["target"], s["plan_a"], s["plan_b"]): s for s in stats}
    dice = {(r["target"], r["plan"]): r for r in summary}
    pairs = tuple(p for p in pairs if any((slug,) + p in by for slug, _ in shifted))
    if not pairs:
        return []
    L = ["## Which blocks under which domain shift", "",
         "Each target is the built-in breast ultrasound with one thing changed relative to the "
         "reference set the net was pretrained on (`none`: no change). Each cell: Dice of the "
         "shallow plan minus the deep plan that trains as many blocks, its 95 % interval over "
         "held-out images, and which side wins (tied when the interval holds 0).", "",
         "| target | shift | level | pretrained, not tuned | "
         + " | ".join(f"{a} − {b}" for a, b in pairs) + " |",
         "|---|---|---|---|" + "---|" * len(pairs)]
    wins: Dict[str, List[str]] = {}
    for slug, kind in shifted:
        level, words = describe_shift(kind)
        none = dice.get((slug, "none"))
        cells = []
        for a, b in pairs:
            s = by.get((slug, a, b))
            if s is None:
                cells.append("-")
                continue
            side = {"yes": "shallow", "no": "deep", "tied": "tied"}.get(s.get("verdict"), "?")
            cells.append(f"{_f(s['diff'])} {_ci(s)} {side}")
            wins.setdefault(f"{a} vs {b}", []).append(f"{kind}: {side}")
        L.append(f"| {slug} | {kind}: {words} | {level} | "
                 f"{_f(none['dice_mean']) if none else '-'} | " + " | ".join(cells) + " |")
    L += ["", "In words: " + "; ".join(f"{k} - " + ", ".join(v) for k, v in wins.items())
          + ".", ""]
    return L


def budget_section(budgets: List[dict], target: str) -> List[str]:
    """The best plan within each parameter budget (``budgets.csv``) and the plans within it
    not shown worse; said only where the study has plans of more than one budget."""
    rows = [r for r in budgets if r["target"] == target]
    if len({r["best"] for r in rows if r.get("best")}) < 2:
        return []
    L = ["### The best plan per parameter budget", "",
         "Among the plans that train at most this share of the network's parameters (baselines "
         "left out): the one with the highest Dice, and those not shown worse than it (the "
         "paired 95 % interval of best − plan holds 0). See figures/dice_vs_params_*.png.", "",
         "| trains at most | plans | best | trainable params | Dice [95 % CI] | not shown worse |",
         "|---|---|---|---|---|---|"]
    for r in rows:
        share = f"{float(r['budget_percent']):g} %"
        if not r.get("best"):
            L.append(f"| {share} | 0 | (no plan of this study) | - | - | - |")
            continue
        L.append(f"| {share} | {r['plans']} | {r['best']} | "
                 f"{int(float(r['trainable_params'])):,} | {_f(r['dice_images_mean'])} "
                 f"[{_f(r['dice_ci_low'])}, {_f(r['dice_ci_high'])}] | "
                 f"{', '.join(r['tied'].split(';')) if r.get('tied') else '(none)'} |")
    return L + [""]


def _repeats(cfg: dict) -> str:
    n = int(cfg["study"].get("seeds", 1) or 1)
    return (f" repeated {n} times (each with its own folds, augmentation and initialisation)"
            if n > 1 else "")


def no_recommendation(target: str, rec: dict) -> str:
    """The sentence that replaces a recommendation when the best plan is not shown better than
    a baseline (``none``: the pretrained net untouched; ``scratch``)."""
    what = " nor than ".join(
        f"{b} (best − {b}: {d:+.3f}" + (f", 95 % interval [{lo:+.3f}, {hi:+.3f}])"
                                        if math.isfinite(lo) else ", no paired images)")
        for b, d, lo, hi in rec["not_better_than"])
    return (f"**No plan is recommended for {target}**: the best fine-tuning plan, "
            f"{rec['best']} (Dice {_f(rec['mean'])}), is not shown better than {what}. The "
            f"fine-tuned nets learned nothing the baseline lacks, so the ranking of plans says "
            f"nothing about which layers to fine-tune.")


def choice_section(S: Dict[str, dict], nested: List[dict], target: str) -> List[str]:
    """Which plan to pick: the best, the plans tied with it, and (``study.nested``) the
    honest estimate of picking the best."""
    rec = recommendation(list(S.values()), target)
    if rec is None:
        return []
    L = ["### Which plan?", ""]
    same = f" (= {', '.join(rec['same'])}, the same layers)" if rec["same"] else ""
    ci = f"[{_f(rec['ci_low'])}, {_f(rec['ci_high'])}]"
    if rec["not_better_than"]:
        L += [no_recommendation(target, rec)]
    else:
        n_other = rec["candidates"] - 1 - len(rec["same"])
        if n_other == 0:
            L += [f"Only one plan was compared: **{rec['best']}**{same}, Dice {_f(rec['mean'])} "
                  f"{ci}. With no other fine-tuning plan in this study, it says nothing about "
                  "which layers to fine-tune."]
        else:
            L += [f"Best on the held-out images: **{rec['best']}**{same}, Dice "
                  f"{_f(rec['mean'])} {ci}. "
                  + (f"Plans not shown to be worse (the paired 95 % interval of best − plan "
                     f"holds 0): {', '.join(rec['tied'])} ({len(rec['tied'])} of {n_other})."
                     if rec["tied"] else
                     ("The other plan is" if n_other == 1 else f"All {n_other} other plans are")
                     + " worse by the paired 95 % interval of best − plan.")]
    nest = next((r for r in nested if r["target"] == target), None)
    if nest:
        L += ["", f"Nested selection (the plan best on an inner split of each outer training "
                  f"fold, scored on the outer test fold): Dice {_f(nest['nested_mean'])} "
                  f"[{_f(nest['nested_ci_low'])}, {_f(nest['nested_ci_high'])}] — an honest "
                  f"estimate of what \"pick the best plan\" gives on new images, beside the "
                  f"naive best's {_f(nest['naive_mean'])} (chosen on the test folds "
                  f"themselves, optimistic). Picks: {nest['picks']}."]
        if str(nest.get("folds_left_out") or "0") not in ("0", ""):
            L += ["", f"**{nest['folds_left_out']} fold(s) left out of the nested estimate** "
                      f"(its interval covers the other folds only): {nest['notes']}."]
        elif nest.get("notes"):
            L += ["", f"Nested selection notes: {nest['notes']}."]
    else:
        L += ["", "The best plan is chosen on the test folds themselves, so its Dice is "
                  "optimistic; `--set study.nested=true` adds the nested (honest) estimate."]
    return L + [""]


def top_notes(cfg: dict, summary: List[dict]) -> List[str]:
    """What a reader must know before any number: a profile too small to learn, and every
    target whose best plan is not shown better than a baseline (no recommendation)."""
    L = []
    if cfg.get("profile") in TOO_SMALL_TO_LEARN:
        m, f = cfg["model"], cfg["finetune"]
        L += [f"**The {cfg['profile']} profile checks that the pipeline runs; its nets are too "
              f"small to learn** ({m['size']}×{m['size']} px, base {m['base_filters']} filters, "
              f"{f['epochs']} fine-tuning epochs): its numbers and verdicts say nothing about "
              "which layers to fine-tune. Run the `quick` profile (or larger) for an answer.", ""]
    for target in dict.fromkeys(r["target"] for r in summary):
        rec = recommendation(summary, target)
        if rec and rec["not_better_than"]:
            L += [no_recommendation(target, rec), ""]
    return L


def _pretraining_words(cfg: dict) -> str:
    """Where the study's starting weights come from, in words."""
    mc = ModelConfig(**cfg["model"])
    if pretrained_by_package(mc):
        start = ("" if model_family(mc.kind) != "encoder" else
                 f", starting from encoder weights {mc.encoder_weights or 'none (random)'}")
        return f"pretraining on {cfg['data']['pretrain']}{start}"
    if model_family(mc.kind) == "file":
        return "the network's own weights (not pretrained by the package)"
    return (f"encoder weights {mc.encoder_weights or 'none (random: not transfer learning)'}"
            " and a seeded random decoder (no pretraining)")


def network_section(manifest) -> List[str]:
    """The study's network: what it is, what identifies it (a ``file:`` network's sha256,
    its encoder's weights) and its blocks with their parameter shares, from ``runs.json``."""
    entry = manifest.study_model
    name = entry.description or manifest.model
    L = ["## The network", "", f"{name}: {entry.total_params:,} parameters in "
         f"{len(entry.blocks)} blocks (a change of spatial resolution is a block boundary; "
         f"the plans' block numbers are these).", ""]
    ident = {k: v for k, v in (entry.identity or {}).items() if v not in (None, "")}
    if ident:
        L += ["Identity (part of every run's resume fingerprint): "
              + "; ".join(f"{k} {v}" for k, v in ident.items()) + ".", ""]
    if entry.blocks:
        L += ["| block | part | level | params | share | layers with weights |",
              "|---|---|---|---|---|---|"]
        for b in entry.blocks:
            layers = str(b.get("layers", ""))
            names = [n for n in layers.split(", ") if n]
            shown = (", ".join(names) if len(names) <= 4 else   # where the block starts and ends
                     f"{', '.join(names[:2])} … {', '.join(names[-2:])} ({len(names)} layers)")
            L.append(f"| {b['block']} | {b['part']} | {b['level']} | {int(b['params']):,} | "
                     f"{float(b['share_percent']):.2f} % | {shown or '-'} |")
        L.append("")
    return L


def plans_table(S: Dict[str, dict]) -> List[str]:
    """The "All plans" table of one target. "trained as" appears only when some plan was
    trained as another (the same layers); seconds per epoch are the ones training_time.png
    shows (:func:`keras_unet_ft.results.epoch_seconds_key`)."""
    key = epoch_seconds_key(list(S.values()))
    alias = any(r["trained_as"] != p for p, r in S.items())
    head = (["plan"] + (["trained as"] if alias else [])
            + ["folds ok", "Dice", "Dice 95 % CI (images)", "pixel error %", "adj. Rand",
               "HD95 px", "HD95 % diag.", "trainable params",
               "s / epoch" + (" (median after the 1st)" if key == "steady_seconds_per_epoch"
                              else ""), "train s"])
    L = ["### All plans", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p, r in S.items():
        folds = f"{r['folds_ok']}/{int(r['folds_ok']) + int(r['folds_failed'])}"
        cells = [p] + ([r["trained_as"] if r["trained_as"] != p else "-"] if alias else [])
        if r["trainable_params"] in ("", None):
            cells += [folds] + ["-"] * (len(head) - len(cells) - 1)
        else:
            cells += [folds, _pm(r, "dice"), _plan_ci(r), _pm(r, "pixel_error", 2),
                      _pm(r, "adjusted_rand"), _pm(r, "hd95", 1), _pm(r, "hd95_percent", 1),
                      f"{int(float(r['trainable_params'])):,}", _f(r.get(key), 2),
                      _f(r["train_seconds"], 1)]
        L.append("| " + " | ".join(cells) + " |")
    return L + [""]


def write_report(out) -> pathlib.Path:
    """Write ``<out>/REPORT.md`` from the folder's tables (see :mod:`keras_unet_ft.results`):
    ``out`` is the folder loaded once (:class:`~keras_unet_ft.results.LoadedFolder`) or its
    path."""
    F = LoadedFolder.load(out)
    out = F.out
    results, summary, stats = F.results, F.summary, F.stats
    sizes, nested, budgets = F.sizes_summary, F.nested_summary, F.budgets
    prov = F.provenance
    manifest = F.manifest
    units = manifest.units()
    cfg = F.config
    L = ["# Which layers to fine-tune? — results", ""]
    L += [f"Profile **{cfg['profile']}**; model "
          f"{manifest.study_model.description or cfg['model']['kind']} "
          f"{cfg['model']['size']}×{cfg['model']['size']}, base {cfg['model']['base_filters']} "
          f"filters; {_pretraining_words(cfg)}; {cfg['finetune']['folds']}-fold "
          f"cross-validation{_repeats(cfg)}, {cfg['finetune']['augment_total']} augmented "
          f"training images per fold, {cfg['finetune']['epochs']} fine-tuning epochs; precision "
          f"{prov.get('precision')}; git {prov.get('git_revision') or 'unknown'}; written "
          f"{prov.get('written')}.", ""]
    L += top_notes(cfg, summary)
    L += ["Every number below is computed from the files of this folder (results.csv, "
          "summary.csv, stats.csv). Dice, adjusted Rand and HD95 (95th-percentile Hausdorff "
          "distance; the image diagonal when nothing is predicted) are means over held-out "
          "images per fold, then mean ± std over folds; pixel error is in percent. Only images "
          "with an "
          "object count in these means (an empty mask predicted empty would score Dice 1.0); "
          "images with an empty mask are counted apart. Runs that failed or diverged are "
          "listed at the end and kept out of every mean and verdict.", ""]
    pre = pretrained_folder(out, manifest.model, manifest.model).summary
    if pre.exists():
        p = read_json(pre)
        L += [f"Pretraining: {p['train_images']} training / {p['val_images']} validation images "
              f"of {p['dataset']}, {p['epochs']} epochs, best validation loss "
              f"{_f(p['best_val_loss'], 4)} at epoch {p['best_epoch']}, {_f(p['seconds'], 0)} s.",
              ""]
    L += network_section(manifest)
    L += shift_section(manifest.targets, summary, stats, units)
    targets = list(dict.fromkeys(r.target for r in summary))
    all_findings = []
    for target in targets:
        S = {r.plan: r for r in summary if r.target == target}
        modality = next(iter(S.values())).modality
        L += [f"## {target} ({modality})", ""]
        notes = next((t.notes for t in manifest.targets if t.slug == target), [])
        if notes:
            L += ["**Data warnings:**", ""] + [f"- {n}" for n in notes] + [""]
        split = splits_file(out, target)
        if split.exists():
            dups = read_json(split).get("duplicate_groups") or []
            L += [(f"Near-duplicate images: {len(dups)} group(s) of copies "
                   f"({sum(len(g) for g in dups)} images), each kept within one fold."
                   if dups else "Near-duplicate images: none found (perceptual hash + pixel "
                                "difference)."), ""]
        if modality in PAPER and "contracting" in S and "expanding" in S:
            L += [f"### The paper's table beside this run's (paper: {PAPER_DATA[modality]})", "",
                  "| scenario | paper Dice | this run Dice | paper pixel error | this run pixel error "
                  "| paper adj. Rand | this run adj. Rand |", "|---|---|---|---|---|---|---|"]
            for plan, label in (("contracting", "fine-tune contracting, freeze expanding"),
                                ("expanding", "fine-tune expanding, freeze contracting")):
                P, O = PAPER[modality][plan], S[plan]
                L.append(f"| {label} | {_paper_pm(P['dice'])} | {_pm(O, 'dice')} | "
                         f"{_paper_pm(P['pixel_error'], 1, ' %')} | {_pm(O, 'pixel_error', 2)} % | "
                         f"{_paper_pm(P['adjusted_rand'])} | {_pm(O, 'adjusted_rand')} |")
            L.append("")
        trainers = {r.trainer for r in results if r.target == target}
        cheng = [p for p in S if p.startswith(("xunet/", "vunet/"))]
        if cheng:
            L += cheng_section(S, results, target)
        L += sizes_section(sizes, target)
        F = findings(target, modality, S, stats, trainer_of(trainers), units)
        if F:
            L += ["### Findings of the paper, checked on this run", ""] + [f"- {s}" for s in F] + [""]
            all_findings += F
        L += choice_section(S, nested, target)
        L += plans_table(S)
        L += methods_section(S, stats, target)
        L += budget_section(budgets, target)
        empties = [(p, r) for p, r in S.items()
                   if r.get("n_empty") not in ("", None) and int(float(r["n_empty"])) > 0]
        if empties:
            n_e = int(float(empties[0][1]["n_empty"]))
            n_all = sum(int(r.num("n_test")) for r in results
                        if r.target == target and r.plan == empties[0][0] and r.ok)
            share = f" of {n_all} ({100.0 * n_e / n_all:.0f} %)" if n_all else ""
            L += [f"Held-out images with an empty mask (kept out of the means above): "
                  f"{n_e}{share}. "
                  "Share of them predicted empty: "
                  + ", ".join(f"{p} {_f(r['empty_predicted_empty'], 2)}" for p, r in empties)
                  + ".", ""]
        for scheme, title in (("", "path scheme: blocks by longest path, as in the paper"),
                              ("@level", "level scheme: resolution levels")):
            ks = sorted(set(_units(list(S.values()), "shallow_to_deep:", scheme))
                        | set(_units(list(S.values()), "deep_to_shallow:", scheme)))
            if not ks:
                continue
            L += [f"### Fig. 4 numbers ({title})", "",
                  "| units fine-tuned | shallow → deep Dice | deep → shallow Dice |", "|---|---|---|"]
            for k in ks:
                a = S.get(f"shallow_to_deep:{k}{scheme}")
                b = S.get(f"deep_to_shallow:{k}{scheme}")
                L.append(f"| {k} | {_pm(a, 'dice') if a else '-'} | {_pm(b, 'dice') if b else '-'} |")
            L.append("")
        tst = [s for s in stats if s.target == target]
        if tst:
            L += ["### Paired statistics (Dice)", "",
                  "A − B with its 95 % bootstrap interval over held-out images (resampled within "
                  "folds, 2,000 resamples); the verdict comes from the interval: **yes** (A "
                  "better), **no** (B better) or **tied** (it holds 0). Image-level Wilcoxon "
                  "p-values are also given Holm-corrected over this target's family of "
                  f"{len(tst)} comparisons.", "",
                  "| A | B | why | mean A | mean B | A − B | 95 % CI | verdict | folds: t p "
                  "| folds: Wilcoxon p | images n | images: t p | images: Wilcoxon p | Holm p |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for s in tst:
                L.append(f"| {s.plan_a} | {s.plan_b} | {s.why} | {_f(s['mean_a'])} | "
                         f"{_f(s['mean_b'])} | {_f(s['diff'])} | {_ci(s)} | "
                         f"{s.verdict or '-'} | {_p(s['folds_t_p'])} | "
                         f"{_p(s['folds_wilcoxon_p'])} | {s['images_n']} | {_p(s['images_t_p'])} | "
                         f"{_p(s['images_wilcoxon_p'])} | {_p(s.get('images_wilcoxon_p_holm'))} |")
            L.append("")
    failed = [r for r in results if not r.ok]
    L += ["## Failed or diverged runs", ""]
    if failed:
        L += [f"- {r.target} / {r.plan} / fold {r.fold}"
              f"{'' if r.repeat == 0 else f' / repeat {r.repeat}'}: {r['reason']}"
              for r in failed]
    else:
        L.append("None.")
    L.append("")
    figs = sorted(figures_dir(out).glob("*.png")) if figures_dir(out).is_dir() else []
    if figs:
        L += ["## Figures", ""] + [f"- [{f.stem}](figures/{f.name})" for f in figs] + [""]
    L += ["## Configuration", "", "```json", json.dumps(cfg, indent=1, sort_keys=True), "```", "",
          "Package versions: " + ", ".join(f"{k} {v}" for k, v in prov.get("versions", {}).items()),
          ""]
    path = out / REPORT
    atomic_write_text(path, "\n".join(L))
    return path
