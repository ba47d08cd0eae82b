"""Linear probes: how linearly separable are the classes in a representation?

A multinomial logistic regression (scikit-learn, L-BFGS) on standardised features, fitted on a
training set and scored on a test set. Used for "denoising learns better features" (04) and for
classifiers on learned latents (01).
"""
from __future__ import annotations

import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def _np(a: torch.Tensor | np.ndarray) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def linear_probe(train_x: torch.Tensor | np.ndarray, train_y: torch.Tensor | np.ndarray,
                 test_x: torch.Tensor | np.ndarray, test_y: torch.Tensor | np.ndarray,
                 C: float = 1.0, max_iter: int = 300) -> dict[str, float]:
    """Fit on ``train``, score on ``test``; returns accuracies (in [0, 1]) and fit time.

    ``converged`` is 0.0 when L-BFGS stopped at ``max_iter`` (reported, not hidden).
    """
    xtr, ytr, xte, yte = _np(train_x), _np(train_y), _np(test_x), _np(test_y)
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise ValueError("features and labels differ in length")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(xtr, ytr)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return {
        "train_accuracy": float(clf.score(xtr, ytr)),
        "test_accuracy": float(clf.score(xte, yte)),
        "fit_seconds": time.perf_counter() - t0,
        "converged": float(converged),
    }
