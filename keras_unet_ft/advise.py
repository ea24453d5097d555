"""``unet-ft advise``: which layers to fine-tune on *your* data, in minutes instead of a grid.

Two steps on one inner split of the target's images (a seeded, class-stratified
holdout of about ``1 / finetune.folds``, near-duplicates kept on one side):

1. **Probe (no training)** - Auto-RGN (Lee et al. 2022, "Surgical fine-tuning improves
   adaptation to distribution shifts"): per block, the relative gradient norm
   ``||g|| / ||w||`` of the fine-tuning loss on the training images at the pretrained
   weights, averaged over batches, ranked. Blocks whose weights the target pulls on
   hardest come first. Beside it, the best zero-training predictor of the measured
   agreement with full grids (:mod:`keras_unet_ft.probes`, ``probe_agreement.json``)
   ranks the plans: the first rung trains them in that order, so a ``--budget`` that ends
   the first rung keeps the plans predicted best (said in ADVICE.md, with the plans left
   untrained).
2. **Successive halving** (Jamieson & Talwalkar 2016; the engine of Hyperband) over the
   plan set: every plan gets a short budget, the better half is kept, the budget
   doubles, until the last rung has trained the survivors for the full
   ``finetune.epochs``. A survivor goes on from where it stopped (weights and Adam
   state kept, as in Hyperband / ASHA), so a rung trains only the budget it adds;
   plans whose trainable set changes during training (``gradual``, staged ``A>B``) are
   trained again from the pretrained weights. A fractional budget trains whole epochs
   on a seeded share of the augmented images (the same image-steps). The survivors
   are ranked on the validation images with paired 95 % bootstrap intervals against
   the best: the plans whose interval holds 0 are tied with it.
3. **The study's rule** - the best is recommended only when the paired interval of
   best − none (the pretrained net untouched, evaluated on the same validation images,
   no training) lies above 0, as ``unet-ft study`` decides; otherwise the advice says
   that no plan is recommended. A profile too small to learn (``smoke``) is said first.

Writes ``advice.json`` and ``ADVICE.md`` to the output folder (and ``pretrained/`` when
it pretrains). The advice rests on one split: it is a fast first answer, the study's
cross-validation (``unet-ft study``) is the evidence.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import pathlib
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from .config import TOO_SMALL_TO_LEARN, Config
from .data.study_data import fold_arrays, inner_fold, load_target, target_folds
from .deploy import pretrained_weights
from .exitcodes import UserError
from .finetune import FoldSession, evaluate, run_one
from .io import atomic_write_text, write_json
from .layout import ADVICE_JSON, ADVICE_MD, RunSummary, splits_path, target_slug
from .model import build_from_config, describe_model, model_config
from .plans import PER_VARIABLE_TRAINERS, Plan, group_plans, plan_set
from .trainable import plan_report, trained_layers
from .trainers import Resumable
from .provenance import write_provenance
from .runtime import Diverged, backend, make_dataset, make_loss, resolve_precision
from .stats import bootstrap_ci, ci_verdict
from .study import block_map

log = logging.getLogger("keras_unet_ft")

#: survivors of the last rung (trained for the full epochs and compared with intervals)
FINAL_SURVIVORS = 2
#: batches of training images the probe averages over
PROBE_BATCHES = 8


# -- 1. the probe ---------------------------------------------------------------------
def rgn_probe(model, bm, images: np.ndarray, masks: np.ndarray, loss: str = "bce",
              batch_size: int = 8, batches: int = PROBE_BATCHES, seed: int = 0) -> List[dict]:
    """Relative gradient norm ``||g|| / ||w||`` of every block at the model's weights.

    Args:
        model: the pretrained network (not changed). bm: its :class:`BlockMap`.
        images, masks: training images and masks ``(N, H, W, 1)``.
        loss: the fine-tuning loss (``finetune.loss``).
        batch_size, batches: the gradient is taken on ``batches`` seeded batches and the
            ratio averaged over them.

    Returns:
        One row per block, ranked (highest first): ``block, part, level, params, rgn,
        rank``.
    """
    import tensorflow as tf

    loss_fn = make_loss(loss)
    owners = []
    for b in bm.blocks:
        names = set(b.weighted_layers)
        owners.append([v for layer in model.layers if layer.name in names
                       for v in layer.trainable_weights])
    variables = [v for vs in owners for v in vs]
    if not variables:
        raise ValueError("the model has no trainable weights to probe")
    rng = np.random.default_rng(seed)
    n = len(images)
    ratios = np.zeros((0, len(bm.blocks)))
    for _ in range(max(1, batches)):
        idx = rng.choice(n, size=min(batch_size, n), replace=False)
        x = tf.convert_to_tensor(images[idx])
        y = tf.convert_to_tensor(masks[idx].astype("float32"))
        with tf.GradientTape() as tape:
            p = model(x, training=False)
            value = loss_fn(y, tf.cast(p, "float32"))
        grads = tape.gradient(value, variables)
        row, j = [], 0
        for vs in owners:
            g = grads[j:j + len(vs)]
            j += len(vs)
            gn = math.sqrt(sum(float(tf.reduce_sum(tf.square(tf.cast(a, "float32"))))
                               for a in g if a is not None))
            wn = math.sqrt(sum(float(np.sum(np.square(v.numpy().astype("float32"))))
                               for v in vs))
            row.append(gn / wn if wn > 0 else 0.0)
        ratios = np.vstack([ratios, row])
    mean = ratios.mean(axis=0)
    order = np.argsort(-mean, kind="stable")
    rank = np.empty(len(mean), int)
    rank[order] = np.arange(1, len(mean) + 1)
    return [{"block": b.index, "part": b.part, "level": b.level, "params": b.params,
             "rgn": float(mean[i]), "rank": int(rank[i])}
            for i, b in sorted(enumerate(bm.blocks), key=lambda t: rank[t[0]])]


# -- 2. successive halving ----------------------------------------------------------------
def halving_schedule(n: int, epochs: int, final: int = FINAL_SURVIVORS) -> List[dict]:
    """The rungs for ``n`` plans: ``[{"plans": n_i, "epochs": budget_i}]``; the budget
    doubles each rung and is ``epochs`` at the last, where ``final`` plans are left.

    Examples:
        >>> [(r["plans"], r["epochs"]) for r in halving_schedule(19, 12)]
        [(19, 0.75), (10, 1.5), (5, 3.0), (3, 6.0), (2, 12.0)]
        >>> halving_schedule(2, 5)
        [{'plans': 2, 'epochs': 5.0}]
    """
    if n < 1 or epochs < 1:
        raise ValueError(f"successive halving needs >= 1 plan and >= 1 epoch, got {n}, {epochs}")
    counts = [n]
    while counts[-1] > final:
        counts.append(max(final, math.ceil(counts[-1] / 2)))
    h = len(counts) - 1
    return [{"plans": c, "epochs": float(epochs) / 2 ** (h - i)} for i, c in enumerate(counts)]


@dataclasses.dataclass
class Candidate:
    plan: str                       # the canonical plan trained
    aliases: List[str]
    model: str
    trainable_params: int = 0
    scores: Dict[int, float] = dataclasses.field(default_factory=dict)   # rung -> val Dice
    per_image: Dict[str, float] = dataclasses.field(default_factory=dict)  # last rung's
    status: str = "ok"
    reason: str = ""
    trained: float = 0.0            # epochs trained so far (resumed candidates)
    history: List[dict] = dataclasses.field(default_factory=list)
    state: Optional[tuple] = None   # (model weights, optimizer variables) to go on from


def _budget_arrays(train, epochs: float, seed: int):
    """Training arrays and whole epochs for a budget of ``epochs`` (a fraction too): a whole
    number trains that many epochs on every augmented image; otherwise ``ceil(epochs)``
    epochs on a seeded share of them, so the image-steps are ``epochs`` times the set."""
    whole = max(1, math.ceil(epochs - 1e-9))
    if abs(whole - epochs) < 1e-9:
        return train, whole
    n = len(train[0])
    k = max(1, int(round(epochs / whole * n)))
    idx = np.sort(np.random.default_rng(seed).permutation(n)[:k])
    return (train[0][idx], train[1][idx]), whole


def resumable(plan: str, trainer_kind: str) -> bool:
    """Whether a plan can go on from a saved state between rungs: one stage, the same
    trainable set throughout, its state the model's weights and Adam's (no learned tensors
    beside them: ``ssf``, ``lora`` train afresh each rung), a trainer whose state the
    package holds (selective or masked)."""
    p = Plan.parse(plan).bare
    return (trainer_kind in PER_VARIABLE_TRAINERS and len(p.steps) == 1 and p.trains
            and not (p.layers_change or p.adaptive or p.spec.fresh_layers is not None
                     or p.reparam is not None))


def _go_on(c: Candidate, cfg: Config, session: FoldSession, weights, train, val,
           epochs: float, seed: int):
    """Train candidate ``c`` ``epochs`` more (from its saved state, else from ``weights``);
    returns ``(per-image Dice of the images with an object, trainable params)``; keeps
    the new state in ``c``. Raises :class:`Diverged`."""
    import keras

    plan = Plan.parse(c.plan).bare
    st = plan.steps[0]
    tr = session.trainer
    if not isinstance(tr, Resumable):
        raise TypeError(f"the {tr.name} trainer cannot go on from a saved state (it lacks "
                        f"reset, fit, predict, state or restore_optimizer of the Resumable "
                        f"protocol); plan {c.plan!r} must be trained afresh each rung")
    tr.reset(weights if c.state is None else c.state[0], st.trainable_layers(session.bm),
             cfg.finetune.learning_rate, st, session.bm)
    if c.state is not None:
        tr.restore_optimizer(c.state)
    arrays, whole = _budget_arrays(train, epochs, seed)
    keras.utils.set_random_seed(seed)
    ds = make_dataset(arrays[0], arrays[1], cfg.finetune.batch_size, shuffle=True, seed=seed)
    rows, _ = tr.fit(ds, whole)
    c.history += rows
    ev = evaluate(tr.predict, val[0], val[1], val[2], c.history, tr.model.get_weights(),
                  cfg.finetune.batch_size)
    if ev.diverged is not None:
        raise Diverged(ev.diverged)
    c.state = tr.state()
    c.trained += epochs
    report = plan_report(tr.model, plan, trained_layers(tr.model, st.trainable_layers(session.bm),
                                                        cfg.finetune.batchnorm))
    return ev.object_scores("dice"), int(report.trainable_params)


def _blocks_of(plan: str, bm) -> List[int]:
    chosen = set(Plan.parse(plan).bare.trainable_layers(bm)) if Plan.parse(plan).trains else set()
    return [b.index for b in bm.blocks if chosen & set(b.weighted_layers)]



def _plans_of_the_model(cfg: Config, plans: Optional[str]):
    """``(kind, block map, units, plan names)``: the fine-tuning plans (baselines left out) of
    ``plans`` (default ``study.plans``) on the study's network; plans of another network are an
    error (they need their own run)."""
    kind = cfg.model.kind
    bm = block_map(cfg, kind)
    units = {"path": bm.units("path"), "level": bm.units("level")}
    names = [p for p in plan_set(plans or cfg.study.plans, units)
             if not Plan.parse(p).is_baseline]
    other = sorted({Plan.parse(p).model_or(kind) for p in names} - {kind})
    if other:
        raise UserError(f"advise compares plans of the study's model ({kind}); plans for "
                        f"{other} need their own run (--set model.kind=...)")
    return kind, bm, units, names


def _prepare(cfg: Config, target: str, out, plans, pretrained, verbose: int, verb: str,
             command: str):
    """What advise and its probe alone both start from: the TensorFlow backend (refused
    otherwise, naming ``command``), the resolved precision, the plans of the study's network
    (grouped), the target, provenance, the pretrained weights (and their source) and the
    inner split of the target (near-duplicate groups kept on one side)."""
    if backend() != "tensorflow":
        raise UserError(f"unet-ft {command} needs the TensorFlow backend (its probes and its "
                        f"training use it); KERAS_BACKEND is {backend()!r}")
    precision = resolve_precision(cfg.study.precision)
    kind, bm, units, names = _plans_of_the_model(cfg, plans)
    if not names:
        raise UserError(f"no plans to {verb}: give --plans with at least one fine-tuning plan")
    groups = group_plans(names, {kind: bm}, kind)
    ds = load_target(cfg, target)
    write_provenance(cfg, out, precision)
    weights, source = pretrained_weights(cfg, kind, out, pretrained, precision, verbose)
    path = splits_path(out, target)
    target_folds(cfg, ds, path)   # finds near-duplicate groups (kept on one side)
    split = inner_fold(cfg, ds, {"train": list(ds.ids), "test": []}, 0, path)
    return precision, kind, bm, units, names, groups, ds, weights, source, split

def advise(cfg: Config, target: str, out, plans: Optional[str] = None,
           budget_minutes: Optional[float] = None, pretrained=None, verbose: int = 0,
           progress: bool = True) -> dict:
    """Probe and successive halving on an inner split of ``target``; writes the advice.

    Args:
        cfg: the config (model, fine-tuning settings, seed, trainer).
        target: dataset spec, e.g. ``busi:/data/Dataset_BUSI_with_GT``.
        out: output folder (``advice.json``, ``ADVICE.md``, ``splits/``, ``pretrained/``).
        plans: plan set or comma-separated plans (default ``study.plans``); baselines and
            plans that train the same layers as another are not candidates twice.
        budget_minutes: stop before a rung that would end after this many minutes; the
            advice is then the best of the last finished rung, said so.
        pretrained: a pretrained ``.keras`` file or a study folder; None pretrains first.

    Returns:
        The content of ``advice.json``.

    Examples:
        >>> advise(load_config("quick"), "busi:/data/Dataset_BUSI_with_GT", "advice/busi",
        ...        pretrained="results/quick")  # doctest: +SKIP
    """
    from .runtime import progress_bar

    t_start = time.perf_counter()
    out = pathlib.Path(out)
    if budget_minutes is not None and not budget_minutes > 0:
        raise UserError(f"--budget must be a number of minutes > 0, got {budget_minutes!r}")
    precision, kind, bm, units, names, groups, ds, weights, source, split = _prepare(
        cfg, target, out, plans, pretrained, verbose, "compare", "advise")
    t_pre = time.perf_counter()
    train, val = fold_arrays(cfg, ds, split, 0)
    if not (val[1].reshape(len(val[1]), -1).max(axis=1) > 0).any():
        raise UserError(f"none of the {len(val[1])} validation images of {target} has an "
                        "object: nothing to rank plans by")

    # 1. the probes, at the pretrained weights: Auto-RGN (shown) and the best measured
    # predictor, whose ranking orders the first rung (a budget that ends it keeps the plans
    # predicted best)
    probe_model = build_from_config(model_config(cfg, kind))
    probe_model.set_weights(weights)
    probe = rgn_probe(probe_model, bm, train[0], train[1], cfg.finetune.loss,
                      cfg.finetune.batch_size, seed=cfg.study.seed)
    predicted = _predicted_order(cfg, probe_model, bm, groups, train[0], train[1])
    del probe_model
    t_probe = time.perf_counter()

    # 2. successive halving, the first rung in the predicted order
    cands = [Candidate(c, a, k) for c, a, k in groups]
    if predicted["order"]:
        pos = {p: i for i, p in enumerate(predicted["order"])}
        cands.sort(key=lambda c: pos[c.plan])
    schedule = halving_schedule(len(cands), cfg.finetune.epochs)
    alive = list(cands)
    rungs, stopped = [], None
    steps_per_epoch = len(train[0])
    rate = None   # seconds per (plan x epoch), measured
    for i, rung in enumerate(schedule):
        alive = alive[:rung["plans"]] if i else alive
        if budget_minutes is not None and rate is not None:
            left = budget_minutes * 60 - (time.perf_counter() - t_start)
            need = rate * sum(rung["epochs"] - (c.trained if c.state is not None else 0)
                              for c in alive)
            if need > left:
                stopped = (f"stopped before rung {i + 1} of {len(schedule)}: it needs about "
                           f"{_duration(need)}, {_duration(left)} of the "
                           f"{budget_minutes:g}-minute budget are left")
                log.warning("advise: %s", stopped)
                break
        rcfg = copy.deepcopy(cfg)
        arrays, epochs = _budget_arrays(train, rung["epochs"], cfg.study.seed + i)
        rcfg.finetune.epochs = epochs
        t0 = time.perf_counter()
        added = 0.0
        bar = progress_bar(alive, desc=f"advise rung {i + 1}/{len(schedule)} "
                                      f"({rung['epochs']:g} epochs)", unit="plan",
                           disable=not progress)
        for j, c in enumerate(bar):
            if i == 0 and j and budget_minutes is not None:
                # the first rung has no measured rate before it: each plan's own time
                # decides whether the next fits (the plans left are the ones predicted worse)
                left = budget_minutes * 60 - (time.perf_counter() - t_start)
                per_plan = (time.perf_counter() - t0) / j
                if per_plan > left:
                    untrained = alive[j:]
                    stopped = (f"stopped during rung 1 of {len(schedule)} after {j} of "
                               f"{len(alive)} plans, taken in the probe's predicted order: the "
                               f"next needs about {_duration(per_plan)}, {_duration(left)} of "
                               f"the {budget_minutes:g}-minute budget are left; not trained: "
                               f"{', '.join(u.plan for u in untrained)}")
                    log.warning("advise: %s", stopped)
                    for u in untrained:
                        u.status, u.reason = "not_trained", "the budget ended the first rung"
                    break
            bar.set_postfix_str(c.plan)
            session = FoldSession(rcfg, 0, precision, None, c.model)
            try:
                if resumable(c.plan, session.trainer_name):
                    more = rung["epochs"] - c.trained
                    c.per_image, c.trainable_params = _go_on(
                        c, cfg, session, weights, train, val, more, cfg.study.seed + 1000 * i)
                    added += more
                else:
                    res = run_one(rcfg, target, 0, c.plan, c.model, arrays, val, weights,
                                  session)
                    added += rung["epochs"]
                    run = RunSummary.from_dict(res.summary)
                    if not run.ok:
                        raise Diverged(run.reason or run.status)
                    c.trainable_params = int(res.summary["trainable_params"])
                    c.per_image = {r["id"]: r["dice"] for r in res.per_image
                                   if not r["empty_mask"]}
            except Diverged as e:
                c.status, c.reason, c.scores[i], c.state = "diverged", str(e), -math.inf, None
                continue
            c.scores[i] = float(np.mean(list(c.per_image.values())))
        seconds = time.perf_counter() - t0
        ranked = sorted((c for c in alive if i in c.scores),
                        key=lambda c: (-c.scores[i], c.trainable_params, c.plan))
        alive = [c for c in ranked if c.status == "ok"]   # a diverged plan never goes on
        nxt = schedule[i + 1] if i + 1 < len(schedule) else None
        rate = seconds / max(1e-9, added)   # seconds per plan-epoch
        for c in alive[nxt["plans"] if nxt else len(alive):]:
            c.state = None                  # dropped: free its saved state
        rungs.append({"rung": i + 1, "epochs": rung["epochs"], "epochs_added": added,
                      "image_steps": int(rung["epochs"] * len(train[0])), "plans": len(ranked),
                      "seconds": seconds,
                      "scores": {c.plan: c.scores[i] if c.status == "ok" else None
                                 for c in ranked}})
        if stopped:   # the budget ended the first rung: its trained plans are the finalists
            break
    done = len(rungs)
    if not done:
        raise UserError(f"--budget {budget_minutes} min is too short for the first rung")
    last = done - 1
    finalists = [c for c in alive if c.status == "ok" and last in c.scores]
    if not finalists:
        raise RuntimeError("every plan diverged or failed on the last rung; see advice.json")
    best = finalists[0]
    ids = sorted(best.per_image)
    # the pretrained net untouched (the study's baseline ``none``): no training; the best
    # plan is recommended only when the paired interval of best - none lies above 0, the
    # study's rule (results.recommendation)
    session = FoldSession(cfg, 0, precision, None, kind)
    res = run_one(cfg, target, 0, "none", kind, train, val, weights, session)
    # a pretrained net whose predictions are not finite has no Dice to compare with
    run = RunSummary.from_dict(res.summary)
    ok = run.ok
    untouched = {r["id"]: r["dice"] for r in res.per_image if not r["empty_mask"]} if ok else {}
    common = [i for i in ids if i in untouched]
    diff = [best.per_image[i] - untouched[i] for i in common]
    lo, hi = bootstrap_ci(diff) if diff else (math.nan, math.nan)
    nlo, nhi = bootstrap_ci([untouched[i] for i in common]) if common else (math.nan, math.nan)
    verdict = ci_verdict(lo, hi)
    baseline = {"plan": "none", "dice": float(np.mean([untouched[i] for i in common]))
                if common else math.nan, "dice_ci_low": nlo, "dice_ci_high": nhi,
                "best_minus_none": float(np.mean(diff)) if diff else math.nan,
                "ci_low": lo, "ci_high": hi, "verdict": verdict,
                "best_shown_better": verdict == "yes",
                "reason": "" if ok else run.reason or run.status}
    ranking = []
    for c in finalists:
        common = [i for i in ids if i in c.per_image]
        diff = [best.per_image[i] - c.per_image[i] for i in common]
        lo, hi = (bootstrap_ci(diff) if c is not best else (0.0, 0.0))
        vlo, vhi = bootstrap_ci([c.per_image[i] for i in common])
        ranking.append({"plan": c.plan, "aliases": c.aliases, "dice": c.scores[last],
                        "dice_ci_low": vlo, "dice_ci_high": vhi,
                        "best_minus_this": float(np.mean(diff)) if diff else 0.0,
                        "ci_low": lo, "ci_high": hi,
                        "tied_with_best": c is best or ci_verdict(lo, hi) == "tied",
                        "trainable_params": c.trainable_params,
                        "blocks": _blocks_of(c.plan, bm)})
    # the whole order: further rung first, then the score there
    order = sorted(cands, key=lambda c: (-max(c.scores) if c.scores else 1,
                                         -c.scores[max(c.scores)] if c.scores else 0,
                                         c.trainable_params, c.plan))
    tied = [r["plan"] for r in ranking if r["tied_with_best"]]
    cheapest = min((r for r in ranking if r["tied_with_best"]),
                   key=lambda r: r["trainable_params"])
    seconds = time.perf_counter() - t_start
    advice = {
        "target": target, "target_slug": target_slug(target), "n_images": len(ds),
        "n_train": len(split["train"]), "n_val": len(split["test"]),
        "n_val_with_object": len(best.per_image),
        "pretrained": source, "network": describe_model(cfg.model),
        "plans": [c.plan for c in cands], "profile": cfg.profile,
        "too_small_to_learn": cfg.profile in TOO_SMALL_TO_LEARN,
        # None when the best is not shown better than the pretrained net untouched
        "recommendation": best.plan if baseline["best_shown_better"] else None,
        "best": best.plan, "baseline": baseline,
        "recommendation_blocks": _blocks_of(best.plan, bm),
        "recommendation_trainable_params": best.trainable_params,
        "tied_with_best": tied, "fewest_params_tied": cheapest["plan"],
        "ranking": ranking,
        "order": [{"plan": c.plan, "rungs": len(c.scores),
                   "last_score": (c.scores[max(c.scores)] if c.scores and c.status == "ok"
                                  else None),
                   "status": c.status, "reason": c.reason} for c in order],
        "rungs": rungs, "schedule": schedule, "stopped": stopped, "probe": probe,
        "first_rung_order": predicted,
        "seconds": {"pretrained": t_pre - t_start, "probe": t_probe - t_pre,
                    "halving": seconds - (t_probe - t_start), "total": seconds},
        "epochs_trained": sum(r["epochs_added"] for r in rungs),
        "sweep_epochs": len(cands) * cfg.finetune.epochs * cfg.finetune.folds,
        "budget_minutes": budget_minutes, "config": cfg.to_dict(),
        "steps_per_epoch_images": steps_per_epoch,
    }
    write_json(out / ADVICE_JSON, advice)
    atomic_write_text(out / ADVICE_MD, advice_markdown(advice))
    return advice


def _predicted_order(cfg: Config, model, bm, groups, images, masks) -> dict:
    """The candidate plans ranked by the best measured zero-training predictor (the measured
    agreement shipped with the package, :func:`probe_agreement`), only its probe run on the
    training images: ``{"predictor", "order", "agreement", "agreement_learned", "seconds",
    "reason"}``; ``order`` is None when the probe cannot run (``reason`` says why)."""
    from .probes import probe_name, rank_plans, run_probes

    t = time.perf_counter()
    measured = probe_agreement()
    chosen = (measured or {}).get("best") or DEFAULT_PREDICTOR
    out = {"predictor": chosen, "order": None, "reason": "", "network_kind": cfg.model.kind,
           "network": describe_model(cfg.model), "agreement_scale": (measured or {}).get("scale"),
           "agreement": next((r for r in (measured or {}).get("predictors", [])
                              if r["predictor"] == chosen), None),
           "agreement_learned": next((r for r in (measured or {}).get("predictors_learned", [])
                                      if r["predictor"] == chosen), None)}
    probe = probe_name(chosen)
    if probe is None or probe == "shift":   # a baseline, or a probe that needs pretraining images
        out["reason"] = f"the predictor {chosen!r} needs no or other inputs than the target's"
    else:
        blocks, params = _plan_blocks_params(cfg, bm, groups)
        res = run_probes(model, bm, images, masks, loss=cfg.finetune.loss,
                         batch_size=cfg.finetune.batch_size, seed=cfg.study.seed,
                         probes=(probe,))
        order = rank_plans(chosen, {k: v["scores"] for k, v in res.items()}, blocks, params,
                           seed=cfg.study.seed)
        out["order"] = order
        if order is None:
            out["reason"] = f"the probe of {chosen!r} could not run on this network"
    out["seconds"] = time.perf_counter() - t
    return out


def _plan_blocks_params(cfg: Config, bm, groups):
    """Each candidate plan's trained blocks and trainable parameters."""
    from .probes import plan_blocks
    from .trainable import plan_matrix

    blocks = {c: plan_blocks(c, bm) for c, _, _ in groups}
    params = {r.plan: int(r.trainable_params) for r in
              plan_matrix([c for c, _, _ in groups], bm, cfg.finetune.batchnorm)}
    return blocks, params


# -- the advice, for people --------------------------------------------------------------
def _duration(seconds: float) -> str:
    """``42 s`` under a minute and a half, else ``2.5 min``; a negative time left is 0 s."""
    seconds = max(0.0, float(seconds))
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _f(x, nd=3) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


def _blocks(blocks: Sequence[int]) -> str:
    if not blocks:
        return "none"
    runs, start = [], blocks[0]
    for a, b in zip(blocks, list(blocks[1:]) + [None]):
        if b != a + 1:
            runs.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return ", ".join(runs)


def profile_note(a: dict) -> List[str]:
    """The note a reader needs first when the config's profile is too small to learn."""
    if not a.get("too_small_to_learn"):
        return []
    m, f = a["config"]["model"], a["config"]["finetune"]
    return [f"**The {a['profile']} profile checks that the pipeline runs; its nets are too small "
            f"to learn** ({m['size']}×{m['size']} px, base {m['base_filters']} filters, "
            f"{f['epochs']} fine-tuning epochs): this advice says nothing about which layers to "
            "fine-tune. Use the `quick` profile (or larger) for an answer.", ""]


def advice_sentence(a: dict, markdown: bool = True) -> str:
    """The advice in one sentence: the plan to fine-tune, or why none is recommended (the
    best finalist not shown better than the pretrained net untouched: the study's rule)."""
    best = a.get("best", a["recommendation"])
    r = next(x for x in a["ranking"] if x["plan"] == best)
    bold = (lambda t: f"**{t}**") if markdown else (lambda t: t)
    code = (lambda t: f"`{t}`") if markdown else (lambda t: t)
    dice = (f"validation Dice {_f(r['dice'])} [{_f(r['dice_ci_low'])}, "
            f"{_f(r['dice_ci_high'])}]")
    if a["recommendation"] is not None:
        return (f"{bold('Fine-tune ' + code(best))}: blocks {_blocks(r['blocks'])} of "
                f"{len(a['probe'])} ({r['trainable_params']:,} trainable parameters), {dice}.")
    b = a["baseline"]
    if b.get("reason"):
        why = f"the untouched net has no Dice: {b['reason']}"
    elif b["verdict"] == "unknown":
        why = "no validation image was scored by both"
    else:
        why = (f"best − none {_f(b['best_minus_none'])}, 95 % interval "
               f"[{_f(b['ci_low'])}, {_f(b['ci_high'])}]")
    return (f"{bold('No plan is recommended')}: the best finalist, {code(best)} ({dice}), is "
            f"not shown better than the pretrained net untouched (none: validation Dice "
            f"{_f(b['dice'])}; {why}). The fine-tuned nets learned nothing the pretrained net "
            "lacks on these images, so their ranking says nothing about which layers to "
            "fine-tune.")


def advice_markdown(a: dict) -> str:
    """``ADVICE.md`` from the content of ``advice.json``."""
    cfg = a["config"]
    best = a.get("best", a["recommendation"])
    L = [f"# Which layers to fine-tune on {a['target_slug']}? — advice", ""]
    L += profile_note(a)
    L += [advice_sentence(a), ""]
    others = [p for p in a["tied_with_best"] if p != best]
    if a["recommendation"] is None:
        pass   # the sentence above says why there is no recommendation
    elif others:
        L += [f"Tied with it (the 95 % interval of the difference holds 0): "
              f"{', '.join(others)}; the one with the fewest trainable parameters is "
              f"`{a['fewest_params_tied']}`.", ""]
    elif len(a["ranking"]) < 2:
        L += ["It was the only candidate plan: nothing was compared with it (give `--plans` "
              "with more plans for a choice).", ""]
    else:
        L += ["No other finalist is tied with it (every interval of the difference lies "
              "above 0).", ""]
    if a["stopped"]:
        which = ("of the plans the first rung trained" if a["stopped"].startswith("stopped during")
                 else "of the last finished rung")
        L += [f"**The budget ended the search early** ({a['stopped']}): this is the best "
              f"{which}, at a shorter budget than the study's.", ""]
    s = a["seconds"]
    L += [f"{a['n_images']} images of {a['target']}: {a['n_train']} for training (augmented to "
          f"{a['steps_per_epoch_images']} per epoch), {a['n_val']} for validation "
          f"({a['n_val_with_object']} with an object, which the Dice is over). Network: "
          f"{a.get('network') or cfg['model']['kind']}, {cfg['model']['size']} px, base "
          f"{cfg['model']['base_filters']}; pretrained: {a['pretrained']}. Time: "
          f"{s['total']:.0f} s (pretrained model {s['pretrained']:.0f} s, probe "
          f"{s['probe']:.0f} s, successive halving {s['halving']:.0f} s); "
          f"{a['epochs_trained']:g} plan-epochs trained, against {a['sweep_epochs']} for the "
          f"{cfg['finetune']['folds']}-fold grid of these plans.", "",
          "One split, one seed: a fast first answer. The study's cross-validation "
          "(`unet-ft study`) is the evidence.", "",
          "## Finalists" + ("" if a["stopped"] else " (full budget)"), "",
          "| plan | blocks | trainable params | val Dice | 95 % CI | best − this | 95 % CI "
          "| tied |", "|---|---|---|---|---|---|---|---|"]
    for r in a["ranking"]:
        L.append(f"| {r['plan']} | {_blocks(r['blocks'])} | {r['trainable_params']:,} | "
                 f"{_f(r['dice'])} | [{_f(r['dice_ci_low'])}, {_f(r['dice_ci_high'])}] | "
                 f"{_f(r['best_minus_this'])} | [{_f(r['ci_low'])}, {_f(r['ci_high'])}] | "
                 f"{'yes' if r['tied_with_best'] else 'no'} |")
    b = a.get("baseline")
    if b:
        L.append(f"| none (pretrained net untouched, not trained) | none | 0 | {_f(b['dice'])} | "
                 f"[{_f(b['dice_ci_low'])}, {_f(b['dice_ci_high'])}] | "
                 f"{_f(b['best_minus_none'])} | [{_f(b['ci_low'])}, {_f(b['ci_high'])}] | "
                 f"{'yes' if b['verdict'] == 'tied' else 'no' if b['verdict'] != 'unknown' else '-'} |")
    L += ["", "## Successive halving", "",
          "| rung | epochs (in all) | image-steps per plan | plans | plan-epochs trained "
          "| seconds | validation Dice (kept plans first) |", "|---|---|---|---|---|---|---|"]
    for r in a["rungs"]:
        scores = ", ".join(f"{p} {_f(v)}" for p, v in r["scores"].items())
        L.append(f"| {r['rung']} | {r['epochs']:g} | {r['image_steps']} | {r['plans']} | "
                 f"{r['epochs_added']:g} | {r['seconds']:.0f} | {scores} |")
    bad = [o for o in a["order"] if o["status"] != "ok"]
    if bad:
        L += ["", "Left out (diverged, failed or not trained): " + "; ".join(
            f"{o['plan']}: {o['reason']}" for o in bad)]
    first = a.get("first_rung_order") or {}
    if first.get("order"):
        L += ["", f"Rung 1 trained the plans in the order the zero-training probe "
                  f"`{first['predictor']}` predicts (best first; a budget that ends the rung "
                  f"keeps these first): {', '.join(first['order'])}. How far that order is to "
                  f"be trusted: {agreement_sentence(first)}."]
    elif first:
        L += ["", f"Rung 1 trained the plans in the plan set's order: {first['reason']}."]
    L += ["", "## Probe: relative gradient norm per block at the pretrained weights", "",
          "Auto-RGN (Lee et al. 2022): ||g|| / ||w|| of the loss on the training images, "
          f"averaged over {PROBE_BATCHES} batches. No training; a hint of where the target "
          "pulls, not a verdict.", "",
          "| rank | block | part | level | params | RGN |", "|---|---|---|---|---|---|"]
    for p in a["probe"]:
        L.append(f"| {p['rank']} | {p['block']} | {p['part']} | {p['level']} | "
                 f"{p['params']:,} | {p['rgn']:.3g} |")
    return "\n".join(L) + "\n"


# -- the probe alone (``unet-ft advise --probe-only``) ---------------------------------------
#: the measured agreement of the probes with full grids, shipped with the package (written by
#: ``benchmarks/probe_vs_grid.py``)
PROBE_AGREEMENT = pathlib.Path(__file__).resolve().parent / "probe_agreement.json"
#: the predictor used when no measured agreement is at hand
DEFAULT_PREDICTOR = "gps/share"


def probe_agreement(path=None) -> Optional[dict]:
    """The measured agreement of the probes with full grids, or None when not found."""
    import json

    p = pathlib.Path(path) if path else PROBE_AGREEMENT
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def probe_only(cfg: Config, target: str, out, plans: Optional[str] = None, pretrained=None,
               verbose: int = 0, predictor: Optional[str] = None) -> dict:
    """The plans ranked by a zero-training probe (:mod:`keras_unet_ft.probes`), no training.

    The probes look at up to 64 training images of ``advise``'s inner split (the validation
    images are not used) at the pretrained weights. The ranking is that of ``predictor``
    (default: the best predictor of the measured agreement, ``keras_unet_ft/probe_agreement.json``);
    every probe's block scores are written beside it. Writes ``advice.json`` and ``ADVICE.md``
    (the ranking, the probe and its measured agreement with full grids).
    """
    from .data.study_data import load_pretrain_data
    from .probes import MAX_IMAGES, probe_report, rank_plans, run_probes

    t_start = time.perf_counter()
    out = pathlib.Path(out)
    precision, kind, bm, units, names, groups, ds, weights, source, split = _prepare(
        cfg, target, out, plans, pretrained, verbose, "rank", "advise --probe-only")
    t_pre = time.perf_counter()
    index = {i: j for j, i in enumerate(ds.ids)}
    tr = np.array([index[i] for i in split["train"]], dtype=int)
    try:
        pre_images = load_pretrain_data(cfg).images
    except Exception as e:  # noqa: BLE001 - a net not pretrained here: no shift probe
        log.info("advise --probe-only: no pretraining images (%s); the shift probe is left out",
                 e)
        pre_images = None
    model = build_from_config(model_config(cfg, kind))
    model.set_weights(weights)
    pbm = type(bm)(model)
    res = run_probes(model, pbm, ds.images[tr], ds.masks[tr], pre_images=pre_images,
                     loss=cfg.finetune.loss, batch_size=cfg.finetune.batch_size,
                     seed=cfg.study.seed)
    del model
    t_probe = time.perf_counter()
    measured = probe_agreement()
    chosen = predictor or (measured or {}).get("best") or DEFAULT_PREDICTOR
    blocks, params = _plan_blocks_params(cfg, bm, groups)
    scores = {k: v["scores"] for k, v in res.items()}
    order = rank_plans(chosen, scores, blocks, params, seed=cfg.study.seed)
    if order is None:
        raise UserError(f"the probe of predictor {chosen!r} could not run on this network")
    row = next((r for r in (measured or {}).get("predictors", [])
                if r["predictor"] == chosen), None)
    row_learned = next((r for r in (measured or {}).get("predictors_learned", [])
                        if r["predictor"] == chosen), None)
    a = {"target": target, "target_slug": target_slug(target), "n_images": len(ds),
         "n_probe_images": int(min(len(tr), MAX_IMAGES)), "pretrained": source,
         "network": describe_model(cfg.model), "profile": cfg.profile,
         "too_small_to_learn": cfg.profile in TOO_SMALL_TO_LEARN, "probe_only": True,
         "predictor": chosen,
         # the paper's question: the best plan that leaves some block frozen
         "best_partial": next((p for p in order if len(blocks[p]) < len(bm.blocks)), None),
         "ranking": [{"plan": p, "aliases": next(a for c, a, _ in groups if c == p),
                      "blocks": blocks[p], "trainable_params": params[p]} for p in order],
         "probes": probe_report(scores, bm),
         "probe_seconds": {k: v["seconds"] for k, v in res.items()},
         "agreement": row, "agreement_learned": row_learned,
         "agreement_targets": (measured or {}).get("targets"),
         "agreement_scale": (measured or {}).get("scale"), "network_kind": cfg.model.kind,
         "seconds": {"pretrained": t_pre - t_start, "probe": t_probe - t_pre,
                     "total": time.perf_counter() - t_start},
         "config": cfg.to_dict()}
    write_json(out / ADVICE_JSON, a)
    atomic_write_text(out / ADVICE_MD, probe_markdown(a))
    return a


def agreement_sentence(a: dict) -> str:
    """How far the probe's ranking agreed with full grids, in one sentence."""
    r = a.get("agreement")
    if not r:
        return (f"the agreement of {a['predictor']} with full grids has not been measured "
                "(benchmarks/probe_vs_grid.py): treat the ranking as a hint")
    scale = a.get("agreement_scale") or {}
    net = ("the paper's U-Net" + (f", {scale['model.size']} px, base {scale['model.base_filters']}"
                                  if "model.size" in scale else ""))
    text = (f"measured on {r['targets']} full grids of {net} (benchmarks/probe_corpus.csv, a "
            f"reduced scale): {a['predictor']}'s best partial plan lay in the grid's tied-best group "
            f"on {100 * r['partial_top1']:.0f} % of targets (wrong on "
            f"{100 * (1 - r['partial_top1']):.0f} %), Kendall tau {r['partial_tau']:+.2f}, "
            f"median regret {r['partial_regret_median']:.3f} Dice; whole ranking: top-1 "
            f"{100 * r['ranking_top1']:.0f} %, tau {r['ranking_tau']:+.2f}")
    rl = a.get("agreement_learned")
    if rl:
        text += (f"; on the {rl['targets']} of them where fine-tuning beat the untouched net: "
                 f"top-1 {100 * rl['partial_top1']:.0f} % (wrong on "
                 f"{100 * (1 - rl['partial_top1']):.0f} %), tau {rl['partial_tau']:+.2f}, "
                 f"median regret {rl['partial_regret_median']:.3f}")
    if a.get("network_kind", "unet") != "unet":
        text += (f"; not measured on any other network: on {a.get('network') or 'this one'} "
                 "its agreement is unknown")
    return text


def probe_markdown(a: dict) -> str:
    """``ADVICE.md`` of ``--probe-only``."""
    cfg = a["config"]
    L = [f"# Which layers to fine-tune on {a['target_slug']}? — probe only (no training)", ""]
    L += profile_note(a)
    top = a["ranking"][0]
    L += [f"**Predicted: `{top['plan']}`** (blocks {_blocks(top['blocks'])}, "
          f"{top['trainable_params']:,} trainable parameters), ranked by the zero-training "
          f"probe `{a['predictor']}` on {a['n_probe_images']} training images in "
          f"{a['seconds']['probe']:.1f} s.", "",
          f"Best partial plan (some block frozen; the question the agreement below is "
          f"measured on): `{a['best_partial']}`.", "",
          "How far to trust it: " + agreement_sentence(a) + ". A prediction, not a "
          "measurement: `unet-ft advise` (successive halving) and `unet-ft study` (the grid) "
          "train the plans.", "",
          f"Network: {a.get('network') or cfg['model']['kind']}, {cfg['model']['size']} px, "
          f"base {cfg['model']['base_filters']}; pretrained: {a['pretrained']}.", "",
          "## Predicted ranking", "", "| rank | plan | blocks | trainable params |",
          "|---|---|---|---|"]
    for i, r in enumerate(a["ranking"], 1):
        L.append(f"| {i} | {r['plan']} | {_blocks(r['blocks'])} | {r['trainable_params']:,} |")
    probes = [k for k in a["probes"][0] if k not in ("block", "part", "level", "params")]
    L += ["", "## Every probe's block scores", "",
          "rgn: relative gradient norm; fisher: mean squared gradient per parameter; gps: share "
          "of the largest per-filter gradients; feature: held-out AUC of a ridge probe "
          "(object vs background) on the block's features; shift: 1 − CKA of the pretraining "
          "and target features (keras_unet_ft/probes.py).", "",
          "| block | part | level | params | " + " | ".join(probes) + " |",
          "|---|---|---|---|" + "---|" * len(probes)]
    for p in a["probes"]:
        L.append(f"| {p['block']} | {p['part']} | {p['level']} | {p['params']:,} | "
                 + " | ".join(f"{p[k]:.3g}" for k in probes) + " |")
    return "\n".join(L) + "\n"
