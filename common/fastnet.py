"""A small fast CIFAR network in the style of K. Jordan's *airbench* (2024, "94% on CIFAR-10 in
3.29 seconds on a single GPU", arXiv:2404.00498), for CPU runs that must learn every class.

Layout (airbench94's baseline network, ``airbench_ablations/main0_baseline.py``, without its
whitening initialisation, lookahead, test-time augmentation or output scaling)::

    conv 2x2 (3 -> 24, no padding: 32x32 -> 31x31) - BatchNorm - GELU
    3 x ConvGroup(w_i):  conv 3x3 - MaxPool 2 - BatchNorm - GELU - conv 3x3 - BatchNorm - GELU
    MaxPool 3 - flatten - linear (w_3 -> classes)

with widths ``(w, 4w, 4w)``: ``width=64`` is airbench94's (1.97 M parameters), ``width=32`` the
"half-width" net of notebook 06's ``cpu`` profile (0.49 M). Convolutions have no bias (BatchNorm
follows each), PyTorch's default initialisation, learnable BatchNorm scale and shift.
"""
from __future__ import annotations

import torch
from torch import nn

STEM_CHANNELS = 24   # airbench: 2 · 3 · 2² (a whitening conv's ± eigen-patches; here learned)


class ConvGroup(nn.Module):
    """conv 3x3 - MaxPool 2 - BN - GELU - conv 3x3 - BN - GELU (airbench's ``ConvGroup``)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(c_out)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class AirNet(nn.Module):
    """The airbench-style network above for 3x32x32 inputs; stage widths ``(w, 4w, 4w)``."""

    def __init__(self, num_classes: int = 10, width: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        if width < 1 or num_classes < 2 or in_channels < 1:
            raise ValueError(f"width ({width}), num_classes ({num_classes}) and in_channels "
                             f"({in_channels}) must be positive (num_classes ≥ 2)")
        widths = (width, 4 * width, 4 * width)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, STEM_CHANNELS, 2, bias=False),
                                  nn.BatchNorm2d(STEM_CHANNELS), nn.GELU())
        groups, c_in = [], STEM_CHANNELS
        for c_out in widths:
            groups.append(ConvGroup(c_in, c_out))
            c_in = c_out
        self.groups = nn.Sequential(*groups)
        self.pool = nn.MaxPool2d(3)
        self.fc = nn.Linear(c_in, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (32, 32):
            raise ValueError(f"AirNet takes 32x32 images, got {tuple(x.shape[-2:])}")
        x = self.pool(self.groups(self.stem(x)))     # 31 -> 15 -> 7 -> 3 -> 1
        return self.fc(torch.flatten(x, 1))
