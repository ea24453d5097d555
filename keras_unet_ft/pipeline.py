"""The whole job in order: study -> results tables -> figures -> REPORT.md.

:func:`run` is what ``run_all.py`` and ``unet-ft study`` call; :func:`aggregate`
is ``unet-ft report``: it reads a results folder and writes the tables, the
figures and the report from its files (no training; no model is built except the
one saved model Fig. 5 loads).
"""

from __future__ import annotations

import logging
import pathlib
from typing import Optional

from .advise import advise
from .config import Config
from .exitcodes import (EXIT_BAD_INPUT, EXIT_ERROR, EXIT_INCOMPLETE, EXIT_OK,  # noqa: F401
                        EXIT_RUNS_FAILED)
from .exitcodes import UserError
from .figures import make_all_figures
from .io import read_csv
from .layout import (ADVICE_DIR, REPORT, SUMMARY, Manifest, load_config_of, read_manifest,
                     read_run_summary, target_slug)
from .report import write_report
from .pretrain import TimeUp, pretrained_weights_by_kind
from .results import LoadedFolder, recommendation, status_counts, write_tables
from .runtime import resolve_precision
from .study import run_study, run_study_parallel

log = logging.getLogger("keras_unet_ft")

def unfinished(out) -> int:
    """How many runs of the study's grid have no result yet."""
    return status_counts(out).get("missing", 0)


def outcome(out, manifest: Optional[Manifest] = None) -> tuple:
    """``(exit code, message)`` of a study from its run files (dataset-size runs included);
    ``manifest``: its runs.json when already read."""
    manifest = manifest or read_manifest(out)
    counts = status_counts(out, manifest)
    left = counts.pop("missing", 0)
    if left:
        return EXIT_INCOMPLETE, (f"{left} run(s) not done yet (time budget, other shards still "
                                 "running, or an interrupted study): run the same command again "
                                 "to continue (with shards: `unet-ft report OUT` once all are "
                                 "done); no report was written for the partial grid")
    bad = {k: v for k, v in counts.items() if k in ("failed", "diverged")}
    if bad:
        what = ", ".join(f"{v} {k}" for k, v in sorted(bad.items()))
        return EXIT_RUNS_FAILED, (f"{what} run(s) of {sum(counts.values())}: listed in "
                                  f"{pathlib.Path(out) / REPORT} and kept out of the "
                                  f"results; {_retry_hint(out, sum(bad.values()), manifest)}")
    return EXIT_OK, f"all {sum(counts.values())} runs done ({_listing(counts)})"


def retry_helps(summary: dict) -> bool:
    """Whether ``--retry-failed`` can change the outcome of a run that failed or diverged: not
    for a bad input (its ``UserError`` fails again) nor for a divergence (the same seed and
    settings diverge again); a fault of the moment (memory, a killed process) it can.

    Examples:
        >>> retry_helps({"status": "failed", "reason": "ResourceExhaustedError: OOM"})
        True
        >>> retry_helps({"status": "failed", "reason": "PlanError: plan 'autorgn' needs ..."})
        False
        >>> retry_helps({"status": "diverged", "reason": "diverged: loss is nan"})
        False
    """
    if summary.get("status") == "diverged":
        return False
    if "retry" in summary:   # recorded by the study
        return bool(summary["retry"])
    kind = str(summary.get("reason", "")).split(":", 1)[0]   # a folder of an earlier version
    return kind not in ("UserError", "PlanError")


def _retry_hint(out, n_bad: int, manifest: Manifest) -> str:
    """What to do about the failed and diverged runs: ``--retry-failed`` only for those a
    retry can fix (:func:`retry_helps`)."""
    fixable = sum(1 for r in manifest.runs
                  for s in [read_run_summary(r.dir(out))]
                  if s is not None and s.get("status") in ("failed", "diverged")
                  and retry_helps(s))
    if fixable == n_bad:
        return "--retry-failed redoes them"
    again = ("a retry with the same settings repeats them (a bad input, or a divergence: "
             "change the settings, with another --out or --force)")
    if not fixable:
        return again
    return (f"--retry-failed redoes the {fixable} that failed by a fault of the moment; for the "
            f"other {n_bad - fixable}, {again}")


def _listing(counts) -> str:
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))


def closing_lines(out) -> list:
    """The last words of ``run_all`` and ``unet-ft study``: per target the recommended plan
    with the plans not shown worse (or why none is recommended), then where REPORT.md is.
    Read from summary.csv, as REPORT.md's "Which plan?" is; empty when there is no table."""
    out = pathlib.Path(out)
    if not (out / SUMMARY).exists():
        return []
    summary = read_csv(out / SUMMARY)
    notes = {t.slug: t.notes for t in read_manifest(out).targets}
    lines = []
    for target in dict.fromkeys(r["target"] for r in summary):
        if notes.get(target):
            lines.append(f"{target}: {len(notes[target])} data warning(s), in REPORT.md: "
                         + "; ".join(n.split(": ", 1)[-1].split(" (")[0] for n in notes[target]))
        rec = recommendation(summary, target)
        if rec is None:
            lines.append(f"{target}: no plan finished ok")
        elif rec["not_better_than"]:
            base = ", ".join(b for b, *_ in rec["not_better_than"])
            lines.append(f"{target}: no plan recommended - the best, {rec['best']} (Dice "
                         f"{rec['mean']:.3f}), is not shown better than {base}")
        else:
            n_other = rec["candidates"] - 1 - len(rec["same"])
            tied = (f"; not shown worse: {', '.join(rec['tied'])}" if rec["tied"]
                    else "; the only plan compared: it says nothing about which layers"
                    if n_other == 0 else "; the other plan is shown worse" if n_other == 1
                    else f"; the {n_other} other plans are shown worse")
            lines.append(f"{target}: fine-tune {rec['best']} (Dice {rec['mean']:.3f} "
                         f"[{rec['ci_low']:.3f}, {rec['ci_high']:.3f}]){tied}")
    return lines + [f"report: {out / REPORT}"]


def aggregate(out, report: bool = True, figures: bool = True,
              am_steps: Optional[int] = None,
              manifest: Optional[Manifest] = None) -> pathlib.Path:
    """Write results.csv, summary.csv, stats.csv and (optionally) figures and REPORT.md; the
    figures and the report draw on the tables written, the folder read once
    (:class:`~keras_unet_ft.results.LoadedFolder`).

    Args:
        out: a results folder written by the study.
        report, figures: write REPORT.md / the figures.
        am_steps: activation-maximization steps of Fig. 5 (default: ``study.am_steps``).
        manifest: the folder's runs.json when already read.
    """
    out = pathlib.Path(out)
    manifest = manifest or read_manifest(out)
    folder = LoadedFolder.from_tables(out, write_tables(out, manifest), manifest)
    if figures:
        steps = am_steps if am_steps is not None else load_config_of(out).study.am_steps
        try:
            make_all_figures(folder, steps=steps)
        except Exception as e:  # noqa: BLE001 - figures must not lose the results
            log.warning("figures failed: %s", e)
    if report:
        write_report(folder)
    return out


def run(cfg: Config, out, *, jobs: int = 1, force: bool = False, retry_failed: bool = False,
        shard=None, distribute: Optional[str] = None, verbose: int = 0, progress: bool = True,
        force_pretrain: bool = False, aggregate_results: bool = True,
        max_minutes: Optional[float] = None, figures: bool = True) -> pathlib.Path:
    """Pretrain, run the grid (in ``jobs`` shard processes when > 1), then aggregate
    (tables, REPORT.md and, unless ``figures`` is False, the figures; ``unet-ft report``
    draws them later).

    With ``max_minutes`` the call stops cleanly before the budget runs out (see
    :func:`~keras_unet_ft.study.run_study`); tables and report are written only once
    every run is done (:func:`outcome` says what is left).

    Returns:
        The results folder (REPORT.md, results.csv, summary.csv, stats.csv, figures/).
    """
    if jobs > 1:
        if shard or distribute:
            raise UserError("jobs > 1 runs its own shards; do not combine it with a shard "
                            "or --distribute")
        if retry_failed:
            raise UserError("retry_failed works with one process (jobs=1)")
    try:
        if jobs > 1:
            run_study_parallel(cfg, out, jobs, force=force, verbose=verbose, progress=progress,
                               max_minutes=max_minutes)
        else:
            run_study(cfg, out, force=force, retry_failed=retry_failed, shard=shard,
                      distribute=distribute, verbose=verbose, progress=progress,
                      force_pretrain=force_pretrain, max_minutes=max_minutes)
    except TimeUp as e:
        log.warning("%s", e)
        return pathlib.Path(out)
    if aggregate_results and not unfinished(out):
        aggregate(out, figures=figures)
    return pathlib.Path(out)


def advise_all(cfg: Config, out, budget_minutes: Optional[float] = None, verbose: int = 0,
               progress: bool = True) -> list:
    """``run_all --advise``: pretrain once into ``out/pretrained`` (or reuse it), then
    :func:`~keras_unet_ft.advise.advise` on every target into ``out/advice/<target>/``.

    Returns:
        The advice of each target (``advice.json`` contents).
    """
    out = pathlib.Path(out)
    precision = resolve_precision(cfg.study.precision)
    pretrained_weights_by_kind(cfg, out, [cfg.model.kind], precision, verbose)
    return [advise(cfg, t, out / ADVICE_DIR / target_slug(t), budget_minutes=budget_minutes,
                   pretrained=out, verbose=verbose, progress=progress)
            for t in cfg.data.targets]
