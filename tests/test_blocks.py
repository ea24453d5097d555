"""The block map: blocks by longest path from the input, parts, levels, units, parameters."""

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
