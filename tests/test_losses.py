"""Unit tests of common.losses (small synthetic tensors, fast)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from common import losses

COUNTS = [5000, 250, 5000, 5000, 250, 5000, 250, 5000, 5000, 5000]


def _batch(n: int = 64, c: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * 3, torch.randint(0, c, (n,), generator=g)


def test_focal_gamma0_equals_ce():
    z, y = _batch()
    assert torch.allclose(losses.focal_loss(z, y, 0.0), F.cross_entropy(z, y), atol=1e-6)
    assert torch.allclose(losses.cross_entropy(z, y), F.cross_entropy(z, y), atol=1e-6)


def test_focal_matches_definition_and_down_weights_easy_examples():
    z, y = _batch()
    p_t = F.softmax(z, 1).gather(1, y[:, None]).squeeze(1)
    for gamma in (1.0, 1.5, 2.0):
        ref = (-(1 - p_t) ** gamma * torch.log(p_t)).mean()
        got = losses.focal_loss(z, y, gamma)
        assert torch.allclose(got, ref, rtol=1e-5, atol=1e-6)
        assert got < losses.focal_loss(z, y, 0.0)  # (1-p_t)^γ < 1 for every example


def test_focal_gradient_finite_for_confident_predictions():
    z = torch.tensor([[50.0, 0.0, 0.0]], requires_grad=True)
    loss = losses.focal_loss(z, torch.tensor([0]), 2.0)
    loss.backward()
    assert torch.isfinite(z.grad).all()


def test_effective_number_closed_form_equals_recursion():
    for beta in (0.0, 0.5, 0.9, 0.99, 0.999, 0.9999):
        for n in (1, 2, 7, 250, 5000):
            closed = float(losses.effective_number(n, beta))
            rec = losses.effective_number_recursive(n, beta)
            assert math.isclose(closed, rec, rel_tol=1e-9), (beta, n, closed, rec)


def test_effective_number_limits():
    n = torch.tensor([1, 10, 250, 5000])
    assert torch.equal(losses.effective_number(n, 0.0), torch.ones(4, dtype=torch.float64))
    assert torch.allclose(losses.effective_number(n, 1 - 1e-12), n.double(), rtol=1e-6)
    e = losses.effective_number(n, 0.99)
    assert torch.all(e[1:] > e[:-1]) and torch.all(e <= 1 / (1 - 0.99) + 1e-9)


@pytest.mark.parametrize("beta", [0.0, 0.9, 0.99, 0.999, 0.9999])
def test_cb_weights_sum_to_num_classes(beta):
    w = losses.class_balanced_weights(COUNTS, beta)
    assert w.shape == (10,) and w.dtype == torch.float32
    assert math.isclose(float(w.sum()), 10.0, rel_tol=1e-6)
    assert math.isclose(float(losses.inverse_frequency_weights(COUNTS).sum()), 10.0, rel_tol=1e-6)


def test_cb_beta0_is_unweighted():
    w = losses.class_balanced_weights(COUNTS, 0.0)
    assert torch.allclose(w, torch.ones(10))
    z, y = _batch()
    assert torch.allclose(losses.class_balanced_loss(z, y, w), F.cross_entropy(z, y), atol=1e-6)
    spec = losses.LossSpec("cb_softmax", beta=0.0)
    assert torch.allclose(spec.build(COUNTS)(z, y), F.cross_entropy(z, y), atol=1e-6)


def test_cb_approaches_inverse_frequency_as_beta_to_1():
    inv = losses.inverse_frequency_weights(COUNTS)
    errs = [float((losses.class_balanced_weights(COUNTS, b) - inv).abs().max())
            for b in (0.99, 0.999, 0.9999, 1 - 1e-6, 1 - 1e-9)]
    assert all(a > b for a, b in zip(errs, errs[1:])), errs   # monotone approach
    assert errs[-1] < 1e-4
    assert errs[0] > 0.1  # and β=0.99 is far from it (the test can tell them apart)


def test_inverse_frequency_is_weighted_mean():
    z, y = _batch()
    w = losses.inverse_frequency_weights(COUNTS)
    per = F.cross_entropy(z, y, reduction="none")
    ref = (w[y] * per).sum() / w[y].sum()
    got = losses.LossSpec("inverse_frequency").build(COUNTS)(z, y)
    assert torch.allclose(got, ref, atol=1e-6)
    # scale matches CE when all labels share one class
    y1 = torch.full_like(y, 1)
    assert torch.allclose(losses.cross_entropy(z, y1, w), F.cross_entropy(z, y1), atol=1e-6)


def test_cb_focal_is_weighted_focal_mean():
    z, y = _batch()
    w = losses.class_balanced_weights(COUNTS, 0.999)
    p_t = F.softmax(z, 1).gather(1, y[:, None]).squeeze(1)
    ref = (w[y] * -(1 - p_t) * torch.log(p_t)).mean()
    got = losses.LossSpec("cb_focal", gamma=1.0, beta=0.999).build(COUNTS)(z, y)
    assert torch.allclose(got, ref, rtol=1e-5)


def test_losses_accept_bf16_logits_and_return_float32():
    z, y = _batch()
    out = losses.focal_loss(z.bfloat16(), y, 1.0)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("fn", [
    lambda z, y: losses.cross_entropy(z, y),
    lambda z, y: losses.focal_loss(z, y, 1.0),
    lambda z, y: losses.class_balanced_loss(z, y, torch.ones(10), 1.0),
])
def test_losses_reject_bad_shapes_and_dtypes(fn):
    z, y = _batch()
    with pytest.raises(ValueError, match="logits must be \\[N, C\\]"):
        fn(z[0], y)
    with pytest.raises(ValueError, match="target must be \\[N\\]"):
        fn(z, y[:-1])
    with pytest.raises(ValueError, match="int64"):
        fn(z, y.int())
    with pytest.raises(ValueError, match="floating-point"):
        fn(z.long(), y)
    with pytest.raises(ValueError, match="target must be \\[N\\]"):
        fn(z, y[:, None])


def test_bad_weights_and_hyperparameters_rejected():
    z, y = _batch()
    with pytest.raises(ValueError, match="weight must be \\[C\\]"):
        losses.cross_entropy(z, y, torch.ones(9))
    with pytest.raises(ValueError, match="weight must be floating"):
        losses.focal_loss(z, y, 1.0, torch.ones(10, dtype=torch.long))
    with pytest.raises(ValueError, match="gamma"):
        losses.focal_loss(z, y, -1.0)
    with pytest.raises(ValueError, match="beta"):
        losses.class_balanced_weights(COUNTS, 1.0)
    with pytest.raises(ValueError, match="counts"):
        losses.class_balanced_weights([10, 0, 5], 0.9)
    with pytest.raises(ValueError, match="counts"):
        losses.inverse_frequency_weights([[1, 2]])
    with pytest.raises(ValueError, match="unknown loss kind"):
        losses.LossSpec("hinge")
    with pytest.raises(ValueError, match="needs beta"):
        losses.LossSpec("cb_focal", gamma=1.0)
    with pytest.raises(ValueError, match="takes no gamma"):
        losses.LossSpec("ce", gamma=1.0)


@pytest.mark.parametrize("kind", ["ce", "inverse_frequency", "focal", "cb_softmax", "cb_focal"])
@pytest.mark.parametrize("label", [-100, -1, 10])
def test_every_loss_refuses_labels_outside_the_classes(kind, label):
    """-100 is not an ignore index here: CE and inverse frequency refuse it like focal/CB."""
    gamma = 1.0 if "focal" in kind else 0.0
    loss = losses.LossSpec(kind, gamma=gamma, beta=0.999 if kind.startswith("cb_") else None
                           ).build(COUNTS)
    z, y = _batch()
    y[3] = label
    with pytest.raises(ValueError, match=f"labels outside \\[0, 10\\): \\[{label}\\]"):
        loss(z, y)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_gamma_beta_weights_and_counts_rejected(bad):
    z, y = _batch()
    with pytest.raises(ValueError, match="gamma must be finite"):
        losses.LossSpec("focal", gamma=bad)
    with pytest.raises(ValueError, match="gamma must be finite"):
        losses.focal_loss(z, y, bad)
    with pytest.raises(ValueError, match="beta"):
        losses.LossSpec("cb_focal", gamma=1.0, beta=bad)
    w = torch.ones(10)
    w[2] = bad
    for fn in (lambda: losses.cross_entropy(z, y, w), lambda: losses.focal_loss(z, y, 1.0, w),
               lambda: losses.class_balanced_loss(z, y, w)):
        with pytest.raises(ValueError, match="weight must be finite"):
            fn()
    with pytest.raises(ValueError, match="counts must hold positive integers"):
        losses.inverse_frequency_weights([bad] + COUNTS[1:])


def test_ce_gather_matches_pytorch_cross_entropy_weighted_and_not():
    z, y = _batch(n=256)
    w = losses.class_balanced_weights(COUNTS, 0.99)
    torch.testing.assert_close(losses.cross_entropy(z, y), F.cross_entropy(z, y))
    torch.testing.assert_close(losses.cross_entropy(z, y, w), F.cross_entropy(z, y, weight=w))


def test_study_configs_match_reference_rows():
    from common.references import CB_STUDY

    cfgs = losses.study_configs()
    assert list(cfgs) == list(CB_STUDY)
    assert len({losses.slug(n) for n in cfgs}) == len(cfgs)  # file names are unique
    assert cfgs["balanced CE"].balanced_data and not cfgs["CE"].balanced_data


# --------------------------------------------------------------------------- logit adjustment, DRW
def test_log_prior_and_logit_adjusted_loss_by_hand():
    """Menon et al. 2021: CE on z + τ log π, π_y = n_y / Σ n; τ = 0 is plain CE."""
    z, y = _batch()
    prior = torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS)
    torch.testing.assert_close(losses.log_prior(COUNTS), torch.log(prior).float())
    for tau in (0.5, 1.0, 2.0):
        adj = z.double() + tau * torch.log(prior)
        ref = (torch.logsumexp(adj, 1) - adj.gather(1, y[:, None]).squeeze(1)).mean()
        got = losses.logit_adjusted_loss(z, y, losses.log_prior(COUNTS), tau)
        assert got.dtype == torch.float32
        assert math.isclose(float(got), float(ref), rel_tol=1e-5), tau
    assert torch.allclose(losses.logit_adjusted_loss(z, y, losses.log_prior(COUNTS), 0.0),
                          F.cross_entropy(z, y), atol=1e-6)
    # the shift is per class: a minority label's loss grows, so its logit is pushed up more
    one = torch.zeros(1, 10)
    minority, majority = torch.tensor([1]), torch.tensor([0])
    lp = losses.log_prior(COUNTS)
    assert losses.logit_adjusted_loss(one, minority, lp) > losses.logit_adjusted_loss(one, majority, lp)
    with pytest.raises(ValueError, match="tau"):
        losses.logit_adjusted_loss(z, y, lp, -1.0)
    with pytest.raises(ValueError, match="weight must be \\[C\\]"):
        losses.logit_adjusted_loss(z, y, lp[:9])


def test_balanced_softmax_is_logit_adjustment_with_tau_1():
    """Ren et al. 2020: −log(n_y e^{z_y} / Σ_j n_j e^{z_j}), written out in float64."""
    z, y = _batch(n=128)
    n = torch.tensor(COUNTS, dtype=torch.float64)
    e = n * torch.exp(z.double())
    ref = -torch.log(e.gather(1, y[:, None]).squeeze(1) / e.sum(1)).mean()
    got = losses.LossSpec("logit_adjusted", tau=1.0).build(COUNTS)(z, y)
    assert math.isclose(float(got), float(ref), rel_tol=1e-5)
    assert losses.extra_configs()["logit-adjusted τ=1"] == losses.LossSpec("logit_adjusted", tau=1.0)


def test_drw_is_plain_ce_until_the_stated_epoch_then_cb_weighted_mean():
    """Cao et al. 2019: CE for ⌊0.8·epochs⌋ epochs, then CE weighted by CB(β) weights."""
    assert losses.drw_start_epoch(200, 0.8) == 161       # Cao et al.: re-weighting after epoch 160
    assert losses.drw_start_epoch(25, 0.8) == 21         # the study's schedule: its last lr stage
    assert losses.drw_start_epoch(10, 0.8) == 9
    z, y = _batch()
    spec = losses.extra_configs()["DRW β=0.9999"]
    w = losses.class_balanced_weights(COUNTS, 0.9999)
    per = F.cross_entropy(z, y, reduction="none")
    for epoch in (1, 8):
        torch.testing.assert_close(spec.build(COUNTS, epoch=epoch, epochs=10)(z, y), per.mean())
    for epoch in (9, 10):
        torch.testing.assert_close(spec.build(COUNTS, epoch=epoch, epochs=10)(z, y),
                                   (w[y] * per).sum() / w[y].sum())
    assert torch.equal(spec.weights(COUNTS), w)
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="defer"):
            losses.drw_start_epoch(10, bad)
    with pytest.raises(ValueError, match="epochs"):
        losses.drw_start_epoch(0, 0.8)


def test_new_loss_specs_validate_their_fields():
    with pytest.raises(ValueError, match="tau is needed"):
        losses.LossSpec("logit_adjusted")
    with pytest.raises(ValueError, match="tau is needed"):
        losses.LossSpec("ce", tau=1.0)
    with pytest.raises(ValueError, match="tau must be finite"):
        losses.LossSpec("logit_adjusted", tau=float("nan"))
    with pytest.raises(ValueError, match="needs beta"):
        losses.LossSpec("drw", defer=0.8)
    with pytest.raises(ValueError, match="defer is needed"):
        losses.LossSpec("drw", beta=0.9999)
    with pytest.raises(ValueError, match="defer is needed"):
        losses.LossSpec("cb_softmax", beta=0.9, defer=0.8)
    with pytest.raises(ValueError, match="defer must lie"):
        losses.LossSpec("drw", beta=0.9999, defer=1.0)
    with pytest.raises(ValueError, match="takes no gamma"):
        losses.LossSpec("logit_adjusted", tau=1.0, gamma=1.0)
    with pytest.raises(ValueError, match="beta is only used"):
        losses.LossSpec("logit_adjusted", tau=1.0, beta=0.9)
    # the older kinds' identity (their run fingerprints) does not gain the new fields
    assert losses.LossSpec("cb_softmax", beta=0.9).as_dict() == {
        "kind": "cb_softmax", "gamma": 0.0, "beta": 0.9, "balanced_data": False}
    assert losses.extra_configs()["DRW β=0.9999"].as_dict()["defer"] == 0.8


@pytest.mark.parametrize("name", list(losses.extra_configs()))
def test_new_losses_refuse_labels_outside_the_classes(name):
    z, y = _batch()
    y[3] = 10
    with pytest.raises(ValueError, match="labels outside"):
        losses.all_configs()[name].build(COUNTS, epoch=10, epochs=10)(z, y)


def test_all_configs_are_the_study_rows_then_the_extras():
    cfgs = losses.all_configs()
    assert list(cfgs) == [*losses.study_configs(), *losses.extra_configs()]
    assert len({losses.slug(n) for n in cfgs}) == len(cfgs)
    assert losses.slug("logit-adjusted τ=1") == "logit-adjusted_t1"
