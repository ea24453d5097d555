"""The study commands: ``unet-ft run`` (the whole job; ``experiments/run_all.py``),
``pretrain``, ``study`` and ``report``."""

from __future__ import annotations

import logging
import os
import pathlib
import sys
import time

from ..config import config_from_dict, sizes_enabled
from ..exitcodes import EXIT_INCOMPLETE, EXIT_OK, UserError
from .common import (MODEL_HELP, _positive, add_config_args, check_inputs, config_from_args,
                     model_kind)


def study_config(args):
    """The config of ``study``: ``--config FILE`` (a results folder's config.json) or
    ``--profile`` and ``--set``."""
    if getattr(args, "config", None):
        from ..io import read_json

        data = read_json(args.config)
        return config_from_dict(data.get("config", data) if isinstance(data, dict) else data)
    return config_from_args(args)


def check_study(args) -> int:
    """``run`` and ``study`` before the backend: the config, the dataset specs, the plans."""
    cfg = study_config(args)
    sizes = [cfg.sizes.plans] if sizes_enabled(cfg) else []   # the dataset-size study's
    check_inputs(cfg, plan_sets=[cfg.study.plans] + sizes,
                 distribute=getattr(args, "distribute", None))
    return EXIT_OK


def check_pretrain(args) -> int:
    """``pretrain`` before the backend: the config, a network the package pretrains, and the
    pretraining dataset's spec."""
    from ..config import pretrained_by_package

    cfg = config_from_args(args)
    if not pretrained_by_package(cfg.model):
        raise UserError(f"model.kind={cfg.model.kind} is not pretrained by the package (a "
                        "file: network is the pretrained net; V-Unet and encoder:NAME with "
                        "model.pretrain_on_salient=false start from their encoder's weights): "
                        "nothing to pretrain; run `unet-ft study` directly")
    check_inputs(cfg, targets=[])
    return EXIT_OK


def cmd_pretrain(args) -> int:
    from ..data.study_data import load_pretrain_data
    from ..layout import pretrained_dir
    from ..pretrain import TimeUp, pretrain
    from ..provenance import write_provenance
    from ..runtime import get_strategy, resolve_precision

    cfg = config_from_args(args)
    precision = resolve_precision(cfg.study.precision)
    out = pathlib.Path(args.out)
    write_provenance(cfg, out, precision)
    ds = load_pretrain_data(cfg)
    deadline = time.time() + 60.0 * args.max_minutes if args.max_minutes else None
    try:
        path = pretrain(cfg, ds, pretrained_dir(out, cfg.model.kind, cfg.model.kind),
                        precision=precision, verbose=1 if args.verbose else 0,
                        force=args.force_pretrain, strategy=get_strategy(args.distribute),
                        deadline=deadline)
    except TimeUp as e:
        print(f"unet-ft: {e}", file=sys.stderr)
        return EXIT_INCOMPLETE
    print(f"pretrained model: {path}")
    return 0


def cmd_study(args) -> int:
    from ..pipeline import closing_lines, outcome, run
    from ..runtime import set_threads
    from ..study import run_study, slurm_shard

    set_threads(args.threads)
    if args.quiet:   # a shard process: its parent has said what it loads and reuses
        logging.getLogger("keras_unet_ft").setLevel(logging.WARNING)
    cfg = study_config(args)
    if args.prepare_only:
        run_study(cfg, args.out, force_pretrain=args.force_pretrain, prepare_only=True,
                  verbose=1 if args.verbose else 0, progress=not args.quiet)
        print(f"prepared {args.out}: pretrained model, data cache and folds (shards may start)")
        return EXIT_OK
    shard, no_aggregate = args.shard, args.no_aggregate
    if shard is None and slurm_shard() is not None:
        shard = "slurm"
    if shard == "slurm":   # a task of a job array: a later job writes the report
        i, n = slurm_shard() or (0, 1)
        print(f"Slurm array task: shard {i}/{n}; tables and REPORT.md are left to "
              "`unet-ft report` once every task is done", file=sys.stderr)
        no_aggregate = True
    out = run(cfg, args.out, force=args.force, retry_failed=args.retry_failed,
              shard=shard, distribute=args.distribute,
              verbose=1 if args.verbose else 0, force_pretrain=args.force_pretrain,
              aggregate_results=not no_aggregate, progress=not args.quiet,
              max_minutes=args.max_minutes, figures=not args.no_figures)
    if no_aggregate:  # a shard: its parent (or the report job) judges the whole study
        return EXIT_OK
    code, message = outcome(out)
    print(f"results: {out} (REPORT.md, results.csv, summary.csv, stats.csv); {message}",
          file=sys.stderr if code else sys.stdout)
    if code != EXIT_INCOMPLETE:
        print("\n".join(closing_lines(out)))
    return code


def cmd_report(args) -> int:
    from ..layout import read_manifest
    from ..pipeline import aggregate, outcome

    manifest = read_manifest(args.out)   # read once: the outcome, the tables, the readers
    code, message = outcome(args.out, manifest)
    if code == EXIT_INCOMPLETE:   # tables of a partial grid would mislead
        print(f"unet-ft: {message}", file=sys.stderr)
        return code
    aggregate(args.out, figures=not args.no_figures, manifest=manifest)
    print(f"wrote {args.out}/REPORT.md; {message}", file=sys.stderr if code else sys.stdout)
    return code


def resolve_jobs(jobs, sharded) -> int:
    """``auto``: 2 processes on a CPU-only machine with 2+ cores (a small U-Net keeps only
    ~1.2 cores busy; smoke profile 227 s -> 176 s measured), 1 with a GPU or with
    --shard / --distribute."""
    if str(jobs) != "auto":
        try:
            n = int(jobs)
        except ValueError:
            raise UserError(f"--jobs expects a number or auto, got {jobs!r}") from None
        if n < 1:
            raise UserError(f"--jobs must be >= 1, got {n}")
        return n
    if sharded:
        return 1
    from ..runtime import has_gpu

    return 2 if (os.cpu_count() or 1) >= 2 and not has_gpu() else 1


def cmd_run(args) -> int:
    """The whole job: data -> pretraining -> fine-tuning grid -> figures -> REPORT.md (or,
    with ``--advise``, pretraining then ``advise`` on every target)."""
    from ..pipeline import advise_all, closing_lines, outcome, run

    args.model = None
    cfg = config_from_args(args)
    out = pathlib.Path(args.out or f"results/{cfg.profile}")
    t0 = time.time()
    if args.advise:
        advice = advise_all(cfg, out, args.budget, verbose=1 if args.verbose else 0)
        for a in advice:
            print(f"{a['target']}: " + (f"fine-tune {a['recommendation']} (tied: "
                                        f"{', '.join(a['tied_with_best'])})"
                                        if a["recommendation"] is not None else
                                        f"no plan recommended - the best, {a['best']}, is not "
                                        "shown better than the pretrained net untouched")
                  + f"; {a['seconds']['total']:.0f} s")
        print(f"done in {time.time() - t0:.0f} s: {out / 'advice'}")
        return EXIT_OK
    jobs = resolve_jobs(args.jobs, args.shard or args.distribute or args.retry_failed)
    if jobs > 1 and (args.shard or args.distribute):
        raise UserError("--jobs runs its own shards; do not combine it with --shard "
                        "or --distribute")
    run(cfg, out, jobs=jobs, force=args.force, shard=args.shard,
        distribute=args.distribute, verbose=1 if args.verbose else 0,
        retry_failed=args.retry_failed, max_minutes=args.max_minutes,
        figures=not args.no_figures)
    code, message = outcome(out)
    print(f"done in {time.time() - t0:.0f} s; {message}", file=sys.stderr if code else sys.stdout)
    if code != EXIT_INCOMPLETE:   # a partial grid has no tables to recommend from
        print("\n".join(closing_lines(out)))
    return code


def register(sub) -> None:
    p = sub.add_parser("run", help="the whole job: data, pretraining, the fine-tuning grid, "
                       "figures and REPORT.md (experiments/run_all.py)")
    add_config_args(p)
    p.add_argument("--out", help="results folder (default results/<profile>)")
    p.add_argument("--pretrain", help="pretraining data: synth_salient (default) or xpie:ROOT")
    p.add_argument("--target", action="append",
                   help="target dataset, repeatable (default: sim_bus and synth_cxr)")
    p.add_argument("--plans", help="plan set: paper (default), tuffc, cheng, or a list")
    p.add_argument("--force", action="store_true", help="recompute finished runs")
    p.add_argument("--retry-failed", action="store_true",
                   help="redo runs that failed or diverged (one process)")
    p.add_argument("--shard", help="I/N: run a deterministic share of the runs")
    p.add_argument("--distribute", choices=["mirrored"], help="multi-GPU training")
    p.add_argument("--no-figures", action="store_true",
                   help="tables and REPORT.md without the figures (`unet-ft report` draws them)")
    p.add_argument("--jobs", default="auto",
                   help="fine-tuning processes sharing the CPU cores; auto (default) = 2 on a "
                        "CPU-only machine with 2+ cores, else 1")
    p.add_argument("--advise", action="store_true",
                   help="instead of the grid: pretrain, then `unet-ft advise` on every target "
                        "(OUT/advice/<target>/ADVICE.md)")
    p.add_argument("--budget", type=_positive(float), metavar="MINUTES",
                   help="with --advise: a time budget per target")
    p.set_defaults(func=cmd_run, check=check_study)
    p = sub.add_parser("pretrain", help="pretrain the U-Net on salient-object images")
    add_config_args(p)
    p.add_argument("--dataset", dest="pretrain", help="synth_salient (default) or xpie:ROOT")
    p.add_argument("--model", type=model_kind, metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--out", default="results", help="results folder (default results/)")
    p.add_argument("--force-pretrain", action="store_true", help="retrain even if a model exists")
    p.add_argument("--distribute", choices=["mirrored"], help="tf.distribute strategy")
    p.set_defaults(func=cmd_pretrain, check=check_pretrain)

    p = sub.add_parser("study", help="the fine-tuning study: targets x folds x plans")
    add_config_args(p)
    p.add_argument("--target", action="append",
                   help="target dataset (repeatable): sim_bus, synth_cxr, busi:ROOT, ...")
    p.add_argument("--pretrain", help="pretraining dataset (synth_salient or xpie:ROOT)")
    p.add_argument("--plans", help="plan set (paper, tuffc, cheng) or comma-separated plans")
    p.add_argument("--model", type=model_kind, metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--out", default="results", help="results folder (default results/)")
    p.add_argument("--force", action="store_true", help="recompute finished runs")
    p.add_argument("--retry-failed", action="store_true", help="redo runs that failed")
    p.add_argument("--force-pretrain", action="store_true", help="retrain the pretrained model")
    p.add_argument("--shard", help="I/N: run a deterministic share of the runs; 'slurm' (the "
                   "default inside a Slurm job array): this array task's share")
    p.add_argument("--prepare-only", action="store_true",
                   help="pretrain, cache the data and write the folds, then stop (run it once "
                        "before the shards of a cluster job array)")
    p.add_argument("--distribute", choices=["mirrored"], help="tf.distribute strategy")
    p.add_argument("--config", help="take the whole config from a config.json (e.g. of a "
                   "results folder) instead of --profile/--set")
    p.add_argument("--threads", type=_positive(int), help="TensorFlow intra-op threads")
    p.add_argument("--no-aggregate", action="store_true",
                   help="do not write results.csv/REPORT.md (other shards still running)")
    p.add_argument("--no-figures", action="store_true",
                   help="tables and REPORT.md without the figures (`unet-ft report` draws them)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar and no notices: warnings and errors only")
    p.set_defaults(func=cmd_study, check=check_study)

    p = sub.add_parser("report", help="(re)write results tables, figures and REPORT.md")
    p.add_argument("out", help="results folder")
    p.add_argument("--no-figures", action="store_true")
    p.set_defaults(func=cmd_report)
