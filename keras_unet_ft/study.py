"""The fine-tuning study: the grid of targets x folds x plans, with resume, shards and processes.

For each target, fold and plan the pretrained weights are loaded, the plan is
applied, the net is trained on the fold's augmented training set and evaluated on
its held-out images (:mod:`keras_unet_ft.finetune`). Every plan of a fold trains
on the same augmented set, with the same seed, and is evaluated on the same images
(paired comparisons). Plans that train the same layers are trained once
(``shallow_to_deep:9`` = ``deep_to_shallow:9`` = ``all``); the others point to
that run. Baselines: ``none`` (the pretrained net, not fine-tuned) and
``scratch`` (random initialisation, all layers trained).

The study writes the results folder described in :mod:`keras_unet_ft.layout`,
including ``runs.json`` (the grid, the block tables, each run's folder) so that
everything downstream reads files and builds no model. A run whose
``summary.json`` exists is skipped (``force`` recomputes; failed runs are redone
with ``retry_failed``). Files are written atomically, so a study killed at any
moment loses at most the run in progress. Tables, figures and the report are
made by :mod:`keras_unet_ft.pipeline`.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import pathlib
import re
import subprocess
import sys
import time
import traceback
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import __version__
from .blocks import BlockMap
from .config import Config, model_family, repeat_config, sizes_enabled
from .data.registry import modality
from .data.study_data import (check_targets, data_notes, fold_arrays, inner_fold, load_target,
                              target_folds)
from .exitcodes import UserError
from .finetune import (Diverged, FoldSession, check_trainable, run_one, save_model,
                       stage_learning_rate)
from .io import discard_shared, hold_shared, write_csv
from .layout import (CONFIG, HISTORY, PER_IMAGE, RUN_SUMMARY, RUNS, STUDY_LOCK, Manifest, ModelEntry,
                     RunSpec, RunStatus, RunSummary, TargetEntry, read_run_summary,
                     save_predictions, save_target_images, splits_path,
                     target_slug, weights_path, write_manifest, write_run_summary)
from .model import build_from_config, describe_model, model_config, model_identity
from .plans import BASELINES, Plan, all_layers_plan, group_plans, plan_set
from .pretrain import pretrained_weights_by_kind
from .provenance import write_provenance
from .runtime import (NO_PROGRESS_ENV, configure_cpu_threads, get_strategy, require_tensorboard,
                      resolve_precision)
from .encoders import resolve_weights
from .vunet import resolve_encoder_weights

log = logging.getLogger("keras_unet_ft")


# ---------------------------------------------------------------------------
# the grid
def block_map(cfg: Config, kind: str) -> BlockMap:
    """The block map of the study's network of ``kind`` (structure only: no weights read)."""
    import keras

    keras.backend.clear_session()
    return BlockMap(build_from_config(model_config(cfg, kind, structure_only=True)))


def _units(bm: BlockMap) -> Dict[str, int]:
    return {"path": bm.units("path"), "level": bm.units("level")}


def study_plans(cfg: Config, units: Dict[str, int]) -> List[str]:
    """The plans of the study (``study.plans``), with the baselines when ``study.baselines``.

    Baselines use the model of the first plan (X-Unet for the ``cheng`` set)."""
    plans = plan_set(cfg.study.plans, units)
    if cfg.study.baselines:
        kind = Plan.parse(plans[0]).model_or(cfg.model.kind)
        prefix = f"{kind}/" if kind != cfg.model.kind else ""
        plans = ([p for p in plans if not Plan.parse(p).is_baseline]
                 + [prefix + b for b in BASELINES])
    return plans


def size_counts(cfg: Config) -> List[int]:
    """The training-set sizes of the dataset-size study, sorted, without repeats."""
    return sorted(set(int(c) for c in cfg.sizes.counts))


def list_runs(cfg: Config, targets: Sequence[str]):
    """Every run of the study in a fixed order (targets, repeats of ``study.seeds``,
    folds, plans, then the nested selection's inner runs of that fold when
    ``study.nested``, then the dataset-size runs of that fold when the size study is on;
    dataset-size runs in the first repeat only).

    Returns:
        ``(runs, plans, block_maps)``: the :class:`RunSpec` list, the study's plan
        strings and a block map per model kind used.
    """
    maps = {cfg.model.kind: block_map(cfg, cfg.model.kind)}
    plans = study_plans(cfg, _units(maps[cfg.model.kind]))
    size_plans = (plan_set(cfg.sizes.plans, _units(maps[cfg.model.kind]))
                  if sizes_enabled(cfg) else [])
    for p in plans + size_plans:
        kind = Plan.parse(p).model_or(cfg.model.kind)
        if kind not in maps:
            maps[kind] = block_map(cfg, kind)
    groups = group_plans(plans, maps, cfg.model.kind)
    size_groups = group_plans(size_plans, maps, cfg.model.kind) if size_plans else []
    counts = size_counts(cfg) if size_plans else []
    runs = []
    inner = [g for g in groups if not Plan.parse(g[0]).is_baseline] if cfg.study.nested else []
    for t in targets:
        for rep in range(cfg.study.seeds):
            for k in range(cfg.finetune.folds):
                for canon, aliases, kind in groups:
                    runs.append(RunSpec(t, k, canon, aliases, kind, repeat=rep))
                for canon, aliases, kind in inner:
                    runs.append(RunSpec(t, k, canon, aliases, kind, repeat=rep, inner=True))
                if rep:
                    continue
                for canon, aliases, kind in size_groups:
                    for n in counts:
                        for aug in (False, True):
                            runs.append(RunSpec(t, k, canon, aliases, kind, n_train=n,
                                                augment=aug))
    return runs, plans, maps


def manifest(cfg: Config, runs: Sequence[RunSpec], plans: Sequence[str],
             maps: Dict[str, BlockMap], notes: Optional[Dict[str, list]] = None) -> Manifest:
    """The content of ``runs.json``: what a reader of the folder needs, as data (``notes``:
    per target, what REPORT.md must warn about its data)."""
    notes = notes or {}
    return Manifest(
        model=cfg.model.kind,
        targets=[TargetEntry(t, target_slug(t), modality(t), list(notes.get(t, [])))
                 for t in cfg.data.targets],
        plans=list(plans),
        models={kind: ModelEntry(_units(bm), bm.total_params,
                                 all_layers_plan(bm.units("path")), bm.table(),
                                 describe_model(model_config(cfg, kind)),
                                 model_identity(model_config(cfg, kind)))
                for kind, bm in maps.items()},
        runs=list(runs))


def keeps_weights(cfg: Config, run: RunSpec, maps: Dict[str, BlockMap]) -> bool:
    """Whether ``study.save_weights`` keeps this run's model: ``all``, or for ``figures``
    the all-layers run of fold 0 (Fig. 5 draws the net fine-tuned with every layer)."""
    if cfg.study.save_weights == "all":
        return True
    if (cfg.study.save_weights == "none" or run.fold != 0 or run.n_train is not None
            or run.repeat or run.inner):
        return False
    full = all_layers_plan(maps[run.model].units("path"))
    labels = {str(Plan.parse(p).bare) for p in [run.plan] + list(run.aliases)}
    return bool(labels & {"all", full})


def slurm_shard(env=None) -> Optional[Tuple[int, int]]:
    """``(I, N)`` of this task of a Slurm job array (``SLURM_ARRAY_TASK_ID`` counted
    from ``SLURM_ARRAY_TASK_MIN``, ``SLURM_ARRAY_TASK_COUNT``); None outside an array.

    Examples:
        >>> slurm_shard({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1",
        ...              "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MAX": "4"})
        (2, 4)
    """
    env = os.environ if env is None else env
    if "SLURM_ARRAY_TASK_ID" not in env or "SLURM_ARRAY_TASK_COUNT" not in env:
        return None
    try:
        task, count = int(env["SLURM_ARRAY_TASK_ID"]), int(env["SLURM_ARRAY_TASK_COUNT"])
        lo = int(env.get("SLURM_ARRAY_TASK_MIN", 0))
        hi = int(env.get("SLURM_ARRAY_TASK_MAX", lo + count - 1))
    except ValueError:
        raise UserError("SLURM_ARRAY_TASK_ID / _COUNT / _MIN / _MAX must be integers, got "
                        f"{ {k: v for k, v in env.items() if k.startswith('SLURM_ARRAY')} }"
                        ) from None
    if hi - lo + 1 != count:
        raise UserError(f"the Slurm array {lo}-{hi} has {count} tasks: not one step apart; "
                        "use a contiguous array (e.g. --array=0-7) to shard a study")
    return parse_shard(f"{task - lo}/{count}")


def parse_shard(shard) -> Tuple[int, int]:
    """``"I/N"`` -> ``(I, N)``; ``"slurm"`` -> this Slurm array task's share
    (:func:`slurm_shard`); None -> ``(0, 1)``."""
    if shard in (None, ""):
        return (0, 1)
    if shard == "slurm":
        got = slurm_shard()
        if got is None:
            raise UserError("--shard slurm needs a Slurm job array (SLURM_ARRAY_TASK_ID and "
                            "SLURM_ARRAY_TASK_COUNT are not set)")
        return got
    if isinstance(shard, tuple):
        i, n = shard
    else:
        m = re.fullmatch(r"(\d+)/(\d+)", str(shard))
        if not m:
            raise UserError(f"--shard expects I/N (e.g. 0/4), got {shard!r}")
        i, n = int(m.group(1)), int(m.group(2))
    if not (n >= 1 and 0 <= i < n):
        raise UserError(f"--shard I/N needs 0 <= I < N, got {i}/{n}")
    return (i, n)


# ---------------------------------------------------------------------------
# writing one run
def write_run(out, spec: RunSpec, result, keep_weights: bool, save_predictions_: bool) -> dict:
    """Write a finished run's files (summary last: its presence marks the run done)."""
    run_dir = spec.dir(out)
    write_csv(run_dir / PER_IMAGE, result.per_image)
    write_csv(run_dir / HISTORY, result.history or [{"epoch": 0}])
    if save_predictions_:
        save_predictions(run_dir, result.ids, result.predictions)
    if keep_weights:
        save_model(result.model, weights_path(run_dir))
    summary = {**result.summary, "aliases": spec.aliases, "n_originals": spec.n_train,
               "augment": spec.augment if spec.n_train else None, "repeat": spec.repeat,
               "inner": spec.inner}
    write_run_summary(run_dir, summary)
    return summary


def _record(out, r: RunSpec, status: RunStatus, **extra) -> None:
    write_run_summary(r.dir(out), RunSummary.of(status, target=r.target, fold=r.fold,
                                                repeat=r.repeat, inner=r.inner, plan=r.plan,
                                                aliases=r.aliases, **extra))


# ---------------------------------------------------------------------------
# what decides a run's result
#: config keys a run's result depends on (``study.plans``, ``save_weights``, ``am_steps``, ...
#: change what is run or drawn, not a run's numbers)
FINGERPRINT_SECTIONS = ("model", "pretrain", "finetune")
FINGERPRINT_KEYS = ("data.pretrain", "data.pretrain_n", "data.target_n", "study.seed",
                    "study.trainer", "study.deterministic", "sizes.augment_factor")


def data_signature(ds) -> str:
    """A hash of a dataset's preprocessed images, masks and ids."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(ds.images).tobytes())
    h.update(np.ascontiguousarray(ds.masks).tobytes())
    h.update("\0".join(ds.ids).encode())
    return h.hexdigest()[:16]


def fingerprint(cfg: Config, precision: str, target: str, signature: str) -> Dict[str, object]:
    """The flat ``{key: value}`` a run's result depends on (stored in its summary.json)."""
    d = cfg.to_dict()
    out: Dict[str, object] = {}
    for section in FINGERPRINT_SECTIONS:
        for k, v in d[section].items():
            out[f"{section}.{k}"] = v
    for key in FINGERPRINT_KEYS:
        section, _, k = key.partition(".")
        out[key] = d[section][k]
    out.update({"study.precision": precision, "target": target, "data": signature,
                "version": __version__})
    if model_family(cfg.model.kind) != "builtin":   # a file: network's sha256, an encoder's
        out["model.identity"] = model_identity(cfg.model)   # weights: not just their names
    return json.loads(json.dumps(out))  # as it reads back from JSON


def changed_keys(old: Optional[dict], new: Dict[str, object]) -> List[str]:
    """``key: old -> new`` for every key whose value differs."""
    if not old:
        return ["fingerprint: none recorded (made by an older version)"]
    keys = sorted(set(old) | set(new))
    # a key a later version added, at its default, changes nothing a run did
    defaults = flatten(Config().to_dict())
    return [f"{k}: {old.get(k, '(absent)')!r} -> {new.get(k, '(absent)')!r}" for k in keys
            if old.get(k) != new.get(k)
            and not (k not in old and k in defaults and new.get(k) == defaults[k])]


def claim_folder(cfg: Config, out) -> None:
    """One config per results folder at a time: every process of this study (its shard
    processes, a Slurm array's tasks) shares a lock holding the config; a study with another
    config started meanwhile is refused at once, naming the keys that differ. The operating
    system releases the lock when a process ends, so none is ever left stale."""
    out = pathlib.Path(out)
    mine = cfg.to_dict()
    theirs = hold_shared(out / STUDY_LOCK, json.dumps(mine, sort_keys=True))
    if theirs is None:
        return
    try:
        other = flatten(json.loads(theirs))
    except ValueError:
        other = {}
    diff = changed_keys(other, flatten(mine)) if other else ["(unreadable)"]
    raise UserError(f"{out} is being written right now by another study with another config "
                    f"({'; '.join(diff[:6])}); wait for it to end or give another --out")


def missing_folders(out) -> List[pathlib.Path]:
    """The folders of ``out`` and its parents that do not exist yet, outermost first (what
    claiming ``out`` creates)."""
    missing = []
    p = pathlib.Path(out).absolute()
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    return missing[::-1]


def unclaim_folder(out, made: Sequence[pathlib.Path], lock_there: bool) -> None:
    """Undo :func:`claim_folder` for a study that fails before writing anything: give up the
    lock, remove its file unless it was there before (or another process of this config holds
    it) and remove the empty folders ``made`` for it, so a folder the user had stays as it
    was and a new one does not stay behind."""
    lock = pathlib.Path(out) / STUDY_LOCK
    discard_shared(lock, remove=not lock_there)
    for d in reversed(list(made)):
        try:
            d.rmdir()
        except OSError:   # not empty: another process writes there
            break


def flatten(d: dict, prefix: str = "") -> Dict[str, object]:
    """``{"finetune": {"epochs": 2}}`` -> ``{"finetune.epochs": 2}``."""
    out: Dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_finished_runs(out, runs: Sequence[RunSpec], prints: Dict[str, dict]) -> None:
    """Finished runs made with other settings or data are an error naming what changed
    (resuming would mix two studies in one table); ``--force`` recomputes them."""
    changed: Dict[str, List[str]] = {}
    n = 0
    for r in runs:
        s = read_run_summary(r.dir(out))
        if s is None:
            continue
        diff = changed_keys(s.get("fingerprint"), prints[r.target])
        if diff:
            n += 1
            for line in diff:
                changed.setdefault(line, []).append(str(r.rel_dir()))
    if changed:
        lines = [f"  {k} (e.g. {v[0]})" for k, v in list(changed.items())[:12]]
        raise UserError(
            f"{out} holds {n} finished run(s) made with other settings or data:\n"
            + "\n".join(lines)
            + "\nUse another --out, or --force to recompute them with the current settings.")


# ---------------------------------------------------------------------------
def prepare(cfg: Config, out, *, distribute: Optional[str] = None, verbose: int = 0,
            force_pretrain: bool = False, force: bool = False, deadline: Optional[float] = None):
    """Everything before the grid: checks that fail early (every target loaded and
    checked, finished runs made with other settings), provenance, ``runs.json``,
    pretraining (or its reuse).

    Returns:
        ``(runs, maps, pretrained, precision, strategy, prints, datasets)``; ``prints`` holds
        the fingerprint of each target's runs, ``datasets`` the loaded targets.
    """
    out = pathlib.Path(out)
    check_targets(cfg.data.targets)
    configure_cpu_threads(cfg.model.base_filters)
    precision = resolve_precision(cfg.study.precision)
    strategy = get_strategy(distribute)
    runs, plans, maps = list_runs(cfg, cfg.data.targets)
    for i in range(max(len(Plan.parse(r.plan).steps) for r in runs)):
        stage_learning_rate(cfg, i)  # bad values fail before any training
    check_trainable(cfg, [r.plan for r in runs], precision, strategy, distribute)
    for kind in dict.fromkeys(r.model for r in runs):   # encoder weights that are not there
        if kind == "vunet":                   # fail before anything is written, in one sentence
            resolve_encoder_weights(cfg.model.encoder_weights)
        elif model_family(kind) == "encoder":
            resolve_weights(kind.partition(":")[2], cfg.model.encoder_weights)
    made = missing_folders(out)
    lock_there = (out / STUDY_LOCK).exists()
    claim_folder(cfg, out)   # after the quick checks, before anything slow: another config
    # writing this folder now is refused at once
    try:
        datasets = {t: load_target(cfg, t) for t in cfg.data.targets}  # read and checked first
        for t, ds in datasets.items():
            if cfg.study.seeds > 1 and "fold" in ds.meta:
                log.warning("%s comes with official folds: its %d repeats (study.seeds) share "
                            "them; only augmentation and initialisation differ", t,
                            cfg.study.seeds)
        for t, ds in datasets.items():   # before pretraining, not after it
            if cfg.finetune.folds > len(ds):
                raise UserError(f"finetune.folds={cfg.finetune.folds} but {t} has only "
                                f"{len(ds)} images; give fewer folds or more images")
        notes = {t: data_notes(ds, cfg.finetune.folds, target_slug(t))
                 for t, ds in datasets.items()}
        for note in (n for ns in notes.values() for n in ns):
            log.warning("%s", note)
        prints = {t: fingerprint(cfg, precision, t, data_signature(ds))
                  for t, ds in datasets.items()}
        if not force:
            check_finished_runs(out, runs, prints)
    except BaseException:   # nothing written yet: leave no folder or lock of this call behind
        unclaim_folder(out, made, lock_there)
        raise
    out.mkdir(parents=True, exist_ok=True)
    write_provenance(cfg, out, precision)
    write_manifest(out, manifest(cfg, runs, plans, maps, notes))
    if cfg.study.save_predictions:   # Fig. 3 draws held-out images beside their predictions
        for t, ds in datasets.items():
            save_target_images(out, target_slug(t), ds.ids, ds.images, ds.masks)
    pretrained = pretrained_weights_by_kind(cfg, out, [r.model for r in runs], precision,
                                            verbose, force_pretrain, strategy, deadline)
    return runs, maps, pretrained, precision, strategy, prints, datasets


def run_study(cfg: Config, out, *, force: bool = False, retry_failed: bool = False,
              shard=None, distribute: Optional[str] = None, verbose: int = 0,
              progress: bool = True, force_pretrain: bool = False,
              prepare_only: bool = False, max_minutes: Optional[float] = None) -> pathlib.Path:
    """Pretrain (or reuse) and run every fine-tuning run of this shard.

    Args:
        cfg: the study's config.
        out: results folder (created; resumed when it holds finished runs).
        force: recompute finished runs. retry_failed: redo runs that failed.
        shard: ``"I/N"``: run every N-th run starting at I (processes sharing ``out``).
        distribute: ``"mirrored"`` for ``tf.distribute.MirroredStrategy``.
        prepare_only: pretrain, cache the data and write the folds, then return.
        max_minutes: stop cleanly before this many minutes have passed: no run is started
            that would end later (judged by the longest run so far); pretraining stops
            after an epoch (:class:`~keras_unet_ft.pretrain.TimeUp`). A rerun continues.

    Returns:
        The results folder. Tables, figures and REPORT.md: :func:`keras_unet_ft.pipeline.run`.
    """
    from .runtime import progress_bar

    out = pathlib.Path(out)
    if cfg.study.tensorboard:
        require_tensorboard()
    deadline = time.time() + 60.0 * max_minutes if max_minutes else None
    shard_i, shard_n = parse_shard(shard)
    runs, maps, pretrained, precision, strategy, prints, datasets = prepare(
        cfg, out, distribute=distribute, verbose=verbose, force_pretrain=force_pretrain,
        force=force, deadline=deadline)
    if prepare_only:  # data cached and folds written, for shard processes to share
        for t, ds in datasets.items():
            for rep in range(cfg.study.seeds):
                target_folds(repeat_config(cfg, rep), ds, splits_path(out, t, rep))
        return out
    mine = [r for j, r in enumerate(runs) if j % shard_n == shard_i]
    todo = []
    for r in mine:
        s = read_run_summary(r.dir(out))
        if s is not None and not force:
            if retry_failed and s.get("status") != "ok":
                todo.append(r)
            continue
        todo.append(r)
    log.info("study: %d runs in this shard, %d to do", len(mine), len(todo))

    cache, sessions = {}, {}
    progress = progress and not os.environ.get(NO_PROGRESS_ENV)
    bar = progress_bar(todo, desc="fine-tuning runs", unit="run", disable=not progress)
    longest = 0.0
    for done, r in enumerate(bar):
        if deadline is not None and time.time() + longest > deadline:
            log.warning("study: stopping before --max-minutes runs out; %d of %d runs of this "
                        "call are left - run the same command again to continue",
                        len(todo) - done, len(todo))
            break
        started = time.time()
        bar.set_postfix_str(f"{r.target} fold {r.fold}{f' repeat {r.repeat}' if r.repeat else ''}"
                            f"{' inner' if r.inner else ''} {r.plan}")
        key = (r.target, r.repeat, r.fold, r.inner)
        rcfg = repeat_config(cfg, r.repeat)
        if key not in cache:
            cache.clear()
            ds = datasets[r.target]
            path = splits_path(out, r.target, r.repeat)
            fold = target_folds(rcfg, ds, path)[r.fold]
            if r.inner:
                fold = inner_fold(rcfg, ds, fold, r.fold, path)
            cache[key] = {"ds": ds, "fold": fold, "arrays": {}}
            sessions = {}
        c = cache[key]
        have = len(c["fold"]["train"])
        if r.n_train is not None and r.n_train > have:
            _record(out, r, "skipped", n_originals=r.n_train, augment=r.augment,
                    fingerprint=prints[r.target],
                    reason=f"the fold has {have} training images, fewer than {r.n_train}")
            continue
        variant = (r.n_train, r.augment)
        if variant not in c["arrays"]:  # keep the full fold's arrays and the current variant
            c["arrays"] = {v: a for v, a in c["arrays"].items() if v == (None, True)}
            c["arrays"][variant] = fold_arrays(rcfg, c["ds"], c["fold"], r.fold,
                                               r.n_train, r.augment)
        train, test = c["arrays"][variant]
        try:
            if r.model not in sessions:
                sessions[r.model] = FoldSession(rcfg, r.fold, precision, strategy, r.model)
            tb = (pathlib.Path(cfg.study.tensorboard) / r.rel_dir().relative_to(RUNS)
                  if cfg.study.tensorboard else None)
            result = run_one(rcfg, r.target, r.fold, r.plan, r.model, train, test,
                             pretrained[r.model], sessions[r.model], verbose, log_dir=tb)
            result.summary["fingerprint"] = prints[r.target]
            if not RunSummary.from_dict(result.summary).ok:
                log.warning("run %s / fold %d / %s %s", r.target, r.fold, r.plan,
                            result.summary["reason"])
            write_run(out, r, result, keeps_weights(cfg, r, maps), cfg.study.save_predictions)
            del result
            gc.collect()
        except Diverged as e:
            log.warning("run %s / fold %d / %s diverged: %s", r.target, r.fold, r.plan, e)
            _record(out, r, "diverged", reason=f"diverged: {e}", fingerprint=prints[r.target])
        except Exception as e:  # noqa: BLE001 - recorded, the study goes on
            log.warning("run %s / fold %d / %s failed: %s", r.target, r.fold, r.plan, e)
            # a bad input fails again on a retry (--retry-failed); anything else may not
            _record(out, r, "failed", reason=f"{e.__class__.__name__}: {e}",
                    retry=not isinstance(e, UserError),
                    traceback=traceback.format_exc(limit=5), fingerprint=prints[r.target])
        longest = max(longest, time.time() - started)
    return out


def _end_with_parent() -> None:
    """In a shard process (Linux): receive SIGTERM when the parent dies, even by kill -9."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def run_study_parallel(cfg: Config, out, jobs: int, force: bool = False, verbose: int = 0,
                       progress: bool = True, max_minutes: Optional[float] = None
                       ) -> pathlib.Path:
    """Pretrain once, then run the fine-tuning runs in ``jobs`` shard processes sharing ``out``.

    On a CPU a small U-Net keeps only about one core busy; two processes on two
    cores finish the grid sooner. Each process gets ``cores // jobs`` TensorFlow
    threads; the parent shows one progress bar (finished runs on disk).
    """
    from .runtime import progress_bar

    out = pathlib.Path(out)
    start = time.time()
    run_study(cfg, out, force=force, verbose=verbose, progress=progress, prepare_only=True,
              max_minutes=max_minutes)
    runs, _, _ = list_runs(cfg, cfg.data.targets)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = {**os.environ, NO_PROGRESS_ENV: "1"}
    cmd = [sys.executable, "-m", "keras_unet_ft.cli", "study", "--config", str(out / CONFIG),
           "--out", str(out), "--no-aggregate", "--threads", str(threads), "--quiet"]
    if force:
        cmd.append("--force")
    if max_minutes:
        left = max_minutes - (time.time() - start) / 60.0
        cmd += ["--max-minutes", f"{max(left, 0.01):.3f}"]
    procs = [subprocess.Popen(cmd + ["--shard", f"{i}/{jobs}"], env=env,
                              preexec_fn=_end_with_parent) for i in range(jobs)]

    def done():
        return sum((r.dir(out) / RUN_SUMMARY).exists() for r in runs)

    first = done() if not force else 0
    bar = progress_bar(total=len(runs), initial=first,
                       desc=f"fine-tuning runs ({jobs} processes)", unit="run",
                       disable=not progress)
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(2)
            bar.update(max(0, done() - bar.n))
    finally:
        for p in procs:  # interrupted: do not leave shard processes behind
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait()
    bar.update(max(0, done() - bar.n))
    bar.close()
    bad = [p.returncode for p in procs if p.returncode]
    if bad:
        raise RuntimeError(f"{len(bad)} of {jobs} shard processes failed (exit codes {bad}); "
                           "finished runs are kept - run again to resume")
    return out
