"""How far a net fine-tuned on a simulated target segments real images (sim -> real transfer).

A simulator is useful for a study when what a net learns on it carries over to real
images. Three nets start from one pretrained model and are scored on the same real
images (per-image Dice):

* **floor** - the pretrained net, untouched;
* **sim -> real** - every layer fine-tuned on the simulated set alone (one net per
  simulated set drawn; its per-image Dice averaged over them: one draw varies by ~0.1
  in realism);
* **ceiling** - every layer fine-tuned on the real set itself, k-fold cross-validation
  (each real image is scored by the net that did not see it).

``realism = (sim->real - floor) / (ceiling - floor)``: 0 when the simulated set teaches
nothing that helps on real images, 1 when it helps as much as real training images.
Its 95 % interval resamples the real images (the three scores of an image stay together).

Examples:
    >>> from keras_unet_ft.transfer import realism_score
    >>> round(realism_score(0.3, 0.6, 0.2), 3)
    0.25
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .exitcodes import UserError

#: the recipe of the measure: augmented training images, epochs, Adam rate, batch, folds
N_AUGMENTED = 300
EPOCHS = 10
LEARNING_RATE = 1e-4
BATCH_SIZE = 8
FOLDS = 3
#: below this ceiling - floor gap, the real set teaches the pretrained net too little for a
#: ratio to mean anything: realism is not computed
MIN_GAIN = 0.05


def realism_score(sim_to_real: float, ceiling: float, floor: float) -> Optional[float]:
    """``(sim_to_real - floor) / (ceiling - floor)``, or None when the gap is < MIN_GAIN."""
    gain = ceiling - floor
    if not math.isfinite(gain) or gain < MIN_GAIN:
        return None
    return (sim_to_real - floor) / gain


@dataclasses.dataclass
class Transfer:
    """Per-image Dice on the real images of the three nets, and what they add up to."""

    floor: np.ndarray
    sim_to_real: np.ndarray
    ceiling: np.ndarray
    sim_to_sim: float
    names: List[str]
    sim_to_real_runs: List[float]
    simulated: str
    real: str
    size: int
    excluded: List[str] = dataclasses.field(default_factory=list)
    folds: int = FOLDS

    def means(self) -> Dict[str, float]:
        return {k: float(np.mean(getattr(self, k))) for k in ("floor", "sim_to_real", "ceiling")}

    @property
    def realism(self) -> Optional[float]:
        m = self.means()
        return realism_score(m["sim_to_real"], m["ceiling"], m["floor"])

    def interval(self, n_boot: int = 2000, seed: int = 0) -> Tuple[float, float]:
        """95 % percentile bootstrap interval of the realism over the real images."""
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(self.floor), (n_boot, len(self.floor)))
        f, s, c = (getattr(self, k)[idx].mean(axis=1) for k in ("floor", "sim_to_real",
                                                                 "ceiling"))
        gain = c - f
        ok = gain >= MIN_GAIN
        if ok.mean() < 0.975:   # too many resamples without a usable gain
            return (math.nan, math.nan)
        r = (s[ok] - f[ok]) / gain[ok]
        return (float(np.quantile(r, 0.025)), float(np.quantile(r, 0.975)))

    def to_dict(self) -> dict:
        lo, hi = self.interval()
        r = self.realism
        return dict(real=self.real, simulated=self.simulated, size=self.size,
                    n_real=len(self.floor), excluded=self.excluded, folds=self.folds,
                    **{k: round(v, 4) for k, v in self.means().items()},
                    sim_to_sim=round(self.sim_to_sim, 4),
                    sim_to_real_runs=[round(v, 4) for v in self.sim_to_real_runs],
                    realism=None if r is None else round(r, 3),
                    realism_ci=None if r is None or math.isnan(lo) else [round(lo, 3),
                                                                         round(hi, 3)])

    def text(self) -> str:
        m = self.means()
        lines = [f"sim -> real transfer: {self.simulated} -> {self.real} "
                 f"({len(self.floor)} real images, {self.size} px)",
                 f"  floor (pretrained, untouched):       Dice {m['floor']:.3f}",
                 f"  sim -> real (all layers on the sim): Dice {m['sim_to_real']:.3f} "
                 f"(mean of {len(self.sim_to_real_runs)} simulated set(s): "
                 f"{', '.join(f'{v:.3f}' for v in self.sim_to_real_runs)}; on their own "
                 f"simulated images: {self.sim_to_sim:.3f})",
                 f"  ceiling (real -> real, {self.folds}-fold):      Dice {m['ceiling']:.3f}"]
        r = self.realism
        if r is None:
            lines.append(f"  realism: not computed - the real images raise Dice by only "
                         f"{m['ceiling'] - m['floor']:+.3f} over the pretrained net (< "
                         f"{MIN_GAIN}): there is too little to transfer to measure it")
        else:
            lo, hi = self.interval()
            ci = "" if math.isnan(lo) else f" [{lo:.2f}, {hi:.2f}]"
            lines.append(f"  realism = (sim->real - floor) / (ceiling - floor) = {r:.2f}{ci} "
                         "(95 % interval over the real images; 1 = as useful as real "
                         "training images)")
        if self.excluded:
            lines.append(f"  left out: {len(self.excluded)} real image(s) with an empty mask "
                         f"(e.g. {self.excluded[0]})")
        return "\n".join(lines)


class _Nets:
    """The pretrained net, loaded and compiled once; :meth:`fresh` puts every variable of
    the net and its optimizer back as they were (as the trainers reset their models), so
    every net of the measure starts alike while Keras traces its train and predict steps
    once (not once per net)."""

    def __init__(self, model_path: str, seed: int):
        import keras

        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        self.model = keras.models.load_model(model_path, compile=False)
        self.model.compile(keras.optimizers.Adam(LEARNING_RATE), "binary_crossentropy")
        self.model.optimizer.build(self.model.trainable_variables)
        self._state = [np.array(v.numpy()) for v in self.model.variables]
        self._opt_state = [np.array(v.numpy()) for v in self.model.optimizer.variables]

    def fresh(self, seed: int):
        """The pretrained net, its optimizer at step 0, the random state at ``seed``."""
        import keras

        keras.utils.set_random_seed(seed)
        for v, val in zip(self.model.variables, self._state):
            v.assign(val)
        for v, val in zip(self.model.optimizer.variables, self._opt_state):
            v.assign(val)
        return self.model


def _scores(model, images, masks) -> np.ndarray:
    from .metrics import dice

    pred = model.predict(images, batch_size=BATCH_SIZE, verbose=0)
    if not np.isfinite(pred).all():   # a diverged net: its Dice would read as a plain 0
        from .runtime import Diverged

        raise Diverged("a net of the transfer measure predicts non-finite values (training "
                       "diverged): no realism is computed; try fewer --epochs or another --seed")
    return np.array([dice(masks[i], pred[i] > 0.5) for i in range(len(images))])


def _train(model, images, masks, seed: int, epochs: int, n_augmented: int,
           desc: Optional[str] = None):
    """Fine-tune every layer of ``model``; ``desc``: show its epochs under this name
    (:func:`~keras_unet_ft.runtime.epoch_progress`: a bar on a terminal, lines elsewhere)."""
    from .data.augment import augment_to
    from .runtime import epoch_progress

    x, y, _ = augment_to(images, masks, max(n_augmented, len(images)), seed=seed)
    model.fit(x, y.astype("float32"), batch_size=BATCH_SIZE, epochs=epochs, verbose=0,
              callbacks=[epoch_progress(epochs, len(x), desc=desc)] if desc else [])
    return model


def model_size(model_path: str) -> int:
    """The square input size of a saved U-Net (the size the data is loaded at)."""
    import keras

    shape = keras.models.load_model(model_path, compile=False).input_shape
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2]:
        raise UserError(f"{model_path}: expected a U-Net with a square input, got input shape "
                        f"{shape}")
    return int(shape[1])


def measure_transfer(model_path: str, real, simulated: Sequence, *, epochs: int = EPOCHS,
                     seed: int = 0, n_augmented: int = N_AUGMENTED,
                     folds: int = FOLDS, progress: bool = True) -> Transfer:
    """The three scores of :mod:`keras_unet_ft.transfer` on ``real`` (a Dataset).

    Args:
        model_path: a pretrained ``model.keras`` (e.g. a study's ``pretrained/model.keras``).
        real: the real images (a :class:`~keras_unet_ft.data.dataset.Dataset` at the
            model's input size); images with an empty mask are left out and listed.
        simulated: the simulated training sets (Datasets of the same size; one net each,
            e.g. one simulator drawn with different seeds).
        epochs: fine-tuning epochs of each net.
        seed: drives the weights' order of updates, the augmentation and the folds.
        n_augmented: training images of each net (the originals and augmented copies).
        folds: the ceiling's k-fold cross-validation on the real images.
        progress: show each net's epochs (one bar or a few lines per net; also off with
            ``UNET_FT_NO_PROGRESS``).

    Returns:
        A :class:`Transfer`.
    """
    from sklearn.model_selection import KFold

    if epochs < 1:
        raise UserError(f"epochs must be >= 1, got {epochs!r}")
    simulated = list(simulated)
    if not simulated:
        raise UserError("measure_transfer needs at least one simulated set")
    for ds in [real] + simulated:
        if ds.images.shape[1:3] != real.images.shape[1:3]:
            raise UserError(f"{ds.name}: images of {ds.images.shape[1:3]}, expected "
                            f"{real.images.shape[1:3]} like {real.name}")
    keep = np.array([m.any() for m in real.masks])
    names = [str(i) for i in real.ids]
    excluded = [n for n, k in zip(names, keep) if not k]
    x, y = real.images[keep], real.masks[keep]
    if int(folds) != folds or folds < 2:
        raise UserError(f"folds must be an integer >= 2, got {folds!r}")
    if len(x) < 2 * folds:
        raise UserError(f"{real.name}: {len(x)} real images with a lesion; the measure needs "
                        f">= {2 * folds} ({folds}-fold cross-validation)")
    from .runtime import progress_wanted

    show = progress_wanted(progress)
    n_nets = len(simulated) + int(folds)
    nets = _Nets(model_path, seed)
    floor = _scores(nets.fresh(seed), x, y)
    runs, own = [], []
    for r, sim in enumerate(simulated):
        net = _train(nets.fresh(seed + r), sim.images, sim.masks, seed + r, epochs,
                     n_augmented, show and f"realism net {r + 1}/{n_nets}: sim -> real "
                                           f"({sim.name})")
        runs.append(_scores(net, x, y))
        own.append(float(_scores(net, sim.images, sim.masks).mean()))
    sim_to_real, sim_to_sim = np.mean(runs, axis=0), float(np.mean(own))
    ceiling = np.zeros(len(x))
    for k, (tr, te) in enumerate(KFold(int(folds), shuffle=True, random_state=seed).split(x)):
        net = _train(nets.fresh(seed), x[tr], y[tr], seed + k, epochs, n_augmented,
                     show and f"realism net {len(simulated) + k + 1}/{n_nets}: ceiling, "
                              f"real fold {k + 1}/{folds}")
        ceiling[te] = _scores(net, x[te], y[te])
    return Transfer(floor=floor, sim_to_real=sim_to_real, ceiling=ceiling,
                    sim_to_sim=sim_to_sim, names=[n for n, k in zip(names, keep) if k],
                    sim_to_real_runs=[float(v.mean()) for v in runs],
                    simulated=simulated[0].name, real=real.name, size=int(x.shape[1]),
                    excluded=excluded, folds=int(folds))
