"""One registry for every dataset: real loaders and built-in generators.

``load_dataset("busi", root="/data/BUSI")`` and ``load_dataset("busi:/data/BUSI")``
read a real dataset; ``load_dataset("sim_bus", n=163, seed=0)`` makes built-in data.
Either way the result is a :class:`~keras_unet_ft.data.dataset.Dataset` of the
requested size, cached as ``.npz`` (keyed by name, root, size, options and the
preprocessing version) so a second load is fast.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import inspect
import logging
import os
import pathlib
from typing import Dict, Optional, Tuple

import numpy as np

from ..exitcodes import UserError
from ..layout import SAFE_NAME
from .dataset import Dataset
from .loaders._common import OptionHint
from .preprocess import cache_dir, cache_key, load_cached, save_cached

log = logging.getLogger("keras_unet_ft.data")
#: cache files whose dataset this process has already described (each fact is said once)
_ANNOUNCED: set = set()


#: imaging modalities a dataset may be (the report compares a target with the paper's finding
#: for its modality); a ``folder`` of your own is ``other`` unless its spec says
#: ``?modality=``
MODALITIES = ("ultrasound", "xray", "other")
#: options of every target spec that label it and are no loader's: ``name`` (its name in
#: results and REPORT.md) and ``modality`` (which of the paper's findings it is checked on)
TARGET_OPTIONS = ("name", "modality")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """One dataset's record: every fact about it beside its loader's own code."""
    name: str
    kind: str           # "real" or "builtin"
    modality: str       # one of MODALITIES (required: no dataset is silently "other")
    description: str
    layout: str         # what the loader expects on disk (real) or the defaults (builtin)
    module_name: str    # loaders.<module> (real) or synthetic.<module> (builtin)
    func: str = "load"  # the loader / generator function in that module

    def __post_init__(self):
        if self.kind not in ("real", "builtin"):
            raise ValueError(f"dataset {self.name}: kind {self.kind!r}; expected real or builtin")
        if self.modality not in MODALITIES:
            raise ValueError(f"dataset {self.name}: modality {self.modality!r}; expected one "
                             f"of {', '.join(MODALITIES)}")

    def module(self):
        """The loader's (or generator's) module, imported on first use (optional extras)."""
        sub = "loaders" if self.kind == "real" else "synthetic"
        return importlib.import_module(f".{sub}.{self.module_name}", __package__)

    def generator(self):
        return getattr(self.module(), self.func)

    def loader(self, root=None, size=(256, 256), **kw) -> Dataset:
        if self.kind == "real":
            return self.module().load(root, size=size, **kw)
        if root is not None:
            raise UserError(f"{self.name} is built-in data; it takes no folder (got {root!r})")
        if size[0] != size[1]:
            raise UserError(f"{self.name} makes square images; got size {size}")
        kw = {k: v for k, v in kw.items() if v is not None or k != "n"}
        return self.generator()(size=size[0], **kw)


def _real(name, modality, module, description):
    layout = importlib.import_module(f".loaders.{module}", __package__).LAYOUT
    return DatasetInfo(name, "real", modality, description, layout, module)


def _builtin(name, modality, module, func, description, layout):
    return DatasetInfo(name, "builtin", modality, description, layout, module, func)


def _registry() -> Dict[str, DatasetInfo]:
    """The table: one row a dataset (adding one is a row here, its module and its test)."""
    entries = [
        # built in:  name, modality, module in synthetic/, its function, description, layout
        _builtin("sim_bus", "ultrasound", "ultrasound", "sim_bus",
                 "simulated breast ultrasound as real images look (fat lobules, shadows, "
                 "scanner borders), lesion masks (default ultrasound target)",
                 "built in: n=163 images, 110/53 benign/malignant-like"),
        _builtin("sim_bus_simple", "ultrasound", "ultrasound", "sim_bus_simple",
                 "the first sim_bus: the lesion is the only dark region (comparison)",
                 "built in: n=163 images, 110/53 benign/malignant-like"),
        _builtin("synth_salient", "other", "salient", "synth_salient",
                 "synthetic grayscale natural scenes with one salient object (pretraining)",
                 "built in: n=10000 images"),
        _builtin("synth_cxr", "xray", "cxr", "synth_cxr",
                 "synthetic chest X-ray, both lungs as the mask (default X-ray target)",
                 "built in: n=240 images"),
        _builtin("sim_lus", "ultrasound", "lung", "sim_lus",
                 "simulated lung ultrasound, rib masks (Cheng & Lam)",
                 "built in: n=500 images (5 folds leave 400 to train)"),
        _builtin("sim_bus_must", "ultrasound", "must", "sim_bus_must",
                 "sim_bus phantoms imaged by pymust (simus + DAS); optional [sim] "
                 "extra, minutes per image",
                 "built in (needs pymust): n=8 images"),
        # real:  name, modality, module in loaders/ (its LAYOUT and load()), description
        _real("xpie", "other", "xpie", "XPIE natural images with salient-object masks "
                                       "(pretraining)"),
        _real("udiat_b", "ultrasound", "udiat_b", "UDIAT breast ultrasound Dataset B "
                                                  "(163 images)"),
        _real("busi", "ultrasound", "busi", "BUSI breast ultrasound (benign/malignant/normal)"),
        _real("busbra", "ultrasound", "busbra", "BUS-BRA breast ultrasound, 1,875 images, "
                                                "official patient-level folds (folds=official)"),
        _real("hc18", "ultrasound", "hc18", "HC18 fetal head ultrasound (outlines filled to "
                                            "head masks)"),
        _real("jsrt_scr", "xray", "jsrt_scr", "JSRT chest X-ray with SCR lung masks "
                                              "(247 images)"),
        _real("montgomery", "xray", "montgomery", "Montgomery County chest X-ray with lung "
                                                  "masks"),
        _real("folder", "other", "folder", "any images/ + masks/ folder pair (your own "
                                           "modality: ?modality=)"),
    ]
    return {e.name: e for e in entries}


REGISTRY = _registry()


def modality(spec: str) -> str:
    """``ultrasound``, ``xray`` or ``other`` for a dataset spec: its ``?modality=``, else the
    dataset's own (a ``folder`` of your own: ``other`` unless it says so).

    Examples:
        >>> modality("folder:/data/scans?modality=ultrasound")
        'ultrasound'
        >>> modality("synth_cxr")
        'xray'
    """
    name, _, options = split_spec(spec)
    return options.get("modality") or REGISTRY[name].modality


def dataset_names():
    return sorted(REGISTRY)


def split_spec(spec: str) -> Tuple[str, Optional[str], Dict[str, str]]:
    """``"busi:/data/BUSI?include_normal=false&n=163"`` -> ``("busi", "/data/BUSI", {...})``.

    A dataset spec is ``NAME``, ``NAME:ROOT`` or either followed by ``?KEY=VALUE&KEY=VALUE``
    with loader options (``unet-ft data list`` shows each loader's). Option values stay
    strings here; :func:`resolve_options` converts them to the loader's types.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"a dataset is given as NAME, NAME:ROOT or NAME:ROOT?KEY=VALUE, "
                        f"got {spec!r}")
    base, q, query = spec.strip().partition("?")
    name, sep, path = base.partition(":")
    if name not in REGISTRY:
        raise UserError(_unknown_dataset(name, spec))
    options: Dict[str, str] = {}
    if q:
        for item in query.split("&"):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or not key:
                raise UserError(f"bad option {item!r} in dataset {spec!r}: expected KEY=VALUE, "
                                f"e.g. {name}:ROOT?n=100")
            if key in options:
                raise UserError(f"option {key!r} given twice in dataset {spec!r}")
            options[key] = value.strip()
    if sep and not path:
        raise UserError(f"dataset {spec!r} has an empty folder after ':'")
    if options.get("modality", "other") not in MODALITIES:
        raise UserError(f"dataset {spec!r}: modality={options['modality']!r}; expected one of "
                        f"{', '.join(MODALITIES)}")
    if "name" in options and not SAFE_NAME.fullmatch(options["name"]):
        raise UserError(f"dataset {spec!r}: name={options['name']!r}; expected letters, "
                        "digits, '_', '.' or '-' (it names the target's folder)")
    return name, (path if sep else None), options


def _unknown_dataset(name: str, spec: str) -> str:
    """The error for an unknown dataset name, with the fix: ``folder:`` for a path, the
    closest names for a typo."""
    import difflib

    msg = f"unknown dataset {name!r} in {spec!r}"
    looks_like_path = ("/" in name or "\\" in name or name.startswith(("~", "."))
                       or pathlib.Path(name).expanduser().is_dir())
    if looks_like_path:
        return (f"{msg}: a folder of your own is given as folder:{spec} (images/ and masks/ "
                "inside it, matched by file name; `unet-ft data list` shows every layout)")
    close = difflib.get_close_matches(name, dataset_names(), n=3, cutoff=0.6)
    return (msg + (f"; did you mean {' or '.join(close)}?" if close else "")
            + f" Known: {', '.join(dataset_names())}")


def spec_with(spec: str, root=None, options: Optional[Dict[str, object]] = None) -> str:
    """``spec`` with ``options`` set, every other option kept in its place (a value of None
    removes the option); ``root`` is written in when the spec names none.

    Examples:
        >>> spec_with("folder:/d?modality=ultrasound&mask_suffix=_seg", None,
        ...           {"mask_suffix": "_mask"})
        'folder:/d?modality=ultrasound&mask_suffix=_mask'
        >>> spec_with("folder?name=x", "/d", {"skip_unpaired": "true"})
        'folder:/d?name=x&skip_unpaired=true'
    """
    base, q, query = spec.strip().partition("?")
    items = [i.strip() for i in query.split("&") if i.strip()] if q else []
    keys = [i.partition("=")[0].strip() for i in items]
    if ":" not in base and root is not None:
        base = f"{base}:{root}"
    for k, v in (options or {}).items():
        if k in keys:
            j = keys.index(k)
            if v is None:
                del items[j], keys[j]
            else:
                items[j] = f"{k}={v}"
        elif v is not None:
            items.append(f"{k}={v}")
            keys.append(k)
    return base + ("?" + "&".join(items) if items else "")


def parse_spec(spec: str, root=None):
    """``"busi:/data/BUSI"`` -> ``("busi", "/data/BUSI")``; a plain name keeps ``root``."""
    name, path, _ = split_spec(spec)
    if path is not None:
        if root is not None and str(root) != path:
            raise UserError(f"dataset {spec!r} names a root and root={root!r} names another")
        root = path
    return name, root


def _subset_options(n: Optional[int] = None, seed: int = 0):
    """The options every real dataset takes beside its loader's own: ``n`` images drawn with
    ``seed``, classes kept in proportion (:func:`stratified_subset`)."""


#: the subset options and their defaults
SUBSET_OPTIONS = {k: p.default for k, p in inspect.signature(_subset_options).parameters.items()}
#: words a spec gives for "no value" to an option whose type admits None
NONE_WORDS = ("none", "null")


def _option_parameters(name: str) -> Dict[str, inspect.Parameter]:
    """The loader's (or generator's) parameters a spec may set: its signature is the schema."""
    info = REGISTRY[name]
    fn = info.generator() if info.kind == "builtin" else info.module().load
    params = dict(inspect.signature(fn, eval_str=True).parameters)
    for k in ("root", "size", "progress"):
        params.pop(k, None)
    if info.kind == "real":
        params.update(inspect.signature(_subset_options, eval_str=True).parameters)
    return params


def loader_options(name: str) -> Dict[str, object]:
    """The options (and their defaults) the loader of ``name`` takes."""
    return {k: p.default for k, p in _option_parameters(name).items()}


def _option_type(p: inspect.Parameter):
    """The type an option's value is validated as: its annotation, else its default's type
    (an unannotated option whose default is None takes any value); ``none`` / ``null`` are
    None where the type admits None, and true / false are no numbers."""
    import typing

    from pydantic import BeforeValidator

    t = p.annotation
    if t is p.empty:
        t = typing.Any if p.default is None or p.default is p.empty else type(p.default)
    args = typing.get_args(t)
    admits_none = t is typing.Any or type(None) in args
    numeric = t in (int, float) or any(a in (int, float) for a in args)
    expected = "a whole number" if int in (t, *args) else "a number"

    def prepare(value):
        if isinstance(value, str):
            value = value.strip()
            if admits_none and value.lower() in NONE_WORDS:
                return None
        if numeric and isinstance(value, bool):
            raise ValueError(expected)
        return value

    return typing.Annotated[t, BeforeValidator(prepare)]


@functools.lru_cache(maxsize=None)
def _options_model(name: str):
    """A pydantic model of ``name``'s options, built from its loader's signature."""
    from pydantic import ConfigDict, create_model

    fields = {k: (_option_type(p), ... if p.default is p.empty else p.default)
              for k, p in _option_parameters(name).items()}
    return create_model(f"{name}_options", __config__=ConfigDict(extra="forbid",
                                                                  protected_namespaces=()),
                        **fields)


def _expected(error: dict) -> str:
    """What pydantic's error says was expected, in the words of the rest of the package."""
    kind = error["type"]
    if kind == "value_error":   # raised by _option_type's prepare
        return str(error.get("msg", "")).removeprefix("Value error, ")
    if kind == "literal_error":
        return f"one of {error.get('ctx', {}).get('expected', '')}".replace("'", "")
    for prefix, words in (("bool", "true or false"), ("int", "a whole number"),
                          ("float", "a number"), ("finite", "a finite number"),
                          ("string", "text"), ("missing", "a value (it has no default)")):
        if kind.startswith(prefix):
            return words
    return str(error.get("msg", kind)).lower()


def resolve_options(name: str, spec_options: Dict[str, str], given: Dict[str, object]) -> dict:
    """Spec options and keyword options merged, checked against the loader's signature and
    converted to its types (pydantic); errors name the option, its value and what is expected.

    Examples:
        >>> resolve_options("busi", {"include_normal": "no", "n": "40"}, {})
        {'include_normal': False, 'n': 40}
        >>> resolve_options("sim_bus", {"malignant_fraction": "0.5"}, {"seed": 3})
        {'seed': 3, 'malignant_fraction': 0.5}
    """
    import difflib

    from pydantic import ValidationError

    merged = dict(given)
    for k, v in spec_options.items():
        if k in merged and str(merged[k]) != v:
            raise UserError(f"{name}: option {k} is {v!r} in the spec and {merged[k]!r} "
                            "elsewhere")
        merged.setdefault(k, v)
    allowed = loader_options(name)
    bad = sorted(k for k in merged if k not in allowed)
    if bad:
        close = {k: difflib.get_close_matches(k, list(allowed), n=1, cutoff=0.6) for k in bad}
        hints = [c[0] if len(bad) == 1 else f"{c[0]} for {k}" for k, c in close.items() if c]
        raise UserError(f"{name}: unknown option(s) {bad}; {name} takes: "
                        f"{', '.join(f'{k}={v!r}' for k, v in allowed.items()) or 'none'}"
                        + (f". Did you mean {', '.join(hints)}?" if hints else ""))
    # a None from a caller leaves the option to its default, as if it were not given
    values = {k: v for k, v in merged.items() if v is not None}
    try:
        model = _options_model(name).model_validate(values)
    except ValidationError as e:
        raise UserError(f"{name}: " + "; ".join(
            f"option {err['loc'][0]}={merged.get(err['loc'][0], err.get('input'))!r}: "
            f"expected {_expected(err)}" for err in e.errors())) from None
    out = {k: (getattr(model, k) if k in values else None) for k in merged}
    if out.get("n") is not None and out["n"] < 1:
        raise UserError(f"{name}: option n={out['n']!r}: expected a positive number of images")
    return out


def content_signature(root) -> str:
    """Names, sizes and modification times of every file under ``root``, hashed: an
    edited, added or deleted file changes it (the cache is keyed by it)."""
    h = hashlib.sha256()
    root = pathlib.Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            if f.startswith("."):
                continue
            p = pathlib.Path(dirpath) / f
            try:
                st = p.stat()
            except OSError:
                continue
            h.update(f"{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def stratified_subset(ds: Dataset, n: int, seed: int = 0) -> Dataset:
    """``n`` images drawn with ``seed``, class proportions kept when the data have classes."""
    if n >= len(ds):
        if n > len(ds):
            log.warning("%s: n=%d but the dataset has %d images; all are used", ds.name, n,
                        len(ds))
        return ds
    idx = np.arange(len(ds))
    strata = ds.strata()
    if strata is not None and min(np.unique(strata, return_counts=True)[1]) >= 2 and n >= 2:
        from sklearn.model_selection import train_test_split

        try:
            chosen, _ = train_test_split(idx, train_size=n, random_state=seed, stratify=strata)
        except ValueError:  # a class too small for this n: plain random draw
            chosen = np.random.default_rng(seed).permutation(len(ds))[:n]
    else:
        chosen = np.random.default_rng(seed).permutation(len(ds))[:n]
    return ds.subset(np.sort(chosen))


def load_dataset(spec: str, root=None, size=256, cache: bool = True,
                 cache_directory: Optional[str] = None, **options) -> Dataset:
    """Load a real dataset or make a built-in one, at ``size`` x ``size``.

    Args:
        spec: ``NAME``, ``NAME:ROOT``, optionally with ``?KEY=VALUE&...`` loader options
            (see :func:`dataset_names`, ``unet-ft data list``).
        root: folder of a real dataset (alternative to ``NAME:ROOT``).
        size: target height and width (int or ``(h, w)``).
        cache: read / write the ``.npz`` cache (keyed by the files' names, sizes and
            modification times, so an edit or a deletion rebuilds it).
        cache_directory: where the cache lives (default ``$UNET_FT_CACHE`` or
            ``~/.cache/keras-unet-ft``).
        **options: loader options (``n``, ``seed`` for built-in data and for a seeded,
            class-stratified subset of real data; ``include_normal``, ``mask_suffix``,
            ``skip_unpaired``, ``classes``, ``strict`` ... for loaders).

    Examples:
        >>> ds = load_dataset("sim_bus?n=4", size=64, cache=False)
        >>> ds.images.shape
        (4, 64, 64, 1)
    """
    progress = options.pop("progress", True)
    given_root = root
    _, _, spec_options = split_spec(spec)
    spec_options = {k: v for k, v in spec_options.items() if k not in TARGET_OPTIONS}
    name, root = parse_spec(spec, root)
    info = REGISTRY[name]
    options = resolve_options(name, spec_options, options)
    size = (int(size), int(size)) if isinstance(size, (int, float)) else tuple(int(s) for s in size)
    signature = None
    if info.kind == "real":
        if root is None:
            raise FileNotFoundError(f"{name} is a real dataset: give its folder, e.g. "
                                    f"{name}:/path/to/{name}. Expected layout:\n{info.layout}")
        root = str(pathlib.Path(root).expanduser().resolve())
        if not pathlib.Path(root).is_dir():
            raise FileNotFoundError(f"{name}: root folder {root} does not exist. Expected "
                                    f"layout:\n{info.layout}")
        signature = content_signature(root)
    else:   # a changed generator (its GENERATOR_VERSION) must not be served from the cache
        signature = f"generator-{getattr(info.module(), 'GENERATOR_VERSION', 1)}"
    key = cache_key(name=name, root=root, size=size, options=options, files=signature)
    path = cache_dir(cache_directory) / f"{name}-{size[0]}x{size[1]}-{key}.npz"
    if cache:
        hit = load_cached(path, key)
        if hit is not None:
            if path not in _ANNOUNCED:   # each fact once per process (Fig. 3 reloads it)
                _ANNOUNCED.add(path)
                log.info("%s (from the cache %s)", hit.summary(), path)
                for note in hit.warnings:   # said when the files were read, said again
                    log.warning("%s", note)
            return hit
    if info.kind == "real":
        subset = {k: options.pop(k) for k in list(options) if k in SUBSET_OPTIONS}
        try:
            ds = info.loader(root=root, size=size, progress=progress, **options)
        except OptionHint as e:   # the fix, written as the user's own spec
            raise e.for_target(spec_with(spec, given_root, e.options)) from None
        if subset.get("n") is not None:
            ds = stratified_subset(ds, subset["n"], subset.get("seed") or 0)
    else:
        ds = info.loader(root=root, size=size, progress=progress, **options)
    log.info("%s", ds.summary())
    _ANNOUNCED.add(path)
    if cache:
        save_cached(path, key, ds)
    return ds
