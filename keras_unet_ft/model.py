"""The networks of the study: the paper's U-Net (and Cheng & Lam's X-Unet variant).

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

from .exitcodes import UserError
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
    """Build a model by name: ``unet``, ``xunet`` or ``vunet``."""
    if kind not in MODEL_BUILDERS:
        raise UserError(f"unknown model {kind!r}; expected one of {sorted(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[kind](**kwargs)


def build_from_config(mcfg) -> keras.Model:
    """The network a :class:`~keras_unet_ft.config.ModelConfig` describes."""
    kw = dict(input_shape=(mcfg.size, mcfg.size, 1))
    if mcfg.kind == "unet":
        kw.update(base_filters=mcfg.base_filters, depth=mcfg.depth, dropout=mcfg.dropout)
    elif mcfg.kind == "xunet":
        kw.update(base_filters=mcfg.base_filters, depth=mcfg.depth)
    else:
        kw.update(encoder_weights=mcfg.encoder_weights)
    return build_model(mcfg.kind, **kw)


def model_config(cfg, kind: str, structure_only: bool = False):
    """``cfg.model`` for the model ``kind`` (V-Unet without encoder weights when
    ``structure_only``: for block maps and parameter counts)."""
    mc = cfg.model.model_copy(update={"kind": kind})
    if structure_only and kind == "vunet":
        mc = mc.model_copy(update={"encoder_weights": None})
    return mc
