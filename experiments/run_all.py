#!/usr/bin/env python
"""The whole study in one command: data -> pretraining -> fine-tuning grid -> figures -> report.

    python experiments/run_all.py                    # the quick profile (CPU-sized)
    python experiments/run_all.py --profile smoke    # a few minutes
    python experiments/run_all.py --profile paper    # the paper's settings (GPU)
    python experiments/run_all.py --advise           # a fast answer: probe + successive halving
    python experiments/run_all.py --pretrain xpie:/data/XPIE \\
        --target udiat_b:/data/DatasetB --target jsrt_scr:/data/JSRT

An interrupted run resumes where it stopped (finished runs are skipped).
"""

import argparse
import logging
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import os  # noqa: E402

from keras_unet_ft.cli import add_config_args, config_from_args, io_fault, start_backend  # noqa: E402
from keras_unet_ft.exitcodes import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_INCOMPLETE  # noqa: E402


def resolve_jobs(jobs, sharded) -> int:
    """``auto``: 2 processes on a CPU-only machine with 2+ cores (a small U-Net keeps only
    ~1.2 cores busy; smoke profile 227 s -> 176 s measured), 1 with a GPU or with
    --shard / --distribute."""
    if str(jobs) != "auto":
        try:
            n = int(jobs)
        except ValueError:
            raise ValueError(f"--jobs expects a number or auto, got {jobs!r}") from None
        if n < 1:
            raise ValueError(f"--jobs must be >= 1, got {n}")
        return n
    if sharded:
        return 1
    from keras_unet_ft.runtime import has_gpu

    return 2 if (os.cpu_count() or 1) >= 2 and not has_gpu() else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--jobs", default="auto",
                   help="fine-tuning processes sharing the CPU cores; auto (default) = 2 on a "
                        "CPU-only machine with 2+ cores, else 1")
    p.add_argument("--advise", action="store_true",
                   help="instead of the grid: pretrain, then `unet-ft advise` on every target "
                        "(OUT/advice/<target>/ADVICE.md)")
    p.add_argument("--budget", type=float, metavar="MINUTES",
                   help="with --advise: a time budget per target")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.model = None
    try:
        cfg = config_from_args(args)
    except ValueError as e:   # a bad --set / --profile value: its message, no traceback
        print(f"run_all: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out = pathlib.Path(args.out or f"results/{cfg.profile}")
    t0 = time.time()
    start_backend("run_all", verbose=args.verbose)
    from keras_unet_ft.pipeline import advise_all, closing_lines, outcome, run

    if args.advise:
        try:
            advice = advise_all(cfg, out, args.budget, verbose=1 if args.verbose else 0)
        except (ValueError, FileNotFoundError) as e:
            print(f"run_all: error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
        for a in advice:
            print(f"{a['target']}: fine-tune {a['recommendation']} (tied: "
                  f"{', '.join(a['tied_with_best'])}); {a['seconds']['total']:.0f} s")
        print(f"done in {time.time() - t0:.0f} s: {out / 'advice'}")
        return 0
    try:
        jobs = resolve_jobs(args.jobs, args.shard or args.distribute or args.retry_failed)
        if jobs > 1 and (args.shard or args.distribute):
            raise ValueError("--jobs runs its own shards; do not combine it with --shard "
                             "or --distribute")
        run(cfg, out, jobs=jobs, force=args.force, shard=args.shard,
            distribute=args.distribute, verbose=1 if args.verbose else 0,
            retry_failed=args.retry_failed, max_minutes=args.max_minutes)
    except (ValueError, FileNotFoundError) as e:
        print(f"run_all: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:   # read-only folder, disk full: one sentence, exit 1
        print(f"run_all: error: {io_fault(e)}", file=sys.stderr)
        return EXIT_ERROR
    code, message = outcome(out)
    print(f"done in {time.time() - t0:.0f} s; {message}", file=sys.stderr if code else sys.stdout)
    if code != EXIT_INCOMPLETE:   # a partial grid has no tables to recommend from
        print("\n".join(closing_lines(out)))
    return code


if __name__ == "__main__":
    sys.exit(main())
