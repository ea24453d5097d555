"""The block map of a built U-Net: what "shallow" and "deep" mean.

Amiri et al. group "all layers between two consecutive max-pooling or
up-sampling layers" into one block (docs/paper.md A). The map is computed from the
model's graph, never from hard-coded layer indices:

* a layer's block index is the number of max-pool / up-sampling boundaries on
  the *longest* path from the input to it, plus one (the paper's definition of
  depth). A max-pool closes the block it ends; an up-sampling layer (or a
  strided ``Conv2DTranspose``) opens the next one. So a decoder's
  ``concat`` lands in the decoder block, not in the encoder block of its skip.
* blocks ``1..P`` (``P`` = number of max-pools) form the contracting part,
  block ``P+1`` is the bottleneck and the rest the expanding part. The head
  belongs to the last block.

Two depth schemes (docs/paper.md B):

* ``path`` - the paper's: units are the blocks, 1 = shallowest (first
  contracting block), ``2P+1`` = deepest (last expanding block).
* ``level`` - depth by resolution level: level 1 = first contracting block and
  last expanding block, ..., level ``P+1`` = the bottleneck (deepest). Under
  this scheme "shallow" means the high-resolution levels on both sides of the U.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

from .exitcodes import UserError

SCHEMES = ("path", "level")


def _down_types():
    import keras  # lazy: the plan grammar (and reading results) needs no Keras

    return (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)


@dataclasses.dataclass(frozen=True)
class Block:
    """One block of a U-Net.

    Attributes:
        index: position in data-flow order, 1 = shallowest (path scheme).
        part: ``"contracting"``, ``"bottleneck"`` or ``"expanding"``.
        level: resolution level (1 = full resolution, P+1 = bottleneck).
        layers: names of the layers in the block, in model order.
        weighted_layers: the subset of ``layers`` that hold weights.
        params: number of parameters of the block.
    """

    index: int
    part: str
    level: int
    layers: Tuple[str, ...]
    weighted_layers: Tuple[str, ...]
    params: int


def _is_up(layer) -> bool:
    import keras

    if isinstance(layer, keras.layers.UpSampling2D):
        return True
    if isinstance(layer, keras.layers.Conv2DTranspose):
        strides = layer.strides if isinstance(layer.strides, tuple) else (layer.strides,)
        return max(strides) > 1
    return False


def _parents(layer) -> list:
    out = []
    for node in getattr(layer, "_inbound_nodes", []):
        for parent in node.parent_nodes:
            out.append(parent.operation)
    return out


def _layer_params(layer) -> int:
    return int(sum(_size(w) for w in layer.weights))


def _size(w) -> int:
    n = 1
    for d in w.shape:
        n *= int(d)
    return n


class BlockMap:
    """Blocks of a built U-Net-like model, computed from its graph.

    Args:
        model: a functional ``keras.Model`` with max-pool / up-sampling layers
            (``build_unet``, ``build_xunet`` or ``build_vunet``).

    Examples:
        >>> from keras_unet_ft.model import build_unet
        >>> bm = BlockMap(build_unet())
        >>> len(bm.blocks), bm.blocks[4].part
        (9, 'bottleneck')
        >>> bm.units("level")
        5
    """

    def __init__(self, model):
        down = _down_types()
        self.model = model
        block_of: Dict[str, int] = {}
        for layer in model.layers:  # functional models list layers in topological order
            parents = _parents(layer)
            if not parents:
                b = 1
            else:
                b = max(block_of[p.name] + (1 if isinstance(p, down) else 0) for p in parents)
            if _is_up(layer):
                b += 1
            block_of[layer.name] = b
        n_pools = sum(isinstance(l, down) for l in model.layers)
        n_blocks = max(block_of.values())
        if n_pools < 1 or n_blocks != 2 * n_pools + 1:
            raise UserError(
                f"model {model.name!r} does not look like a U-Net: {n_pools} pooling layers "
                f"and {n_blocks} blocks (expected 2*pools+1)"
            )
        self.n_pools = n_pools
        blocks = []
        for i in range(1, n_blocks + 1):
            names = [l.name for l in model.layers if block_of[l.name] == i]
            weighted = [n for n in names if model.get_layer(n).weights]
            part = ("contracting" if i <= n_pools else
                    "bottleneck" if i == n_pools + 1 else "expanding")
            blocks.append(Block(
                index=i, part=part, level=min(i, n_blocks + 1 - i), layers=tuple(names),
                weighted_layers=tuple(weighted),
                params=sum(_layer_params(model.get_layer(n)) for n in weighted),
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
        """Convolution layers in data-flow order (the paper counts these)."""
        import keras

        return [l.name for l in self.model.layers
                if isinstance(l, keras.layers.Conv2D) and l.weights]

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
                f"{r['share_percent']:>7.2f}%  {r['layers']}"
            )
        lines.append(f"{'':>5}  {'total':<11} {'':>5} {self.total_params:>12,} {100:>7.2f}%")
        return "\n".join(lines)


def check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise UserError(f"unknown depth scheme {scheme!r}; expected one of {SCHEMES}")
    return scheme
