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


_EXTRA_COMMANDS = []


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        print(f"unet-ft: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
