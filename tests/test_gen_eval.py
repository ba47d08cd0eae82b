"""Tests of common.gen_eval: Fréchet distance, coverage KL, classifier features, sharpness."""
import math

import numpy as np
import pytest
import torch
from scipy import linalg

from common import gen_eval as ge


def _closed_form(mu1, c1, mu2, c2):
    covmean = linalg.sqrtm(c1 @ c2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * covmean))


def _random_cov(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_distance_matches_closed_form_on_given_gaussians():
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    c1, c2 = _random_cov(rng, d), _random_cov(rng, d)
    assert ge.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(_closed_form(mu1, c1, mu2, c2), rel=1e-9)


def test_frechet_distance_of_diagonal_gaussians_by_hand():
    # 1-d: (m1-m2)^2 + (s1 - s2)^2
    assert ge.frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]])) \
        == pytest.approx(9.0 + 1.0)
    # isotropic d-dim: |dmu|^2 + d (s1 - s2)^2
    d = 5
    got = ge.frechet_distance(np.zeros(d), 4 * np.eye(d), np.ones(d), np.eye(d))
    assert got == pytest.approx(d + d * (2 - 1) ** 2)


def test_frechet_distance_on_large_samples_approaches_closed_form():
    rng = np.random.default_rng(1)
    d = 4
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    c1, c2 = _random_cov(rng, d), _random_cov(rng, d)
    a = rng.multivariate_normal(mu1, c1, size=200_000)
    b = rng.multivariate_normal(mu2, c2, size=200_000)
    exact = _closed_form(mu1, c1, mu2, c2)
    assert ge.fid_from_features(a, b) == pytest.approx(exact, rel=0.03, abs=2e-3)


def test_frechet_distance_of_identical_sets_is_zero():
    f = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    assert ge.fid_from_features(f, f.clone()) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_rejects_shape_mismatch():
    with pytest.raises(ValueError):
        ge.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_coverage_kl_uniform_and_one_class():
    assert ge.coverage_kl(np.full(10, 0.1)) == pytest.approx(0.0, abs=1e-12)
    one = np.zeros(10); one[3] = 1.0
    assert ge.coverage_kl(one) == pytest.approx(math.log(10))
    hist = ge.class_histogram(torch.tensor([0, 0, 1, 1]))
    assert ge.coverage_kl(hist) == pytest.approx(math.log(10) - math.log(2))


def test_classifier_features_deterministic_in_eval_mode():
    torch.manual_seed(0)
    model = ge.MnistClassifier()
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    model.train()      # features() must switch to eval itself: dropout and BN batch stats off
    f1 = ge.features(model, x)
    f2 = ge.features(model, x[:10])
    assert not model.training
    assert f1.shape == (64, 128)
    # batch statistics would make a sample's features depend on its batch: they must not
    torch.testing.assert_close(f1[:10], f2, rtol=1e-5, atol=1e-6)
    assert torch.equal(f1, ge.features(model, x))


def test_conditional_accuracy_and_histogram():
    class Fixed(ge.MnistClassifier):
        def forward(self, x):   # predicts the label written in pixel (0, 0, 0) * 10
            return torch.nn.functional.one_hot((x[:, 0, 0, 0] * 10).long(), 10).float()

    y = torch.arange(10).repeat(3)
    x = torch.zeros(30, 1, 28, 28)
    x[:, 0, 0, 0] = y / 10 + 0.01
    x[:5, 0, 0, 0] = 0.01      # five samples of digits 0..4 come out as 0
    acc, per = ge.conditional_accuracy(Fixed(), x, y)
    assert acc == pytest.approx(26 / 30)
    assert per[0] == 1.0 and per[1] == pytest.approx(2 / 3) and per[9] == 1.0


def test_sharpness_ink_and_nearest_neighbours():
    flat = torch.full((1, 1, 28, 28), 0.5)
    edge = torch.zeros(1, 1, 28, 28); edge[..., :, 14:] = 1.0
    assert float(ge.sharpness(flat)) == 0.0
    assert float(ge.sharpness(edge)) == pytest.approx(27 / (27 * 27))
    assert float(ge.ink(edge)) == pytest.approx(0.5)
    train = torch.rand(50, 784, generator=torch.Generator().manual_seed(0))
    idx, dist = ge.nearest_neighbours(train[[7, 3]] + 1e-3, train)
    assert idx.tolist() == [7, 3] and (dist < 0.05).all()


def test_as_images_rejects_bad_shape():
    with pytest.raises(ValueError):
        ge.as_images(torch.zeros(3, 100))


def test_cached_classifier_trains_saves_then_loads_the_same_model(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 1, 28, 28, generator=g), torch.arange(10).repeat(7)[:64]
    cfg = {"epochs": 1, "batch_size": 32, "lr": 1e-3, "seed": 0, "arch": {"c1": 2, "c2": 2, "feat": 8}}
    first, info = ge.cached_classifier(x, y, cfg, tmp_path)
    assert not info["cached"] and (tmp_path / f"classifier-{info['key']}.pt").is_file()
    again, info2 = ge.cached_classifier(x, y, cfg, tmp_path)
    assert info2["cached"] and info2["key"] == info["key"]
    assert torch.equal(first(x), again(x))
    _, other = ge.cached_classifier(x, y, {**cfg, "seed": 1}, tmp_path)
    assert other["key"] != info["key"] and not other["cached"]


def test_confident_fraction_by_hand():
    class Fixed(torch.nn.Module):
        """Logits by image: mean pixel 0 -> (5, 0) (p = 0.993), else (0.5, 0) (p = 0.62)."""
        def eval(self):
            return self

        def forward(self, x):
            hi = (x.flatten(1).mean(1) == 0).float()
            return torch.stack([0.5 + 4.5 * hi, torch.zeros_like(hi)], 1)

    x = torch.cat([torch.zeros(3, 1, 28, 28), torch.ones(1, 1, 28, 28)])
    assert ge.confident_fraction(Fixed(), x, 0.9) == 0.75
    assert ge.confident_fraction(Fixed(), x, 0.6) == 1.0
    with pytest.raises(ValueError):
        ge.confident_fraction(Fixed(), x, 1.0)


def test_flattened_curve_rule():
    assert ge.flattened([300, 120, 110])           # |110 - 120| = 10 <= 11
    assert not ge.flattened([300, 130, 110])       # 20 > 11
    assert not ge.flattened([110])
    assert not ge.flattened([100, float("nan")])
