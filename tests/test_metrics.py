import numpy as np
import pytest

from keras_unet_ft.metrics import adjusted_rand, batch_metrics, dice, pixel_error

Z = np.zeros((4, 4))
O = np.ones((4, 4))
HALF = np.zeros((4, 4))
HALF[:2] = 1
QUARTER = np.zeros((4, 4))
QUARTER[:1] = 1


@pytest.mark.parametrize("t, p, d, pe, ari", [
    (HALF, HALF, 1.0, 0.0, 1.0),
    (Z, Z, 1.0, 0.0, 1.0),           # both empty: perfect (PAPER.md D)
    (O, O, 1.0, 0.0, 1.0),           # both full
    (Z, O, 0.0, 100.0, 1.0),         # one cluster each: ARI is label-invariant
    (HALF, Z, 0.0, 50.0, 0.0),       # prediction empty
    (Z, HALF, 0.0, 50.0, 0.0),       # ground truth empty
    (HALF, 1 - HALF, 0.0, 100.0, 1.0),
    (HALF, QUARTER, 2 * 4 / (8 + 4), 25.0, None),
])
def test_truth_table(t, p, d, pe, ari):
    assert dice(t, p) == pytest.approx(d)
    assert pixel_error(t, p) == pytest.approx(pe)
    if ari is not None:
        assert adjusted_rand(t, p) == pytest.approx(ari)
    else:
        assert 0.0 < adjusted_rand(t, p) < 1.0


def test_threshold_is_strictly_above_half():
    t = np.array([[1.0, 0.0]])
    assert dice(t, np.array([[0.5, 0.0]])) == 0.0
    assert dice(t, np.array([[0.51, 0.0]])) == 1.0


def test_batch_metrics_per_image():
    t = np.stack([HALF, Z])[..., None]
    p = np.stack([HALF, HALF])[..., None]
    m = batch_metrics(t, p)
    assert m["dice"].tolist() == [1.0, 0.0]
    assert m["pixel_error"].tolist() == [0.0, 50.0]


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shapes differ"):
        dice(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"expected a batch"):
        batch_metrics(np.zeros(4), np.zeros(4))


@pytest.mark.parametrize("shift, expected", [(0, 0.0), (1, 1.0), (3, 3.0)])
def test_hd95_of_shifted_squares(shift, expected):
    from keras_unet_ft.metrics import hd95

    a = np.zeros((32, 32), bool)
    a[8:20, 8:20] = True
    b = np.roll(a, shift, axis=1)
    assert hd95(a, b) == pytest.approx(expected)


@pytest.mark.parametrize("truth, pred, expected", [
    ("empty", "empty", 0.0),
    ("square", "empty", float(np.hypot(16, 16))),
    ("empty", "square", float(np.hypot(16, 16))),
])
def test_hd95_with_empty_masks(truth, pred, expected):
    from keras_unet_ft.metrics import hd95

    masks = {"empty": np.zeros((16, 16)), "square": np.pad(np.ones((4, 4)), 6)}
    assert hd95(masks[truth], masks[pred]) == pytest.approx(expected)


def test_hd95_ignores_a_few_outlier_pixels_unlike_the_maximum():
    from keras_unet_ft.metrics import batch_metrics, hd95

    a = np.zeros((64, 64), bool)
    a[10:50, 10:50] = True
    b = a.copy()
    b[60, 60] = True          # one stray pixel far away: HD (max) would be ~14 px
    assert hd95(a, b) < 2.0
    m = batch_metrics(a[None, ..., None].astype(float), b[None, ..., None].astype(float))
    assert m["hd95_percent"][0] == pytest.approx(100 * m["hd95"][0] / np.hypot(64, 64))
