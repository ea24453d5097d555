"""One registry for every dataset: real loaders and built-in generators.

``load_dataset("busi", root="/data/BUSI")`` and ``load_dataset("busi:/data/BUSI")``
read a real dataset; ``load_dataset("sim_bus", n=163, seed=0)`` makes built-in data.
Either way the result is a :class:`~keras_unet_ft.data.dataset.Dataset` of the
requested size, cached as ``.npz`` (keyed by name, root, size, options and the
preprocessing version) so a second load is fast.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from typing import Callable, Dict, Optional

from .dataset import Dataset
from .preprocess import cache_dir, cache_key, load_cached, save_cached

log = logging.getLogger("keras_unet_ft.data")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    kind: str           # "real" or "builtin"
    description: str
    layout: str         # what the loader expects on disk (real) or the defaults (builtin)
    loader: Callable


def _real(name, module, description):
    def loader(root=None, size=(256, 256), **kw):
        import importlib

        mod = importlib.import_module(f".loaders.{module}", __package__)
        return mod.load(root, size=size, **kw)

    import importlib

    layout = importlib.import_module(f".loaders.{module}", __package__).LAYOUT
    return DatasetInfo(name, "real", description, layout, loader)


def _builtin(name, module, func, description, layout):
    def loader(root=None, size=(256, 256), n=None, seed=0, **kw):
        import importlib

        if root is not None:
            raise ValueError(f"{name} is built-in data; it takes no folder (got {root!r})")
        if size[0] != size[1]:
            raise ValueError(f"{name} makes square images; got size {size}")
        gen = getattr(importlib.import_module(f".synthetic.{module}", __package__), func)
        kwargs = dict(size=size[0], seed=seed, **kw)
        if n is not None:
            kwargs["n"] = n
        return gen(**kwargs)

    return DatasetInfo(name, "builtin", description, layout, loader)


def _registry() -> Dict[str, DatasetInfo]:
    entries = [
        _builtin("sim_bus", "ultrasound", "sim_bus",
                 "simulated breast ultrasound, lesion masks (default ultrasound target)",
                 "built in: n=163 images, 110/53 benign/malignant-like"),
        _builtin("synth_salient", "salient", "synth_salient",
                 "synthetic grayscale natural scenes with one salient object (pretraining)",
                 "built in: n=10000 images"),
        _builtin("synth_cxr", "cxr", "synth_cxr",
                 "synthetic chest X-ray, both lungs as the mask (default X-ray target)",
                 "built in: n=240 images"),
        _real("xpie", "xpie", "XPIE natural images with salient-object masks (pretraining)"),
        _real("udiat_b", "udiat_b", "UDIAT breast ultrasound Dataset B (163 images)"),
        _real("busi", "busi", "BUSI breast ultrasound (benign/malignant/normal)"),
        _real("jsrt_scr", "jsrt_scr", "JSRT chest X-ray with SCR lung masks (247 images)"),
        _real("montgomery", "montgomery", "Montgomery County chest X-ray with lung masks"),
        _real("folder", "folder", "any images/ + masks/ folder pair (your own modality)"),
    ]
    entries.append(_builtin("sim_lus", "lung", "sim_lus",
                            "simulated lung ultrasound, rib masks (Cheng & Lam)",
                            "built in: n=500 images (5 folds leave 400 to train)"))
    entries.append(_builtin("sim_bus_must", "must", "sim_bus_must",
                            "sim_bus phantoms imaged by pymust (simus + DAS); optional [sim] "
                            "extra, minutes per image",
                            "built in (needs pymust): n=8 images"))
    return {e.name: e for e in entries}


REGISTRY = _registry()


#: imaging modality of each dataset (the report compares a target with the paper's
#: finding for its modality); a ``folder`` of your own is ``other``
MODALITY = {"sim_bus": "ultrasound", "sim_bus_must": "ultrasound", "udiat_b": "ultrasound",
            "busi": "ultrasound", "sim_lus": "ultrasound", "synth_cxr": "xray",
            "jsrt_scr": "xray", "montgomery": "xray"}


def modality(spec: str) -> str:
    """``ultrasound``, ``xray`` or ``other`` for a dataset spec (``NAME`` or ``NAME:ROOT``)."""
    return MODALITY.get(parse_spec(spec)[0], "other")


def dataset_names():
    return sorted(REGISTRY)


def parse_spec(spec: str, root=None):
    """``"busi:/data/BUSI"`` -> ``("busi", "/data/BUSI")``; a plain name keeps ``root``."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"a dataset is given as NAME or NAME:ROOT, got {spec!r}")
    name, sep, path = spec.partition(":")
    if name not in REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())}")
    if sep:
        if root is not None and str(root) != path:
            raise ValueError(f"dataset {spec!r} names a root and root={root!r} names another")
        root = path
    return name, root


def load_dataset(spec: str, root=None, size=256, cache: bool = True,
                 cache_directory: Optional[str] = None, **options) -> Dataset:
    """Load a real dataset or make a built-in one, at ``size`` x ``size``.

    Args:
        spec: ``NAME`` or ``NAME:ROOT`` (see :func:`dataset_names`).
        root: folder of a real dataset (alternative to ``NAME:ROOT``).
        size: target height and width (int or ``(h, w)``).
        cache: read / write the ``.npz`` cache.
        cache_directory: where the cache lives (default ``$UNET_FT_CACHE`` or
            ``~/.cache/keras-unet-ft``).
        **options: loader options (``n``, ``seed`` for built-in data;
            ``include_normal``, ``mask_suffix``, ``skip_unpaired``, ... for loaders).

    Examples:
        >>> ds = load_dataset("sim_bus", n=4, size=64, cache=False)
        >>> ds.images.shape
        (4, 64, 64, 1)
    """
    name, root = parse_spec(spec, root)
    info = REGISTRY[name]
    size = (int(size), int(size)) if isinstance(size, (int, float)) else tuple(int(s) for s in size)
    if info.kind == "real":
        if root is None:
            raise FileNotFoundError(f"{name} is a real dataset: give its folder, e.g. "
                                    f"{name}:/path/to/{name}. Expected layout:\n{info.layout}")
        root = str(pathlib.Path(root).expanduser().resolve())
    progress = options.pop("progress", True)
    key = cache_key(name=name, root=root, size=size, options=options)
    path = cache_dir(cache_directory) / f"{name}-{size[0]}x{size[1]}-{key}.npz"
    if cache:
        hit = load_cached(path, key)
        if hit is not None:
            log.info("%s: loaded from cache %s", name, path)
            return hit
    ds = info.loader(root=root, size=size, progress=progress, **options)
    log.info("%s", ds.summary())
    if cache:
        save_cached(path, key, ds)
    return ds
