"""GANs and their VAE counterpart on 28x28 MNIST: DCGAN, conditional DCGAN, a conv VAE.

* Goodfellow et al. 2014 (arXiv:1406.2661): the minimax game, eq. (1),
  ``min_G max_D E_x[log D(x)] + E_z[log(1 - D(G(z)))]``, Algorithm 1 (``k`` D steps per G step)
  and the non-saturating generator loss ``-log D(G(z))`` (section 3).
* Radford et al. 2016 (DCGAN, arXiv:1511.06434): uniform noise, transposed convolutions,
  batch norm, ReLU in G with a tanh output, LeakyReLU(0.2) in D, Adam(2e-4, beta1 0.5),
  weights ~ N(0, 0.02).
* Mirza & Osindero 2014 (arXiv:1411.1784): the label ``y`` is fed to both G and D, eq. (2).
* Kingma & Welling 2014 (arXiv:1312.6114): the VAE bound, eq. (3)/(10), and the
  reparameterisation trick, eq. (4); the densities come from :mod:`common.kingma`.

Images: generators return ``[N, 1, 28, 28]`` in [-1, 1] (tanh). The VAE's decoder is the same
network as G with its tanh replaced by Bernoulli logits; :meth:`ConvVAE.sample` returns the
decoder mean rescaled to [-1, 1] so that every model hands the evaluation the same range.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .kingma import bernoulli_log_likelihood, gaussian_kl, reparameterise
from .runtime import code_files, dryrun_of, flatten_keeping_format, settings_key
from .stats import mean_interval
from .training import (EpochLog, SegmentUnfinished, check_finite, load_checkpoint, save_checkpoint,
                       segment_over)

GLoss = Literal["non_saturating", "saturating"]
IMAGE_SHAPE = (1, 28, 28)


# --------------------------------------------------------------------------- noise and labels
def sample_noise(n: int, z_dim: int, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu", kind: Literal["uniform", "normal"] = "uniform"
                 ) -> torch.Tensor:
    """``z ~ U(-1, 1)^z_dim`` (DCGAN) or ``N(0, I)`` (the VAE prior), drawn on ``device``."""
    if kind == "uniform":
        return torch.rand(n, z_dim, generator=generator, device=device) * 2 - 1
    if kind == "normal":
        return torch.randn(n, z_dim, generator=generator, device=device)
    raise ValueError(f"kind must be 'uniform' or 'normal', got {kind!r}")


def one_hot(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    return F.one_hot(y.long(), n_classes).float()


def dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialisation: conv / linear weights ~ N(0, 0.02), BN scale ~ N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- networks
class Generator(nn.Module):
    """DCGAN generator for 28x28: ``z (+ one-hot y)`` -> linear to ``2ch x 7 x 7`` -> BN, ReLU ->
    ConvT(2ch -> ch, 4, stride 2) -> BN, ReLU -> ConvT(ch -> 1, 4, stride 2) -> tanh.

    ``n_classes > 0`` makes it conditional (Mirza & Osindero: ``y`` concatenated to ``z``).
    """

    def __init__(self, z_dim: int = 100, ch: int = 64, n_classes: int = 0) -> None:
        super().__init__()
        if z_dim < 1 or ch < 1 or n_classes < 0:
            raise ValueError(f"bad Generator sizes z_dim={z_dim}, ch={ch}, n_classes={n_classes}")
        self.z_dim, self.ch, self.n_classes = z_dim, ch, n_classes
        self.fc = nn.Linear(z_dim + n_classes, 2 * ch * 7 * 7, bias=False)
        self.bn0 = nn.BatchNorm1d(2 * ch * 7 * 7)
        self.up1 = nn.ConvTranspose2d(2 * ch, ch, 4, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.up2 = nn.ConvTranspose2d(ch, 1, 4, 2, 1)
        dcgan_init(self)

    def _input(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if self.n_classes:
            if y is None:
                raise ValueError("this generator is conditional: pass labels y")
            return torch.cat([z, one_hot(y, self.n_classes)], 1)
        if y is not None:
            raise ValueError("this generator is unconditional: y must be None")
        return z

    def logits(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The output before the final nonlinearity, ``[N, 1, 28, 28]``."""
        h = F.relu(self.bn0(self.fc(self._input(z, y))))
        h = h.view(len(z), 2 * self.ch, 7, 7)
        h = F.relu(self.bn1(self.up1(h)))
        return self.up2(h)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return torch.tanh(self.logits(z, y))


class Discriminator(nn.Module):
    """DCGAN discriminator for 28x28: Conv(1 (+ n_classes) -> ch, 4, s2) -> LeakyReLU(0.2) ->
    Conv(ch -> 2ch, 4, s2) -> BN -> LeakyReLU(0.2) -> linear -> one logit (no BN on the input
    layer, as in DCGAN). A conditional D receives ``y`` as ``n_classes`` constant one-hot maps
    stacked on the image channels."""

    def __init__(self, ch: int = 64, n_classes: int = 0) -> None:
        super().__init__()
        if ch < 1 or n_classes < 0:
            raise ValueError(f"bad Discriminator sizes ch={ch}, n_classes={n_classes}")
        self.ch, self.n_classes = ch, n_classes
        self.conv1 = nn.Conv2d(1 + n_classes, ch, 4, 2, 1)
        self.conv2 = nn.Conv2d(ch, 2 * ch, 4, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * ch)
        self.fc = nn.Linear(2 * ch * 7 * 7, 1)
        dcgan_init(self)

    def trunk(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.n_classes:
            if y is None:
                raise ValueError("this discriminator is conditional: pass labels y")
            maps = one_hot(y, self.n_classes)[:, :, None, None].expand(-1, -1, *x.shape[2:])
            x = torch.cat([x, maps], 1)
        elif y is not None:
            raise ValueError("this discriminator is unconditional: y must be None")
        h = F.leaky_relu(self.conv1(x), 0.2)
        h = F.leaky_relu(self.bn2(self.conv2(h)), 0.2)
        return flatten_keeping_format(h)   # channels_last gradients below: the fast kernels

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Logit of D(x) (``D = sigmoid(logit)``), shape ``[N]``."""
        return self.fc(self.trunk(x, y)).squeeze(1)


class ConvVAE(nn.Module):
    """A VAE whose decoder is a :class:`Generator` (same layers as G, Bernoulli logits instead
    of tanh) and whose encoder is the :class:`Discriminator`'s trunk with a ``2 z_dim`` head.

    The bound (Kingma & Welling eq. 10): ``log p(x) >= E_q[log p(x|z)] - KL(q(z|x) || N(0, I))``,
    one reparameterised sample ``z = mu + sigma * eps`` (eq. 4). ``x`` in {0, 1} (binarised).
    """

    def __init__(self, z_dim: int = 100, ch: int = 64) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.encoder = Discriminator(ch)
        self.encoder.fc = nn.Linear(2 * ch * 7 * 7, 2 * z_dim)
        self.decoder = Generator(z_dim, ch)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder.fc(self.encoder.trunk(x)).chunk(2, dim=1)
        return mu, logvar

    def elbo(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """Per-image ELBO in nats, ``[N]`` (``x``: ``[N, 1, 28, 28]`` in {0, 1})."""
        mu, logvar = self.encode(x)
        z = reparameterise(mu, logvar, eps)
        logits = self.decoder.logits(z).flatten(1)
        return bernoulli_log_likelihood(logits, x.flatten(1)) - gaussian_kl(mu, logvar)

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """``E[x | z]`` in [0, 1]."""
        return torch.sigmoid(self.decoder.logits(z))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder mean rescaled to [-1, 1], the generators' range."""
        return self.decode_mean(z) * 2 - 1


# --------------------------------------------------------------------------- losses
def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D's loss, the negative of eq. (1)'s value: ``-log D(x) - log(1 - D(G(z)))``, batch mean."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_loss(fake_logits: torch.Tensor, kind: GLoss = "non_saturating") -> torch.Tensor:
    """G's loss on ``D(G(z)) = sigmoid(fake_logits)``, batch mean.

    ``saturating``: ``log(1 - D(G(z)))`` (eq. 1, minimised); its gradient w.r.t. the logit is
    ``-D(G(z))``, which vanishes when D confidently rejects the samples (early training).
    ``non_saturating``: ``-log D(G(z))`` (Goodfellow et al., section 3), gradient
    ``-(1 - D(G(z)))``: strong exactly when the saturating one is weak.
    """
    if kind == "non_saturating":
        return F.softplus(-fake_logits).mean()
    if kind == "saturating":
        return -F.softplus(fake_logits).mean()
    raise ValueError(f"kind must be 'non_saturating' or 'saturating', got {kind!r}")


def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """bfloat16 autocast on ``device`` when ``enabled`` (:func:`common.runtime.resolve_amp`)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def grad_norm(module: nn.Module) -> torch.Tensor:
    """L2 norm of all parameter gradients of ``module`` (0-d tensor, no host sync)."""
    grads = [p.grad.flatten() for p in module.parameters() if p.grad is not None]
    return torch.cat(grads).norm() if grads else torch.zeros(())


# --------------------------------------------------------------------------- training
@dataclass
class GANHistory:
    """Per-step curves (host lists) and the per-segment timing log."""

    steps: list[int] = field(default_factory=list)
    d_loss: list[float] = field(default_factory=list)
    g_loss: list[float] = field(default_factory=list)
    d_real: list[float] = field(default_factory=list)
    d_fake: list[float] = field(default_factory=list)
    g_grad_norm: list[float] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    log: EpochLog | None = None


def _batches(x: torch.Tensor, y: torch.Tensor | None, batch_size: int,
             generator: torch.Generator):
    """Endless device-resident minibatches: one permutation per pass, no per-sample Python."""
    n = len(x)
    if batch_size > n:
        raise ValueError(f"batch_size {batch_size} exceeds the {n} training images")
    while True:
        order = torch.randperm(n, device=x.device, generator=generator)
        for b in range(n // batch_size):
            idx = order[b * batch_size:(b + 1) * batch_size]
            yield x[idx], (None if y is None else y[idx])


def adam(model: nn.Module, lr: float, betas: tuple[float, float], fused: bool) -> torch.optim.Adam:
    """Adam over ``model``'s parameters; ``fused``: one kernel for all of them (CPU and CUDA),
    the same update as the per-parameter loop up to rounding (tested)."""
    return torch.optim.Adam(model.parameters(), lr=lr, betas=betas, fused=fused)


def train_gan(G: Generator, D: Discriminator, x: torch.Tensor, y: torch.Tensor | None = None, *,
              steps: int, batch_size: int = 128, lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999),
              k: int = 1, loss: GLoss = "non_saturating", seed: int = 0, eval_every: int = 0,
              on_eval: Callable[[int], dict[str, float]] | None = None,
              memory_format: torch.memory_format = torch.contiguous_format,
              amp: bool = False, reuse_fake: bool = True, fused: bool = False) -> GANHistory:
    """Goodfellow et al.'s Algorithm 1 with Adam: per G step, ``k`` D steps on fresh minibatches.

    ``x``: training images ``[N, 1, 28, 28]`` in [-1, 1] on the device; ``y`` labels (only for a
    conditional pair; fake labels are drawn uniformly). ``steps`` counts G steps. Every
    ``eval_every`` steps (and at the end) ``on_eval(step)`` is called with G in eval mode; its
    dict lands in ``history.evals`` and the time since the last evaluation, without the
    evaluation itself, in ``history.log`` (one row per segment).

    **One G forward per step** (as in the PyTorch DCGAN example): the fake batch of the last D
    step is generated with gradients, D is updated on it detached, and G's loss is D's (updated)
    output on the *same* batch; the ``k - 1`` earlier D steps draw their fakes without
    gradients. ``reuse_fake=False`` draws a fresh batch for G's step instead (two G forwards
    per step; kept to measure what the reuse buys). During G's step D's parameters are frozen
    (``requires_grad`` off): G needs only D's input gradients, so D's weight gradients, which the
    next D step would discard, are never computed. ``amp``: the forward passes under bfloat16
    autocast (losses in float32). ``fused``: torch's fused Adam kernel (:func:`adam`); off by
    default: at 07's cpu setting (bf16, channels_last, 2 threads, AMX Xeon, 7 paired rounds of 60
    steps) it bought nothing (DCGAN at batch 128 0.98x, cGAN at 64 1.03x).
    """
    if steps < 1 or k < 1:
        raise ValueError(f"steps and k must be positive, got steps={steps}, k={k}")
    if (y is not None) != bool(G.n_classes) or bool(G.n_classes) != bool(D.n_classes):
        raise ValueError("pass labels y exactly when G and D are both conditional")
    dev = x.device
    gen = torch.Generator(device=dev).manual_seed(seed)
    batches = _batches(x, y, batch_size, gen)
    opt_g, opt_d = adam(G, lr, betas, fused), adam(D, lr, betas, fused)
    hist, stats = GANHistory(log=EpochLog(dev)), []
    n_cls = G.n_classes

    def fake_batch(n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = sample_noise(n, G.z_dim, gen, dev)
        yf = torch.randint(0, n_cls, (n,), generator=gen, device=dev) if n_cls else None
        with autocast(dev, amp):
            return G(z, yf).contiguous(memory_format=memory_format), yf

    def d_logits(xb: torch.Tensor, yb: torch.Tensor | None) -> torch.Tensor:
        with autocast(dev, amp):
            return D(xb, yb).float()

    def flush(seg_samples: int) -> None:
        if stats:
            s = torch.stack(stats).cpu().tolist()
            for row in s:
                hist.d_loss.append(row[0]); hist.g_loss.append(row[1]); hist.d_real.append(row[2])
                hist.d_fake.append(row[3]); hist.g_grad_norm.append(row[4])
            stats.clear()
        hist.log.end(seg_samples)

    G.train(); D.train()
    hist.log.start()
    seg_samples = 0
    for step in range(1, steps + 1):
        for i in range(k):
            xr, yr = next(batches)
            xr = xr.contiguous(memory_format=memory_format)
            # with gradients only for the batch G's step reuses (its one forward this step)
            with torch.set_grad_enabled(reuse_fake and i == k - 1):
                xf, yf = fake_batch(len(xr))
            real_logits, fake_logits = d_logits(xr, yr), d_logits(xf.detach(), yf)
            ld = d_loss(real_logits, fake_logits)
            opt_d.zero_grad(set_to_none=True)
            ld.backward()
            opt_d.step()
            seg_samples += len(xr)
        if not reuse_fake:
            xf, yf = fake_batch(batch_size)
        # G's step needs D's input gradients only: D frozen, its weight gradients are skipped
        D.requires_grad_(False)
        try:
            logits_g = d_logits(xf, yf)
            lg = g_loss(logits_g, loss)
            opt_g.zero_grad(set_to_none=True)
            lg.backward()
        finally:
            D.requires_grad_(True)
        opt_g.step()
        hist.steps.append(step)
        stats.append(torch.stack([ld.detach(), lg.detach(), torch.sigmoid(real_logits).mean().detach(),
                                  torch.sigmoid(logits_g).mean().detach(), grad_norm(G).detach()]))
        if (eval_every and step % eval_every == 0) or step == steps:
            flush(seg_samples)
            seg_samples = 0
            check_finite(torch.tensor([hist.d_loss[-1], hist.g_loss[-1]]), "GAN losses", step)
            if on_eval is not None:
                G.eval()
                hist.evals.append({"step": step, **on_eval(step)})
                G.train()
            hist.log.start()
    G.eval(); D.eval()
    return hist


@dataclass
class VAEHistory:
    steps: list[int] = field(default_factory=list)
    elbo: list[float] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    log: EpochLog | None = None


def train_vae(vae: ConvVAE, x: torch.Tensor, *, steps: int, batch_size: int = 128, lr: float = 1e-3,
              seed: int = 0, eval_every: int = 0, on_eval: Callable[[int], dict[str, float]] | None = None,
              memory_format: torch.memory_format = torch.contiguous_format,
              amp: bool = False, fused: bool = True) -> VAEHistory:
    """Maximise the ELBO with Adam on dynamically binarised ``x`` (``[N, 1, 28, 28]`` in [0, 1]:
    a fresh Bernoulli draw per minibatch). Same step / evaluation bookkeeping as
    :func:`train_gan`; ``amp``: bfloat16 autocast for the networks, the bound in float32;
    ``fused``: torch's fused Adam kernel (:func:`adam`), 1.27x per step at 07's cpu setting
    (batch 64, bf16, channels_last, 2 threads, AMX Xeon, 7 paired rounds of 60 steps; the VAE has
    about twice the GAN pair's parameters, most in its encoder's head)."""
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    dev = x.device
    gen = torch.Generator(device=dev).manual_seed(seed)
    batches = _batches(x, None, batch_size, gen)
    opt = adam(vae, lr, (0.9, 0.999), fused)
    hist, stats, seg = VAEHistory(log=EpochLog(dev)), [], 0
    vae.train()
    hist.log.start()
    for step in range(1, steps + 1):
        xb, _ = next(batches)
        xb = torch.bernoulli(xb, generator=gen).contiguous(memory_format=memory_format)
        eps = torch.randn(len(xb), vae.z_dim, generator=gen, device=dev)
        with autocast(dev, amp):
            loss = -vae.elbo(xb, eps).float().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seg += len(xb)
        hist.steps.append(step)
        stats.append(-loss.detach())
        if (eval_every and step % eval_every == 0) or step == steps:
            hist.elbo.extend(torch.stack(stats).cpu().tolist()); stats.clear()
            hist.log.end(seg); seg = 0
            check_finite(hist.elbo[-1], "VAE ELBO", step)
            if on_eval is not None:
                vae.eval()
                hist.evals.append({"step": step, **on_eval(step)})
                vae.train()
            hist.log.start()
    vae.eval()
    return hist


@torch.no_grad()
def test_elbo(vae: ConvVAE, x: torch.Tensor, seed: int = 0, batch_size: int = 1000) -> float:
    """Mean ELBO (nats) of ``x`` (``[N, 1, 28, 28]`` in [0, 1]) binarised once with ``seed``,
    one posterior sample per image."""
    vae.eval()
    gen = torch.Generator(device=x.device).manual_seed(seed)
    total = 0.0
    for lo in range(0, len(x), batch_size):
        xb = torch.bernoulli(x[lo:lo + batch_size], generator=gen)
        eps = torch.randn(len(xb), vae.z_dim, generator=gen, device=x.device)
        total += float(vae.elbo(xb, eps).sum())
    return total / len(x)


@torch.no_grad()
def generate(model: nn.Module, z: torch.Tensor, y: torch.Tensor | None = None,
             batch_size: int = 1000) -> torch.Tensor:
    """Images in [0, 1] from a generator / VAE decoder in eval mode, in chunks."""
    model.eval()
    out = []
    for lo in range(0, len(z), batch_size):
        zb = z[lo:lo + batch_size]
        xb = model(zb) if y is None else model(zb, y[lo:lo + batch_size])
        out.append((xb + 1) / 2)
    return torch.cat(out).clamp_(0, 1)


def step_throughput(x: torch.Tensor, *, ch: int, batch_size: int, steps: int, amp: bool,
                    memory_format: torch.memory_format, reuse_fake: bool = True, z_dim: int = 100,
                    seed: int = 0) -> float:
    """Training images per second of a DCGAN (``ch`` wide) trained ``steps`` G steps on ``x``
    (``[N, 1, 28, 28]`` in [-1, 1]) with the given levers, after 3 warm-up steps; what notebook
    07's lever table measures. Wall time of the whole loop, excluding nothing but the warm-up."""
    torch.manual_seed(seed)
    G = Generator(z_dim, ch).to(x.device, memory_format=memory_format)
    D = Discriminator(ch).to(x.device, memory_format=memory_format)
    xm = x.contiguous(memory_format=memory_format)
    kw = dict(batch_size=batch_size, seed=seed, memory_format=memory_format, amp=amp, reuse_fake=reuse_fake)
    train_gan(G, D, xm, steps=3, **kw)
    hist = train_gan(G, D, xm, steps=steps, **kw)
    return sum(hist.log.samples) / max(sum(hist.log.seconds), 1e-9)


# --------------------------------------------------------------------------- latent arithmetic
def attribute_direction(z: torch.Tensor, attribute: torch.Tensor, labels: torch.Tensor,
                        frac: float = 0.1, n_classes: int = 10) -> torch.Tensor:
    """Radford et al. 2016 (sec. 6.3) vector arithmetic, with several exemplars per concept and
    the digit averaged out: for every class ``c`` that has at least 10 samples, the mean ``z``
    of its ``frac`` highest-``attribute`` samples minus the mean ``z`` of its ``frac`` lowest;
    then the mean of these differences over the classes (each class weighted equally), so
    that the direction moves the attribute (stroke thickness, say) and no digit in
    particular. ``z``: ``[N, d]``; ``attribute``, ``labels``: ``[N]``."""
    if not 0 < frac <= 0.5:
        raise ValueError(f"frac must be in (0, 0.5], got {frac}")
    if not len(z) == len(attribute) == len(labels):
        raise ValueError(f"z, attribute and labels differ in length: {len(z)}, {len(attribute)}, {len(labels)}")
    diffs = []
    for c in range(n_classes):
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) < 10:
            continue
        order = idx[torch.argsort(attribute[idx])]
        m = max(1, int(round(frac * len(order))))
        diffs.append(z[order[-m:]].mean(0) - z[order[:m]].mean(0))
    if not diffs:
        raise ValueError("no class has 10 samples: cannot form an attribute direction")
    return torch.stack(diffs).mean(0)


@torch.no_grad()
def walk_attribute(model: nn.Module, label: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor,
                   v: torch.Tensor, alphas: torch.Tensor, attribute: Callable[[torch.Tensor], torch.Tensor]
                   ) -> dict[str, Any]:
    """``G(z + alpha v)`` for every start ``z`` (``[B, d]``) and ``alpha``: the images
    ``[B * len(alphas), 1, 28, 28]`` (row-major: start, then alpha), the mean ``attribute`` per
    alpha, and per alpha the fraction of starts whose ``label`` (a classifier's predicted digit,
    say) is the one at ``alphas[0]``."""
    zz = (z[:, None, :] + alphas.to(z)[None, :, None] * v).reshape(-1, z.shape[1])
    x = generate(model, zz)
    pred = label(x).reshape(len(z), len(alphas))
    kept = (pred == pred[:, :1]).float().mean(0)
    attr = attribute(x).reshape(len(z), len(alphas)).mean(0)
    return {"images": x, "alphas": alphas.tolist(), "kept": kept.tolist(), "attribute": attr.tolist()}


def exemplar_walk(model: nn.Module, label: Callable[[torch.Tensor], torch.Tensor],
                  attribute: Callable[[torch.Tensor], torch.Tensor], z_pool: torch.Tensor,
                  z_start: torch.Tensor, alphas: torch.Tensor) -> dict[str, Any]:
    """Notebook 07's latent arithmetic in one call: the direction :func:`attribute_direction`
    finds among the exemplars ``G(z_pool)`` (their ``attribute`` and ``label``), then
    :func:`walk_attribute` along it from ``z_start``; returns the walk's dict."""
    x_pool = generate(model, z_pool)
    v = attribute_direction(z_pool, attribute(x_pool), label(x_pool))
    return walk_attribute(model, label, z_start, v, alphas, attribute)


def classifier_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Notebook 07's scale: the settings of its MNIST classifier
    (:func:`common.gen_eval.cached_classifier`) for the profile entry ``cfg``."""
    return dict(epochs=cfg["clf_epochs"], batch_size=cfg["clf_batch"], lr=cfg["clf_lr"], seed=0,
                arch=dict(c1=16, c2=32, feat=128))


# --------------------------------------------------------------------------- finished runs, kept
History = GANHistory | VAEHistory


def history_state(hist: History) -> dict[str, Any]:
    """``hist`` as plain data (for :func:`save_checkpoint`); :func:`history_from_state` inverts it."""
    state = {f.name: getattr(hist, f.name) for f in dataclasses.fields(hist) if f.name != "log"}
    log = hist.log
    state["log"] = None if log is None else {"seconds": log.seconds, "samples": log.samples,
                                             "rows": log.rows}
    return {"kind": type(hist).__name__, **state}


def history_from_state(state: dict[str, Any], device: torch.device | str | None = None) -> History:
    cls = {"GANHistory": GANHistory, "VAEHistory": VAEHistory}[state["kind"]]
    hist = cls(**{k: v for k, v in state.items() if k not in ("kind", "log")})
    if state["log"] is not None:
        hist.log = EpochLog(torch.device(device) if device is not None else None, **state["log"])
    return hist


def run_key(**settings: Any) -> str:
    """Digest of a run's settings and of all the source behind it: this module and what it
    imports, and ``gen_eval`` (a kept history holds FID curves that notebook 07 computes with
    it) (:func:`common.runtime.code_files`): a kept run is reused only by the same code with the
    same settings."""
    return settings_key(settings, code_files("gan", "gen_eval"))


def kept_run(path: Path | None, model: nn.Module, train: Callable[[], History]
             ) -> tuple[History, bool]:
    """Train ``model`` with ``train()`` unless ``path`` holds this run finished already (then load
    its parameters into ``model`` and return its history); save it when it finishes. Returns
    ``(history, loaded)``. ``path=None`` always trains and keeps nothing (the smoke profile).

    With a time segment (:func:`common.training.start_segment`) that has run out, a run that is
    not kept yet raises :class:`SegmentUnfinished` instead of starting, once this process has
    trained at least one (so every segment makes progress): runs are the units of notebook 07's
    segments (each takes a minute or two on a GPU), and running it again resumes with the next."""
    global _runs_trained
    if path is not None:
        state = load_checkpoint(path, map_location=next(model.parameters()).device)
        if state is not None:
            model.load_state_dict(state["model"])
            model.eval()
            return history_from_state(state["history"], next(model.parameters()).device), True
        if segment_over() and _runs_trained:
            raise SegmentUnfinished(f"time segment used up before {Path(path).name}; finished runs "
                                    f"are kept in {Path(path).parent}: run again to continue")
    hist = train()
    if path is not None:
        save_checkpoint(path, {"model": model.state_dict(), "history": history_state(hist)})
        _runs_trained += 1
    return hist, False


_runs_trained = 0   # runs kept_run trained (and saved) in this process


__all__ = ["Generator", "Discriminator", "ConvVAE", "d_loss", "g_loss", "train_gan", "train_vae",
           "test_elbo", "generate", "sample_noise", "grad_norm", "kept_run", "run_key",
           "history_state", "history_from_state", "exemplar_walk", "classifier_config", "CONFIGS"]


# --------------------------------------------------------------------------- notebook 07's claims
# The tests of notebook 07's claims, fixed before its results (its claim cell prints them).
TARGETS: dict[str, Any] = {
    "grad_ratio": 10.0,         # median G-gradient norm, non-saturating / saturating, every seed
    "cond_acc": 0.95,           # cGAN: fraction of samples the classifier calls the requested digit
    "recognisable": {"cgan": 0.90, "dcgan": 0.85},   # confidence >= 0.9 (notebook 05's rule)
    "coverage_kl": 0.05,        # DCGAN: KL(label histogram || uniform), nats
    "arith_kept": 0.70,         # latent arithmetic: digit kept at alpha = arith_alpha ...
    "arith_alpha": 1.0,         # ... while the mean ink rises at every alpha step
    "flat_rel": 0.10,           # FID curve flattened: last two evaluations within 10 %
}


def claim_checks(per_seed: Mapping[str, Mapping[str, Sequence[float]]], grad_ratios: Sequence[float],
                 arithmetic: Sequence[Mapping[str, Any]], flat: Mapping[str, bool],
                 targets: Mapping[str, Any] = TARGETS) -> list[dict[str, Any]]:
    """Notebook 07's claims against its runs, one row each (``claim``, ``source``,
    ``measured``, ``met``) for :func:`common.report.claims_verdict`.

    ``per_seed[kind][metric]``: one value per seed (kinds ``dcgan``, ``cgan``, ``vae``; metrics
    ``sharpness``, ``coverage_kl``, ``cond_acc``, ``recognisable``); ``grad_ratios``: one per
    seed; ``arithmetic``: per seed, :func:`walk_attribute`'s ``alphas``, ``kept``,
    ``attribute``; ``flat``: per run, whether its FID curve flattened."""
    mean = lambda v: sum(v) / len(v)
    rows = []
    r = list(grad_ratios)
    rows.append({"claim": "the saturating G loss's gradient vanishes early, the non-saturating one's does not",
                 "source": "Goodfellow et al. 2014, sec. 3",
                 "measured": f"median gradient-norm ratio {min(r):.0f}–{max(r):.0f}x over {len(r)} seeds "
                             f"(target ≥ {targets['grad_ratio']:g}x on every seed)",
                 "met": bool(r) and min(r) >= targets["grad_ratio"]})
    d = [a - b for a, b in zip(per_seed["dcgan"]["sharpness"], per_seed["vae"]["sharpness"])]
    ci = mean_interval(d)
    rows.append({"claim": "GAN samples are sharper than the VAE's",
                 "source": "Goodfellow et al. 2014; Kingma & Welling 2014",
                 "measured": f"sharpness DCGAN − VAE {ci['mean']:+.4f} (95 % CI {ci['low']:+.4f}..{ci['high']:+.4f}, "
                             f"{ci['n']} seeds)",
                 "met": ci["n"] >= 2 and ci["low"] > 0})
    acc = mean(per_seed["cgan"]["cond_acc"])
    rows.append({"claim": "a conditional GAN draws the digit it is asked for", "source": "Mirza & Osindero 2014",
                 "measured": f"conditional accuracy {acc:.3f} (target ≥ {targets['cond_acc']:g})",
                 "met": acc >= targets["cond_acc"]})
    kept, mono = [], []
    for a in arithmetic:
        i = min(range(len(a["alphas"])), key=lambda j: abs(a["alphas"][j] - targets["arith_alpha"]))
        kept.append(a["kept"][i])
        mono.append(all(y > x for x, y in zip(a["attribute"], a["attribute"][1:])))
    rows.append({"claim": "a latent vector averaged over exemplars changes one attribute (stroke thickness) and keeps the digit",
                 "source": "Radford et al. 2016, sec. 6.3",
                 "measured": f"digit kept at alpha {targets['arith_alpha']:g}: {mean(kept):.0%} (target ≥ "
                             f"{targets['arith_kept']:.0%}); ink rises at every step on {sum(mono)}/{len(mono)} seeds",
                 "met": bool(kept) and mean(kept) >= targets["arith_kept"] and all(mono)})
    rec = {k: mean(per_seed[k]["recognisable"]) for k in targets["recognisable"]}
    names = {"dcgan": "DCGAN", "cgan": "cond. DCGAN", "vae": "VAE"}
    n_flat = sum(flat.values())
    rows.append({"claim": "trained generators draw recognisable digits (FID curves flattened)",
                 "source": "Radford et al. 2016; Mirza & Osindero 2014",
                 "measured": ", ".join(f"{names[k]} {v:.0%} recognisable (target ≥ {targets['recognisable'][k]:.0%})"
                                       for k, v in rec.items())
                             + f"; {n_flat}/{len(flat)} FID curves flattened",
                 "met": all(v >= targets["recognisable"][k] for k, v in rec.items()) and n_flat == len(flat) > 0})
    kl = mean(per_seed["dcgan"]["coverage_kl"])
    rows.append({"claim": "the unconditional GAN covers all ten digits (no mode collapse)",
                 "source": "Goodfellow et al. 2014, sec. 6; Heusel et al. 2017",
                 "measured": f"DCGAN coverage KL {kl:.3f} nats (target ≤ {targets['coverage_kl']:g})",
                 "met": kl <= targets["coverage_kl"]})
    return rows


# --------------------------------------------------------------------------- notebook 07 profiles
# n_train: training images; ch: G/D width; gan_steps: G steps of the cGAN at batch_size (the VAE
# gets as many updates); dcgan_steps / dcgan_batch: the unconditional DCGAN's (it needs longer);
# n_eval: samples per model for FID-MNIST / coverage; n_curve: samples per point of the FID curve;
# n_rec: samples for the recognisable fraction; amp / channels_last: bf16 autocast and the
# channels-last layout, each only where the device runs it natively and safely
# (runtime.resolve_amp / runtime.memory_format); levers: the step-time table of notebook 07.
_SHARED = dict(z_dim=100, lr=2e-4, betas=(0.5, 0.999), k=1,       # DCGAN / Goodfellow et al.
               vae_lr=1e-3, clf_batch=128, clf_lr=3e-3, n_rec=1_000, amp="auto", channels_last=True)


def _levers(ch: int, batch: int, steps: int) -> dict[str, Any]:
    """The lever table's rows: float32 NCHW with two G forwards per step (this notebook's step
    before the levers), then one lever added per row; the third row is the profile's own
    setting, the last two what a wider network or a larger batch would cost."""
    rows = [dict(name="float32, NCHW, 2 G forwards", ch=ch, batch_size=batch, amp=False, channels_last=False, one_forward=False),
            dict(name="+ 1 G forward per step", ch=ch, batch_size=batch, amp=False, channels_last=False, one_forward=True),
            dict(name="+ bf16 autocast + channels_last", ch=ch, batch_size=batch, amp=True, channels_last=True, one_forward=True),
            dict(name="width x2", ch=2 * ch, batch_size=batch, amp=True, channels_last=True, one_forward=True),
            dict(name="batch x2", ch=ch, batch_size=2 * batch, amp=True, channels_last=True, one_forward=True)]
    return {"steps": steps, "rows": rows}


CONFIGS: dict[str, dict] = {
    "smoke": dict(n_train=2_000, clf_epochs=1, ch=8, batch_size=32, gan_steps=30, eval_every=15,
                  dcgan_steps=40, dcgan_batch=32,
                  sat_steps=20, seeds=[0, 1], n_eval=500, n_curve=200, n_nn=100, n_arith=500,
                  threads=1, levers=_levers(8, 32, 2), **{**_SHARED, "n_rec": 200}),
    "cpu": dict(n_train=50_000, clf_epochs=3, ch=32, batch_size=64, gan_steps=10_000, eval_every=1_000,
                # the DCGAN's curve still fell at 10,000 steps of 64 (64 % recognisable, coverage
                # KL 0.075 in the render of 2026-12-04); dev runs on seed 3 (not reported): 30,000 x 64
                # FID 78 / KL 0.029 in 535 s, 15,000 x 128 FID 87 / KL 0.044 in 407 s
                dcgan_steps=15_000, dcgan_batch=128,
                sat_steps=300, seeds=[0, 1, 2], n_eval=10_000, n_curve=1_000, n_nn=500, n_arith=2_000,
                threads=None, levers=_levers(32, 64, 40), **_SHARED),
    "full": dict(n_train=50_000, clf_epochs=5, ch=64, batch_size=128, gan_steps=25 * 390,
                 dcgan_steps=25 * 390, dcgan_batch=128,   # DCGAN's 25 epochs at batch 128
                 eval_every=975, sat_steps=1_000, seeds=[0, 1, 2], n_eval=10_000, n_curve=5_000,
                 n_nn=1_000, n_arith=5_000, threads=None, levers=_levers(64, 128, 50), **_SHARED),
}
# dryrun (make dryrun): the full entry with a handful of steps and small evaluation samples,
# nothing else changed (tests/test_dryrun.py).
CONFIGS["dryrun"] = dryrun_of(CONFIGS["full"], clf_epochs=1, gan_steps=4, dcgan_steps=4, eval_every=2, sat_steps=4,
                              n_eval=500, n_curve=200, n_nn=100, n_arith=500, n_rec=200,
                              levers=_levers(64, 128, 2))
