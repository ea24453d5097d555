"""``encoder:NAME`` end to end: every backbone family on every trainer, and a study."""

import pytest

from keras_unet_ft.config import ENCODER_NAMES
from test_encoder_training import TRAINERS, check_frozen_and_counts, train_family
from test_own_network import _check_report, _study_args


@pytest.mark.parametrize("trainer", TRAINERS)
@pytest.mark.parametrize("name", ENCODER_NAMES)
def test_every_encoder_family_keeps_frozen_blocks_and_batchnorm(name, trainer):
    """Per family and trainer: frozen blocks bit for bit (BatchNorm statistics included),
    trained BatchNorm layers updated, trainable counts exact (the plan: contracting)."""
    check_frozen_and_counts(train_family(f"encoder:{name}", trainer))


@pytest.mark.slow
def test_study_on_an_encoder_unet_end_to_end(tmp_path):
    """``--model encoder:mobilenetv2`` with a random encoder, pretrained by the package on
    salient objects: REPORT.md names MobileNetV2's blocks and says the encoder is random."""
    from keras_unet_ft.cli import main

    out = tmp_path / "out"
    assert main(_study_args(out, "--model", "encoder:mobilenetv2",
                            "--set", "model.encoder_weights=none")) == 0
    report = _check_report(out, "MobileNetV2", "block_1_expand_BN")
    assert "random" in report
    assert (out / "pretrained" / "history.csv").exists()
