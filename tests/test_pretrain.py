"""Pretraining: checkpointed every epoch, resumed after a stop, within a time budget."""

import time

import pytest

from conftest import tiny_config
from keras_unet_ft.data import load_dataset
from keras_unet_ft.io import read_csv
from keras_unet_ft.pretrain import TimeUp, pretrain


@pytest.mark.slow
def test_pretraining_stops_within_its_budget_and_resumes(tmp_path):
    cfg = tiny_config(**{"pretrain.epochs": "3"})
    ds = load_dataset("synth_salient", n=18, size=32, cache=False, progress=False)
    out = tmp_path / "pretrained"
    with pytest.raises(TimeUp, match="stopped after epoch 1 of 3"):
        pretrain(cfg, ds, out, deadline=time.time())          # stops after one epoch
    assert not (out / "model.keras").exists() and (out / "backup").is_dir()
    first = read_csv(out / "history.partial.csv")
    assert len(first) == 1
    path = pretrain(cfg, ds, out)                               # continues: epochs 2 and 3
    rows = read_csv(out / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert rows[0]["loss"] == first[0]["loss"]                 # epoch 1 was not redone
    assert path.exists() and not (out / "backup").exists()
    assert not (out / "history.partial.csv").exists()
    assert pretrain(cfg, ds, out) == path                      # done: reused


def test_a_one_image_pretraining_set_is_a_sentence(tmp_path):
    import numpy as np

    from keras_unet_ft.config import load_config
    from keras_unet_ft.data.dataset import Dataset
    from keras_unet_ft.pretrain import pretrain

    ds = Dataset("tiny", np.zeros((1, 32, 32, 1), np.float32), np.ones((1, 32, 32, 1), np.uint8),
                 ["a"])
    with pytest.raises(ValueError, match="needs at least 2 images .* it has 1"):
        pretrain(load_config("smoke"), ds, tmp_path / "pre")


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A 2-epoch pretraining stopped after its first epoch: checkpointed, to be damaged."""
    cfg = tiny_config(**{"pretrain.epochs": "2"})
    ds = load_dataset("synth_salient", n=18, size=32, cache=False, progress=False)
    out = tmp_path_factory.mktemp("stopped") / "pretrained"
    with pytest.raises(TimeUp):
        pretrain(cfg, ds, out, deadline=time.time())          # one epoch, checkpointed
    return cfg, ds, out


@pytest.mark.slow
@pytest.mark.parametrize("damage", [
    lambda out: (out / "backup" / "latest.weights.h5").write_bytes(b"\x89HDF\r\n half"),
    lambda out: (out / "backup" / "training_metadata.json").write_text('{"epo'),
    lambda out: (out / "history.partial.csv").write_text("epoch,loss,val_loss\n0,0.69,0.6\n1,0."
                                                         "7,x\n"),
    lambda out: (out / "model.tmp.keras").write_bytes(b"PK\x03\x04 cut"),
])
def test_a_checkpoint_cut_by_a_kill_is_set_aside_and_pretraining_finishes(tmp_path, damage,
                                                                          caplog, stopped):
    """A kill while a checkpoint was written once left every rerun with an h5py traceback."""
    import shutil

    cfg, ds, first = stopped
    out = tmp_path / "pretrained"
    shutil.copytree(first, out)
    damage(out)
    (out / "backup.bad").mkdir()          # an earlier set-aside checkpoint is replaced
    (out / "backup.bad" / "old").write_text("x")
    path = pretrain(cfg, ds, out)
    assert path.exists() and "is unreadable" in caplog.text and "it is set aside" in caplog.text
    assert [int(r["epoch"]) for r in read_csv(out / "history.csv")] == [1, 2]
    assert any(p.name.endswith(".bad") for p in out.iterdir())


def test_a_repeated_epoch_row_is_read_once(tmp_path):
    from keras_unet_ft.pretrain import _epochs

    p = tmp_path / "h.csv"
    p.write_text("epoch,loss,val_loss\n0,0.7,0.6\n1,0.6,0.5\n1,0.55,0.45\n")
    assert [(r["epoch"], r["loss"]) for r in _epochs(p)] == [(0, 0.7), (1, 0.55)]


def _weights(path):
    import keras

    return keras.saving.load_model(path, compile=False).get_weights()


def _stop_after_epoch_1(cfg, ds, out):
    with pytest.raises(TimeUp, match="after epoch 1 of 3"):
        pretrain(cfg, ds, out, deadline=time.time())


def _stop_after_epoch_2(cfg, ds, out):
    _stop_after_epoch_1(cfg, ds, out)
    with pytest.raises(TimeUp, match="after epoch 2 of 3"):
        pretrain(cfg, ds, out, deadline=time.time())


def _killed_between_weights_and_metadata(cfg, ds, out):
    """Epoch 2's weights file is in place, the metadata still says epoch 1."""
    _stop_after_epoch_2(cfg, ds, out)
    (out / "backup" / "training_metadata.json").write_text('{"epoch": 1, "batch": 0}')


def _killed_before_the_backup(cfg, ds, out):
    """Epoch 2's history row and best model are written, its checkpoint is not: epoch 2 runs
    again from epoch 1's checkpoint."""
    import shutil

    _stop_after_epoch_1(cfg, ds, out)
    shutil.copytree(out / "backup", out.parent / "backup_1")
    with pytest.raises(TimeUp):
        pretrain(cfg, ds, out, deadline=time.time())
    shutil.rmtree(out / "backup")
    shutil.copytree(out.parent / "backup_1", out / "backup")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A 3-epoch pretraining run without a stop: its history and weights."""
    cfg = tiny_config(**{"pretrain.epochs": "3"})
    ds = load_dataset("synth_salient", n=18, size=32, cache=False, progress=False)
    out = tmp_path_factory.mktemp("whole") / "pretrained"
    path = pretrain(cfg, ds, out)
    return cfg, ds, read_csv(out / "history.csv"), _weights(path)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [_stop_after_epoch_1] + [   # the others: 2-3 pretrainings each
    pytest.param(s, marks=pytest.mark.e2e) for s in (_stop_after_epoch_2,
                                                    _killed_between_weights_and_metadata,
                                                    _killed_before_the_backup)])
def test_a_resumed_pretraining_equals_an_uninterrupted_one_to_the_bit(tmp_path, stop,
                                                                     uninterrupted):
    """Resumed from its checkpoint, pretraining once drew another data order and other dropout
    masks than an uninterrupted one (every later Dice of the study moved by up to 0.008)."""
    import numpy as np

    cfg, ds, rows, weights = uninterrupted
    out = tmp_path / "pretrained"
    stop(cfg, ds, out)
    path = pretrain(cfg, ds, out)
    resumed = read_csv(out / "history.csv")
    assert ([(r["loss"], r["val_loss"]) for r in resumed]
            == [(r["loss"], r["val_loss"]) for r in rows])         # the same digits
    for a, b in zip(_weights(path), weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_checkpoint_of_an_older_version_is_set_aside(tmp_path, caplog, stopped):
    """A checkpoint without the random state cannot resume exactly: it is not resumed."""
    import shutil

    import h5py

    from keras_unet_ft.pretrain import EPOCH_ATTR, unreadable_checkpoint

    cfg, ds, first = stopped
    out = tmp_path / "pretrained"
    shutil.copytree(first, out)
    weights = out / "backup" / "latest.weights.h5"
    assert unreadable_checkpoint(out / "backup", out / "history.partial.csv",
                                 out / "model.tmp.keras") is None
    with h5py.File(weights, "a") as f:
        del f.attrs[EPOCH_ATTR]
    assert unreadable_checkpoint(out / "backup", out / "history.partial.csv",
                                 out / "model.tmp.keras") == weights
