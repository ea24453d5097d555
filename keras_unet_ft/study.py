"""The fine-tuning study: targets x folds x plans, with resume, shards and results files.

For each target, fold and plan the pretrained weights are loaded, the plan is
applied (trainable flags + recompile), the net is trained on the fold's
augmented training set and evaluated on its held-out images. Every plan of a
fold trains on the same augmented set, with the same seed, and is evaluated on
the same images (paired comparisons). Plans that train the same layers are
trained once (``shallow_to_deep:9`` = ``deep_to_shallow:9`` = ``all``); the
others point to that run. Baselines: ``none`` (the pretrained net, not
fine-tuned) and ``scratch`` (random initialisation, all layers trained).

Layout of a results folder::

    <out>/config.json                 merged config, package versions, git revision
    <out>/pretrained/model.keras      + history.csv, summary.json
    <out>/splits/<target>.json        folds, made once and reused
    <out>/runs/<target>/<plan>/fold_<k>/summary.json, per_image.csv, history.csv,
                                        predictions.npz
    <out>/results.csv, summary.csv, stats.csv, REPORT.md, figures/

A run whose ``summary.json`` exists is skipped (``force`` recomputes; failed runs
are redone with ``retry_failed``). Files are written atomically, so a study
killed at any moment loses at most the run in progress.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import logging
import pathlib
import platform
import re
import subprocess
import sys
import time
import traceback
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import __version__
from .config import Config
from .data.augment import AugmentParams, augment_to
from .data.folds import load_or_make_folds
from .data.registry import REGISTRY, load_dataset, parse_spec
from .metrics import METRICS, batch_metrics
from .training import (NaNLossError, atomic_write_text, build_from_config, configure_cpu_threads,
                       fresh_session,
                       get_strategy, history_rows, make_dataset, predict, pretrain,
                       resolve_precision, strategy_scope, write_csv, EpochTimer)

log = logging.getLogger("keras_unet_ft")
BASELINES = ("none", "scratch")
MODALITY = {"sim_bus": "ultrasound", "udiat_b": "ultrasound", "busi": "ultrasound",
            "sim_lus": "ultrasound", "synth_cxr": "xray", "jsrt_scr": "xray",
            "montgomery": "xray"}


# ---------------------------------------------------------------------------
# plan sets
def plan_set(name_or_list, units_path: int = 9, units_level: int = 5) -> List[str]:
    """Expand a plan-set name (``paper``, ``tuffc``, ``smoke``, ``cheng``) or a list."""
    if isinstance(name_or_list, (list, tuple)):
        return list(name_or_list)
    name = str(name_or_list)
    paper = (["contracting", "expanding"]
             + [f"shallow_to_deep:{k}" for k in range(1, units_path + 1)]
             + [f"deep_to_shallow:{k}" for k in range(1, units_path + 1)])
    if name == "paper":
        return paper
    if name == "tuffc":
        return paper + ([f"shallow_to_deep:{k}@level" for k in range(1, units_level + 1)]
                        + [f"deep_to_shallow:{k}@level" for k in range(1, units_level + 1)])
    if name == "smoke":  # every figure's ingredients, few runs
        return ["contracting", "expanding", "shallow_to_deep:1", "shallow_to_deep:5",
                "shallow_to_deep:9", "deep_to_shallow:1", "deep_to_shallow:5"]
    if name == "cheng":  # Cheng & Lam: X-Unet all vs bottleneck frozen; V-Unet two-stage
        return ["xunet/all", "xunet/freeze_bottleneck", "vunet/expanding:blocks>all"]
    return [p.strip() for p in name.split(",") if p.strip()]


def plan_slug(plan: str) -> str:
    """A folder name for a plan (``shallow_to_deep:3@level`` -> ``shallow_to_deep-3-level``)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", plan).strip("-")
    if plan.startswith("layers:"):
        slug = "layers-" + hashlib.sha1(plan.encode()).hexdigest()[:8]
    return slug


def target_slug(spec: str) -> str:
    name, root = parse_spec(spec)
    if root is None:
        return name
    return f"{name}-{hashlib.sha1(str(root).encode()).hexdigest()[:6]}"


# ---------------------------------------------------------------------------
# provenance
def git_revision() -> Optional[str]:
    try:
        here = pathlib.Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
        rev = out.stdout.strip()
        if out.returncode != 0 or not rev:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True,
                               text=True, timeout=5).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> Dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0], "platform": platform.platform(),
           "keras_unet_ft": __version__}
    for pkg in ("tensorflow", "tensorflow-cpu", "keras", "numpy", "scipy", "scikit-image",
                "scikit-learn", "tf-keras-vis", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_provenance(cfg: Config, out: pathlib.Path, precision: str) -> None:
    atomic_write_text(out / "config.json", json.dumps({
        "config": cfg.to_dict(), "versions": versions(), "git_revision": git_revision(),
        "precision": precision, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }, indent=1, sort_keys=True))


# ---------------------------------------------------------------------------
@dataclasses.dataclass
class RunSpec:
    target: str          # the target spec as given (NAME or NAME:ROOT)
    fold: int
    plan: str            # canonical plan label (trained), e.g. "contracting" or "xunet/all"
    aliases: List[str]   # other plans with the same trainable layers
    model: str = "unet"  # model kind of the run
    n_train: Optional[int] = None  # dataset-size study: original training images used
    augment: bool = True           # dataset-size study: augmented (True) or as they are

    @property
    def bare_plan(self) -> str:
        """The plan without its model prefix (``xunet/all`` -> ``all``)."""
        return split_model(self.plan, self.model)[1]

    @property
    def variant(self) -> Optional[str]:
        """``n0050-aug`` / ``n0050-noaug`` for a dataset-size run, else None."""
        if self.n_train is None:
            return None
        return f"n{self.n_train:04d}-{'aug' if self.augment else 'noaug'}"

    def dir(self, out: pathlib.Path) -> pathlib.Path:
        base = out / "runs" / target_slug(self.target)
        if self.variant:
            base = base / "sizes" / self.variant
        return base / plan_slug(self.plan) / f"fold_{self.fold}"


def _load_target(cfg: Config, spec: str):
    name, _ = parse_spec(spec)
    opts = {}
    if REGISTRY[name].kind == "builtin":
        opts["seed"] = cfg.study.seed + 1
        if cfg.data.target_n:
            opts["n"] = cfg.data.target_n
    return load_dataset(spec, size=cfg.model.size, cache_directory=cfg.data.cache_dir, **opts)


def _load_pretrain_data(cfg: Config):
    name, _ = parse_spec(cfg.data.pretrain)
    opts = {}
    if REGISTRY[name].kind == "builtin":
        opts["seed"] = cfg.study.seed
        if cfg.data.pretrain_n:
            opts["n"] = cfg.data.pretrain_n
    elif cfg.data.pretrain_n and name == "xpie":
        opts["limit"] = cfg.data.pretrain_n
    return load_dataset(cfg.data.pretrain, size=cfg.model.size,
                        cache_directory=cfg.data.cache_dir, **opts)


MODEL_KINDS = ("unet", "xunet", "vunet")


def split_model(plan: str, default: str):
    """``"xunet/all"`` -> ``("xunet", "all")``; a plan without prefix uses ``default``."""
    head, sep, rest = plan.partition("/")
    if sep and head in MODEL_KINDS:
        return head, rest
    return default, plan


def stages(plan: str) -> List[str]:
    """``"expanding:blocks>all"`` -> two stages trained one after the other (Cheng's V-Unet)."""
    parts = [p.strip() for p in plan.split(">")]
    if any(not p for p in parts):
        raise ValueError(f"bad staged plan {plan!r}: expected PLAN>PLAN, e.g. expanding:blocks>all")
    return parts


def model_config(cfg: Config, kind: str):
    return dataclasses.replace(cfg.model, kind=kind)


def _block_map(cfg: Config, kind: str):
    import keras

    from .blocks import BlockMap

    keras.backend.clear_session()
    mc = model_config(cfg, kind)
    if kind == "vunet":
        mc = dataclasses.replace(mc, encoder_weights=None)  # structure only
    return BlockMap(build_from_config(mc))


def canonical_plans(cfg: Config, plans: Sequence[str]):
    """Group plans by model and trainable layer sets: ``[(canonical, [aliases], kind)]``."""
    from .plans import Plan

    maps = {}
    groups: Dict[tuple, list] = {}
    order = []
    for p in plans:
        kind, bare = split_model(p, cfg.model.kind)
        if kind not in maps:
            maps[kind] = _block_map(cfg, kind)
        if bare in BASELINES:
            key = (kind, f"__{bare}__")
            label = p
        else:
            sets = []
            for st in stages(bare):
                layers = Plan.parse(st).trainable_layers(maps[kind])
                sets.append(layers if layers else frozenset({"__none__"}))
            key = (kind, tuple(sets))
            norm = ">".join(str(Plan.parse(st)) for st in stages(bare))
            label = f"{kind}/{norm}" if p != bare else norm
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(label)
    return [(groups[k][0], groups[k][1:], k[0]) for k in order], maps


def study_plans(cfg: Config, bm_units=(9, 5)) -> List[str]:
    plans = plan_set(cfg.study.plans, *bm_units)
    if cfg.study.baselines:
        # baselines use the model of the first plan (X-Unet for the `cheng` set)
        kind, _ = split_model(plans[0], cfg.model.kind) if plans else (cfg.model.kind, "")
        prefix = f"{kind}/" if kind != cfg.model.kind else ""
        plans = [p for p in plans if split_model(p, "")[1] not in BASELINES] + \
            [prefix + b for b in BASELINES]
    return plans


def sizes_enabled(cfg: Config) -> bool:
    """Whether the dataset-size study runs (``sizes.run``: auto = with the ``cheng`` plans)."""
    run = str(cfg.sizes.run).lower()
    if run not in ("auto", "yes", "no", "true", "false"):
        raise ValueError(f"sizes.run must be auto, yes or no, got {cfg.sizes.run!r}")
    if run == "auto":
        return cfg.study.plans == "cheng"
    return run in ("yes", "true")


def size_counts(cfg: Config) -> List[int]:
    """The training-set sizes of the dataset-size study, checked."""
    counts = []
    for c in cfg.sizes.counts:
        try:
            n = int(c)
        except (TypeError, ValueError):
            n = 0
        if n < 1 or str(n) != str(c).strip():
            raise ValueError(f"sizes.counts must be positive whole numbers, got {c!r} "
                             f"in {cfg.sizes.counts!r}")
        counts.append(n)
    if int(cfg.sizes.augment_factor) < 1:
        raise ValueError(f"sizes.augment_factor must be >= 1, got {cfg.sizes.augment_factor!r}")
    return sorted(set(counts))


def stage_learning_rate(cfg: Config, stage: int) -> float:
    """Learning rate of stage ``stage`` (0-based) of a staged plan."""
    rates = cfg.finetune.stage_learning_rates or []
    if stage < len(rates):
        try:
            lr = float(rates[stage])
        except (TypeError, ValueError):
            lr = -1.0
        if not lr > 0:
            raise ValueError(f"finetune.stage_learning_rates must be positive numbers, "
                             f"got {rates[stage]!r} in {rates!r}")
        return lr
    return float(cfg.finetune.learning_rate)


def list_runs(cfg: Config, targets: Sequence[str]):
    """Every run of the study in a fixed order (targets, folds, plans, then the
    dataset-size runs of that fold when the size study is on)."""
    bm = _block_map(cfg, cfg.model.kind)
    plans = study_plans(cfg, (bm.units("path"), bm.units("level")))
    groups, _ = canonical_plans(cfg, plans)
    size_groups, counts = [], []
    if sizes_enabled(cfg):
        counts = size_counts(cfg)
        size_groups, _ = canonical_plans(cfg, plan_set(cfg.sizes.plans))
    runs = []
    for t in targets:
        for k in range(cfg.finetune.folds):
            for canon, aliases, kind in groups:
                runs.append(RunSpec(t, k, canon, aliases, kind))
            for canon, aliases, kind in size_groups:
                for n in counts:
                    for aug in (False, True):
                        runs.append(RunSpec(t, k, canon, aliases, kind, n_train=n, augment=aug))
    return runs, plans, bm


def _weights_by_layer(model) -> Dict[str, List[np.ndarray]]:
    return {l.name: [np.array(w) for w in l.get_weights()] for l in model.layers if l.weights}


def _relative_change(before, after, bm) -> Dict[str, float]:
    out = {}
    for b in bm.blocks:
        num = den = 0.0
        for name in b.weighted_layers:
            for w0, w1 in zip(before[name], after[name]):
                num += float(np.sum((w1.astype(np.float64) - w0) ** 2))
                den += float(np.sum(w0.astype(np.float64) ** 2))
        out[str(b.index)] = float(np.sqrt(num / den)) if den > 0 else 0.0
    return out


class FoldSession:
    """The model of one (target, fold) and how its plans are trained.

    With the masked trainer (default) the model is built and its train step
    traced once per fold; each plan then only resets weights, optimizer state
    and gradient masks. With the Keras trainer every plan rebuilds the model,
    applies the plan (``apply_plan``: trainable flags + recompile) and calls
    ``model.fit`` - needed for fp16 loss scaling and ``tf.distribute``.
    """

    def __init__(self, cfg: Config, fold: int, precision: str, strategy=None,
                 kind: Optional[str] = None):
        self.cfg, self.fold, self.strategy = cfg, fold, strategy
        self.mcfg = model_config(cfg, kind or cfg.model.kind)
        self.seed = cfg.study.seed + fold
        steps = cfg.finetune.epochs * -(-cfg.finetune.augment_total // cfg.finetune.batch_size)
        self.kind = resolve_trainer(cfg.study.trainer, precision, strategy, steps)
        self.precision = precision
        self.trainer = None
        if self.kind == "masked":
            self.resolved = fresh_session(self.seed, precision, cfg.study.deterministic)
            from .blocks import BlockMap
            from .training import MaskedTrainer

            self.model = build_from_config(self.mcfg)
            self.bm = BlockMap(self.model)
            self.trainer = MaskedTrainer(self.model, cfg.finetune.learning_rate)

    def train(self, plan: str, train, pretrained_weights, verbose: int = 0):
        """Train ``plan``; returns (model, plan report, history rows, epoch times, weights before)."""
        import keras

        from .plans import Plan, PlanReport, apply_plan, _count

        ft = self.cfg.finetune
        plan = split_model(plan, self.mcfg.kind)[1]
        lrs = [stage_learning_rate(self.cfg, i) for i in range(len(stages(plan)))]
        epochs = 0 if plan == "none" else ft.epochs
        steps = ["all" if st == "scratch" else st for st in stages(plan)]
        rows, times = [], []
        if self.kind == "masked":
            chosen_all = set()
            for i, st in enumerate(steps):
                chosen = Plan.parse(st).trainable_layers(self.bm)
                chosen_all |= chosen
                if i == 0:
                    self.trainer.reset(None if plan == "scratch" else pretrained_weights, chosen,
                                       lrs[i])
                    keras.utils.set_random_seed(self.seed)
                    before = _weights_by_layer(self.model)
                else:  # next stage: keep the weights, fresh optimizer state
                    self.trainer.reset(self.model.get_weights(), chosen, lrs[i])
                if epochs:
                    ds = make_dataset(train[0], train[1], ft.batch_size, shuffle=True,
                                      seed=self.seed + i)
                    r, t = self.trainer.fit(ds, epochs)
                    rows += [{**x, "stage": i + 1} for x in r]
                    times += t
            ordered = tuple(l.name for l in self.model.layers if l.name in chosen_all)
            n_tr = sum(_count(l.weights) for l in self.model.layers if l.name in chosen_all)
            report = PlanReport(plan, ordered, n_tr, _count(self.model.weights) - n_tr)
            return self.model, report, rows, times, before, self.bm, self.trainer.predict
        self.resolved = fresh_session(self.seed, self.precision, self.cfg.study.deterministic)
        from .blocks import BlockMap

        with strategy_scope(self.strategy):
            model = build_from_config(self.mcfg)
            bm = BlockMap(model)
            if plan != "scratch":
                model.set_weights(pretrained_weights)
            before = _weights_by_layer(model)
        chosen_all = set()
        for i, st in enumerate(steps):
            with strategy_scope(self.strategy):
                report = apply_plan(model, st, block_map=bm,
                                    optimizer=keras.optimizers.Adam(lrs[i]),
                                    loss="binary_crossentropy")
            chosen_all |= set(report.trainable_layers)
            if epochs:
                timer = EpochTimer()
                ds = make_dataset(train[0], train[1], ft.batch_size, shuffle=True,
                                  seed=self.seed + i)
                history = model.fit(ds, epochs=epochs, verbose=verbose, shuffle=False,
                                    callbacks=[keras.callbacks.TerminateOnNaN(), timer])
                r = history_rows(history)
                losses = [x.get("loss", np.nan) for x in r]
                if len(losses) < epochs or not np.all(np.isfinite(losses)):
                    raise NaNLossError(f"loss became NaN/inf at epoch {len(losses)}")
                rows += [{**x, "stage": i + 1} for x in r]
                times += timer.times
        if len(steps) > 1:
            ordered = tuple(l.name for l in model.layers if l.name in chosen_all)
            n_tr = sum(_count(l.weights) for l in model.layers if l.name in chosen_all)
            report = PlanReport(plan, ordered, n_tr, _count(model.weights) - n_tr)
        return model, report, rows, times, before, bm, \
            (lambda x, batch_size=8: predict(model, x, batch_size))


MASKED_MAX_STEPS = 1000  # above this many steps per run, Keras' retrace is paid back


def resolve_trainer(trainer: str, precision: str, strategy=None, steps: int = 0) -> str:
    """``auto``: the masked trainer for short runs (a retrace costs 4-13 s on a CPU, more
    than a short run's training), Keras' own for long ones (frozen layers then cost
    less per step: deep_to_shallow:1 ran at 0.45x the step time of ``all``,
    BENCHMARKS.md), and always for fp16 or tf.distribute."""
    if trainer not in ("auto", "masked", "keras"):
        raise ValueError(f"study.trainer must be auto, masked or keras, got {trainer!r}")
    if trainer == "auto":
        if strategy is not None or precision == "fp16" or steps > MASKED_MAX_STEPS:
            return "keras"
        return "masked"
    if trainer == "masked" and (strategy is not None or precision == "fp16"):
        raise ValueError("the masked trainer supports fp32/bf16 without tf.distribute; "
                         "use study.trainer=keras")
    return trainer


def run_one(cfg: Config, spec: RunSpec, out: pathlib.Path, train, test, pretrained_weights,
            session: "FoldSession", verbose: int = 0) -> dict:
    """Train and evaluate one (target, fold, plan); write its files; return its summary."""
    run_dir = spec.dir(out)
    ft = cfg.finetune
    t0 = time.perf_counter()
    model, report, rows, times, before, bm, predict_fn = session.train(
        spec.bare_plan, train, pretrained_weights, verbose)
    train_seconds = time.perf_counter() - t0
    probs = predict_fn(test[0], batch_size=max(ft.batch_size, 8))
    m = batch_metrics(test[1], probs)
    after = _weights_by_layer(model)
    change = None if spec.bare_plan == "scratch" else _relative_change(before, after, bm)
    ids = test[2]
    write_csv(run_dir / "per_image.csv",
              [{"id": i, **{k: float(m[k][j]) for k in METRICS}} for j, i in enumerate(ids)])
    write_csv(run_dir / "history.csv", rows or [{"epoch": 0}])
    if cfg.study.save_predictions:
        pred = (probs[..., 0] > 0.5)
        _atomic_npz(run_dir / "predictions.npz", ids=np.array(ids),
                    shape=np.array(pred.shape), bits=np.packbits(pred.ravel()))
    none = spec.bare_plan == "none"
    total = report.trainable_params + report.frozen_params
    summary = {
        "status": "ok", "target": spec.target, "fold": spec.fold, "plan": spec.plan,
        "model": spec.model, "encoder_weights": (session.mcfg.encoder_weights
                                                 if spec.model == "vunet" else None),
        "aliases": spec.aliases, "n_train": int(len(train[0])), "n_test": int(len(ids)),
        "n_originals": spec.n_train, "augment": spec.augment if spec.n_train else None,
        **{f"{k}_mean": float(np.mean(m[k])) for k in METRICS},
        **{f"{k}_std": float(np.std(m[k])) for k in METRICS},
        "trainable_params": 0 if none else report.trainable_params,
        "frozen_params": total if none else report.frozen_params,
        "trainable_layers": [] if none else list(report.trainable_layers),
        "train_seconds": train_seconds,
        "seconds_per_epoch": float(np.mean(times)) if times else 0.0,
        "epochs": len(rows), "seed": session.seed, "precision": session.resolved,
        "trainer": session.kind, "weight_change": change,
    }
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=1))
    gc.collect()
    return summary


def _atomic_npz(path, **arrays):
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def load_predictions(run_dir) -> Dict[str, np.ndarray]:
    """``{id: bool mask (H, W)}`` saved by a run."""
    with np.load(pathlib.Path(run_dir) / "predictions.npz") as z:
        shape = tuple(z["shape"])
        pred = np.unpackbits(z["bits"])[: int(np.prod(shape))].reshape(shape).astype(bool)
        return dict(zip([str(i) for i in z["ids"]], pred))


def _fold_arrays(cfg: Config, ds, fold: dict, fold_index: int,
                 n_train: Optional[int] = None, augment: bool = True):
    """Training (augmented) and test arrays of a fold. With ``n_train`` (dataset-size
    study): a seeded subset of ``n_train`` training images - nested, so the 50
    images are among the 100 - augmented to ``sizes.augment_factor * n_train``
    images, or used as they are when ``augment`` is False."""
    index = {i: j for j, i in enumerate(ds.ids)}
    tr = np.array([index[i] for i in fold["train"]])
    te = np.array([index[i] for i in fold["test"]])
    ft = cfg.finetune
    params = AugmentParams(ft.rotation, ft.shift, ft.shear, ft.zoom, ft.hflip)
    total = max(ft.augment_total, len(tr))
    if n_train is not None:
        if n_train > len(tr):
            raise ValueError(f"n_train={n_train} but the fold has {len(tr)} training images")
        order = np.random.default_rng([cfg.study.seed, fold_index, 7]).permutation(len(tr))
        tr = tr[np.sort(order[:n_train])]
        total = int(cfg.sizes.augment_factor) * n_train if augment else n_train
    xa, ma, _ = augment_to(ds.images[tr], ds.masks[tr], total=total,
                           seed=cfg.study.seed * 1000 + fold_index, params=params)
    return (xa, ma), (ds.images[te], ds.masks[te], [ds.ids[i] for i in te])


def pretrained_dir(cfg: Config, out: pathlib.Path, kind: str) -> pathlib.Path:
    return out / ("pretrained" if kind == cfg.model.kind else f"pretrained_{kind}")


def pretrained_weights_by_kind(cfg: Config, out, kinds, precision, verbose=0, force=False,
                               strategy=None) -> Dict[str, list]:
    """Starting weights per model kind: U-Net / X-Unet pretrained on the salient-object set
    (reused when present); V-Unet = its VGG16 encoder weights + a seeded random decoder."""
    import keras

    out = pathlib.Path(out)
    result, pre_data = {}, None
    for kind in dict.fromkeys(kinds):
        sub = dataclasses.replace(cfg, model=model_config(cfg, kind))
        if kind == "vunet":
            fresh_session(cfg.study.seed, precision)
            result[kind] = build_from_config(sub.model).get_weights()
            continue
        d = pretrained_dir(cfg, out, kind)
        if not ((d / "model.keras").exists() and not force):
            pre_data = pre_data or _load_pretrain_data(cfg)
        path = pretrain(sub, pre_data, d, precision=precision, verbose=verbose, force=force,
                        strategy=strategy)
        result[kind] = keras.saving.load_model(path, compile=False).get_weights()
    return result


def run_study_parallel(cfg: Config, out, jobs: int, force: bool = False, verbose: int = 0,
                       progress: bool = True):
    """Pretrain once, then run the fine-tuning runs in ``jobs`` shard processes sharing ``out``.

    On a CPU a small U-Net keeps only about one core busy; two processes on two
    cores finish the grid sooner. Each process gets ``cores // jobs`` TensorFlow
    threads; the parent shows one progress bar (finished runs on disk) and
    aggregates at the end.
    """
    import os
    import subprocess
    import sys as _sys

    from tqdm.auto import tqdm

    out = pathlib.Path(out)
    run_study(cfg, out, force=False, verbose=verbose, progress=progress, prepare_only=True)
    runs, _, _ = list_runs(cfg, cfg.data.targets)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = {**os.environ, "UNET_FT_NO_PROGRESS": "1"}
    cmd = [_sys.executable, "-m", "keras_unet_ft.cli", "study", "--config", str(out / "config.json"),
           "--out", str(out), "--no-aggregate", "--threads", str(threads), "--quiet"]
    if force:
        cmd.append("--force")
    procs = [subprocess.Popen(cmd + ["--shard", f"{i}/{jobs}"], env=env) for i in range(jobs)]

    def done():
        return sum((r.dir(out) / "summary.json").exists() for r in runs)

    start = done() if not force else 0
    bar = tqdm(total=len(runs), initial=start, desc=f"fine-tuning runs ({jobs} processes)",
               unit="run", disable=not progress)
    while any(p.poll() is None for p in procs):
        time.sleep(2)
        bar.update(max(0, done() - bar.n))
    bar.update(max(0, done() - bar.n))
    bar.close()
    bad = [p.returncode for p in procs if p.returncode]
    if bad:
        raise RuntimeError(f"{len(bad)} of {jobs} shard processes failed (exit codes {bad}); "
                           "finished runs are kept - run again to resume")
    from .results import aggregate as _aggregate

    _aggregate(out, cfg)
    return out


def parse_shard(shard) -> tuple:
    if shard in (None, ""):
        return (0, 1)
    if isinstance(shard, tuple):
        i, n = shard
    else:
        m = re.fullmatch(r"(\d+)/(\d+)", str(shard))
        if not m:
            raise ValueError(f"--shard expects I/N (e.g. 0/4), got {shard!r}")
        i, n = int(m.group(1)), int(m.group(2))
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard I/N needs 0 <= I < N, got {i}/{n}")
    return (i, n)


def run_study(cfg: Config, out, *, force: bool = False, retry_failed: bool = False,
              shard=None, distribute: Optional[str] = None, verbose: int = 0,
              progress: bool = True, force_pretrain: bool = False, aggregate: bool = True,
              prepare_only: bool = False):
    """Pretrain (or reuse), run every fine-tuning run of this shard, aggregate the results.

    Returns:
        The results folder.
    """
    from tqdm.auto import tqdm

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shard_i, shard_n = parse_shard(shard)
    configure_cpu_threads(cfg.model.base_filters)
    precision = resolve_precision(cfg.study.precision)
    write_provenance(cfg, out, precision)
    strategy = get_strategy(distribute)

    runs, _, _ = list_runs(cfg, cfg.data.targets)
    for i in range(max(len(stages(split_model(r.plan, r.model)[1])) for r in runs)):
        stage_learning_rate(cfg, i)  # bad values fail before any training
    if any(r.model == "vunet" for r in runs):  # fail before any training, with a clear message
        from .vunet import resolve_encoder_weights

        resolve_encoder_weights(cfg.model.encoder_weights)
    pretrained = pretrained_weights_by_kind(cfg, out, [r.model for r in runs], precision,
                                            verbose, force_pretrain, strategy)
    if prepare_only:  # data cached and folds written, for shard processes to share
        for t in cfg.data.targets:
            ds = _load_target(cfg, t)
            load_or_make_folds(out / "splits" / f"{target_slug(t)}.json", ds.ids,
                               cfg.finetune.folds, cfg.study.seed, ds.strata())
        return out
    mine = [r for j, r in enumerate(runs) if j % shard_n == shard_i]
    todo = []
    for r in mine:
        s = r.dir(out) / "summary.json"
        if s.exists() and not force:
            if retry_failed and json.loads(s.read_text()).get("status") != "ok":
                todo.append(r)
            continue
        todo.append(r)
    log.info("study: %d runs in this shard, %d to do", len(mine), len(todo))

    cache, sessions = {}, {}
    bar = tqdm(todo, desc="fine-tuning runs", unit="run", disable=not progress)
    for r in bar:
        bar.set_postfix_str(f"{r.target} fold {r.fold} {r.plan}")
        key = (r.target, r.fold)
        if key not in cache:
            cache.clear()
            ds = _load_target(cfg, r.target)
            folds = load_or_make_folds(out / "splits" / f"{target_slug(r.target)}.json", ds.ids,
                                       cfg.finetune.folds, cfg.study.seed, ds.strata())
            cache[key] = {"ds": ds, "fold": folds[r.fold], "arrays": {}}
            sessions = {}
        c = cache[key]
        have = len(c["fold"]["train"])
        if r.n_train is not None and r.n_train > have:
            atomic_write_text(r.dir(out) / "summary.json", json.dumps({
                "status": "skipped", "target": r.target, "fold": r.fold, "plan": r.plan,
                "aliases": r.aliases, "n_originals": r.n_train, "augment": r.augment,
                "reason": f"the fold has {have} training images, fewer than {r.n_train}",
            }, indent=1))
            continue
        variant = (r.n_train, r.augment)
        if variant not in c["arrays"]:  # keep the full fold's arrays and the current variant
            c["arrays"] = {v: a for v, a in c["arrays"].items() if v == (None, True)}
            c["arrays"][variant] = _fold_arrays(cfg, c["ds"], c["fold"], r.fold,
                                                r.n_train, r.augment)
        train, test = c["arrays"][variant]
        try:
            if r.model not in sessions:
                sessions[r.model] = FoldSession(cfg, r.fold, precision, strategy, r.model)
            run_one(cfg, r, out, train, test, pretrained[r.model], sessions[r.model], verbose)
        except Exception as e:  # noqa: BLE001 - recorded, the study goes on
            log.warning("run %s / fold %d / %s failed: %s", r.target, r.fold, r.plan, e)
            atomic_write_text(r.dir(out) / "summary.json", json.dumps({
                "status": "failed", "target": r.target, "fold": r.fold, "plan": r.plan,
                "aliases": r.aliases, "reason": f"{e.__class__.__name__}: {e}",
                "traceback": traceback.format_exc(limit=5),
            }, indent=1))
    if aggregate:
        from .results import aggregate as _aggregate

        _aggregate(out, cfg)
    return out
