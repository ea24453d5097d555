"""Helpers for the notebooks: find a results folder (or make one) and describe it in words."""

from __future__ import annotations

import logging
import pathlib
from typing import List, Optional

from .config import load_config
from .io import read_csv
from .layout import RESULTS, STATS, SUMMARY, read_manifest
from .pipeline import run
from .report import findings, trainer_of

log = logging.getLogger("keras_unet_ft")


def _repo_roots() -> List[pathlib.Path]:
    here = pathlib.Path.cwd()
    roots = [here, here.parent, pathlib.Path(__file__).resolve().parents[1]]
    return list(dict.fromkeys(r.resolve() for r in roots))


def find_results(path: Optional[str] = None, run_smoke_if_missing: bool = True) -> pathlib.Path:
    """``path`` if given; else the newest ``results/*`` with a REPORT.md (run_all.py output);
    when there is none, run the ``smoke`` profile into ``results/smoke`` (a few minutes)."""
    if path:
        p = pathlib.Path(path).expanduser()
        if not (p / "results.csv").exists():
            raise FileNotFoundError(f"{p} is not a results folder (no results.csv); run "
                                    "`python experiments/run_all.py` or give another folder")
        return p
    found = []
    for root in _repo_roots():
        found += [r.parent for r in (root / "results").glob("*/REPORT.md")]
    if found:
        newest = max(found, key=lambda p: (p / "REPORT.md").stat().st_mtime)
        log.info("using the newest results folder: %s", newest)
        return newest
    if not run_smoke_if_missing:
        raise FileNotFoundError("no results folder found under results/")
    out = _repo_roots()[-1] / "results" / "smoke"
    print(f"No results yet: running the smoke profile into {out} (a few minutes) ...")
    return run(load_config("smoke"), out, progress=False)


def findings_text(out, modality: Optional[str] = None) -> str:
    """The report's computed finding sentences for every target (optionally one modality)."""
    out = pathlib.Path(out)
    summary = read_csv(out / SUMMARY)
    stats = [s for s in read_csv(out / STATS) if s.get("plan_a")] \
        if (out / STATS).exists() else []
    results = read_csv(out / RESULTS)
    manifest = read_manifest(out)
    units = manifest["models"][manifest["model"]]["units"]["path"]
    lines = []
    for target in dict.fromkeys(r["target"] for r in summary):
        S = {r["plan"]: r for r in summary if r["target"] == target}
        mod = next(iter(S.values()))["modality"]
        if modality and mod != modality:
            continue
        trainer = trainer_of(r.get("trainer") for r in results if r["target"] == target)
        lines += [f"- {s}" for s in findings(target, mod, S, stats, trainer, units)]
    return "\n".join(lines) if lines else "(no findings: the study lacks the plans they need)"
