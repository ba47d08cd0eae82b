"""Denoising autoencoder as in the DeepLearning 0.1 tutorial (``dA.py``; Vincent et al. 2008).

Model (tutorial notation), input x in [0, 1]^784:

* corruption (binomial masking noise):   x̃ = x ⊙ m,  m_i ~ Bernoulli(1 − c)
* encoder:                                y = s(W x̃ + b)
* decoder with tied weights W' = Wᵀ:      z = s(Wᵀ y + b')
* cost: cross-entropy of the *clean* input, summed over pixels, averaged over the minibatch
  L(x, z) = − Σ_k [x_k log z_k + (1 − x_k) log(1 − z_k)]

Initialisation: W ~ U(±4·√(6/(n_visible + n_hidden))), b = b' = 0. We evaluate the cost with
``binary_cross_entropy_with_logits`` on the pre-sigmoid decoder output: the same function,
without the log(0) that the tutorial's formula can hit in float32.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .data import DeviceBatches
from .training import EpochLog, check_finite, progress


class DenoisingAutoencoder(nn.Module):
    """Tied-weight sigmoid autoencoder ``n_visible -> n_hidden -> n_visible``."""

    def __init__(self, n_visible: int = 784, n_hidden: int = 500,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        bound = 4.0 * math.sqrt(6.0 / (n_visible + n_hidden))
        w = torch.empty(n_visible, n_hidden).uniform_(-bound, bound, generator=generator)
        self.W = nn.Parameter(w)
        self.b = nn.Parameter(torch.zeros(n_hidden))          # hidden bias
        self.b_prime = nn.Parameter(torch.zeros(n_visible))   # visible (reconstruction) bias

    @staticmethod
    def corrupt(x: torch.Tensor, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """Binomial masking noise: keep each input with probability ``1 - level``, else zero it."""
        if not 0.0 <= level < 1.0:
            raise ValueError(f"corruption level must be in [0, 1), got {level}")
        if level == 0.0:
            return x
        keep = torch.full_like(x, 1.0 - level)
        return x * torch.bernoulli(keep, generator=generator)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden code y = sigmoid(x W + b)."""
        return torch.sigmoid(x @ self.W + self.b)

    def decode_logits(self, y: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid reconstruction Wᵀ y + b' (tied weights)."""
        return y @ self.W.t() + self.b_prime

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(self.encode(x)))

    def cost(self, x: torch.Tensor, level: float = 0.0,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean over the batch of the per-image cross-entropy between x and the reconstruction of
        the corrupted x̃ (the tutorial's ``get_cost_updates``)."""
        logits = self.decode_logits(self.encode(self.corrupt(x, level, generator)))
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1).mean()

    def filters(self, n: int = 100, side: int = 28) -> torch.Tensor:
        """The first ``n`` filters (columns of W) as ``[n, side, side]`` images."""
        return self.W.detach()[:, :n].t().reshape(n, side, side).cpu()


def train_dae(model: DenoisingAutoencoder, x: torch.Tensor, level: float, *, lr: float = 0.1,
              batch_size: int = 20, epochs: int = 15, seed: int = 0,
              on_epoch: Callable[[int, DenoisingAutoencoder], None] | None = None) -> EpochLog:
    """The tutorial's training: plain SGD, minibatches in data order (no shuffling).

    ``on_epoch(epoch, model)`` is called after every epoch (and with epoch 0 before training).
    The returned log's rows hold the mean cost per epoch, as the tutorial prints it.
    """
    gen = torch.Generator(device=x.device).manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    batches = DeviceBatches(x, batch_size=batch_size, shuffle=False)
    log = EpochLog(device=x.device)
    if on_epoch:
        on_epoch(0, model)
    for epoch in range(1, epochs + 1):
        log.start()
        total = torch.zeros((), device=x.device)
        for (xb,) in progress(batches, f"dA c={level} epoch {epoch}", total=len(batches)):
            loss = model.cost(xb, level, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
        mean_cost = float(total) / len(batches)
        check_finite(mean_cost, f"dA cost (c={level})", f"epoch {epoch}")
        log.end(len(x), cost=mean_cost)
        if on_epoch:
            on_epoch(epoch, model)
    return log


@torch.no_grad()
def reconstruction_error(model: DenoisingAutoencoder, x: torch.Tensor, level: float = 0.0,
                         seed: int = 0, batch_size: int = 1000) -> float:
    """Mean per-image cross-entropy of reconstructing clean ``x`` from x̃ (corruption ``level``)."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    total = 0.0
    for (xb,) in DeviceBatches(x, batch_size=batch_size, shuffle=False):
        total += float(model.cost(xb, level, gen)) * len(xb)
    return total / len(x)


@torch.no_grad()
def hidden_codes(model: DenoisingAutoencoder, x: torch.Tensor, batch_size: int = 5000) -> torch.Tensor:
    """Hidden representation of clean inputs, for a linear probe."""
    return torch.cat([model.encode(xb) for (xb,) in DeviceBatches(x, batch_size=batch_size, shuffle=False)])


def filter_smoothness(W: torch.Tensor, mask: torch.Tensor, side: int = 28) -> torch.Tensor:
    """How stroke-like each filter (column of ``W``, ``[side*side, n]``) is: the Pearson
    correlation between horizontally and vertically adjacent weights, over the neighbour pairs
    whose two pixels both lie in ``mask`` (``[side, side]`` bool: the pixels the data actually
    use; MNIST's empty border keeps its initial noise under any training). About 0 for i.i.d.
    noise (the initialisation), near 1 for smooth strokes or blobs. Returns ``[n]``."""
    if W.dim() != 2 or W.shape[0] != side * side or tuple(mask.shape) != (side, side):
        raise ValueError(f"W must be [{side * side}, n] and mask [{side}, {side}], got "
                         f"{tuple(W.shape)} and {tuple(mask.shape)}")
    f = W.detach().t().reshape(-1, side, side).double().cpu()
    m = mask.bool().cpu()
    mh, mv = m[:, :-1] & m[:, 1:], m[:-1, :] & m[1:, :]
    a = torch.cat([f[:, :, :-1][:, mh], f[:, :-1, :][:, mv]], 1)
    b = torch.cat([f[:, :, 1:][:, mh], f[:, 1:, :][:, mv]], 1)
    if a.shape[1] < 3:
        raise ValueError("mask leaves fewer than 3 neighbour pairs")
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-300)).float()
