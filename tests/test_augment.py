import json

import numpy as np
import pytest

from keras_unet_ft.data.augment import AugmentParams, augment_pair, augment_to
from keras_unet_ft.data.folds import load_or_make_folds, make_folds


def _blobs(n=4, size=32):
    yy, xx = np.mgrid[:size, :size]
    masks = np.stack([((yy - 10 - i) ** 2 + (xx - 14) ** 2 < 40) for i in range(n)])
    return masks[..., None].astype(np.uint8)


def test_image_equal_to_its_mask_stays_equal():
    m = _blobs()
    img = m.astype(np.float32)
    xa, ma, src = augment_to(img, m, total=40, seed=3)
    assert src.tolist()[:8] == [0, 1, 2, 3, 0, 1, 2, 3]
    np.testing.assert_array_equal(xa[:4], img)     # originals kept first
    # bilinear vs nearest only differ on the boundary: thresholded image == mask almost everywhere
    agree = np.mean((xa > 0.5) == (ma > 0))
    assert agree > 0.98
    assert not np.array_equal(xa[4:], img[src[4:]])  # the copies were transformed


def test_masks_stay_binary_and_transforms_differ_per_sample():
    m = _blobs(2)
    _, ma, _ = augment_to(m.astype(np.float32), m, total=10, seed=0)
    assert set(np.unique(ma)) <= {0, 1}
    assert not np.array_equal(ma[2], ma[4])  # two copies of image 0, two transforms


def test_seeded():
    m = _blobs(3)
    a = augment_to(m.astype(np.float32), m, total=9, seed=5)[0]
    b = augment_to(m.astype(np.float32), m, total=9, seed=5)[0]
    np.testing.assert_array_equal(a, b)


def test_flip_only_mirrors_both():
    m = _blobs(1)[0]
    p = AugmentParams(rotation=0, shift=0, shear=0, zoom=0, hflip=True)
    flips = 0
    for s in range(6):
        xi, xm = augment_pair(m.astype(np.float32), m, np.random.default_rng(s), p)
        if not np.array_equal(xm, m):
            np.testing.assert_array_equal(xm, m[:, ::-1])
            np.testing.assert_array_equal(xi, m[:, ::-1].astype(np.float32))
            flips += 1
    assert 0 < flips < 6


@pytest.mark.parametrize("kwargs, message", [
    ({"total": 2}, "less than the 4 original"),
])
def test_augment_errors(kwargs, message):
    m = _blobs()
    with pytest.raises(ValueError, match=message):
        augment_to(m.astype(np.float32), m, **kwargs)
    with pytest.raises(ValueError, match="rotation must be in"):
        AugmentParams(rotation=2.0)


def test_folds_partition_and_stratify(tmp_path):
    ids = [f"im{i}" for i in range(20)]
    strata = ["a"] * 14 + ["b"] * 6
    folds = make_folds(ids, k=3, seed=1, strata=strata)
    tests = [i for f in folds for i in f["test"]]
    assert sorted(tests) == sorted(ids)
    for f in folds:
        assert not set(f["train"]) & set(f["test"])
        assert sum(i in ids[14:] for i in f["test"]) == 2  # b spread evenly
    path = tmp_path / "splits" / "x.json"
    f1 = load_or_make_folds(path, ids, k=3, seed=1, strata=strata)
    data = json.loads(path.read_text())
    assert data["folds"] == f1
    assert load_or_make_folds(path, ids, k=3, seed=99) == f1  # reused, not remade
    with pytest.raises(ValueError, match="do not match"):
        load_or_make_folds(path, ids[:10], k=3)
    with pytest.raises(ValueError, match="k must be between 2"):
        make_folds(ids, k=1)
