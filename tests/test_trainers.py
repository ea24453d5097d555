"""The trainers: one table, one protocol, the names the plan kinds use."""

import pytest

from keras_unet_ft import trainers
from keras_unet_ft.config import TRAINER_SPECS
from keras_unet_ft.config import TRAINERS as CONFIG_TRAINERS
from keras_unet_ft.plans import KIND_SPECS, PER_VARIABLE_TRAINERS, TRAINERS


def test_the_table_the_config_and_the_plan_kinds_name_the_same_trainers():
    """``config.TRAINER_SPECS`` names every trainer once; the rest follows from it."""
    assert tuple(trainers.BUILDERS) == TRAINERS == tuple(TRAINER_SPECS)
    assert set(trainers.CLASSES) == set(TRAINER_SPECS)
    assert CONFIG_TRAINERS == ("auto",) + tuple(n for n, s in TRAINER_SPECS.items() if s.study)
    assert PER_VARIABLE_TRAINERS == tuple(n for n, s in TRAINER_SPECS.items() if s.per_variable)
    for kind, spec in KIND_SPECS.items():
        assert set(spec.trainers) <= set(TRAINERS), kind


def test_the_study_trainer_choices_come_from_the_table():
    from keras_unet_ft.config import load_config
    from keras_unet_ft.exitcodes import UserError

    for name in CONFIG_TRAINERS:
        assert load_config("smoke", {"study.trainer": name}).study.trainer == name
    with pytest.raises(UserError, match="auto, selective, masked, keras"):
        load_config("smoke", {"study.trainer": "multiworker"})
    with pytest.raises(UserError, match="study.trainer must be auto, selective, masked or keras, "
                                        "got 'bogus'"):
        trainers.resolve_trainer("bogus", "fp32")


def test_a_trainer_class_must_have_a_row_in_the_table():
    from keras_unet_ft.trainers.base import trainer

    class Nameless:
        name = "nowhere"

    with pytest.raises(ValueError, match="'nowhere', which is not a row of config.TRAINER_SPECS"):
        trainer(Nameless)
    assert "nowhere" not in trainers.CLASSES


def test_every_reparam_kind_has_its_class_and_every_class_its_kind():
    """``KindSpec.reparam`` picks the class (:data:`trainers.reparam.REPARAMS`), no if-chain."""
    from keras_unet_ft.plans import Plan
    from keras_unet_ft.trainers.reparam import REPARAMS, LoRA, SSF, reparam_class

    used = {s.reparam for s in KIND_SPECS.values() if s.reparam}
    assert used == set(REPARAMS) == {"ssf", "lora"}
    assert reparam_class(Plan.parse("ssf")) is SSF and reparam_class(Plan.parse("lora:2")) is LoRA
    with pytest.raises(ValueError, match="learns no tensors beside its kernels"):
        reparam_class(Plan.parse("all"))


@pytest.mark.parametrize("name", list(TRAINER_SPECS))
def test_every_trainer_class_speaks_the_protocol(name):
    """Every row of the table has its class registered (its module imported by the
    package), a builder and ``train``."""
    cls = trainers.CLASSES[name]
    assert cls.name == name and name in trainers.BUILDERS
    assert callable(getattr(cls, "train")) and callable(getattr(cls, "build"))


@pytest.mark.parametrize("name", [n for n, s in TRAINER_SPECS.items() if s.per_variable])
def test_the_trainers_that_hold_their_state_can_go_on_from_it(name):
    cls = trainers.CLASSES[name]
    for method in ("reset", "select", "fit", "predict", "state", "restore_optimizer"):
        assert callable(getattr(cls, method)), (cls.name, method)


def test_the_known_trainers_are_rows_of_the_table():
    assert {"selective", "masked", "keras", "multiworker"} <= set(TRAINER_SPECS)


def test_the_table_says_which_trainers_speak_the_resumable_protocol():
    """``per_variable`` in ``config.TRAINER_SPECS`` and the :class:`Resumable` protocol agree
    on every trainer the table builds."""
    import tensorflow as tf

    from conftest import tiny_config

    trainers.clear_shared()
    try:
        cfg = tiny_config()
        for name, spec in TRAINER_SPECS.items():
            t = trainers.BUILDERS[name](cfg, cfg.model, 0, "fp32", tf.distribute.get_strategy())
            assert isinstance(t, trainers.Trainer) and t.name == name
            assert isinstance(t, trainers.Resumable) == spec.per_variable, name
    finally:
        trainers.clear_shared()


@pytest.mark.parametrize("name, seed", [("selective", 0), ("masked", 3)])
def test_a_trainer_built_after_seeding_keeps_the_seeded_random_weights(name, seed):
    """The scratch start of a fold reuses the trainer's model as built (no second build) only
    where it equals, bit for bit, the network built after seeding the fold's seed."""
    import keras
    import numpy as np

    from conftest import tiny_config
    from keras_unet_ft.model import build_from_config

    trainers.clear_shared()
    try:
        cfg = tiny_config()
        t = trainers.BUILDERS[name](cfg, cfg.model, seed, "fp32", None)
        assert t.initial_seed == seed
        t.model.set_weights([w + 1 for w in t.model.get_weights()])   # trained since
        keras.utils.set_random_seed(seed)
        want = build_from_config(cfg.model).get_weights()
        got = t.initial_weights()
        assert len(got) == len(want)
        assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(got, want))
    finally:
        trainers.clear_shared()


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


@pytest.mark.parametrize("trainer", list(TRAINER_SPECS))
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
