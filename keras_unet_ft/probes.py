"""Zero-training probes: which blocks to fine-tune, predicted before any optimizer step.

Every probe looks at the pretrained network and at most :data:`MAX_IMAGES` training images of
the target (never an optimizer step, the weights are not changed) and gives one score per
block of the network's :class:`~keras_unet_ft.blocks.BlockMap`:

* ``rgn`` - Auto-RGN (Lee et al., ICLR 2023), as ``unet-ft advise`` computes it
  (``advise.rgn_probe``, a test checks they agree): the relative gradient norm
  ``||g|| / ||w||`` of the fine-tuning loss per block, averaged over seeded batches.
* ``fisher`` - Fisher information per block (after Lodha et al., EMNLP 2023): the mean over
  the block's parameters of the squared per-image gradient of the loss (the empirical Fisher's
  diagonal), averaged over the images. Frozen layers count too: their gradients are taken
  (the tape watches every kernel and bias, trainable or not).
* ``gps`` - gradient mass per block (after GPS, Zhang et al., CVPR 2024): per image, every
  filter (output channel of a kernel) gets the norm of its gradient; the top
  :data:`GPS_TOP` share of all filters is selected, and a block's score is the share of the
  selected filters that lie in it, averaged over the images.
* ``feature`` - feature quality per block: the block's output (its last weighted layer with
  more than one channel), upsampled to the mask's size; a ridge probe (least squares on
  standardised features) on balanced object/background pixels, fitted on half of the images
  and scored on the other half (and the reverse): the mean held-out AUC. 1 = the block's
  features separate object from background perfectly, 0.5 = not at all.
* ``shift`` - feature shift per block: ``1 − CKA`` between the pretraining images' and the
  target images' features at the block's output. The two sets hold different images, so
  CKA's paired form does not apply; the linear CKA of the two sets' channel covariances is
  used instead, ``<C_p, C_t>_F / (||C_p||_F ||C_t||_F)`` with ``C`` the centred
  ``channels x channels`` covariance of the block's pixel features (the linear kernel of the
  feature space; 1 for identical inputs).

From block scores to a ranking of plans (:func:`rank_plans`): each plan trains a set of
blocks (``advise``'s block list of a plan); a block's *need* is its score for the probes
that say "train here" (``rgn``, ``fisher``, ``gps``, ``shift``) and ``1 − AUC`` for
``feature`` (``feature_need``: a block whose features already separate the target's classes
needs training least; ``feature_good`` ranks the other way). Two rules:

* ``mean`` - a plan's score is the mean need of the blocks it trains: plans that train only
  where the probe is strongest come first (a plan of one strong block beats ``all``);
* ``share`` - a plan's score is the share of the total need that lies in the blocks it trains:
  plans that cover more of the probe's mass come first (``all`` always first).

Ties break by fewer trainable parameters, then by name. Each (probe, rule) pair is one
predictor; :data:`BASELINES` are the predictors that look at nothing: every layer first (then
more parameters first), contracting first, and a seeded random order.
"""

from __future__ import annotations

import math
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from .plans import Plan
from .runtime import make_loss

#: at most this many training images of the target are looked at
MAX_IMAGES = 64
#: batches of the RGN probe (``advise.PROBE_BATCHES``)
RGN_BATCHES = 8
#: the share of all filters GPS selects per image
GPS_TOP = 0.1
#: pixels per class and image the feature probe samples
FEATURE_PIXELS = 64
#: pixels per image the shift probe samples
SHIFT_PIXELS = 128

PROBES = ("rgn", "fisher", "gps", "feature", "shift")
RULES = ("mean", "share")
BASELINES = ("always_all", "always_contracting", "random")


def _owners(model, bm, trainable_only: bool) -> List[list]:
    """The variables of every block: the trainable ones (as advise), or every kernel and
    bias (BatchNorm's moving statistics left out: no gradient reaches them)."""
    out = []
    for b in bm.blocks:
        names = set(b.weighted_layers)
        vs = []
        for layer in model.layers:
            if layer.name not in names:
                continue
            if trainable_only:
                vs += list(layer.trainable_weights)
            else:
                vs += [v for v in layer.weights if "moving" not in v.path]
        out.append(vs)
    return out


def _grad_fn(model, loss_fn, variables):
    """A compiled ``(x, y) -> gradients of the loss for variables`` (frozen ones included:
    the tape watches every variable given)."""
    import tensorflow as tf

    vals = [v.value if hasattr(v, "value") else v for v in variables]

    @tf.function(reduce_retracing=True)
    def grads(x, y):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            for v in vals:
                tape.watch(v)
            p = model(x, training=False)
            value = loss_fn(y, tf.cast(p, "float32"))
        return tape.gradient(value, vals)

    def run(x, y):
        g = grads(tf.convert_to_tensor(np.asarray(x, "float32")),
                  tf.convert_to_tensor(np.asarray(y, "float32")))
        return [None if a is None else np.asarray(a, dtype="float32") for a in g]

    return run


def _pick(n: int, k: int, seed: int) -> np.ndarray:
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:k])


# -- gradient probes ----------------------------------------------------------------------
def rgn_scores(model, bm, images, masks, loss: str = "bce", batch_size: int = 8,
               batches: int = RGN_BATCHES, seed: int = 0) -> np.ndarray:
    """Auto-RGN per block, as ``advise.rgn_probe`` (same batches for the same seed)."""
    loss_fn = make_loss(loss)
    owners = _owners(model, bm, trainable_only=True)
    variables = [v for vs in owners for v in vs]
    grads = _grad_fn(model, loss_fn, variables)
    rng = np.random.default_rng(seed)
    n = len(images)
    rows = []
    for _ in range(max(1, batches)):
        idx = rng.choice(n, size=min(batch_size, n), replace=False)
        g = grads(images[idx], masks[idx])
        row, j = [], 0
        for vs in owners:
            gg = g[j:j + len(vs)]
            j += len(vs)
            gn = math.sqrt(sum(float(np.sum(np.square(a))) for a in gg if a is not None))
            wn = math.sqrt(sum(float(np.sum(np.square(np.asarray(v.numpy(), "float32"))))
                               for v in vs))
            row.append(gn / wn if wn > 0 else 0.0)
        rows.append(row)
    return np.asarray(rows).mean(axis=0)


def per_image_gradients(model, bm, images, masks, loss: str = "bce"):
    """Yield, per image, the gradients of the loss for every block's kernels and biases
    (frozen ones included) as ``[[array per variable] per block]``."""
    loss_fn = make_loss(loss)
    owners = _owners(model, bm, trainable_only=False)
    variables = [v for vs in owners for v in vs]
    grads = _grad_fn(model, loss_fn, variables)
    for i in range(len(images)):
        g = grads(images[i:i + 1], masks[i:i + 1])
        out, j = [], 0
        for vs in owners:
            out.append([np.zeros(tuple(v.shape), "float32") if a is None else a
                        for a, v in zip(g[j:j + len(vs)], vs)])
            j += len(vs)
        yield out


def fisher_scores(grads: Sequence) -> np.ndarray:
    """Mean squared gradient per parameter, per block, averaged over the images
    (``grads``: :func:`per_image_gradients`' items)."""
    rows = []
    for per_block in grads:
        rows.append([float(sum(np.sum(np.square(a)) for a in gs)
                           / max(1, sum(a.size for a in gs))) for gs in per_block])
    return np.asarray(rows).mean(axis=0)


def _filter_norms(gs) -> np.ndarray:
    """Per-filter gradient norms of one block: every kernel's output channels (last axis);
    a bias (any variable without a kernel) counts per element."""
    out = []
    for a in gs:
        if a.ndim >= 2:
            out.append(np.sqrt(np.sum(np.square(a.reshape(-1, a.shape[-1])), axis=0)))
        else:
            out.append(np.abs(a))
    return np.concatenate(out) if out else np.zeros(0)


def gps_scores(grads: Sequence, top: float = GPS_TOP) -> np.ndarray:
    """Share of the top ``top`` of all per-filter gradient norms that falls in each block,
    averaged over the images."""
    rows = []
    for per_block in grads:
        norms = [_filter_norms(gs) for gs in per_block]
        owner = np.concatenate([np.full(len(n), b) for b, n in enumerate(norms)])
        flat = np.concatenate(norms)
        k = max(1, int(round(top * flat.size)))
        chosen = owner[np.argsort(-flat, kind="stable")[:k]]
        rows.append(np.bincount(chosen, minlength=len(norms)) / k)
    return np.asarray(rows).mean(axis=0)


# -- feature probes -----------------------------------------------------------------------
def feature_layers(model, bm) -> List[str]:
    """The layer whose output stands for each block: its last weighted layer with more than
    one output channel (the head's one-channel output is not a feature map)."""
    out = []
    for b in bm.blocks:
        cands = [n for n in b.weighted_layers
                 if len(model.get_layer(n).output.shape) == 4
                 and (model.get_layer(n).output.shape[-1] or 0) > 1]
        out.append((cands or list(b.weighted_layers))[-1])
    return out


def block_features(model, bm, images, batch_size: int = 16) -> List[np.ndarray]:
    """Every block's feature map ``(N, h, w, c)`` for ``images`` (one forward pass)."""
    import keras

    names = feature_layers(model, bm)
    sub = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    outs = [[] for _ in names]
    for s in range(0, len(images), batch_size):
        res = sub([images[s:s + batch_size]], training=False)
        res = res if isinstance(res, (list, tuple)) else [res]
        for o, r in zip(outs, res):
            o.append(np.asarray(r, dtype="float32"))
    return [np.concatenate(o) for o in outs]


def _upsample(f: np.ndarray, size) -> np.ndarray:
    """Nearest-neighbour upsampling of ``(N, h, w, c)`` to ``(N, H, W, c)``."""
    H, W = size
    h, w = f.shape[1:3]
    iy = (np.arange(H) * h // H).astype(int)
    ix = (np.arange(W) * w // W).astype(int)
    return f[:, iy][:, :, ix]


def _auc(score: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import rankdata

    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return math.nan
    r = rankdata(score)
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _ridge_fit(X: np.ndarray, y: np.ndarray, alpha: float = 1.0):
    """Ridge regression of ``y`` (0/1) on standardised ``X``: ``(mean, scale, weights)``."""
    mu, sd = X.mean(axis=0), X.std(axis=0) + 1e-6
    Z = np.hstack([(X - mu) / sd, np.ones((len(X), 1))])
    w = np.linalg.solve(Z.T @ Z + alpha * np.eye(Z.shape[1]), Z.T @ (2.0 * y - 1.0))
    return mu, sd, w


def _ridge_score(model, X: np.ndarray) -> np.ndarray:
    mu, sd, w = model
    return np.hstack([(X - mu) / sd, np.ones((len(X), 1))]) @ w


def feature_quality(features: np.ndarray, masks: np.ndarray, pixels: int = FEATURE_PIXELS,
                    seed: int = 0) -> float:
    """Held-out AUC of a ridge probe separating object from background pixels on one
    block's features (upsampled to the masks' size, balanced samples of both classes per
    image): fitted on half of the images, scored on the other half and the reverse; NaN
    when no half holds both classes."""
    rng = np.random.default_rng(seed)
    m = masks.reshape(len(masks), masks.shape[1], masks.shape[2]) > 0
    X, Y, G = [], [], []
    for i in range(len(features)):
        f = _upsample(features[i:i + 1], m.shape[1:])[0]
        for cls in (0, 1):
            where = np.flatnonzero((m[i] == cls).ravel())
            if not where.size:
                continue
            take = rng.choice(where, size=min(pixels, where.size), replace=False)
            X.append(f.reshape(-1, f.shape[-1])[take])
            Y.append(np.full(take.size, cls))
            G.append(np.full(take.size, i % 2))
    if not X:
        return math.nan
    X, Y, G = np.concatenate(X).astype("float64"), np.concatenate(Y), np.concatenate(G)
    aucs = []
    for half in (0, 1):
        tr, te = G != half, G == half
        if len(set(Y[tr])) < 2 or len(set(Y[te])) < 2:
            continue
        aucs.append(_auc(_ridge_score(_ridge_fit(X[tr], Y[tr]), X[te]), Y[te]))
    return float(np.mean(aucs)) if aucs else math.nan


def _pixel_sample(features: np.ndarray, pixels: int, rng) -> np.ndarray:
    flat = features.reshape(len(features), -1, features.shape[-1])
    take = [rng.choice(flat.shape[1], size=min(pixels, flat.shape[1]), replace=False)
            for _ in range(len(flat))]
    return np.concatenate([flat[i, t] for i, t in enumerate(take)])


def cka_covariance(a: np.ndarray, b: np.ndarray) -> float:
    """Linear CKA of two sets' channel covariances: ``<C_a, C_b>_F / (||C_a|| ||C_b||)``,
    ``a``, ``b``: ``(pixels, channels)``; 1 for identical inputs, NaN when a set is
    constant.

    Examples:
        >>> x = np.random.default_rng(0).normal(size=(50, 4))
        >>> round(cka_covariance(x, x), 6)
        1.0
    """
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    ca, cb = a.T @ a / len(a), b.T @ b / len(b)
    na, nb = np.linalg.norm(ca), np.linalg.norm(cb)
    if na == 0 or nb == 0:
        return math.nan
    return float(np.sum(ca * cb) / (na * nb))


def shift_scores(pre_features: Sequence[np.ndarray], tgt_features: Sequence[np.ndarray],
                 pixels: int = SHIFT_PIXELS, seed: int = 0) -> np.ndarray:
    """``1 − CKA`` per block between the pretraining and the target features."""
    rng = np.random.default_rng(seed)
    out = []
    for p, t in zip(pre_features, tgt_features):
        c = cka_covariance(_pixel_sample(p, pixels, rng), _pixel_sample(t, pixels, rng))
        out.append(0.0 if not np.isfinite(c) else 1.0 - c)
    return np.asarray(out)


# -- every probe --------------------------------------------------------------------------
def run_probes(model, bm, images, masks, pre_images=None, loss: str = "bce",
               batch_size: int = 8, seed: int = 0, probes: Sequence[str] = PROBES
               ) -> Dict[str, dict]:
    """Every probe's block scores at the model's weights (not changed).

    Args:
        model: the pretrained network. bm: its :class:`BlockMap`.
        images, masks: the target's training images and masks ``(N, H, W, 1)``; a seeded
            :data:`MAX_IMAGES` of them are looked at.
        pre_images: pretraining images (the ``shift`` probe; left out without them).

    Returns:
        ``{probe: {"scores": [per block], "seconds": s}}``; the gradient probes' seconds hold
        the per-image gradients they share (each as if it ran alone).
    """
    idx = _pick(len(images), MAX_IMAGES, seed)
    x, y = np.asarray(images[idx], "float32"), np.asarray(masks[idx])
    out: Dict[str, dict] = {}
    if "rgn" in probes:
        t = time.perf_counter()
        s = rgn_scores(model, bm, x, y, loss, batch_size, seed=seed)
        out["rgn"] = {"scores": s.tolist(), "seconds": time.perf_counter() - t}
    if "fisher" in probes or "gps" in probes:
        t = time.perf_counter()
        grads = list(per_image_gradients(model, bm, x, y, loss))
        tg = time.perf_counter() - t
        for name, fn in (("fisher", fisher_scores), ("gps", gps_scores)):
            if name in probes:
                t = time.perf_counter()
                s = fn(grads)
                out[name] = {"scores": s.tolist(), "seconds": tg + time.perf_counter() - t}
        del grads
    if "feature" in probes or "shift" in probes:
        t = time.perf_counter()
        feats = block_features(model, bm, x)
        tf_ = time.perf_counter() - t
        if "feature" in probes:
            t = time.perf_counter()
            s = [feature_quality(f, y, seed=seed) for f in feats]
            out["feature"] = {"scores": [0.5 if not np.isfinite(v) else v for v in s],
                              "seconds": tf_ + time.perf_counter() - t}
        if "shift" in probes and pre_images is not None and len(pre_images):
            t = time.perf_counter()
            pidx = _pick(len(pre_images), MAX_IMAGES, seed + 1)
            pf = block_features(model, bm, np.asarray(pre_images[pidx], "float32"))
            s = shift_scores(pf, feats, seed=seed)
            out["shift"] = {"scores": s.tolist(), "seconds": tf_ + time.perf_counter() - t}
    return out


# -- from block scores to a ranking of plans ----------------------------------------------
def plan_blocks(plan: str, bm) -> List[int]:
    """The 1-based indices of the blocks a plan trains (as ``advise`` lists them)."""
    p = Plan.parse(plan)
    chosen = set(p.bare.trainable_layers(bm)) if p.trains else set()
    return [b.index for b in bm.blocks if chosen & set(b.weighted_layers)]


def need(probe: str, scores: Sequence[float]) -> np.ndarray:
    """A block's need of training by one probe's scores (see the module's docstring)."""
    s = np.nan_to_num(np.asarray(scores, float), nan=0.0)
    if probe == "feature_need":
        return np.clip(1.0 - s, 0, None)
    return np.clip(s, 0, None)


def plan_scores(needs: np.ndarray, blocks: Dict[str, List[int]], rule: str) -> Dict[str, float]:
    """Each plan's score from the blocks' needs (``rule``: ``mean`` or ``share``)."""
    total = float(needs.sum())
    out = {}
    for plan, bs in blocks.items():
        v = needs[[b - 1 for b in bs]] if bs else np.zeros(0)
        if rule == "mean":
            out[plan] = float(v.mean()) if v.size else -math.inf
        elif rule == "share":
            out[plan] = float(v.sum() / total) if total > 0 else 0.0
        else:
            raise ValueError(f"unknown rule {rule!r}; expected one of {RULES}")
    return out


def order(scores: Dict[str, float], params: Optional[Dict[str, int]] = None) -> List[str]:
    """Plans by score (highest first), then fewer trainable parameters, then name."""
    params = params or {}
    return sorted(scores, key=lambda p: (-scores[p], params.get(p, 0), p))


def predictors() -> List[str]:
    """Every predictor's name: ``probe/rule`` for each probe (``feature`` both ways) and
    rule, then the baselines."""
    names = ["rgn", "fisher", "gps", "feature_need", "feature_good", "shift"]
    return [f"{n}/{r}" for n in names for r in RULES] + list(BASELINES)


def probe_name(predictor: str) -> Optional[str]:
    """The probe a predictor ranks by (``feature_need/share`` -> ``feature``); None for the
    baselines, which run no probe."""
    if predictor in BASELINES:
        return None
    name = predictor.partition("/")[0]
    return "feature" if name.startswith("feature") else name


def rank_plans(predictor: str, block_scores: Dict[str, Sequence[float]],
               blocks: Dict[str, List[int]], params: Dict[str, int], seed: int = 0
               ) -> Optional[List[str]]:
    """The ranking of ``blocks``' plans (best first) by one predictor; None when the
    predictor's probe was not run.

    Examples:
        >>> blocks = {"shallow": [1], "deep": [3], "all": [1, 2, 3]}
        >>> params = {"shallow": 10, "deep": 10, "all": 30}
        >>> rank_plans("fisher/mean", {"fisher": [0.1, 0.2, 0.9]}, blocks, params)
        ['deep', 'all', 'shallow']
        >>> rank_plans("fisher/share", {"fisher": [0.1, 0.2, 0.9]}, blocks, params)
        ['all', 'deep', 'shallow']
    """
    if predictor == "always_all":
        return sorted(blocks, key=lambda p: (-len(blocks[p]), -params.get(p, 0), p))
    if predictor == "always_contracting":
        rest = sorted((p for p in blocks if p != "contracting"),
                      key=lambda p: (-len(blocks[p]), -params.get(p, 0), p))
        return (["contracting"] if "contracting" in blocks else []) + rest
    if predictor == "random":
        names = sorted(blocks)
        return [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    name, _, rule = predictor.partition("/")
    probe = probe_name(predictor)
    if probe not in block_scores:
        return None
    s = block_scores[probe]
    n = need(name if name == "feature_need" else probe, s)
    return order(plan_scores(n, blocks, rule), params)


def probe_report(block_scores: Dict[str, Sequence[float]], bm) -> List[dict]:
    """One row per block: ``block, part, level, params`` and every probe's score."""
    return [dict({"block": b.index, "part": b.part, "level": b.level, "params": b.params},
                 **{p: float(v[i]) for p, v in block_scores.items()})
            for i, b in enumerate(bm.blocks)]

