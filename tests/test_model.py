import numpy as np
import pytest

from keras_unet_ft.model import build_unet, build_xunet


def test_paper_unet_parameter_count_and_shape():
    model = build_unet()
    assert model.count_params() == 31_031_685
    assert model.output_shape == (None, 256, 256, 1)
    convs = [l for l in model.layers if l.__class__.__name__ == "Conv2D"]
    assert len(convs) == 24  # zhixuhao: incl. 2x2 up-convs and the 2-filter head conv
    for name in ("enc1_conv1", "enc1_pool", "enc4_drop", "bottleneck_conv2", "bottleneck_drop",
                 "dec4_up", "dec4_upconv", "dec4_concat", "dec4_conv1", "head_conv", "head_out"):
        model.get_layer(name)


def test_small_variant_runs_and_output_in_unit_range():
    model = build_unet((32, 32, 1), base_filters=4, depth=3)
    y = model.predict(np.random.rand(2, 32, 32, 1).astype("float32"), verbose=0)
    assert y.shape == (2, 32, 32, 1)
    assert np.all((y >= 0) & (y <= 1))
    assert not any("drop" in l.name for l in build_unet((32, 32, 1), 4, dropout=0).layers)


def test_xunet_options():
    model = build_xunet((64, 64, 1), base_filters=8)
    names = [l.name for l in model.layers]
    assert "head_conv" not in names and not any("drop" in n for n in names)
    assert model.get_layer("dec4_up").__class__.__name__ == "Conv2DTranspose"
    # paper size: 31,031,685 - upconv/head differences
    assert build_xunet().count_params() == 31_030_593


@pytest.mark.parametrize("kwargs, message", [
    ({"input_shape": (100, 100, 1)}, "divisible by 2**depth = 16"),
    ({"input_shape": (64, 64)}, "(height, width, channels)"),
    ({"input_shape": (64, 64, 1), "base_filters": 0}, "base_filters must be a positive integer, got 0"),
    ({"input_shape": (64, 64, 1), "depth": 0}, "depth must be a positive integer, got 0"),
    ({"input_shape": (64, 64, 1), "dropout": 1.5}, "dropout must be in [0, 1), got 1.5"),
    ({"input_shape": (64, 64, 1), "up_mode": "deconv"}, "'deconv'"),
])
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError) as e:
        build_unet(**kwargs)
    assert message in str(e.value)
