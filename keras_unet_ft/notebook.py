"""Helpers for the notebooks: find a results folder, describe it in words, say what a smoke
study's numbers are worth, and pick where a notebook writes its figures: beside itself (or a
folder the user names), never into the results folder, whose figures the study drew. They
read a results folder; nothing here trains."""

from __future__ import annotations

import logging
import pathlib
from typing import List, Optional

from .layout import CONFIG, REPORT, RESULTS, SUMMARY
from .report import findings, top_notes, trainer_of
from .results import LoadedFolder

log = logging.getLogger("keras_unet_ft")


def _repo_roots() -> List[pathlib.Path]:
    here = pathlib.Path.cwd()
    roots = [here, here.parent, pathlib.Path(__file__).resolve().parents[1]]
    return list(dict.fromkeys(r.resolve() for r in roots))


def find_results(path: Optional[str] = None) -> pathlib.Path:
    """``path`` if given; else the newest ``results/*`` with a REPORT.md (run_all.py output).
    A notebook reads a results folder and never trains: with none, the error says how to
    make one (``python experiments/run_all.py --profile smoke``, a minute or two)."""
    if path:
        p = pathlib.Path(path).expanduser()
        if not (p / RESULTS).exists():
            raise FileNotFoundError(f"{p} is not a results folder (no {RESULTS}); run "
                                    "`python experiments/run_all.py` or give another folder")
        return p
    found = []
    for root in _repo_roots():
        found += [r.parent for r in (root / "results").glob(f"*/{REPORT}")]
    if not found:
        raise FileNotFoundError("no results folder under results/: make one with `python "
                                "experiments/run_all.py --profile smoke` (a minute or two), "
                                "or set UNET_FT_RESULTS to a results folder")
    newest = max(found, key=lambda p: (p / REPORT).stat().st_mtime)
    log.info("using the newest results folder: %s", newest)
    return newest


def findings_text(out, modality: Optional[str] = None) -> str:
    """The report's computed finding sentences for every target (optionally one modality);
    ``out`` is a results folder's path or the folder loaded
    (:class:`~keras_unet_ft.results.LoadedFolder`)."""
    F = LoadedFolder.load(out)
    units = F.manifest.units()
    lines = []
    for target in dict.fromkeys(r.target for r in F.summary):
        S = {r.plan: r for r in F.summary if r.target == target}
        mod = next(iter(S.values())).modality
        if modality and mod != modality:
            continue
        trainer = trainer_of(r.trainer for r in F.results if r.target == target)
        lines += [f"- {s}" for s in findings(target, mod, S, F.stats, trainer, units)]
    return "\n".join(lines) if lines else "(no findings: the study lacks the plans they need)"


def quiet_backend() -> str:
    """Import Keras and its backend without TensorFlow's start-up notices (absl, oneDNN,
    CUDA probing), which would otherwise land in the notebook's saved output; returns the
    backend's name (:func:`keras_unet_ft.runtime.import_backend`)."""
    from .runtime import import_backend

    return import_backend()


def figure_folder(out, path: Optional[str] = None) -> pathlib.Path:
    """Where a notebook writes its figures: ``path`` if given, else ``figures/`` in the
    notebook's working folder (Jupyter starts a kernel beside its notebook). A folder inside
    the results folder ``out`` is refused: the study's own figures there (drawn with its
    settings, e.g. Fig. 5's activation-maximization steps) must stay as the study drew them.
    """
    folder = pathlib.Path(path).expanduser() if path else pathlib.Path.cwd() / "figures"
    inside = pathlib.Path(out).resolve()
    if folder.resolve() == inside or inside in folder.resolve().parents:
        raise ValueError(f"{folder} is inside the results folder {out}: a notebook writes its "
                         "figures elsewhere (the study's figures stay as it drew them); name "
                         "another folder")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def caveats(out) -> str:
    """What a reader must know before the numbers, as REPORT.md says it at its top (a smoke
    study's nets are too small to learn; targets with no plan recommended); '' if nothing."""
    F = LoadedFolder.load(out)
    if not (F.out / CONFIG).exists():
        return ""
    summary = F.summary if (F.out / SUMMARY).exists() else []
    return "\n\n".join(line for line in top_notes(F.config, summary) if line) if F.config else ""
