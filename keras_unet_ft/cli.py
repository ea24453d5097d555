"""The ``unet-ft`` command line: plans | data | pretrain | study | figures | report."""

from __future__ import annotations

import argparse
import sys


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="unet", choices=["unet", "xunet", "vunet"],
                   help="network (default: the paper's U-Net)")
    p.add_argument("--size", type=int, default=256, help="input height and width (default 256)")
    p.add_argument("--base-filters", type=int, default=64, help="filters of the first block")
    p.add_argument("--depth", type=int, default=4, help="number of max-pools (default 4)")


def _build_from_args(args):
    from .model import build_model

    kwargs = {"input_shape": (args.size, args.size, 1)}
    if args.model in ("unet", "xunet"):
        kwargs.update(base_filters=args.base_filters, depth=args.depth)
    else:
        kwargs["encoder_weights"] = None
    return build_model(args.model, **kwargs)


def cmd_plans(args) -> int:
    from .blocks import BlockMap
    from .plans import apply_plan

    model = _build_from_args(args)
    bm = BlockMap(model)
    print(f"model {model.name}: input {args.size}x{args.size}x1, "
          f"{bm.total_params:,} parameters, {len(bm.blocks)} blocks, "
          f"{bm.units('level')} levels")
    print(bm.format_table())
    for plan in args.plan or []:
        report = apply_plan(model, plan, block_map=bm, compile=False)
        print()
        print(report)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unet-ft",
        description="Which layers of a pretrained U-Net should you fine-tune?")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plans", help="print the block table and what plans train")
    _add_model_args(p)
    p.add_argument("--plan", action="append",
                   help="a plan string, e.g. contracting or shallow_to_deep:3@level (repeatable)")
    p.set_defaults(func=cmd_plans)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


def _loader_options(args) -> dict:
    opts = {}
    for key in ("n", "seed"):
        v = getattr(args, key, None)
        if v is not None:
            opts[key] = v
    if getattr(args, "skip_unpaired", False):
        opts["skip_unpaired"] = True
    if getattr(args, "mask_suffix", None):
        opts["mask_suffix"] = args.mask_suffix
    if getattr(args, "no_normal", False):
        opts["include_normal"] = False
    return opts


def cmd_data(args) -> int:
    from .data.registry import REGISTRY, load_dataset

    if args.action == "list":
        for name in sorted(REGISTRY):
            info = REGISTRY[name]
            print(f"{name:<14} {info.kind:<8} {info.description}")
            print("\n".join("    " + line for line in info.layout.splitlines()))
        return 0
    if not args.dataset:
        raise ValueError(f"data {args.action} needs a dataset, e.g. sim_bus or busi:/data/BUSI")
    ds = load_dataset(args.dataset, size=args.size, cache=not args.no_cache,
                      cache_directory=args.cache_dir, **_loader_options(args))
    print(ds.summary())
    if args.action == "show":
        from .data.show import show_grid

        out = args.output or f"{ds.name}_grid.png"
        show_grid(ds, n=args.n_show, path=out)
        print(f"wrote {out}")
    return 0


def _register_data(sub) -> None:
    p = sub.add_parser("data", help="list, prepare (load/generate + cache) or show datasets")
    p.add_argument("action", choices=["list", "prepare", "show"])
    p.add_argument("dataset", nargs="?", help="NAME or NAME:ROOT, e.g. busi:/data/BUSI")
    p.add_argument("--size", type=int, default=256, help="target size (default 256)")
    p.add_argument("--n", dest="n_show", type=int, default=8, help="images to show")
    p.add_argument("--count", dest="n", type=int, default=None,
                   help="number of images to generate (built-in data)")
    p.add_argument("--seed", type=int, default=None, help="seed (built-in data)")
    p.add_argument("-o", "--output", help="PNG path for show")
    p.add_argument("--skip-unpaired", action="store_true",
                   help="warn about images without a mask and leave them out")
    p.add_argument("--mask-suffix", help="folder loader: mask file suffix, e.g. _mask")
    p.add_argument("--no-normal", action="store_true", help="busi: leave out normal/ (empty masks)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--cache-dir", help="cache folder (default $UNET_FT_CACHE or ~/.cache/keras-unet-ft)")
    p.set_defaults(func=cmd_data)


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="quick", choices=["smoke", "quick", "paper"],
                   help="settings profile (default quick)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set finetune.epochs=10 (repeatable)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                   help="training precision (default auto: bf16 on AMX CPUs, fp16 on GPUs)")
    p.add_argument("--seed", type=int, help="the one seed of the study")
    p.add_argument("--verbose", action="store_true", help="Keras per-epoch output")


def config_from_args(args):
    from .config import load_config, parse_set

    overrides = parse_set(args.set)
    if getattr(args, "precision", None):
        overrides["study.precision"] = args.precision
    if getattr(args, "seed", None) is not None:
        overrides["study.seed"] = args.seed
    if getattr(args, "pretrain", None):
        overrides["data.pretrain"] = args.pretrain
    if getattr(args, "target", None):
        overrides["data.targets"] = list(args.target)
    if getattr(args, "plans", None):
        overrides["study.plans"] = args.plans
    if getattr(args, "model", None):
        overrides["model.kind"] = args.model
    return load_config(args.profile, overrides)


def cmd_pretrain(args) -> int:
    from .study import _load_pretrain_data, write_provenance
    from .training import get_strategy, pretrain, resolve_precision

    cfg = config_from_args(args)
    precision = resolve_precision(cfg.study.precision)
    import pathlib

    out = pathlib.Path(args.out)
    write_provenance(cfg, out, precision)
    ds = _load_pretrain_data(cfg)
    path = pretrain(cfg, ds, out / "pretrained", precision=precision,
                    verbose=1 if args.verbose else 0, force=args.force_pretrain,
                    strategy=get_strategy(args.distribute))
    print(f"pretrained model: {path}")
    return 0


def cmd_study(args) -> int:
    from .study import run_study
    from .training import set_threads

    set_threads(args.threads)
    if args.config:
        import json
        import pathlib

        from .config import config_from_dict

        data = json.loads(pathlib.Path(args.config).read_text())
        cfg = config_from_dict(data.get("config", data))
    else:
        cfg = config_from_args(args)
    out = run_study(cfg, args.out, force=args.force, retry_failed=args.retry_failed,
                    shard=args.shard, distribute=args.distribute,
                    verbose=1 if args.verbose else 0, force_pretrain=args.force_pretrain,
                    aggregate=not args.no_aggregate, progress=not args.quiet)
    print(f"results: {out} (REPORT.md, results.csv, summary.csv, stats.csv)")
    return 0


def cmd_report(args) -> int:
    from .results import aggregate

    aggregate(args.out, figures=not args.no_figures)
    print(f"wrote {args.out}/REPORT.md")
    return 0


def _register_study(sub) -> None:
    p = sub.add_parser("pretrain", help="pretrain the U-Net on salient-object images")
    add_config_args(p)
    p.add_argument("--dataset", dest="pretrain", help="synth_salient (default) or xpie:ROOT")
    p.add_argument("--model", choices=["unet", "xunet", "vunet"])
    p.add_argument("--out", default="results", help="results folder (default results/)")
    p.add_argument("--force-pretrain", action="store_true", help="retrain even if a model exists")
    p.add_argument("--distribute", choices=["mirrored"], help="tf.distribute strategy")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("study", help="the fine-tuning study: targets x folds x plans")
    add_config_args(p)
    p.add_argument("--target", action="append",
                   help="target dataset (repeatable): sim_bus, synth_cxr, busi:ROOT, ...")
    p.add_argument("--pretrain", help="pretraining dataset (synth_salient or xpie:ROOT)")
    p.add_argument("--plans", help="plan set (paper, tuffc, cheng) or comma-separated plans")
    p.add_argument("--model", choices=["unet", "xunet", "vunet"])
    p.add_argument("--out", default="results", help="results folder (default results/)")
    p.add_argument("--force", action="store_true", help="recompute finished runs")
    p.add_argument("--retry-failed", action="store_true", help="redo runs that failed")
    p.add_argument("--force-pretrain", action="store_true", help="retrain the pretrained model")
    p.add_argument("--shard", help="I/N: run a deterministic share of the runs")
    p.add_argument("--distribute", choices=["mirrored"], help="tf.distribute strategy")
    p.add_argument("--config", help="take the whole config from a config.json (e.g. of a "
                   "results folder) instead of --profile/--set")
    p.add_argument("--threads", type=int, help="TensorFlow intra-op threads")
    p.add_argument("--no-aggregate", action="store_true",
                   help="do not write results.csv/REPORT.md (other shards still running)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("report", help="(re)write results tables, figures and REPORT.md")
    p.add_argument("out", help="results folder")
    p.add_argument("--no-figures", action="store_true")
    p.set_defaults(func=cmd_report)


_EXTRA_COMMANDS = [_register_data, _register_study]


def main(argv=None) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        print(f"unet-ft: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
