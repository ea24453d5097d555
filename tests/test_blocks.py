"""The block map: blocks by spatial resolution, parts, levels, units, parameters; hand-made
nets with every kind of boundary and non-boundary; graphs that are no U refused."""

import keras
import pytest

from keras_unet_ft.blocks import BlockMap, check_scheme
from keras_unet_ft.model import build_unet, build_xunet


@pytest.mark.parametrize("builder, depth", [(build_unet, 2), (build_unet, 3), (build_xunet, 2)])
def test_blocks_parts_and_units_follow_the_depth(builder, depth):
    bm = BlockMap(builder((32, 32, 1), base_filters=4, depth=depth))
    n = 2 * depth + 1
    assert [b.index for b in bm.blocks] == list(range(1, n + 1))
    assert [b.part for b in bm.blocks] == (["contracting"] * depth + ["bottleneck"]
                                           + ["expanding"] * depth)
    assert bm.units("path") == n and bm.units("level") == depth + 1
    # a level holds the contracting and expanding block of one resolution
    assert [b.index for b in bm.blocks_in_units([1], "level")] == [1, n]
    assert sum(r["params"] for r in bm.table()) == bm.total_params
    assert abs(sum(r["share_percent"] for r in bm.table()) - 100) < 1e-9
    assert len(bm.conv_layers()) >= 2 * n


def test_the_paper_unet_has_nine_blocks_and_24_convolutions():
    bm = BlockMap(build_unet())
    assert len(bm.blocks) == 9 and len(bm.conv_layers()) == 24
    assert list(bm.blocks[4].weighted_layers) == ["bottleneck_conv1", "bottleneck_conv2"]


def test_a_net_that_is_no_unet_is_refused_by_name():
    x = keras.Input((32, 32, 1))
    y = keras.layers.Conv2D(1, 3, padding="same", name="only")(x)
    with pytest.raises(ValueError, match="does not look like a U-Net: 0 pooling layers"):
        BlockMap(keras.Model(x, y, name="plain"))


@pytest.mark.parametrize("scheme, ok", [("path", True), ("level", True), ("depth", False),
                                        ("", False)])
def test_depth_schemes(scheme, ok):
    if ok:
        assert check_scheme(scheme) == scheme
    else:
        with pytest.raises(ValueError, match="unknown depth scheme"):
            check_scheme(scheme)


L = keras.layers


def hand_made_net():
    """Every kind of boundary and non-boundary the rule names, at 64 px."""
    x = keras.Input((64, 64, 1), name="input")
    c1 = L.Conv2D(4, 3, padding="same", name="c1")(x)
    c1v = L.Conv2D(4, 3, padding="valid", name="c1v")(c1)             # 62 px: no boundary
    pad = L.ZeroPadding2D(1, name="pad")(c1v)
    down = L.Conv2D(8, 3, strides=2, padding="same", name="down")(pad)  # opens level 2
    dil = L.Conv2D(8, 3, dilation_rate=2, padding="same", name="dil")(down)
    gap = L.GlobalAveragePooling2D(name="se_gap")(dil)                # SE: no level
    se = L.Conv2D(8, 1, activation="sigmoid", name="se_conv")(L.Reshape((1, 1, 8),
                                                                         name="se_shape")(gap))
    mul = L.Multiply(name="se_mul")([dil, se])
    res = L.Add(name="res_add")([down, mul])
    pool = L.AveragePooling2D(2, name="pool")(res)                    # closes level 2
    b1 = L.Conv2D(16, 3, padding="same", name="b1")(pool)
    up1 = L.Resizing(32, 32, name="up1")(b1)                          # opens expanding 2
    cat = L.Concatenate(name="cat")([res, up1])
    e2 = L.Conv2D(8, 3, padding="same", name="e2")(cat)
    up2 = L.Conv2DTranspose(4, 2, strides=2, name="up2")(e2)           # expanding 1
    cat2 = L.Concatenate(name="cat2")([c1, up2])
    y = L.Conv2D(1, 1, activation="sigmoid", name="out")(cat2)
    return keras.Model(x, y, name="hand")


def test_a_hand_made_net_splits_where_the_resolution_changes():
    m = hand_made_net()
    bm = BlockMap(m)
    want = {1: ["input", "c1", "c1v", "pad"],
            2: ["down", "dil", "se_gap", "se_shape", "se_conv", "se_mul", "res_add", "pool"],
            3: ["b1"], 4: ["up1", "cat", "e2"], 5: ["up2", "cat2", "out"]}
    assert {b.index: list(b.layers) for b in bm.blocks} == want
    assert [b.part for b in bm.blocks] == ["contracting", "contracting", "bottleneck",
                                           "expanding", "expanding"]
    assert [b.level for b in bm.blocks] == [1, 2, 3, 2, 1] and bm.n_pools == 2
    assert sum(b.params for b in bm.blocks) == m.count_params()
    assert bm.conv_layers() == ["c1", "c1v", "down", "dil", "se_conv", "b1", "e2", "up2", "out"]


def test_depthwise_and_separable_convolutions_count_as_convolutions():
    x = keras.Input((32, 32, 1))
    h = L.DepthwiseConv2D(3, strides=2, padding="same", name="dw")(x)
    h = L.SeparableConv2D(4, 3, padding="same", name="sep")(h)
    h = L.UpSampling2D(name="up")(h)
    m = keras.Model(x, L.Conv2D(1, 1, activation="sigmoid", name="out")(h))
    bm = BlockMap(m)
    assert bm.conv_layers() == ["dw", "sep", "out"]
    assert [list(b.weighted_layers) for b in bm.blocks] == [[], ["dw", "sep"], ["out"]]


def no_way_back():
    x = keras.Input((32, 32, 1))
    h = L.MaxPooling2D()(L.Conv2D(2, 3, padding="same")(x))
    return keras.Model(x, L.Conv2D(1, 1, activation="sigmoid")(h), name="down_only")


def half_way_back():
    x = keras.Input((32, 32, 1))
    h = L.MaxPooling2D()(L.MaxPooling2D()(L.Conv2D(2, 3, padding="same")(x)))
    h = L.UpSampling2D()(L.Conv2D(2, 3, padding="same")(h))
    return keras.Model(x, L.Conv2D(1, 1, activation="sigmoid")(h), name="half")


def extra_decoder_level():
    x = keras.Input((32, 32, 1))
    h = L.Conv2D(2, 4, strides=4, name="stem")(x)                    # /4 at once
    h = L.UpSampling2D(name="up_a")(L.Conv2D(2, 3, padding="same")(h))
    h = L.UpSampling2D(name="up_b")(h)                               # through /2: not mirrored
    return keras.Model(x, L.Conv2D(1, 1, activation="sigmoid")(h), name="extra")


@pytest.mark.parametrize("make, match", [
    (no_way_back, r"'down_only' does not look like a U-Net: it goes down to 1/2 .* never "
                  r"up-samples back"),
    (half_way_back, r"'half' does not look like a U-Net: its expanding path restores levels "
                    r"\[2\] but its contracting path has levels \[1, 2\]"),
    (extra_decoder_level, r"'extra' does not look like a U-Net: .*expected them to mirror"),
])
def test_graphs_that_are_no_u_are_refused_in_one_sentence(make, match):
    with pytest.raises(ValueError, match=match) as e:
        BlockMap(make())
    assert "\n" not in str(e.value)


def test_vunet_map_is_unchanged():
    from keras_unet_ft.vunet import build_vunet

    bm = BlockMap(build_vunet((32, 32, 1), encoder_weights=None))
    assert [list(b.weighted_layers) for b in bm.blocks] == [
        ["block1_conv1", "block1_conv2"], ["block2_conv1", "block2_conv2"],
        ["block3_conv1", "block3_conv2", "block3_conv3"],
        ["block4_conv1", "block4_conv2", "block4_conv3"],
        ["block5_conv1", "block5_conv2", "block5_conv3"],
        ["dec4_up", "dec4_conv1", "dec4_conv2"], ["dec3_up", "dec3_conv1", "dec3_conv2"],
        ["dec2_up", "dec2_conv1", "dec2_conv2"],
        ["dec1_up", "dec1_conv1", "dec1_conv2", "head_out"]]
    assert bm.block_of["block4_pool"] == 4 and bm.block_of["dec4_concat"] == 6
