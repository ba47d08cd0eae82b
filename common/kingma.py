"""Kingma, Rezende, Mohamed & Welling 2014, *Semi-supervised learning with deep generative models*
(arXiv:1406.5298): the latent-feature model M1, the generative semi-supervised model M2 and
their stack M1+M2, written so that many independent runs train together as one *stacked* model.

Stacking
--------
Every weight has a leading "run" axis ``R``: a layer is ``h = x @ W[r] + b[r]`` for each run,
computed with one :func:`torch.baddbmm`. Runs share nothing but the kernel launches: the loss is
the *sum* of the runs' losses, so each run's gradient is its own, and Adam is elementwise, so a
stacked Adam equals ``R`` independent Adams. Run ``r`` is initialised from ``seeds[r]`` alone, so
a run's parameters do not depend on which other runs it is stacked with.

Equations (numbers as in the paper)
-----------------------------------
M1 (eq. 1-2, sec. 4.1): ``ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || N(0, I))``, with the Gaussian
KL in closed form (:func:`gaussian_kl`).

M2 (eq. 6-9, sec. 3.1.2):

* labelled bound  ``-L(x,y) = E_q(z|x,y)[log p(x|y,z) + log p(y) + log p(z) - log q(z|x,y)]`` (6)
* unlabelled bound ``-U(x) = sum_y q(y|x) (-L(x,y)) + H(q(y|x))``                             (7)
* objective ``J^alpha = J + alpha * E_labelled[-log q(y|x)]``                                   (9)

This module works with the *bounds* (the negated L and U of the paper, larger is better):
``labelled_bound`` returns ``-L(x,y)``, ``unlabelled_bound`` returns ``-U(x)``.
``unlabelled_bound`` marginalises y by replicating every point over the K labels (a ``[R, B, K]``
tensor; the Chainer write-up's trick) and the y-independent part of the encoder's first layer is
computed once per point, not once per (point, label).

Command line: ``python -m common.kingma bench`` times an M2 epoch on the current device.
"""
from __future__ import annotations

import argparse
import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .training import (EpochLog, NonFiniteError, SegmentUnfinished, load_checkpoint, progress,
                       save_checkpoint, segment_over, check_lr_schedule, lr_factor)
from .runtime import Stopwatch, at_least_float32, code_files, file_digest, seconds_per_call, show_path

LOG_2PI = math.log(2 * math.pi)
Likelihood = Literal["bernoulli", "gaussian"]


# --------------------------------------------------------------------------- densities
def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` summed over the last axis (appendix B of
    Kingma & Welling 2014): ``0.5 * sum(mu^2 + exp(logvar) - 1 - logvar)``. Summed in at least
    float32 also under bfloat16 autocast (as are the log-likelihoods and the entropy below;
    :func:`common.runtime.at_least_float32`: float64 stays float64)."""
    mu, logvar = at_least_float32(mu), at_least_float32(logvar)
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def gaussian_log_density(x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``log N(x; mu, exp(logvar))`` summed over the last axis."""
    mu, logvar = at_least_float32(mu), at_least_float32(logvar)
    return -0.5 * (LOG_2PI + logvar + (x - mu).pow(2) * torch.exp(-logvar)).sum(-1)


def _softplus_vectorised(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + e^x)`` as ``max(x, 0) + log(1 + e^-|x|)`` with the vectorised ``exp`` and
    ``log`` (the gradient is the caller's: :func:`softplus`, :func:`bernoulli_log_likelihood`)."""
    return x.abs().neg_().exp_().add_(1.0).log_().add_(x.clamp_min(0))


class _BernoulliLogLikelihood(torch.autograd.Function):
    """``sum_d x_d l_d - softplus(l_d)`` of bf16 / fp16 logits ``l``, computed in float32 with
    :func:`_softplus_vectorised` (as :func:`softplus`); gradient ``x - sigmoid(l)``, handed back
    in the logits' dtype. ``x`` (no gradient) may broadcast against ``l``."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        lf = logits.float()
        nll = _softplus_vectorised(lf).sub_(x * lf)             # softplus(l) - x l
        ctx.save_for_backward(lf, x)
        ctx.in_dtype = logits.dtype
        return nll.sum(-1).neg_()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        lf, x = ctx.saved_tensors
        g = torch.sigmoid(lf).sub_(x).mul_(grad.unsqueeze(-1)).neg_()
        return g.to(ctx.in_dtype), None


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor, fused: bool = False) -> torch.Tensor:
    """``log Bernoulli(x; sigmoid(logits))`` summed over the last axis (``x`` may broadcast),
    in at least float32.

    ``fused``: for bf16 / fp16 logits on the CPU (bfloat16 autocast), one autograd function
    instead of upcast + ``binary_cross_entropy_with_logits``, whose CPU forward is bound by a
    scalar ``log_sigmoid`` (22 % of an M2 step in bf16). The whole M2 step with this: 1.07x at
    02's cpu shape (5 stacked runs of 100 + 100), 1.16x at the paper's 1 + 499 (paired, 7 and 5
    rounds, separate processes, AMD EPYC with AVX-512 BF16, 2 threads). Same formula in
    float32, ``log(1 + u)`` for ``log1p(u)`` (``u = e^-|l| <= 1``): the sums agree to ~1e-5
    nats. M2 uses it; off by default, and 07's VAE keeps the plain path: there (784 pixels per
    image, batch 64) it costs instead of saving, 0.96x per VAE step (7 paired rounds of 60 steps,
    bf16 + channels_last, AMD EPYC, 2 threads)."""
    if fused and logits.dtype in (torch.bfloat16, torch.float16) and not logits.is_cuda \
            and not x.requires_grad:
        return _BernoulliLogLikelihood.apply(logits, x)
    logits = at_least_float32(logits)
    x = x.expand_as(logits)
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor,
                   eps: torch.Tensor | None = None) -> torch.Tensor:
    """``z = mu + exp(logvar / 2) * eps``, ``eps ~ N(0, I)`` unless given (at least float32: the
    same draws with and without bfloat16 autocast)."""
    mu, logvar = at_least_float32(mu), at_least_float32(logvar)
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + torch.exp(0.5 * logvar) * eps


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical ``softmax(logits)`` over the last axis."""
    logp = F.log_softmax(at_least_float32(logits), -1)
    return -(logp.exp() * logp).sum(-1)


class _Softplus(torch.autograd.Function):
    """``log(1 + e^x)`` (:func:`_softplus_vectorised`), gradient ``sigmoid(x)``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return _softplus_vectorised(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return torch.ops.aten.softplus_backward(grad, x, 1.0, 20.0)


def softplus(x: torch.Tensor) -> torch.Tensor:
    """The softplus activation of every network here (the authors' choice).

    On CPU, ``F.softplus``'s forward is bound by a scalar ``log1p`` (measured 8.9 ms for
    900k floats on one core, 41 % of an M1+M2 step); the same function written with the
    vectorised ``exp`` and ``log`` takes 2.8 ms and differs by < 1e-6 (``log(1 + u)`` instead of
    ``log1p(u)`` for ``u = e^-|x| <= 1``). On GPUs ``F.softplus`` is one fused kernel: kept.
    """
    if x.is_cuda:
        return F.softplus(x)
    return _Softplus.apply(x)


# --------------------------------------------------------------------------- stacked layers
def _init_weight(runs: int, n_in: int, n_out: int, gens: Sequence[torch.Generator],
                 scale: float = 1.0) -> torch.Tensor:
    """``N(0, 1/n_in)`` weights as in the authors' code, run ``r`` drawn from ``gens[r]``."""
    w = torch.stack([torch.randn(n_in, n_out, generator=g) for g in gens])
    return w * (scale / math.sqrt(n_in))


class StackedLinear(nn.Module):
    """``R`` independent affine maps: ``x [R, ..., n_in] -> [R, ..., n_out]``."""

    def __init__(self, runs: int, n_in: int, n_out: int, gens: Sequence[torch.Generator],
                 scale: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(_init_weight(runs, n_in, n_out, gens, scale))
        self.bias = nn.Parameter(torch.zeros(runs, 1, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        out = torch.baddbmm(self.bias, x.reshape(shape[0], -1, shape[-1]), self.weight)
        return out.reshape(*shape[:-1], out.shape[-1])


class StackedMLP(nn.Module):
    """Softplus MLP ``n_in -> hidden... -> n_out`` (linear output), stacked over runs."""

    def __init__(self, runs: int, n_in: int, hidden: Sequence[int], n_out: int,
                 gens: Sequence[torch.Generator], out_scale: float = 1.0) -> None:
        super().__init__()
        dims = [n_in, *hidden]
        self.hidden = nn.ModuleList(StackedLinear(runs, a, b, gens) for a, b in zip(dims[:-1], dims[1:]))
        self.out = StackedLinear(runs, dims[-1], n_out, gens, out_scale)

    def trunk(self, h: torch.Tensor, start: int = 0) -> torch.Tensor:
        for layer in self.hidden[start:]:
            h = softplus(layer(h))
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.trunk(x))


def _generators(seeds: Sequence[int], salt: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(s) * 1009 + salt) for s in seeds]


def _check_hidden(hidden: Sequence[int]) -> tuple[int, ...]:
    hidden = tuple(int(h) for h in hidden)
    if not hidden or min(hidden) < 1:
        raise ValueError(f"hidden must be a non-empty sequence of positive widths, got {hidden}")
    return hidden


# --------------------------------------------------------------------------- M1
class M1(nn.Module):
    """The latent-feature model M1 (sec. 2.1): ``q(z|x)`` Gaussian, ``p(x|z)`` Bernoulli
    (or Gaussian), softplus MLPs with ``hidden`` units (paper: 600-600; the authors' pretrained
    model: 500-500), ``R = len(seeds)`` stacked runs."""

    def __init__(self, x_dim: int = 784, z_dim: int = 50, hidden: Sequence[int] = (600, 600),
                 seeds: Sequence[int] = (0,), likelihood: Likelihood = "bernoulli") -> None:
        super().__init__()
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got {likelihood!r}")
        hidden = _check_hidden(hidden)
        self.runs, self.x_dim, self.z_dim, self.likelihood = len(seeds), x_dim, z_dim, likelihood
        self.seeds = [int(s) for s in seeds]
        self.hidden_sizes = hidden
        self.encoder = StackedMLP(self.runs, x_dim, hidden, 2 * z_dim, _generators(seeds, 1), 0.1)
        n_out = x_dim if likelihood == "bernoulli" else 2 * x_dim
        self.decoder = StackedMLP(self.runs, z_dim, hidden[::-1], n_out, _generators(seeds, 2))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [R, B, D]`` -> mean and log-variance of ``q(z|x)``, each ``[R, B, Z]``."""
        mu, logvar = self.encoder(x).chunk(2, -1)
        return mu, logvar

    def log_px(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.likelihood == "bernoulli":
            return bernoulli_log_likelihood(out, x)
        mu, logvar = out.chunk(2, -1)
        return gaussian_log_density(x, mu, logvar)

    def elbo(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """One-sample ELBO (eq. 2 of Kingma & Welling 2014, analytic KL) per point: ``[R, B]``."""
        mu, logvar = self.encode(x)
        z = reparameterise(mu, logvar, eps)
        return self.log_px(self.decoder(z), x) - gaussian_kl(mu, logvar)

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        out = self.decoder(z)
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out.chunk(2, -1)[0]


# --------------------------------------------------------------------------- M2
class M2(nn.Module):
    """The generative semi-supervised model M2 (sec. 2.2), stacked over ``R = len(seeds)`` runs.

    ``p(y)`` uniform over ``K`` classes, ``p(z) = N(0, I)``, ``p(x|y,z)`` Bernoulli (pixels) or
    Gaussian (M1 features, sec. 2.3), ``q(z|x,y)`` Gaussian, ``q(y|x)`` a softmax classifier;
    every network has ``hidden`` softplus layers (paper: one of 500).
    """

    def __init__(self, x_dim: int = 784, z_dim: int = 50, hidden: Sequence[int] = (500,),
                 n_classes: int = 10, seeds: Sequence[int] = (0,),
                 likelihood: Likelihood = "bernoulli") -> None:
        super().__init__()
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got {likelihood!r}")
        hidden = _check_hidden(hidden)
        R = self.runs = len(seeds)
        self.seeds = [int(s) for s in seeds]
        self.x_dim, self.z_dim, self.n_classes, self.likelihood = x_dim, z_dim, n_classes, likelihood
        self.hidden_sizes = hidden
        ge, gd, gc = _generators(seeds, 11), _generators(seeds, 12), _generators(seeds, 13)
        # q(z|x,y): first layer split as x @ Wx + Wy[y] + b (the y one-hot costs no matmul)
        self.enc_x = StackedLinear(R, x_dim, hidden[0], ge)
        self.enc_y = nn.Parameter(_init_weight(R, n_classes, hidden[0], ge))
        self.encoder = StackedMLP(R, hidden[0], hidden[1:], 2 * z_dim, ge, 0.1)
        # p(x|y,z): first layer z @ Wz + Wy[y] + b
        self.dec_z = StackedLinear(R, z_dim, hidden[0], gd)
        self.dec_y = nn.Parameter(_init_weight(R, n_classes, hidden[0], gd))
        n_out = x_dim if likelihood == "bernoulli" else 2 * x_dim
        self.decoder = StackedMLP(R, hidden[0], hidden[1:], n_out, gd)
        self.classifier = StackedMLP(R, x_dim, hidden, n_classes, gc)

    # -- pieces ----------------------------------------------------------------
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``q(y|x)``: ``[R, B, K]``."""
        return self.classifier(x)

    def _y_rows(self, table: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """``table[r, y[r, b]]`` as ``[R, B, H]``; with ``y=None`` every label: ``[R, 1, K, H]``."""
        if y is None:
            return table[:, None]
        return torch.gather(table, 1, y[..., None].expand(*y.shape, table.shape[-1]))

    def encode(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``q(z|x,y)``: for labels ``y [R, B]`` -> ``[R, B, Z]`` each; for ``y=None`` all K labels
        -> ``[R, B, K, Z]``, computing ``x @ Wx`` once per point."""
        hx = self.enc_x(x)
        if y is None:
            hx = hx[:, :, None]
        # the label rows in the matmul's dtype: under bf16 autocast the sum, its softplus and
        # the next layer's input stay bf16 (a float32 table would promote them and cost a round trip)
        h = softplus(hx + self._y_rows(self.enc_y, y).to(hx.dtype))
        mu, logvar = self.encoder(h).chunk(2, -1)
        return mu, logvar

    def decode(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Output of ``p(x|y,z)`` (Bernoulli logits, or Gaussian mean and log-variance
        concatenated); ``z [R, B, Z]`` with ``y [R, B]``, or ``z [R, B, K, Z]`` with ``y=None``."""
        hz = self.dec_z(z)
        h = softplus(hz + self._y_rows(self.dec_y, y).to(hz.dtype))   # bf16 stays bf16, as in encode
        return self.decoder(h)

    def decode_mean(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.decode(z, y)
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out.chunk(2, -1)[0]

    def log_px(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.likelihood == "bernoulli":
            return bernoulli_log_likelihood(out, x, fused=True)
        mu, logvar = out.chunk(2, -1)
        return gaussian_log_density(x, mu, logvar)

    # -- bounds ----------------------------------------------------------------
    def labelled_bound(self, x: torch.Tensor, y: torch.Tensor,
                       eps: torch.Tensor | None = None) -> torch.Tensor:
        """``-L(x, y)`` (eq. 6) per point, ``[R, B]``: one z sample, analytic KL."""
        mu, logvar = self.encode(x, y)
        z = reparameterise(mu, logvar, eps)
        log_py = -math.log(self.n_classes)
        return self.log_px(self.decode(z, y), x) + log_py - gaussian_kl(mu, logvar)

    def unlabelled_bound(self, x: torch.Tensor, eps: torch.Tensor | None = None,
                         logits: torch.Tensor | None = None) -> torch.Tensor:
        """``-U(x) = sum_y q(y|x)(-L(x,y)) + H(q(y|x))`` (eq. 7) per point, ``[R, B]``.

        Vectorised: the batch is replicated over all K labels (``eps`` is ``[R, B, K, Z]``).
        """
        mu, logvar = self.encode(x, None)                      # [R, B, K, Z]
        z = reparameterise(mu, logvar, eps)
        out = self.decode(z, None)                              # [R, B, K, D']
        lxy = self.log_px(out, x[:, :, None]) - math.log(self.n_classes) - gaussian_kl(mu, logvar)
        logits = self.classify(x) if logits is None else logits
        q = F.softmax(logits, -1)
        return (q * lxy).sum(-1) + entropy_from_logits(logits)

    def unlabelled_bound_loop(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """Reference implementation of eq. 7 with an explicit Python loop over the labels (for
        tests; same noise as :meth:`unlabelled_bound` when ``eps`` is given)."""
        R, B = x.shape[:2]
        logits = self.classify(x)
        q = F.softmax(logits, -1)
        total = entropy_from_logits(logits)
        for k in range(self.n_classes):
            y = torch.full((R, B), k, dtype=torch.long, device=x.device)
            e = None if eps is None else eps[:, :, k]
            total = total + q[..., k] * self.labelled_bound(x, y, e)
        return total


def alpha_weight(n_total: int, n_labelled: int, factor: float = 0.1) -> float:
    """Classification weight per labelled point, ``alpha = factor * N_total / N_labelled``
    (sec. 3.1.2; the authors' code uses factor 0.1: alpha = 50 for N = 100 of 50,000)."""
    if n_labelled <= 0 or n_total <= 0:
        raise ValueError(f"n_total and n_labelled must be positive, got {n_total}, {n_labelled}")
    return factor * n_total / n_labelled


Weighting = Literal["paper", "mean"]


def m2_objective(model: M2, xl: torch.Tensor, yl: torch.Tensor, xu: torch.Tensor | None,
                 n_labelled: int | torch.Tensor, n_unlabelled: int | torch.Tensor,
                 alpha: float | torch.Tensor, weighting: Weighting = "paper",
                 labelled_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """Minibatch estimate of ``J^alpha`` (eq. 9) per run. The set sizes and ``alpha`` are
    numbers, or ``[R]`` tensors when stacked runs have different label counts.

    ``weighting="paper"`` (eq. 9): each sum is rescaled by (set size / batch size), so it is
    unbiased for the full-data sums, and the total is divided by ``n_labelled + n_unlabelled``
    (it reads as a per-point bound); a labelled point's bound then weighs as much as an
    unlabelled point's, and the classification term ``alpha * mean log q(y|x)`` is ``alpha *
    n_labelled / (n_labelled + n_unlabelled)`` (0.1 with the paper's alpha) of the data term.
    ``weighting="mean"`` (a deviation most reimplementations make): ``mean L + mean U + alpha *
    mean(-log q)`` over the minibatch, i.e. the labelled terms weigh as much as the whole
    unlabelled term, ``N_u / N_l`` times their weight in eq. 9. ``labelled_weight`` (lambda,
    "mean" only) scales the labelled terms: ``lambda * mean(L + alpha log q) + mean U``;
    lambda = 1 is the plain minibatch mean, lambda = N_l / N_u gives eq. 9's ratio of labelled
    to unlabelled terms (up to the overall 1/N scale): lambda interpolates between the two.

    ``xl [R, Bl, D]``, ``yl [R, Bl]``, ``xu [R, Bu, D]`` or None (fully labelled training).
    Returns ``loss`` (to minimise, ``[R]``), and the ``labelled``, ``unlabelled`` and
    ``log_qy`` batch means for logging.
    """
    if weighting not in ("paper", "mean"):
        raise ValueError(f"weighting must be 'paper' or 'mean', got {weighting!r}")
    if not labelled_weight > 0 or (weighting == "paper" and labelled_weight != 1.0):
        raise ValueError(f"labelled_weight must be > 0, and 1.0 with weighting='paper' (eq. 9 fixes "
                         f"it), got {labelled_weight!r} with {weighting!r}")
    lb = model.labelled_bound(xl, yl)
    logits_l = model.classify(xl)
    log_qy = -F.cross_entropy(logits_l.flatten(0, 1), yl.flatten(), reduction="none").view_as(lb)
    alpha = torch.as_tensor(alpha, dtype=lb.dtype, device=lb.device)
    alpha = alpha.view(-1, 1) if alpha.ndim else alpha
    j = _weigh(lb + alpha * log_qy, n_labelled, weighting, labelled_weight)
    out = {"labelled": lb.mean(1).detach(), "log_qy": log_qy.mean(1).detach()}
    if xu is not None and xu.shape[1] > 0:
        ub = model.unlabelled_bound(xu)
        j = j + _weigh(ub, n_unlabelled, weighting)
        out["unlabelled"] = ub.mean(1).detach()
    out["loss"] = -_per_point(j, n_labelled, n_unlabelled, weighting)
    return out


def _weigh(values: torch.Tensor, set_size: int | torch.Tensor, weighting: Weighting,
           weight: float = 1.0) -> torch.Tensor:
    """One sum of :func:`m2_objective` per run from its per-point values ``[R, B]``: eq. 9's
    unbiased estimate ``(set size / B) * sum`` ("paper"), or ``weight * mean`` ("mean")."""
    if weighting == "mean":
        return weight * values.mean(1)
    return (set_size / values.shape[1]) * values.sum(1)


def _per_point(j: torch.Tensor, n_labelled: int | torch.Tensor, n_unlabelled: int | torch.Tensor,
               weighting: Weighting) -> torch.Tensor:
    """Eq. 9's total divided by ``n_labelled + n_unlabelled`` ("paper"); "mean" is per point already."""
    return j if weighting == "mean" else j / (n_labelled + n_unlabelled)


# --------------------------------------------------------------------------- data helpers
def labelled_subsets(labels: torch.Tensor, n_labelled: int, seeds: Sequence[int],
                     n_classes: int = 10) -> torch.Tensor:
    """``[R, n_labelled]`` indices: for each seed a balanced subset, ``n_labelled/n_classes`` per
    class (paper sec. 4.2), drawn with :func:`common.data.balanced_subset`."""
    from .data import balanced_subset

    if n_labelled % n_classes:
        raise ValueError(f"n_labelled={n_labelled} is not a multiple of n_classes={n_classes}")
    return torch.stack([balanced_subset(labels, n_labelled // n_classes, int(s)) for s in seeds])


def select_active_dims(mu: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """Indices of latent dims whose posterior mean varies over the data, ``std > threshold``
    (the authors' rule for M1 features feeding M2). ``mu [N, Z]`` -> long ``[Z']``."""
    if mu.ndim != 2:
        raise ValueError(f"mu must be [N, Z], got shape {tuple(mu.shape)}")
    return torch.nonzero(mu.std(0) > threshold, as_tuple=False).flatten()


def standard_normal_grid(n: int) -> torch.Tensor:
    """``Phi^-1((i + 0.5) / n)`` for ``i < n``: evenly spaced quantiles of N(0, 1)."""
    p = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return (math.sqrt(2.0) * torch.special.erfinv(2 * p - 1)).float()


class Binariser:
    """Dynamic binarisation (fresh Bernoulli sample per minibatch) or a no-op for real inputs."""

    def __init__(self, mode: Literal["dynamic", "none"]) -> None:
        if mode not in ("dynamic", "none"):
            raise ValueError(f"binarise must be 'dynamic' or 'none', got {mode!r}")
        self.mode = mode

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.bernoulli(x) if self.mode == "dynamic" else x


# --------------------------------------------------------------------------- training state
@dataclass
class History:
    """Per-epoch rows (loss per run, evaluation results), NaN reverts, and epoch timing."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    reverts: list[dict[str, Any]] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    epoch_samples: list[int] = field(default_factory=list)

    def timing(self) -> dict[str, float]:
        """:meth:`common.training.EpochLog.summary` of the epochs so far (resumed ones included)."""
        log = EpochLog()
        log.seconds, log.samples = list(self.epoch_seconds), list(self.epoch_samples)
        return log.summary()


class Guard:
    """NaN/divergence guard per run: keeps the last good parameters and optimiser state, and on
    a non-finite epoch loss puts back the failing runs' slices (what the authors did), after
    ``max_reverts`` reverts of one run raises :class:`NonFiniteError`."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, max_reverts: int = 5) -> None:
        self.model, self.opt, self.max_reverts = model, opt, max_reverts
        self.counts: dict[int, int] = {}
        self.snapshot()

    def snapshot(self) -> None:
        self.good_params = [p.detach().clone() for p in self.model.parameters()]
        self.good_opt = copy.deepcopy(self.opt.state_dict())

    def check(self, per_run_loss: torch.Tensor, epoch: int, history: History) -> bool:
        """True when all runs are finite (and then take a snapshot); else revert bad runs."""
        finite = torch.isfinite(per_run_loss)
        params_ok = torch.stack([torch.isfinite(p.detach()).flatten(1).all(1)
                                 for p in self.model.parameters()]).all(0)
        ok = finite & params_ok
        if bool(ok.all()):
            self.snapshot()
            return True
        bad = torch.nonzero(~ok).flatten().tolist()
        with torch.no_grad():
            for p, g in zip(self.model.parameters(), self.good_params):
                p[bad] = g[bad]
            state = self.opt.state
            good_state = self.good_opt["state"]
            for i, p in enumerate(self.model.parameters()):
                if p in state and i in good_state:
                    for key in ("exp_avg", "exp_avg_sq"):
                        if key in state[p]:
                            state[p][key][bad] = good_state[i][key][bad].to(p.device)
        for r in bad:
            self.counts[r] = self.counts.get(r, 0) + 1
            history.reverts.append({"epoch": epoch, "run": r})
            if self.counts[r] > self.max_reverts:
                raise NonFiniteError(f"run {r} diverged {self.counts[r]} times (last at epoch "
                                     f"{epoch}); stopped. Lower the learning rate.")
        return False


def _rng_state(device: torch.device) -> dict[str, Any]:
    s = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        s["cuda"] = torch.cuda.get_rng_state(device)
    return s


def _set_rng_state(s: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(s["cpu"])
    if device.type == "cuda" and "cuda" in s:
        torch.cuda.set_rng_state(s["cuda"], device)


def code_hash() -> str:
    """Digest of the source of this module and of what it imports
    (:func:`common.runtime.code_files`): a checkpoint written by other code is never resumed."""
    return file_digest(code_files("kingma"))


class Trainer:
    """Epoch loop shared by M1 and M2: Adam, per-epoch NaN guard, checkpoint/resume, timing,
    an ``evaluate(epoch)`` callback every ``eval_every`` epochs.

    A checkpoint resumes only the run it belongs to (:meth:`_try_resume`): the same settings and
    code (``tag``) and no more epochs than :meth:`run` is asked for."""

    def __init__(self, model: nn.Module, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 checkpoint: str | Path | None = None, checkpoint_every: int = 50,
                 tag: dict[str, Any] | None = None, fused: bool | None = None) -> None:
        self.model = model
        # fused Adam: one kernel for all parameters (elementwise, so still per run), on GPUs and
        # with torch's fused CPU kernel (tested to agree with the loop; 1.15x per M2 step at 3
        # stacked runs of 100 + 100 in bf16 on a 2-core Xeon, paired); ``fused=False``: the loop
        self.opt = torch.optim.Adam(model.parameters(), lr=lr, betas=betas,
                                    fused=True if fused is None else fused)
        self.history = History()
        self.epoch = 0
        self.guard = Guard(model, self.opt)
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.checkpoint_every = checkpoint_every
        self.tag = {**dict(tag or {}), "code": code_hash()}
        self.resumed_from = None

    def _try_resume(self, epochs: int) -> None:
        """Load the checkpoint if it belongs to this run: the same ``tag`` (settings and code)
        and at most ``epochs`` epochs trained (fewer: an earlier segment of this run, resumed).
        Any other (other settings or code, or trained longer than asked, e.g. ``epochs=3``
        then ``epochs=1``) is not used: training starts from scratch, says so, and overwrites
        it at its first save; a shorter run never reports a longer-trained model."""
        if self.checkpoint is None:
            return
        state = load_checkpoint(self.checkpoint)
        if state is None:
            return
        why = ("a run of other settings or code" if state.get("tag") != self.tag else
               f"{state['epoch']} trained epochs, more than the {epochs} asked"
               if state["epoch"] > epochs else None)
        if why:
            print(f"checkpoint {show_path(self.checkpoint)} holds {why}: not used; training from "
                  f"scratch (this run overwrites it when it saves)")
            return
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.history = History(**state["history"])
        self.epoch = state["epoch"]
        dev = next(self.model.parameters()).device
        _set_rng_state(state["rng"], dev)
        self.guard.snapshot()
        self.resumed_from = self.epoch

    def save(self) -> None:
        if self.checkpoint is None:
            return
        dev = next(self.model.parameters()).device
        save_checkpoint(self.checkpoint, {"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                                          "history": asdict(self.history), "epoch": self.epoch,
                                          "rng": _rng_state(dev), "tag": self.tag})

    def run(self, epochs: int, step_batches: Callable[[int], tuple[torch.Tensor, int]],
            evaluate: Callable[[int], dict[str, Any]] | None = None, eval_every: int = 1,
            desc: str = "epochs") -> History:
        """Train until ``epochs``. ``step_batches(epoch)`` runs one epoch of optimiser steps and
        returns (summed per-run loss ``[R]``, samples seen). When the time segment
        (:func:`common.training.start_segment`) is over before an epoch, saves the checkpoint
        and raises :class:`common.training.SegmentUnfinished`: run again to resume."""
        dev = next(self.model.parameters()).device
        if self.epoch == 0:
            self._try_resume(epochs)
        first = self.epoch + 1
        for epoch in progress(range(first, epochs + 1), desc, total=epochs - self.epoch):
            if segment_over() and epoch > first:   # at least one epoch per segment: progress
                self.save()
                where = (f"saved to {self.checkpoint}; run the same command again to resume"
                         if self.checkpoint else "NOT saved (no checkpoint path): progress is lost")
                raise SegmentUnfinished(f"{desc}: the time segment ran out after epoch {self.epoch} "
                                        f"of {epochs}; checkpoint {where}")
            watch = Stopwatch(dev)
            self.model.train()
            loss, n = step_batches(epoch)
            self.history.epoch_seconds.append(watch.elapsed())
            self.history.epoch_samples.append(n)
            ok = self.guard.check(loss, epoch, self.history)
            row: dict[str, Any] = {"epoch": epoch, "loss": loss.tolist(), "finite": ok}
            if evaluate is not None and (epoch % eval_every == 0 or epoch == epochs):
                self.model.eval()
                with torch.no_grad():
                    row.update(evaluate(epoch))
            self.history.rows.append(row)
            self.epoch = epoch
            if self.checkpoint is not None and (epoch % self.checkpoint_every == 0 or epoch == epochs):
                self.save()
        return self.history


# --------------------------------------------------------------------------- M1 training
@torch.no_grad()
def m1_elbo(model: M1, x: torch.Tensor, batch: int = 5000, binarise: bool = True,
            seed: int = 0) -> torch.Tensor:
    """Per-run mean ELBO (nats) over ``x [N, D]`` with a seeded binarisation: ``[R]``."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    total = torch.zeros(model.runs, device=x.device)
    for lo in range(0, len(x), batch):
        xb = x[lo:lo + batch]
        if binarise:
            xb = torch.bernoulli(xb, generator=g)
        total += model.elbo(xb.expand(model.runs, *xb.shape)).sum(1)
    return total / len(x)


@torch.no_grad()
def m1_posterior(model: M1, x: torch.Tensor, batch: int = 10000) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and log-variance of ``q(z|x)`` for grey-level ``x [N, D]``: ``[R, N, Z]`` each."""
    mus, lvs = [], []
    for lo in range(0, len(x), batch):
        xb = x[lo:lo + batch]
        mu, lv = model.encode(xb.expand(model.runs, *xb.shape))
        mus.append(mu)
        lvs.append(lv)
    return torch.cat(mus, 1), torch.cat(lvs, 1)


def train_m1(model: M1, x_train: torch.Tensor, *, epochs: int, batch_size: int = 100,
             lr: float = 3e-4, x_valid: torch.Tensor | None = None, eval_every: int = 1,
             binarise: Literal["dynamic", "none"] = "dynamic", checkpoint: str | Path | None = None,
             desc: str = "M1") -> Trainer:
    """Train stacked M1 runs on ``x_train [N, D]`` (on the model's device) with Adam; every run
    sees its own minibatch order. History rows hold per-run train/valid ELBO."""
    dev = x_train.device
    R, N = model.runs, len(x_train)
    nb = N // batch_size
    binar = Binariser(binarise)
    tag = {"kind": "M1", "batch": batch_size, "lr": lr, "N": N, "x_dim": model.x_dim,
           "seeds": model.seeds, "z": model.z_dim, "hidden": list(model.hidden_sizes),
           "likelihood": model.likelihood, "binarise": binarise}
    tr = Trainer(model, lr, checkpoint=checkpoint, tag=tag)

    def step_batches(epoch: int) -> tuple[torch.Tensor, int]:
        order = torch.argsort(torch.rand(R, N, device=dev), 1)
        acc = torch.zeros(R, device=dev)
        for b in range(nb):
            xb = binar(x_train[order[:, b * batch_size:(b + 1) * batch_size]])
            elbo = model.elbo(xb)                      # [R, B]
            loss = -elbo.mean(1)
            tr.opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            tr.opt.step()
            acc += loss.detach()
        return acc / nb, nb * batch_size * R

    def evaluate(epoch: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if x_valid is not None:
            out["valid_elbo"] = m1_elbo(model, x_valid, binarise=binarise == "dynamic",
                                        seed=epoch).tolist()
        return out

    tr.run(epochs, step_batches, evaluate, eval_every, desc)
    return tr


# --------------------------------------------------------------------------- M2 training
@torch.no_grad()
def classifier_stats(model: M2, x: torch.Tensor, y: torch.Tensor, batch: int = 10000) -> dict[str, list[float]]:
    """Per run, over ``x [N, D]`` (or ``[R, N, D]``): the accuracy of ``argmax q(y|x)``, the mean
    entropy of ``q(y|x)`` in nats (``ln K`` = uniform, 0 = certain) and the share of points
    assigned to the most frequent class (1/K when balanced, 1 when collapsed onto one)."""
    correct = torch.zeros(model.runs, device=x.device)
    entropy = torch.zeros(model.runs, device=x.device)
    counts = torch.zeros(model.runs, model.n_classes, device=x.device)
    n = x.shape[-2]
    for lo in range(0, n, batch):
        xb = x[..., lo:lo + batch, :]
        if xb.ndim == 2:
            xb = xb.expand(model.runs, *xb.shape)
        logits = model.classify(xb)
        pred = logits.argmax(-1)
        correct += (pred == y[lo:lo + batch]).float().sum(1)
        entropy += entropy_from_logits(logits).sum(1)
        counts += F.one_hot(pred, model.n_classes).float().sum(1)
    return {"accuracy": (correct / n).tolist(), "entropy": (entropy / n).tolist(),
            "top_class_share": (counts.max(1).values / n).tolist()}


def classifier_gradient_shares(model: M2, xl: torch.Tensor, yl: torch.Tensor, xu: torch.Tensor,
                               n_labelled: int, n_unlabelled: int, alpha: float,
                               weighting: Weighting = "paper", labelled_weight: float = 1.0,
                               run: int = 0) -> dict[str, float]:
    """Which term of :func:`m2_objective` moves the classifier ``q(y|x)`` (run ``run``), on one
    minibatch: the gradient, w.r.t. the classifier's parameters, of the classification term
    ``alpha E[log q(y|x)]`` (labelled) and of the unlabelled bound ``-U(x)`` (eq. 7, through
    ``q(y|x)``'s weights and its entropy), each with the weights ``weighting`` gives it
    (``labelled_weight``: "mean" only). ``L(x, y)`` does not touch the classifier, so the two
    gradients add up to the objective's. Returns their norms, the classification term's share
    ``|g_cls| / (|g_cls| + |g_U|)`` and the cosine between them (negative: they pull apart)."""
    params = list(model.classifier.parameters())
    log_qy = -F.cross_entropy(model.classify(xl)[run], yl[run], reduction="none")
    ub = model.unlabelled_bound(xu)[run]
    terms = (_per_point(_weigh(alpha * log_qy[None], n_labelled, weighting, labelled_weight),
                        n_labelled, n_unlabelled, weighting)[0],
             _per_point(_weigh(ub[None], n_unlabelled, weighting), n_labelled, n_unlabelled, weighting)[0])
    g_cls, g_u = (torch.cat([g.flatten() for g in torch.autograd.grad(t, params, retain_graph=True)])
                  for t in terms)
    a, b = float(g_cls.norm()), float(g_u.norm())
    return {"norm_classification": a, "norm_unlabelled": b, "classification_share": a / max(a + b, 1e-30),
            "cosine": float(F.cosine_similarity(g_cls, g_u, dim=0))}


def classifier_accuracy(model: M2, x: torch.Tensor, y: torch.Tensor, batch: int = 10000) -> torch.Tensor:
    """Per-run accuracy of ``argmax q(y|x)`` on ``x [N, D]`` (or ``[R, N, D]``): ``[R]``."""
    return torch.tensor(classifier_stats(model, x, y, batch)["accuracy"], device=x.device)


@dataclass
class M2Data:
    """Everything an M2 run needs, resident on the device.

    ``x`` ``[N, D]`` (or ``[R, N, D]``, one per run) the training inputs (pixels, or M1
    posterior means); ``x_logvar`` optional M1 posterior log-variances of the same shape: then
    every minibatch is a fresh sample ``x + exp(logvar/2) * eps`` (M1+M2), not binarised;
    ``labelled`` the indices into ``x`` of each run's labelled set (``y`` are the labels of
    ``x``): an ``[R, N_l]`` tensor, or one 1-D tensor per run when the runs have different
    label counts (runs of several N stacked into one model).
    The unlabelled pool of run r is every training point not in its labelled set.
    """

    x: torch.Tensor
    y: torch.Tensor
    labelled: torch.Tensor | Sequence[torch.Tensor]
    x_logvar: torch.Tensor | None = None
    use_unlabelled: bool = True


def pad_index_sets(sets: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """One row per run from index sets of different sizes: ``[R, max size]`` (each row padded
    by repeating its own set; padding is never drawn) and the sizes ``[R]``."""
    sizes = torch.tensor([len(s) for s in sets], device=sets[0].device)
    if int(sizes.min()) < 1:
        raise ValueError("every run needs a non-empty index set")
    width = int(sizes.max())
    cols = torch.arange(width, device=sizes.device)
    rows = [s[cols % len(s)] for s in sets]
    return torch.stack(rows), sizes


def ragged_permutation(rows: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Row ``r`` of the result starts with a uniformly random permutation of
    ``rows[r, :sizes[r]]`` (the rest is padding): one ``argsort`` for all runs."""
    keys = torch.rand(rows.shape, device=rows.device)
    keys[torch.arange(rows.shape[1], device=rows.device) >= sizes[:, None]] = 2.0
    return torch.gather(rows, 1, torch.argsort(keys, 1))


def step_objective(model: M2, n_labelled: int | torch.Tensor, n_unlabelled: int | torch.Tensor,
                   alpha: float | torch.Tensor, weighting: Weighting = "paper", amp: bool = False,
                   compile_mode: str | None = None, labelled_weight: float = 1.0
                   ) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], dict[str, torch.Tensor]]:
    """:func:`m2_objective` of ``(xl, yl, xu)`` with the set sizes and alpha fixed, optionally
    in bfloat16 autocast (``amp``) and through ``torch.compile(mode=compile_mode)`` (fixed
    minibatch shapes, so no dynamic-shape recompiles). With "reduce-overhead" (CUDA graphs) each
    call starts a new graph step, so call it once per optimiser step and use its outputs before
    the next call."""
    dev_type = next(model.parameters()).device.type

    def objective(xl: torch.Tensor, yl: torch.Tensor, xu: torch.Tensor | None) -> dict[str, torch.Tensor]:
        with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=amp):
            return m2_objective(model, xl, yl, xu, n_labelled, n_unlabelled, alpha, weighting,
                                labelled_weight)

    if not compile_mode:
        return objective
    compiled = torch.compile(objective, mode=compile_mode, dynamic=False)
    if compile_mode != "reduce-overhead":
        return compiled

    def graph_step(xl: torch.Tensor, yl: torch.Tensor, xu: torch.Tensor | None) -> dict[str, torch.Tensor]:
        torch.compiler.cudagraph_mark_step_begin()   # earlier outputs may be overwritten now
        return compiled(xl, yl, xu)

    return graph_step


def minibatch_shape(n_batches: int, n_labelled: int, n_pool: int, labelled_per_batch: int | None = None,
                    unlabelled_per_batch: int | None = None) -> tuple[int, int]:
    """(labelled, unlabelled) points per run in an M2 minibatch: ``labelled_per_batch`` or
    ``ceil(n_labelled / n_batches)`` (the largest labelled set of a stacked group), and
    ``n_pool // n_batches`` (the smallest unlabelled pool), capped by ``unlabelled_per_batch``."""
    bu = n_pool // n_batches
    return labelled_per_batch or -(-n_labelled // n_batches), min(unlabelled_per_batch or bu, bu)


def train_m2(model: M2, data: M2Data, *, epochs: int, n_batches: int,
             labelled_per_batch: int | None = None, unlabelled_per_batch: int | None = None,
             lr: float = 3e-4,
             betas: tuple[float, float] = (0.9, 0.999), alpha_factor: float = 0.1,
             alpha: float | None = None,
             binarise: Literal["dynamic", "none"] = "dynamic", weighting: Weighting = "paper",
             labelled_weight: float = 1.0, lr_schedule: str = "constant", warmup_steps: int = 0,
             amp: bool = False, compile_mode: str | None = None,
             evaluate: Callable[[int], dict[str, Any]] | None = None, eval_every: int = 1,
             checkpoint: str | Path | None = None, desc: str = "M2") -> Trainer:
    """Train stacked M2 runs (objective eq. 9) with Adam.

    Each epoch has ``n_batches`` minibatches; each holds ``N_u / n_batches`` unlabelled points
    (every unlabelled point once per epoch) and ``labelled_per_batch`` labelled points (default
    ``ceil(N_l / n_batches)``), the labelled set cycled through in a fresh order per epoch.
    Paper: N=100 -> 100 batches of 1 labelled + 499 unlabelled; other N -> 200 batches.
    ``unlabelled_per_batch`` overrides ``N_u / n_batches``: then an "epoch" visits
    ``n_batches * unlabelled_per_batch`` unlabelled points of a fresh permutation (a partial
    pass when that is fewer than ``N_u``; used by the reduced CPU profile).

    Runs with different label counts (``data.labelled`` a list) share the minibatch shape:
    ``labelled_per_batch`` defaults to the largest ``ceil(N_l / n_batches)`` (smaller sets are
    cycled more often: same objective in expectation), the unlabelled batch to the smallest
    pool's share; each run keeps its own alpha and set sizes in :func:`m2_objective`, whose
    ``weighting`` ("paper": eq. 9, or "mean" with ``labelled_weight``) is used. ``alpha``, when
    given, is every run's classification weight instead of ``alpha_factor * N_total / N_l``
    (:func:`alpha_weight`): with "mean" weighting the classification term is a minibatch mean,
    so the paper's division by N_l has no counterpart there.

    ``lr_schedule`` "cosine" or "wsd" (:func:`common.training.lr_factor`): the rate decays to 0
    over all ``epochs * n_batches`` steps, after a linear warm-up over ``warmup_steps`` (the
    paper: constant).

    ``amp``: the networks' matmuls in bfloat16 autocast (bounds, KL and likelihood sums stay
    float32; agreement with float32 is tested). ``compile_mode``: the objective's forward and
    backward through ``torch.compile`` with that mode ("reduce-overhead" captures the step's
    hundreds of small kernels as a CUDA graph on a GPU; on a CPU it compiles without graphs).
    """
    check_lr_schedule(lr_schedule)
    dev = data.x.device
    R = model.runs
    sets = list(data.labelled)
    if len(sets) != R:
        raise ValueError(f"labelled has {len(sets)} rows, the model {R} runs")
    lab, n_l = pad_index_sets(sets)
    N = data.x.shape[-2]
    stacked_x = data.x.ndim == 3
    # unlabelled pool per run: all indices not in its labelled set
    mask = torch.ones(R, N, dtype=torch.bool, device=dev)
    mask[torch.arange(R, device=dev)[:, None], lab] = False
    pool, n_u = (pad_index_sets([torch.nonzero(m).flatten() for m in mask]) if data.use_unlabelled
                 else (None, torch.zeros_like(n_l)))
    bl, bu = minibatch_shape(n_batches, int(n_l.max()), int(n_u.min()), labelled_per_batch,
                             unlabelled_per_batch)
    if alpha is not None and not alpha >= 0:
        raise ValueError(f"alpha must be >= 0 or None, got {alpha!r}")
    alphas = ([float(alpha)] * R if alpha is not None else
              [alpha_weight(int(a + b), int(a), alpha_factor) for a, b in zip(n_l, n_u)])
    same = int(n_l.min()) == int(n_l.max()) and int(n_u.min()) == int(n_u.max())
    # plain numbers when all runs share N (as before), else per-run [R] tensors
    n_l_obj, n_u_obj, alpha_obj = ((int(n_l[0]), int(n_u[0]), alphas[0]) if same else
                                   (n_l.float(), n_u.float(), torch.tensor(alphas, device=dev)))
    binar = Binariser(binarise)
    ar = torch.arange(R, device=dev)[:, None]
    tag = {"kind": "M2", "n_l": n_l.tolist(), "n_batches": n_batches, "bl": bl, "bu": bu, "lr": lr,
           "N": N, "seeds": model.seeds, "z": model.z_dim, "hidden": list(model.hidden_sizes),
           "alpha_factor": alpha_factor, "x_dim": model.x_dim, "likelihood": model.likelihood,
           "weighting": weighting, "lr_schedule": lr_schedule, "warmup_steps": warmup_steps,
           **({"labelled_weight": labelled_weight} if labelled_weight != 1.0 else {}),
           **({"alpha": float(alpha)} if alpha is not None else {}),
           **({"amp": "bfloat16"} if amp else {}),
           **({"epochs": epochs} if lr_schedule != "constant" else {})}   # cosine: the length is the run
    tr = Trainer(model, lr, betas, checkpoint=checkpoint, tag=tag)
    tr.alpha = alphas[0] if same else alphas
    total_steps = epochs * n_batches

    objective = step_objective(model, n_l_obj, n_u_obj, alpha_obj, weighting, amp, compile_mode,
                               labelled_weight)

    def gather(idx: torch.Tensor) -> torch.Tensor:
        xb = data.x[ar, idx] if stacked_x else data.x[idx]
        if data.x_logvar is not None:  # M1+M2: a fresh sample of the M1 latent per minibatch
            lv = data.x_logvar[ar, idx] if data.x_logvar.ndim == 3 else data.x_logvar[idx]
            return xb + torch.exp(0.5 * lv) * torch.randn_like(xb)
        return binar(xb)

    def step_batches(epoch: int) -> tuple[torch.Tensor, int]:
        lidx_all = ragged_permutation(lab, n_l)
        if pool is not None:
            uidx_all = ragged_permutation(pool, n_u)
        acc = torch.zeros(R, device=dev)
        for b in range(n_batches):
            pos = (b * bl + torch.arange(bl, device=dev))[None] % n_l[:, None]      # [R, bl]
            lidx = torch.gather(lidx_all, 1, pos)
            xl, yl = gather(lidx), data.y[lidx]
            xu = gather(uidx_all[:, b * bu:(b + 1) * bu]) if pool is not None else None
            out = objective(xl, yl, xu)
            if lr_schedule != "constant" or warmup_steps:
                k = (epoch - 1) * n_batches + b
                for group in tr.opt.param_groups:
                    group["lr"] = lr * lr_factor(lr_schedule, k, k / total_steps, warmup_steps)
            tr.opt.zero_grad(set_to_none=True)
            out["loss"].sum().backward()
            tr.opt.step()
            acc += out["loss"].detach()
        return acc / n_batches, n_batches * (bu + bl) * R

    tr.run(epochs, step_batches, evaluate, eval_every, desc)
    return tr


# --------------------------------------------------------------------------- experiments
@torch.no_grad()
def test_error_percent(model: M2, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Per-run test error (%) of ``argmax q(y|x)``."""
    return [round(100.0 * (1.0 - a), 3) for a in classifier_accuracy(model, x, y).tolist()]


def m2_groups(x_train: torch.Tensor, y_train: torch.Tensor, x_valid: torch.Tensor,
              y_valid: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, *,
              n_labelled: Sequence[int | None], seeds: Sequence[int], epochs: int, n_batches: int,
              labelled_per_batch: int | None, hidden: Sequence[int], z_dim: int = 50,
              unlabelled_per_batch: int | None = None, use_unlabelled: bool = True,
              lr: float = 3e-4, alpha_factor: float = 0.1, alpha: float | None = None,
              eval_every: int = 1,
              likelihood: Likelihood = "bernoulli", x_logvar: torch.Tensor | None = None,
              weighting: Weighting = "paper", labelled_weight: float = 1.0,
              lr_schedule: str = "constant", warmup_steps: int = 0, amp: bool = False,
              compile_mode: str | None = None, checkpoint: str | Path | None = None,
              desc: str = "M2") -> dict[int | None, dict[str, Any]]:
    """Train M2 for every label count in ``n_labelled`` and every seed as *one* stacked model
    (``len(n_labelled) * len(seeds)`` runs, N-major; a balanced label draw per (N, seed)) and
    report, per N, the validation-accuracy curves, test error (%) of its runs, and the timing of
    the whole stacked model (``stacked_with`` lists the N that shared it).
    ``None`` in ``n_labelled`` (alone) trains a fully labelled M2 (all labels, no U(x) term).

    Pixels are binarised dynamically; with ``x_logvar`` (M1+M2) inputs are M1 posterior samples
    for training and posterior means for validation/test.
    """
    dev = x_train.device
    ns = list(n_labelled)
    if None in ns and len(ns) > 1:
        raise ValueError("a fully labelled M2 (n_labelled None) cannot be stacked with other N")
    # this group's noise (init is per seed anyway; minibatch order, binarisation, z samples) does
    # not depend on what ran before it in the notebook
    torch.manual_seed(1_000_003 * sum(n or 0 for n in ns) + 7919 * int(seeds[0]) + z_dim)
    if ns == [None]:  # fully labelled: every training point, no unlabelled term
        n_all = x_train.shape[-2]
        sets = [torch.arange(n_all, device=dev)] * len(seeds)
        use_unlabelled = False
    else:
        sets = [row.to(dev) for n in ns
                for row in labelled_subsets(y_train.cpu(), n, seeds, int(y_train.max()) + 1)]
    run_seeds = [int(s) for s in seeds] * len(ns)
    model = M2(x_train.shape[-1], z_dim, hidden, int(y_train.max()) + 1, run_seeds, likelihood).to(dev)
    data = M2Data(x=x_train, y=y_train, labelled=sets, x_logvar=x_logvar,
                  use_unlabelled=use_unlabelled)
    tr = train_m2(model, data, epochs=epochs, n_batches=n_batches,
                  labelled_per_batch=labelled_per_batch, unlabelled_per_batch=unlabelled_per_batch,
                  lr=lr, alpha_factor=alpha_factor, alpha=alpha, weighting=weighting,
                  labelled_weight=labelled_weight, lr_schedule=lr_schedule,
                  warmup_steps=warmup_steps, amp=amp, compile_mode=compile_mode,
                  binarise="none" if x_logvar is not None else "dynamic",
                  evaluate=lambda e: dict(zip(("valid_acc", "valid_entropy", "valid_top_share"),
                                              classifier_stats(model, x_valid, y_valid).values())),
                  eval_every=eval_every, checkpoint=checkpoint, desc=desc)
    rows = [r for r in tr.history.rows if "valid_acc" in r]
    test_error = test_error_percent(model, x_test, y_test)
    alphas = tr.alpha if isinstance(tr.alpha, list) else [tr.alpha] * model.runs
    timing = {**tr.history.timing(), **({"stacked_with": ns} if len(ns) > 1 else {})}
    out = {}
    for i, n in enumerate(ns):
        runs = list(range(i * len(seeds), (i + 1) * len(seeds)))
        out[n] = {
            "model": model,
            "runs": runs,
            "n_labelled": n if n is not None else len(sets[0]),
            "seeds": list(seeds),
            "alpha": alphas[runs[0]],
            "eval_epochs": [r["epoch"] for r in rows],
            "valid_acc": [[r["valid_acc"][j] for r in rows] for j in runs],
            # q(y|x) on the validation images: mean entropy (nats) and the largest class's share
            "valid_entropy": [[r["valid_entropy"][j] for r in rows] for j in runs],
            "valid_top_share": [[r["valid_top_share"][j] for r in rows] for j in runs],
            "test_error": [test_error[j] for j in runs],
            "reverts": [v for v in tr.history.reverts if v["run"] in runs],
            "resumed_from": tr.resumed_from,
            "timing": timing,
        }
    return out


def stackable(settings: Mapping[int, Any]) -> list[list[int]]:
    """Group label counts whose training settings (schedule, widths, ...) are equal: each group
    can train as one stacked model with :func:`m2_groups`. Order follows ``settings``."""
    groups: dict[Any, list[int]] = {}
    for n, value in settings.items():
        groups.setdefault(repr(value), []).append(n)
    return list(groups.values())


Schedule = tuple[int, int, int | None, int | None]
"""Per label count: (epochs, minibatches per epoch, labelled per minibatch or None for
``ceil(N_l / minibatches)``, unlabelled per minibatch or None for every unlabelled point once
per epoch); the arguments of :func:`train_m2` of those names."""


def alpha_for(alpha: float | Mapping[int, float] | None, n: int) -> float | None:
    """The classification weight of label count ``n``: ``alpha`` itself, or ``alpha[n]`` when it
    is a mapping ``{N: alpha}`` (a per-N alpha of the reduced profiles)."""
    if isinstance(alpha, Mapping):
        if n not in alpha:
            raise ValueError(f"alpha has no entry for N = {n} (has {sorted(alpha)})")
        return float(alpha[n])
    return alpha


def schedule_groups(schedule: Mapping[int, Schedule],
                    hidden: Sequence[int] | Callable[[int], Sequence[int]],
                    alpha: float | Mapping[int, float] | None = None,
                    ) -> list[tuple[list[int], Schedule, tuple[int, ...]]]:
    """The stacked models a ``schedule`` trains as: (label counts, their schedule, their hidden
    widths) for each group of N with equal schedule, widths (``hidden``, or ``hidden(N)``) and
    alpha (:func:`alpha_for`)."""
    def width(n: int) -> tuple[int, ...]:
        return tuple(hidden(n) if callable(hidden) else hidden)

    groups = stackable({n: (tuple(s), width(n), alpha_for(alpha, n)) for n, s in schedule.items()})
    return [(ns, tuple(schedule[ns[0]]), width(ns[0])) for ns in groups]  # type: ignore[misc]


def m2_schedule(x_train: torch.Tensor, y_train: torch.Tensor, x_valid: torch.Tensor,
                y_valid: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, *,
                schedule: Mapping[int, Schedule],
                hidden: Sequence[int] | Callable[[int], Sequence[int]],
                checkpoint: Callable[[str], str | Path | None] | None = None, desc: str = "M2",
                alpha: float | Mapping[int, float] | None = None,
                **kw: Any) -> dict[int, dict[str, Any]]:
    """Train M2 for every label count of ``schedule`` ``{N: Schedule}``: the N whose schedule,
    hidden widths (``hidden``, or ``hidden(N)``) and ``alpha`` (a number, ``{N: alpha}``, or None
    for the paper's :func:`alpha_weight`) are equal train as one stacked model
    (:func:`schedule_groups`, :func:`m2_groups`). ``checkpoint(tag)`` names the checkpoint of the group
    whose label counts joined by "_" are ``tag`` (e.g. "600_1000_3000"); ``kw`` goes to
    :func:`m2_groups` (seeds, z_dim, lr, alpha_factor, ...). Returns ``{N: results}`` in the
    order of ``schedule``."""
    res: dict[int, dict[str, Any]] = {}
    for ns, (epochs, n_batches, per_l, per_u), widths in schedule_groups(schedule, hidden, alpha):
        tag = "_".join(map(str, ns))
        res.update(m2_groups(x_train, y_train, x_valid, y_valid, x_test, y_test, n_labelled=ns,
                             epochs=epochs, n_batches=n_batches, labelled_per_batch=per_l,
                             unlabelled_per_batch=per_u, hidden=widths, alpha=alpha_for(alpha, ns[0]),
                             checkpoint=checkpoint(tag) if checkpoint else None,
                             desc=f"{desc} N={tag}", **kw))
    return {n: res[n] for n in schedule}


def schedule_cost(schedule: Mapping[int, Schedule], n_train: int, n_seeds: int, *,
                  hidden: Sequence[int] | Callable[[int], Sequence[int]], x_dim: int = 784,
                  z_dim: int = 50, steps: int = 3, device: str | None = None) -> list[dict[str, Any]]:
    """What an M2 ``schedule`` costs on this device: per stacked group (as :func:`m2_schedule`
    groups it, ``n_seeds`` runs per N), the measured seconds of one optimiser step of that
    minibatch shape (:func:`bench`: synthetic data, Bernoulli likelihood; a Gaussian one costs
    about the same) times the number of steps. A measured estimate, not a run: e.g. what the
    paper's 3000 epochs would take on a CPU."""
    rows = []
    for ns, (epochs, n_batches, per_l, per_u), widths in schedule_groups(schedule, hidden):
        bl, bu = minibatch_shape(n_batches, max(ns), n_train - max(ns), per_l, per_u)
        b = bench(runs=len(ns) * n_seeds, labelled=bl, batch=bl + bu, x_dim=x_dim,
                  hidden=widths, z_dim=z_dim, steps=steps, device=device)
        rows.append({"N": list(ns), "runs": b["runs"], "labelled": bl, "unlabelled": bu,
                     "step_seconds": b["step_seconds"], "steps": epochs * n_batches,
                     "hours": round(epochs * n_batches * b["step_seconds"] / 3600, 2)})
    return rows


def m2_group(*args: Any, n_labelled: int | None, **kw: Any) -> dict[str, Any]:
    """:func:`m2_groups` for one label count (``None``: fully labelled): that N's results."""
    return m2_groups(*args, n_labelled=[n_labelled], **kw)[n_labelled]


def feature_classifier_errors(f_train: torch.Tensor, y_train: torch.Tensor, labelled: torch.Tensor,
                              f_test: torch.Tensor, y_test: torch.Tensor, C: float = 10.0) -> list[float]:
    """Test error (%) of an RBF-kernel SVM (scikit-learn ``SVC``, ``gamma="scale"``) fitted on the
    labelled M1 features of each draw (``labelled [R, N_l]``): a purely supervised stand-in for
    the paper's transductive SVM (no unlabelled data is used by the classifier). Features are
    not standardised: that would blow up the near-constant inactive dimensions."""
    from sklearn.svm import SVC

    f_train, f_test = f_train.cpu().numpy(), f_test.cpu().numpy()
    y_train, y_test = y_train.cpu().numpy(), y_test.cpu().numpy()
    errs = []
    for idx in labelled.cpu().numpy():
        clf = SVC(C=C, kernel="rbf", gamma="scale").fit(f_train[idx], y_train[idx])
        errs.append(round(100.0 * float((clf.predict(f_test) != y_test).mean()), 3))
    return errs


@torch.no_grad()
def m1_manifold(model: M1, n: int, run: int = 0) -> torch.Tensor:
    """Decoded means on the ``n x n`` grid ``z = Phi^-1((i + 0.5) / n)`` of a 2-D M1: ``[n*n, D]``
    (rows: z2 from high to low, columns: z1 from low to high)."""
    if model.z_dim != 2:
        raise ValueError(f"m1_manifold needs z_dim=2, the model has {model.z_dim}")
    g = standard_normal_grid(n).to(next(model.parameters()).device)
    z = torch.stack(torch.meshgrid(g.flip(0), g, indexing="ij"), -1).reshape(-1, 2)[:, [1, 0]]
    return model.decode_mean(z.expand(model.runs, *z.shape))[run]


@torch.no_grad()
def m2_analogies(model: M2, x: torch.Tensor, y: torch.Tensor, run: int = 0) -> torch.Tensor:
    """Fig. 2 (analogies): ``z = E[q(z|x, y_true)]`` of each ``x [n, D]``, decoded with every label.
    Returns ``[n, K, D]``."""
    R, K = model.runs, model.n_classes
    mu, _ = model.encode(x.expand(R, *x.shape), y.expand(R, *y.shape))       # [R, n, Z]
    z = mu[:, :, None].expand(R, len(x), K, model.z_dim)
    labels = torch.arange(K, device=x.device).expand(R, len(x), K)
    out = model.decode_mean(z.reshape(R, -1, model.z_dim), labels.reshape(R, -1))
    return out[run].reshape(len(x), K, -1)


@torch.no_grad()
def m2_style_grid(model: M2, n: int, run: int = 0) -> torch.Tensor:
    """Fig. 1 (styles): for every label, decoded means over the ``n x n`` quantile grid of a
    2-D z. Returns ``[K, n*n, D]``."""
    if model.z_dim != 2:
        raise ValueError(f"m2_style_grid needs z_dim=2, the model has {model.z_dim}")
    dev = next(model.parameters()).device
    g = standard_normal_grid(n).to(dev)
    z = torch.stack(torch.meshgrid(g.flip(0), g, indexing="ij"), -1).reshape(-1, 2)[:, [1, 0]]
    K, R = model.n_classes, model.runs
    zz = z.repeat(K, 1)
    yy = torch.arange(K, device=dev).repeat_interleave(n * n)
    out = model.decode_mean(zz.expand(R, *zz.shape), yy.expand(R, *yy.shape))
    return out[run].reshape(K, n * n, -1)


# --------------------------------------------------------------------------- benchmark
def bench(runs: int = 1, n_batches: int = 100, batch: int = 500, x_dim: int = 784,
          hidden: int | Sequence[int] = 500, z_dim: int = 50, steps: int | None = None,
          device: str | None = None, labelled: int = 1, amp: bool = False,
          compile_mode: str | None = None) -> dict[str, Any]:
    """Time M2 optimiser steps (``labelled`` labelled + ``batch - labelled`` unlabelled points
    per run, K=10 marginalisation) on synthetic binary data; extrapolate to an epoch of
    ``n_batches`` steps. Defaults: the paper's N=100 minibatch (1 + 499). ``amp`` and
    ``compile_mode`` as in :func:`train_m2` (compilation happens in the untimed warm-up)."""
    from .runtime import get_device

    if not 0 < labelled < batch:
        raise ValueError(f"need 0 < labelled < batch, got labelled={labelled}, batch={batch}")
    dev = get_device(device)
    torch.manual_seed(0)
    widths = (hidden,) if isinstance(hidden, int) else tuple(hidden)
    model = M2(x_dim, z_dim, widths, seeds=list(range(runs))).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4, fused=True)
    x = (torch.rand(runs, batch, x_dim, device=dev) < 0.2).float()
    y = torch.randint(0, 10, (runs, labelled), device=dev)
    steps = steps or (10 if dev.type == "cpu" else 50)

    objective = step_objective(model, 100, 49_900, 50.0, amp=amp, compile_mode=compile_mode)

    def step() -> None:
        out = objective(x[:, :labelled], y, x[:, labelled:])
        opt.zero_grad(set_to_none=True)
        out["loss"].sum().backward()
        opt.step()

    dt = seconds_per_call(step, steps, dev)   # after 2 untimed steps (compilation happens there)
    return {"device": str(dev), "runs": runs, "batch": batch, "amp": amp, "compile": compile_mode,
            "step_seconds": round(dt, 5),
            "epoch_seconds": round(dt * n_batches, 3),
            "samples_per_second_all_runs": round(runs * batch / dt, 1),
            "threads": torch.get_num_threads()}


BENCH_VARIANTS: dict[str, dict[str, Any]] = {
    "eager": {}, "bf16": {"amp": True}, "compile": {"compile_mode": "reduce-overhead"}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m common.kingma", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="time an M2 epoch (100 steps of 500) on this device")
    b.add_argument("--runs", type=int, nargs="+", default=[1],
                   help="stacked runs to time, e.g. --runs 1 3 12")
    b.add_argument("--steps", type=int, default=None)
    b.add_argument("--device", default=None)
    b.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 is fastest on a shared, busy CPU)")
    b.add_argument("--variants", nargs="+", default=["eager"], choices=list(BENCH_VARIANTS),
                   help="step variants: eager float32, bfloat16 autocast, torch.compile")
    args = ap.parse_args(argv)
    from .runtime import get_device, set_threads

    set_threads(args.threads, get_device(args.device))   # $REPRO_THREADS overrides
    for r in args.runs:
        for v in args.variants:
            res = bench(runs=r, steps=args.steps, device=args.device, **BENCH_VARIANTS[v])
            print(f"variant={v} " + " ".join(f"{k}={x}" for k, x in res.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
