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


_EXTRA_COMMANDS = [_register_data]


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
