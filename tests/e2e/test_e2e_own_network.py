"""``encoder:NAME`` end to end: a U-Net on a keras.applications backbone through the study."""

import pytest

from test_own_network import _check_report, _study_args


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
