"""Folds: near-duplicate images stay in one fold; the splits file is checked when read."""

import json

import numpy as np
import pytest

from keras_unet_ft.data.folds import load_or_make_folds, near_duplicate_groups


def _images(n=12, seed=0):
    return np.random.default_rng(seed).random((n, 32, 32, 1)).astype(np.float32)


def test_copies_are_grouped_and_kept_in_one_fold(tmp_path):
    imgs = _images()
    noisy = np.clip(imgs[[0, 0, 5]] + np.random.default_rng(1).normal(0, 0.005, (3, 32, 32, 1)),
                    0, 1).astype(np.float32)
    imgs = np.concatenate([imgs, noisy])          # 12, 13 copy image 0; 14 copies image 5
    ids = [f"i{k}" for k in range(len(imgs))]
    groups = near_duplicate_groups(imgs)
    assert groups[12] == groups[13] == groups[0] and groups[14] == groups[5]
    assert len(set(groups)) == 12
    path = tmp_path / "splits.json"
    folds = load_or_make_folds(path, ids, k=3, seed=0, images=imgs)
    fold_of = {i: k for k, f in enumerate(folds) for i in f["test"]}
    assert fold_of["i0"] == fold_of["i12"] == fold_of["i13"] and fold_of["i5"] == fold_of["i14"]
    saved = json.loads(path.read_text())
    assert sorted(map(sorted, saved["duplicate_groups"])) == [["i0", "i12", "i13"], ["i14", "i5"]]


def test_distinct_images_get_the_plain_folds(tmp_path):
    from keras_unet_ft.data.folds import make_folds

    imgs = _images()
    ids = [f"i{k}" for k in range(12)]
    folds = load_or_make_folds(tmp_path / "s.json", ids, k=3, seed=4, images=imgs)
    assert folds == make_folds(ids, 3, 4)


@pytest.mark.parametrize("content, message", [
    ("{broken", "not valid JSON"),
    ('{"k": 3}', "holds no folds"),
])
def test_a_broken_splits_file_names_itself(tmp_path, content, message):
    path = tmp_path / "sim_bus.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as e:
        load_or_make_folds(path, ["a", "b", "c"], k=3)
    assert "sim_bus.json" in str(e.value)
