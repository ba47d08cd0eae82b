"""Transductive SVM (TSVM) of Joachims (1999), "Transductive inference for text classification
using support vector machines", ICML 1999, pp. 200-209: the label-switching algorithm of its
Figure 2 (the one SVMlight implements), on top of scikit-learn's ``SVC``; and M1+TSVM, the
baseline row of Kingma et al. (2014), Table 1, as test errors on given features.

Joachims' optimisation problem (his OP 2, with the class-dependent unlabelled costs of his
Figure 2): over the labels ``y*_j`` of the ``k`` unlabelled points and the hyperplane ``(w, b)``
of a kernel machine ``f(x) = <w, phi(x)> + b``,

    min  1/2 |w|^2 + C sum_i xi_i + C*_- sum_{j: y*_j = -1} xi*_j + C*_+ sum_{j: y*_j = +1} xi*_j
    s.t. y_i f(x_i) >= 1 - xi_i,   y*_j f(x*_j) >= 1 - xi*_j,   xi, xi* >= 0,

with the number of unlabelled positives fixed to ``num+``. The algorithm (:func:`tsvm_binary`):

1. *inductive start*: an SVM on the labelled points alone;
2. *initial labelling*: its ``num+`` highest-scoring unlabelled points are labelled +1, the rest
   -1 (:func:`initial_labels`), so the fraction of positives is fixed from here on;
3. *Loop 1* (annealing of the unlabelled cost): ``C*_- := 1e-5``,
   ``C*_+ := 1e-5 * num+ / (k - num+)``; at each level retrain on labelled + unlabelled points;
4. *Loop 2* (label switching, :func:`switch_pairs`): while some unlabelled positive ``m`` and
   negative ``l`` have slacks ``xi*_m > 0``, ``xi*_l > 0``, ``xi*_m + xi*_l > 2``, swap their
   labels and retrain (each swap lowers the objective at the current ``(w, b)``, which Joachims
   proves, so the loop ends; with separate costs the drop is ``(C*_+ + C*_-)(2 - xi*_m - xi*_l)``
   when both slacks are at most 2); the number of positives never changes;
5. double both costs (capped at ``C*``) and return to 4 until both have reached ``C*``.

Realisation with scikit-learn (documented deviations):

* *separate costs*: one ``SVC(C=C)`` whose ``sample_weight`` rescales the cost per point:
  labelled points weight 1 (cost ``C``), unlabelled positives ``C*_+ / C``, unlabelled negatives
  ``C*_- / C`` (libsvm's per-sample ``C_i = C * w_i``: the QP above exactly, hinge loss and an
  unregularised bias, which ``LinearSVC`` would not give).
* *kernel*: ``rbf`` by default with ``gamma = 1 / (d Var(X))`` (scikit-learn's ``"scale"``), so
  as to match the repository's M1+SVC (:func:`common.kingma.feature_classifier_errors`, an RBF
  ``SVC``, ``C = 10``, ``gamma="scale"``); the variance is taken over labelled and unlabelled
  points together and then held fixed through all retrainings. ``linear`` is available.
* *Gram matrix*: with at most ``gram_limit`` points the kernel matrix is computed once and every
  retraining uses ``kernel="precomputed"`` (hundreds of refits share it; 10,100 points take
  0.8 GB in float64); above it each fit computes kernels itself.
* *final level*: read literally, Figure 2 stops as soon as both costs have been doubled up to
  ``C*``, so the last retraining happens below ``C*``; like SVMlight's code (which returns only
  after a switch-free pass at full unlabelled cost) we run one more level at ``C*_- = C*_+ = C*``.
* *multi-switch* (``max_pairs``): Figure 2 swaps one pair per retraining. With ``max_pairs=None``
  (the default here) every round swaps, at once, the disjoint pairs formed by the positives and
  the negatives in decreasing order of slack while the pair condition holds (the "multiple
  switching" of Sindhwani & Keerthi 2006, "Large scale semi-supervised linear SVMs", SIGIR);
  at fixed ``(w, b)`` every point's term is separate, so the drops of the pairs add up;
  ``max_pairs=1`` is Joachims' rule.
* *descent check*: in exact arithmetic every switch, then the retraining, lowers the primal
  objective, which is why Loop 2 ends; libsvm stops at tolerance ``tol``, and with tiny
  unlabelled costs on 10,000 points near-tied pairs then kept switching (one level of one
  class ran into 100 retrainings on MNIST features before this check). So a switch is kept only if the retrained objective (computed from the fit) is
  lower than before; otherwise the previous labels and machine are kept and the level ends
  (counted in ``reverted``). ``max_rounds`` retrainings per level remain a hard cap (counted in
  ``capped_levels``).

Multiclass (:func:`tsvm_ovr`): one-vs-rest, one binary TSVM per class with its own ``num+ =
round(prior_c * k)``; ``prior_c`` is the class's fraction among the labelled points by default
(for the balanced MNIST draws of Kingma et al. that is exactly the uniform 1/10), or a given
prior; prediction is the class of the largest decision value.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np
import torch

KERNELS = ("rbf", "linear")
# Joachims 1999, Fig. 2: the unlabelled cost C*_- starts at 1e-5 and doubles each level.
C_STAR_START = 1e-5
# default unlabelled subsample for M1+TSVM on CPU (of the 50,000 MNIST training points), seeded.
# Measured on one core (2-core shared machine, 100 labels, 50-dim PCA features of MNIST):
# 5,000 points 32 s per 10-class draw; 10,000 points 35-47 s per class, i.e. ~7 min per draw.
N_UNLABELLED = 10_000
# kernel matrices up to this many points are precomputed once (float64: 8 n^2 bytes)
GRAM_LIMIT = 12_000
# libsvm's kernel-row cache per fit (MB; scikit-learn's default is 200)
CACHE_MB = 200


# --------------------------------------------------------------------------- checks
def _as_array(a: Any, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _check_inputs(x_l: Any, y_l: Any, x_u: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x_l = _as_array(x_l, "x_l").astype(np.float64, copy=False)
    y_l = _as_array(y_l, "y_l")
    x_u = _as_array(x_u, "x_u").astype(np.float64, copy=False)
    if x_l.ndim != 2:
        raise ValueError(f"x_l must be 2-D [n_labelled, d], got shape {x_l.shape}")
    if y_l.ndim != 1 or len(y_l) != len(x_l):
        raise ValueError(f"y_l must be 1-D with one label per row of x_l ({len(x_l)}), "
                         f"got shape {y_l.shape}")
    if x_u.ndim != 2 or x_u.shape[1] != x_l.shape[1]:
        raise ValueError(f"x_u must be 2-D with the {x_l.shape[1]} columns of x_l, "
                         f"got shape {x_u.shape}")
    if len(x_u) < 2:
        raise ValueError(f"x_u needs at least 2 unlabelled points, got {len(x_u)}")
    if not (np.isfinite(x_l).all() and np.isfinite(x_u).all()):
        raise ValueError("x_l and x_u must be finite")
    return x_l, y_l, x_u


def _check_costs(kernel: str, C: float, C_star: float | None, max_pairs: int | None,
                 max_rounds: int) -> float:
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; use one of {KERNELS}")
    if not C > 0:
        raise ValueError(f"C must be > 0, got {C}")
    C_star = C if C_star is None else C_star
    if not C_star > 0:
        raise ValueError(f"C_star must be > 0, got {C_star}")
    if max_pairs is not None and max_pairs < 1:
        raise ValueError(f"max_pairs must be None or >= 1, got {max_pairs}")
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
    return float(C_star)


# --------------------------------------------------------------------------- kernels
def scale_gamma(x: np.ndarray) -> float:
    """scikit-learn's ``gamma="scale"``, ``1 / (d Var(x))`` over all entries of ``x [n, d]``."""
    var = float(x.var())
    return 1.0 / (x.shape[1] * var) if var > 0 else 1.0


def kernel_matrix(a: np.ndarray, b: np.ndarray, kernel: str, gamma: float) -> np.ndarray:
    """``K(a, b)`` as float64 ``[len(a), len(b)]``: ``exp(-gamma |a_i - b_j|^2)`` or ``a_i . b_j``."""
    if kernel == "linear":
        return a @ b.T
    if kernel == "rbf":
        d2 = a @ b.T                                     # in place: one n x m buffer in all
        d2 *= -2.0
        d2 += (a * a).sum(1)[:, None]
        d2 += (b * b).sum(1)[None, :]
        np.maximum(d2, 0.0, out=d2)
        return np.exp(-gamma * d2, out=d2)
    raise ValueError(f"unknown kernel {kernel!r}; use one of {KERNELS}")


class _Machine:
    """Fits ``SVC`` on the first ``n`` of its points (the labelled block, ``n = n_l``) or on all of
    them (labelled then unlabelled) with per-point costs; one precomputed Gram matrix (when small
    enough) is shared by every retraining and every one-vs-rest problem."""

    def __init__(self, x: np.ndarray, kernel: str, gamma: float | str, C: float,
                 gram_limit: int, tol: float) -> None:
        self.x, self.kernel, self.C, self.tol = x, kernel, C, tol
        if isinstance(gamma, str) and gamma != "scale":
            raise ValueError(f"gamma must be 'scale' or a number > 0, got {gamma!r}")
        self.gamma = scale_gamma(x) if gamma == "scale" else float(gamma)
        if not self.gamma > 0:
            raise ValueError(f"gamma must be 'scale' or > 0, got {gamma}")
        self.gram = kernel_matrix(x, x, kernel, self.gamma) if len(x) <= gram_limit else None
        self.n_fits = 0

    def fit(self, y: np.ndarray, weight: np.ndarray | None, n: int | None = None) -> Any:
        """``SVC(C)`` on points ``[0, n)`` (all: ``None``) with labels ``y``, per-point cost
        ``C * weight``."""
        from sklearn import config_context
        from sklearn.svm import SVC

        n = len(self.x) if n is None else n
        with config_context(assume_finite=True):       # checked once in _check_inputs
            if self.gram is not None:
                k = self.gram if n == len(self.x) else np.ascontiguousarray(self.gram[:n, :n])
                svc = SVC(C=self.C, kernel="precomputed", tol=self.tol, cache_size=CACHE_MB)
                svc.fit(k, y, sample_weight=weight)
            else:
                svc = SVC(C=self.C, kernel=self.kernel, gamma=self.gamma, tol=self.tol,
                          cache_size=CACHE_MB)
                svc.fit(self.x[:n], y, sample_weight=weight)
        self.n_fits += 1
        return svc

    def coef(self, svc: Any) -> np.ndarray:
        """The dual coefficients ``alpha_i y_i`` of all the points ``svc`` was fitted on."""
        a = np.zeros(svc.shape_fit_[0])
        a[svc.support_] = svc.dual_coef_[0]
        return a

    def decision(self, svc: Any, rows: slice | None = None, x: np.ndarray | None = None,
                 chunk: int = 2048) -> np.ndarray:
        """``f`` of a fitted binary ``svc`` at the training points ``rows`` (a slice: a view of
        the Gram matrix times the dual coefficients) or at new points ``x`` (kernels against
        the support vectors); ``f > 0`` means +1 (``svc.classes_ == [-1, 1]``)."""
        coef, b = svc.dual_coef_[0], float(svc.intercept_[0])
        sv = svc.support_                                # indices into the first n points
        if x is None:
            if self.gram is not None:
                return self.gram[rows, :svc.shape_fit_[0]] @ self.coef(svc) + b
            x = self.x[rows]
        out = np.empty(len(x))
        for s in range(0, len(x), chunk):
            out[s:s + chunk] = kernel_matrix(x[s:s + chunk], self.x[sv], self.kernel, self.gamma) @ coef + b
        return out


# --------------------------------------------------------------------------- steps
def initial_labels(scores: np.ndarray, num_pos: int) -> np.ndarray:
    """Joachims 1999, Fig. 2, *initial labelling*: the ``num_pos`` unlabelled points with the
    highest inductive scores ``w . x*_j + b`` get +1, the others -1 (ties broken by index)."""
    scores = np.asarray(scores, dtype=np.float64)
    if not 0 <= num_pos <= len(scores):
        raise ValueError(f"num_pos must be in 0..{len(scores)}, got {num_pos}")
    y = -np.ones(len(scores), dtype=np.int64)
    y[np.argsort(-scores, kind="stable")[:num_pos]] = 1
    return y


def switch_pairs(labels: np.ndarray, slack: np.ndarray, max_pairs: int | None = None
                 ) -> tuple[np.ndarray, int]:
    """Joachims 1999, Fig. 2, *Loop 2* (label switching): swap the labels of pairs of unlabelled
    points, one labelled +1 (``m``) and one -1 (``l``), with ``xi*_m > 0``, ``xi*_l > 0`` and
    ``xi*_m + xi*_l > 2``. Positives and negatives are each taken in decreasing order of slack
    and paired rank by rank while the condition holds, at most ``max_pairs`` pairs (``None``: all
    such pairs, the multi-switch of Sindhwani & Keerthi 2006; 1: Joachims' one pair).
    Returns the new labels (a copy; the number of +1 is unchanged) and the number of pairs."""
    labels = np.asarray(labels)
    slack = np.asarray(slack, dtype=np.float64)
    if labels.shape != slack.shape or labels.ndim != 1:
        raise ValueError(f"labels and slack must be 1-D of one shape, got {labels.shape} and {slack.shape}")
    if not np.isin(labels, (-1, 1)).all():
        raise ValueError("labels must be +1 or -1")
    pos = np.flatnonzero((labels == 1) & (slack > 0))
    neg = np.flatnonzero((labels == -1) & (slack > 0))
    pos = pos[np.argsort(-slack[pos], kind="stable")]
    neg = neg[np.argsort(-slack[neg], kind="stable")]
    n = min(len(pos), len(neg))
    if max_pairs is not None:
        n = min(n, max_pairs)
    ok = slack[pos[:n]] + slack[neg[:n]] > 2.0
    n = int(np.argmin(ok)) if not ok.all() else n    # the sums decrease with the rank
    out = labels.copy()
    out[pos[:n]], out[neg[:n]] = -1, 1
    return out, n


def hinge_slack(y: np.ndarray, f: np.ndarray) -> np.ndarray:
    """``xi = max(0, 1 - y f)``: the slacks of the QP at its solution."""
    return np.maximum(0.0, 1.0 - y * f)


# --------------------------------------------------------------------------- binary TSVM
@dataclass
class BinaryTSVM:
    """A fitted binary TSVM: transductive labels ``labels`` (+1/-1) of the unlabelled points,
    their final decision values ``decision_u``, the final ``SVC`` (trained on labelled and
    unlabelled points at the last level) and the algorithm's counts."""
    labels: np.ndarray
    decision_u: np.ndarray
    svc: Any
    machine: _Machine
    num_pos: int
    levels: int = 0
    switches: int = 0
    n_fits: int = 0
    capped_levels: int = 0          # levels whose Loop 2 hit max_rounds
    reverted: int = 0               # levels ended by a switch whose refit did not lower the objective
    history: list[dict[str, float]] = field(default_factory=list)

    def decision_function(self, x: Any) -> np.ndarray:
        """Decision values ``f(x)`` of new points (``> 0``: +1)."""
        x = _as_array(x, "x").astype(np.float64, copy=False)
        return self.machine.decision(self.svc, x=x)

    def predict(self, x: Any) -> np.ndarray:
        return np.where(self.decision_function(x) > 0, 1, -1)


def _tsvm_on(machine: _Machine, y_l: np.ndarray, num_pos: int, C_star: float,
             c_star_start: float, max_pairs: int | None, max_rounds: int) -> BinaryTSVM:
    """Figure 2 on ``machine``'s points: the first ``len(y_l)`` labelled ``y_l``, the rest not."""
    n_l = len(y_l)
    unl = slice(n_l, len(machine.x))
    k = len(machine.x) - n_l
    if not 1 <= num_pos <= k - 1:
        raise ValueError(f"num_pos must be in 1..{k - 1} (k = {k} unlabelled points), got {num_pos}")
    C = machine.C
    fits0 = machine.n_fits
    # 1. inductive start, 2. initial labelling
    svc = machine.fit(y_l, None, n_l)
    y_u = initial_labels(machine.decision(svc, rows=unl), num_pos)
    res = BinaryTSVM(labels=y_u, decision_u=np.empty(0), svc=svc, machine=machine, num_pos=num_pos)
    # 3. Loop 1: C*_- := 1e-5, C*_+ := 1e-5 num+ / (k - num+); the last level at C* itself
    c_neg = min(c_star_start, C_star)
    c_pos = min(c_star_start * num_pos / (k - num_pos), C_star)
    while True:
        def refit(y_u: np.ndarray) -> tuple[Any, np.ndarray, float]:
            """Retrain on all points; the decision values of the unlabelled ones and the primal
            objective 1/2 |w|^2 + sum_i C_i xi_i (|w|^2 = sum_i alpha_i y_i (f(x_i) - b))."""
            cost = np.concatenate([np.full(n_l, C), np.where(y_u > 0, c_pos, c_neg)])
            y = np.concatenate([y_l, y_u])
            s = machine.fit(y, cost / C)
            f, coef = machine.decision(s, rows=slice(None)), machine.coef(s)
            obj = 0.5 * float(coef @ (f - s.intercept_[0])) + float(cost @ hinge_slack(y, f))
            return s, f[n_l:], obj

        svc, f_u, obj = refit(y_u)
        rounds, switched = 0, 0
        while True:  # 4. Loop 2: switch pairs with xi*_m + xi*_l > 2, retrain
            y_new, n = switch_pairs(y_u, hinge_slack(y_u, f_u), max_pairs)
            if n == 0:
                break
            if rounds >= max_rounds:
                res.capped_levels += 1
                break
            rounds += 1
            svc_new, f_new, obj_new = refit(y_new)
            if not obj_new < obj:
                # a switch lowers the objective (Joachims 1999); when the refit does not (the solver
                # stops at tolerance ``tol``), keep the labels and machine before it, end the level
                res.reverted += 1
                break
            y_u, svc, f_u, obj = y_new, svc_new, f_new, obj_new
            res.switches += n
            switched += n
        res.levels += 1
        res.history.append({"c_neg": c_neg, "c_pos": c_pos, "rounds": rounds, "pairs": switched,
                            "objective": obj})
        if c_neg >= C_star and c_pos >= C_star:
            break
        # 5. C*_- := min(2 C*_-, C*), C*_+ := min(2 C*_+, C*)
        c_neg, c_pos = min(2 * c_neg, C_star), min(2 * c_pos, C_star)
    res.labels, res.decision_u, res.svc = y_u, f_u, svc
    res.n_fits = machine.n_fits - fits0
    return res


def tsvm_binary(x_l: Any, y_l: Any, x_u: Any, *, num_pos: int | None = None,
                pos_fraction: float | None = None, C: float = 10.0, C_star: float | None = None,
                kernel: Literal["rbf", "linear"] = "rbf", gamma: float | str = "scale",
                c_star_start: float = C_STAR_START, max_pairs: int | None = None,
                max_rounds: int = 100, tol: float = 1e-3, gram_limit: int = GRAM_LIMIT
                ) -> BinaryTSVM:
    """Binary TSVM (Joachims 1999, Fig. 2; steps in the module docstring) on labelled points
    ``x_l [n, d]`` with labels ``y_l`` in {-1, +1} and unlabelled points ``x_u [k, d]``.

    ``num+`` (the unlabelled points labelled +1 throughout): ``num_pos``, else
    ``round(pos_fraction * k)``, else the labelled fraction of positives (Joachims' default).
    ``C``: labelled cost; ``C_star``: the final unlabelled cost (default ``C``), reached by
    doubling from ``c_star_start``. ``max_pairs``/``max_rounds``: see the module docstring."""
    x_l, y_l, x_u = _check_inputs(x_l, y_l, x_u)
    C_star = _check_costs(kernel, C, C_star, max_pairs, max_rounds)
    if not np.isin(y_l, (-1, 1)).all() or not ((y_l == 1).any() and (y_l == -1).any()):
        raise ValueError("y_l must hold labels -1 and +1, each at least once")
    k = len(x_u)
    if num_pos is None:
        frac = float((y_l == 1).mean()) if pos_fraction is None else float(pos_fraction)
        if not 0 < frac < 1:
            raise ValueError(f"pos_fraction must be in (0, 1), got {frac}")
        num_pos = min(max(int(round(frac * k)), 1), k - 1)
    machine = _Machine(np.concatenate([x_l, x_u]), kernel, gamma, C, gram_limit, tol)
    return _tsvm_on(machine, y_l.astype(np.int64), int(num_pos), C_star, c_star_start,
                    max_pairs, max_rounds)


# --------------------------------------------------------------------------- one-vs-rest
@dataclass
class OneVsRestTSVM:
    """One binary TSVM per class; ``labels`` are the unlabelled points' classes by the largest
    final decision value, ``decision_u [k, K]`` those values."""
    classes: np.ndarray
    machines: list[BinaryTSVM]
    labels: np.ndarray
    decision_u: np.ndarray
    prior: np.ndarray
    seconds: float

    def decision_function(self, x: Any) -> np.ndarray:
        return np.stack([m.decision_function(x) for m in self.machines], 1)

    def predict(self, x: Any) -> np.ndarray:
        return self.classes[self.decision_function(x).argmax(1)]

    @property
    def n_fits(self) -> int:
        return sum(m.n_fits for m in self.machines)


def tsvm_ovr(x_l: Any, y_l: Any, x_u: Any, *, n_classes: int | None = None,
             class_prior: Sequence[float] | Literal["labelled", "uniform"] = "labelled",
             C: float = 10.0, C_star: float | None = None,
             kernel: Literal["rbf", "linear"] = "rbf", gamma: float | str = "scale",
             c_star_start: float = C_STAR_START, max_pairs: int | None = None,
             max_rounds: int = 100, tol: float = 1e-3, gram_limit: int = GRAM_LIMIT
             ) -> OneVsRestTSVM:
    """Multiclass TSVM, one-vs-rest: for each class ``c`` in ``0..n_classes-1`` (default:
    ``max(y_l) + 1``; every class needs a labelled point) a binary TSVM of ``c`` against the rest
    whose ``num+ = round(prior_c k)``, with ``class_prior`` ``"labelled"`` (the class fractions
    among the labelled points), ``"uniform"`` (``1/K``) or given. All problems share one kernel
    (``gamma="scale"`` on labelled + unlabelled points) and Gram matrix."""
    x_l, y_l, x_u = _check_inputs(x_l, y_l, x_u)
    C_star = _check_costs(kernel, C, C_star, max_pairs, max_rounds)
    if not np.issubdtype(y_l.dtype, np.integer) or (y_l < 0).any():
        raise ValueError("y_l must hold non-negative integer class labels")
    K = int(y_l.max()) + 1 if n_classes is None else int(n_classes)
    counts = np.bincount(y_l, minlength=K)
    if len(counts) > K:
        raise ValueError(f"y_l has labels >= n_classes={K}")
    if K < 2:
        raise ValueError(f"need at least 2 classes, got n_classes={K}")
    missing = np.flatnonzero(counts == 0)
    if len(missing):
        raise ValueError(f"classes {missing.tolist()} have no labelled point; a one-vs-rest TSVM "
                         "needs at least one labelled example per class")
    if isinstance(class_prior, str):
        if class_prior == "labelled":
            prior = counts / counts.sum()
        elif class_prior == "uniform":
            prior = np.full(K, 1.0 / K)
        else:
            raise ValueError(f"class_prior must be 'labelled', 'uniform' or {K} fractions, "
                             f"got {class_prior!r}")
    else:
        prior = np.asarray(class_prior, dtype=np.float64)
        if prior.shape != (K,) or (prior <= 0).any() or not np.isclose(prior.sum(), 1.0):
            raise ValueError(f"class_prior must be {K} positive fractions summing to 1, got {prior}")
    t0 = time.perf_counter()
    machine = _Machine(np.concatenate([x_l, x_u]), kernel, gamma, C, gram_limit, tol)
    k = len(x_u)
    fitted = []
    for c in range(K):
        num_pos = min(max(int(round(prior[c] * k)), 1), k - 1)
        fitted.append(_tsvm_on(machine, np.where(y_l == c, 1, -1), num_pos, C_star,
                               c_star_start, max_pairs, max_rounds))
    dec = np.stack([m.decision_u for m in fitted], 1)
    return OneVsRestTSVM(classes=np.arange(K), machines=fitted, labels=dec.argmax(1),
                         decision_u=dec, prior=prior, seconds=time.perf_counter() - t0)


# --------------------------------------------------------------------------- M1+TSVM
def unlabelled_subset(n_total: int, labelled: np.ndarray, n_unlabelled: int | None,
                      seed: int) -> np.ndarray:
    """Sorted indices of ``n_unlabelled`` points (``None``: all) drawn without replacement, with
    ``numpy.random.default_rng(seed)``, among the ``n_total`` training points not in ``labelled``."""
    rest = np.setdiff1d(np.arange(n_total), np.asarray(labelled))
    if n_unlabelled is None or n_unlabelled >= len(rest):
        return rest
    if n_unlabelled < 2:
        raise ValueError(f"n_unlabelled must be >= 2 or None, got {n_unlabelled}")
    return np.sort(np.random.default_rng(seed).choice(rest, n_unlabelled, replace=False))


def feature_tsvm_errors(f_train: torch.Tensor, y_train: torch.Tensor, labelled: torch.Tensor,
                        f_test: torch.Tensor, y_test: torch.Tensor, *, C: float = 10.0,
                        n_unlabelled: int | None = N_UNLABELLED, seeds: Sequence[int] | None = None,
                        **kw: Any) -> tuple[list[float], list[dict[str, Any]]]:
    """M1+TSVM test error (%) for each draw (row of ``labelled [R, N_l]``): a one-vs-rest
    :func:`tsvm_ovr` (RBF, ``C = C* = 10``, ``gamma="scale"``: the kernel and cost of M1+SVC,
    :func:`common.kingma.feature_classifier_errors`) on the labelled features of the draw and
    ``n_unlabelled`` other training points (a subsample drawn with seed ``seeds[r]``, default
    the row index; ``None``: all of them), then the test set classified by the final one-vs-rest
    machines (no test point or test label enters training). Returns the errors and, per draw,
    the TSVM's counts (fits, switches, levels capped, seconds). ``kw`` goes to :func:`tsvm_ovr`."""
    f_tr = f_train.detach().cpu().double().numpy()
    f_te = f_test.detach().cpu().double().numpy()
    y_tr, y_te = y_train.cpu().numpy(), y_test.cpu().numpy()
    n_classes = int(max(y_tr.max(), y_te.max())) + 1
    rows = labelled.cpu().numpy()
    seeds = list(range(len(rows))) if seeds is None else list(seeds)
    if len(seeds) != len(rows):
        raise ValueError(f"seeds must give one seed per draw ({len(rows)}), got {len(seeds)}")
    errs, info = [], []
    for idx, seed in zip(rows, seeds):
        unl = unlabelled_subset(len(f_tr), idx, n_unlabelled, int(seed))
        t0 = time.perf_counter()
        model = tsvm_ovr(f_tr[idx], y_tr[idx], f_tr[unl], n_classes=n_classes, C=C, **kw)
        pred = model.predict(f_te)
        errs.append(round(100.0 * float((pred != y_te).mean()), 3))
        info.append({"fits": model.n_fits, "switches": sum(m.switches for m in model.machines),
                     "capped_levels": sum(m.capped_levels for m in model.machines),
                     "reverted": sum(m.reverted for m in model.machines),
                     "n_unlabelled": len(unl), "seconds": round(time.perf_counter() - t0, 2)})
    return errs, info
