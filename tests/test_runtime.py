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
