"""One scale for every MNIST generator: a classifier trained here, and what it measures.

* :class:`MnistClassifier`, trained on the 50,000-image train split and cached under
  ``checkpoints/<notebook>/`` keyed by its config and this file's source.
* **FID-MNIST**: the Fréchet distance of Heusel et al. 2017 (arXiv:1706.08500, eq. 6),
  ``||mu_1 - mu_2||^2 + tr(C_1 + C_2 - 2 (C_1 C_2)^{1/2})``, between Gaussians fitted to
  *this classifier's* penultimate features, not Inception-v3's: numbers are comparable with
  each other, never with published FIDs.
* Mode coverage: the classifier's label histogram of unconditional samples and its KL
  divergence to uniform (0 = every digit equally often, ``log 10`` = one digit only).
* Conditional accuracy of a class-conditional generator, nearest training neighbours in pixel
  L2 (memorisation), a sharpness measure (mean gradient magnitude) and ink (stroke mass).

Every image argument is ``[N, 1, 28, 28]`` (or ``[N, 784]``) with pixels in [0, 1].
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import DeviceBatches
from .runtime import checkpoint_root, code_files, settings_key
from .training import EpochLog, check_finite, load_checkpoint, save_checkpoint


def as_images(x: torch.Tensor) -> torch.Tensor:
    """``[N, 784]`` or ``[N, 1, 28, 28]`` -> contiguous ``[N, 1, 28, 28]``."""
    if x.dim() == 2 and x.shape[1] == 784:
        return x.reshape(len(x), 1, 28, 28).contiguous()
    if x.dim() == 4 and tuple(x.shape[1:]) == (1, 28, 28):
        return x.contiguous()
    raise ValueError(f"x must be [N, 784] or [N, 1, 28, 28], got {tuple(x.shape)}")


# --------------------------------------------------------------------------- classifier
class MnistClassifier(nn.Module):
    """Conv(1->c1, 5) BN ReLU pool -> Conv(c1->c2, 5) BN ReLU pool -> FC(feat) ReLU = the
    feature space -> dropout -> FC(10)."""

    def __init__(self, c1: int = 16, c2: int = 32, feat: int = 128, dropout: float = 0.3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 5, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=2, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.fc1 = nn.Linear(c2 * 7 * 7, feat)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(feat, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations ``[N, feat]`` (the FID-MNIST feature space)."""
        h = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        h = F.max_pool2d(F.relu(self.bn2(self.conv2(h))), 2)
        return F.relu(self.fc1(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.features(x)))


def train_classifier(x: torch.Tensor, y: torch.Tensor, *, epochs: int, batch_size: int = 128,
                     lr: float = 2e-3, seed: int = 0, arch: Mapping[str, Any] | None = None
                     ) -> tuple[MnistClassifier, EpochLog]:
    """Adam with a one-cycle schedule on device-resident ``x`` ([0, 1]) and labels ``y``;
    returns the model in eval mode and its epoch log."""
    if epochs < 1:
        raise ValueError(f"epochs must be positive, got {epochs}")
    dev = x.device
    torch.manual_seed(seed)
    model = MnistClassifier(**dict(arch or {})).to(dev)
    batches = DeviceBatches(as_images(x), y, batch_size=batch_size, drop_last=True, seed=seed)
    n_batches = len(batches)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * n_batches)
    log = EpochLog(dev)
    for _ in range(epochs):
        model.train()
        log.start()
        total = torch.zeros((), device=dev)
        for xb, yb in batches:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach()
        mean_loss = float(total) / n_batches
        check_finite(mean_loss, "classifier loss")
        log.end(n_batches * batch_size, loss=mean_loss)
    model.eval()
    return model, log


def cached_classifier(x: torch.Tensor, y: torch.Tensor, config: Mapping[str, Any], cache_dir: Path,
                      ) -> tuple[MnistClassifier, dict[str, Any]]:
    """The classifier for ``config`` (``epochs``, ``batch_size``, ``lr``, ``seed``, ``arch``),
    trained once and then loaded from ``cache_dir/classifier-<key>.pt``; ``key`` hashes the
    config, the training-set size and the source of this module and of what it imports
    (:func:`common.runtime.code_files`). Returns the model (eval mode, on
    ``x``'s device) and an info dict (``key``, ``cached``, ``timing``)."""
    cfg = {k: config[k] for k in ("epochs", "batch_size", "lr", "seed")}
    arch = dict(config.get("arch") or {})
    settings = {**cfg, "arch": arch, "n_train": len(x)}
    key = settings_key(settings, code_files("gen_eval"))
    path = Path(cache_dir) / f"classifier-{key}.pt"
    state = load_checkpoint(path, map_location=x.device)
    if state is not None:
        model = MnistClassifier(**arch).to(x.device)
        model.load_state_dict(state["model"])
        model.eval()
        return model, {"key": key, "cached": True, "path": str(path), "timing": state["timing"]}
    model, log = train_classifier(x, y, arch=arch, **cfg)
    save_checkpoint(path, {"model": model.state_dict(), "timing": log.summary(),
                           "config": json.dumps(settings, sort_keys=True)})
    return model, {"key": key, "cached": False, "path": str(path), "timing": log.summary()}


@torch.no_grad()
def features(model: MnistClassifier, x: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """Penultimate features in eval mode (deterministic), ``[N, feat]`` float32."""
    model.eval()
    x = as_images(x)
    return torch.cat([model.features(x[lo:lo + batch_size]) for lo in range(0, len(x), batch_size)])


@torch.no_grad()
def predict(model: MnistClassifier, x: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """Predicted labels ``[N]`` in eval mode."""
    model.eval()
    x = as_images(x)
    return torch.cat([model(x[lo:lo + batch_size]).argmax(1) for lo in range(0, len(x), batch_size)])


@torch.no_grad()
def confident_fraction(model: MnistClassifier, x: torch.Tensor, threshold: float = 0.9,
                       batch_size: int = 2000) -> float:
    """Fraction of images that the classifier assigns to *some* digit with softmax probability
    ``>= threshold``: a "recognisable sample" rate (notebook 05 uses the same rule)."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    model.eval()
    x = as_images(x)
    top = torch.cat([torch.softmax(model(x[lo:lo + batch_size]).float(), 1).max(1).values
                     for lo in range(0, len(x), batch_size)])
    return float((top >= threshold).float().mean())


def flattened(values: Sequence[float], rel_tol: float = 0.10) -> bool:
    """Whether a curve has flattened: its last two values differ by at most ``rel_tol`` of the
    last one (``|v[-1] - v[-2]| <= rel_tol * |v[-1]|``); False with fewer than two values."""
    if len(values) < 2:
        return False
    a, b = float(values[-2]), float(values[-1])
    return math.isfinite(a) and math.isfinite(b) and abs(b - a) <= rel_tol * abs(b)


def accuracy(model: MnistClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(model, x) == y.to(x.device)).float().mean())


# --------------------------------------------------------------------------- Fréchet distance
def gaussian_stats(feats: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of ``[N, d]`` features, float64."""
    f = feats.detach().cpu().double().numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"feats must be [N >= 2, d], got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def _sym_sqrt(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein) distance between N(mu1, cov1) and N(mu2, cov2) (Heusel et al.
    eq. 6). ``tr((C1 C2)^{1/2}) = tr((S C2 S)^{1/2})`` with ``S = C1^{1/2}``: both square roots
    are of symmetric PSD matrices, taken by eigendecomposition (no complex parts to drop)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"shapes differ: mu {mu1.shape} / {mu2.shape}, cov {cov1.shape} / {cov2.shape}")
    s1 = _sym_sqrt(cov1)
    cross = np.linalg.eigvalsh((s1 @ cov2 @ s1 + (s1 @ cov2 @ s1).T) / 2)
    tr_cross = float(np.sqrt(np.clip(cross, 0, None)).sum())
    d = float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * tr_cross)
    return max(d, 0.0)


def fid_from_features(f1: torch.Tensor | np.ndarray, f2: torch.Tensor | np.ndarray) -> float:
    return frechet_distance(*gaussian_stats(f1), *gaussian_stats(f2))


def fid_mnist(model: MnistClassifier, x: torch.Tensor, ref: tuple[np.ndarray, np.ndarray]) -> float:
    """FID-MNIST of images ``x`` against reference stats ``ref`` (from :func:`gaussian_stats`)."""
    return frechet_distance(*gaussian_stats(features(model, x)), *ref)


# --------------------------------------------------------------------------- coverage etc.
def class_histogram(labels: torch.Tensor, n_classes: int = 10) -> np.ndarray:
    """Fraction of ``labels`` in each class, float64 ``[n_classes]``."""
    counts = torch.bincount(labels.cpu().long(), minlength=n_classes).double().numpy()
    return counts / max(counts.sum(), 1)


def coverage_kl(hist: np.ndarray | torch.Tensor) -> float:
    """``KL(p || uniform) = log K - H(p)`` in nats: 0 for uniform, ``log K`` for one class."""
    p = np.asarray(hist, np.float64)
    if p.ndim != 1 or (p < 0).any() or not p.sum() > 0:
        raise ValueError("hist must be a non-negative 1-d histogram with positive mass")
    p = p / p.sum()
    nz = p[p > 0]
    return float(math.log(len(p)) + (nz * np.log(nz)).sum())


def conditional_accuracy(model: MnistClassifier, x: torch.Tensor, y: torch.Tensor) -> tuple[float, np.ndarray]:
    """Fraction of samples generated for digit ``y`` that the classifier calls ``y``, overall
    and per class (float64 ``[10]``)."""
    hit = (predict(model, x) == y.to(x.device)).double().cpu()
    y = y.cpu().long()
    per = torch.zeros(10, dtype=torch.float64).index_add_(0, y, hit) / torch.bincount(y, minlength=10).clamp(min=1)
    return float(hit.mean()), per.numpy()


@torch.no_grad()
def nearest_neighbours(x: torch.Tensor, train: torch.Tensor, batch_size: int = 256
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Index into ``train`` and pixel-L2 distance of each image's nearest training image."""
    q, t = x.reshape(len(x), -1).float(), train.reshape(len(train), -1).float()
    t_sq = (t * t).sum(1)
    idx, dist = [], []
    for lo in range(0, len(q), batch_size):
        qb = q[lo:lo + batch_size]
        d2 = (qb * qb).sum(1, keepdim=True) - 2 * qb @ t.T + t_sq
        m, i = d2.min(1)
        idx.append(i); dist.append(m.clamp(min=0).sqrt())
    return torch.cat(idx), torch.cat(dist)


def sharpness(x: torch.Tensor) -> torch.Tensor:
    """Per-image mean gradient magnitude ``mean sqrt(dx^2 + dy^2)`` of forward differences
    (pixels in [0, 1]); blurry images score lower."""
    x = as_images(x).float()
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    return (dx.pow(2) + dy.pow(2)).sqrt().flatten(1).mean(1)


def ink(x: torch.Tensor) -> torch.Tensor:
    """Per-image stroke mass: the mean pixel intensity."""
    return as_images(x).float().flatten(1).mean(1)


def checkpoint_dir(notebook: str, profile: str | None = None) -> Path:
    """``checkpoints/<notebook>/`` (git-ignored; the folder is :func:`runtime.checkpoint_root`,
    never ``checkpoints/`` in the dryrun profile)."""
    return checkpoint_root(profile) / notebook
