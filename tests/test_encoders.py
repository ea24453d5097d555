"""encoder:NAME: a U-Net decoder on a keras.applications backbone, built flat at 32 px,
random weights (nothing is downloaded); its block map by resolution."""

import math

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

from keras_unet_ft.blocks import BlockMap, resolution_levels
from keras_unet_ft.config import ENCODER_NAMES, ModelConfig
from keras_unet_ft.encoders import ENCODERS, build_encoder_unet, skip_layers
from keras_unet_ft.exitcodes import UserError
from keras_unet_ft.model import build_from_config, describe_model, model_config, model_identity

#: name -> (skips deep to shallow, levels of the map): the skips segmentation_models takes
CASES = {
    "resnet50": (["conv4_block6_out", "conv3_block4_out", "conv2_block3_out", "conv1_relu"], 6),
    "efficientnetb0": (["block6a_expand_activation", "block4a_expand_activation",
                        "block3a_expand_activation", "block2a_expand_activation"], 6),
    "mobilenetv2": (["block_13_expand_relu", "block_6_expand_relu", "block_3_expand_relu",
                     "block_1_expand_relu"], 6),
    "vgg16": (["block4_conv3", "block3_conv3", "block2_conv2", "block1_conv2"], 5),
    "densenet121": (["pool4_conv", "pool3_conv", "pool2_conv", "conv1_relu"], 6),
    "convnext_tiny": (["convnext_tiny_stage_2_block_8_identity",
                       "convnext_tiny_stage_1_block_2_identity",
                       "convnext_tiny_stage_0_block_2_identity"], 5),   # stem: /4
}


@pytest.fixture(scope="module")
def nets():
    """Each family built once (ResNet50, DenseNet121 cost seconds)."""
    return {}


def net(nets, name):
    if name not in nets:
        nets[name] = build_encoder_unet(name, (32, 32, 1), 4, encoder_weights=None)
    return nets[name]


def test_the_table_has_one_row_per_config_encoder():
    assert tuple(ENCODERS) == ENCODER_NAMES


@pytest.mark.parametrize("name", ENCODER_NAMES)
def test_skips_blocks_and_levels_follow_the_resolution(nets, name):
    m = net(nets, name)
    skips, n_levels = CASES[name]
    assert skip_layers(m) == skips
    assert m.output.shape == (None, 32, 32, 1) and m.get_layer("head_out").dtype == "float32"
    assert not any(isinstance(l, keras.Model) and not isinstance(l, keras.Sequential)
                   for l in m.layers)   # flat: the backbone's layers are the model's
    bm = BlockMap(m)
    n = 2 * n_levels - 1
    assert bm.units("level") == n_levels and len(bm.blocks) == n
    assert [b.part for b in bm.blocks] == (["contracting"] * (n_levels - 1) + ["bottleneck"]
                                           + ["expanding"] * (n_levels - 1))
    assert sum(b.params for b in bm.blocks) == m.count_params()
    # every layer with a resolution of its own sits in the block its level says
    info = resolution_levels(m)
    present = sorted({lv for lv, _, _ in info.values() if lv is not None})
    for b in bm.blocks:
        for layer in b.layers:
            level = info[layer][0]
            if level is not None:
                assert present.index(level) + 1 == b.level, (layer, b.index)
    # the decoder mirrors the encoder: decL_* in expanding level L, the skip in its
    # contracting block, the bottleneck is the backbone's deepest layers
    for b in bm.blocks:
        if b.part == "expanding":
            assert all(l.startswith("dec") or l == "head_out" for l in b.weighted_layers)
            assert {l.split("_")[0] for l in b.layers} <= {f"dec{b.level}", "head"}
    for level, skip in zip(range(n_levels - 1, 0, -1), skips):
        if level > 1 or name == "vgg16":
            assert skip in bm.blocks[level - 1].layers


@pytest.mark.parametrize("name", ["mobilenetv2", "vgg16"])
def test_decoder_filters_double_per_level(nets, name):
    m = net(nets, name)
    for level in range(1, 5):
        assert m.get_layer(f"dec{level}_conv1").filters == 4 * 2 ** (level - 1)
        assert m.get_layer(f"dec{level}_bn1") and m.get_layer(f"dec{level}_relu2")


def test_convnext_stem_gets_one_up_sampling_by_4(nets):
    m = net(nets, "convnext_tiny")
    assert tuple(m.get_layer("dec1_up").size) == (4, 4)
    with pytest.raises(ValueError):
        m.get_layer("dec1_concat")   # no weighted layer at full resolution: no skip


@pytest.mark.parametrize("name, shape, match", [
    ("resnet50", (48, 48, 1), r"input size 48x48 must be divisible by 32 .*ResNet50.*; try"),
    ("vgg16", (40, 40, 1), r"divisible by 16"),
    ("mobilenetv2", (32, 32, 3), r"grey input"),
    ("nope", (32, 32, 1), r"unknown encoder 'nope'"),
])
def test_bad_sizes_and_names_are_one_sentence(name, shape, match):
    with pytest.raises(UserError, match=match):
        build_encoder_unet(name, shape, 4, encoder_weights=None)


def test_imagenet_weights_are_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"put mobilenet_v2_weights_tf_dim_ordering_tf_"
                       r"kernels_1.0_224_no_top.h5 in .*models \(Keras' cache\)"):
        build_encoder_unet("mobilenetv2", (32, 32, 1), 4, encoder_weights="imagenet")


def test_a_weights_file_is_loaded_into_the_backbone(tmp_path, monkeypatch):
    src = keras.applications.MobileNetV2(include_top=False, weights=None,
                                         input_shape=(32, 32, 3))
    cached = tmp_path / "models" / ENCODERS["mobilenetv2"].weights_file
    cached.parent.mkdir()
    with h5py.File(cached, "w") as f:   # the format of Keras' ImageNet files
        legacy_h5_format.save_weights_to_hdf5_group(f, src)
    path = tmp_path / "mine.weights.h5"   # Keras 3's own format
    src.save_weights(path)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    for weights in ("imagenet", str(path)):
        m = build_encoder_unet("mobilenetv2", (32, 32, 1), 4, encoder_weights=weights)
        for layer in (l for l in src.layers if l.weights):
            for a, b in zip(m.get_layer(layer.name).get_weights(), layer.get_weights()):
                np.testing.assert_array_equal(a, b)
    other = tmp_path / "vgg.weights.h5"
    keras.applications.VGG16(include_top=False, weights=None,
                             input_shape=(32, 32, 3)).save_weights(other)
    with pytest.raises(UserError, match=r"does not fit keras.applications.MobileNetV2"):
        build_encoder_unet("mobilenetv2", (32, 32, 1), 4, encoder_weights=str(other))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_encoder_unet("mobilenetv2", (32, 32, 1), 4, encoder_weights=str(tmp_path / "x"))


@pytest.mark.parametrize("style_name, value, expected", [
    ("vgg16", 1.0, 255 - 103.939),          # caffe: x * 255 - BGR mean (first channel)
    ("mobilenetv2", 1.0, 1.0),              # tf: x * 2 - 1
    ("densenet121", 0.0, -0.485 / 0.229),   # torch: (x - mean) / std
    ("efficientnetb0", 0.5, 127.5),         # 0..255, normalised inside
])
def test_input_conventions(nets, style_name, value, expected):
    m = net(nets, style_name)
    probe = keras.Model(m.input, m.get_layer("encoder_preprocess").output)
    got = probe.predict(np.full((1, 32, 32, 1), value, np.float32), verbose=0)
    assert math.isclose(float(got[0, 0, 0, 0]), expected, rel_tol=1e-5)


def test_build_from_config_describe_and_identity(tmp_path):
    mc = ModelConfig(kind="encoder:vgg16", size=32, base_filters=4, encoder_weights=None)
    assert build_from_config(mc).name == "unet_vgg16"
    assert describe_model(mc) == "U-Net on a VGG16 encoder (encoder weights: none (random))"
    assert model_identity(mc) == {"kind": "encoder:vgg16", "encoder": "vgg16",
                                  "weights_sha256": None}


def test_structure_only_drops_encoder_weights():
    class Cfg:
        model = ModelConfig(encoder_weights="imagenet")

    assert model_config(Cfg, "encoder:resnet50", structure_only=True).encoder_weights is None
    assert model_config(Cfg, "encoder:resnet50").encoder_weights == "imagenet"
    assert model_config(Cfg, "unet", structure_only=True).encoder_weights == "imagenet"


def test_unet_ft_plans_prints_an_encoder_unet_without_its_weights(capsys, monkeypatch,
                                                                   tmp_path):
    from keras_unet_ft.cli import main

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))   # no ImageNet file: none is read
    assert main(["plans", "--model", "encoder:vgg16", "--size", "32", "--base-filters",
                 "4"]) == 0
    out = capsys.readouterr().out
    assert "model unet_vgg16: input 32x32x1" in out and "9 blocks, 5 levels" in out
    assert main(["plans", "--model", "encoder:vgg16", "--size", "40"]) == 2
