"""Real NVP (Dinh, Sohl-Dickstein & Bengio, ICLR 2017, arXiv:1605.08803).

Equation numbers refer to the arXiv v3 paper.

Layers (each maps ``x -> (y, log|det dy/dx|)`` per example and has an exact ``inverse``):

* :class:`AffineCoupling` -- eq. (9): ``y = b*x + (1-b)*(x*exp(s(b*x)) + t(b*x))``, log-det
  ``sum((1-b)*s)`` (eq. 6/10), inverse eq. (8) with ``exp(-s)``. ``s = scale * tanh(.)`` with a
  learned per-channel ``scale``; ``t`` is the affine output of the same network.
* :func:`checkerboard_mask` / :func:`channel_mask` -- the binary masks of section 3.4.
* :func:`squeeze` / :func:`unsqueeze` -- ``s x s x c -> s/2 x s/2 x 4c`` (section 3.6); log-det 0.
* :class:`FlowBatchNorm` -- eqs. (17)-(18): batch normalisation of coupling outputs as an
  invertible layer whose log-det ``-1/2 sum log(var + eps)`` enters the likelihood.
* :class:`RealNVP` -- the multi-scale architecture of eqs. (13)-(16): per scale 3 checkerboard
  couplings, squeeze, 3 channel-wise couplings, factor out half of the dimensions; the last
  scale has 4 checkerboard couplings. ``s``/``t`` are residual conv nets (:class:`ResNetST`) with
  weight normalisation, batch normalisation, ReLU and skip connections; feature maps double
  when the resolution halves.

Data (section 4.1): pixels ``x in {0..255}`` are dequantised ``u = x + U(0,1)`` and modelled as
``l = logit(alpha + (1 - 2 alpha) u / 256)`` with ``alpha = .05``. The paper's text writes
``alpha + (1 - alpha) x/256``; the authors' code (tensorflow/models, research/real_nvp,
``data_constraint = .9``) maps to ``[.05, .95]``, i.e. ``alpha + (1 - 2 alpha) x/256``, which is
what we use (the paper's literal form would put ``logit`` at +inf for ``x -> 256``). The log-det
of this map is added, so :func:`bits_per_dim` is ``-log2 p(u) / D`` on the 0..256 scale, the
number Table 1 reports.

Also here: eq. (19)'s interpolation manifold, sampling at a temperature, the training loop with
checkpoint/resume and NaN guards, and the 2-D toy of Fig. 1.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel

from .runtime import code_files, dryrun_of, memory_format, settings_key
from .training import check_finite, check_lr_schedule, load_checkpoint, lr_factor, save_checkpoint

LOG2 = math.log(2.0)
LOG2PI = math.log(2.0 * math.pi)
ALPHA = 0.05  # section 4.1 and the authors' code (data_constraint = 1 - 2 * alpha = .9)


# =========================================================================== masks, squeeze
def checkerboard_mask(height: int, width: int, parity: int = 0,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Spatial checkerboard ``b`` of shape ``[1, 1, H, W]``: 1 where ``(i + j + parity)`` is even.

    ``parity`` 0 and 1 give complementary masks (section 3.4, Fig. 3 left)."""
    if parity not in (0, 1):
        raise ValueError(f"parity must be 0 or 1, got {parity!r}")
    i = torch.arange(height).view(-1, 1)
    j = torch.arange(width).view(1, -1)
    return ((i + j + parity) % 2 == 0).to(dtype).view(1, 1, height, width)


def channel_mask(channels: int, parity: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Channel-wise mask ``[1, C, 1, 1]``: the first half of the channels is 1 (parity 0) or
    the second half (parity 1) (section 3.4, Fig. 3 right)."""
    if parity not in (0, 1):
        raise ValueError(f"parity must be 0 or 1, got {parity!r}")
    if channels % 2:
        raise ValueError(f"channel-wise masking needs an even number of channels, got {channels}")
    m = torch.zeros(channels, dtype=dtype)
    half = channels // 2
    if parity == 0:
        m[:half] = 1
    else:
        m[half:] = 1
    return m.view(1, channels, 1, 1)


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W] -> [N, 4C, H/2, W/2]``: each 2x2 sub-square becomes 4 channels (sec. 3.6).
    A permutation of the coordinates, so its log-det is 0."""
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"squeeze needs even height and width, got {tuple(x.shape[-2:])}")
    return F.pixel_unshuffle(x, 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`squeeze`."""
    return F.pixel_shuffle(x, 2)


# =========================================================================== s/t networks
class WNConv2d(nn.Module):
    """Weight-normalised convolution ``w = g * v / ||v||`` (Salimans & Kingma 2016), as the
    paper's s/t networks use. ``g`` (``magnitude``) is what the L2 penalty acts on."""

    def __init__(self, cin: int, cout: int, kernel: int, bias: bool = True,
                 zero_init: bool = False) -> None:
        super().__init__()
        self.padding = kernel // 2
        self.v = nn.Parameter(torch.randn(cout, cin, kernel, kernel) * math.sqrt(2.0 / (cin * kernel ** 2)))
        self.magnitude = nn.Parameter(torch.zeros(cout) if zero_init else torch.ones(cout))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.v.flatten(1).norm(dim=1).clamp_min(1e-12)
        w = self.v * (self.magnitude / norm).view(-1, 1, 1, 1)
        return F.conv2d(x, w.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype),
                        padding=self.padding)


class ResidualBlock(nn.Module):
    """``h + conv(relu(bn(conv(relu(bn(h))))))`` with 3x3 weight-normalised convolutions."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(features)
        self.conv1 = WNConv2d(features, features, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(features)
        self.conv2 = WNConv2d(features, features, 3)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        r = self.conv1(F.relu(self.bn1(h)))
        return h + self.conv2(F.relu(self.bn2(r)))


class ResNetST(nn.Module):
    """The s/t network of a coupling layer: a deep residual conv net with skip connections
    (every block's output also feeds the output through a 1x1 convolution), as in the authors'
    code. Output ``2 * cout`` channels: ``s`` pre-activation and ``t``. The last convolution is
    zero-initialised so every coupling starts as the identity."""

    def __init__(self, cin: int, cout: int, features: int, blocks: int) -> None:
        super().__init__()
        if blocks < 1 or features < 1:
            raise ValueError(f"ResNetST needs blocks >= 1 and features >= 1, got {blocks}, {features}")
        self.conv_in = WNConv2d(cin, features, 3)
        self.skip_in = WNConv2d(features, features, 1)
        self.blocks = nn.ModuleList(ResidualBlock(features) for _ in range(blocks))
        self.skips = nn.ModuleList(WNConv2d(features, features, 1) for _ in range(blocks))
        self.bn_out = nn.BatchNorm2d(features)
        self.conv_out = WNConv2d(features, 2 * cout, 1, zero_init=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        skip = self.skip_in(h)
        for block, sk in zip(self.blocks, self.skips):
            h = block(h)
            skip = skip + sk(h)
        return self.conv_out(F.relu(self.bn_out(skip)))


class MLPST(nn.Module):
    """s/t network for vector data (the 2-D toy): an MLP with ReLU; last layer zero-initialised."""

    def __init__(self, dim: int, hidden: int, layers: int = 2) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        d = dim
        for _ in range(layers):
            mods += [nn.Linear(d, hidden), nn.ReLU()]
            d = hidden
        last = nn.Linear(d, 2 * dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*mods, last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# =========================================================================== flow layers
class FlowLayer(nn.Module):
    """Interface: ``forward(x) -> (y, logdet[N])`` and ``inverse(y) -> x``."""

    def inverse(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class AffineCoupling(FlowLayer):
    """Affine coupling layer with a binary mask ``b`` (eq. 9).

    ``mask`` broadcasts against the input (``[1,1,H,W]`` checkerboard, ``[1,C,1,1]`` channel-wise,
    ``[1,D]`` for vectors). ``net`` maps the masked input (plus the mask as an extra channel when
    ``mask_as_input``) to ``2C`` channels ``(s_raw, t)``; ``s = scale * tanh(s_raw)``.
    ``amp`` runs ``net`` under bfloat16 autocast (the fast path on GPUs and on CPUs with native
    bf16, :func:`common.runtime.resolve_amp`; emulated, slowly, elsewhere); the coupling
    arithmetic, ``exp`` and the log-det stay in float32 (:func:`coupling_precision` switches it
    for an evaluation). Inversion stays exact: ``s`` and
    ``t`` are recomputed from the same unchanged half.
    """

    def __init__(self, mask: torch.Tensor, net: nn.Module, channels: int,
                 mask_as_input: bool = False, amp: bool = False) -> None:
        super().__init__()
        self.register_buffer("mask", mask)
        self.net = net
        self.mask_as_input = mask_as_input
        self.amp = amp
        shape = [1, channels] + [1] * (mask.dim() - 2)
        self.scale = nn.Parameter(torch.ones(shape))

    def _s_t(self, x_given: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.mask.to(x_given.dtype)
        inp = x_given * b
        if self.mask_as_input:
            inp = torch.cat([inp, b.expand(inp.shape[0], 1, *inp.shape[2:])], dim=1)
        with torch.autocast(device_type=inp.device.type, dtype=torch.bfloat16, enabled=self.amp):
            h = self.net(inp)
        s_raw, t = h.to(x_given.dtype).chunk(2, dim=1)
        s = self.scale.to(x_given.dtype) * torch.tanh(s_raw) * (1 - b)
        return s, t * (1 - b)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self._s_t(x)
        y = x * torch.exp(s) + t          # identity where b = 1, since s = t = 0 there
        return y, s.flatten(1).sum(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        s, t = self._s_t(y)               # b*y = b*x, so s and t are recomputed exactly
        return (y - t) * torch.exp(-s)


class FlowBatchNorm(FlowLayer):
    """Batch normalisation as an invertible layer, eqs. (17)-(18).

    ``x -> (x - mu) / sqrt(var + eps)`` per channel, on the elements where ``mask`` is 1
    (the half a coupling just updated, as in the authors' code; ``None`` = all elements).
    Training mode uses the batch statistics (and updates running averages); eval mode and
    :meth:`inverse` use the running averages. log-det per example
    ``= -1/2 sum_{updated elements} log(var_c + eps)`` (eq. 18).
    """

    def __init__(self, channels: int, mask: torch.Tensor | None = None, momentum: float = 0.05,
                 eps: float = 1e-4) -> None:
        super().__init__()
        if not 0 < momentum <= 1:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        self.register_buffer("mask", mask if mask is not None else torch.ones(1))
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def _w(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask.to(x.dtype).expand_as(x[:1])

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.training:
            return self.running_mean.to(x.dtype), self.running_var.to(x.dtype)
        dims = [0] + list(range(2, x.dim()))
        w = self._w(x)
        count = (w.sum(dims) * x.shape[0]).clamp_min(1.0)
        mean = (x * w).sum(dims) / count
        shape = [1, -1] + [1] * (x.dim() - 2)
        var = (((x - mean.view(shape)) ** 2) * w).sum(dims) / count
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean.detach().to(self.running_mean.dtype))
            self.running_var.mul_(1 - m).add_(m * var.detach().to(self.running_var.dtype))
        return mean, var

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, var = self._stats(x)
        shape = [1, -1] + [1] * (x.dim() - 2)
        w = self._w(x)
        logstd = 0.5 * torch.log(var + self.eps).view(shape)
        y = x + w * ((x - mean.view(shape)) * torch.exp(-logstd) - x)
        logdet = -(w * logstd).flatten(1).sum(1)            # eq. (18), same for every example
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        shape = [1, -1] + [1] * (y.dim() - 2)
        mean = self.running_mean.to(y.dtype).view(shape)
        std = torch.sqrt(self.running_var.to(y.dtype) + self.eps).view(shape)
        w = self._w(y)
        return y + w * (y * std + mean - y)


def coupling_block(kind: str, channels: int, height: int, width: int, parity: int,
                   features: int, blocks: int, batch_norm: bool = True,
                   amp: bool = False) -> list[FlowLayer]:
    """One coupling (``kind`` = ``"checkerboard"`` or ``"channel"``) and, if ``batch_norm``,
    the :class:`FlowBatchNorm` of its output (updated half only)."""
    if kind == "checkerboard":
        mask = checkerboard_mask(height, width, parity)
        net = ResNetST(channels + 1, channels, features, blocks)
        layer = AffineCoupling(mask, net, channels, mask_as_input=True, amp=amp)
    elif kind == "channel":
        mask = channel_mask(channels, parity)
        net = ResNetST(channels, channels, features, blocks)
        layer = AffineCoupling(mask, net, channels, amp=amp)
    else:
        raise ValueError(f"unknown coupling kind {kind!r}; use 'checkerboard' or 'channel'")
    out: list[FlowLayer] = [layer]
    if batch_norm:
        out.append(FlowBatchNorm(channels, mask=1 - mask))
    return out


class RealNVP(nn.Module):
    """Multi-scale Real NVP for images (eqs. 13-16).

    ``in_shape = (C, H, W)``; ``scales`` = number of squeezes (each one factors out half of the
    dimensions); ``features`` = feature maps of the s/t nets at full resolution (doubled at each
    halving); ``blocks`` = residual blocks per s/t net. ``forward`` maps preprocessed images
    (logit space) to the list of latents ``[z_1, ..., z_L]`` and the log-det; ``inverse`` goes back.
    """

    def __init__(self, in_shape: Sequence[int], scales: int, features: int, blocks: int,
                 batch_norm: bool = True, amp: bool = False) -> None:
        super().__init__()
        c, h, w = (int(v) for v in in_shape)
        if scales < 0 or h % (2 ** scales) or w % (2 ** scales):
            raise ValueError(f"in_shape {tuple(in_shape)} cannot be halved {scales} times")
        self.in_shape = (c, h, w)
        self.pre = nn.ModuleList()
        self.post = nn.ModuleList()
        self.z_shapes: list[tuple[int, int, int]] = []
        f = features
        for _ in range(scales):
            self.pre.append(nn.ModuleList(
                layer for p in (0, 1, 0)
                for layer in coupling_block("checkerboard", c, h, w, p, f, blocks, batch_norm, amp)))
            c, h, w = 4 * c, h // 2, w // 2
            self.post.append(nn.ModuleList(
                layer for p in (0, 1, 0)
                for layer in coupling_block("channel", c, h, w, p, 2 * f, blocks, batch_norm, amp)))
            self.z_shapes.append((c // 2, h, w))
            c, f = c // 2, 2 * f
        self.final = nn.ModuleList(
            layer for p in (0, 1, 0, 1)
            for layer in coupling_block("checkerboard", c, h, w, p, f, blocks, batch_norm, amp))
        self.z_shapes.append((c, h, w))
        self.dim = int(np.prod(self.in_shape))

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        logdet = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        zs: list[torch.Tensor] = []
        h = x
        for pre, post in zip(self.pre, self.post):
            for layer in pre:
                h, ld = layer(h)
                logdet = logdet + ld
            h = squeeze(h)
            for layer in post:
                h, ld = layer(h)
                logdet = logdet + ld
            half = h.shape[1] // 2
            zs.append(h[:, half:])       # eq. (14): factor out half of the dimensions
            h = h[:, :half]
        for layer in self.final:         # eq. (15)
            h, ld = layer(h)
            logdet = logdet + ld
        zs.append(h)
        return zs, logdet

    def inverse(self, zs: Sequence[torch.Tensor]) -> torch.Tensor:
        h = zs[-1]
        for layer in reversed(self.final):
            h = layer.inverse(h)
        for i in reversed(range(len(self.pre))):
            h = torch.cat([h, zs[i]], dim=1)
            for layer in reversed(self.post[i]):
                h = layer.inverse(h)
            h = unsqueeze(h)
            for layer in reversed(self.pre[i]):
                h = layer.inverse(h)
        return h

    def flatten_z(self, zs: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat([z.reshape(z.shape[0], -1) for z in zs], dim=1)

    def unflatten_z(self, z: torch.Tensor) -> list[torch.Tensor]:
        out, i = [], 0
        for shape in self.z_shapes:
            n = int(np.prod(shape))
            out.append(z[:, i:i + n].reshape(z.shape[0], *shape))
            i += n
        if i != z.shape[1]:
            raise ValueError(f"z has {z.shape[1]} dimensions, the model {i}")
        return out


class VectorFlow(nn.Module):
    """A stack of affine couplings on vectors with alternating masks (the 2-D toy of Fig. 1)."""

    def __init__(self, dim: int = 2, couplings: int = 8, hidden: int = 64) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"dim must be >= 2, got {dim}")
        base = (torch.arange(dim) % 2 == 0).float().view(1, dim)
        self.layers = nn.ModuleList(
            AffineCoupling(base if k % 2 == 0 else 1 - base, MLPST(dim, hidden), dim)
            for k in range(couplings))
        self.dim = dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for layer in self.layers:
            x, ld = layer(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z


# =========================================================================== data <-> logit space
def preprocess(x_uint8: torch.Tensor, alpha: float = ALPHA,
               generator: torch.Generator | None = None,
               noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Dequantise and map to logit space (section 4.1). Returns ``(l, logdet)``.

    ``u = x + U(0,1)`` (or ``+ noise``), ``y = alpha + (1 - 2 alpha) u / 256``, ``l = logit(y)``;
    ``logdet = sum log|dl/du| = sum [log(1 - 2 alpha) - log 256 - log y - log(1 - y)]``, so that
    ``log p(u) = log p(l) + logdet`` is a density on the 0..256 pixel scale.
    """
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    x = x_uint8.float() if x_uint8.dtype == torch.uint8 else x_uint8
    if noise is None:
        noise = torch.rand(x.shape, generator=generator,
                           device=x.device if generator is None else generator.device).to(x.device)
    u = x + noise
    y = alpha + (1 - 2 * alpha) * u / 256.0
    l = torch.log(y) - torch.log1p(-y)
    logdet = (math.log(1 - 2 * alpha) - math.log(256.0) - torch.log(y) - torch.log1p(-y))
    return l, logdet.flatten(1).sum(1)


def postprocess(l: torch.Tensor, alpha: float = ALPHA) -> torch.Tensor:
    """Logit space -> pixel intensities in [0, 1] (inverse of :func:`preprocess`, clipped)."""
    return ((torch.sigmoid(l) - alpha) / (1 - 2 * alpha)).clamp(0.0, 1.0)


def std_normal_logprob(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)`` summed over all but the batch dimension."""
    z = z.flatten(1)
    return -0.5 * (z ** 2).sum(1) - 0.5 * z.shape[1] * LOG2PI


def bits_per_dim_from_logp(logp: torch.Tensor, dim: int) -> torch.Tensor:
    """``-log2 p / D`` for a per-example log-density in nats."""
    return -logp / (dim * LOG2)


def log_prob(model: RealNVP, x_uint8: torch.Tensor, alpha: float = ALPHA,
             generator: torch.Generator | None = None,
             noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p(u), flow log-det)`` per example, on the 0..256 scale (change of variables, eq. 3).

    Raises :class:`~common.training.NonFiniteError` if the log-det is NaN/inf."""
    l, ld_pre = preprocess(x_uint8, alpha, generator, noise)
    zs, ld = model(l)
    check_finite(ld.detach(), "flow log-det")
    return std_normal_logprob(model.flatten_z(zs)) + ld + ld_pre, ld


def bits_per_dim(model: RealNVP, x_uint8: torch.Tensor, alpha: float = ALPHA,
                 generator: torch.Generator | None = None,
                 noise: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example bits/dim ``-log2 p(u) / D`` (what Table 1 reports)."""
    logp, _ = log_prob(model, x_uint8, alpha, generator, noise)
    return bits_per_dim_from_logp(logp, model.dim)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[torch.device]:
    """Evaluation mode (BN running statistics) for the block; restores the previous mode.
    Yields the model's device."""
    was_training = model.training
    model.eval()
    try:
        yield next(model.parameters()).device
    finally:
        model.train(was_training)


@contextmanager
def coupling_precision(model: nn.Module, amp: bool | None) -> Iterator[None]:
    """Run every coupling's s/t net of ``model`` under bfloat16 autocast (``amp=True``) or in
    float32 (``False``) for the block, then restore each layer's setting; ``None`` changes
    nothing. Reported numbers are evaluated in float32 whatever the training precision was, and
    the bf16 evaluation of the same model says what the training precision does to them."""
    layers = [m for m in model.modules() if isinstance(m, AffineCoupling)]
    before = [m.amp for m in layers]
    try:
        if amp is not None:
            for m in layers:
                m.amp = amp
        yield
    finally:
        for m, was in zip(layers, before):
            m.amp = was


@torch.no_grad()
def evaluate_bpd(model: RealNVP, x_uint8: torch.Tensor, batch_size: int = 500, seed: int = 0,
                 alpha: float = ALPHA, channels_last: bool = False, amp: bool | None = None) -> float:
    """Mean test bits/dim in eval mode (BN running statistics), with seeded dequantisation noise;
    ``amp``: the s/t nets' precision for this evaluation (:func:`coupling_precision`; ``None``:
    the model's own)."""
    total, n = 0.0, 0
    with eval_mode(model) as device, coupling_precision(model, amp):
        g = torch.Generator(device=device).manual_seed(seed)
        fmt = memory_format(channels_last, device)
        for lo in range(0, len(x_uint8), batch_size):
            xb = x_uint8[lo:lo + batch_size].to(device).contiguous(memory_format=fmt)
            bpd = bits_per_dim(model, xb, alpha, generator=g)
            check_finite(bpd, "test bits/dim")
            total += float(bpd.double().sum())
            n += len(xb)
    return total / max(n, 1)


@torch.no_grad()
def invertibility_error(model: nn.Module, x_uint8: torch.Tensor, batch_size: int = 500,
                        alpha: float = ALPHA) -> dict[str, float]:
    """Max ``|f^-1(f(l)) - l|`` in logit space and the max pixel error after mapping back to
    0..255, over ``x_uint8`` (eval mode, s/t nets in float32 whatever the training precision)."""
    err_l, err_px = 0.0, 0.0
    with eval_mode(model) as device, coupling_precision(model, False):
        g = torch.Generator(device=device).manual_seed(1)
        for lo in range(0, len(x_uint8), batch_size):
            xb = x_uint8[lo:lo + batch_size].to(device)
            l, _ = preprocess(xb, alpha, generator=g)
            zs, _ = model(l)
            back = model.inverse(zs)
            err_l = max(err_l, float((back - l).abs().max()))
            err_px = max(err_px, float(((postprocess(back, alpha) - postprocess(l, alpha)) * 255).abs().max()))
    return {"max_abs_logit": err_l, "max_abs_pixel_0_255": err_px}


@torch.no_grad()
def sample(model: RealNVP, n: int, temperature: float = 1.0, seed: int = 0,
           alpha: float = ALPHA) -> torch.Tensor:
    """``n`` samples ``x = f^-1(z)``, ``z ~ N(0, T^2 I)``, as intensities in [0, 1] (eval mode)."""
    with eval_mode(model) as device:
        g = torch.Generator(device=device).manual_seed(seed)
        z = torch.randn(n, model.dim, generator=g, device=device) * temperature
        return postprocess(model.inverse(model.unflatten_z(z)), alpha)


def interpolation_manifold(z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor, z4: torch.Tensor,
                           phi: torch.Tensor, phi_prime: torch.Tensor) -> torch.Tensor:
    """Eq. (19): ``z = cos(phi) (cos(phi') z1 + sin(phi') z2) + sin(phi) (cos(phi') z3 + sin(phi') z4)``
    for every pair of the grids ``phi`` (rows) and ``phi_prime`` (columns): ``[len(phi)*len(phi'), D]``."""
    zs = torch.stack([z1.flatten(), z2.flatten(), z3.flatten(), z4.flatten()])
    p, q = phi.view(-1, 1, 1).to(zs), phi_prime.view(1, -1, 1).to(zs)
    z = (torch.cos(p) * (torch.cos(q) * zs[0] + torch.sin(q) * zs[1])
         + torch.sin(p) * (torch.cos(q) * zs[2] + torch.sin(q) * zs[3]))
    return z.reshape(-1, zs.shape[1])


@torch.no_grad()
def decode_manifold(model: RealNVP, x4_uint8: torch.Tensor, steps: int = 8,
                    alpha: float = ALPHA) -> torch.Tensor:
    """Encode four images, decode eq. (19) on a ``steps x steps`` grid of ``phi, phi'`` in
    ``[0, pi/2]`` (so the corners are the four images). Returns intensities ``[steps^2, C, H, W]``."""
    if len(x4_uint8) != 4:
        raise ValueError(f"need exactly 4 images, got {len(x4_uint8)}")
    with eval_mode(model) as device:
        # mid-bin dequantisation (u = x + 1/2) so the corners show the images themselves
        l, _ = preprocess(x4_uint8.to(device), alpha, noise=torch.full(x4_uint8.shape, 0.5, device=device))
        z = model.flatten_z(model(l)[0])
        grid = torch.linspace(0, math.pi / 2, steps, device=device)
        zm = interpolation_manifold(z[0], z[1], z[2], z[3], grid, grid)
        return postprocess(model.inverse(model.unflatten_z(zm)), alpha)


# =========================================================================== notebook 05 profiles
# The profile table of notebook 05 (same keys in every profile; see runtime.pick). ``mnist_*``
# is the chosen MNIST model; ``mnist_small_*`` the earlier one-scale model, trained beside it so
# the bits/dim-vs-time figure shows what a bigger model buys at equal CPU time.
CONFIGS: dict[str, dict[str, Any]] = {
    "smoke": {
        "threads": 1, "seed": 0,
        "toy_n": 512, "toy_couplings": 4, "toy_hidden": 16, "toy_steps": 40,
        "mnist_n_train": 256, "mnist_n_test": 128,
        "mnist_model": {"scales": 2, "features": 4, "blocks": 1},
        "mnist_train_s": 1e9, "mnist_max_steps": 4, "mnist_batch": 32,
        "mnist_small_model": {"scales": 1, "features": 4, "blocks": 1},
        "mnist_small_train_s": 1e9, "mnist_small_max_steps": 2, "mnist_small_batch": 32,
        "cifar_n_train": 128, "cifar_n_test": 64,
        "cifar_model": {"scales": 1, "features": 4, "blocks": 1},
        "cifar_train_s": 1e9, "cifar_max_steps": 4, "cifar_batch": 32,
        "eval_every_s": 0.0, "cifar_eval_every_s": 0.0, "eval_size": 64, "final_eval_n": 128,
        "segment_s": 600, "resume_demo": True, "amp": False, "channels_last": False,
        "opt": {"lr_schedule": "cosine", "warmup_steps": 2, "ema_decay": 0.9},
        "invert_n": 64, "sample_grid": 4, "manifold_steps": 3,
        "classifier": {"epochs": 1, "batch_size": 128, "lr": 2e-3, "seed": 0, "n_train": 2000},
        "confidence_n": 64,
    },
    "cpu": {
        "threads": None, "seed": 0,   # every core: 2 threads 1.5x one on a 2-core Xeon
        "toy_n": 4096, "toy_couplings": 6, "toy_hidden": 64, "toy_steps": 1000,
        "mnist_n_train": None, "mnist_n_test": None,
        "mnist_model": {"scales": 2, "features": 16, "blocks": 1},
        # fixed step counts (no time cap: 1e9 s), so the numbers do not depend on the machine
        "mnist_train_s": 1e9, "mnist_max_steps": 9000, "mnist_batch": 64,
        "mnist_small_model": {"scales": 1, "features": 8, "blocks": 1},
        "mnist_small_train_s": 1e9, "mnist_small_max_steps": 2000, "mnist_small_batch": 64,
        "cifar_n_train": None, "cifar_n_test": 2000,
        "cifar_model": {"scales": 1, "features": 8, "blocks": 1},
        "cifar_train_s": 1e9, "cifar_max_steps": 280, "cifar_batch": 64,
        "eval_every_s": 90.0, "cifar_eval_every_s": 10.0, "eval_size": 1000, "final_eval_n": None,
        # a render that runs past this stops checkpointed and resumes on the next call
        # bf16 autocast + channels_last where the CPU runs them natively (AVX-512 BF16 / AMX),
        # float32 NCHW elsewhere (runtime.resolve_amp / memory_format): 1.7x per step on an AMX Xeon
        "segment_s": 3600, "resume_demo": False, "amp": "auto", "channels_last": True,
        # reduced-budget recipe (not the paper's): the paper's constant rate, then a linear
        # decay to 0 over the last 20 % of each budget ("wsd")
        "opt": {"lr_schedule": "wsd"},
        "invert_n": 1000, "sample_grid": 8, "manifold_steps": 8,
        "classifier": {"epochs": 3, "batch_size": 128, "lr": 2e-3, "seed": 0, "n_train": None},
        "confidence_n": 1000,
    },
    "full": {
        "threads": None, "seed": 0,
        "toy_n": 8192, "toy_couplings": 8, "toy_hidden": 128, "toy_steps": 4000,
        "mnist_n_train": None, "mnist_n_test": None,
        "mnist_model": {"scales": 2, "features": 64, "blocks": 4},
        "mnist_train_s": 900.0, "mnist_max_steps": 10 ** 9, "mnist_batch": 64,
        "mnist_small_model": {"scales": 1, "features": 8, "blocks": 1},
        "mnist_small_train_s": 300.0, "mnist_small_max_steps": 10 ** 9, "mnist_small_batch": 64,
        "cifar_n_train": None, "cifar_n_test": None,
        "cifar_model": {"scales": 1, "features": 64, "blocks": 8},   # paper: 8 blocks, 64 maps, 1 downscale
        "cifar_train_s": 1500.0, "cifar_max_steps": 10 ** 9, "cifar_batch": 64,
        "eval_every_s": 60.0, "cifar_eval_every_s": 60.0, "eval_size": 2000, "final_eval_n": None,
        "segment_s": 450, "resume_demo": False, "amp": True, "channels_last": True,
        "opt": {},   # the paper: Adam at a constant 1e-3, no weight averaging
        "invert_n": 10000, "sample_grid": 8, "manifold_steps": 8,
        "classifier": {"epochs": 3, "batch_size": 128, "lr": 2e-3, "seed": 0, "n_train": None},
        "confidence_n": 1000,
    },
}
# dryrun (make dryrun): the full entry with a handful of steps per model and small evaluation
# subsets, nothing else changed (tests/test_dryrun.py): same models, batches, amp, channels_last,
# optimiser and segment length.
CONFIGS["dryrun"] = dryrun_of(
    CONFIGS["full"], toy_steps=20, mnist_max_steps=2, mnist_small_max_steps=2, cifar_max_steps=2,
    eval_size=64, final_eval_n=128, invert_n=64, sample_grid=4, manifold_steps=3,
    classifier={**CONFIGS["full"]["classifier"], "epochs": 1}, confidence_n=64)


# |bits/dim with the s/t nets in bf16 - in float32| allowed for a trained model (notebook 05's
# test 3; reported numbers are always evaluated in float32)
BF16_TOLERANCE_BPD = 0.01


# =========================================================================== training
@dataclass
class TrainConfig:
    """Optimisation settings (paper, section 4.1: Adam defaults, L2 5e-5, batch 64)."""

    lr: float = 1e-3
    batch_size: int = 64
    l2: float = 5e-5            # on weight-norm magnitudes and coupling scales, as the authors' code
    clip_grad_norm: float = 100.0
    alpha: float = ALPHA
    max_train_seconds: float = 60.0   # total training-time budget (summed over resumes)
    max_steps: int = 10 ** 9
    eval_every_seconds: float = 30.0  # bits/dim-vs-time curve resolution (training time)
    eval_size: int = 1000             # test images per curve point (final number: full test set)
    checkpoint_every_seconds: float = 120.0
    seed: int = 0
    channels_last: bool = False
    # "constant" (paper: Adam at a fixed rate), "cosine" or "wsd" (common.training.lr_factor),
    # after a linear warm-up over ``warmup_steps``; the decay ends at the budget (training time
    # or steps, whichever runs out first), so then the budget is part of the run's identity
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    # Polyak averaging: evaluate, sample and report an exponential moving average of the
    # weights and BN statistics (decay warmed up as min(d, (1 + n) / (10 + n))); None: off
    ema_decay: float | None = None

    def __post_init__(self) -> None:
        check_lr_schedule(self.lr_schedule)
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}")

    def budget_free(self) -> tuple[str, ...]:
        """Fields that may change between calls without changing the run (resume-safe)."""
        return (("checkpoint_every_seconds",) if self.lr_schedule != "constant" else
                ("max_train_seconds", "max_steps", "checkpoint_every_seconds"))

    def identity(self) -> dict[str, Any]:
        """The settings a checkpoint must match to be resumed."""
        return asdict(self) | dict.fromkeys(self.budget_free())

    def key(self, model_cfg: dict[str, Any]) -> str:
        """Short hash of everything that determines the run (the time budget only when the
        learning-rate schedule depends on it), including the source of this module and of what
        it imports (:func:`common.runtime.code_files`; a checkpoint written by other code is
        never resumed)."""
        d = {k: v for k, v in asdict(self).items() if k not in self.budget_free()}
        return settings_key({"train": d, "model": model_cfg}, code_files("realnvp"), length=10)

    def lr_at(self, step: int, train_seconds: float) -> float:
        """Learning rate of optimiser step ``step`` (0-based) after ``train_seconds``."""
        done = max(train_seconds / self.max_train_seconds, step / self.max_steps)
        return self.lr * lr_factor(self.lr_schedule, step, done, self.warmup_steps)


def ema_average(decay: float) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor | int],
                                          torch.Tensor]:
    """``avg_fn`` for :class:`torch.optim.swa_utils.AveragedModel`: an exponential moving
    average whose decay is warmed up, ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates,
    so the first steps do not keep the initial weights for long. Integer buffers (batch-norm
    step counters) are copied, not averaged."""
    def avg(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor | int) -> torch.Tensor:
        if not averaged.is_floating_point():
            return current
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        return averaged + (current - averaged) * (1.0 - d)
    return avg


def l2_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of squares of the weight-norm magnitudes and coupling scales."""
    terms = [p.pow(2).sum() for n, p in model.named_parameters()
             if n.endswith("magnitude") or n.endswith("scale")]
    return torch.stack(terms).sum() if terms else torch.zeros(())


@dataclass
class TrainResult:
    history: list[dict[str, float]]     # curve rows: step, epoch, train_seconds, test_bpd, ...
    step: int
    train_seconds: float
    finished: bool
    resumed_from_step: int | None
    step_seconds: list[float] = field(default_factory=list)   # this call's measured steps
    epoch_seconds: list[float] = field(default_factory=list)  # completed full epochs (all calls)

    def timing(self, batch_size: int, n_train: int) -> dict[str, Any]:
        """Median step time, images/s and epoch time (measured if a full epoch completed,
        else estimated from the median step time)."""
        st = self.step_seconds[5:] if len(self.step_seconds) > 10 else self.step_seconds
        if not st:
            return {"train_seconds_total": round(self.train_seconds, 2), "steps": self.step}
        med = float(np.median(st))
        steps_per_epoch = math.ceil(n_train / batch_size)
        out = {
            "step_seconds_median": round(med, 5),
            "images_per_second": round(batch_size / med, 1),
            "epoch_seconds_estimated": round(med * steps_per_epoch, 2),
            "train_seconds_total": round(self.train_seconds, 2),
            "steps": self.step,
            "epochs": round(self.step / steps_per_epoch, 3),
        }
        if self.epoch_seconds:
            out["epoch_seconds_median"] = round(float(np.median(self.epoch_seconds)), 2)
        return out


def train_flow(model: RealNVP, x_train: torch.Tensor, x_eval: torch.Tensor, cfg: TrainConfig,
               checkpoint: str | Path, segment_seconds: float = float("inf"),
               device: torch.device | None = None,
               log: Callable[[str], None] = print) -> TrainResult:
    """Maximum-likelihood training with a training-time budget and checkpoint/resume.

    ``x_train``/``x_eval`` are uint8 NCHW images (kept on ``device``). Training stops when the
    total training time ``cfg.max_train_seconds`` (summed over all calls, evaluation excluded)
    or ``cfg.max_steps`` is reached (``finished=True``), or when this call has run
    ``segment_seconds`` of wall time (``finished=False``; call again to resume). The model,
    optimiser, step, data order, RNG states and curve are checkpointed atomically every
    ``cfg.checkpoint_every_seconds`` and at the end. A NaN/inf loss, log-det or gradient norm
    raises :class:`~common.training.NonFiniteError`; the last checkpoint stays the last good state.

    With ``cfg.ema_decay`` the curve's ``test_bpd`` is that of the weight average (Polyak
    averaging), ``test_bpd_raw`` that of the trained weights, and on return ``model`` holds the
    averaged weights (the checkpoint keeps both, so training resumes from the trained ones).
    """
    device = device or next(model.parameters()).device
    fmt = memory_format(cfg.channels_last, device)   # CUDA, AVX-512/AMX CPUs
    model.to(device, memory_format=fmt)
    x_train = x_train.to(device)
    x_eval = x_eval[: cfg.eval_size].to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    ema = (AveragedModel(model, avg_fn=ema_average(cfg.ema_decay), use_buffers=True)
           if cfg.ema_decay else None)
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    n = len(x_train)
    state = load_checkpoint(checkpoint, map_location=device)
    if state is not None:
        if state["config"] != cfg.identity():
            raise ValueError(f"checkpoint {checkpoint} was written with another config; delete it "
                             f"or use another path")
        model.load_state_dict(state["model"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        g.set_state(state["generator"].cpu())
        step, train_s, history = state["step"], state["train_seconds"], state["history"]
        perm, pos, epoch_s = state["perm"].to(device), state["pos"], state["epoch_seconds"]
        epoch_clock = state["epoch_clock"]
        resumed: int | None = step
        log(f"resumed from {checkpoint} at step {step} ({train_s:.0f} s of training done)")
    else:
        step, train_s, history, pos, epoch_s, epoch_clock = 0, 0.0, [], 0, [], 0.0
        perm = torch.randperm(n, device=device, generator=g)
        resumed = None

    def save() -> None:
        save_checkpoint(checkpoint, {
            "config": cfg.identity(),
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "generator": g.get_state(), "step": step, "train_seconds": train_s,
            "history": history, "perm": perm, "pos": pos, "epoch_seconds": epoch_s,
            "epoch_clock": epoch_clock})

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def evaluate(train_bpd: float | None) -> None:
        t0 = time.perf_counter()

        def bpd_of(m: nn.Module) -> float:
            return evaluate_bpd(m, x_eval, seed=cfg.seed + 12345, alpha=cfg.alpha,
                                channels_last=cfg.channels_last)

        raw = bpd_of(model)
        bpd = bpd_of(ema.module) if ema is not None else raw
        row = {"step": step, "epoch": step * cfg.batch_size / n, "train_seconds": train_s,
               "test_bpd": bpd, "train_bpd": train_bpd if train_bpd is not None else float("nan"),
               "lr": cfg.lr_at(step, train_s), "eval_seconds": time.perf_counter() - t0}
        if ema is not None:
            row["test_bpd_raw"] = raw
        history.append(row)
        log(f"step {step:6d}  train {train_s:7.1f}s  epoch {row['epoch']:.2f}  "
            f"train bpd {row['train_bpd']:.3f}  test bpd {bpd:.3f}"
            + (f" (trained weights {raw:.3f})" if ema is not None else "")
            + f" (first {len(x_eval)} test images)")

    def done() -> bool:
        return train_s >= cfg.max_train_seconds or step >= cfg.max_steps

    if not history:
        evaluate(None)
    call_start = time.perf_counter()
    last_ckpt = time.perf_counter()
    next_eval = (history[-1]["train_seconds"] if history else 0.0) + cfg.eval_every_seconds
    step_times: list[float] = []
    recent: list[float] = []
    model.train()
    first_step = step   # at least one step per call, so a short segment still progresses
    while not done() and (step == first_step or time.perf_counter() - call_start < segment_seconds):
        t0 = time.perf_counter()
        if pos >= n:
            epoch_s.append(epoch_clock)
            epoch_clock = 0.0
            perm = torch.randperm(n, device=device, generator=g)
            pos = 0
        idx = perm[pos:pos + cfg.batch_size]
        pos += cfg.batch_size
        xb = x_train[idx].contiguous(memory_format=fmt)
        noise = torch.rand(xb.shape, generator=g, device=device)
        logp, ld = _logp_unchecked(model, xb, cfg.alpha, noise)
        nll = -logp.mean()
        loss = nll / (model.dim * LOG2) + cfg.l2 * l2_penalty(model)
        for group in opt.param_groups:
            group["lr"] = cfg.lr_at(step, train_s)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
        # one host sync per step covers loss, log-det and gradient norm
        if not bool(torch.isfinite(torch.stack([loss.detach(), ld.detach().sum(), gnorm])).all()):
            check_finite(ld.detach(), "flow log-det", step)
            check_finite(loss.detach(), "loss", step)
            check_finite(gnorm, "gradient norm", step)
        opt.step()
        if ema is not None:
            ema.update_parameters(model)
        step += 1
        bpd_value = float(nll.detach()) / (model.dim * LOG2)
        recent = (recent + [bpd_value])[-50:]
        sync()
        dt = time.perf_counter() - t0
        step_times.append(dt)
        train_s += dt
        epoch_clock += dt
        if train_s >= next_eval or done():
            evaluate(float(np.mean(recent)))
            next_eval = train_s + cfg.eval_every_seconds
        if time.perf_counter() - last_ckpt > cfg.checkpoint_every_seconds:
            save()
            last_ckpt = time.perf_counter()
    if history[-1]["step"] != step:
        evaluate(float(np.mean(recent)) if recent else None)
    save()
    if ema is not None:   # evaluate, sample and report the averaged weights from here on
        model.load_state_dict(ema.module.state_dict())
    return TrainResult(history=history, step=step, train_seconds=train_s, finished=done(),
                       resumed_from_step=resumed, step_seconds=step_times, epoch_seconds=list(epoch_s))


def _logp_unchecked(model: RealNVP, xb: torch.Tensor, alpha: float,
                    noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``log_prob`` without the per-call host sync (the training loop checks once per step)."""
    l, ld_pre = preprocess(xb, alpha, noise=noise)
    zs, ld = model(l)
    return std_normal_logprob(model.flatten_z(zs)) + ld + ld_pre, ld


def to_uint8_nchw(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``common.data`` images (MNIST float [N, 784] in [0,1], or CIFAR uint8 NHWC) -> uint8 NCHW."""
    if x.dtype == torch.uint8 and x.dim() == 4:
        return x.permute(0, 3, 1, 2).contiguous()
    if x.is_floating_point():
        return (x * 255).round().clamp(0, 255).to(torch.uint8).reshape(len(x), *shape)
    raise ValueError(f"unexpected image tensor {x.dtype} {tuple(x.shape)}")


# =========================================================================== 2-D toy (Fig. 1)
def toy_data(n: int, seed: int = 0) -> torch.Tensor:
    """Two interleaved moons (sklearn ``make_moons``, noise .05), standardised: ``[n, 2]``."""
    from sklearn.datasets import make_moons

    x, _ = make_moons(n_samples=n, noise=0.05, random_state=seed)
    x = (x - np.array([0.5, 0.25])) / np.array([0.87, 0.5])
    return torch.from_numpy(x).float()


def train_toy(flow: VectorFlow, x: torch.Tensor, steps: int, batch_size: int = 256,
              lr: float = 1e-3, seed: int = 0) -> list[float]:
    """Maximum likelihood on 2-D data; returns the NLL (nats) per step. NaN-guarded."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(flow.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        xb = x[torch.randint(len(x), (batch_size,), generator=g)]
        z, ld = flow(xb)
        loss = -(std_normal_logprob(z) + ld).mean()
        check_finite(loss.detach(), "toy loss", step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def plot_toy_mapping(flow: VectorFlow, x: torch.Tensor, n_lines: int = 15, seed: int = 1):
    """Fig. 1: data -> z (inference, with the data-space grid carried along) and z -> data
    (generation, with the latent grid carried along). Returns a matplotlib figure."""
    import matplotlib.pyplot as plt

    flow.eval()
    with torch.no_grad():
        z = flow(x)[0]
        g = torch.Generator().manual_seed(seed)
        z_prior = torch.randn(len(x), 2, generator=g)
        x_gen = flow.inverse(z_prior)

    def grid(lo: np.ndarray, hi: np.ndarray) -> list[torch.Tensor]:
        t = torch.linspace(0, 1, 200)
        lines = []
        for v in np.linspace(0, 1, n_lines):
            a = torch.stack([lo[0] + (hi[0] - lo[0]) * t, torch.full_like(t, lo[1] + (hi[1] - lo[1]) * v)], 1)
            b = torch.stack([torch.full_like(t, lo[0] + (hi[0] - lo[0]) * v), lo[1] + (hi[1] - lo[1]) * t], 1)
            lines += [a, b]
        return lines

    xl = grid(np.array([-2.5, -2.5]), np.array([2.5, 2.5]))
    zl = grid(np.array([-3.0, -3.0]), np.array([3.0, 3.0]))
    with torch.no_grad():
        xl_to_z = [flow(l)[0] for l in xl]
        zl_to_x = [flow.inverse(l) for l in zl]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.2))
    panels = [
        (axes[0], x, xl, "data space: x ~ p̂_X (with a grid)", "C0"),
        (axes[1], z, xl_to_z, "inference: z = f(x) (grid mapped)", "C0"),
        (axes[2], z_prior, zl, "latent space: z ~ p_Z (with a grid)", "C1"),
        (axes[3], x_gen, zl_to_x, "generation: x = f⁻¹(z) (grid mapped)", "C1"),
    ]
    for ax, pts, lines, title, colour in panels:
        for l in lines:
            ax.plot(l[:, 0].numpy(), l[:, 1].numpy(), color="0.75", lw=0.6, zorder=0)
        ax.scatter(pts[:, 0].numpy(), pts[:, 1].numpy(), s=2, color=colour, zorder=1)
        ax.set_title(title, fontsize=10)
        ax.set_aspect("equal")
        lim = 4.0 if "latent" in title or "inference" in title else 3.0
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    flow.train()
    return fig
