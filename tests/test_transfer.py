"""sim -> real transfer (``keras_unet_ft.transfer``, ``unet-ft data realism``)."""

import math

import numpy as np
import pytest

from keras_unet_ft.transfer import MIN_GAIN, Transfer, realism_score

#: (sim->real, ceiling, floor) -> realism (None: the real set teaches too little)
SCORES = [
    ((0.45, 0.6, 0.3), 0.5),
    ((0.3, 0.6, 0.3), 0.0),
    ((0.2, 0.6, 0.3), -1 / 3),            # worse than untouched: negative, not clipped
    ((0.7, 0.6, 0.3), 4 / 3),             # better than real training: above 1, not clipped
    ((0.5, 0.3 + MIN_GAIN / 2, 0.3), None),
    ((0.5, 0.2, 0.3), None),              # real training made it worse
    ((0.5, math.nan, 0.3), None),
]


@pytest.mark.parametrize("args, expected", SCORES)
def test_realism_score(args, expected):
    got = realism_score(*args)
    assert got == pytest.approx(expected) if expected is not None else got is None


def _transfer(floor, s2r, ceiling):
    n = len(floor)
    return Transfer(floor=np.asarray(floor, float), sim_to_real=np.asarray(s2r, float),
                    ceiling=np.asarray(ceiling, float), sim_to_sim=0.9,
                    sim_to_real_runs=[float(np.mean(s2r))],
                    names=[str(i) for i in range(n)], simulated="sim", real="real", size=32)


def test_interval_covers_the_realism_and_resamples_images_together():
    rng = np.random.default_rng(0)
    floor = rng.uniform(0.1, 0.3, 80)
    ceiling = floor + rng.uniform(0.2, 0.5, 80)
    t = _transfer(floor, floor + 0.5 * (ceiling - floor), ceiling)
    lo, hi = t.interval()
    assert t.realism == pytest.approx(0.5)
    # every image gains exactly half: any resample does too (the scores of an image stay together)
    assert lo == pytest.approx(0.5) and hi == pytest.approx(0.5)
    d = t.to_dict()
    assert d["realism"] == 0.5 and d["n_real"] == 80 and d["realism_ci"] == [0.5, 0.5]
    assert "realism = (sim->real - floor) / (ceiling - floor) = 0.50" in t.text()


def test_too_small_a_gain_is_said_not_computed():
    t = _transfer([0.5, 0.5, 0.5], [0.6, 0.6, 0.6], [0.52, 0.52, 0.52])
    assert t.realism is None and t.to_dict()["realism"] is None
    assert "realism: not computed" in t.text()


def test_measure_transfer_runs_the_three_nets_and_leaves_out_empty_masks(tmp_path, capsys,
                                                                          monkeypatch):
    from keras_unet_ft import transfer
    from keras_unet_ft.data.registry import load_dataset
    from keras_unet_ft.model import build_unet
    from keras_unet_ft.runtime import fresh_session

    fresh_session(0)
    path = tmp_path / "model.keras"
    build_unet(input_shape=(32, 32, 1), base_filters=4, depth=2).save(path)
    assert transfer.model_size(str(path)) == 32
    real = load_dataset("sim_bus_simple", n=9, size=32, seed=5, cache=False, progress=False)
    real.masks[0] = 0                                   # an empty mask: left out, said
    sims = [load_dataset("sim_bus", n=6, size=32, seed=s, cache=False, progress=False)
            for s in (1, 2)]
    monkeypatch.delenv("UNET_FT_NO_PROGRESS", raising=False)
    capsys.readouterr()
    t = transfer.measure_transfer(str(path), real, sims, epochs=1, n_augmented=8, folds=2)
    # it once trained for 11 minutes in silence: a line per net (stderr is no terminal here)
    err = capsys.readouterr().err
    assert "\r" not in err
    assert ([line.split(":")[0] for line in err.splitlines() if line.startswith("realism")]
            == [f"realism net {k}/4" for k in range(1, 5)]), err
    assert "sim -> real (sim_bus)" in err and "ceiling, real fold 2/2: 1/1 epoch" in err
    assert len(t.sim_to_real_runs) == 2
    assert np.mean(t.sim_to_real_runs) == pytest.approx(t.sim_to_real.mean())
    assert t.excluded == [str(real.ids[0])] and len(t.floor) == 8
    for k in ("floor", "sim_to_real", "ceiling"):
        scores = getattr(t, k)
        assert scores.shape == (8,) and np.all((0 <= scores) & (scores <= 1))
    assert "left out: 1 real image(s) with an empty mask" in t.text()
    assert "ceiling (real -> real, 2-fold)" in t.text() and t.to_dict()["folds"] == 2
    with pytest.raises(ValueError, match="images of"):
        transfer.measure_transfer(str(path), real, [load_dataset(
            "sim_bus", n=6, size=64, seed=1, cache=False, progress=False)], epochs=1,
            n_augmented=8)


def test_each_net_of_the_measure_starts_from_the_pretrained_weights(tmp_path):
    """One compiled net serves every training of the measure: ``fresh`` puts the
    pretrained weights back and the optimizer at step 0 (moments 0, learning rate kept)."""
    from keras_unet_ft import transfer
    from keras_unet_ft.model import build_unet
    from keras_unet_ft.runtime import fresh_session

    fresh_session(0)
    path = tmp_path / "model.keras"
    build_unet(input_shape=(32, 32, 1), base_filters=4, depth=2).save(path)
    nets = transfer._Nets(str(path), 0)
    pretrained = [w.copy() for w in nets.model.get_weights()]
    rng = np.random.default_rng(0)
    x = rng.random((8, 32, 32, 1), dtype=np.float32)
    y = (x > 0.5).astype(np.uint8)
    net = transfer._train(nets.fresh(0), x, y, seed=0, epochs=1, n_augmented=8)
    assert int(net.optimizer.iterations.numpy()) > 0
    assert any(not np.array_equal(a, b) for a, b in zip(net.get_weights(), pretrained))
    net = nets.fresh(1)
    assert all(np.array_equal(a, b) for a, b in zip(net.get_weights(), pretrained))
    opt = net.optimizer
    assert int(opt.iterations.numpy()) == 0
    assert float(opt.learning_rate.numpy()) == pytest.approx(transfer.LEARNING_RATE)
    assert all(not np.any(v.numpy()) for v in opt.variables if "momentum" in v.path
               or "velocity" in v.path)


def test_data_realism_refuses_a_size_the_model_does_not_take(tmp_path, capsys):
    from keras_unet_ft.cli import main
    from keras_unet_ft.model import build_unet

    build_unet(input_shape=(32, 32, 1), base_filters=4, depth=2).save(tmp_path / "model.keras")
    assert main(["data", "realism", "sim_bus", "--pretrained", str(tmp_path),
                 "--size", "64"]) == 2
    assert "takes 32 x 32 images" in capsys.readouterr().err


def test_a_diverged_net_is_said_not_scored_as_zero():
    from keras_unet_ft import transfer
    from keras_unet_ft.runtime import Diverged

    class NaNModel:
        def predict(self, x, **kw):
            return np.full(x.shape, np.nan, np.float32)

    x = np.zeros((2, 8, 8, 1), np.float32)
    with pytest.raises(Diverged, match="non-finite"):
        transfer._scores(NaNModel(), x, x)
