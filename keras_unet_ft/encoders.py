"""A U-Net decoder on a ``keras.applications`` backbone (``model.kind=encoder:NAME``).

The backbone is built *flat*: the application is called with ``input_tensor=``, so its
layers are layers of the returned model (as V-Unet's VGG16, :mod:`keras_unet_ft.vunet`)
and a fine-tuning plan can freeze or train each of them. ConvNeXt's stem and
down-sampling layers are ``Sequential`` models inside Keras' application; they stay one
layer each (a plan trains or freezes each as a whole).

What differs between backbones is one row of :data:`ENCODERS` (layers as data): the
``keras.applications`` constructor, the input convention, the name of Keras' no-top
ImageNet weights file and the size multiple (the backbone's total stride). The grey
input in [0, 1] ``(H, W, 1)`` is tiled to 3 channels and brought to the backbone's
convention inside the model:

* ``caffe`` (resnet50, vgg16): ``x * 255`` minus the ImageNet BGR channel means;
* ``tf`` (mobilenetv2): ``x * 2 - 1``;
* ``torch`` (densenet121): ``(x - mean) / std`` with ImageNet's RGB mean and std;
* ``raw255`` (efficientnetb0, convnext_tiny): ``x * 255``; these backbones normalise
  inside (EfficientNet's ``Rescaling`` + ``Normalization``, ConvNeXt's
  ``include_preprocessing`` stem).

The skips are found from the graph, never from layer names: for each resolution
level below the input, the last backbone layer whose 4D output has exactly
``(H / 2**k, W / 2**k)`` and that has an ancestor with trainable weights (so the
preprocessing layers at full resolution are no skip, and a ``ZeroPadding2D`` output
never is one). The bottleneck is the backbone's output (a final pooling layer without
weights, VGG16's ``block5_pool``, is left out: the bottleneck is ``block5_conv3``).

The decoder, per level from the deepest to full resolution: ``UpSampling2D`` by the
ratio to the next shallower skip's resolution (ConvNeXt's stem is /4: one up-sampling
by 4 there, so no level is empty), ``Concatenate`` with the skip (none at full
resolution when the backbone has no weighted layer there), then two 3x3 ``Conv2D``
(no bias) + ``BatchNormalization`` + ``ReLU``, as segmentation_models' U-Net decoder;
``base_filters * 2**(level - 1)`` filters at level ``level`` (1 = full resolution).
A 1x1 sigmoid ``Conv2D`` named ``head_out`` (float32) ends the net. Decoder layer
names: ``dec{level}_up``, ``dec{level}_concat``, ``dec{level}_conv1``,
``dec{level}_bn1``, ``dec{level}_relu1``, ``dec{level}_conv2``, ...

ImageNet weights are never downloaded. ``encoder_weights`` is ``"imagenet"`` (the
no-top file of :data:`ENCODERS` in Keras' cache, ``$KERAS_HOME/models`` or
``~/.keras/models``, which must already be there), a path to a weights file of the
backbone, or ``None`` (random: not transfer learning). The file is loaded into the
backbone alone, as Keras does (by topology for Keras' ``.h5`` files, by structure for
``.weights.h5``), then copied into the U-Net layer by layer; a file that does not fit is
one sentence. EfficientNet: Keras' ImageNet model scales its ``Normalization`` output
by ``1/sqrt(std)`` with one more ``Rescaling`` layer; that factor is folded into the
``Normalization`` variance when a weights file is loaded.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import warnings
from typing import Dict, List, Optional, Tuple

from .exitcodes import UserError

IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
IMAGENET_RGB_MEAN = (0.485, 0.456, 0.406)
IMAGENET_RGB_STD = (0.229, 0.224, 0.225)
KERNEL_INIT = "he_normal"


@dataclasses.dataclass(frozen=True)
class Encoder:
    """One backbone of :data:`ENCODERS`.

    Attributes:
        constructor: the ``keras.applications`` function (``"ResNet50"``).
        preprocess: the input convention: ``caffe``, ``tf``, ``torch`` or ``raw255``.
        weights_file: Keras' no-top ImageNet weights file name (its cache name).
        multiple: the backbone's total stride; input height and width must divide by it.
    """

    constructor: str
    preprocess: str
    weights_file: str
    multiple: int


#: every backbone of ``model.kind=encoder:NAME``: adding one is one row here
ENCODERS: Dict[str, Encoder] = {
    "resnet50": Encoder("ResNet50", "caffe",
                        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", 32),
    "efficientnetb0": Encoder("EfficientNetB0", "raw255", "efficientnetb0_notop.h5", 32),
    "mobilenetv2": Encoder("MobileNetV2", "tf",
                           "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
                           32),
    "vgg16": Encoder("VGG16", "caffe", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", 16),
    "densenet121": Encoder("DenseNet121", "torch",
                           "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5", 32),
    "convnext_tiny": Encoder("ConvNeXtTiny", "raw255", "convnext_tiny_notop.h5", 32),
}


def encoder_spec(name: str) -> Encoder:
    """The row of :data:`ENCODERS` of ``name``; an unknown name is one sentence.

    Examples:
        >>> encoder_spec("vgg16").multiple
        16
    """
    if name not in ENCODERS:
        raise UserError(f"unknown encoder {name!r}; expected one of {', '.join(ENCODERS)}")
    return ENCODERS[name]


def keras_cache_dir() -> pathlib.Path:
    """Keras' cache folder of weights files: ``$KERAS_HOME/models`` or ``~/.keras/models``."""
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return pathlib.Path(base) / "models"


def resolve_weights(name: str, encoder_weights) -> Optional[str]:
    """The weights file of backbone ``name`` for ``encoder_weights`` (``"imagenet"``, a
    path or None), or None for random weights; nothing is downloaded.

    Examples:
        >>> resolve_weights("resnet50", None) is None
        True
    """
    spec = encoder_spec(name)
    if encoder_weights is None:
        return None
    if encoder_weights == "imagenet":
        path = keras_cache_dir() / spec.weights_file
        if not path.is_file():
            raise FileNotFoundError(
                f"{spec.constructor} ImageNet weights are not available offline: put "
                f"{spec.weights_file} in {path.parent} (Keras' cache), or set "
                "model.encoder_weights to a weights file, or to none for a random encoder")
        return str(path)
    path = pathlib.Path(str(encoder_weights)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"model.encoder_weights: file {path} does not exist; expected {spec.constructor}'s "
            f"no-top weights ({spec.weights_file}) or a file saved from "
            f"keras.applications.{spec.constructor}(include_top=False)")
    return str(path)


def _preprocess(style: str, x):
    from keras import layers

    if style == "caffe":
        return layers.Rescaling(255.0, offset=[-m for m in IMAGENET_BGR_MEAN],
                                name="encoder_preprocess")(x)
    if style == "tf":
        return layers.Rescaling(2.0, offset=-1.0, name="encoder_preprocess")(x)
    if style == "torch":
        return layers.Rescaling([1.0 / s for s in IMAGENET_RGB_STD],
                                offset=[-m / s for m, s in zip(IMAGENET_RGB_MEAN,
                                                               IMAGENET_RGB_STD)],
                                name="encoder_preprocess")(x)
    if style == "raw255":
        return layers.Rescaling(255.0, name="encoder_preprocess")(x)
    raise ValueError(f"unknown preprocessing {style!r}")   # a bug in ENCODERS


def _parents(layer, names) -> list:
    out = []
    for node in getattr(layer, "_inbound_nodes", []):
        for parent in node.parent_nodes:
            if parent.operation.name in names and parent.operation not in out:
                out.append(parent.operation)
    return out


def _hw(layer) -> Optional[Tuple[int, int]]:
    """``(H, W)`` of the layer's one 4D output, or None."""
    nodes = getattr(layer, "_inbound_nodes", [])
    if not nodes or len(nodes[0].outputs) != 1:
        return None
    shape = tuple(nodes[0].outputs[0].shape)
    if len(shape) != 4 or shape[1] is None or shape[2] is None:
        return None
    return int(shape[1]), int(shape[2])


def find_skips(backbone, height: int, width: int):
    """``(bottleneck layer, {level k: skip layer})`` of a built backbone: the rule of the
    module docstring (level k = resolution ``/ 2**k``, k >= 0)."""
    names = {l.name for l in backbone.layers}
    spatial: Dict[str, bool] = {}   # a 4D output reached from the input through 4D layers
    weighted: Dict[str, bool] = {}  # itself or an ancestor holds trainable weights
    for layer in backbone.layers:
        parents = _parents(layer, names)
        hw = _hw(layer)
        spatial[layer.name] = hw is not None and (not parents
                                                  or any(spatial[p.name] for p in parents))
        weighted[layer.name] = bool(layer.trainable_weights) or any(
            weighted[p.name] for p in parents)
    out = backbone.layers[-1]
    while not out.weights and _parents(out, names):   # a final pooling adds nothing
        parent = _parents(out, names)[0]
        if _hw(parent) == _hw(out):
            break
        out = parent
    deep_hw = _hw(out)
    deepest = int(round(math.log2(height / deep_hw[0])))
    skips = {}
    for layer in backbone.layers:
        if layer is out or not spatial[layer.name] or not weighted[layer.name]:
            continue
        hw = _hw(layer)
        for k in range(deepest):
            if hw == (height // 2 ** k, width // 2 ** k):
                skips[k] = layer   # the last one wins
    return out, deepest, skips


def check_size(name: str, input_shape) -> Tuple[int, int]:
    """``(H, W)`` of ``input_shape`` for backbone ``name``: grey, divisible by its stride.

    Examples:
        >>> check_size("vgg16", (48, 48, 1))
        (48, 48)
    """
    spec = encoder_spec(name)
    if len(tuple(input_shape)) != 3:
        raise UserError(f"input_shape must be (height, width, 1), got {input_shape!r}")
    h, w, c = tuple(input_shape)
    if c != 1:
        raise UserError(f"encoder:{name} takes grey input (H, W, 1), got {input_shape!r}")
    m = spec.multiple
    if not h or not w or h % m or w % m:
        raise UserError(
            f"input size {h}x{w} must be divisible by {m} (the total stride of "
            f"{spec.constructor}); try {max(m, round((h or m) / m) * m)}x"
            f"{max(m, round((w or m) / m) * m)}")
    return int(h), int(w)


def _load_backbone_weights(name: str, backbone, path: str) -> None:
    import numpy as np
    import keras

    spec = ENCODERS[name]
    shape = tuple(int(d) for d in backbone.inputs[0].shape[1:3]) + (3,)
    try:   # Keras' own way (either format), into the backbone alone; then copied by name
        alone = getattr(keras.applications, spec.constructor)(
            include_top=False, weights=None, input_shape=shape)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)   # "Skipping ...": it does not fit
            alone.load_weights(path)
        for layer in alone.layers:
            if layer.weights:
                backbone.get_layer(layer.name).set_weights(layer.get_weights())
    except Exception as e:  # noqa: BLE001 - any failure: the file does not fit
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"encoder weights file {path} does not fit keras.applications."
            f"{spec.constructor}(include_top=False) ({first}); expected its no-top weights "
            f"({spec.weights_file})") from None
    if name == "efficientnetb0":   # Keras' ImageNet model: one more Rescaling(1/sqrt(std))
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.Normalization):
                var = np.asarray(layer.adapt_variance)
                layer.adapt_variance.assign(var * np.asarray(IMAGENET_RGB_STD).reshape(var.shape))
                layer.finalize_state()   # its mean and variance are constants made from these
                break


def build_encoder_unet(name: str, input_shape=(256, 256, 1), base_filters: int = 16,
                       encoder_weights="imagenet", model_name: Optional[str] = None):
    """A U-Net with the ``keras.applications`` backbone ``name`` as its encoder.

    Args:
        name: a key of :data:`ENCODERS` (``resnet50``, ``efficientnetb0``, ``mobilenetv2``,
            ``vgg16``, ``densenet121``, ``convnext_tiny``).
        input_shape: ``(H, W, 1)``, grey in [0, 1]; H and W divisible by the backbone's
            total stride (32; vgg16: 16).
        base_filters: the decoder's filters at full resolution; level ``l`` has
            ``base_filters * 2**(l - 1)``.
        encoder_weights: ``"imagenet"`` (Keras' cache, no download), a path to a weights
            file of the backbone, or None (random).
        model_name: the model's name (default ``unet_NAME``).

    Returns:
        An uncompiled functional ``keras.Model``, input ``(H, W, 1)``, a float32 sigmoid
        output ``(H, W, 1)``.

    Examples:
        >>> m = build_encoder_unet("mobilenetv2", (32, 32, 1), 4, encoder_weights=None)
        >>> m.output.shape, m.get_layer("head_out").dtype_policy.compute_dtype
        ((None, 32, 32, 1), 'float32')
    """
    import keras
    from keras import layers

    spec = encoder_spec(name)
    h, w = check_size(name, input_shape)
    if isinstance(base_filters, bool) or int(base_filters) != base_filters or base_filters < 1:
        raise UserError(f"base_filters must be a positive integer, got {base_filters!r}")
    weights = resolve_weights(name, encoder_weights)
    inputs = keras.Input(shape=(h, w, 1), name="input")
    rgb = layers.Concatenate(axis=-1, name="gray_to_rgb")([inputs, inputs, inputs])
    x = _preprocess(spec.preprocess, rgb)
    backbone = getattr(keras.applications, spec.constructor)(
        include_top=False, weights=None, input_tensor=x)
    if weights is not None:
        _load_backbone_weights(name, backbone, weights)
    bottom, deepest, skips = find_skips(backbone, h, w)
    targets = sorted(set(skips) | {0}, reverse=True)        # raw levels, deep to shallow
    level_of = {k: i + 1 for i, k in enumerate(sorted(targets))}
    x = bottom.output
    prev = deepest
    for k in targets:
        level = level_of[k]
        f = int(base_filters) * 2 ** (level - 1)
        x = layers.UpSampling2D(2 ** (prev - k), name=f"dec{level}_up")(x)
        if k in skips:
            x = layers.Concatenate(axis=-1, name=f"dec{level}_concat")([skips[k].output, x])
        for i in (1, 2):
            x = layers.Conv2D(f, 3, padding="same", use_bias=False,
                              kernel_initializer=KERNEL_INIT, name=f"dec{level}_conv{i}")(x)
            x = layers.BatchNormalization(name=f"dec{level}_bn{i}")(x)
            x = layers.ReLU(name=f"dec{level}_relu{i}")(x)
        prev = k
    outputs = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="head_out")(x)
    return keras.Model(inputs, outputs, name=model_name or f"unet_{name}")


def skip_layers(model) -> List[str]:
    """The layers of a built encoder U-Net that feed a decoder ``Concatenate`` (deep to
    shallow), for reading a block map."""
    out = []
    for layer in model.layers:
        if layer.name.startswith("dec") and layer.name.endswith("_concat"):
            for node in layer._inbound_nodes[:1]:
                out.append(node.parent_nodes[0].operation.name)
    return out
