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


def _dataset(n=24, seed=0, classes=True):
    from keras_unet_ft.data.dataset import Dataset

    imgs = np.random.default_rng(seed).random((n, 16, 16, 1), dtype=np.float32)
    meta = {"class": ["benign" if k % 3 else "malignant" for k in range(n)]} if classes else {}
    return Dataset("t", imgs, (imgs > 0.5).astype(np.uint8), [f"i{k}" for k in range(n)], meta)


def test_inner_split_never_holds_the_outer_test_fold_and_ignores_its_pixels(tmp_path):
    """Nested selection: the inner training and validation arrays are made from the outer
    training images only - poisoning the outer test fold changes nothing in them."""
    from keras_unet_ft.data.study_data import inner_fold, target_folds

    cfg = tiny_config(**{"finetune.folds": "3"})
    ds = _dataset()
    path = tmp_path / "t.json"
    folds = target_folds(cfg, ds, path)
    for k, fold in enumerate(folds):
        inner = inner_fold(cfg, ds, fold, k, path)
        assert not set(inner["train"] + inner["test"]) & set(fold["test"])
        assert sorted(inner["train"] + inner["test"]) == sorted(fold["train"])
        assert not set(inner["train"]) & set(inner["test"])
        assert 0.2 < len(inner["test"]) / len(fold["train"]) < 0.45
        (x, y), (xt, yt, ids) = fold_arrays(cfg, ds, inner, k)
        poisoned = _dataset()
        test_rows = [ds.ids.index(i) for i in fold["test"]]
        poisoned.images[test_rows] = 1.0 - poisoned.images[test_rows]
        poisoned.masks[test_rows] = 1 - poisoned.masks[test_rows]
        inner2 = inner_fold(cfg, poisoned, fold, k, path)
        (x2, y2), (xt2, yt2, ids2) = fold_arrays(cfg, poisoned, inner2, k)
        assert inner2 == inner and ids2 == ids
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
        np.testing.assert_array_equal(xt, xt2)


def test_inner_split_keeps_near_duplicates_together():
    from keras_unet_ft.data.folds import inner_split

    ids = [f"i{k}" for k in range(12)]
    for seed in range(5):
        s = inner_split(ids, 3, seed, duplicate_groups=[["i0", "i5", "i9"], ["i2", "i3"]])
        assert len({("i0" in s["test"]), ("i5" in s["test"]), ("i9" in s["test"])}) == 1
        assert ("i2" in s["test"]) == ("i3" in s["test"])


@pytest.mark.parametrize("sizes, n_obj, folds, warnings, expected", [
    (["40x40"] * 40, 40, 2, [], []),
    (["40x40"] * 39 + ["80x40"], 40, 2, [], ["mixed aspect ratios (width / height from 1.00"]),
    (["40x40"] * 40, 12, 3, [], ["12 images with an object over 3 folds, about 4 per test fold"]),
    # the loader's own warnings come first, as the loader wrote them
    (["40x40"] * 40, 40, 2, ["x: 1 of 41 image/mask pair(s) cannot be read and are left out"],
     ["1 of 41 image/mask pair(s) cannot be read"]),
])
def test_data_notes_say_what_the_report_must_warn_about(sizes, n_obj, folds, warnings, expected):
    import numpy as np

    from keras_unet_ft.data.dataset import Dataset
    from keras_unet_ft.data.study_data import data_notes

    n = len(sizes)
    masks = np.zeros((n, 8, 8, 1), np.uint8)
    masks[:n_obj, 2:4, 2:4] = 1
    ds = Dataset("x", np.zeros((n, 8, 8, 1), np.float32), masks, [f"i{k}" for k in range(n)],
                 {"original_size": sizes}, warnings=warnings)
    notes = data_notes(ds, folds)
    assert len(notes) == len(expected)
    for note, want in zip(notes, expected):
        assert want in note, note


def test_a_real_folder_records_the_sizes_before_resizing(tmp_path):
    from PIL import Image

    from keras_unet_ft.data import load_dataset

    for s, (h, w) in (("a", (40, 40)), ("b", (40, 80))):
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(np.full((h, w), 100, np.uint8)).save(tmp_path / "images" / f"{s}.png")
        m = np.zeros((h, w), np.uint8)
        m[5:20, 5:20] = 255
        Image.fromarray(m).save(tmp_path / "masks" / f"{s}.png")
    ds = load_dataset(f"folder:{tmp_path}", size=32, cache=False)
    assert ds.meta["original_size"] == ["40x40", "80x40"]
