#!/usr/bin/env python
"""The whole study in one command: data -> pretraining -> fine-tuning grid -> figures -> report.

    python experiments/run_all.py                    # the quick profile (CPU-sized)
    python experiments/run_all.py --profile smoke    # a few minutes
    python experiments/run_all.py --profile paper    # the paper's settings (GPU)
    python experiments/run_all.py --advise           # a fast answer: probe + successive halving
    python experiments/run_all.py --pretrain xpie:/data/XPIE \\
        --target udiat_b:/data/DatasetB --target jsrt_scr:/data/JSRT

The same as ``unet-ft run`` (``unet-ft run --help`` lists the options). An interrupted run
resumes where it stopped (finished runs are skipped).
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from keras_unet_ft import cli  # noqa: E402


def main(argv=None) -> int:
    """``unet-ft run ARGV`` under the name ``run_all``."""
    return cli.main(["run", *(sys.argv[1:] if argv is None else argv)], prog="run_all")


if __name__ == "__main__":
    sys.exit(main())
