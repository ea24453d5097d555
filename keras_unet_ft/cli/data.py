"""``unet-ft data``: list, prepare, show and measure datasets."""

from __future__ import annotations

import sys

from ..exitcodes import UserError
from .common import _positive


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
    from ..data.registry import REGISTRY, load_dataset, loader_options
    from ..data.show import show_grid

    if args.action == "list":
        print("A dataset is NAME, NAME:ROOT, or either with ?KEY=VALUE&KEY=VALUE loader options,\n"
              "e.g. busi:/data/BUSI?include_normal=false&n=163\n")
        for name in sorted(REGISTRY):
            info = REGISTRY[name]
            print(f"{name:<14} {info.kind:<8} {info.description}")
            print("\n".join("    " + line for line in info.layout.splitlines()))
            try:
                opts = loader_options(name)
            except ImportError as e:  # an optional extra is missing
                print(f"    options: (unavailable: {e})")
                continue
            print("    options: " + ", ".join(f"{k}={v}" for k, v in opts.items()))
        return 0
    if not args.dataset:
        raise UserError(f"data {args.action} needs a dataset, e.g. sim_bus or busi:/data/BUSI")
    if args.action == "realism":
        return cmd_realism(args)
    ds = load_dataset(args.dataset, size=args.size or 256, cache=not args.no_cache,
                      cache_directory=args.cache_dir, **_loader_options(args))
    print(ds.summary())
    if args.action == "stats":
        print(realism_table(ds))
        return 0
    if args.action == "show":
        out = args.output or f"{ds.name}_grid.png"
        show_grid(ds, n=args.n_show, path=out)
        print(f"wrote {out}")
    return 0


def pretrained_model_path(given: str) -> str:
    """A ``model.keras`` file, a folder holding one, or a results folder (its
    ``pretrained/model.keras``)."""
    import pathlib

    from ..layout import WEIGHTS, pretrained_folder

    path = pathlib.Path(given)
    for candidate in (path, path / WEIGHTS, pretrained_folder(path, "unet").model):
        if candidate.is_file():
            return str(candidate)
    raise UserError(f"--pretrained {given}: no {WEIGHTS} there (expected a model.keras file, a "
                    "folder holding one, or a results folder with pretrained/model.keras; "
                    "`unet-ft run --profile quick --out DIR` makes one)")


def cmd_realism(args) -> int:
    """``unet-ft data realism REAL --pretrained MODEL``: sim -> real transfer on real images."""
    from ..data.registry import load_dataset
    from ..transfer import measure_transfer, model_size
    from .common import start_backend

    if not args.pretrained:
        raise UserError("data realism needs --pretrained MODEL (a study's "
                        "pretrained/model.keras or its results folder)")
    model_path = pretrained_model_path(args.pretrained)
    start_backend("unet-ft")
    size = model_size(model_path)
    if args.size is not None and args.size != size:
        raise UserError(f"--size {args.size}: the model {model_path} takes {size} x {size} "
                        "images; leave --size out (the data is loaded at the model's size)")
    cache = dict(cache=not args.no_cache, cache_directory=args.cache_dir)
    opts = {k: v for k, v in _loader_options(args).items() if k not in ("n", "seed")}
    real = load_dataset(args.dataset, size=size, **cache, **opts)
    sims = [load_dataset(args.simulated, size=size, n=args.sim_count, seed=args.sim_seed + r,
                         **cache) for r in range(args.repeats)]
    from ..runtime import Diverged

    try:
        result = measure_transfer(model_path, real, sims, epochs=args.epochs, seed=args.seed or 0)
    except Diverged as e:
        print(f"unet-ft data realism: {e}", file=sys.stderr)
        return 1
    result.real = args.dataset
    print(result.text())
    if args.json:
        from ..io import write_json

        write_json(args.json, result.to_dict())
        print(f"wrote {args.json}")
    return 0


def realism_table(ds) -> str:
    """``unet-ft data stats``: median [IQR] of each image statistic beside real breast US."""
    from ..data.synthetic.realism import REAL_BREAST_US, compare, image_statistics, summarize

    got = summarize(image_statistics(x, m) for x, m in zip(ds.images, ds.masks))
    inside = compare(got)
    lines = [f"{'statistic':<11} {'this set: median [IQR]':<28} {'real breast US':<24} inside",
             "-" * 72]
    for k, (lo, med, hi) in got.items():
        real = REAL_BREAST_US.get(k)
        ref = f"{real[1]:.3g} [{real[0]:.3g}-{real[2]:.3g}]" if real else "-"
        mark = "" if k not in inside else ("yes" if inside[k] else "NO")
        lines.append(f"{k:<11} {f'{med:.3g} [{lo:.3g}-{hi:.3g}]':<28} {ref:<24} {mark}")
    lines.append("(images whose mask has >= 20 pixels; the real set: 163 breast-US images with a "
                 "lesion at 256 x 256 - measure at --size 256 to compare)")
    return "\n".join(lines)


def register(sub) -> None:
    p = sub.add_parser("data", help="list, prepare (load/generate + cache) or show datasets")
    p.add_argument("action", choices=["list", "prepare", "show", "stats", "realism"],
                   help="stats: image statistics of a lesion set beside real breast ultrasound; "
                        "realism: how far a net fine-tuned on a simulated set segments these "
                        "real images (sim -> real transfer; needs --pretrained)")
    p.add_argument("dataset", nargs="?", help="NAME or NAME:ROOT, e.g. busi:/data/BUSI")
    p.add_argument("--size", type=_positive(int), default=None,
                   help="target size (default 256; realism: the model's input size)")
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
    g = p.add_argument_group("realism")
    g.add_argument("--pretrained", help="pretrained model.keras, or a results folder")
    g.add_argument("--simulated", default="sim_bus",
                   help="the simulated training set (default sim_bus)")
    g.add_argument("--sim-count", type=_positive(int), default=163,
                   help="simulated images (default 163, like UDIAT Dataset B)")
    g.add_argument("--sim-seed", type=int, default=1,
                   help="seed of the first simulated set (default 1; then 2, 3, ...)")
    g.add_argument("--repeats", type=_positive(int), default=3,
                   help="simulated sets drawn, one net each, averaged (default 3)")
    g.add_argument("--epochs", type=_positive(int), default=10,
                   help="fine-tuning epochs of each net (default 10)")
    g.add_argument("--json", help="also write the numbers to this JSON file")
    p.set_defaults(func=cmd_data)
