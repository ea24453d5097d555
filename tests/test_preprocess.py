"""Masks in every encoding users ship: foreground = everything that is not background."""

import logging

import numpy as np
import pytest
from PIL import Image

from keras_unet_ft.data.dataset import Dataset
from keras_unet_ft.data.preprocess import binarize_mask, check_empty_masks, read_image

BOX = (slice(2, 6), slice(3, 8))      # the lesion: 4 x 5 = 20 pixels
EXPECTED = np.zeros((10, 12), bool)
EXPECTED[BOX] = True


def _gray(value, dtype=np.uint8, bg=0):
    a = np.full((10, 12), bg, dtype)
    a[BOX] = value
    return a


def _rgb(colour, bg=(0, 0, 0), alpha=None):
    a = np.zeros((10, 12, 3 if alpha is None else 4), np.uint8)
    a[..., :3] = bg
    a[BOX + (slice(0, 3),)] = colour
    if alpha is not None:
        a[..., 3] = alpha
        a[BOX + (3,)] = 255
    return a


def _palette(path, colours, index_bg=0):
    a = np.full((10, 12), index_bg, np.uint8)
    a[BOX] = 1 - index_bg
    im = Image.fromarray(a, mode="P")
    im.putpalette([c for rgb in colours for c in rgb] + [0] * (768 - 3 * len(colours)))
    im.save(path)
    return read_image(path)


@pytest.mark.parametrize("name, mask", [
    ("0/255", _gray(255)),
    ("0/1 labels", _gray(1)),
    ("label value 2", _gray(2)),
    ("labels 0/3 in 16 bits", _gray(3, np.uint16)),
    ("0/65535", _gray(65535, np.uint16)),
    ("grey 0/128", _gray(128)),
    ("bool", _gray(True, bool)),
    ("float 0/1", _gray(1.0, np.float32)),
    ("RGB 0/1 (same channels)", np.stack([_gray(1)] * 3, -1)),
    ("red on black", _rgb((255, 0, 0))),
    ("green on black", _rgb((0, 200, 0))),
    ("red on white", _rgb((255, 0, 0), bg=(255, 255, 255))),
    ("red, transparent background", _rgb((255, 0, 0), alpha=0)),
    ("red, opaque background", _rgb((255, 0, 0), alpha=255)),
])
def test_foreground_whatever_the_encoding(name, mask):
    fg, _ = binarize_mask(mask)
    assert np.array_equal(fg, EXPECTED), name


@pytest.mark.parametrize("colours, index_bg", [
    ([(0, 0, 0), (255, 0, 0)], 0),            # black background, red lesion
    ([(255, 0, 0), (255, 255, 255)], 1),      # white background (index 1), red lesion
])
def test_palette_masks(tmp_path, colours, index_bg):
    fg, _ = binarize_mask(_palette(tmp_path / "p.png", colours, index_bg))
    assert np.array_equal(fg, EXPECTED)


def test_class_coded_colours_keep_the_chosen_classes():
    a = _rgb((255, 0, 0))
    a[7:9, 0:2] = (0, 255, 0)                 # a green (benign) region elsewhere
    assert binarize_mask(a)[0].sum() == 24    # every colour
    assert np.array_equal(binarize_mask(a, ("red",))[0], EXPECTED)
    assert binarize_mask(a, ("green",))[0].sum() == 4
    with pytest.raises(ValueError, match=r"unknown mask colour\(s\) \['purple'\]"):
        binarize_mask(a, "red,purple")


def test_graded_mask_is_thresholded_and_said_so():
    a = _gray(200)
    a[0, 0] = 90
    fg, thresholded = binarize_mask(a)
    assert thresholded and np.array_equal(fg, EXPECTED)


def _ds(n_empty, n=10):
    masks = np.zeros((n, 4, 4, 1), np.uint8)
    masks[n_empty:, 1:3, 1:3] = 1
    return Dataset("d", np.zeros((n, 4, 4, 1), np.float32), masks, [str(i) for i in range(n)])


def test_all_empty_masks_are_an_error():
    with pytest.raises(ValueError, match="all 10 masks are empty"):
        check_empty_masks(_ds(10))


@pytest.mark.parametrize("n_empty, warned", [(0, False), (2, False), (3, True)])
def test_many_empty_masks_are_said_out_loud(caplog, n_empty, warned):
    with caplog.at_level(logging.WARNING, logger="keras_unet_ft.data"):
        assert check_empty_masks(_ds(n_empty)) == n_empty
    assert ("masks (30 %) are empty" in caplog.text) == warned


def test_an_empty_file_says_so(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"a.png: the file is empty \(0 bytes\)"):
        read_image(tmp_path / "a.png")


def test_a_cache_that_cannot_be_written_is_said_and_skipped(tmp_path, monkeypatch, caplog):
    import errno

    from keras_unet_ft.data import preprocess
    from keras_unet_ft.data.registry import load_dataset

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(preprocess, "atomic_savez", read_only)
    ds = load_dataset("sim_bus?n=4", size=32, cache_directory=str(tmp_path))
    assert len(ds) == 4 and "cannot write the dataset cache" in caplog.text
