"""The trainers: one table, one protocol, the names the plan kinds use."""

import pytest

from keras_unet_ft import trainers
from keras_unet_ft.config import TRAINERS as CONFIG_TRAINERS
from keras_unet_ft.plans import KIND_SPECS, TRAINERS


def test_the_table_the_config_and_the_plan_kinds_name_the_same_trainers():
    assert set(trainers.BUILDERS) == set(TRAINERS)
    assert set(CONFIG_TRAINERS) - {"auto"} <= set(TRAINERS)
    for kind, spec in KIND_SPECS.items():
        assert set(spec.trainers) <= set(TRAINERS), kind


@pytest.mark.parametrize("cls", [trainers.SelectiveTrainer, trainers.MaskedTrainer,
                                 trainers.KerasFitTrainer, trainers.MultiworkerTrainer])
def test_every_trainer_class_speaks_the_protocol(cls):
    assert cls.name in trainers.BUILDERS
    assert callable(getattr(cls, "train"))


def test_the_trainers_that_hold_their_state_can_go_on_from_it():
    for cls in (trainers.SelectiveTrainer, trainers.MaskedTrainer):
        for method in ("reset", "select", "fit", "predict", "state", "restore_optimizer"):
            assert callable(getattr(cls, method)), (cls.name, method)


@pytest.mark.parametrize("trainer, precision, expected", [
    ("auto", "fp32", "selective"), ("auto", "bf16", "selective"), ("auto", "fp16", "keras"),
    ("masked", "fp32", "masked"), ("keras", "bf16", "keras"),
])
def test_auto_and_named_trainers_resolve(trainer, precision, expected):
    assert trainers.resolve_trainer(trainer, precision) == expected


def test_a_trainer_that_cannot_run_is_a_bad_input():
    from keras_unet_ft.exitcodes import UserError

    with pytest.raises(UserError, match="use study.trainer=keras"):
        trainers.resolve_trainer("selective", "fp16")


@pytest.mark.parametrize("trainer", ["selective", "masked", "keras", "multiworker"])
def test_every_trainer_reads_finetune_batchnorm(trainer):
    """``finetune.batchnorm`` reaches every trainer of the table; the process's shared
    selective trainer is one per mode (its traced steps differ)."""
    import tensorflow as tf

    from conftest import tiny_config

    trainers.clear_shared()
    try:
        got = {}
        for mode in ("auto", "frozen"):
            cfg = tiny_config(**{"finetune.batchnorm": mode})
            got[mode] = trainers.BUILDERS[trainer](cfg, cfg.model, 0, "fp32",
                                                   tf.distribute.get_strategy())
            assert got[mode].batchnorm == mode
        assert got["auto"] is not got["frozen"]
    finally:
        trainers.clear_shared()
