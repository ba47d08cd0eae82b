import numpy as np
import pytest
import torch

from common import probe


def test_probe_separates_separable_classes_and_not_random_labels():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 5, generator=g) * 5
    y = torch.randint(0, 3, (600,), generator=g)
    x = centers[y] + 0.1 * torch.randn(600, 5, generator=g)
    res = probe.linear_probe(x[:400], y[:400], x[400:], y[400:])
    assert res["test_accuracy"] == 1.0 and res["converged"] == 1.0
    noise = probe.linear_probe(torch.randn(400, 5, generator=g), y[:400], torch.randn(200, 5, generator=g), y[400:])
    assert noise["test_accuracy"] < 0.6


def test_probe_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        probe.linear_probe(np.zeros((3, 2)), np.zeros(2), np.zeros((1, 2)), np.zeros(1))
