"""Unit tests for common.kingma (M1, M2, bounds, stacking, guards) on small synthetic tensors."""
from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F

from common import kingma as K
from common.training import NonFiniteError, SegmentUnfinished, segment_over, start_segment, lr_factor


pytestmark = pytest.mark.usefixtures("one_thread")


def small_m2(likelihood="bernoulli", seeds=(0, 1), n_classes=5, hidden=(7,)):
    return K.M2(x_dim=12, z_dim=3, hidden=hidden, n_classes=n_classes, seeds=seeds,
                likelihood=likelihood)


def test_gaussian_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(4, 3, generator=g)
    logvar = torch.randn(4, 3, generator=g) * 0.5
    eps = torch.randn(200_000, 4, 3, generator=g)
    z = mu + torch.exp(0.5 * logvar) * eps
    log_q = K.gaussian_log_density(z, mu, logvar)
    log_p = K.gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))
    mc = (log_q - log_p).mean(0)
    exact = K.gaussian_kl(mu, logvar)
    assert torch.allclose(mc, exact, atol=0.03), (mc, exact)
    assert (exact > 0).all()
    assert K.gaussian_kl(torch.zeros(1, 3), torch.zeros(1, 3)).item() == 0.0


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_marginalised_unlabelled_bound_equals_explicit_loop(likelihood):
    torch.manual_seed(0)
    m = small_m2(likelihood)
    x = torch.rand(2, 6, 12)
    if likelihood == "bernoulli":
        x = torch.bernoulli(x)
    eps = torch.randn(2, 6, 5, 3)
    vec = m.unlabelled_bound(x, eps)
    loop = m.unlabelled_bound_loop(x, eps)
    assert vec.shape == (2, 6)
    torch.testing.assert_close(vec, loop, rtol=1e-5, atol=1e-4)
    # and the bound is below the best label's bound plus the entropy ceiling log K
    per_label = torch.stack([m.labelled_bound(x, torch.full((2, 6), k), eps[:, :, k])
                             for k in range(5)], -1)
    assert (vec <= per_label.max(-1).values + math.log(5) + 1e-4).all()


def test_labelled_bound_depends_on_label():
    torch.manual_seed(1)
    m = small_m2()
    x = torch.bernoulli(torch.rand(2, 4, 12))
    eps = torch.randn(2, 4, 3)
    a = m.labelled_bound(x, torch.zeros(2, 4, dtype=torch.long), eps)
    b = m.labelled_bound(x, torch.ones(2, 4, dtype=torch.long), eps)
    assert not torch.allclose(a, b)


def test_alpha_weight_values_and_errors():
    assert K.alpha_weight(50_000, 100) == pytest.approx(50.0)
    assert K.alpha_weight(50_000, 3000) == pytest.approx(50_000 * 0.1 / 3000)
    with pytest.raises(ValueError, match="n_labelled"):
        K.alpha_weight(50_000, 0)


def test_objective_alpha_scaling_is_per_labelled_point():
    """loss(alpha) - loss(0) = -alpha * (N_l / B_l) * sum(log q(y|x)) / (N_l + N_u)."""
    m = small_m2()
    xl, yl = torch.bernoulli(torch.rand(2, 3, 12)), torch.randint(0, 5, (2, 3))
    xu = torch.bernoulli(torch.rand(2, 4, 12))
    n_l, n_u = 30, 170
    torch.manual_seed(5)
    a = K.m2_objective(m, xl, yl, xu, n_l, n_u, alpha=7.0)["loss"]
    torch.manual_seed(5)
    b = K.m2_objective(m, xl, yl, xu, n_l, n_u, alpha=0.0)["loss"]
    log_q = torch.log_softmax(m.classify(xl), -1).gather(-1, yl[..., None])[..., 0]
    expected = -7.0 * (n_l / 3) * log_q.sum(1) / (n_l + n_u)
    torch.testing.assert_close(a - b, expected, rtol=1e-4, atol=1e-4)
    # per-run alpha tensors act run by run
    torch.manual_seed(5)
    c = K.m2_objective(m, xl, yl, xu, n_l, n_u, alpha=torch.tensor([7.0, 0.0]))["loss"]
    torch.testing.assert_close(c, torch.stack([a[0], b[1]]), rtol=1e-5, atol=1e-5)


def test_mean_weighting_is_batch_means_and_paper_weighting_rescales_them():
    """The two weightings from the same bound values (same noise): "mean" is
    -(mean L + alpha mean log q + mean U); "paper" (eq. 9) is
    -(N_l (mean L + alpha mean log q) + N_u mean U) / (N_l + N_u)."""
    m = small_m2()
    xl, yl = torch.bernoulli(torch.rand(2, 3, 12)), torch.randint(0, 5, (2, 3))
    xu = torch.bernoulli(torch.rand(2, 4, 12))
    n_l, n_u, alpha = 30, 170, 7.0
    torch.manual_seed(6)
    lb = m.labelled_bound(xl, yl)                      # the draws m2_objective makes, in order
    log_q = torch.log_softmax(m.classify(xl), -1).gather(-1, yl[..., None])[..., 0]
    ub = m.unlabelled_bound(xu)
    lab, unl = (lb + alpha * log_q).mean(1), ub.mean(1)
    torch.manual_seed(6)
    mean = K.m2_objective(m, xl, yl, xu, n_l, n_u, alpha, weighting="mean")["loss"]
    torch.testing.assert_close(mean, -(lab + unl), rtol=1e-5, atol=1e-5)
    torch.manual_seed(6)
    paper = K.m2_objective(m, xl, yl, xu, n_l, n_u, alpha)["loss"]
    torch.testing.assert_close(paper, -(n_l * lab + n_u * unl) / (n_l + n_u), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="weighting"):
        K.m2_objective(m, xl, yl, xu, n_l, n_u, alpha, weighting="sum")
    # labelled_weight lambda scales the labelled terms of "mean"; lambda = N_l / N_u is eq. 9
    # times (N_l + N_u) / N_u
    torch.manual_seed(6)
    lam = K.m2_objective(m, xl, yl, xu, n_l, n_u, alpha, weighting="mean", labelled_weight=0.2)["loss"]
    torch.testing.assert_close(lam, -(0.2 * lab + unl), rtol=1e-5, atol=1e-5)
    torch.manual_seed(6)
    ratio = K.m2_objective(m, xl, yl, xu, n_l, n_u, alpha, weighting="mean",
                           labelled_weight=n_l / n_u)["loss"]
    torch.testing.assert_close(ratio, paper * (n_l + n_u) / n_u, rtol=1e-5, atol=1e-5)
    for bad in ({"weighting": "paper", "labelled_weight": 0.5}, {"weighting": "mean", "labelled_weight": 0.0}):
        with pytest.raises(ValueError, match="labelled_weight"):
            K.m2_objective(m, xl, yl, xu, n_l, n_u, alpha, **bad)


def test_balanced_subset_counts_and_seeding():
    labels = torch.arange(10).repeat_interleave(40)[torch.randperm(400, generator=torch.Generator().manual_seed(3))]
    idx = K.labelled_subsets(labels, 100, seeds=[0, 1, 2])
    assert idx.shape == (3, 100)
    for row in idx:
        assert torch.bincount(labels[row], minlength=10).tolist() == [10] * 10
        assert len(torch.unique(row)) == 100
    assert torch.equal(idx, K.labelled_subsets(labels, 100, seeds=[0, 1, 2]))
    assert not torch.equal(idx[0], idx[1])
    with pytest.raises(ValueError, match="multiple"):
        K.labelled_subsets(labels, 55, seeds=[0])


def test_feature_selection_rule():
    g = torch.Generator().manual_seed(0)
    stds = torch.tensor([0.05, 0.2, 0.5, 0.0, 0.09, 0.11])
    mu = torch.randn(20_000, 6, generator=g) * stds + 3.0
    assert K.select_active_dims(mu).tolist() == [1, 2, 5]
    assert K.select_active_dims(mu, threshold=0.3).tolist() == [2]
    with pytest.raises(ValueError, match="mu"):
        K.select_active_dims(mu[0])


def test_dynamic_binarisation_statistics():
    torch.manual_seed(0)
    p = torch.linspace(0, 1, 11).repeat(20_000, 1)
    b = K.Binariser("dynamic")
    s1, s2 = b(p), b(p)
    assert set(torch.unique(s1).tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(s1.mean(0), p[0], atol=0.015, rtol=0)
    assert (s1[:, 0] == 0).all() and (s1[:, -1] == 1).all()
    assert not torch.equal(s1, s2)  # a fresh sample per call (per minibatch)
    x = torch.rand(3, 4)
    assert torch.equal(K.Binariser("none")(x), x)
    with pytest.raises(ValueError, match="binarise"):
        K.Binariser("static")


def test_standard_normal_grid():
    grid = K.standard_normal_grid(4)
    torch.testing.assert_close(grid, -grid.flip(0))
    assert grid[2].item() == pytest.approx(0.3186, abs=1e-3)  # Phi^-1(0.625)
    assert K.standard_normal_grid(3)[1].item() == pytest.approx(0.0, abs=1e-6)


def test_stacked_runs_are_independent():
    m = small_m2(seeds=(3, 4))
    single = small_m2(seeds=(4,))
    # run 1 of the stack is initialised exactly like a model of seed 4 alone
    for (name, p), q in zip(m.named_parameters(), single.parameters(), strict=True):
        torch.testing.assert_close(p[1:2], q, msg=name)
    x = torch.bernoulli(torch.rand(2, 5, 12))
    loss = -m.unlabelled_bound(x)[0].sum()  # only run 0
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad[1].abs().max() == 0, name
    assert any(p.grad[0].abs().max() > 0 for p in m.parameters())


def test_guard_reverts_only_the_diverged_run():
    m = small_m2()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    guard = K.Guard(m, opt, max_reverts=2)
    hist = K.History()
    before = [p.detach().clone() for p in m.parameters()]
    with torch.no_grad():
        for p in m.parameters():
            p[0] += 1.0
            p[1] = float("nan")
    assert not guard.check(torch.tensor([1.0, float("nan")]), epoch=3, history=hist)
    for p, b in zip(m.parameters(), before, strict=True):
        torch.testing.assert_close(p[1], b[1])          # run 1 put back
        torch.testing.assert_close(p[0], b[0] + 1.0)    # run 0 untouched
    assert hist.reverts == [{"epoch": 3, "run": 1}]
    assert guard.check(torch.tensor([1.0, 2.0]), epoch=4, history=hist)
    with torch.no_grad():
        next(m.parameters())[1] = float("inf")
    guard.check(torch.tensor([1.0, 1.0]), epoch=5, history=hist)  # params not finite -> revert 2
    with torch.no_grad():
        next(m.parameters())[1] = float("inf")
    with pytest.raises(NonFiniteError, match="run 1"):
        guard.check(torch.tensor([1.0, 1.0]), epoch=6, history=hist)


def test_m1_training_checkpoint_resume(tmp_path, monkeypatch):
    torch.manual_seed(0)
    x = torch.rand(64, 12)
    ck = tmp_path / "m1.pt"
    m = K.M1(x_dim=12, z_dim=2, hidden=(8, 8), seeds=(0, 1))
    tr = K.train_m1(m, x, epochs=2, batch_size=16, x_valid=x[:20], checkpoint=ck)
    assert len(tr.history.rows) == 2 and ck.is_file()
    assert len(tr.history.rows[-1]["valid_elbo"]) == 2
    m2 = K.M1(x_dim=12, z_dim=2, hidden=(8, 8), seeds=(0, 1))
    tr2 = K.train_m1(m2, x, epochs=3, batch_size=16, x_valid=x[:20], checkpoint=ck)
    assert tr2.resumed_from == 2 and len(tr2.history.rows) == 3
    assert tr2.history.timing()["epochs"] == 3
    # a checkpoint written by different model code is not resumed
    monkeypatch.setattr(K, "code_hash", lambda: "other-code")
    m3 = K.M1(x_dim=12, z_dim=2, hidden=(8, 8), seeds=(0, 1))
    tr3 = K.train_m1(m3, x, epochs=1, batch_size=16, x_valid=x[:20], checkpoint=ck)
    assert tr3.resumed_from is None and len(tr3.history.rows) == 1
    with pytest.raises(ValueError, match="hidden"):
        K.M1(hidden=())


@pytest.mark.parametrize("use_unlabelled", [True, False])
def test_train_m2_small(use_unlabelled):
    torch.manual_seed(0)
    x = torch.rand(200, 12)
    y = torch.arange(5).repeat(40)
    lab = K.labelled_subsets(y, 10, seeds=[0, 1], n_classes=5)
    m = small_m2()
    data = K.M2Data(x=x, y=y, labelled=lab, use_unlabelled=use_unlabelled)
    accs = []
    tr = K.train_m2(m, data, epochs=2, n_batches=4, lr=1e-3,
                    evaluate=lambda e: {"acc": K.classifier_accuracy(m, x, y).tolist()})
    accs = tr.history.rows[-1]["acc"]
    assert len(accs) == 2 and all(0 <= a <= 1 for a in accs)
    assert all(r["finite"] for r in tr.history.rows)
    assert tr.alpha == pytest.approx(0.1 * (200 if use_unlabelled else 10) / 10)


def test_train_m2_cosine_schedule_sets_each_steps_rate(monkeypatch):
    """Every optimiser step uses lr * lr_factor("cosine", k, k / total): recorded from Adam itself."""
    torch.manual_seed(0)
    x, y = torch.rand(200, 12), torch.arange(5).repeat(40)
    lab = K.labelled_subsets(y, 10, seeds=[0, 1], n_classes=5)
    seen = []
    orig = torch.optim.Adam.step

    def record(self, *a, **kw):
        seen.append(self.param_groups[0]["lr"])
        return orig(self, *a, **kw)

    monkeypatch.setattr(torch.optim.Adam, "step", record)
    K.train_m2(small_m2(), K.M2Data(x=x, y=y, labelled=lab), epochs=2, n_batches=3, lr=1e-2,
               weighting="mean", lr_schedule="cosine", warmup_steps=2)
    expected = [1e-2 * min(1, (k + 1) / 2) * 0.5 * (1 + math.cos(math.pi * k / 6)) for k in range(6)]
    assert seen == pytest.approx(expected)
    assert lr_factor("cosine", 3, 2.0) == 0.0 and lr_factor("constant", 0, 0.5, 4) == 0.25
    # wsd: constant until the last 20 % of the budget, then linear to 0
    assert [lr_factor("wsd", 0, p) for p in (0.0, 0.8, 0.9, 1.0, 1.5)] == pytest.approx([1, 1, 0.5, 0, 0])
    with pytest.raises(ValueError, match="schedule"):
        lr_factor("step", 0, 0.0)
    with pytest.raises(ValueError, match="lr_schedule"):
        K.train_m2(small_m2(), K.M2Data(x=x, y=y, labelled=lab), epochs=1, n_batches=3,
                   lr_schedule="step")


def test_train_m2_gaussian_features_stacked_input():
    torch.manual_seed(0)
    mu = torch.randn(2, 100, 6)
    lv = torch.full((2, 100, 6), -2.0)
    y = torch.arange(5).repeat(20)
    lab = K.labelled_subsets(y, 10, seeds=[0, 1], n_classes=5)
    m = K.M2(x_dim=6, z_dim=2, hidden=(8,), n_classes=5, seeds=(0, 1), likelihood="gaussian")
    tr = K.train_m2(m, K.M2Data(x=mu, y=y, labelled=lab, x_logvar=lv), epochs=1, n_batches=3,
                    binarise="none")
    assert all(math.isfinite(v) for v in tr.history.rows[0]["loss"])


def test_bench_runs_on_cpu():
    amp = K.bench(runs=2, n_batches=10, batch=20, x_dim=12, hidden=8, z_dim=2, steps=2,
                  device="cpu", amp=True)
    assert amp["amp"] is True and amp["step_seconds"] > 0
    res = K.bench(runs=2, n_batches=10, batch=20, x_dim=12, hidden=8, z_dim=2, steps=2,
                  device="cpu")
    assert res["runs"] == 2 and res["epoch_seconds"] > 0


def test_figure_helpers_shapes_and_checks():
    m1 = K.M1(x_dim=12, z_dim=2, hidden=(8,), seeds=(0,))
    grid = K.m1_manifold(m1, 3)
    assert grid.shape == (9, 12) and ((grid >= 0) & (grid <= 1)).all()
    with pytest.raises(ValueError, match="z_dim=2"):
        K.m1_manifold(K.M1(x_dim=12, z_dim=3, hidden=(8,)), 3)
    m = small_m2(seeds=(0,))
    x, y = torch.rand(4, 12), torch.tensor([0, 1, 2, 3])
    ana = K.m2_analogies(m, x, y)
    assert ana.shape == (4, 5, 12)
    # the row of a point decoded with its own label equals decoding the mean of q(z|x,y)
    mu, _ = m.encode(x[None], y[None])
    torch.testing.assert_close(ana[torch.arange(4), y], m.decode_mean(mu, y[None])[0])
    m_2d = K.M2(x_dim=12, z_dim=2, hidden=(7,), n_classes=5, seeds=(0,))
    assert K.m2_style_grid(m_2d, 3).shape == (5, 9, 12)


def test_feature_classifier_errors_learns_separable_features():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat(100)
    f = torch.randn(300, 2, generator=g) * 0.1 + y[:, None].float() * 2.0
    lab = K.labelled_subsets(y, 30, seeds=[0, 1], n_classes=3)
    errs = K.feature_classifier_errors(f, y, lab, f, y)
    assert len(errs) == 2 and max(errs) < 1.0
    shuffled = K.feature_classifier_errors(torch.randn(300, 2, generator=g), y, lab, f, y)
    assert min(shuffled) > 20.0


def test_softplus_matches_torch_in_value_and_gradient():
    x = torch.cat([torch.linspace(-40, 40, 2001), torch.tensor([0.0, 1e-8, -1e-8, 25.0])])
    x64 = x.double().requires_grad_()
    ref64 = x.double().requires_grad_()
    out, ref = K.softplus(x64), F.softplus(ref64)
    # F.softplus returns x itself above x = 20 (threshold): a difference of e^-20 ~ 2e-9 there
    assert torch.allclose(out, ref, rtol=0, atol=3e-9)
    assert torch.allclose(out[x.abs() < 19], ref[x.abs() < 19], rtol=0, atol=1e-14)
    out.sum().backward()
    ref.sum().backward()
    assert torch.allclose(x64.grad, ref64.grad, rtol=0, atol=1e-12)
    assert torch.allclose(K.softplus(x), F.softplus(x), rtol=0, atol=2e-6)      # float32
    assert torch.autograd.gradcheck(K.softplus, (torch.randn(20, dtype=torch.float64, requires_grad=True),))


def test_pad_index_sets_and_ragged_permutation():
    sets = [torch.tensor([3, 7]), torch.tensor([1, 2, 5, 9, 11])]
    rows, sizes = K.pad_index_sets(sets)
    assert rows.shape == (2, 5) and sizes.tolist() == [2, 5]
    assert set(rows[0].tolist()) == {3, 7}                    # padding repeats the run's own set
    torch.manual_seed(0)
    firsts = set()
    for _ in range(200):
        p = K.ragged_permutation(rows, sizes)
        assert sorted(p[0, :2].tolist()) == [3, 7]
        assert sorted(p[1].tolist()) == [1, 2, 5, 9, 11]
        firsts.add(int(p[1, 0]))
    assert firsts == {1, 2, 5, 9, 11}                          # every element can come first
    with pytest.raises(ValueError, match="non-empty"):
        K.pad_index_sets([torch.tensor([1]), torch.tensor([], dtype=torch.long)])


def test_objective_with_per_run_set_sizes_equals_separate_objectives():
    torch.manual_seed(0)
    m = small_m2()                                             # 2 stacked runs
    xl, xu = torch.rand(2, 4, 12), torch.rand(2, 6, 12)
    yl = torch.randint(0, 5, (2, 4))
    n_l, n_u = torch.tensor([10.0, 40.0]), torch.tensor([190.0, 160.0])
    alpha = torch.tensor([K.alpha_weight(200, 10), K.alpha_weight(200, 40)])
    torch.manual_seed(1)
    both = K.m2_objective(m, xl, yl, xu, n_l, n_u, alpha)["loss"]
    for r in range(2):
        torch.manual_seed(1)                                   # the same noise
        alone = K.m2_objective(m, xl, yl, xu, int(n_l[r]), int(n_u[r]), float(alpha[r]))["loss"]
        assert torch.allclose(both[r], alone[r], rtol=1e-6, atol=1e-6)


def test_m2_groups_stacks_label_counts_into_one_model():
    torch.manual_seed(0)
    x, y = torch.rand(300, 12), torch.arange(5).repeat(60)
    res = K.m2_groups(x, y, x[:50], y[:50], x[:60], y[:60], n_labelled=[10, 40], seeds=[0, 1],
                      epochs=2, n_batches=5, labelled_per_batch=None, hidden=(8,), z_dim=2, lr=1e-3)
    assert list(res) == [10, 40]
    r10, r40 = res[10], res[40]
    assert r10["model"] is r40["model"] and r10["model"].runs == 4
    assert r10["runs"] == [0, 1] and r40["runs"] == [2, 3]
    assert r10["alpha"] == pytest.approx(0.1 * 300 / 10) and r40["alpha"] == pytest.approx(0.1 * 300 / 40)
    assert len(r10["test_error"]) == 2 and len(r40["valid_acc"]) == 2
    assert r10["timing"]["stacked_with"] == [10, 40]
    assert all(math.isfinite(v) for row in r10["model"].state_dict().values() for v in row.flatten().tolist())
    with pytest.raises(ValueError, match="fully labelled"):
        K.m2_groups(x, y, x, y, x, y, n_labelled=[None, 10], seeds=[0], epochs=1, n_batches=2,
                    labelled_per_batch=None, hidden=(8,))


def test_fixed_alpha_replaces_the_per_label_count_formula():
    """``alpha`` given: every run of every N gets it instead of 0.1 N_total / N_l; a negative
    one is an error."""
    torch.manual_seed(0)
    x, y = torch.rand(300, 12), torch.arange(5).repeat(60)
    kw = dict(seeds=[0], epochs=1, n_batches=3, labelled_per_batch=None, hidden=(8,), z_dim=2,
              lr=1e-3, weighting="mean", labelled_weight=0.2)
    res = K.m2_groups(x, y, x[:50], y[:50], x[:60], y[:60], n_labelled=[10, 40], alpha=7.0, **kw)
    assert res[10]["alpha"] == res[40]["alpha"] == 7.0
    with pytest.raises(ValueError, match="alpha must be"):
        K.m2_groups(x, y, x, y, x, y, n_labelled=[10], alpha=-1.0, **kw)


def test_stackable_groups_equal_settings_in_order():
    sched = {100: (2, 4, 5, None), 600: (1, 4, None, None), 1000: (1, 4, None, None), 3000: (9, 4, None, None)}
    assert K.stackable(sched) == [[100], [600, 1000], [3000]]
    assert K.stackable({100: ((1, 2), (300,)), 600: ((1, 2), (500,))}) == [[100], [600]]


def test_minibatch_shape_matches_the_paper_layouts():
    assert K.minibatch_shape(100, 100, 49_900) == (1, 499)           # N=100: 1 + 499
    assert K.minibatch_shape(200, 3000, 47_000) == (15, 235)         # N=3000: N/200 + rest
    assert K.minibatch_shape(200, 600, 49_400) == (3, 247)
    assert K.minibatch_shape(10, 100, 49_900, 100, 100) == (100, 100)  # reduced cpu layout
    assert K.minibatch_shape(10, 100, 500, None, 100) == (10, 50)      # capped by the pool


def test_m2_schedule_stacks_equal_settings_and_names_checkpoints(tmp_path):
    torch.manual_seed(0)
    x, y = torch.rand(300, 12), torch.arange(5).repeat(60)
    tags = []

    def ckpt(tag):
        tags.append(tag)
        return tmp_path / f"m2_{tag}.pt"

    sched = {40: (1, 5, None, None), 10: (2, 5, None, None), 20: (1, 5, None, None)}
    res = K.m2_schedule(x, y, x[:50], y[:50], x[:60], y[:60], schedule=sched,
                        hidden=lambda n: (8,) if n < 30 else (6,), seeds=[0, 1], z_dim=2,
                        checkpoint=ckpt)
    assert list(res) == [40, 10, 20]                      # schedule order
    assert tags == ["40", "10", "20"]                     # widths differ for 40; schedules for 10/20
    assert all((tmp_path / f"m2_{t}.pt").is_file() for t in tags)
    assert res[10]["model"] is not res[20]["model"] and res[40]["model"].hidden_sizes == (6,)
    both = K.m2_schedule(x, y, x[:50], y[:50], x[:60], y[:60], schedule={10: sched[20], 20: sched[20]},
                         hidden=(8,), seeds=[0], z_dim=2)
    assert both[10]["model"] is both[20]["model"] and both[10]["timing"]["stacked_with"] == [10, 20]
    # a per-N alpha splits the stack: each group trains with its own alpha
    split = K.m2_schedule(x, y, x[:50], y[:50], x[:60], y[:60], schedule={10: sched[20], 20: sched[20]},
                          hidden=(8,), seeds=[0], z_dim=2, alpha={10: 5.0, 20: 2.0}, weighting="mean")
    assert split[10]["model"] is not split[20]["model"]
    assert (split[10]["alpha"], split[20]["alpha"]) == (5.0, 2.0)


def test_alpha_for_reads_a_number_or_a_per_n_table():
    assert K.alpha_for(50.0, 3000) == 50.0 and K.alpha_for(None, 100) is None
    assert K.alpha_for({100: 50, 3000: 10}, 3000) == 10.0
    with pytest.raises(ValueError, match="no entry for N = 600"):
        K.alpha_for({100: 50.0}, 600)
    assert [g[0] for g in K.schedule_groups({1: (1, 2, None, None), 2: (1, 2, None, None)}, (4,),
                                            {1: 1.0, 2: 1.0})] == [[1, 2]]


def test_schedule_cost_times_each_stacked_shape():
    sched = {10: (2, 5, None, None), 20: (2, 5, None, None), 30: (3, 5, 2, None)}
    rows = K.schedule_cost(sched, 200, 3, hidden=(8,), x_dim=12, z_dim=2, steps=1)
    assert [r["N"] for r in rows] == [[10, 20], [30]]
    assert [r["runs"] for r in rows] == [6, 3]
    assert [(r["labelled"], r["unlabelled"]) for r in rows] == [(4, 36), (2, 34)]
    assert [r["steps"] for r in rows] == [10, 15]
    for r in rows:
        assert r["step_seconds"] > 0
        assert r["hours"] == pytest.approx(r["steps"] * r["step_seconds"] / 3600, abs=0.006)
    with pytest.raises(ValueError, match="labelled"):
        K.bench(runs=1, batch=4, labelled=4, x_dim=12, hidden=(8,), z_dim=2, steps=1)


def test_segmented_training_stops_saves_and_resumes_to_the_same_result(tmp_path, monkeypatch):
    x = torch.rand(64, 12, generator=torch.Generator().manual_seed(0))

    def train(ck):
        torch.manual_seed(3)
        m = K.M1(x_dim=12, z_dim=2, hidden=(8,), seeds=(0, 1))
        return m, K.train_m1(m, x, epochs=3, batch_size=16, x_valid=x[:20], checkpoint=ck)

    whole, _ = train(tmp_path / "whole.pt")
    calls = iter([False, False, True])                 # the segment runs out before epoch 3
    monkeypatch.setattr(K, "segment_over", lambda: next(calls))
    with pytest.raises(SegmentUnfinished, match="after epoch 2 of 3.*run the same command again"):
        train(tmp_path / "seg.pt")
    monkeypatch.setattr(K, "segment_over", lambda: False)
    resumed, tr = train(tmp_path / "seg.pt")
    assert tr.resumed_from == 2 and len(tr.history.rows) == 3
    for a, b in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    monkeypatch.setattr(K, "segment_over", lambda: True)
    # a segment already over at the start still trains one epoch (a short SEGMENT_SECONDS
    # must not exit 3 forever without progress), then stops
    with pytest.raises(SegmentUnfinished, match="after epoch 1 of 2.*progress is lost"):
        K.train_m1(K.M1(x_dim=12, z_dim=2, hidden=(8,), seeds=(0,)), x, epochs=2, batch_size=16)


def test_start_segment_sets_and_clears_the_deadline():
    try:
        assert start_segment(None) is None and not segment_over()
        start_segment(1e-9)
        time.sleep(0.001)
        assert segment_over()
        start_segment(3600)
        assert not segment_over()
        for bad in (0, -5):
            with pytest.raises(ValueError, match="positive"):
                start_segment(bad)
    finally:
        start_segment(None)


def test_bfloat16_autocast_bound_and_gradient_agree_with_float32():
    """The full profile may run M2's matmuls in bfloat16 autocast: at the paper's sizes the
    objective stays within 1e-3 (relative) of float32 and its gradient within 3 % (relative
    norm of the difference), because bounds, KL and likelihoods are summed in float32."""
    torch.manual_seed(0)
    m = K.M2(784, 50, (500,), seeds=[0])
    xl, yl = (torch.rand(1, 20, 784) < 0.2).float(), torch.randint(0, 10, (1, 20))
    xu = (torch.rand(1, 50, 784) < 0.2).float()
    for weighting in ("paper", "mean"):
        res = {}
        for amp in (False, True):
            m.zero_grad()
            torch.manual_seed(1)                      # the same z draws (made in float32)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                loss = K.m2_objective(m, xl, yl, xu, 100, 49_900, 50.0, weighting)["loss"]
            assert loss.dtype == torch.float32
            loss.sum().backward()
            res[amp] = loss.detach(), torch.cat([p.grad.flatten() for p in m.parameters()])
        (l32, g32), (l16, g16) = res[False], res[True]
        assert float(((l16 - l32) / l32).abs().max()) < 1e-3, weighting
        assert float((g16 - g32).norm() / g32.norm()) < 0.03, weighting
        assert not torch.equal(g16, g32)              # bfloat16 did run


def test_compiled_objective_trains_like_eager():
    """compile_mode (the full profile's "reduce-overhead": CUDA graphs on a GPU) compiles the
    objective's forward and backward; on CPU, with inductor drawing random numbers as eager
    does, two epochs end with the same losses and weights as eager."""
    import torch._inductor.config as inductor_config

    x, y = torch.rand(200, 12), torch.arange(5).repeat(40)
    lab = K.labelled_subsets(y, 10, seeds=[0, 1], n_classes=5)

    def train(mode):
        torch.manual_seed(0)
        m = K.M2(12, 2, (7,), n_classes=5, seeds=(0, 1))
        tr = K.train_m2(m, K.M2Data(x=x, y=y, labelled=lab), epochs=2, n_batches=2, lr=1e-2,
                        compile_mode=mode)
        return m, [v for r in tr.history.rows for v in r["loss"]]

    old = inductor_config.fallback_random
    inductor_config.fallback_random = True
    try:
        eager, compiled = train(None), train("reduce-overhead")
    finally:
        inductor_config.fallback_random = old
    assert compiled[1] == pytest.approx(eager[1], rel=1e-5)
    for p, q in zip(eager[0].parameters(), compiled[0].parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5)


def test_fused_adam_of_the_full_profile_agrees_with_the_default_update():
    """The Trainer's fused Adam (the GPU default) run on CPU: three M2 steps end at the same
    weights as torch's default Adam, within float32 rounding."""
    x, y = torch.rand(60, 12), torch.arange(5).repeat(12)
    xl, yl, xu = x[None, :10], y[None, :10], x[None, 10:40]
    weights = []
    for fused in (False, True):
        torch.manual_seed(0)
        m = K.M2(12, 2, (7,), n_classes=5, seeds=(0,))
        tr = K.Trainer(m, lr=1e-2, fused=fused)
        assert tr.opt.defaults["fused"] is fused
        for _ in range(3):
            torch.manual_seed(1)
            loss = K.m2_objective(m, xl, yl, xu, 10, 50, 5.0)["loss"].sum()
            tr.opt.zero_grad()
            loss.backward()
            tr.opt.step()
        weights.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    assert not torch.equal(weights[0], torch.cat([p.detach().flatten() for p in
                                                 K.M2(12, 2, (7,), n_classes=5, seeds=(0,)).parameters()]))
    torch.testing.assert_close(weights[1], weights[0], rtol=1e-5, atol=1e-6)


def test_checkpoint_trained_longer_than_asked_starts_afresh(tmp_path, capsys):
    """train_m1(epochs=3) then epochs=1 on the same checkpoint used to report resumed_from=3
    with a 3-epoch model; a checkpoint of more epochs than asked is not used (M1 and M2 share
    the rule), a shorter one of the same run still resumes (segments)."""
    x = torch.rand(64, 12, generator=torch.Generator().manual_seed(0))
    ck = tmp_path / "m1.pt"

    def m1(epochs):
        return K.train_m1(K.M1(x_dim=12, z_dim=2, hidden=(8,), seeds=(0,)), x, epochs=epochs,
                          batch_size=16, checkpoint=ck)

    m1(3)
    short = m1(1)
    assert short.resumed_from is None and short.epoch == 1 and len(short.history.rows) == 1
    assert "holds 3 trained epochs, more than the 1 asked: not used" in capsys.readouterr().out
    longer = m1(2)                                     # the 1-epoch checkpoint is a segment of it
    assert longer.resumed_from == 1 and longer.epoch == 2

    y = torch.arange(5).repeat(40)
    xs = torch.rand(200, 12, generator=torch.Generator().manual_seed(1))
    data = K.M2Data(x=xs, y=y, labelled=K.labelled_subsets(y, 10, seeds=[0], n_classes=5))

    def m2(epochs):
        return K.train_m2(small_m2(seeds=(0,)), data, epochs=epochs, n_batches=2,
                          checkpoint=tmp_path / "m2.pt")

    m2(2)
    short = m2(1)
    assert short.resumed_from is None and short.epoch == 1
    assert "holds 2 trained epochs, more than the 1 asked" in capsys.readouterr().out
    assert m2(2).resumed_from == 1


@pytest.mark.parametrize("name", ["gaussian_kl", "gaussian_log_density", "bernoulli",
                                  "reparameterise", "entropy", "focal"])
def test_densities_keep_float64_and_pass_gradcheck(name):
    """They upcast bfloat16/float16 to float32 but never downcast float64 (they called
    ``.float()``): outputs stay float64 and torch.autograd.gradcheck passes."""
    from common import losses

    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    x = torch.rand(3, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(3, 4, generator=g, dtype=torch.float64)
    fn = {"gaussian_kl": lambda m, lv, x, eps: K.gaussian_kl(m, lv),
          "gaussian_log_density": lambda m, lv, x, eps: K.gaussian_log_density(x, m, lv),
          "bernoulli": lambda m, lv, x, eps: K.bernoulli_log_likelihood(m, x),
          "reparameterise": lambda m, lv, x, eps: K.reparameterise(m, lv, eps),
          "entropy": lambda m, lv, x, eps: K.entropy_from_logits(m),
          "focal": lambda m, lv, x, eps: losses.focal_loss(m, torch.tensor([0, 3, 1]), gamma=2.0)}[name]
    assert fn(a, b, x, eps).dtype == torch.float64
    assert torch.autograd.gradcheck(lambda m, lv: fn(m, lv, x, eps), (a, b))
    low = fn(a.detach().bfloat16(), b.detach().bfloat16(), x.float(), eps.float())
    assert low.dtype == torch.float32                      # lower precisions still upcast


def test_fused_cpu_adam_of_the_trainer_agrees_with_the_loop():
    """The Trainer's default fused Adam (torch's fused kernel, also on CPU) takes the same steps
    as the per-parameter loop on the same gradients."""
    import copy

    torch.manual_seed(31)
    m = K.M2(20, 4, (8,), seeds=[0, 1])
    twins = [copy.deepcopy(m) for _ in range(2)]
    trainers = [K.Trainer(t, lr=1e-2, fused=f) for t, f in zip(twins, (None, False))]
    assert trainers[0].opt.defaults["fused"] and not trainers[1].opt.defaults["fused"]
    x = (torch.rand(2, 6, 20) < 0.3).float()
    y = torch.randint(0, 10, (2, 6))
    for step in range(5):
        for t, tr in zip(twins, trainers):
            torch.manual_seed(step)                  # the same z draws for both twins
            tr.opt.zero_grad()
            K.m2_objective(t, x, y, x, 6, 6, 1.0)["loss"].sum().backward()
            tr.opt.step()
    for a, b in zip(*(t.parameters() for t in twins)):
        assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(next(twins[0].parameters()), next(m.parameters()))   # they moved


def test_classifier_stats_entropy_and_collapse_share_by_hand():
    m = K.M2(6, 2, (4,), seeds=[0, 1])
    with torch.no_grad():   # run 0: uniform q(y|x); run 1: certain of class 3 for every input
        for p in m.classifier.parameters():
            p.zero_()
        m.classifier.out.bias[1, 0, 3] = 50.0
    x = torch.rand(8, 6)
    y = torch.tensor([3, 3, 1, 0, 3, 2, 5, 3])
    s = K.classifier_stats(m, x, y, batch=3)
    assert s["entropy"][0] == pytest.approx(math.log(10), abs=1e-5)
    assert s["entropy"][1] == pytest.approx(0.0, abs=1e-5)
    assert s["top_class_share"][1] == 1.0
    assert s["accuracy"][1] == pytest.approx(4 / 8)
    assert K.classifier_accuracy(m, x, y).tolist() == pytest.approx(s["accuracy"])


@pytest.mark.parametrize("weighting,lam", [("paper", 1.0), ("mean", 0.2)])
def test_classifier_gradient_shares_add_up_to_the_objectives_gradient(weighting, lam):
    """The classification and U(x) gradients w.r.t. the classifier, weighted as m2_objective
    weights them, sum to the gradient of m2_objective itself (L(x, y) never reaches q(y|x)),
    and each norm matches the term scaled by hand."""
    torch.manual_seed(32)
    m = K.M2(12, 3, (8,), seeds=[0])
    xl, xu = (torch.rand(1, 5, 12) < 0.4).float(), (torch.rand(1, 7, 12) < 0.4).float()
    yl = torch.randint(0, 10, (1, 5))
    params = list(m.classifier.parameters())

    def flat(t):
        return torch.cat([g.flatten() for g in torch.autograd.grad(t, params, retain_graph=True)])

    # m2_objective draws L(x, y)'s z first, then U(x)'s: draw a dummy of L's shape first, so
    # that every computation below sees the same U(x) noise
    torch.manual_seed(1); torch.randn(1, 5, 3)
    shares = K.classifier_gradient_shares(m, xl, yl, xu, 100, 900, 5.0, weighting, lam)
    torch.manual_seed(1); torch.randn(1, 5, 3)
    ub = m.unlabelled_bound(xu)[0]
    log_qy = -F.cross_entropy(m.classify(xl)[0], yl[0], reduction="none")
    c_cls, c_u = (lam * 5.0 / 5, 1 / 7) if weighting == "mean" else (100 / 5 * 5.0 / 1000, 900 / 7 / 1000)
    g_cls, g_u = flat(c_cls * log_qy.sum()), flat(c_u * ub.sum())
    assert shares["norm_classification"] == pytest.approx(float(g_cls.norm()), rel=1e-5)
    assert shares["norm_unlabelled"] == pytest.approx(float(g_u.norm()), rel=1e-5)
    assert shares["cosine"] == pytest.approx(float(F.cosine_similarity(g_cls, g_u, dim=0)), abs=1e-5)
    assert 0.0 < shares["classification_share"] < 1.0
    torch.manual_seed(1)
    out = K.m2_objective(m, xl, yl, xu, 100, 900, 5.0, weighting, lam)
    assert torch.allclose(flat(-out["loss"].sum()), g_cls + g_u, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_bernoulli_likelihood_matches_float64_for_low_precision_logits(dtype):
    """The fused path (M2 under bf16 autocast on the CPU): value and gradient as the float64
    BCE of the same (rounded) logits, with ``x`` broadcast over a label axis as in U(x); the
    gradient in the logits' dtype."""
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(2, 3, 5, 784, generator=g) * 6).to(dtype).requires_grad_()
    x = (torch.rand(2, 3, 1, 784, generator=g) < 0.3).float()
    w = torch.randn(2, 3, 5, generator=g)
    value = K.bernoulli_log_likelihood(logits, x, fused=True)
    (grad,) = torch.autograd.grad((value * w).sum(), logits)
    l64 = logits.detach().double().requires_grad_()
    ref = -F.binary_cross_entropy_with_logits(l64, x.double().expand_as(l64), reduction="none").sum(-1)
    (ref_grad,) = torch.autograd.grad((ref * w.double()).sum(), l64)
    assert value.dtype == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(value.double(), ref, rtol=1e-6, atol=1e-3)
    torch.testing.assert_close(grad.double(), ref_grad.to(dtype).double(), rtol=0, atol=0.02)
    # the plain path gives the same numbers to float32 rounding
    plain = K.bernoulli_log_likelihood(logits.detach(), x)
    torch.testing.assert_close(value.detach(), plain, rtol=1e-6, atol=1e-3)


def test_fused_bernoulli_likelihood_only_replaces_low_precision_cpu_logits():
    """float32 logits (M1, the float32 profiles) and the default (07's VAE) keep the BCE path,
    bit for bit."""
    g = torch.Generator().manual_seed(1)
    logits, x = torch.randn(4, 784, generator=g), (torch.rand(4, 784, generator=g) < 0.5).float()
    expect = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    assert torch.equal(K.bernoulli_log_likelihood(logits, x, fused=True), expect)
    lb = logits.bfloat16()
    expect_b = -F.binary_cross_entropy_with_logits(lb.float(), x, reduction="none").sum(-1)
    assert torch.equal(K.bernoulli_log_likelihood(lb, x), expect_b)


def test_m2_objective_in_bf16_agrees_with_the_plain_likelihood(monkeypatch):
    """M2's bf16 objective through the fused likelihood vs the same objective with the plain
    path: same loss and parameter gradients to bf16 rounding."""
    torch.manual_seed(0)
    m = small_m2(seeds=(0,))
    g = torch.Generator().manual_seed(2)
    xl, xu = (torch.rand(1, 6, 12, generator=g) < 0.4).float(), (torch.rand(1, 8, 12, generator=g) < 0.4).float()
    yl = torch.randint(0, 5, (1, 6), generator=g)
    objective = K.step_objective(m, 6, 100, 5.0, amp=True)
    out = []
    for fused in (True, False):
        if not fused:
            plain = K.bernoulli_log_likelihood
            monkeypatch.setattr(K, "bernoulli_log_likelihood", lambda l, x, fused=False: plain(l, x))
        torch.manual_seed(3)
        loss = objective(xl, yl, xu)["loss"].sum()
        out.append((loss.detach(), torch.autograd.grad(loss, list(m.parameters()))))
    torch.testing.assert_close(out[0][0], out[1][0], rtol=1e-3, atol=1e-3)
    for a, b in zip(out[0][1], out[1][1]):
        torch.testing.assert_close(a, b, rtol=0.05, atol=1e-3)
