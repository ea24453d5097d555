"""Atomic writes, JSON/CSV round trips, locks."""

import os

import numpy as np
import pytest

from keras_unet_ft.exitcodes import UserError
from keras_unet_ft.io import (FileLock, atomic_savez, atomic_write, hold_shared, read_csv,
                              read_json, release, write_csv, write_json)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "x.json"
    write_json(path, {"a": 1})

    def half(tmp):
        open(tmp, "w").write('{"a": ')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half)
    assert read_json(path) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


@pytest.mark.parametrize("text, message", [
    ('{"a": ', "is not valid JSON"),
    ("", "is not valid JSON"),
])
def test_a_damaged_json_file_is_a_bad_input_naming_it(tmp_path, text, message):
    path = tmp_path / "damaged.json"
    path.write_text(text)
    with pytest.raises(UserError, match=f"damaged.json {message}.*delete it"):
        read_json(path)


def test_json_takes_numpy_values_and_csv_round_trips(tmp_path):
    write_json(tmp_path / "a.json", {"n": np.int64(3), "x": np.float32(0.5),
                                     "v": np.arange(2)})
    assert read_json(tmp_path / "a.json") == {"n": 3, "x": 0.5, "v": [0, 1]}
    rows = [{"plan": "all", "dice": 0.5}, {"plan": "none", "dice": ""}]
    write_csv(tmp_path / "t.csv", rows, ["plan", "dice"])
    assert read_csv(tmp_path / "t.csv") == [{"plan": "all", "dice": "0.5"},
                                            {"plan": "none", "dice": ""}]
    atomic_savez(tmp_path / "z.npz", a=np.ones(3))
    with np.load(tmp_path / "z.npz") as z:
        assert z["a"].tolist() == [1.0, 1.0, 1.0]


def test_shared_locks_admit_one_content_at_a_time(tmp_path):
    lock = tmp_path / ".study.lock"
    assert hold_shared(lock, "config A") is None
    assert hold_shared(lock, "config A") is None      # the same process, same content
    pid = os.fork()
    if pid == 0:   # another process: the same content shares it, another is refused
        same = hold_shared(lock, "config A")
        other = hold_shared(lock, "config B")
        os._exit(0 if same is None and other == "config A" else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    release(lock)
    assert hold_shared(lock, "config B") is None      # no live holder: taken anew
    release(lock)


def test_file_lock_is_exclusive_and_released_on_exit(tmp_path):
    lock = tmp_path / "sub" / ".pretrain.lock"
    with FileLock(lock):
        pid = os.fork()
        if pid == 0:
            import fcntl

            with open(lock, "a+") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    os._exit(1)   # got it: not exclusive
                except OSError:
                    os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    with FileLock(lock):   # released: taken again at once
        pass
