import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("UNET_FT_MAX_AM_STEPS", "3")
os.environ.setdefault("UNET_FT_NO_PROGRESS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

TINY = {
    "model.size": "32", "model.base_filters": "4",
    "data.targets": "sim_bus,synth_cxr", "data.target_n": "8", "data.pretrain_n": "16",
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
    from keras_unet_ft.study import run_study

    root = tmp_path_factory.mktemp("study")
    os.environ["UNET_FT_CACHE"] = str(root / "cache")
    cfg = tiny_config(**{"data.cache_dir": str(root / "cache")})
    out = root / "results"
    run_study(cfg, out, progress=False)
    return out, cfg
