"""What a results folder was made with: config, package versions, git revision (config.json)."""

from __future__ import annotations

import pathlib
import platform
import subprocess
import sys
import time
from typing import Dict, Optional

from . import __version__
from .config import Config
from .io import atomic_write_text
from .layout import CONFIG

VERSIONED_PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "jax", "jaxlib", "torch", "numpy",
                      "scipy", "scikit-image", "scikit-learn", "tf-keras-vis", "matplotlib")


def git_revision() -> Optional[str]:
    """``HEAD`` of the package's checkout (``+dirty`` with uncommitted changes), or None."""
    try:
        here = pathlib.Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
        rev = out.stdout.strip()
        if out.returncode != 0 or not rev:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True,
                               text=True, timeout=5).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> Dict[str, str]:
    from importlib import metadata

    import keras

    out = {"python": sys.version.split()[0], "platform": platform.platform(),
           "keras_unet_ft": __version__, "keras_backend": keras.backend.backend()}
    for pkg in VERSIONED_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_provenance(cfg: Config, out, precision: str) -> None:
    """Write ``<out>/config.json``: the merged config, versions, git revision, precision."""
    import json

    atomic_write_text(pathlib.Path(out) / CONFIG, json.dumps({
        "config": cfg.to_dict(), "versions": versions(), "git_revision": git_revision(),
        "precision": precision, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }, indent=1, sort_keys=True))
