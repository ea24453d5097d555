"""Cheng & Lam's V-Unet: a U-Net whose encoder is Keras' VGG16 (docs/paper.md C).

Encoder: ``keras.applications.VGG16(include_top=False)`` up to ``block5_conv3``
(``block5_pool`` is not used); skips from ``block4_conv3``, ``block3_conv3``,
``block2_conv2`` and ``block1_conv2``. Decoder per level: Conv2DTranspose 2x2
(stride 2) + concatenation + two 3x3 ReLU convs; 1x1 sigmoid head. The
grayscale input in [0, 1] is tiled to 3 channels and brought to VGG16's
"caffe" input convention (0-255, ImageNet channel means subtracted) inside the
model.

ImageNet weights cannot be downloaded here. ``encoder_weights`` is:

* a path to VGG16's no-top weights file (``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``);
* ``"imagenet"``: that file from Keras' cache directory (``~/.keras/models``), which
  must already be there - otherwise a clear error says where to put it;
* ``None``: random initialisation (label such runs: they are not transfer learning).
"""

from __future__ import annotations

import os
import pathlib

import keras
from keras import layers

from .exitcodes import UserError

VGG_NOTOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
SKIPS = ("block4_conv3", "block3_conv3", "block2_conv2", "block1_conv2")


def keras_cache_weights() -> pathlib.Path:
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return pathlib.Path(base) / "models" / VGG_NOTOP_FILE


def resolve_encoder_weights(encoder_weights):
    """A weights path, or None; errors say what is expected."""
    if encoder_weights is None:
        return None
    if encoder_weights == "imagenet":
        path = keras_cache_weights()
        if not path.exists():
            raise FileNotFoundError(
                f"VGG16 ImageNet weights are not available offline: put {VGG_NOTOP_FILE} in "
                f"{path.parent} (Keras' cache), or pass encoder_weights=PATH, or "
                "encoder_weights=None for a randomly initialised encoder")
        return str(path)
    path = pathlib.Path(encoder_weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights file {path} does not exist; expected VGG16's "
                                f"no-top weights ({VGG_NOTOP_FILE}) or a file saved from "
                                "keras.applications.VGG16(include_top=False)")
    return str(path)


def build_vunet(input_shape=(256, 256, 1), encoder_weights="imagenet",
                name: str = "vunet") -> keras.Model:
    """Build V-Unet.

    Args:
        input_shape: ``(H, W, 1)``; H and W divisible by 16.
        encoder_weights: ``"imagenet"`` (from Keras' cache, no download), a path
            to a VGG16 no-top weights file, or ``None`` (random).
        name: model name.

    Examples:
        >>> m = build_vunet((64, 64, 1), encoder_weights=None)
        >>> m.get_layer("block5_conv3").name
        'block5_conv3'
    """
    h, w, c = tuple(input_shape)
    if c != 1:
        raise UserError(f"V-Unet takes grayscale input (H, W, 1), got {input_shape!r}")
    if h % 16 or w % 16:
        raise UserError(f"input size {h}x{w} must be divisible by 16 (4 poolings)")
    weights = resolve_encoder_weights(encoder_weights)
    inputs = keras.Input(shape=(h, w, 1), name="input")
    rgb = layers.Concatenate(axis=-1, name="gray_to_rgb")([inputs, inputs, inputs])
    x = layers.Rescaling(255.0, offset=[-m for m in IMAGENET_BGR_MEAN], name="vgg_preprocess")(rgb)
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_tensor=x)
    if weights is not None:
        try:
            vgg.load_weights(weights)
        except Exception as e:  # noqa: BLE001
            raise UserError(f"cannot load VGG16 encoder weights from {weights}: {e}") from None
    x = vgg.get_layer("block5_conv3").output
    for level, skip in zip((4, 3, 2, 1), SKIPS):
        s = vgg.get_layer(skip).output
        f = s.shape[-1]
        x = layers.Conv2DTranspose(f, 2, strides=2, padding="same", name=f"dec{level}_up")(x)
        x = layers.Concatenate(axis=-1, name=f"dec{level}_concat")([s, x])
        x = layers.Conv2D(f, 3, activation="relu", padding="same", kernel_initializer="he_normal",
                          name=f"dec{level}_conv1")(x)
        x = layers.Conv2D(f, 3, activation="relu", padding="same", kernel_initializer="he_normal",
                          name=f"dec{level}_conv2")(x)
    outputs = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="head_out")(x)
    return keras.Model(inputs, outputs, name=name)
