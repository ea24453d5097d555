"""The data of a study: fold arrays, nested subsets of the dataset-size study."""

import numpy as np
import pytest

from conftest import tiny_config
from keras_unet_ft.data.study_data import fold_arrays


def test_size_subsets_are_nested_and_augmented_by_the_factor():
    from keras_unet_ft.data.dataset import Dataset

    cfg = tiny_config(**{"sizes.augment_factor": "3"})
    n = 20
    imgs = np.random.default_rng(0).random((n, 16, 16, 1), dtype=np.float32)
    ds = Dataset("t", imgs, (imgs > 0.5).astype(np.uint8), [f"i{k}" for k in range(n)])
    fold = {"train": ds.ids[:16], "test": ds.ids[16:]}
    picked = {}
    for size in (4, 8, 16):
        for aug in (False, True):
            (x, y), (xt, _, ids) = fold_arrays(cfg, ds, fold, 0, size, aug)
            assert len(x) == (3 * size if aug else size) and ids == ds.ids[16:]
            picked[size] = {float(v) for v in x[:size, 0, 0, 0]}  # originals come first
    assert picked[4] < picked[8] < picked[16]  # nested subsets
    with pytest.raises(ValueError, match="n_train=17 but the fold has 16"):
        fold_arrays(cfg, ds, fold, 0, 17, True)
