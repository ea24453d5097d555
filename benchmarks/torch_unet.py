"""The paper's U-Net in PyTorch - the peer a user might pick instead (benchmarks only).

Same layout and parameter count as :func:`keras_unet_ft.model.build_unet`
(31,031,685 at base 64): two 3x3 ReLU convs per level, max-pool, dropout 0.5
after the last encoder block and the bottleneck, UpSampling(2) + 2x2 conv
("same" padding as Keras: one extra row/column at the bottom/right), skip
concatenation, a 3x3 conv with 2 filters and a 1x1 sigmoid head.
"""

import torch
from torch import nn


def _conv(cin, cout, k=3):
    pad = nn.ZeroPad2d((0, 1, 0, 1)) if k == 2 else nn.Identity()
    return nn.Sequential(pad, nn.Conv2d(cin, cout, k, padding=1 if k == 3 else 0), nn.ReLU())


class TorchUNet(nn.Module):
    def __init__(self, base: int = 64, depth: int = 4, dropout: float = 0.5):
        super().__init__()
        self.enc = nn.ModuleList()
        cin = 1
        for level in range(depth):
            f = base * 2 ** level
            self.enc.append(nn.Sequential(_conv(cin, f), _conv(f, f)))
            cin = f
        f = base * 2 ** depth
        self.bottleneck = nn.Sequential(_conv(cin, f), _conv(f, f))
        self.drop = nn.Dropout(dropout)
        self.up, self.dec = nn.ModuleList(), nn.ModuleList()
        cin = f
        for level in reversed(range(depth)):
            f = base * 2 ** level
            self.up.append(nn.Sequential(nn.Upsample(scale_factor=2), _conv(cin, f, 2)))
            self.dec.append(nn.Sequential(_conv(2 * f, f), _conv(f, f)))
            cin = f
        self.head = nn.Sequential(_conv(cin, 2), nn.Conv2d(2, 1, 1))
        self.depth = depth

    def forward(self, x):
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x)
            if i == self.depth - 1:
                x = self.drop(x)
            skips.append(x)
            x = nn.functional.max_pool2d(x, 2)
        x = self.drop(self.bottleneck(x))
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            x = dec(torch.cat([skip, up(x)], dim=1))
        return self.head(x)  # logits; the loss applies the sigmoid (BCEWithLogits)
