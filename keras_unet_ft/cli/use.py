"""Using a study's answer: ``unet-ft finetune``, ``advise``, ``predict`` and ``export``."""

from __future__ import annotations

import pathlib
import sys

from ..config import EXPORT_FORMATS, THRESHOLD, load_config, set_value, validate
from ..exitcodes import EXIT_OK, EXIT_RUNS_FAILED
from ..layout import ADVICE_JSON, ADVICE_MD, PREDICTIONS_TABLE, ModelFolder
from .common import (MODEL_HELP, _positive, add_config_args, check_inputs, model_kind,
                     overrides_from_args)


def finetune_config(args):
    """The config of ``unet-ft finetune``: ``--profile`` (default quick), or the config of
    the study folder given as ``--pretrained`` (so the network fits), then ``--set``."""
    from ..layout import CONFIG, load_config_of

    pre = pathlib.Path(args.pretrained) if args.pretrained else None
    if args.profile is None and pre is not None and (pre / CONFIG).exists():
        cfg = load_config_of(pre)
        for key, value in overrides_from_args(args).items():
            set_value(cfg, key, value)
        return validate(cfg)
    return load_config(args.profile or "quick", overrides_from_args(args))


def check_finetune(args) -> int:
    """``finetune`` before the backend: the config, the target's spec (and the pretraining
    set's when it pretrains first), the plan and whether ``study.trainer`` can train it."""
    check_inputs(finetune_config(args), plans=[args.plan], targets=[args.target],
                 pretrain=args.pretrained is None, distribute=args.distribute)
    return EXIT_OK


def check_advise(args) -> int:
    """``advise`` before the backend: the config, the target's spec (and the pretraining
    set's when it pretrains first) and the plans."""
    cfg = finetune_config(args)
    check_inputs(cfg, plan_sets=[args.plans or cfg.study.plans], targets=[args.target],
                 pretrain=args.pretrained is None)
    return EXIT_OK


def cmd_finetune(args) -> int:
    from ..deploy import finetune_model
    from ..runtime import get_strategy, is_chief, set_threads

    set_threads(args.threads)
    cfg = finetune_config(args)
    s = finetune_model(cfg, args.target, args.plan, args.out, pretrained=args.pretrained,
                       val_fraction=args.val_fraction, verbose=1 if args.verbose else 0,
                       distribute=args.distribute, force=args.force)
    if args.distribute == "multiworker" and not is_chief(get_strategy("multiworker")):
        print(f"worker done ({s.get('status')}): the chief wrote {args.out}")
        return EXIT_OK if s.get("status") == "ok" else EXIT_RUNS_FAILED
    if s.get("status") != "ok":
        print(f"unet-ft: the fine-tuning of {s['plan']} {s.get('reason')}; see "
              f"{ModelFolder(args.out).summary} (a diverged model is no model to use)",
              file=sys.stderr)
        return EXIT_RUNS_FAILED
    n_obj = s.get("n_val", 0) - s.get("n_val_empty", 0)
    val = (f"; validation Dice {s['val_dice_mean']:.3f} on the {n_obj} of {s['n_val']} held-out "
           "images with an object" if n_obj > 0 else
           f"; none of the {s['n_val']} held-out images has an object: no validation Dice"
           if s.get("n_val") else "")
    print(f"fine-tuned {s['plan']} on {s['n_train']} images of {s['target']} in "
          f"{s['train_seconds']:.0f} s ({s['trainable_params']:,} trainable parameters){val}")
    print(f"model: {ModelFolder(args.out).model}  (unet-ft predict "
          f"{args.out} IMAGES... --out DIR)")
    return EXIT_OK


def cmd_advise(args) -> int:
    from ..advise import advice_sentence, advise
    from ..runtime import set_threads

    set_threads(args.threads)
    cfg = finetune_config(args)
    if args.probe_only:
        return _probe_only(cfg, args)
    a = advise(cfg, args.target, args.out, plans=args.plans, budget_minutes=args.budget,
               pretrained=args.pretrained, verbose=1 if args.verbose else 0)
    if a["too_small_to_learn"]:
        print(f"the {a['profile']} profile's nets are too small to learn: this advice checks "
              "the pipeline and says nothing about which layers to fine-tune", file=sys.stderr)
    print(f"advice for {a['target']} ({a['profile']} profile) in {a['seconds']['total']:.0f} s: "
          + advice_sentence(a, markdown=False))
    others = [p for p in a["tied_with_best"] if p != a["recommendation"]]
    if others and a["recommendation"] is not None:
        print(f"tied with it: {', '.join(others)} (fewest parameters: "
              f"{a['fewest_params_tied']})")
    if a["stopped"]:
        print(f"the budget ended the search early: {a['stopped']}", file=sys.stderr)
    top = ", ".join(f"{p['block']} ({p['part']})" for p in a["probe"][:3])
    print(f"probe (relative gradient norm), top blocks: {top}")
    print(f"written: {pathlib.Path(args.out) / ADVICE_MD}, {ADVICE_JSON}")
    return EXIT_OK


def _probe_only(cfg, args) -> int:
    """``advise --probe-only``: the plans ranked by a zero-training probe, in seconds, with
    its measured agreement with full grids."""
    from ..advise import agreement_sentence, probe_only

    a = probe_only(cfg, args.target, args.out, plans=args.plans, pretrained=args.pretrained,
                   verbose=1 if args.verbose else 0, predictor=args.probe)
    if a["too_small_to_learn"]:
        print(f"the {a['profile']} profile's nets are too small to learn: this ranking checks "
              "the pipeline and says nothing about which layers to fine-tune", file=sys.stderr)
    print(f"predicted ranking for {a['target']} ({a['profile']} profile) by the probe "
          f"{a['predictor']} on {a['n_probe_images']} training images, no training, in "
          f"{a['seconds']['probe']:.1f} s (total {a['seconds']['total']:.0f} s):")
    for i, r in enumerate(a["ranking"], 1):
        print(f"  {i}. {r['plan']} ({r['trainable_params']:,} trainable parameters)")
    print(f"best partial plan (some block frozen): {a['best_partial']}")
    print("how far to trust it: " + agreement_sentence(a))
    print(f"written: {pathlib.Path(args.out) / ADVICE_MD}, {ADVICE_JSON}")
    return EXIT_OK


def cmd_predict(args) -> int:
    from ..deploy import predict_images

    rows = predict_images(args.model, args.inputs, args.out, threshold=args.threshold,
                          batch_size=args.batch_size, overlays=not args.no_overlay)
    empty = sum(r["foreground_percent"] == 0 for r in rows)
    print(f"segmented {len(rows)} images into {args.out} (masks, probabilities"
          f"{'' if args.no_overlay else ', overlays'}, {PREDICTIONS_TABLE})"
          + (f"; {empty} with nothing found" if empty else ""))
    return EXIT_OK


def cmd_export(args) -> int:
    from ..deploy import export_model

    path = export_model(args.model, args.format, args.out, force=args.force)
    print(f"exported {args.format}: {path}")
    return EXIT_OK


def register(sub) -> None:
    p = sub.add_parser("finetune", help="train one plan on all images of a target; keep the "
                       "model")
    add_config_args(p)
    p.set_defaults(profile=None)
    p.add_argument("--target", required=True, help="dataset spec, e.g. busi:ROOT or sim_bus")
    p.add_argument("--model", type=model_kind, metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--plan", required=True,
                   help="the plan, e.g. deep_to_shallow:3, xunet/all, llrd:0.5")
    p.add_argument("--out", required=True, help="output folder (model.keras, history, summary)")
    p.add_argument("--pretrained", help="pretrained model (.keras) or a study's results folder "
                   "(its pretrained model and, without --profile, its config); default: "
                   "pretrain first, into OUT/pretrained")
    p.add_argument("--val-fraction", type=float, default=0.0,
                   help="share of images held out and scored (default 0: train on all)")
    p.add_argument("--force", action="store_true", help="replace a model already in --out")
    p.add_argument("--threads", type=_positive(int), help="TensorFlow intra-op threads")
    p.add_argument("--distribute", choices=["mirrored", "multiworker"],
                   help="mirrored: the GPUs of this machine; multiworker: one run over the "
                        "machines of TF_CONFIG (run the same command on each; worker 0 writes)")
    p.set_defaults(func=cmd_finetune, check=check_finetune)

    p = sub.add_parser("advise", help="which layers to fine-tune on a target, in minutes: "
                       "gradient probe + successive halving on an inner split")
    add_config_args(p)
    p.set_defaults(profile=None)
    p.add_argument("--target", required=True, help="dataset spec, e.g. busi:ROOT or sim_bus")
    p.add_argument("--model", type=model_kind, metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--plans", help="plan set or comma-separated plans (default: the "
                   "profile's study.plans, paper = the 9 + 9 block plans and the split)")
    p.add_argument("--budget", type=float, metavar="MINUTES",
                   help="stop before a rung that would end later; the advice says so")
    p.add_argument("--out", required=True, help="output folder (ADVICE.md, advice.json)")
    p.add_argument("--pretrained", help="pretrained model (.keras) or a study's results folder "
                   "(its pretrained model and, without --profile, its config); default: "
                   "pretrain first, into OUT/pretrained")
    p.add_argument("--threads", type=_positive(int), help="TensorFlow intra-op threads")
    p.add_argument("--probe-only", action="store_true",
                   help="no training: the plans ranked by a zero-training probe in seconds, "
                        "with its measured agreement with full grids")
    p.add_argument("--probe", metavar="PREDICTOR",
                   help="with --probe-only: the probe and rule, e.g. fisher/mean, gps/share "
                        "(default: the best measured on the corpus)")
    p.set_defaults(func=cmd_advise, check=check_advise)

    p = sub.add_parser("predict", help="segment images with a saved model")
    p.add_argument("model", help="model.keras, a finetune output folder or a study run folder")
    p.add_argument("inputs", nargs="+", help="image files and / or folders of images")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--threshold", type=float, default=THRESHOLD,
                   help=f"probability above which a pixel is foreground (default {THRESHOLD})")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--no-overlay", action="store_true", help="no overlay images")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export a saved model (SavedModel or TFLite)")
    p.add_argument("model", help="model.keras, a finetune output folder or a study run folder")
    p.add_argument("--format", required=True, choices=list(EXPORT_FORMATS))
    p.add_argument("--out", help="output folder / file (default: next to the model)")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier export there (SavedModel folder or TFLite file)")
    p.set_defaults(func=cmd_export)
