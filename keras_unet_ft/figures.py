"""The paper's figures (and a few more), drawn from a results folder with matplotlib.

* :func:`fig3_examples` - image, ground truth, prediction of the pretrained net,
  of the expanding-tuned net and of the contracting-tuned net (Dice in titles).
* :func:`fig4_dice_vs_blocks` - average Dice vs number of blocks fine-tuned,
  shallow -> deep and deep -> shallow, error bars = std over folds, one panel per
  target; contracting / expanding marked; a ``level``-scheme variant.
* :func:`fig5_activation_maximization` - tf-keras-vis activation maximization of
  filters of the 4th conv layer and of the deepest conv layer of the net
  fine-tuned (all layers) on ultrasound.
* Beyond the paper: :func:`fig_dice_boxplots`, :func:`fig_training_time`,
  :func:`fig_param_share`, :func:`fig_weight_change`.

Each function takes the results folder, loaded once
(:class:`~keras_unet_ft.results.LoadedFolder`) or as a path (then loaded for that figure),
saves ``<out>/figures/<name>.png`` and ``.pdf`` and returns the PNG path (Fig. 3, 4 and 5
into ``folder`` when given: the notebooks' own). :func:`make_all_figures` draws every figure
the folder has data for, from one loaded folder.
"""

from __future__ import annotations

import logging
import math
import os
import pathlib
from typing import Dict, List, Optional, Sequence

import numpy as np

from .blocks import BlockMap
from .exitcodes import UserError
from .layout import (EXAMPLES, folds_of, load_predictions, load_target_images,
                     weights_path)
from .layout import figures_dir as _figures_dir
from .metrics import dice as dice_score
from .plans import Plan, all_layers_plan
from .results import LoadedFolder, epoch_seconds_key

log = logging.getLogger("keras_unet_ft")
MAX_AM_STEPS_ENV = "UNET_FT_MAX_AM_STEPS"   # caps activation-maximization steps (tests)
SHALLOW_COLOR, DEEP_COLOR = "tab:blue", "tab:red"


def _plt():
    import matplotlib

    if not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out, name, folder=None) -> pathlib.Path:
    """Save ``fig`` as ``<folder>/<name>.png`` and ``.pdf``; ``folder`` defaults to the
    results folder's ``figures/`` (the notebooks name their own)."""
    d = pathlib.Path(folder) if folder is not None else _figures_dir(out)
    d.mkdir(parents=True, exist_ok=True)
    png = d / f"{name}.png"
    fig.savefig(png, dpi=120, bbox_inches="tight")
    fig.savefig(d / f"{name}.pdf", bbox_inches="tight")
    _plt().close(fig)
    return png


def _unit_plans(rows, kind: str, scheme: str) -> Dict[int, str]:
    """``{K: plan}`` of the ``kind:K`` plans (no model prefix) of ``scheme`` in ``rows``."""
    out = {}
    for p in rows:
        try:
            q = Plan.parse(p)
        except ValueError:
            continue
        if q.curve_k(kind, scheme) is not None:
            out[q.k] = p
    return dict(sorted(out.items()))


def _targets(rows) -> List[str]:
    return list(dict.fromkeys(r["target"] for r in rows))


def _runs_by_plan(rows, target) -> Dict[str, List[dict]]:
    """Result rows of ``target`` grouped by plan, plans in study order."""
    groups: Dict[str, List[dict]] = {}
    for r in rows:
        if r.target == target:
            groups.setdefault(r.plan, []).append(r)
    return groups


def _f(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


# ---------------------------------------------------------------------------
def fig4_dice_vs_blocks(out, scheme: str = "path", folder=None) -> Optional[pathlib.Path]:
    """Average Dice vs number of blocks fine-tuned, both directions, one panel per target
    (saved into ``folder``, default the results folder's ``figures/``)."""
    plt = _plt()
    F = LoadedFolder.load(out)
    S = F.summary
    targets = [t for t in _targets(S)
               if _unit_plans([r.plan for r in S if r.target == t], "shallow_to_deep",
                              scheme)]
    if not targets:
        return None
    fig, axes = plt.subplots(1, len(targets), figsize=(5.2 * len(targets), 5.0), squeeze=False,
                             layout="constrained")
    for ax, t in zip(axes[0], targets):
        rows = {r.plan: r for r in S if r.target == t}
        for kind, color, label in (("shallow_to_deep", SHALLOW_COLOR, "shallow → deep"),
                                   ("deep_to_shallow", DEEP_COLOR, "deep → shallow")):
            by_k = _unit_plans(rows, kind, scheme)
            if not by_k:
                continue
            m = [_f(rows[p]["dice_mean"]) for p in by_k.values()]
            s = [_f(rows[p]["dice_std"]) for p in by_k.values()]
            ax.errorbar(list(by_k), m, yerr=s, marker="o", color=color, capsize=3, label=label)
        if scheme == "path":
            mid = (max(_unit_plans(rows, "shallow_to_deep", "path")) + 1) / 2
            for plan, color, mk, dx in (("contracting", SHALLOW_COLOR, "s", -0.2),
                                        ("expanding", DEEP_COLOR, "D", 0.2)):
                if plan in rows:
                    ax.errorbar([mid + dx], [_f(rows[plan]["dice_mean"])], yerr=[_f(rows[plan]["dice_std"])],
                                marker=mk, color=color, mfc="white", ms=8, capsize=3, ls="none",
                                label=f"{plan} (paper's split)")
        for plan, style in (("none", ":"), ("scratch", "--")):
            if plan in rows and not np.isnan(_f(rows[plan]["dice_mean"])):
                ax.axhline(_f(rows[plan]["dice_mean"]), color="gray", ls=style, lw=1,
                           label="pretrained, not tuned" if plan == "none" else "from scratch")
        unit = "levels" if scheme == "level" else "blocks"
        ax.set_xlabel(f"number of {unit} fine-tuned")
        ax.set_ylabel("average Dice (held-out folds)")
        ax.set_title(f"{t} ({rows[next(iter(rows))].modality})")
        ax.grid(alpha=0.3)
        # below the panel, never over a point (it once hid the K = 9 points)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2,
                  frameon=False)
    fig.suptitle("Fig. 4 — Dice vs blocks fine-tuned; error bars: std over folds"
                 + (" (level scheme)" if scheme == "level" else ""), fontsize=10)
    return _save(fig, F.out, "fig4_dice_vs_blocks" + ("_level" if scheme == "level" else ""),
                 folder)


# ---------------------------------------------------------------------------
def _ultrasound_target(rows) -> Optional[str]:
    for r in rows:
        if r.modality == "ultrasound":
            return r.target
    return rows[0].target if rows else None


def ultrasound_target(out) -> Optional[str]:
    """The study's first ultrasound target (else its first target), as a slug."""
    return _ultrasound_target(LoadedFolder.load(out).results)


PAPER_FIG3 = (("none", "pretrained (not tuned)"), ("expanding", "expanding tuned"),
              ("contracting", "contracting tuned"))
CHENG_FIG3 = (("xunet/none", "X-Unet pretrained"), ("xunet/all", "X-Unet all layers"),
              ("vunet/expanding:blocks>all", "V-Unet two-stage"))


def fig3_examples(out, target: Optional[str] = None, ids: Optional[Sequence[str]] = None,
                  n_rows: int = 3, plans=PAPER_FIG3, name: str = "fig3_examples",
                  folder=None) -> Optional[pathlib.Path]:
    """Image, ground truth and the predictions of three plans (Dice in the titles).

    The paper's columns (default): pretrained, expanding-tuned, contracting-tuned.
    Examples are chosen from held-out images: the one where the last two plans
    both do best, then those where the last plan leads the second most (per-image
    Dice) - or given by ``ids``. The title says what was found (whether both work).
    """
    plt = _plt()
    F = LoadedFolder.load(out)
    out = F.out
    R = F.results
    target = target or _ultrasound_target(R)
    if target is None:
        return None
    rows = [r for r in R if r.target == target and r.ok and r.repeat == 0]
    by = {(r.plan, r.fold): r for r in rows}
    labels = [t for _, t in plans]
    plans = [p for p, _ in plans]
    if not all(any(p == q for q, _ in by) for p in plans):
        return None
    a_plan, b_plan = plans[1], plans[2]
    kept = load_target_images(out, target)
    if kept is None:
        log.warning("%s has no %s/%s.npz (written by an older version): run the study into "
                    "it again to keep them (finished runs are kept); Fig. 3 is left out",
                    out, EXAMPLES, target)
        return None
    ds_ids, ds_images, ds_masks = kept
    fold_of = folds_of(out, target)
    preds = {}
    for p in plans:
        for (q, k), r in by.items():
            if q == p:
                for i, m in load_predictions(out / r.run_dir).items():
                    preds[(p, i)] = m
    index = {i: j for j, i in enumerate(ds_ids)}
    common = [i for i in ds_ids if all((p, i) in preds for p in plans)]
    if not common:
        return None
    gt = {i: ds_masks[index[i]] for i in common}
    if not ids:  # examples among images with an object (an empty mask says nothing here)
        common = [i for i in common if gt[i].any()]
        if not common:
            return None
    d = {(p, i): dice_score(gt[i], preds[(p, i)]) for p in plans for i in common}
    if ids:
        chosen = [i for i in ids if i in gt]
        missing = [i for i in ids if i not in gt]
        if missing:
            raise UserError(f"ids not among the held-out images of {target}: {missing[:5]}")
        caption = "chosen images"
    else:
        both = max(common, key=lambda i: min(d[(b_plan, i)], d[(a_plan, i)]))
        wins = sorted((i for i in common if i != both),
                      key=lambda i: d[(b_plan, i)] - d[(a_plan, i)], reverse=True)
        chosen = [both] + wins[: max(0, n_rows - 1)]
        floor = min(d[(b_plan, both)], d[(a_plan, both)])
        first = (f"both {labels[1]} and {labels[2]} work (Dice >= {floor:.2f})" if floor >= 0.7
                 else f"the best image for both {labels[1]} and {labels[2]}, yet the lower "
                      f"Dice is only {floor:.2f}")
        caption = f"row 1: {first}; then where {labels[2]} leads {labels[1]} most"
    titles = ["image", "ground truth"] + labels
    fig, axes = plt.subplots(len(chosen), 5, figsize=(12, 3.0 * len(chosen)), squeeze=False)
    for r, i in enumerate(chosen):
        img = ds_images[index[i]]
        panels = [img, gt[i]] + [preds[(p, i)] for p in plans]
        for c, (ax, a) in enumerate(zip(axes[r], panels)):
            ax.imshow(a, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            t = titles[c]
            if c >= 2:
                t += f"\nDice {d[(plans[c - 2], i)]:.2f}"
            elif c == 0:
                t += f"\n{i} (fold {fold_of.get(i, '?')})"
            ax.set_title(t, fontsize=8)
    fig.suptitle(f"Fig. 3 — {target}: held-out examples ({caption})", fontsize=10)
    fig.tight_layout()
    return _save(fig, out, f"{name}_{target}", folder)


# ---------------------------------------------------------------------------
def all_layers_plans(out) -> List[str]:
    """Labels the all-layers plan can have in this study, most specific first."""
    return [all_layers_plan(LoadedFolder.load(out).manifest.units()), "all", "xunet/all"]


def finetuned_model(out, target: Optional[str] = None, plan: Optional[str] = None,
                    fold: int = 0):
    """The net fine-tuned with ``plan`` on ``target`` (fold ``fold``), as a Keras model.

    Loads ``model.keras`` of that run, saved by the study (``study.save_weights``:
    ``figures`` keeps the all-layers run of fold 0, ``all`` every run). Nothing is
    re-trained: a run without saved weights is an error saying how to get them.

    Args:
        out: results folder. target: target slug (default: the first ultrasound one).
        plan: plan label (default: the all-layers plan). fold: fold index.
    """
    import keras

    F = LoadedFolder.load(out)
    R = F.results
    target = target or _ultrasound_target(R)
    rows = [r for r in R if r.target == target and r.ok and r.fold == int(fold)
            and r.repeat == 0]
    have = {r.plan: r for r in rows}
    if plan is None:
        plan = next((p for p in all_layers_plans(F) if p in have), None)
    if plan not in have:
        raise UserError(f"no finished run of plan {plan!r} on {target!r}, fold {fold}; "
                        f"plans with finished runs: {sorted(have)[:8]}")
    path = weights_path(F.out / have[plan].run_dir)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: the study did not keep this run's weights; rerun the study "
            f"with --set study.save_weights=all and --force on this run, or "
            f"study.save_weights=figures (the default) for the all-layers run of fold 0")
    return keras.saving.load_model(path, compile=False)


AM_LEARNING_RATE = 0.03   # Adam step on the input: tf-keras-vis' default (RMSprop, 1.0)
                          # jumps across the whole [0, 1] range and saturates every pixel
AM_TOTAL_VARIATION = 1.0  # smoothness prior (TotalVariation2D weight)
AM_NORM = 0.3             # keeps values near the seed's grey (L2 Norm weight)
AM_JITTER, AM_ROTATION = 2, 3.0   # pixels, degrees: random moves each step (robust patterns)
DISPLAY_PERCENTILES = (1.0, 99.0)  # each pattern is stretched between these for display


def activation_maximization(model, layer: str, filters: Sequence[int], steps: int = 100,
                            seed: int = 0) -> np.ndarray:
    """Inputs maximising the mean activation of each filter of ``layer`` (raw values).

    tf-keras-vis ``ActivationMaximization`` with an Adam step of
    :data:`AM_LEARNING_RATE` on the input (not its default RMSprop step of 1.0, which
    saturates every pixel to black or white), total-variation and L2-norm regularizers,
    and jitter + rotation of the input every step, from a grey seed. ``steps`` is capped
    by ``$UNET_FT_MAX_AM_STEPS``. Use :func:`for_display` to show the result.
    """
    import keras
    import tensorflow as tf
    from tf_keras_vis.activation_maximization import ActivationMaximization
    from tf_keras_vis.activation_maximization.input_modifiers import Jitter, Rotate2D
    from tf_keras_vis.activation_maximization.regularizers import Norm, TotalVariation2D

    steps = am_steps(steps)
    sub = keras.Model(model.inputs, model.get_layer(layer).output)
    n_filters = sub.output.shape[-1]
    bad = [f for f in filters if not 0 <= f < n_filters]
    if bad:
        raise UserError(f"layer {layer} has {n_filters} filters; got indices {bad}")
    filters = list(filters)

    def score(output):
        return tf.stack([tf.reduce_mean(output[i, ..., f]) for i, f in enumerate(filters)])

    keras.utils.set_random_seed(seed)   # jitter and rotation draw random numbers
    shape = (len(filters),) + tuple(model.input_shape[1:])
    seed_input = tf.random.stateless_uniform(shape, seed=(seed, 0), minval=0.45, maxval=0.55)
    am = ActivationMaximization(sub, clone=False)
    result = am(score, seed_input=seed_input, steps=int(steps), input_range=(0.0, 1.0),
                optimizer=keras.optimizers.Adam(AM_LEARNING_RATE),
                input_modifiers=[Jitter(jitter=AM_JITTER), Rotate2D(degree=AM_ROTATION)],
                regularizers=[TotalVariation2D(weight=AM_TOTAL_VARIATION),
                              Norm(weight=AM_NORM, p=2)])
    return np.asarray(result, dtype=np.float32)


def am_steps(steps: int) -> int:
    """Activation-maximization steps, capped by ``$UNET_FT_MAX_AM_STEPS`` (tests)."""
    cap = os.environ.get(MAX_AM_STEPS_ENV)
    if cap:
        steps = min(int(steps), int(cap))
    if steps < 1:
        raise UserError(f"steps must be >= 1, got {steps}")
    return int(steps)


def for_display(pattern: np.ndarray):
    """``(image in [0, 1], flat)``: the pattern stretched between its 1st and 99th
    percentiles; ``flat`` when it hardly varies (a filter that never fires: no gradient
    reached the input)."""
    lo, hi = np.percentile(pattern, DISPLAY_PERCENTILES)
    if hi - lo < 1e-3:
        return np.full_like(pattern, 0.5), True
    return np.clip((pattern - lo) / (hi - lo), 0, 1), False


def am_layers(model) -> List[str]:
    """The 4th conv layer (the paper's; the last one of a net with fewer) and the deepest
    conv layer with more than 2 filters, in data-flow order; convolutions that have filters
    of their own (not depthwise ones)."""
    convs = [c for c in BlockMap(model).conv_layers()
             if getattr(model.get_layer(c), "filters", None)]
    deep = [c for c in convs if model.get_layer(c).filters > 2] or convs
    return [convs[min(3, len(convs) - 1)], deep[-1]]


def fig5_activation_maximization(out, target: Optional[str] = None, n_filters: int = 8,
                                 steps: int = 100, plan: Optional[str] = None,
                                 folder=None) -> Optional[pathlib.Path]:
    """Activation maximization of the 4th and the deepest conv layer (net tuned on ultrasound).

    ``plan`` defaults to the all-layers plan of the study (``shallow_to_deep:9``,
    ``all`` or ``xunet/all``).
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        log.warning("Fig. 5 not drawn: activation maximization (tf-keras-vis) needs the "
                    "TensorFlow backend; KERAS_BACKEND is %r", keras.backend.backend())
        return None
    plt = _plt()
    F = LoadedFolder.load(out)
    R = F.results
    target = target or _ultrasound_target(R)
    if target is None:
        return None
    have = {r.plan for r in R if r.target == target}
    plan = plan or next((p for p in all_layers_plans(F) if p in have), None)
    if plan is None:
        return None
    try:
        model = finetuned_model(F, target, plan)
    except FileNotFoundError as e:
        log.warning("Fig. 5 not drawn: %s", e)
        return None
    layers = am_layers(model)
    fig, axes = plt.subplots(len(layers), n_filters, figsize=(1.6 * n_filters, 2.0 * len(layers) + 0.8),
                             squeeze=False, layout="constrained")
    for r, layer in enumerate(layers):
        n = min(n_filters, model.get_layer(layer).filters)
        imgs = activation_maximization(model, layer, list(range(n)), steps)
        for c in range(n_filters):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            if c < n:
                shown, flat = for_display(imgs[c, ..., 0])
                ax.imshow(shown, cmap="gray", vmin=0, vmax=1)
                ax.set_title(f"filter {c}" + (" (inactive)" if flat else ""), fontsize=7)
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(f"{layer}\n({'4th conv' if r == 0 else 'deepest conv'})",
                              fontsize=8)
    fig.suptitle(f"Fig. 5 — inputs maximising filter activations, net fine-tuned on {target} "
                 f"({plan}); top: shallow, bottom: deep.\n{am_steps(steps)} Adam steps, TV + L2 "
                 "regularised, jitter + rotation; each stretched to its 1-99th percentile",
                 fontsize=9)
    return _save(fig, F.out, "fig5_activation_maximization", folder)


# ---------------------------------------------------------------------------
def fig_dice_boxplots(out) -> Optional[pathlib.Path]:
    """Per-image Dice of every plan (pooled over folds), one panel per target."""
    plt = _plt()
    F = LoadedFolder.load(out)
    R = [r for r in F.results if r.ok]
    targets = _targets(R)
    if not targets:
        return None
    fig, axes = plt.subplots(len(targets), 1, figsize=(max(8, 0.45 * 25), 3.6 * len(targets)),
                             squeeze=False)
    for ax, t in zip(axes[:, 0], targets):
        groups = _runs_by_plan(R, t)
        plans = list(groups)
        data = [[x["dice"] for r in rs for x in F.per_image[r.run_dir].values()]
                for rs in groups.values()]
        ax.boxplot(data, showfliers=False)
        ax.set_xticks(range(1, len(plans) + 1), plans, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("Dice per held-out image")
        ax.set_title(t)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return _save(fig, F.out, "dice_boxplots")


def pareto_front(points: Sequence[tuple]) -> List[str]:
    """The names of ``(name, params, dice)`` points no other point beats with as many or
    fewer parameters: sorted by parameters, each one better than every point before it.

    Examples:
        >>> pareto_front([("a", 10, 0.5), ("b", 100, 0.4), ("c", 1000, 0.7), ("d", 5, 0.3)])
        ['d', 'a', 'c']
    """
    front, best = [], -math.inf
    for name, _, dice in sorted(points, key=lambda p: (p[1], -p[2])):
        if dice > best:
            front.append(name)
            best = dice
    return front


def fig_dice_vs_params(out, target: str) -> Optional[pathlib.Path]:
    """Dice (image mean, 95 % interval) against trainable parameters, one point per plan of
    ``target`` (baselines as lines), the Pareto front joined: what each parameter budget
    buys. Blue: block plans; orange: other ways to fine-tune; grey: other networks or
    staged plans. Each point carries a number, placed where no other number or point is;
    the list beside the axes maps numbers to plans (:func:`dice_vs_params_figure`)."""
    F = LoadedFolder.load(out)
    fig = dice_vs_params_figure([r for r in F.summary if r.target == target], target)
    return None if fig is None else _save(fig, F.out, f"dice_vs_params_{target}")


#: the numbers on the points of dice_vs_params_*.png (``Text.get_gid``)
POINT_NUMBER_GID = "point-number"
_LABEL_RADII = (7, 11, 16, 22, 29, 37, 46, 56, 68, 82, 98, 116, 136)   # points from the marker
_LABEL_ANGLES = np.deg2rad([45, 135, 315, 225, 90, 270, 0, 180, 22.5, 67.5, 112.5, 157.5,
                            202.5, 247.5, 292.5, 337.5])


def _overlaps(box, boxes) -> bool:
    return any(box.x0 < b.x1 and b.x0 < box.x1 and box.y0 < b.y1 and b.y0 < box.y1
               for b in boxes)


def _place_numbers(fig, ax, xy: Sequence[tuple], labels: Sequence[str], colors,
                   spans: Sequence[tuple] = ()) -> list:
    """Put ``labels[i]`` near the data point ``xy[i]`` where its box meets no other label's
    box, no marker and no error bar (``spans``: ``(x, y low, y high)`` in data units): the
    first free spot on rings of growing radius (inside the axes while one is free there),
    joined to its point by a thin line when it had to move away. Returns the Text artists
    (``gid`` :data:`POINT_NUMBER_GID`)."""
    from matplotlib.transforms import Bbox, offset_copy

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    to_px = fig.dpi / 72.0
    points = [ax.transData.transform(p) for p in xy]
    marker = 4.0 * to_px   # half a marker, in pixels
    taken = [Bbox.from_extents(x - marker, y - marker, x + marker, y + marker)
             for x, y in points]
    for x, lo, hi in spans:
        (x0, y0), (_, y1) = ax.transData.transform([(x, lo), (x, hi)])
        taken.append(Bbox.from_extents(x0 - 2.5 * to_px, y0 - 1, x0 + 2.5 * to_px, y1 + 1))
    texts = []
    for (x, y), (px, py), label, color in zip(xy, points, labels, colors):
        probe = ax.text(0, 0, label, fontsize=6.5, fontweight="bold")
        w, h = (lambda b: (b.width, b.height))(probe.get_window_extent(renderer))
        probe.remove()
        spots = [(r * math.cos(a), r * math.sin(a)) for r in _LABEL_RADII for a in _LABEL_ANGLES]
        best = None
        for inside in (True, False):
            for dx, dy in spots:
                cx, cy = px + dx * to_px, py + dy * to_px
                box = Bbox.from_extents(cx - w / 2 - 1, cy - h / 2 - 1, cx + w / 2 + 1,
                                        cy + h / 2 + 1)
                if inside and not (frame.x0 <= box.x0 and box.x1 <= frame.x1
                                   and frame.y0 <= box.y0 and box.y1 <= frame.y1):
                    continue
                if not _overlaps(box, taken):
                    best = (dx, dy, box)
                    break
            if best:
                break
        if best is None:   # every ring is full: one more ring outside the last
            r = _LABEL_RADII[-1] + 20 * (1 + len(texts))
            dx, dy = r, 0.0
            cx, cy = px + dx * to_px, py
            best = (dx, dy, Bbox.from_extents(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        dx, dy, box = best
        taken.append(box)
        t = ax.text(x, y, label, fontsize=6.5, fontweight="bold", color=color, ha="center",
                    va="center", clip_on=False, gid=POINT_NUMBER_GID,
                    transform=offset_copy(ax.transData, fig=fig, x=dx, y=dy, units="points"))
        texts.append(t)
        if math.hypot(dx, dy) > _LABEL_RADII[0] + 1:
            ax.annotate("", (x, y), xytext=(dx, dy), textcoords="offset points",
                        arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.55",
                                    "shrinkA": 4, "shrinkB": 3}, annotation_clip=False)
    return texts


def dice_vs_params_figure(S: List[dict], target: str):
    """The figure of :func:`fig_dice_vs_params` from the summary rows of ``target``, not
    saved (None with fewer than two plans to draw). Plans are numbered by trainable
    parameters (then Dice, best first); the list to the right of the axes names them, an
    asterisk marking the Pareto front."""
    plt = _plt()
    pts, colors, bars = [], [], []
    for r in S:
        q = Plan.parse(r["plan"])
        dice, n = _num(r.get("dice_images_mean")), _num(r.get("trainable_params"))
        if q.is_baseline or not (math.isfinite(dice) and n > 0):
            continue
        pts.append((r["plan"], n, dice))
        colors.append(SHALLOW_COLOR if q.is_block_plan else "tab:orange" if q.is_method
                      else "tab:gray")
        bars.append((dice - _num(r.get("dice_ci_low")), _num(r.get("dice_ci_high")) - dice))
    if len(pts) < 2:
        return None
    order = sorted(range(len(pts)), key=lambda i: (pts[i][1], -pts[i][2], pts[i][0]))
    pts, colors, bars = ([v[i] for i in order] for v in (pts, colors, bars))
    front = pareto_front(pts)
    per_column = 26
    columns = math.ceil(len(pts) / per_column)
    fig, ax = plt.subplots(figsize=(7.5 + 1.9 * columns, 4.8))
    fig.subplots_adjust(left=0.08, right=1 - 1.9 * columns / (7.5 + 1.9 * columns), top=0.9,
                        bottom=0.22)
    for (name, n, dice), c, (lo, hi) in zip(pts, colors, bars):
        err = [[lo], [hi]] if math.isfinite(lo) and math.isfinite(hi) else None
        ax.errorbar([n], [dice], yerr=err, fmt="o", color=c, ms=6 if name in front else 4,
                    mec="black" if name in front else c, capsize=2, lw=0.8)
    fx = [(n, d) for name, n, d in pts if name in front]
    ax.step([p[0] for p in fx], [p[1] for p in fx], where="post", color="black", lw=0.8,
            alpha=0.6, label="Pareto front (no plan better with fewer parameters)")
    for base, style in (("none", ":"), ("scratch", "--")):
        row = next((r for r in S if r["plan"] == base), None)
        if row is not None and math.isfinite(_num(row.get("dice_images_mean"))):
            ax.axhline(_num(row["dice_images_mean"]), ls=style, color="tab:red", lw=0.8,
                       label=f"{base} (baseline)")
    ax.set_xscale("log")
    ax.margins(x=0.12, y=0.12)
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel("Dice (held-out images, 95 % interval)")
    ax.set_title(f"{target}: Dice against trainable parameters (blue: blocks, orange: other "
                 "ways, black edge: Pareto front)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3,
              frameon=False)
    names = [f"{i + 1:>2} {name}{' *' if name in front else ''}" for i, (name, _, _) in
             enumerate(pts)]
    for col in range(columns):
        chunk = names[col * per_column:(col + 1) * per_column]
        ax.text(1.03 + col * 1.9 / 7.5, 1.0, ("plan (* front)\n" if col == 0 else "\n")
                + "\n".join(chunk), transform=ax.transAxes, va="top", ha="left", fontsize=6.5,
                family="monospace", gid="plan-list")
    fig.canvas.draw()
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())
    _place_numbers(fig, ax, [(n, d) for _, n, d in pts], [str(i + 1) for i in range(len(pts))],
                   colors, [(n, d - lo, d + hi) for (_, n, d), (lo, hi) in zip(pts, bars)
                            if math.isfinite(lo) and math.isfinite(hi)])
    return fig


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def fig_training_time(out) -> Optional[pathlib.Path]:
    """Mean training seconds per epoch of each plan (over folds)."""
    plt = _plt()
    F = LoadedFolder.load(out)
    S = [r for r in F.summary if r.plan != "none"]
    targets = _targets(S)
    if not targets:
        return None
    fig, axes = plt.subplots(len(targets), 1, figsize=(11, 3.2 * len(targets)), squeeze=False)
    for ax, t in zip(axes[:, 0], targets):
        rows = [r for r in S if r.target == t]
        # the same seconds as REPORT.md's table: the steady state where runs recorded it
        key = epoch_seconds_key(rows)
        steady = key == "steady_seconds_per_epoch"
        ax.bar(range(len(rows)), [_f(r[key]) for r in rows], color="tab:gray")
        ax.set_xticks(range(len(rows)), [r.plan for r in rows], rotation=60, ha="right",
                      fontsize=7)
        ax.set_ylabel("s / epoch (median after the 1st)" if steady else "s / epoch")
        ax.set_title(f"{t}: training time per plan")
    fig.tight_layout()
    return _save(fig, F.out, "training_time")


def fig_param_share(out) -> pathlib.Path:
    """Share of the parameters per block (the block table of the study's model, runs.json)."""
    plt = _plt()
    F = LoadedFolder.load(out)
    table = F.manifest.study_model
    rows, total = table.blocks, table.total_params
    colors = {"contracting": SHALLOW_COLOR, "bottleneck": "tab:purple", "expanding": DEEP_COLOR}
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.bar([r["block"] for r in rows], [r["share_percent"] for r in rows],
           color=[colors[r["part"]] for r in rows])
    for r in rows:
        ax.text(r["block"], r["share_percent"], f"{r['share_percent']:.2f}%", ha="center",
                va="bottom", fontsize=7)
    ax.set_xticks([r["block"] for r in rows])
    ax.set_xlabel("block (1 = shallowest, path scheme)")
    ax.set_ylabel("% of parameters")
    name = f"{table.description}\n" if table.description else ""
    ax.set_title(f"{name}Parameter share per block ({total:,} parameters; blue: contracting, "
                 "purple: bottleneck, red: expanding)", fontsize=9)
    fig.tight_layout()
    return _save(fig, F.out, "param_share")


def fig_weight_change(out, target: Optional[str] = None) -> Optional[pathlib.Path]:
    """Relative weight change ||W_ft - W_pre|| / ||W_pre|| per block and plan (mean over folds)."""
    plt = _plt()
    F = LoadedFolder.load(out)
    R = [r for r in F.results if r.ok and r.plan not in ("none", "scratch")]
    target = target or _ultrasound_target(R)
    if target is None:
        return None
    groups = _runs_by_plan(R, target)
    plans = list(groups)
    mats = []
    for rs in groups.values():
        vals = []
        for r in rs:
            wc = (F.run_summaries[r.run_dir] or {}).get("weight_change")
            if wc:
                vals.append([wc[k] for k in sorted(wc, key=int)])
        mats.append(np.mean(vals, axis=0) if vals else None)
    keep = [i for i, m in enumerate(mats) if m is not None]
    if not keep:
        return None
    M = np.array([mats[i] for i in keep])
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(keep) + 1.8))
    im = ax.imshow(M, aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(keep)), [plans[i] for i in keep], fontsize=7)
    ax.set_xticks(range(M.shape[1]), [str(i + 1) for i in range(M.shape[1])])
    ax.set_xlabel("block (1 = shallowest)")
    fig.colorbar(im, ax=ax, label="||W_ft − W_pre|| / ||W_pre||")
    ax.set_title(f"{target}: which blocks moved during fine-tuning", fontsize=9)
    fig.tight_layout()
    return _save(fig, F.out, f"weight_change_{target}")


SIZE_LABELS = {"xunet/all": "X-Unet, all layers",
               "vunet/expanding:blocks>all": "V-Unet, decoder then all"}


def fig_dice_vs_size(out) -> Optional[pathlib.Path]:
    """Dice vs number of training images, with and without augmentation (Cheng & Lam).

    One panel per target; one colour per model/plan; solid = augmented, dashed =
    the originals only; error bars: std over folds. Sizes skipped in every fold
    (a fold with fewer training images) are not drawn.
    """
    F = LoadedFolder.load(out)
    if not F.sizes_summary:
        return None
    plt = _plt()
    S = [r for r in F.sizes_summary if int(r["folds_ok"]) > 0]
    targets = _targets(S)
    if not targets:
        return None
    fig, axes = plt.subplots(1, len(targets), figsize=(5.6 * len(targets), 4.2), squeeze=False)
    colors = ["tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:cyan"]
    for ax, t in zip(axes[0], targets):
        rows = [r for r in S if r["target"] == t]
        plans = list(dict.fromkeys(r["plan"] for r in rows))
        for plan, color in zip(plans, colors * 4):
            for aug, ls, mk in ((1, "-", "o"), (0, "--", "s")):
                pts = sorted((int(r["n_originals"]), _f(r["dice_mean"]), _f(r["dice_std"]))
                             for r in rows if r["plan"] == plan and int(r["augment"]) == aug)
                if not pts:
                    continue
                n, m, sd = zip(*pts)
                ax.errorbar(n, m, yerr=sd, color=color, ls=ls, marker=mk, capsize=3,
                            mfc="white" if not aug else color,
                            label=f"{SIZE_LABELS.get(plan, plan)}, "
                                  f"{'augmented' if aug else 'no augmentation'}")
        ns = sorted({int(r["n_originals"]) for r in rows})
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
        ax.set_xlabel("original training images per fold")
        ax.set_ylabel("average Dice (held-out folds)")
        ax.set_title(t)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle("Dice vs training-set size (Cheng & Lam's data-size study); "
                 "error bars: std over folds", fontsize=10)
    fig.tight_layout()
    return _save(fig, F.out, "dice_vs_training_size")


def make_all_figures(out, steps: int = 100) -> List[pathlib.Path]:
    """Every figure the results folder (loaded, or a path: loaded once here) has data for;
    returns the PNG paths."""
    F = LoadedFolder.load(out)
    targets = _targets(F.summary)
    made = [fig4_dice_vs_blocks(F, "path"), fig4_dice_vs_blocks(F, "level"),
            fig_dice_boxplots(F), fig_training_time(F), fig_param_share(F),
            fig_weight_change(F), fig_dice_vs_size(F)]
    made += [fig3_examples(F, t) for t in targets]
    made += [fig_dice_vs_params(F, t) for t in targets]
    made += [fig3_examples(F, t, plans=CHENG_FIG3, name="examples_vunet_vs_xunet")
             for t in targets]
    made.append(fig5_activation_maximization(F, steps=steps))
    return [p for p in made if p]
