"""The filter network: a two-level U-Net (Ronneberger et al. 2015) with a residual output.

``FilterNet(x) = clip(x + r(x), 0, 1)``: the network predicts a correction, so the identity (the
right answer for a clean input) is the easy function to learn and an untrained filter is nearly a
pass-through. 28x28 -> 14x14 -> 28x28 with one skip connection; about 35 k parameters and
~10 MFLOP per image, so a single request costs well under a millisecond of CPU.
"""
from __future__ import annotations

import torch
from torch import nn

from daic.models.networks import _as_nchw

FILTER_ARCH = "filter_unet"


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GELU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.GELU())


class FilterNet(nn.Module):
    """Input (N, 28, 28) or (N, 1, 28, 28) in [0, 1] -> restored (N, 28, 28) in [0, 1]."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.enc = _block(1, width)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)  # 14x14
        self.mid = _block(2 * width, 2 * width)
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)  # 28x28
        self.dec = _block(2 * width, width)
        self.out = nn.Conv2d(width, 1, 1)
        nn.init.zeros_(self.out.weight)  # starts as the identity
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_nchw(x)
        e = self.enc(x)
        m = self.mid(torch.nn.functional.gelu(self.down(e)))
        d = self.dec(torch.cat([e, self.up(m)], dim=1))
        return torch.clamp(x + self.out(d), 0.0, 1.0).squeeze(1)


def build_filter() -> FilterNet:
    return FilterNet()
