"""``unet-ft data``: list, prepare, show and measure datasets."""

from __future__ import annotations

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
    ds = load_dataset(args.dataset, size=args.size, cache=not args.no_cache,
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
    p.add_argument("action", choices=["list", "prepare", "show", "stats"],
                   help="stats: image statistics of a lesion set beside real breast ultrasound")
    p.add_argument("dataset", nargs="?", help="NAME or NAME:ROOT, e.g. busi:/data/BUSI")
    p.add_argument("--size", type=_positive(int), default=256, help="target size (default 256)")
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
