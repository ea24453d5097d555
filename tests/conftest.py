import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("UNET_FT_MAX_AM_STEPS", "3")
os.environ.setdefault("UNET_FT_NO_PROGRESS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402


E2E = pathlib.Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(items):
    """Tests that run the real pipeline (the shared tiny study or their own) are ``slow``;
    those under ``tests/e2e/`` (studies of their own) are ``e2e`` too, left out by default
    (setup.cfg's ``addopts``; ``-m e2e`` runs them)."""
    for item in items:
        if "tiny_study" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
        if E2E in pathlib.Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.slow)

@pytest.fixture(autouse=True)
def _float32_policy_after_each_test():
    """Every test starts from Keras' float32 dtype policy: a run sets the global policy of
    its precision (``runtime.fresh_session``; ``auto`` is bf16 on AVX512-BF16 / AMX CPUs) and
    leaves it, so a later test computed in bf16 or not depending on which tests ran before
    it in the process (seen with ``pytest -n 2``: the probe's gradient norms off by 5e-4)."""
    yield
    keras = sys.modules.get("keras")
    if keras is not None:
        keras.config.set_dtype_policy("float32")


#: pretrain_n 18: 2 validation + 16 training images, two full batches of 8, so Keras traces
#: one train step (a last, smaller batch costs a second trace: seconds per test)
TINY = {
    "model.size": "32", "model.base_filters": "4",
    "data.targets": "sim_bus,synth_cxr", "data.target_n": "8", "data.pretrain_n": "18",
    "pretrain.epochs": "1", "pretrain.batch_size": "8",
    "finetune.epochs": "1", "finetune.batch_size": "4", "finetune.augment_total": "8",
    "finetune.folds": "2",
    "study.plans": "contracting,expanding,shallow_to_deep:1,deep_to_shallow:1,"
                   "shallow_to_deep:9,deep_to_shallow:9",
}


def tiny_config(**extra):
    from keras_unet_ft.config import load_config

    return load_config("smoke", {**TINY, **extra})


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """A real study at tiny scale (the end-to-end pipeline), shared by several tests."""
    from keras_unet_ft.pipeline import run

    root = tmp_path_factory.mktemp("study")
    os.environ["UNET_FT_CACHE"] = str(root / "cache")
    cfg = tiny_config(**{"data.cache_dir": str(root / "cache")})
    out = root / "results"
    run(cfg, out, progress=False)
    return out, cfg


def reuse_pretrained(tiny_study, out):
    """Seed the results folder ``out`` with the tiny study's pretrained net (same model,
    pretraining settings and seed: the study reuses it, as it does a folder's own), so an
    end-to-end test of what comes after pretraining does not pretrain again."""
    import shutil

    src = tiny_study[0] / "pretrained"
    shutil.copytree(src, pathlib.Path(out) / "pretrained")
    return out


# -- a hand-made results folder: exact numbers in, exact tables and sentences out ----------
#: per-image Dice of each (plan, fold): image ids a, b in fold 0 and c, d in fold 1
HANDMADE_DICE = {
    ("contracting", 0): [0.9, 0.8], ("contracting", 1): [0.85, 0.75],
    ("expanding", 0): [0.7, 0.6], ("expanding", 1): [0.6, 0.5],
    ("none", 0): [0.5, 0.5], ("none", 1): [0.25, 0.25],
}


def make_handmade_results(out, failed=(), missing=(), dice=None):
    """A results folder as the study writes it, with the numbers of ``HANDMADE_DICE``.

    Plans: ``contracting`` (alias ``contracting:blocks``), ``expanding``, ``none``;
    target ``sim_bus``, 2 folds. ``failed`` runs get status failed, ``missing`` no
    summary at all (not finished yet). ``dice``: other per-image Dice values, same keys.
    """
    import json
    import pathlib

    from keras_unet_ft.config import load_config
    from keras_unet_ft.io import write_csv
    from keras_unet_ft.layout import RunSpec, write_manifest

    dice_of = dice
    out = pathlib.Path(out)
    cfg = load_config("smoke", {"data.targets": "sim_bus"})
    (out).mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({"config": cfg.to_dict(), "versions": {},
                                                 "git_revision": "abc", "precision": "fp32",
                                                 "written": "now"}))
    ids = {0: ["a", "b"], 1: ["c", "d"]}
    runs = []
    blocks = [{"block": i, "part": "contracting" if i < 5 else "bottleneck" if i == 5
               else "expanding", "level": min(i, 10 - i), "params": 10 * i,
               "share_percent": 100 * i / 45, "layers": f"l{i}"} for i in range(1, 10)]
    for fold in (0, 1):
        for plan, aliases in (("contracting", ["contracting:blocks"]), ("expanding", []),
                              ("none", [])):
            runs.append(RunSpec("sim_bus", fold, plan, aliases, "unet"))
    write_manifest(out, {"model": "unet",
                         "targets": [{"spec": "sim_bus", "slug": "sim_bus",
                                      "modality": "ultrasound"}],
                         "plans": ["contracting", "expanding", "contracting:blocks", "none"],
                         "models": {"unet": {"units": {"path": 9, "level": 5},
                                             "total_params": 450,
                                             "all_layers_plan": "shallow_to_deep:9",
                                             "blocks": blocks}},
                         "runs": [r.to_dict() for r in runs]})
    for r in runs:
        d = r.dir(out)
        d.mkdir(parents=True, exist_ok=True)
        if (r.plan, r.fold) in missing:
            continue
        if (r.plan, r.fold) in failed:
            (d / "summary.json").write_text(json.dumps({
                "status": "failed", "target": r.target, "fold": r.fold, "plan": r.plan,
                "aliases": r.aliases, "reason": "FloatingPointError: diverged"}))
            continue
        dice = (dice_of or HANDMADE_DICE)[(r.plan, r.fold)]
        write_csv(d / "per_image.csv", [{"id": i, "dice": v, "pixel_error": 10 * (1 - v),
                                         "adjusted_rand": v - 0.05}
                                        for i, v in zip(ids[r.fold], dice)])
        n = sum(dice) / 2
        (d / "summary.json").write_text(json.dumps({
            "status": "ok", "target": r.target, "fold": r.fold, "plan": r.plan,
            "model": "unet", "aliases": r.aliases, "n_train": 32, "n_test": 2,
            "dice_mean": n, "dice_std": abs(dice[0] - dice[1]) / 2,
            "pixel_error_mean": 10 * (1 - n), "pixel_error_std": 0.0,
            "adjusted_rand_mean": n - 0.05, "adjusted_rand_std": 0.0,
            "trainable_params": {"contracting": 150, "expanding": 300, "none": 0}[r.plan],
            "frozen_params": 450 - {"contracting": 150, "expanding": 300, "none": 0}[r.plan],
            "trainable_layers": [], "train_seconds": 2.0, "seconds_per_epoch": 1.0,
            "epochs": 0 if r.plan == "none" else 2, "seed": r.fold, "precision": "fp32",
            "trainer": "masked", "weight_change": None}))
    return out
