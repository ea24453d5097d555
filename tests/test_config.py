"""Config: profiles, overrides by declared type, validation, config.json round trip."""

import json
import re

import pytest

from conftest import tiny_config
from keras_unet_ft.config import config_from_dict, load_config, parse_set


def test_config_overrides_and_errors():
    cfg = load_config("paper")
    assert (cfg.model.size, cfg.model.base_filters, cfg.finetune.folds) == (256, 64, 5)
    assert (cfg.pretrain.epochs, cfg.finetune.epochs, cfg.finetune.augment_total) == (40, 20, 600)
    assert load_config("quick", parse_set(["finetune.epochs=3"])).finetune.epochs == 3
    with pytest.raises(ValueError, match="unknown config key 'finetune.epochz'"):
        load_config("quick", {"finetune.epochz": 1})
    with pytest.raises(ValueError, match="unknown profile"):
        load_config("huge")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_set(["epochs"])


@pytest.mark.parametrize("key,value,match", [
    ("finetune.stage_learning_rates", "1e-5,fast", "stage_learning_rates: expected a number, "
                                                   "got 'fast'"),
    ("finetune.stage_learning_rates", "-1e-5", r"stage_learning_rates: \[-1e-05\]; expected "
                                               "positive"),
    ("sizes.counts", "50,0", r"sizes.counts: \[50, 0\]; expected positive whole numbers"),
    ("sizes.counts", "50,1.5", "sizes.counts: expected a whole number, got '1.5'"),
    ("sizes.run", "maybe", "sizes.run: 'maybe'; expected one of auto, yes, no"),
    ("finetune.epochs", "0", "finetune.epochs: 0; expected a number > 0"),
    ("finetune.epochs", "three", "finetune.epochs: expected a whole number, got 'three'"),
    ("finetune.learning_rate", "-1e-4", "finetune.learning_rate: -0.0001"),
    ("finetune.batch_size", "0", "finetune.batch_size: 0"),
    ("finetune.folds", "1", "finetune.folds: 1; expected a number >= 2"),
    ("model.kind", "resnet", "model.kind: 'resnet'; expected one of unet, xunet, vunet"),
    ("study.trainer", "fast", "study.trainer: 'fast'"),
    ("study.save_weights", "some", "study.save_weights: 'some'; expected one of none, "
                                   "figures, all"),
    ("study.baselines", "maybe", "study.baselines: expected a boolean"),
    ("pretrain.val_fraction", "1.5", "pretrain.val_fraction: 1.5"),
    ("study.seed", "-1", "study.seed: -1; expected a number >= 0 and < 2147483648"),
    ("study.seed", str(2 ** 31), "study.seed: 2147483648; expected a number >= 0 and < "),
    ("study.seed", "1.5", "study.seed: expected a whole number, got '1.5'"),
    # tiny_config trains 1 epoch per stage
    ("finetune.warmup_epochs", "1", "finetune.warmup_epochs=1 must be below finetune.epochs=1"),
    ("finetune.warmup_epochs", "-1", "finetune.warmup_epochs: -1; expected a number >= 0"),
])
def test_bad_values_fail_when_loaded_and_name_key_and_value(key, value, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(**{"sizes.run": "yes", "study.plans": "all,expanding:blocks>all",
                       key: value})


@pytest.mark.parametrize("profile, message", [
    ("quik", "unknown profile 'quik'; did you mean 'quick'? (profiles: paper, quick, faithful, "
             "shift, smoke)"),
    ("Paper", "did you mean 'paper'?"),
    ("huge", "unknown profile 'huge' (profiles: paper, quick, faithful, shift, smoke)"),
])
def test_an_unknown_profile_names_the_closest_and_every_profile(profile, message):
    with pytest.raises(ValueError) as e:
        load_config(profile)
    assert message in str(e.value)


@pytest.mark.parametrize("overrides", [
    {"study.seed": "0"}, {"study.seed": str(2 ** 31 - 1)},
    {"finetune.epochs": "3", "finetune.warmup_epochs": "2"},
    # the order of --set does not matter: the rules between fields are checked at the end
    {"finetune.warmup_epochs": "5", "finetune.epochs": "6"},
])
def test_values_at_the_bounds_are_taken(overrides):
    cfg = load_config("smoke", overrides)
    assert {k: str(getattr(getattr(cfg, k.split(".")[0]), k.split(".")[1]))
            for k in overrides} == overrides


def test_values_take_the_declared_type():
    cfg = load_config("quick", {"data.target_n": "12", "finetune.stage_learning_rates": "1e-5,5e-6",
                                "sizes.counts": "4,8", "model.encoder_weights": "none",
                                "data.cache_dir": "123", "finetune.rotation": "1"})
    assert cfg.data.target_n == 12 and cfg.finetune.stage_learning_rates == [1e-5, 5e-6]
    assert cfg.sizes.counts == [4, 8] and cfg.model.encoder_weights is None
    assert cfg.data.cache_dir == "123"          # a string field stays a string
    assert isinstance(cfg.finetune.rotation, float)


def test_config_json_round_trip_and_unknown_keys_rejected():
    cfg = load_config("smoke", {"finetune.epochs": "3"})
    back = config_from_dict(json.loads(cfg.to_json()))
    assert back == cfg
    d = cfg.to_dict()
    d["finetune"]["epochz"] = 3
    with pytest.raises(ValueError, match="unknown config key 'finetune.epochz'"):
        config_from_dict(d)
    with pytest.raises(ValueError, match=r"unknown config section\(s\) \['extra'\]"):
        config_from_dict({**cfg.to_dict(), "extra": {}})
    d = cfg.to_dict()
    d["finetune"]["epochs"] = "many"
    with pytest.raises(ValueError, match="finetune.epochs: expected a whole number"):
        config_from_dict(d)


@pytest.mark.parametrize("key, hint", [
    ("finetune.epoch", "(did you mean finetune.epochs?)"),
    ("finetun.epochs", "(did you mean finetune.epochs"),
])
def test_a_misspelt_key_gets_the_closest(key, hint):
    from keras_unet_ft.config import load_config

    with pytest.raises(ValueError, match=re.escape(hint)):
        load_config("smoke", {key: "3"})


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "NaN"])
def test_a_non_finite_number_is_refused(value):
    from keras_unet_ft.config import load_config

    with pytest.raises(ValueError, match="finetune.learning_rate: expected a finite number"):
        load_config("smoke", {"finetune.learning_rate": value})
