"""The ``unet-ft`` command line, one module per group of commands:

- :mod:`.plans`: ``plans``;
- :mod:`.data`: ``data``;
- :mod:`.study`: ``run`` (the whole job, also ``experiments/run_all.py``), ``pretrain``,
  ``study``, ``report``;
- :mod:`.use`: ``finetune``, ``advise``, ``predict``, ``export``;
- :mod:`.common`: options every command shares and :func:`~.common.run_command`, which turns
  an exception into an exit code (:mod:`keras_unet_ft.exitcodes`).

Only the standard library, ``config`` and ``exitcodes`` are imported here, so that
``unet-ft --help`` and ``--version`` answer at once; each command imports what it needs
(Keras, TensorFlow, the pipeline) when it runs, after :func:`~.common.start_backend`. A
command's ``check`` (:func:`~.common.check_inputs`: the config, the dataset specs, the plans)
runs before that, so a bad input is refused in a moment and before anything is written.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .. import __version__
from ..exitcodes import EXIT_BAD_INPUT
from . import data, plans, study, use
from .common import (add_config_args, config_from_args, io_fault, overrides_from_args,
                     run_command, start_backend)
from .multiworker import _peer_timeout, supervise_multiworker
from .plans import matrix_text, plans_doc

__all__ = ["add_config_args", "build_parser", "config_from_args", "io_fault", "main",
           "matrix_text", "overrides_from_args", "plans_doc", "run_command", "start_backend"]


def build_parser(prog: str = "unet-ft") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Which layers of a pretrained U-Net should you fine-tune?")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (plans, data, study, use):
        group.register(sub)
    if prog == "run_all":   # experiments/run_all.py: its usage line names the script alone
        sub.choices["run"].prog = "experiments/run_all.py"
    return parser


def main(argv=None, prog: str = "unet-ft") -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = build_parser(prog)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if (getattr(args, "distribute", None) == "multiworker" and args.command == "finetune"
            and not os.environ.get("UNET_FT_PEERS_READY_FD")):
        try:
            return supervise_multiworker(argv, _peer_timeout())
        except ValueError as e:
            print(f"{prog}: error: {e}", file=sys.stderr)
            return EXIT_BAD_INPUT
    check = getattr(args, "check", None)
    if check is not None:   # bad inputs fail at once, before the backend's seconds of import
        code = run_command(check, args, prog)
        if code:
            return code
    start_backend(prog, verbose=bool(getattr(args, "verbose", False)))
    return run_command(args.func, args, prog)
