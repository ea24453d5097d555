"""The block map of a built U-Net-like network: what "shallow" and "deep" mean.

Amiri et al. group "all layers between two consecutive max-pooling or
up-sampling layers" into one block (docs/paper.md A). The map is computed from the
model's graph by spatial resolution, never from layer names or indices, so it serves
the paper's U-Net, X-Unet, V-Unet, a U-Net on a ``keras.applications`` encoder and
your own network (``model.kind=file:PATH``) alike:

* a layer's *resolution level* is ``round(log2(H_input / H_out))`` of its 4D output
  ``(batch, H_out, W_out, C)``: 'valid' padding that changes the size by a few pixels,
  and dilated convolutions, are no boundaries; a ``ZeroPadding2D`` or ``Cropping2D``
  keeps its input's level whatever the size (at 32 px, 2 pixels more are a level). Only layers whose
  4D output is reached from the input through 4D layers carry a resolution; the others
  (a squeeze-and-excitation branch ``GlobalAveragePooling2D -> Reshape(1, 1, C) ->
  Conv2D``, flat or non-spatial layers) join the deepest block of their parents.
* the levels present are numbered densely ``1..L`` (1 = full resolution; a stem
  that down-samples by 4, as ConvNeXt's, leaves no empty level).
* a down-sampling layer *without* weights (max- or average-pooling, a ``Resizing``
  down) closes the block it reads from: it keeps its input's level, as the paper's
  max-pool. Any other down-sampling layer (a strided convolution, a strided depthwise
  convolution) opens the deeper block: it has its output's level.
* an up-sampling layer (``UpSampling2D``, a strided ``Conv2DTranspose``, a
  ``Resizing`` up: anything whose output is finer than its input) opens the expanding
  block of its output's level; a layer is in the expanding part when it or one of its
  ancestors up-samples. So a decoder's skip ``Concatenate`` lands in the decoder block,
  a residual ``Add`` in the block of its output.
* the bottleneck is the deepest level's contracting layers. Block index (the path
  scheme): contracting level ``l`` -> ``l``, bottleneck -> ``L``, expanding level
  ``l`` -> ``2L - l``. The expanding levels must mirror the contracting ones
  (``1..L-1``), otherwise the network is refused with a sentence saying why.

``n_pools`` is ``L - 1``, the number of resolution changes on the way down (the
paper's U-Net: its 4 max-pools, 9 blocks).

Two depth schemes (docs/paper.md B):

* ``path`` - the paper's: units are the blocks, 1 = shallowest (first
  contracting block), ``2P+1`` = deepest (last expanding block).
* ``level`` - depth by resolution level: level 1 = first contracting block and
  last expanding block, ..., level ``P+1`` = the bottleneck (deepest). Under
  this scheme "shallow" means the high-resolution levels on both sides of the U.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Tuple

from .exitcodes import UserError

SCHEMES = ("path", "level")
PARTS = ("contracting", "bottleneck", "expanding")


@dataclasses.dataclass(frozen=True)
class Block:
    """One block of a U-Net.

    Attributes:
        index: position in data-flow order, 1 = shallowest (path scheme).
        part: ``"contracting"``, ``"bottleneck"`` or ``"expanding"``.
        level: resolution level (1 = full resolution, P+1 = bottleneck).
        layers: names of the layers in the block, in model order.
        weighted_layers: the subset of ``layers`` that hold weights.
        params: number of parameters of the block (every weight of its layers,
            BatchNorm's moving statistics included, as ``model.count_params()``).
        trainable_params: the trainable ones among ``params``.
    """

    index: int
    part: str
    level: int
    layers: Tuple[str, ...]
    weighted_layers: Tuple[str, ...]
    params: int
    trainable_params: int = 0


def _padding_types():
    import keras  # lazy: the plan grammar (and reading results) needs no Keras

    return (keras.layers.ZeroPadding2D, keras.layers.Cropping2D)


def _parents(layer, names=None) -> list:
    out = []
    for node in getattr(layer, "_inbound_nodes", []):
        for parent in node.parent_nodes:
            op = parent.operation
            if (names is None or op.name in names) and op not in out:
                out.append(op)
    return out


def _out_shape(layer) -> Optional[tuple]:
    """The shape of the layer's (first) output, or None when it has several."""
    nodes = getattr(layer, "_inbound_nodes", [])
    if not nodes:
        return None
    outs = nodes[0].outputs
    if len(outs) != 1:
        return None
    return tuple(outs[0].shape)


def _layer_params(layer) -> int:
    return int(sum(_size(w) for w in layer.weights))


def _size(w) -> int:
    n = 1
    for d in w.shape:
        n *= int(d)
    return n


def _raw_level(h_in: int, shape) -> Optional[int]:
    """``round(log2(H_input / H_out))`` of a 4D output, or None."""
    if shape is None or len(shape) != 4 or not shape[1]:
        return None
    return int(round(math.log2(h_in / int(shape[1]))))


def resolution_levels(model) -> Dict[str, Tuple[Optional[int], Optional[int], bool]]:
    """Per layer: ``(level, output level, up-samples)`` by the rule of the module docstring,
    before dense numbering: ``level`` is the level the layer belongs to (None: no
    resolution of its own), ``output level`` that of its output."""
    names = {l.name for l in model.layers}
    in_shape = tuple(model.inputs[0].shape)
    if len(model.inputs) != 1 or len(in_shape) != 4 or not in_shape[1]:
        raise UserError(f"model {model.name!r} does not look like a U-Net: expected one image "
                        f"input (height, width, channels) of a fixed size, got "
                        f"{[tuple(t.shape) for t in model.inputs]}")
    h_in = int(in_shape[1])
    info: Dict[str, Tuple[Optional[int], Optional[int], bool]] = {}
    for layer in model.layers:  # functional models list layers in topological order
        parents = _parents(layer, names)
        out = _raw_level(h_in, _out_shape(layer))
        if not parents:
            info[layer.name] = (out, out, False)
            continue
        ins = [info[p.name][1] for p in parents if info[p.name][1] is not None]
        if ins and isinstance(layer, _padding_types()):   # a few pixels more or less
            info[layer.name] = info[parents[0].name]
            continue
        if out is None or not ins:   # no 4D output, or not reached through 4D layers
            info[layer.name] = (None, None, False)
            continue
        if out > max(ins) and not layer.weights:   # pooling: closes the block it reads from
            level = max(info[p.name][0] for p in parents if info[p.name][1] is not None)
        else:
            level = out
        info[layer.name] = (level, out, out < min(ins))
    return info


class BlockMap:
    """Blocks of a built U-Net-like model, computed from its graph by resolution.

    Args:
        model: a functional ``keras.Model`` with one image input that goes down in
            resolution and back up (the rule: the module docstring).

    Examples:
        >>> from keras_unet_ft.model import build_unet
        >>> bm = BlockMap(build_unet())
        >>> len(bm.blocks), bm.blocks[4].part
        (9, 'bottleneck')
        >>> bm.units("level")
        5
    """

    def __init__(self, model):
        self.model = model
        names = {l.name for l in model.layers}
        info = resolution_levels(model)
        present = sorted({lv for lv, _, _ in info.values() if lv is not None})
        dense = {lv: i + 1 for i, lv in enumerate(present)}
        if len(present) < 2:
            raise UserError(
                f"model {model.name!r} does not look like a U-Net: 0 pooling layers (no layer "
                "changes the spatial resolution; expected a contracting path that halves it "
                "and an expanding path that restores it)")
        n_levels = len(present)
        expanding: Dict[str, bool] = {}
        block_of: Dict[str, int] = {}
        for layer in model.layers:
            parents = _parents(layer, names)
            level, _, up = info[layer.name]
            expanding[layer.name] = up or any(expanding[p.name] for p in parents)
            if level is None:
                block_of[layer.name] = max((block_of[p.name] for p in parents), default=1)
                continue
            lv = dense[level]
            if expanding[layer.name]:
                if lv >= n_levels:
                    raise UserError(
                        f"model {model.name!r} does not look like a U-Net: layer "
                        f"{layer.name!r} up-samples to the deepest resolution level {lv}; "
                        "expected the expanding path to restore the finer levels only")
                block_of[layer.name] = 2 * n_levels - lv
            else:
                block_of[layer.name] = lv
        contracting = {block_of[n] for n in block_of if not expanding[n]
                       and block_of[n] < n_levels}
        restored = {2 * n_levels - block_of[n] for n in block_of
                    if expanding[n] and info[n][0] is not None}
        if not restored:
            raise UserError(
                f"model {model.name!r} does not look like a U-Net: it goes down to 1/"
                f"{2 ** present[-1]} of the input resolution and never up-samples back "
                "(expected an expanding path: UpSampling2D, Conv2DTranspose or Resizing)")
        want = set(range(1, n_levels))
        if restored != want or contracting != want:
            raise UserError(
                f"model {model.name!r} does not look like a U-Net: its expanding path "
                f"restores levels {sorted(restored)} but its contracting path has levels "
                f"{sorted(want)} (level 1 = full resolution); expected them to mirror")
        self.n_pools = n_levels - 1
        n_blocks = 2 * n_levels - 1
        blocks = []
        for i in range(1, n_blocks + 1):
            layer_names = [l.name for l in model.layers if block_of[l.name] == i]
            weighted = [n for n in layer_names if model.get_layer(n).weights]
            part = ("contracting" if i < n_levels else
                    "bottleneck" if i == n_levels else "expanding")
            blocks.append(Block(
                index=i, part=part, level=min(i, n_blocks + 1 - i), layers=tuple(layer_names),
                weighted_layers=tuple(weighted),
                params=sum(_layer_params(model.get_layer(n)) for n in weighted),
                trainable_params=sum(_size(w) for n in weighted
                                     for w in model.get_layer(n).trainable_weights),
            ))
        self.blocks: List[Block] = blocks
        self.block_of = block_of
        self.total_params = int(model.count_params())

    # -- queries -------------------------------------------------------------
    def units(self, scheme: str = "path") -> int:
        """Number of depth units: blocks (``path``) or resolution levels (``level``)."""
        check_scheme(scheme)
        return len(self.blocks) if scheme == "path" else self.n_pools + 1

    def unit_of(self, block: Block, scheme: str = "path") -> int:
        """Depth unit (1 = shallowest) of ``block`` under ``scheme``."""
        check_scheme(scheme)
        return block.index if scheme == "path" else block.level

    def blocks_in_units(self, units, scheme: str = "path") -> List[Block]:
        units = set(units)
        return [b for b in self.blocks if self.unit_of(b, scheme) in units]

    def layer_params(self, name: str) -> int:
        """Number of parameters of the layer ``name``."""
        return _layer_params(self.model.get_layer(name))

    def conv_layers(self) -> List[str]:
        """Convolution layers with weights (``Conv2D``, ``Conv2DTranspose``,
        ``DepthwiseConv2D``, ``SeparableConv2D``) in data-flow order (the paper counts
        these; figures take the first and the last)."""
        import keras

        kinds = (keras.layers.Conv2D, keras.layers.Conv2DTranspose,
                 keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
        return [l.name for l in self.model.layers if isinstance(l, kinds) and l.weights]

    def table(self) -> List[dict]:
        """One row per block: index, part, level, params, share (%), layers."""
        rows = []
        for b in self.blocks:
            rows.append({
                "block": b.index, "part": b.part, "level": b.level, "params": b.params,
                "share_percent": 100.0 * b.params / self.total_params,
                "layers": ", ".join(b.weighted_layers),
            })
        return rows

    def format_table(self) -> str:
        lines = [f"{'block':>5}  {'part':<11} {'level':>5} {'params':>12} {'share':>8}  layers"]
        for r in self.table():
            lines.append(
                f"{r['block']:>5}  {r['part']:<11} {r['level']:>5} {r['params']:>12,} "
                f"{r['share_percent']:>7.2f}%  {r['layers']}".rstrip()
            )
        lines.append(f"{'':>5}  {'total':<11} {'':>5} {self.total_params:>12,} {100:>7.2f}%")
        return "\n".join(lines)


def check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise UserError(f"unknown depth scheme {scheme!r}; expected one of {SCHEMES}")
    return scheme
