"""CIFAR ResNets (He et al. 2016, arXiv:1512.03385) in the common "ResNet-18 for CIFAR" form.

3×3 stride-1 stem, no max-pool, four stages of BasicBlocks with widths w, 2w, 4w, 8w and
strides 1, 2, 2, 2, global average pooling, one linear layer. ``width=64, blocks=(2, 2, 2, 2)``
is the usual CIFAR ResNet-18 (11.2 M parameters). ``width``, ``blocks`` and ``stem_stride`` shrink
it for CPU runs (e.g. ``width=8, blocks=(1, 1, 1)`` is a 3-stage net with 7 3×3 conv layers).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers plus identity (or 1×1 conv-BN projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32×32 inputs; ``blocks[i]`` BasicBlocks in stage ``i`` of width ``width·2^i``."""

    def __init__(self, num_classes: int = 10, width: int = 64,
                 blocks: Sequence[int] = (2, 2, 2, 2), in_channels: int = 3,
                 stem_stride: int = 1) -> None:
        super().__init__()
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 (CIFAR ResNet) or 2, got {stem_stride}")
        if width < 1 or num_classes < 2 or in_channels < 1:
            raise ValueError(f"width ({width}), num_classes ({num_classes}) and in_channels "
                             f"({in_channels}) must be positive (num_classes ≥ 2)")
        if not blocks or any(int(b) < 1 for b in blocks):
            raise ValueError(f"blocks must be a non-empty sequence of positive ints, got {blocks}")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, stem_stride, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        c_in = width
        for i, n in enumerate(blocks):
            c_out = width * 2 ** i
            for j in range(int(n)):
                layers.append(BasicBlock(c_in, c_out, stride=2 if (i > 0 and j == 0) else 1))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnet18_cifar(num_classes: int = 10, width: int = 64,
                   blocks: Sequence[int] = (2, 2, 2, 2), stem_stride: int = 1) -> CifarResNet:
    """CIFAR ResNet-18 (defaults) or a narrower/shallower variant via ``width``/``blocks``;
    ``stem_stride=2`` halves the resolution after the stem (4× fewer FLOPs, reduced CPU runs)."""
    return CifarResNet(num_classes=num_classes, width=width, blocks=blocks,
                       stem_stride=stem_stride)


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
