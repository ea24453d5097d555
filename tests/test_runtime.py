"""Runtime: precision, threads."""

import pytest

from keras_unet_ft.runtime import resolve_precision


def test_cpu_threads_left_alone_for_small_nets_and_after_start():
    import tensorflow as tf

    from keras_unet_ft.runtime import configure_cpu_threads

    before = tf.config.threading.get_inter_op_parallelism_threads()
    assert configure_cpu_threads(8) is None  # small nets keep TensorFlow's default
    tf.constant(1.0) + 1  # TensorFlow running: changing it now must not raise
    assert configure_cpu_threads(64) in (None, 1)
    assert tf.config.threading.get_inter_op_parallelism_threads() in (before, 1)



def test_precision_choices():
    assert resolve_precision("fp32") == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp8")


@pytest.mark.parametrize("tf_config, message", [
    (None, "--distribute multiworker needs TF_CONFIG"),
    ("not json", "TF_CONFIG is not a cluster + task JSON object: 'not json'"),
    ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}',
     "TF_CONFIG names no workers"),
    ('{"cluster": {"worker": ["a:1"]}}', "TF_CONFIG is not a cluster + task JSON object"),
])
def test_multiworker_needs_a_tf_config_and_says_what_is_wrong(monkeypatch, tf_config, message):
    from keras_unet_ft.runtime import get_strategy, worker_task

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=message.replace("+", r"\+").replace("[", r"\[")):
        worker_task()
    with pytest.raises(ValueError, match="TF_CONFIG"):
        get_strategy("multiworker")   # checked before TensorFlow starts a cluster


def test_worker_task_reads_this_process_place(monkeypatch):
    from keras_unet_ft.runtime import worker_task

    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1", "b:2"]}, '
                                    '"task": {"type": "worker", "index": 1}}')
    assert worker_task() == ("worker", 1, 2)


def test_pretraining_progress_bar_shows_epochs_losses_and_speed(capsys, monkeypatch):
    import keras
    import numpy as np

    from keras_unet_ft.runtime import epoch_progress, progress_wanted

    monkeypatch.delenv("UNET_FT_NO_PROGRESS", raising=False)
    assert progress_wanted()
    monkeypatch.setenv("UNET_FT_NO_PROGRESS", "1")
    assert not progress_wanted()
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    net.compile("adam", "binary_crossentropy")
    x = np.zeros((8, 4), "float32")
    net.fit(x, np.ones((8, 1)), validation_data=(x, np.ones((8, 1))), epochs=2, verbose=0,
            callbacks=[epoch_progress(2, 8)])
    err = capsys.readouterr().err
    assert "pretraining" in err and "2/2" in err
    assert "loss=" in err and "val_loss=" in err and "images/s=" in err


class _Stream:
    """stderr as a log file (no terminal), or as a terminal."""

    def __init__(self, tty):
        import io

        self.buf, self.tty = io.StringIO(), tty

    def isatty(self):
        return self.tty

    def write(self, s):
        return self.buf.write(s)

    def flush(self):
        pass


@pytest.mark.parametrize("total, steps, step, max_lines", [
    # a 50-minute study's log once held ~1,500 bar redraws: a line per run or per 5 %
    (36, 36, 1, 21),
    (10, 10, 1, 10),          # a line per finished run
    (1000, 1000, 1, 21),
    (120, 60, 2, 21),         # updates of 2 (finished runs counted on disk)
    (None, 500, 1, 12),       # no total: at 1, 2, 5, 10, 20, 50 ... items
])
def test_progress_off_a_terminal_writes_few_whole_lines(total, steps, step, max_lines):
    from keras_unet_ft.runtime import progress_bar

    stream = _Stream(tty=False)
    bar = progress_bar(total=total, desc="fine-tuning runs", unit="run", stream=stream)
    for _ in range(steps):
        bar.update(0)   # the parallel study polls every 2 s: no line for no progress
        bar.update(step)
    bar.close()
    text = stream.buf.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and 1 <= len(lines) <= max_lines, text
    assert lines[-1].startswith(f"fine-tuning runs: {steps * step}"), lines[-1]
    assert all(line.startswith("fine-tuning runs: ") for line in lines)


def test_progress_on_a_terminal_is_a_tqdm_bar():
    from tqdm import tqdm

    from keras_unet_ft.runtime import PlainProgress, progress_bar

    assert isinstance(progress_bar(range(3), stream=_Stream(tty=True)), tqdm)
    assert isinstance(progress_bar(range(3), stream=_Stream(tty=False)), PlainProgress)
    assert not isinstance(progress_bar(range(3), disable=True, stream=_Stream(tty=False)),
                          PlainProgress)
