"""What the commands of ``unet-ft`` share: config options, the backend start, and how an
exception becomes an exit code (:func:`run_command`)."""

from __future__ import annotations

import argparse
import pathlib
import sys
import traceback

from .. import __version__
from ..config import ENCODER_NAMES, MODEL_KINDS, PRECISIONS, PROFILES, load_config, parse_set
from ..exitcodes import EXIT_BAD_INPUT, EXIT_ERROR, UserError

#: what a bad input raises, beside :class:`~keras_unet_ft.exitcodes.UserError`: a missing or
#: misplaced file or folder (exit 2, its message alone)
BAD_INPUT_ERRORS = (UserError, FileNotFoundError, FileExistsError, IsADirectoryError,
                    NotADirectoryError)


def run_command(func, args, prog: str = "unet-ft") -> int:
    """Run ``func(args)`` and turn what it raises into an exit code and a message: a bad
    input (:data:`BAD_INPUT_ERRORS`) -> its message, exit 2; an I/O fault (read-only folder,
    full disk) -> one sentence, exit 1; anything else is a bug -> the traceback, a request
    for a bug report, exit 1.

    Examples:
        >>> from keras_unet_ft.exitcodes import UserError
        >>> def bad(args):
        ...     raise UserError("finetune.epochs: expected a whole number, got 'x'")
        >>> run_command(bad, None)
        2
    """
    try:
        return int(func(args) or 0)
    except BAD_INPUT_ERRORS as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:   # read-only folder, disk full, ...: one sentence, exit 1
        print(f"{prog}: error: {io_fault(e)}", file=sys.stderr)
        return EXIT_ERROR
    except Exception:   # noqa: BLE001 - a bug: say so, with everything needed to report it
        traceback.print_exc()
        print(f"{prog}: internal error (a bug in keras-unet-ft {__version__}, not in your "
              "input): please report it with the command line and the traceback above",
              file=sys.stderr)
        return EXIT_ERROR


def _positive(kind):
    """An argparse type: a finite number of ``kind`` (int or float) above 0; the error
    repeats the bad value."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
        return value
    parse.__name__ = kind.__name__
    return parse


def model_kind(text: str) -> str:
    """``--model``: unet, xunet, vunet, file:PATH or encoder:NAME (checked as the config
    checks ``model.kind``; a file's contents are checked later, before anything is written)."""
    from ..config import _model_kind

    try:
        return _model_kind(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


MODEL_HELP = (f"network: {', '.join(MODEL_KINDS)} (the paper's U-Net, Cheng & Lam's X-Unet and "
              "V-Unet), file:PATH (your own .keras network) or encoder:NAME (a U-Net on a "
              f"keras.applications backbone: {', '.join(ENCODER_NAMES)})")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="unet", type=model_kind, metavar="MODEL",
                   help=MODEL_HELP + " (default: unet)")
    p.add_argument("--size", type=_positive(int), default=256,
                   help="input height and width (default 256)")
    p.add_argument("--base-filters", type=int, default=64, help="filters of the first block")
    p.add_argument("--depth", type=int, default=4, help="number of max-pools (default 4)")


def _build_from_args(args):
    """The network of ``--model``, ``--size``, ``--base-filters``, ``--depth``, for its
    structure: V-Unet and ``encoder:NAME`` without encoder weights (nothing is read or
    downloaded), ``file:PATH`` rebuilt at ``--size`` (with its weights)."""
    from ..config import model_family
    from ..model import build_model

    family = model_family(args.model)
    if family == "encoder":
        from ..encoders import build_encoder_unet

        return build_encoder_unet(args.model.partition(":")[2], (args.size, args.size, 1),
                                  args.base_filters, encoder_weights=None)
    if family == "file":
        from ..usermodel import load_user_model

        return load_user_model(args.model.partition(":")[2], args.size)
    kwargs = {"input_shape": (args.size, args.size, 1)}
    if args.model in ("unet", "xunet"):
        kwargs.update(base_filters=args.base_filters, depth=args.depth)
    else:
        kwargs["encoder_weights"] = None
    return build_model(args.model, **kwargs)


def add_config_args(p: argparse.ArgumentParser) -> None:
    # no argparse choices: a typo gets one line with the closest profile (config.check_profile)
    p.add_argument("--profile", default="quick", metavar="PROFILE",
                   help=f"settings profile: {', '.join(PROFILES)} (default quick)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set finetune.epochs=10 (repeatable)")
    p.add_argument("--precision", choices=list(PRECISIONS),
                   help="training precision (default auto: bf16 on AMX CPUs, fp16 on GPUs)")
    p.add_argument("--seed", type=int, help="the one seed of the study")
    p.add_argument("--verbose", action="store_true", help="Keras per-epoch output")
    p.add_argument("--no-cache", action="store_true",
                   help="neither read nor write the dataset cache")
    p.add_argument("--max-minutes", type=_positive(float), metavar="M",
                   help="stop cleanly before M minutes (exit code 4); run again to continue")
    p.add_argument("--tensorboard", metavar="DIR",
                   help="TensorBoard event files of pretraining and every run under DIR "
                        "(needs the tensorboard extra)")


def config_from_args(args):
    return load_config(args.profile, overrides_from_args(args))


def overrides_from_args(args) -> dict:
    """``--set`` and the named options as config overrides."""
    overrides = parse_set(args.set)
    if getattr(args, "precision", None):
        overrides["study.precision"] = args.precision
    if getattr(args, "seed", None) is not None:
        overrides["study.seed"] = args.seed
    if getattr(args, "pretrain", None):
        overrides["data.pretrain"] = args.pretrain
    if getattr(args, "target", None):
        # finetune / advise take one --target (a string), study / run_all several (a list)
        overrides["data.targets"] = ([args.target] if isinstance(args.target, str)
                                     else list(args.target))
    if getattr(args, "plans", None):
        overrides["study.plans"] = args.plans
    if getattr(args, "model", None):
        overrides["model.kind"] = args.model
    if getattr(args, "tensorboard", None):
        overrides["study.tensorboard"] = args.tensorboard
    if getattr(args, "no_cache", False):
        overrides["data.cache"] = "false"
    return overrides


def check_dataset(spec: str) -> None:
    """A dataset spec's syntax before anything is read: a known loader, its options and their
    values (:mod:`keras_unet_ft.data.registry`); a missing folder is found when it is read."""
    from ..data.registry import TARGET_OPTIONS, resolve_options, split_spec

    name, _, options = split_spec(spec)
    resolve_options(name, {k: v for k, v in options.items() if k not in TARGET_OPTIONS}, {})


def check_model_file(kind: str) -> None:
    """``file:PATH``: the file is there and a ``.keras`` file (what it holds is checked when
    the network is built, still before anything is written)."""
    from ..config import model_family

    if model_family(kind) != "file":
        return
    path = pathlib.Path(kind.partition(":")[2])
    if not path.is_file():
        raise UserError(f"model.kind={kind}: {path} is not a file; expected a Keras 3 model "
                        "saved with model.save('net.keras')")
    if path.suffix != ".keras":
        raise UserError(f"model.kind={kind}: {path.name} is not a .keras file; expected a "
                        "Keras 3 model saved with model.save('net.keras') (convert an .h5 or "
                        "SavedModel by loading it in Keras and saving it as .keras)")


def check_inputs(cfg, plans=(), plan_sets=(), targets=None, pretrain: bool = True,
                 distribute=None) -> None:
    """What a command can check before Keras' backend is imported (seconds), so that a bad
    input fails at once and before anything is written: the dataset specs (``targets``,
    default the config's, and ``data.pretrain`` when ``pretrain``), the plans (``plans``
    and the plan sets ``plan_sets``) and, for an explicit ``study.trainer``, that it can
    train every plan. The config itself (profile, ``--set``, the rules between fields) is
    checked when it is made."""
    from ..data.study_data import check_targets
    from ..plans import Plan, check_trainer, plan_set

    check_model_file(cfg.model.kind)
    targets = list(cfg.data.targets if targets is None else targets)
    for spec in targets + ([cfg.data.pretrain] if pretrain else []):
        check_dataset(spec)
    check_targets(targets)
    names = [str(Plan.parse(p)) for p in plans]
    names += [p for s in plan_sets for p in plan_set(s)]
    if cfg.study.trainer != "auto" and not distribute:   # auto: settled with the backend
        check_trainer(names, cfg.study.trainer)


def start_backend(prog: str, verbose: bool = False) -> None:
    """Before a command's first heavy import: exit 2 with the fix when Keras' backend is not
    installed, then import it with its start-up notices hidden (``--verbose`` shows them)."""
    from ..runtime import import_backend, require_installed_backend

    require_installed_backend(prog)
    import_backend(verbose=verbose)


def io_fault(e: OSError) -> str:
    """One sentence for an I/O fault: what failed, on which path, and what to do."""
    import errno

    where = f" {e.filename}" if getattr(e, "filename", None) else ""
    fix = {errno.EROFS: "the file system is read-only: give a writable folder",
           errno.EACCES: "no permission: give a folder you may write to",
           errno.ENOSPC: "the disk is full: free space (finished runs are kept) and run again",
           }.get(e.errno, "check the path and run again (finished runs are kept)")
    return f"{e.strerror or e}{where}: {fix}"
