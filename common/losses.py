"""Losses for class-imbalanced classification: CE, inverse-frequency CE, focal, class-balanced.

Equations follow Y. Cui et al., *Class-balanced loss based on effective number of samples*,
CVPR 2019 (arXiv:1901.05555), and T.-Y. Lin et al., *Focal loss for dense object detection*,
ICCV 2017:

* effective number of samples, Cui eq. (3)/(4):  E_n = (1 - β^n) / (1 - β) = 1 + β E_{n-1}
* class-balanced weight, Cui eq. (5):  w_y ∝ 1 / E_{n_y} = (1 - β) / (1 - β^{n_y}),
  normalised so that Σ_y w_y = C (the number of classes), as in the authors' code
* CB softmax CE, Cui eq. (7):   CB(z, y) = w_y · (−log softmax(z)_y)
* focal loss on the softmax, Lin eq. (4) with α = 1:  FL = −(1 − p_t)^γ log p_t
* CB focal, Cui eq. (8) (softmax instead of sigmoid here): w_y · FL
* logit-adjusted CE (A. K. Menon et al., *Long-tail learning via logit adjustment*, ICLR 2021,
  arXiv:2007.07314, sec. 4): CE on z_y + τ log π_y with the training prior π_y = n_y / Σ n;
  τ = 1 is the balanced softmax n_y e^{z_y} / Σ_j n_j e^{z_j} (J. Ren et al., *Balanced
  meta-softmax for long-tailed visual recognition*, NeurIPS 2020, arXiv:2007.10740)
* deferred re-weighting, DRW (K. Cao et al., *Learning imbalanced datasets with
  label-distribution-aware margin loss*, NeurIPS 2019, arXiv:1906.07413, sec. 3.3): plain CE
  until a stated epoch, then CE with the class-balanced weights of Cui eq. (5)

Batch reductions. Unweighted, CB-softmax and CB-focal losses are the plain mean over the batch
of the per-example loss (``w_y · ℓ_i``), as in the authors' code. Inverse-frequency weighting
uses the *weighted mean* Σ w_{y_i} ℓ_i / Σ w_{y_i} (PyTorch's ``cross_entropy(weight=...)``), so
its scale matches CE whatever the normalisation of 1/n_y; so does DRW's re-weighted phase, as
in Cao et al.'s code (``CrossEntropyLoss(weight=...)``).

All functions check shapes and dtypes and raise ``ValueError`` naming the bad argument. Losses
are computed in float32 even when the logits come from a bf16 autocast region.

Labels must lie in [0, C): no label is ignored (PyTorch's ``ignore_index=-100`` is not used;
every loss picks −log p_t with the same ``gather``). Value checks that would need a
device→host sync each step run on CPU tensors only (``ValueError``: labels out of range,
non-finite weights); on an accelerator an out-of-range label fails that ``gather``'s bounds
check instead. γ, β and the counts behind every weight are checked when a loss is configured.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .runtime import at_least_float32

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- weights
def _counts_tensor(counts: Sequence[int] | torch.Tensor, name: str = "counts") -> torch.Tensor:
    c = torch.as_tensor(counts, dtype=torch.float64)
    if c.ndim != 1 or len(c) < 1:
        raise ValueError(f"{name} must be a 1-D sequence of per-class counts, got shape "
                         f"{tuple(c.shape)}")
    if not bool(torch.all(torch.isfinite(c) & (c >= 1) & (c == torch.round(c)))):
        raise ValueError(f"{name} must hold positive integers (every class needs ≥ 1 example), "
                         f"got {c.tolist()}")
    return c


def _check_beta(beta: float) -> float:
    beta = float(beta)
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must lie in [0, 1), got {beta}")
    return beta


def effective_number(n: Sequence[int] | torch.Tensor | int, beta: float) -> torch.Tensor:
    """Effective number of samples E_n = (1 − β^n)/(1 − β) (Cui et al. eq. 3), float64.

    β = 0 gives E_n = 1 for every n ≥ 1; β → 1 gives E_n → n.
    """
    beta = _check_beta(beta)
    n_t = torch.as_tensor(n, dtype=torch.float64)
    if bool(torch.any(n_t < 0)):
        raise ValueError(f"n must be non-negative, got {n_t.tolist()}")
    if beta == 0.0:
        return (n_t >= 1).to(torch.float64)
    # -expm1(n log β) / -expm1(log β) is the same ratio, accurate for β close to 1
    lb = torch.log(torch.tensor(beta, dtype=torch.float64))
    return torch.expm1(n_t * lb) / torch.expm1(lb)


def effective_number_recursive(n: int, beta: float) -> float:
    """E_n by the recursion E_1 = 1, E_n = 1 + β E_{n−1} (Cui et al. eq. 4); for tests."""
    beta = _check_beta(beta)
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n}")
    e = 0.0
    for _ in range(int(n)):
        e = 1.0 + beta * e
    return e


def class_balanced_weights(counts: Sequence[int] | torch.Tensor, beta: float) -> torch.Tensor:
    """w_y = (1 − β)/(1 − β^{n_y}) = 1/E_{n_y}, normalised to sum to C (Cui et al. eq. 5)."""
    c = _counts_tensor(counts)
    w = 1.0 / effective_number(c, beta)
    return (w / w.sum() * len(c)).to(torch.float32)


def inverse_frequency_weights(counts: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """w_y = 1/n_y, normalised to sum to C (normalisation is irrelevant under the weighted mean)."""
    c = _counts_tensor(counts)
    w = 1.0 / c
    return (w / w.sum() * len(c)).to(torch.float32)


# --------------------------------------------------------------------------- checks
def _check_inputs(logits: torch.Tensor, target: torch.Tensor,
                  weight: torch.Tensor | None = None) -> None:
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise ValueError("logits and target must be torch tensors")
    if logits.ndim != 2:
        raise ValueError(f"logits must be [N, C], got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if target.ndim != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(f"target must be [N] with N = {logits.shape[0]} (the logits' batch), "
                         f"got shape {tuple(target.shape)}")
    if target.dtype != torch.int64:
        raise ValueError(f"target must hold int64 class indices, got {target.dtype}")
    if logits.shape[0] == 0:
        raise ValueError("logits and target are empty (batch of size 0)")
    if weight is not None:
        if weight.ndim != 1 or weight.shape[0] != logits.shape[1]:
            raise ValueError(f"weight must be [C] with C = {logits.shape[1]}, got shape "
                             f"{tuple(weight.shape)}")
        if not weight.is_floating_point():
            raise ValueError(f"weight must be floating point, got {weight.dtype}")
        if weight.device.type == "cpu" and not bool(torch.isfinite(weight).all()):
            raise ValueError(f"weight must be finite, got {weight.tolist()}")
    if target.device.type == "cpu":   # on an accelerator this would sync every step
        c = logits.shape[1]
        bad = target[(target < 0) | (target >= c)]
        if len(bad):
            raise ValueError(f"target holds labels outside [0, {c}): {bad.unique()[:8].tolist()} "
                             f"(no label is ignored, -100 included)")


def _check_gamma(gamma: float) -> float:
    gamma = float(gamma)
    if not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma must be finite and ≥ 0, got {gamma}")
    return gamma


def _per_example(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-example focal loss −(1 − p_t)^γ log p_t, p_t = softmax(z)_y (γ = 0: CE), in at least
    float32."""
    logp_t = F.log_softmax(at_least_float32(logits), dim=1).gather(1, target[:, None]).squeeze(1)
    per = -logp_t
    if gamma != 0.0:
        # (1 - p_t)^γ with 1 - p_t = -expm1(log p_t): accurate for p_t near 1
        per = per * (-torch.expm1(logp_t)).clamp_min(0.0).pow(gamma)
    return per


def _class_weight(weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """w_{y_i} per example, float32 on the target's device."""
    return weight.to(device=target.device, dtype=torch.float32)[target]


# --------------------------------------------------------------------------- losses
def cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax CE. With ``weight``: the weighted mean Σ w_{y_i} ℓ_i / Σ w_{y_i}."""
    _check_inputs(logits, target, weight)
    per = _per_example(logits, target, 0.0)
    if weight is None:
        return per.mean()
    w = _class_weight(weight, target)
    return (w * per).sum() / w.sum()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the batch of w_{y_i} · (−(1 − p_t)^γ log p_t), p_t = softmax(z)_y.

    γ = 0 and no weight is exactly :func:`cross_entropy`. With ``weight`` it is the CB focal
    loss (plain mean of the weighted per-example losses, Cui et al. eq. 8 on the softmax).
    """
    _check_inputs(logits, target, weight)
    per = _per_example(logits, target, _check_gamma(gamma))
    if weight is not None:
        per = per * _class_weight(weight, target)
    return per.mean()


def class_balanced_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                        gamma: float = 0.0) -> torch.Tensor:
    """CB softmax (γ = 0, Cui eq. 7) or CB focal (γ > 0, eq. 8): mean of w_y · ℓ_i."""
    if weight is None:
        raise ValueError("weight must be given (use class_balanced_weights(counts, beta))")
    return focal_loss(logits, target, gamma, weight)


def log_prior(counts: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """log π_y = log(n_y / Σ_j n_j) of the training set's class ``counts`` (float32)."""
    c = _counts_tensor(counts)
    return torch.log(c / c.sum()).to(torch.float32)


def logit_adjusted_loss(logits: torch.Tensor, target: torch.Tensor, log_pi: torch.Tensor,
                        tau: float = 1.0) -> torch.Tensor:
    """Logit-adjusted softmax CE (Menon et al. 2021, sec. 4), batch mean:
    −log softmax(z + τ log π)_y, ``log_pi`` = :func:`log_prior` of the training counts. Training
    only: predictions use the raw logits z.

    With τ = 1 it is the balanced softmax of Ren et al. 2020, −log(n_y e^{z_y} / Σ_j n_j e^{z_j}).
    """
    _check_inputs(logits, target, log_pi)
    tau = _check_tau(tau)
    return cross_entropy(at_least_float32(logits) + tau * log_pi.to(logits.device, torch.float32), target)


def _check_tau(tau: float) -> float:
    tau = float(tau)
    if not math.isfinite(tau) or tau < 0:
        raise ValueError(f"tau must be finite and ≥ 0, got {tau}")
    return tau


def drw_start_epoch(epochs: int, defer: float) -> int:
    """First (1-based) epoch of DRW's re-weighted phase: ⌊defer · epochs⌋ + 1, so ``defer`` is
    the fraction of the epochs trained with plain CE (Cao et al. 2019: 160 of 200, 0.8)."""
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs}")
    if not 0.0 < float(defer) < 1.0:
        raise ValueError(f"defer must lie in (0, 1), got {defer}")
    return math.floor(float(defer) * int(epochs)) + 1


# --------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class LossSpec:
    """One loss configuration of the study.

    ``kind``: ``ce`` | ``inverse_frequency`` | ``focal`` | ``cb_softmax`` | ``cb_focal`` |
    ``logit_adjusted`` (needs ``tau``) | ``drw`` (needs ``beta`` and ``defer``, the fraction of
    the epochs before re-weighting, :func:`drw_start_epoch`).
    ``balanced_data``: train on the balanced full training set instead of the imbalanced split
    (the study's "balanced CE" reference).
    """

    kind: str
    gamma: float = 0.0
    beta: float | None = None
    balanced_data: bool = False
    tau: float | None = None
    defer: float | None = None

    KINDS = ("ce", "inverse_frequency", "focal", "cb_softmax", "cb_focal", "logit_adjusted", "drw")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ValueError(f"unknown loss kind {self.kind!r}; choose one of {self.KINDS}")
        _check_gamma(self.gamma)
        if self.kind.startswith("cb_") or self.kind == "drw":
            if self.beta is None:
                raise ValueError(f"{self.kind} needs beta")
            _check_beta(self.beta)
        elif self.beta is not None:
            raise ValueError(f"beta is only used by the cb_* kinds and drw, not {self.kind!r}")
        if self.kind in ("ce", "inverse_frequency", "cb_softmax", "logit_adjusted", "drw") \
                and self.gamma != 0.0:
            raise ValueError(f"{self.kind} takes no gamma (got {self.gamma}); use focal/cb_focal")
        if (self.kind == "logit_adjusted") != (self.tau is not None):
            raise ValueError(f"tau is needed by logit_adjusted and only used by it ({self.kind!r}, "
                             f"tau={self.tau})")
        if self.tau is not None:
            _check_tau(self.tau)
        if (self.kind == "drw") != (self.defer is not None):
            raise ValueError(f"defer is needed by drw and only used by it ({self.kind!r}, "
                             f"defer={self.defer})")
        if self.defer is not None:
            drw_start_epoch(1, self.defer)

    def as_dict(self) -> dict[str, object]:
        """The fields; ``tau`` and ``defer`` only when set (older kinds keep their identity)."""
        return {k: v for k, v in asdict(self).items()
                if not (k in ("tau", "defer") and v is None)}

    def weights(self, counts: Sequence[int] | torch.Tensor) -> torch.Tensor | None:
        """The per-class weights this loss uses with training-set ``counts`` (None if none;
        for DRW those of its re-weighted phase)."""
        if self.kind == "inverse_frequency":
            return inverse_frequency_weights(counts)
        if self.kind in ("cb_softmax", "cb_focal", "drw"):
            return class_balanced_weights(counts, float(self.beta))  # type: ignore[arg-type]
        return None

    def build(self, counts: Sequence[int] | torch.Tensor, device: torch.device | str = "cpu",
              epoch: int = 1, epochs: int = 1) -> LossFn:
        """A ``loss(logits, target)`` callable for a training set with class ``counts``, for
        (1-based) ``epoch`` of ``epochs``: only DRW depends on them (plain CE before
        :func:`drw_start_epoch`)."""
        if self.kind == "logit_adjusted":
            lp = log_prior(counts).to(device)
            return lambda z, y: logit_adjusted_loss(z, y, lp, float(self.tau))  # type: ignore[arg-type]
        if self.kind == "drw" and epoch < drw_start_epoch(epochs, float(self.defer)):  # type: ignore[arg-type]
            return lambda z, y: cross_entropy(z, y)
        w = self.weights(counts)
        w = None if w is None else w.to(device)
        if self.kind == "ce":
            return lambda z, y: cross_entropy(z, y)
        if self.kind in ("inverse_frequency", "drw"):
            return lambda z, y: cross_entropy(z, y, w)
        if self.kind == "focal":
            return lambda z, y: focal_loss(z, y, self.gamma)
        return lambda z, y: class_balanced_loss(z, y, w, self.gamma)  # type: ignore[arg-type]


BETAS: tuple[float, ...] = (0.9, 0.99, 0.999, 0.9999)
FOCAL_GAMMAS: tuple[float, ...] = (1.0, 1.5, 2.0)


def _g(x: float) -> str:
    return f"{x:g}"


def study_configs() -> dict[str, LossSpec]:
    """The study's 14 rows, keyed exactly like ``common.references.CB_STUDY``."""
    cfgs: dict[str, LossSpec] = {
        "balanced CE": LossSpec("ce", balanced_data=True),
        "CE": LossSpec("ce"),
        "inverse frequency": LossSpec("inverse_frequency"),
    }
    for g in FOCAL_GAMMAS:
        cfgs[f"focal γ={_g(g)}"] = LossSpec("focal", gamma=g)
    for b in BETAS:
        cfgs[f"CB-softmax β={_g(b)}"] = LossSpec("cb_softmax", beta=b)
    for b in BETAS:
        cfgs[f"CB-focal γ=1 β={_g(b)}"] = LossSpec("cb_focal", gamma=1.0, beta=b)
    return cfgs


def extra_configs() -> dict[str, LossSpec]:
    """Two later remedies beside the study's rows: logit-adjusted CE with τ = 1 (Menon et al.
    2021; the balanced softmax of Ren et al. 2020) and deferred re-weighting (Cao et al. 2019:
    plain CE for the first 80 % of the epochs, then CB weights with β = 0.9999)."""
    return {"logit-adjusted τ=1": LossSpec("logit_adjusted", tau=1.0),
            "DRW β=0.9999": LossSpec("drw", beta=0.9999, defer=0.8)}


def all_configs() -> dict[str, LossSpec]:
    """:func:`study_configs` followed by :func:`extra_configs`."""
    return {**study_configs(), **extra_configs()}


def slug(name: str) -> str:
    """A file-name-safe id for a config name (``CB-focal γ=1 β=0.9`` -> ``cb-focal_g1_b0.9``)."""
    out = name.replace("γ=", "g").replace("β=", "b").replace("τ=", "t").replace(" ", "_").lower()
    return "".join(ch for ch in out if ch.isalnum() or ch in "._-")
