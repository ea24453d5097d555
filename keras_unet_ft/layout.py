"""The results folder: the one contract between the study and everything that reads it.

The study writes this layout; ``results``, ``report``, ``figures``, the notebooks
and ``predict``-style tools read it through this module only (nnU-Net style:
evaluation reads result folders and never re-derives them from training code)::

    <out>/config.json                 merged config, package versions, git revision
    <out>/runs.json                   the grid: targets, block tables, every run and its folder
    <out>/pretrained/model.keras      + history.csv, summary.json, config.json
    <out>/pretrained_<kind>/...       other model kinds (X-Unet of the Cheng & Lam study)
    <out>/splits/<target>.json        folds, made once and reused (<target>_repeat_<r>.json)
    <out>/runs/<target>/<plan>/fold_<k>/     (repeat r >= 1 of study.seeds: fold_<k>_repeat_<r>;
                                       nested selection's inner runs: fold_<k>_inner)
        summary.json                  status + metrics + what was trained (schema below)
        per_image.csv                 id, dice, pixel_error, adjusted_rand
        history.csv                   loss per epoch (and stage)
        predictions.npz               bit-packed binary predictions of the held-out images
        model.keras                   fine-tuned model (``study.save_weights``)
    <out>/runs/<target>/sizes/n0050-aug/<plan>/fold_<k>/...   dataset-size study runs
    <out>/results.csv, summary.csv, stats.csv, sizes.csv, sizes_summary.csv,
                                      nested.csv, nested_summary.csv (study.nested)
    <out>/examples/<target>.npz       the target's images and masks, for Fig. 3
    <out>/REPORT.md, figures/*.png|pdf
    <out>/.study.lock                 the config of the processes writing the folder now
    <out>/pretrained/.pretrain.lock   one pretraining at a time; backup/, *.partial.*,
                                      model.tmp.keras while it runs (*.bad: set aside)

No Keras or TensorFlow here: reading a results folder must stay cheap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import re
from typing import Any, Dict, List, Literal, Optional, Tuple, get_args

import numpy as np

from .config import Config, config_from_dict
from .exitcodes import UserError
from .io import atomic_savez, read_json, write_json

CONFIG = "config.json"
MANIFEST = "runs.json"
RESULTS = "results.csv"
SUMMARY = "summary.csv"
STATS = "stats.csv"
SIZES = "sizes.csv"
SIZES_SUMMARY = "sizes_summary.csv"
NESTED = "nested.csv"
NESTED_SUMMARY = "nested_summary.csv"
BUDGETS = "budgets.csv"
REPORT = "REPORT.md"
FIGURES = "figures"
RUNS = "runs"
#: ``<out>/examples/<target>.npz``: a target's images and masks (Fig. 3 draws from them)
EXAMPLES = "examples"
RUN_SUMMARY = "summary.json"
PER_IMAGE = "per_image.csv"
HISTORY = "history.csv"
PREDICTIONS = "predictions.npz"
WEIGHTS = "model.keras"
#: ``pretrained/`` while pretraining runs (set aside as ``*.bad`` when unreadable)
PRETRAIN_LOCK = ".pretrain.lock"
PRETRAIN_STARTED = "config.partial.json"
PRETRAIN_PARTIAL_HISTORY = "history.partial.csv"
PRETRAIN_TMP_MODEL = "model.tmp.keras"
PRETRAIN_BACKUP = "backup"
#: ``unet-ft predict --out``: one row per image, and what made them
PREDICTIONS_TABLE = "predictions.csv"
PREDICT_RECORD = "predict.json"
#: ``<name>_prob.png`` (probability x 255), ``_mask.png`` (0 / 255), ``_overlay.png``
PREDICTED_IMAGES = ("prob", "mask", "overlay")
#: ``unet-ft advise --out`` (``run_all.py --advise``: ``<out>/advice/<target>/``)
ADVICE_DIR = "advice"
ADVICE_JSON = "advice.json"
ADVICE_MD = "ADVICE.md"
MANIFEST_VERSION = 1
#: held (shared) by every process writing a results folder with one config: a second study
#: with another config refuses at once (:func:`keras_unet_ft.io.hold_shared`)
STUDY_LOCK = ".study.lock"

#: statuses a run's summary.json can have: ``ok`` counts; ``diverged`` (non-finite or rising
#: loss, constant predictions) and ``failed`` (an error) are listed and kept out of every
#: mean and verdict; ``skipped`` (dataset-size runs larger than the fold) are listed
RunStatus = Literal["ok", "diverged", "failed", "skipped"]
STATUSES: Tuple[str, ...] = get_args(RunStatus)
#: keys every ``summary.json`` with status ``ok`` holds (metric keys are added per metric)
RUN_SUMMARY_KEYS = ("status", "target", "fold", "plan", "model", "aliases", "n_train", "n_test",
                    "trainable_params", "frozen_params", "trainable_layers", "train_seconds",
                    "seconds_per_epoch", "epochs", "seed", "precision", "trainer",
                    "weight_change")


def _folder_name(text: str) -> str:
    """``text`` as one folder name: runs of other characters become ``-``, no leading dot."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-").lstrip(".")


def plan_slug(plan: str) -> str:
    """A folder name for a plan (``shallow_to_deep:3@level`` -> ``shallow_to_deep-3-level``)."""
    if plan.startswith("layers:") or "/layers:" in plan:
        return "layers-" + hashlib.sha1(plan.encode()).hexdigest()[:8]
    return _folder_name(plan)


#: a file or folder name that stays where it is put: no separators, no leading dot
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def spec_options(spec: str) -> Tuple[str, Dict[str, str]]:
    """``(dataset name, {option: value as written})`` of a dataset spec, read without
    loading anything (the readers of a results folder use it; loaders type the values).

    Examples:
        >>> spec_options("sim_bus?shift=blur&name=blurred")
        ('sim_bus', {'shift': 'blur', 'name': 'blurred'})
    """
    name = re.split(r"[:?]", spec, maxsplit=1)[0]
    query = spec.partition("?")[2]
    return name, dict(item.partition("=")[::2] for item in query.split("&") if item)


def target_slug(spec: str) -> str:
    """A target's name in a results folder and REPORT.md: its ``?name=`` when given; a
    ``folder:ROOT`` is named after its folder; a built-in set without options is its name;
    anything else is ``NAME-<hash of root and options>``.

    Examples:
        >>> target_slug("folder:/data/my_scans?modality=ultrasound")
        'my_scans'
        >>> target_slug("busi:/data/BUSI?name=busi_benign")
        'busi_benign'
        >>> target_slug("sim_bus")
        'sim_bus'
    """
    name, options = spec_options(spec)
    rest = spec[len(name):]
    if not rest:
        return name
    base = spec.partition("?")[0]
    if options.get("name"):
        return options["name"]
    if name == "folder" and ":" in base:
        folder = _folder_name(pathlib.PurePath(base.split(":", 1)[1]).name)
        if folder:
            return folder
    return f"{name}-{hashlib.sha1(rest.lstrip(':').encode()).hexdigest()[:6]}"


@dataclasses.dataclass
class RunSpec:
    """One fine-tuning run of the grid, as recorded in ``runs.json``.

    Attributes:
        target: the target spec as given (``NAME`` or ``NAME:ROOT``).
        fold: fold index, 0-based.
        plan: canonical plan label of what is trained (``contracting``, ``xunet/all``).
        aliases: other plans of the study with the same trainable layers.
        model: model kind of the run.
        n_train: dataset-size study: original training images used (else None).
        augment: dataset-size study: augmented (True) or the originals only.
        repeat: repeat of the cross-validation (``study.seeds``), 0-based.
        inner: nested selection: trained on the inner training split of fold ``fold``'s
            training images and evaluated on its inner validation images.
    """

    target: str
    fold: int
    plan: str
    aliases: List[str]
    model: str = "unet"
    n_train: Optional[int] = None
    augment: bool = True
    repeat: int = 0
    inner: bool = False

    @property
    def variant(self) -> Optional[str]:
        """``n0050-aug`` / ``n0050-noaug`` for a dataset-size run, else None."""
        if self.n_train is None:
            return None
        return f"n{self.n_train:04d}-{'aug' if self.augment else 'noaug'}"

    def rel_dir(self) -> pathlib.Path:
        """``runs/<target>/<plan>/fold_<k>``; a target or plan whose name would leave the
        results folder (``..``, ``/``: a tampered runs.json) is an error naming the entry."""
        slug = target_slug(self.target)
        if (not SAFE_NAME.fullmatch(slug) or not isinstance(self.fold, int)
                or not isinstance(self.repeat, int)):
            raise UserError(f"runs.json: run entry target={self.target!r}, fold={self.fold!r}, "
                            f"repeat={self.repeat!r} does not name a folder inside the results "
                            "folder")
        base = pathlib.Path(RUNS) / slug
        if self.variant:
            base = base / "sizes" / self.variant
        name = (f"fold_{self.fold}" + (f"_repeat_{self.repeat}" if self.repeat else "")
                + ("_inner" if self.inner else ""))
        plan = plan_slug(self.plan)
        if not SAFE_NAME.fullmatch(plan):
            raise UserError(f"runs.json: run entry plan={self.plan!r} does not name a folder "
                            "inside the results folder")
        return base / plan / name

    def dir(self, out) -> pathlib.Path:
        return pathlib.Path(out) / self.rel_dir()

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "dir": str(self.rel_dir())}

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# -- paths -------------------------------------------------------------------------
def pretrained_dir(out, kind: str, default_kind: str = "unet") -> pathlib.Path:
    """``pretrained/`` for the study's model kind, ``pretrained_<kind>/`` for others."""
    return pathlib.Path(out) / ("pretrained" if kind == default_kind else f"pretrained_{kind}")


@dataclasses.dataclass(frozen=True)
class ModelFolder:
    """A folder holding one trained net and how it was made: ``pretrained/`` of a study
    (``config.json`` there is the pretraining's key) or the ``--out`` of ``unet-ft
    finetune``. The checkpoint paths are used while pretraining runs."""

    path: pathlib.Path

    def __post_init__(self):
        object.__setattr__(self, "path", pathlib.Path(self.path))

    model = property(lambda self: self.path / WEIGHTS)
    config = property(lambda self: self.path / CONFIG)
    history = property(lambda self: self.path / HISTORY)
    summary = property(lambda self: self.path / RUN_SUMMARY)
    lock = property(lambda self: self.path / PRETRAIN_LOCK)
    started = property(lambda self: self.path / PRETRAIN_STARTED)
    partial_history = property(lambda self: self.path / PRETRAIN_PARTIAL_HISTORY)
    tmp_model = property(lambda self: self.path / PRETRAIN_TMP_MODEL)
    backup = property(lambda self: self.path / PRETRAIN_BACKUP)


def predicted_image(out, stem: str, what: str) -> pathlib.Path:
    """Where ``unet-ft predict`` writes the ``what`` image (:data:`PREDICTED_IMAGES`) of the
    input ``stem``."""
    if what not in PREDICTED_IMAGES:
        raise ValueError(f"what must be one of {PREDICTED_IMAGES}, got {what!r}")
    return pathlib.Path(out) / f"{stem}_{what}.png"


def pretrained_folder(out, kind: str, default_kind: str = "unet") -> ModelFolder:
    """The :class:`ModelFolder` of the pretrained ``kind`` net of a results folder."""
    return ModelFolder(pretrained_dir(out, kind, default_kind))


def splits_path(out, target: str, repeat: int = 0) -> pathlib.Path:
    """The folds file of a target spec (see :func:`splits_file` for a target slug)."""
    return splits_file(out, target_slug(target), repeat)


def splits_file(out, slug: str, repeat: int = 0) -> pathlib.Path:
    """The folds file of a target, by its slug (folds, duplicate groups), of a repeat."""
    name = f"{slug}_repeat_{repeat}" if repeat else slug
    return pathlib.Path(out) / "splits" / f"{name}.json"


def figures_dir(out) -> pathlib.Path:
    return pathlib.Path(out) / FIGURES


# -- config and manifest -------------------------------------------------------------
def load_config_of(out) -> Config:
    """The config a results folder was made with (``config.json``), validated."""
    path = pathlib.Path(out) / CONFIG
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {out} is not a results folder")
    return config_from_dict(read_json(path)["config"])


def provenance(out) -> dict:
    return read_json(pathlib.Path(out) / CONFIG)


@dataclasses.dataclass
class TargetEntry:
    """A target of the study in ``runs.json``: its spec as given, its folder name, its
    modality and what REPORT.md must warn about its data."""

    spec: str
    slug: str
    modality: str = "other"
    notes: List[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ModelEntry:
    """A network of the study in ``runs.json``: units per depth scheme, parameters, the
    plan that trains every block, its block table (:meth:`BlockMap.table`), what it is in
    words and what identifies it (a ``file:`` network's sha256, an encoder's weights)."""

    units: Dict[str, int]
    total_params: int
    all_layers_plan: str
    blocks: List[dict]
    description: str = ""
    identity: Dict[str, object] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Manifest:
    """``runs.json``, typed: the grid of a results folder and what a reader needs of it.

    Examples:
        >>> m = Manifest("unet", [TargetEntry("sim_bus", "sim_bus", "ultrasound")], ["all"],
        ...              {"unet": ModelEntry({"path": 9, "level": 5}, 450,
        ...                                  "shallow_to_deep:9", [])}, [])
        >>> m.units(), m.target("sim_bus").modality
        (9, 'ultrasound')
        >>> Manifest.from_dict(m.to_dict()) == m
        True
    """

    model: str
    targets: List[TargetEntry]
    plans: List[str]
    models: Dict[str, ModelEntry]
    runs: List[RunSpec]

    @property
    def study_model(self) -> ModelEntry:
        """The entry of the study's own network (plans without a model prefix)."""
        return self.models[self.model]

    def units(self, scheme: str = "path") -> int:
        """Units of the study's network under ``scheme`` (``path``: its blocks)."""
        return int(self.study_model.units[scheme])

    def target(self, slug: str) -> TargetEntry:
        """The target named ``slug``; an error listing the study's targets otherwise."""
        for t in self.targets:
            if t.slug == slug:
                return t
        raise UserError(f"target {slug!r} is not in this study; its targets are "
                        f"{[t.slug for t in self.targets]}")

    def by_spec(self) -> Dict[str, TargetEntry]:
        """``{spec: target}`` (runs name their target by its spec)."""
        return {t.spec: t for t in self.targets}

    def to_dict(self) -> dict:
        return {"version": MANIFEST_VERSION, "model": self.model,
                "targets": [dataclasses.asdict(t) for t in self.targets],
                "plans": list(self.plans),
                "models": {k: dataclasses.asdict(v) for k, v in self.models.items()},
                "runs": [r.to_dict() for r in self.runs]}

    @classmethod
    def from_dict(cls, d: dict, path="runs.json") -> "Manifest":
        try:
            return cls(model=d["model"],
                       targets=[TargetEntry(**t) for t in d["targets"]],
                       plans=list(d["plans"]),
                       models={k: ModelEntry(**v) for k, v in d["models"].items()},
                       runs=[RunSpec.from_dict(r) for r in d["runs"]])
        except (KeyError, TypeError, AttributeError) as e:
            raise UserError(f"{path} is not a study's runs.json ({e.__class__.__name__}: {e}); "
                            "run the study again into this folder to rewrite it (finished "
                            "runs are kept)") from None


def write_manifest(out, manifest) -> None:
    """Write ``runs.json`` (a :class:`Manifest`, or its dict, which is checked first)."""
    if not isinstance(manifest, Manifest):
        manifest = Manifest.from_dict(manifest)
    write_json(pathlib.Path(out) / MANIFEST, manifest.to_dict())


def read_manifest(out) -> Manifest:
    """``runs.json``: targets (spec, slug, modality), models (block tables), plans, runs."""
    path = pathlib.Path(out) / MANIFEST
    what = ("a results folder is what `unet-ft study --out DIR` or `run_all.py --out DIR` "
            "writes: config.json, runs.json, runs/, then REPORT.md")
    if not pathlib.Path(out).is_dir():
        raise FileNotFoundError(f"{out} is not a folder; {what}")
    if not path.exists() and not (pathlib.Path(out) / CONFIG).exists():
        raise FileNotFoundError(f"{out} is not a results folder (no {MANIFEST}, no {CONFIG}); "
                                f"{what}")
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: the folder was not written by this version's study; run "
            f"`unet-ft study --config {pathlib.Path(out) / CONFIG} --out {out}` once to write "
            "it (finished runs are kept)")
    data = read_json(path)
    if data.get("version") != MANIFEST_VERSION:
        raise UserError(f"{path} has version {data.get('version')!r}; this package reads "
                        f"version {MANIFEST_VERSION}")
    return Manifest.from_dict(data, path)


# -- per-run files -------------------------------------------------------------------
def read_run_summary(run_dir) -> Optional[dict]:
    """``summary.json`` of a run folder, or None when the run has not finished."""
    path = pathlib.Path(run_dir) / RUN_SUMMARY
    if not path.exists():
        return None
    data = read_json(path)
    if data.get("status") not in STATUSES:
        raise UserError(f"{path}: status {data.get('status')!r}; expected one of {STATUSES}")
    if data["status"] == "ok":
        missing = [k for k in RUN_SUMMARY_KEYS if k not in data]
        if missing:
            raise UserError(f"{path} lacks {missing}; delete the run folder to redo it")
    return data


@dataclasses.dataclass
class RunSummary:
    """A run's ``summary.json``, typed: its status, one of :data:`STATUSES`, and every other
    key as written (``reason`` says why a run is not ok). Writers build it with :meth:`of` or
    :meth:`judged`; :meth:`to_dict` gives the keys of ``summary.json`` in the order given.

    Examples:
        >>> s = RunSummary.judged("loss is nan", target="sim_bus", plan="all")
        >>> s.status, s.reason, s.ok
        ('diverged', 'diverged: loss is nan', False)
        >>> s.to_dict()
        {'status': 'diverged', 'target': 'sim_bus', 'plan': 'all', 'reason': 'diverged: loss is nan'}
        >>> RunSummary.from_dict(s.to_dict()) == s
        True
        >>> RunSummary.of("lost")
        Traceback (most recent call last):
        ...
        ValueError: a run's status is one of ('ok', 'diverged', 'failed', 'skipped'), not 'lost'
    """

    status: RunStatus
    fields: Dict[str, Any] = dataclasses.field(default_factory=dict)
    #: where ``status`` stands among the keys of :meth:`to_dict` (0: first)
    status_at: int = 0

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"a run's status is one of {STATUSES}, not {self.status!r}")
        self.fields.pop("status", None)

    @classmethod
    def of(cls, status: RunStatus, **fields) -> "RunSummary":
        """A summary with ``status`` first, then ``fields`` in the order given."""
        return cls(status, dict(fields))

    @classmethod
    def judged(cls, diverged: Optional[str], status_last: bool = False,
               **fields) -> "RunSummary":
        """The summary of a run that trained to its end: ``ok``, or ``diverged`` with the
        reason ``diverged: <what>`` after ``fields`` when ``diverged`` says what happened
        (:func:`keras_unet_ft.finetune.divergence`). ``status_last`` puts the status after
        ``fields`` (a fine-tuned model folder's summary)."""
        fields = dict(fields)
        at = len(fields) if status_last else 0
        if diverged is not None:
            fields["reason"] = f"diverged: {diverged}"
        return cls("ok" if diverged is None else "diverged", fields, at)

    @classmethod
    def from_dict(cls, data: dict) -> "RunSummary":
        """A summary as read from ``summary.json`` (the status's place kept)."""
        keys = list(data)
        at = keys.index("status") if "status" in keys else 0
        return cls(data.get("status"), {k: v for k, v in data.items() if k != "status"}, at)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def reason(self) -> str:
        """Why the run is not ok ('' when it is)."""
        return str(self.fields.get("reason", ""))

    def to_dict(self) -> dict:
        """The keys and values of ``summary.json``."""
        items = list(self.fields.items())
        items.insert(min(self.status_at, len(items)), ("status", self.status))
        return dict(items)


def write_run_summary(run_dir, summary) -> None:
    """Write ``summary.json`` of a run folder (a :class:`RunSummary`, or its dict)."""
    if not isinstance(summary, RunSummary):
        summary = RunSummary.from_dict(summary)
    write_json(pathlib.Path(run_dir) / RUN_SUMMARY, summary.to_dict())


def save_predictions(run_dir, ids, pred: np.ndarray) -> None:
    """Binary predictions ``(N, H, W)`` of the images ``ids``, bit-packed."""
    pred = np.asarray(pred, dtype=bool)
    atomic_savez(pathlib.Path(run_dir) / PREDICTIONS, ids=np.array(ids),
                 shape=np.array(pred.shape), bits=np.packbits(pred.ravel()))


def load_predictions(run_dir) -> Dict[str, np.ndarray]:
    """``{id: bool mask (H, W)}`` saved by a run."""
    with np.load(pathlib.Path(run_dir) / PREDICTIONS) as z:
        shape = tuple(z["shape"])
        pred = np.unpackbits(z["bits"])[: int(np.prod(shape))].reshape(shape).astype(bool)
        return dict(zip([str(i) for i in z["ids"]], pred))


def save_target_images(out, slug: str, ids, images: np.ndarray, masks: np.ndarray) -> None:
    """A target's images (as 8-bit grey levels) and masks, kept for the figures: they read
    the results folder and never load a dataset."""
    images = np.asarray(images)[..., 0] if np.asarray(images).ndim == 4 else np.asarray(images)
    masks = np.asarray(masks).reshape(images.shape) > 0
    atomic_savez(pathlib.Path(out) / EXAMPLES / f"{slug}.npz", ids=np.array([str(i) for i in ids]),
                 images=np.round(np.clip(images, 0, 1) * 255).astype(np.uint8),
                 shape=np.array(masks.shape), bits=np.packbits(masks.ravel()))


def load_target_images(out, slug: str):
    """``(ids, images (N, H, W) in [0, 1], masks (N, H, W) bool)`` of a target, or None when
    the folder has none (written by a version before they were kept)."""
    path = pathlib.Path(out) / EXAMPLES / f"{slug}.npz"
    if not path.exists():
        return None
    with np.load(path) as z:
        shape = tuple(z["shape"])
        masks = np.unpackbits(z["bits"])[: int(np.prod(shape))].reshape(shape).astype(bool)
        return [str(i) for i in z["ids"]], z["images"].astype(np.float32) / 255.0, masks


def weights_path(run_dir) -> pathlib.Path:
    """The fine-tuned model of a run (present when ``study.save_weights`` kept it)."""
    return pathlib.Path(run_dir) / WEIGHTS


def folds_of(out, target_slug_: str, repeat: int = 0) -> Dict[str, int]:
    """``{image id: fold}`` of the held-out images of a target (in a repeat)."""
    data = read_json(splits_file(out, target_slug_, repeat))
    return {i: k for k, f in enumerate(data["folds"]) for i in f["test"]}
