"""``python -m keras_unet_ft.cli``: the ``unet-ft`` command (each multiworker worker runs so)."""

import sys

from . import main

sys.exit(main())
