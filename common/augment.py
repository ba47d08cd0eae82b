"""Batched, device-side CIFAR augmentation and normalisation (no DataLoader, no per-image Python).

The standard CIFAR augmentation (He et al. 2016, sec. 4.2): pad 4 pixels with zeros, take a
random 32×32 crop, flip horizontally with probability 1/2. Here one gather does crop and flip
for a whole uint8 NHWC batch on whatever device it lives on.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)


def _check_nhwc_uint8(x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.dtype != torch.uint8:
        raise ValueError(f"{name} must be a uint8 NHWC tensor [N, H, W, C], got "
                         f"{getattr(x, 'dtype', type(x))} with shape {tuple(getattr(x, 'shape', ()))}")


def random_crop_flip(x: torch.Tensor, pad: int = 4, flip: bool = True,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Random ``pad``-pixel zero-padded crop (+ horizontal flip) of a uint8 NHWC batch.

    Returns a new uint8 NHWC tensor of the same shape. ``generator`` must live on ``x``'s device.
    """
    _check_nhwc_uint8(x)
    if pad < 0:
        raise ValueError(f"pad must be ≥ 0, got {pad}")
    n, h, w, _ = x.shape
    dev = x.device
    xp = F.pad(x, (0, 0, pad, pad, pad, pad)) if pad else x
    oy = torch.randint(0, 2 * pad + 1, (n,), device=dev, generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (n,), device=dev, generator=generator)
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = oy[:, None] + ar_h[None, :]                                   # [N, H]
    cols = ar_w[None, :].expand(n, w)
    if flip:
        do_flip = torch.rand(n, device=dev, generator=generator) < 0.5
        cols = torch.where(do_flip[:, None], (w - 1) - ar_w[None, :], cols)
    cols = ox[:, None] + cols                                            # [N, W]
    b = torch.arange(n, device=dev)[:, None, None]
    return xp[b, rows[:, :, None], cols[:, None, :]]


def normalize(x: torch.Tensor, mean: tuple[float, ...] = CIFAR10_MEAN,
              std: tuple[float, ...] = CIFAR10_STD,
              memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW, standardised per channel, in ``memory_format``.

    Pass the model's format (:func:`common.runtime.memory_format`): contiguous NCHW by default,
    ``torch.channels_last`` for a channels-last model on CUDA. Never a permuted view into a
    contiguous model: on AVX2-only CPUs oneDNN's convolution corrupts memory on that path.
    """
    _check_nhwc_uint8(x)
    m = torch.tensor(mean, device=x.device, dtype=torch.float32)
    s = torch.tensor(std, device=x.device, dtype=torch.float32)
    return ((x.float() / 255.0 - m) / s).permute(0, 3, 1, 2).contiguous(memory_format=memory_format)
