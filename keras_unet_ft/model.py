"""The networks of the study: the paper's U-Net (and Cheng & Lam's X-Unet variant).

:func:`build_from_config` builds any ``model.kind``: these, V-Unet
(:mod:`keras_unet_ft.vunet`), a U-Net on a ``keras.applications`` encoder
(``encoder:NAME``, :mod:`keras_unet_ft.encoders`) and your own network (``file:PATH``,
:mod:`keras_unet_ft.usermodel`); :func:`describe_model` names it in one line and
:func:`model_identity` says what makes it (for resume fingerprints).

The layout follows zhixuhao/unet, the Keras U-Net that Amiri et al. describe
(docs/paper.md A): blocks of two 3x3 conv + ReLU, ``base_filters`` in the first block,
doubling after every max-pool and halving after every up-sampling, dropout
after the contracting path, an expanding path of ``UpSampling2D(2)`` + 2x2 conv,
concatenation with the skip and two 3x3 convs, an extra 3x3 conv with 2 filters
and a 1x1 sigmoid head. No batch norm. At the defaults the model has exactly
31,031,685 parameters.

Layer names say block and role, so a fine-tuning plan can be read:
``enc1_conv1``, ``enc1_conv2``, ``enc1_pool``, ..., ``enc4_drop``,
``bottleneck_conv1``, ``bottleneck_conv2``, ``bottleneck_drop``,
``dec4_up``, ``dec4_upconv``, ``dec4_concat``, ``dec4_conv1``, ``dec4_conv2``,
..., ``dec1_conv2``, ``head_conv``, ``head_out`` (decoder blocks are numbered
by the resolution level they restore, as the encoder blocks they mirror).
"""

from __future__ import annotations


import keras
from keras import layers

from .config import model_family
from .encoders import ENCODERS, build_encoder_unet, resolve_weights
from .exitcodes import UserError
from .usermodel import file_digest, load_user_model
from .vunet import build_vunet

DEFAULT_INPUT_SHAPE = (256, 256, 1)
DEFAULT_BASE_FILTERS = 64
DEFAULT_DEPTH = 4
DEFAULT_DROPOUT = 0.5
UP_MODES = ("upsample", "transpose")
KERNEL_INIT = "he_normal"


def _check_args(input_shape, base_filters, depth, dropout, up_mode):
    if len(tuple(input_shape)) != 3:
        raise UserError(
            f"input_shape must be (height, width, channels), got {input_shape!r}"
        )
    h, w, c = input_shape
    for name, v in (("height", h), ("width", w), ("channels", c)):
        if v is None or int(v) != v or v <= 0:
            raise UserError(f"input_shape {name} must be a positive integer, got {v!r}")
    if int(depth) != depth or depth < 1:
        raise UserError(f"depth must be a positive integer, got {depth!r}")
    factor = 2**depth
    if h % factor or w % factor:
        raise UserError(
            f"input size {h}x{w} must be divisible by 2**depth = {factor} "
            f"(depth={depth}); try {max(factor, h // factor * factor)}x"
            f"{max(factor, w // factor * factor)}"
        )
    if int(base_filters) != base_filters or base_filters < 1:
        raise UserError(f"base_filters must be a positive integer, got {base_filters!r}")
    if not (0.0 <= float(dropout) < 1.0):
        raise UserError(f"dropout must be in [0, 1), got {dropout!r}")
    if up_mode not in UP_MODES:
        raise UserError(f"up_mode must be one of {UP_MODES}, got {up_mode!r}")


def _conv(filters, kernel, name):
    return layers.Conv2D(
        filters, kernel, activation="relu", padding="same",
        kernel_initializer=KERNEL_INIT, name=name,
    )


def build_unet(
    input_shape=DEFAULT_INPUT_SHAPE,
    base_filters: int = DEFAULT_BASE_FILTERS,
    depth: int = DEFAULT_DEPTH,
    dropout: float = DEFAULT_DROPOUT,
    up_mode: str = "upsample",
    extra_head_conv: bool = True,
    name: str = "unet",
) -> keras.Model:
    """Build the paper's U-Net as a functional ``keras.Model``.

    Args:
        input_shape: ``(height, width, channels)``; height and width must be
            divisible by ``2**depth``.
        base_filters: filters of the first block (the paper: 64).
        depth: number of max-pools (the paper: 4, giving 2*depth+1 = 9 blocks).
        dropout: rate of the dropout after the last encoder block and after the
            bottleneck (zhixuhao: 0.5); 0 removes the dropout layers.
        up_mode: ``"upsample"`` (the paper: UpSampling2D(2) followed by a 2x2
            conv) or ``"transpose"`` (Cheng & Lam's X-Unet: Conv2DTranspose 2x2,
            stride 2).
        extra_head_conv: zhixuhao's 3x3 conv with 2 filters before the 1x1
            sigmoid head (True for the paper; False for X-Unet).
        name: model name.

    Returns:
        An uncompiled ``keras.Model`` with a float32 sigmoid output of shape
        ``(height, width, 1)`` (float32 even under a mixed-precision policy).

    Examples:
        >>> model = build_unet()                   # the paper's network
        >>> model.count_params()
        31031685
        >>> xunet = build_unet(up_mode="transpose", dropout=0, extra_head_conv=False)
    """
    _check_args(input_shape, base_filters, depth, dropout, up_mode)
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = inputs
    skips = []
    for level in range(1, depth + 1):
        f = base_filters * 2 ** (level - 1)
        x = _conv(f, 3, f"enc{level}_conv1")(x)
        x = _conv(f, 3, f"enc{level}_conv2")(x)
        if level == depth and dropout > 0:
            x = layers.Dropout(dropout, name=f"enc{level}_drop")(x)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)

    f = base_filters * 2**depth
    x = _conv(f, 3, "bottleneck_conv1")(x)
    x = _conv(f, 3, "bottleneck_conv2")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name="bottleneck_drop")(x)

    for level in range(depth, 0, -1):
        f = base_filters * 2 ** (level - 1)
        if up_mode == "upsample":
            x = layers.UpSampling2D(2, name=f"dec{level}_up")(x)
            x = _conv(f, 2, f"dec{level}_upconv")(x)
        else:
            x = layers.Conv2DTranspose(
                f, 2, strides=2, padding="same", kernel_initializer=KERNEL_INIT,
                name=f"dec{level}_up",
            )(x)
        x = layers.Concatenate(axis=-1, name=f"dec{level}_concat")([skips[level - 1], x])
        x = _conv(f, 3, f"dec{level}_conv1")(x)
        x = _conv(f, 3, f"dec{level}_conv2")(x)

    if extra_head_conv:
        x = _conv(2, 3, "head_conv")(x)
    outputs = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="head_out")(x)
    return keras.Model(inputs, outputs, name=name)


def build_xunet(input_shape=DEFAULT_INPUT_SHAPE, base_filters: int = DEFAULT_BASE_FILTERS,
                depth: int = DEFAULT_DEPTH) -> keras.Model:
    """Cheng & Lam's X-Unet: transpose-conv up-path, no dropout, plain 1x1 head.

    Examples:
        >>> build_xunet(input_shape=(64, 64, 1), base_filters=8).name
        'xunet'
    """
    return build_unet(input_shape, base_filters, depth, dropout=0.0, up_mode="transpose",
                      extra_head_conv=False, name="xunet")


MODEL_BUILDERS = {"unet": build_unet, "xunet": build_xunet, "vunet": build_vunet}


def build_model(kind: str = "unet", **kwargs) -> keras.Model:
    """Build a model by name: ``unet``, ``xunet`` or ``vunet`` (``encoder:NAME`` and
    ``file:PATH``: :func:`build_from_config`)."""
    if kind not in MODEL_BUILDERS:
        raise UserError(f"unknown model {kind!r}; expected one of {sorted(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[kind](**kwargs)


def build_from_config(mcfg, random: bool = False) -> keras.Model:
    """The network a :class:`~keras_unet_ft.config.ModelConfig` describes.

    With ``random``, every weight comes from the layers' (seeded) initialisers: no encoder
    weights, not the file's weights (the ``scratch`` baseline, a ``reinit`` plan's fresh
    layers).

    ``unet``, ``xunet``, ``vunet``: built here; ``encoder:NAME``: a U-Net decoder on that
    ``keras.applications`` backbone (:func:`~keras_unet_ft.encoders.build_encoder_unet`,
    ``base_filters`` at the decoder's full-resolution level, ``encoder_weights``);
    ``file:PATH``: your network rebuilt at ``(size, size, 1)`` *with the file's weights*
    (:func:`~keras_unet_ft.usermodel.load_user_model`: it is the pretrained net).

    Examples:
        >>> from keras_unet_ft.config import ModelConfig
        >>> build_from_config(ModelConfig(kind="xunet", size=32, base_filters=4, depth=2)).name
        'xunet'
    """
    family = model_family(mcfg.kind)
    shape = (mcfg.size, mcfg.size, 1)
    if family == "encoder":
        return build_encoder_unet(mcfg.kind.partition(":")[2], shape, mcfg.base_filters,
                                  None if random else mcfg.encoder_weights)
    if family == "file":
        return load_user_model(mcfg.kind.partition(":")[2], mcfg.size, weights=not random)
    kw = dict(input_shape=shape)
    if mcfg.kind == "unet":
        kw.update(base_filters=mcfg.base_filters, depth=mcfg.depth, dropout=mcfg.dropout)
    elif mcfg.kind == "xunet":
        kw.update(base_filters=mcfg.base_filters, depth=mcfg.depth)
    else:
        kw.update(encoder_weights=None if random else mcfg.encoder_weights)
    return build_model(mcfg.kind, **kw)


def loads_weights(mcfg) -> bool:
    """Whether :func:`build_from_config` puts weights of a file in the network (a ``file:``
    network's, an encoder's): its initial weights are then not the initialisers' alone."""
    family = model_family(mcfg.kind)
    return family == "file" or ((family == "encoder" or mcfg.kind == "vunet")
                                and mcfg.encoder_weights is not None)


def _weights_words(encoder_weights) -> str:
    return "none (random)" if encoder_weights is None else str(encoder_weights)


def describe_model(mcfg) -> str:
    """One line a report prints for the network of ``mcfg`` (reads a ``file:`` network's
    bytes for its SHA-256; builds nothing).

    Examples:
        >>> from keras_unet_ft.config import ModelConfig
        >>> describe_model(ModelConfig(kind="encoder:resnet50", encoder_weights=None))
        'U-Net on a ResNet50 encoder (encoder weights: none (random))'
        >>> describe_model(ModelConfig(kind="unet"))
        "the paper's U-Net"
    """
    family = model_family(mcfg.kind)
    rest = mcfg.kind.partition(":")[2]
    if family == "encoder":
        return (f"U-Net on a {ENCODERS[rest].constructor} encoder (encoder weights: "
                f"{_weights_words(mcfg.encoder_weights)})")
    if family == "file":
        import os

        return f"{os.path.basename(rest)} (your network, sha256 {file_digest(rest)[:8]}…)"
    return {"unet": "the paper's U-Net", "xunet": "X-Unet",
            "vunet": "V-Unet (VGG16 encoder)"}[mcfg.kind]


def model_identity(mcfg) -> dict:
    """What makes the network of ``mcfg``, for resume fingerprints: ``file:`` -> its path
    and SHA-256; ``encoder:`` -> the backbone and the SHA-256 of its weights file (None:
    random); ``vunet`` -> the SHA-256 of the VGG16 weights file (None: random); the
    paper's U-Net and X-Unet -> their kind (their shape is in ``cfg.model`` already).

    Examples:
        >>> from keras_unet_ft.config import ModelConfig
        >>> model_identity(ModelConfig(kind="encoder:vgg16", encoder_weights=None))
        {'kind': 'encoder:vgg16', 'encoder': 'vgg16', 'weights_sha256': None}
    """
    family = model_family(mcfg.kind)
    rest = mcfg.kind.partition(":")[2]
    if family == "file":
        return {"kind": "file", "path": rest, "sha256": file_digest(rest)}
    if family == "encoder":
        path = resolve_weights(rest, mcfg.encoder_weights)
        return {"kind": mcfg.kind, "encoder": rest,
                "weights_sha256": file_digest(path) if path else None}
    if mcfg.kind == "vunet":
        from .vunet import resolve_encoder_weights

        path = resolve_encoder_weights(mcfg.encoder_weights)
        return {"kind": "vunet", "weights_sha256": file_digest(path) if path else None}
    return {"kind": mcfg.kind}


def model_config(cfg, kind: str, structure_only: bool = False):
    """``cfg.model`` for the model ``kind`` (V-Unet and ``encoder:NAME`` without encoder
    weights when ``structure_only``: for block maps and parameter counts)."""
    mc = cfg.model.model_copy(update={"kind": kind})
    if structure_only and (kind == "vunet" or model_family(kind) == "encoder"):
        mc = mc.model_copy(update={"encoder_weights": None})
    return mc
