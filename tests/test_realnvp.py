"""Real NVP layers and flow: invertibility, log-determinants against brute-force Jacobians,
masks, bits/dim against closed forms, NaN guards, checkpoint/resume. Small synthetic tensors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.autograd.functional import jacobian

from common import realnvp as R
from common.training import NonFiniteError

torch.set_num_threads(1)
# float(t) on tensors that carry autograd history is intended here (values only)
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True")


def randomize(module: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> None:
    """Perturb every parameter and running statistic, so no layer is the identity
    (the last conv of each s/t net is zero-initialised)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g, dtype=b.dtype) * 0.5)
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g, dtype=b.dtype) * 1.5)


def brute_logdet(fn, x: torch.Tensor) -> float:
    """log|det J| of ``fn`` at a single example ``x`` (shape without batch dim)."""
    flat = x.reshape(-1)

    def f(v):
        return fn(v.reshape(1, *x.shape)).reshape(-1)

    J = jacobian(f, flat)
    sign, logabs = torch.linalg.slogdet(J)
    assert sign != 0
    return float(logabs)


# --------------------------------------------------------------------------- masks, squeeze
def test_checkerboard_masks_complementary_and_alternating():
    a, b = R.checkerboard_mask(5, 6, 0), R.checkerboard_mask(5, 6, 1)
    assert torch.equal(a + b, torch.ones_like(a)) and float((a * b).sum()) == 0
    assert float(a.sum()) == 15  # half of 5*6
    assert a[0, 0, 0, 0] == 1 and a[0, 0, 0, 1] == 0 and a[0, 0, 1, 0] == 0 and a[0, 0, 1, 1] == 1


def test_channel_masks_complementary():
    a, b = R.channel_mask(8, 0), R.channel_mask(8, 1)
    assert torch.equal(a + b, torch.ones_like(a)) and float(a.sum()) == 4
    assert a.flatten().tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="even"):
        R.channel_mask(3)
    with pytest.raises(ValueError, match="parity"):
        R.checkerboard_mask(2, 2, 2)


def test_multiscale_couplings_alternate_masks():
    m = R.RealNVP((1, 8, 8), scales=2, features=4, blocks=1)
    for group in [*m.pre, *m.post, m.final]:
        masks = [l.mask for l in group if isinstance(l, R.AffineCoupling)]
        assert len(masks) in (3, 4)
        for a, b in zip(masks, masks[1:]):
            assert torch.equal(a + b, torch.ones_like(a)), "consecutive couplings must alternate"
    assert len([l for l in m.final if isinstance(l, R.AffineCoupling)]) == 4


def test_squeeze_is_a_permutation():
    x = torch.randn(2, 3, 4, 6, dtype=torch.float64)
    y = R.squeeze(x)
    assert y.shape == (2, 12, 2, 3)
    assert torch.equal(R.unsqueeze(y), x)
    J = jacobian(lambda v: R.squeeze(v.reshape(1, 3, 4, 6)).reshape(-1), x[0].reshape(-1))
    assert torch.equal(J.abs().sum(0), torch.ones(72, dtype=torch.float64))
    assert torch.equal(J.abs().sum(1), torch.ones(72, dtype=torch.float64))
    assert abs(float(torch.linalg.slogdet(J)[1])) < 1e-12
    # each 2x2 sub-square of one channel lands in 4 channels at one position
    assert torch.equal(y[0, :4, 0, 0], x[0, 0, :2, :2].reshape(-1))


# --------------------------------------------------------------------------- layers
@pytest.mark.parametrize("kind", ["checkerboard", "channel"])
def test_coupling_invertible_and_logdet(kind):
    torch.manual_seed(0)
    c, h, w = (2, 4, 4) if kind == "checkerboard" else (4, 3, 3)
    layer = R.coupling_block(kind, c, h, w, parity=1, features=4, blocks=1, batch_norm=False)[0]
    randomize(layer)
    layer = layer.double().eval()
    x = torch.randn(3, c, h, w, dtype=torch.float64)
    with torch.no_grad():
        y, ld = layer(x)
    assert float((y - x).abs().max()) > 1e-2, "randomised coupling should not be the identity"
    mask = layer.mask.expand_as(x).bool()
    assert torch.equal(y[mask], x[mask]), "the masked half must pass through unchanged"
    with torch.no_grad():
        assert float((layer.inverse(y) - x).abs().max()) < 1e-10
    for i in range(3):
        assert abs(brute_logdet(lambda v: layer(v)[0], x[i]) - float(ld[i])) < 1e-8


@pytest.mark.parametrize("what", ["coupling", "flow"])
def test_float32_invertible_to_1e5(what):
    torch.manual_seed(1)
    if what == "coupling":
        m = R.coupling_block("checkerboard", 3, 8, 8, 0, 8, 2, batch_norm=False)[0]
    else:
        m = R.RealNVP((3, 8, 8), scales=1, features=8, blocks=2)
    randomize(m, 0.3)
    m.eval()
    x = torch.randn(8, 3, 8, 8) * 2
    with torch.no_grad():
        assert float((m.inverse(m(x)[0]) - x).abs().max()) < 1e-5


def test_flow_batchnorm_logdet_train_and_eval():
    torch.manual_seed(2)
    mask = 1 - R.checkerboard_mask(4, 4, 0, dtype=torch.float64)
    bn = R.FlowBatchNorm(2, mask=mask, momentum=1.0).double()
    x = torch.randn(16, 2, 4, 4, dtype=torch.float64) * 3 + 1.5
    bn.train()
    y_train, ld_train = bn(x)          # batch statistics; running stats := batch stats (momentum 1)
    untouched = (mask == 0).expand_as(x)
    assert torch.equal(y_train[untouched], x[untouched])
    upd = y_train.transpose(0, 1)[(mask == 1).expand(2, 16, 4, 4).bool()].view(2, -1)
    assert torch.allclose(upd.mean(1), torch.zeros(2, dtype=torch.float64), atol=1e-10)
    bn.eval()
    y_eval, ld_eval = bn(x)
    assert torch.allclose(y_eval, y_train) and torch.allclose(ld_eval, ld_train)
    assert float((bn.inverse(y_eval) - x).abs().max()) < 1e-10
    assert abs(brute_logdet(lambda v: bn(v)[0], x[0]) - float(ld_eval[0])) < 1e-8
    # eq. (18) by hand: -1/2 * sum over updated elements of log(var + eps)
    var = x.transpose(0, 1)[(mask == 1).expand(2, 16, 4, 4).bool()].view(2, -1).var(1, unbiased=False)
    by_hand = -0.5 * 8 * torch.log(var + bn.eps).sum()
    assert abs(float(ld_train[0]) - float(by_hand)) < 1e-8


@pytest.mark.parametrize("shape,scales", [((2, 4, 4), 1), ((1, 8, 8), 2)])
def test_multiscale_flow_invertible_and_logdet(shape, scales):
    torch.manual_seed(3)
    m = R.RealNVP(shape, scales=scales, features=4, blocks=1)
    randomize(m, 0.2)
    m = m.double().eval()
    x = torch.randn(2, *shape, dtype=torch.float64)
    zs, ld = m(x)
    assert m.flatten_z(zs).shape == (2, m.dim)
    assert float((m.inverse(zs) - x).abs().max()) < 1e-10
    assert torch.equal(m.flatten_z(m.unflatten_z(m.flatten_z(zs))), m.flatten_z(zs))
    got = brute_logdet(lambda v: m.flatten_z(m(v)[0]), x[0])
    assert abs(got - float(ld[0])) < 1e-7
    assert abs(float(ld[0])) > 1e-2, "log-det should be non-trivial for a randomised flow"


def test_vector_flow_invertible_and_logdet():
    torch.manual_seed(5)
    f = R.VectorFlow(2, couplings=4, hidden=8)
    randomize(f, 0.5)
    f = f.double()
    x = torch.randn(5, 2, dtype=torch.float64)
    z, ld = f(x)
    assert float((f.inverse(z) - x).abs().max()) < 1e-10
    for i in range(5):
        assert abs(brute_logdet(lambda v: f(v)[0], x[i]) - float(ld[i])) < 1e-8


# --------------------------------------------------------------------------- bits/dim
def test_preprocess_logdet_matches_autograd_and_inverts():
    g = torch.Generator().manual_seed(6)
    x = torch.randint(0, 256, (3, 1, 4, 4), generator=g).double()
    noise = torch.rand(x.shape, generator=g, dtype=torch.float64)
    l, ld = R.preprocess(x, noise=noise)
    u = (x + noise).requires_grad_(True)
    lu, _ = R.preprocess(u, noise=torch.zeros_like(u))
    (d,) = torch.autograd.grad(lu.sum(), u)         # elementwise map: diagonal Jacobian
    assert torch.allclose(torch.log(d.abs()).flatten(1).sum(1), ld, atol=1e-10)
    assert torch.allclose(R.postprocess(l) * 256, (x + noise), atol=1e-8)
    assert float(l.min()) > math.log(0.05 / 0.95) - 1e-9 and float(l.max()) < math.log(0.95 / 0.05) + 1e-9


def test_bits_per_dim_standard_normal_closed_form():
    g = torch.Generator().manual_seed(7)
    z = torch.randn(4000, 256, generator=g, dtype=torch.float64)
    bpd = R.bits_per_dim_from_logp(R.std_normal_logprob(z), 256).mean()
    assert abs(float(bpd) - 0.5 * math.log2(2 * math.pi * math.e)) < 5e-3


def test_bits_per_dim_identity_flow_matches_quadrature():
    """A freshly built flow without BN is the identity (zero-initialised s/t outputs). Feed it
    data u whose logits are N(0, 1): E[bpd] = 1/2 log2(2 pi e) - E[sum log|dl/du|] / (D ln 2),
    with the expectation of log sigma(l) + log sigma(-l) computed by numerical quadrature."""
    m = R.RealNVP((1, 4, 4), scales=1, features=4, blocks=1, batch_norm=False).double().eval()
    g = torch.Generator().manual_seed(8)
    c = 2.9                         # clamp so that u stays inside [0, 256)
    l = torch.randn(10000, 1, 4, 4, generator=g, dtype=torch.float64).clamp(-c, c)
    a = R.ALPHA
    u = 256 * (torch.sigmoid(l) - a) / (1 - 2 * a)
    bpd = R.bits_per_dim(m, u, noise=torch.zeros_like(u)).mean()

    def expect(fn):                 # E[fn(clamp(l, -c, c))], l ~ N(0, 1), fn even
        t = np.linspace(-c, c, 200001)
        pdf = np.exp(-t ** 2 / 2) / math.sqrt(2 * math.pi)
        tail = math.erfc(c / math.sqrt(2))                              # P(|l| > c)
        return np.trapezoid(pdf * fn(t), t) + tail * fn(np.array(c))

    e_logsig = expect(lambda t: -np.logaddexp(0, -t) - np.logaddexp(0, t))
    e_sq = expect(lambda t: t ** 2)
    e_logdet = math.log(1 - 2 * a) - math.log(256) - e_logsig           # per dimension
    expected = (0.5 * e_sq + 0.5 * math.log(2 * math.pi) - e_logdet) / math.log(2)
    assert abs(float(bpd) - expected) < 0.01, (float(bpd), expected)


def test_interpolation_manifold_corners():
    z = [torch.randn(10) for _ in range(4)]
    grid = torch.tensor([0.0, math.pi / 2])
    out = R.interpolation_manifold(*z, grid, grid)
    for k in range(4):
        assert torch.allclose(out[k], z[k], atol=1e-6)
    mid = R.interpolation_manifold(*z, torch.tensor([math.pi / 4]), torch.tensor([math.pi / 4]))
    assert torch.allclose(mid[0], sum(z) / 2, atol=1e-6)


# --------------------------------------------------------------------------- training
def _tiny_data(n=48, seed=9):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 4, 4), generator=g, dtype=torch.uint8)


def test_nan_guard_stops_training_and_eval(tmp_path):
    torch.manual_seed(10)
    m = R.RealNVP((1, 4, 4), scales=1, features=4, blocks=1)
    with torch.no_grad():
        m.final[0].scale.fill_(float("nan"))
    cfg = R.TrainConfig(batch_size=8, max_steps=3, eval_size=8, eval_every_seconds=1e9)
    with pytest.raises(NonFiniteError, match="log-det"):
        R.train_flow(m, _tiny_data(), _tiny_data(8), cfg, tmp_path / "c.pt", log=lambda s: None)
    with pytest.raises(NonFiniteError, match="log-det"):
        R.evaluate_bpd(m, _tiny_data(8))


def test_training_learns_and_resume_is_exact(tmp_path):
    x, xe = _tiny_data(), _tiny_data(16, seed=11)

    def fresh():
        torch.manual_seed(12)
        return R.RealNVP((1, 4, 4), scales=1, features=4, blocks=1)

    cfg = dict(batch_size=8, eval_size=16, eval_every_seconds=1e9, lr=3e-3)
    straight = fresh()
    res = R.train_flow(straight, x, xe, R.TrainConfig(max_steps=12, **cfg), tmp_path / "a.pt",
                       log=lambda s: None)
    assert res.finished and res.step == 12 and res.resumed_from_step is None
    assert res.history[-1]["test_bpd"] < res.history[0]["test_bpd"]   # it learns something
    part = fresh()
    r1 = R.train_flow(part, x, xe, R.TrainConfig(max_steps=7, **cfg), tmp_path / "b.pt",
                      log=lambda s: None)
    assert r1.step == 7
    resumed = fresh()                                  # a new process would start like this
    r2 = R.train_flow(resumed, x, xe, R.TrainConfig(max_steps=12, **cfg), tmp_path / "b.pt",
                      log=lambda s: None)
    assert r2.resumed_from_step == 7 and r2.step == 12 and r2.finished
    for (n, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), n
    with pytest.raises(ValueError, match="another config"):
        R.train_flow(fresh(), x, xe, R.TrainConfig(max_steps=12, **{**cfg, "lr": 1e-4}),
                     tmp_path / "b.pt", log=lambda s: None)


def test_cosine_schedule_warms_up_and_ends_at_zero_and_binds_the_budget():
    c = R.TrainConfig(lr=1e-3, lr_schedule="cosine", warmup_steps=10, max_train_seconds=100.0)
    assert c.lr_at(0, 0.0) == pytest.approx(1e-4)              # warm-up: (0 + 1) / 10 of lr
    assert c.lr_at(9, 0.0) == pytest.approx(1e-3)
    assert c.lr_at(50, 50.0) == pytest.approx(0.5e-3)          # half the training time
    assert c.lr_at(80, 100.0) == pytest.approx(0.0, abs=1e-12)
    assert c.lr_at(80, 250.0) == pytest.approx(0.0, abs=1e-12)  # past the budget: stays 0
    steps = R.TrainConfig(lr=1e-3, lr_schedule="cosine", max_steps=4)
    assert [round(steps.lr_at(k, 0.0) / 1e-3, 4) for k in range(5)] == [1.0, 0.8536, 0.5, 0.1464, 0.0]
    const = R.TrainConfig(lr=1e-3)
    assert const.lr_at(10 ** 6, 1e9) == 1e-3
    # the cosine run's identity includes its budget; the constant one's does not
    assert (R.TrainConfig(lr_schedule="cosine", max_train_seconds=1.0).key({})
            != R.TrainConfig(lr_schedule="cosine", max_train_seconds=2.0).key({}))
    assert R.TrainConfig(max_train_seconds=1.0).key({}) == R.TrainConfig(max_train_seconds=2.0).key({})
    with pytest.raises(ValueError, match="lr_schedule"):
        R.TrainConfig(lr_schedule="triangular")
    with pytest.raises(ValueError, match="ema_decay"):
        R.TrainConfig(ema_decay=1.0)


def test_ema_weights_are_the_average_and_resume_is_exact(tmp_path):
    """With ema_decay the returned model holds the moving average of the trained weights
    (recomputed here by hand from each step's weights), the curve reports both, and a run
    split in two calls ends bit-for-bit like a straight one, average included."""
    x, xe = _tiny_data(), _tiny_data(16, seed=11)

    def fresh():
        torch.manual_seed(12)
        return R.RealNVP((1, 4, 4), scales=1, features=4, blocks=1)

    cfg = R.TrainConfig(batch_size=8, eval_size=16, eval_every_seconds=1e9, lr=3e-3, max_steps=6,
                        lr_schedule="cosine", warmup_steps=2, ema_decay=0.5)
    # by hand: train with the same settings, averaging each step's weights
    ref = fresh()
    avg = {k: v.clone() for k, v in ref.state_dict().items()}
    n_upd = [0]
    orig_step = torch.optim.Adam.step

    def step_and_average(self, *a, **kw):
        out = orig_step(self, *a, **kw)
        d = min(0.5, (1 + n_upd[0]) / (10 + n_upd[0])) if n_upd[0] else 0.0
        for k, v in ref.state_dict().items():
            avg[k] = avg[k] + (v - avg[k]) * (1 - d) if v.is_floating_point() else v.clone()
        n_upd[0] += 1
        return out

    torch.optim.Adam.step = step_and_average
    try:
        res = R.train_flow(ref, x, xe, cfg, tmp_path / "ref.pt", log=lambda s: None)
    finally:
        torch.optim.Adam.step = orig_step
    assert res.finished and n_upd[0] == 6
    for k, v in ref.state_dict().items():              # ref now holds the average
        assert torch.allclose(v.float(), avg[k].float(), atol=1e-6), k
    last = res.history[-1]
    assert "test_bpd_raw" in last and last["test_bpd"] != last["test_bpd_raw"]
    assert last["test_bpd"] == pytest.approx(R.evaluate_bpd(ref, xe, seed=cfg.seed + 12345))
    # split run: the budget is the same (cosine), only the segment ends early
    part = fresh()
    r1 = R.train_flow(part, x, xe, cfg, tmp_path / "b.pt", segment_seconds=0.0, log=lambda s: None)
    assert r1.step == 1 and not r1.finished
    r2 = R.train_flow(fresh(), x, xe, cfg, tmp_path / "b.pt", log=lambda s: None)
    assert r2.resumed_from_step == 1 and r2.step == 6
    done = fresh()
    R.train_flow(done, x, xe, cfg, tmp_path / "b.pt", log=lambda s: None)   # finished: loads only
    for (n, a), (_, b) in zip(ref.state_dict().items(), done.state_dict().items(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), n
    with pytest.raises(ValueError, match="another config"):   # another budget = another schedule
        R.train_flow(fresh(), x, xe, R.TrainConfig(**{**cfg.__dict__, "max_steps": 9}),
                     tmp_path / "b.pt", log=lambda s: None)


def test_sampling_and_invertibility_helpers():
    torch.manual_seed(13)
    m = R.RealNVP((1, 4, 4), scales=1, features=4, blocks=1)
    randomize(m, 0.1)
    s = R.sample(m, 6, temperature=0.7, seed=0)
    assert s.shape == (6, 1, 4, 4) and float(s.min()) >= 0 and float(s.max()) <= 1
    assert torch.equal(s, R.sample(m, 6, temperature=0.7, seed=0))
    err = R.invertibility_error(m, _tiny_data(16))
    assert err["max_abs_logit"] < 1e-4
    man = R.decode_manifold(m, _tiny_data(4), steps=3)
    assert man.shape == (9, 1, 4, 4)
    # corners of the manifold are the (mid-bin dequantised) input images
    x4 = _tiny_data(4).float()
    for k, idx in enumerate([0, 2, 6, 8]):
        assert float((man[idx] * 256 - (x4[k] + 0.5)).abs().max()) < 1e-2


def test_toy_training_reduces_nll():
    torch.manual_seed(14)
    x = R.toy_data(512)
    f = R.VectorFlow(2, couplings=4, hidden=16)
    losses = R.train_toy(f, x, steps=60, batch_size=128, lr=3e-3)
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.2


def test_amp_and_channels_last_paths(tmp_path):
    """The `full` profile's bfloat16 s/t nets and channels_last layout, exercised on CPU."""
    import copy

    torch.manual_seed(15)
    m = R.RealNVP((3, 8, 8), scales=1, features=8, blocks=1)
    randomize(m, 0.2)
    m.eval()
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        zs, ld = m(x)
        m_amp = R.RealNVP((3, 8, 8), scales=1, features=8, blocks=1, amp=True)
        m_amp.load_state_dict(m.state_dict())
        m_amp.eval()
        zs_amp, ld_amp = m_amp(x)
        assert float((m_amp.inverse(zs_amp) - x).abs().max()) < 1e-4   # still exactly invertible
        assert float((ld_amp - ld).abs().max()) < 0.05 * float(ld.abs().max())
        m_cl = copy.deepcopy(m).to(memory_format=torch.channels_last)
        zs_cl, ld_cl = m_cl(x.contiguous(memory_format=torch.channels_last))
        assert torch.allclose(m.flatten_z(zs_cl), m.flatten_z(zs), atol=1e-5)
        assert torch.allclose(ld_cl, ld, atol=1e-4)
    g = torch.Generator().manual_seed(16)
    xs = torch.randint(0, 256, (16, 3, 8, 8), generator=g, dtype=torch.uint8)
    cfg = R.TrainConfig(batch_size=8, max_steps=2, eval_size=8, eval_every_seconds=1e9,
                        channels_last=True)
    res = R.train_flow(m_amp, xs, xs, cfg, tmp_path / "amp.pt", log=lambda s: None)
    assert res.step == 2 and all(math.isfinite(r["test_bpd"]) for r in res.history)


def test_a_segment_shorter_than_start_up_still_makes_progress(tmp_path):
    torch.manual_seed(17)
    m = R.RealNVP((1, 4, 4), scales=1, features=4, blocks=1)
    cfg = R.TrainConfig(batch_size=8, max_steps=5, eval_size=8, eval_every_seconds=1e9)
    steps = [R.train_flow(m, _tiny_data(), _tiny_data(8), cfg, tmp_path / "s.pt",
                          segment_seconds=0.0, log=lambda s: None).step for _ in range(2)]
    assert steps == [1, 2]


def test_coupling_precision_switches_and_restores_every_layer():
    m = R.RealNVP((1, 4, 4), scales=1, features=4, blocks=1, amp=True)
    couplings = [l for l in m.modules() if isinstance(l, R.AffineCoupling)]
    assert couplings and all(l.amp for l in couplings)
    with pytest.raises(RuntimeError):
        with R.coupling_precision(m, False):
            assert not any(l.amp for l in couplings)
            raise RuntimeError("an evaluation that fails")
    assert all(l.amp for l in couplings)           # restored even after the error
    with R.coupling_precision(m, None):
        assert all(l.amp for l in couplings)       # None changes nothing


def test_bf16_trained_flow_likelihood_within_the_stated_tolerance_of_float32(tmp_path):
    """Notebook 05's test 3 on a small problem: a flow trained with bf16 s/t nets, evaluated
    on held-out images with the nets in float32 and in bf16 (same noise): the bits/dim differ
    by at most ``BF16_TOLERANCE_BPD``; and the evaluation really switched precision (the two
    numbers are not bitwise equal)."""
    torch.manual_seed(18)
    g = torch.Generator().manual_seed(19)
    # structured 8x8 images: a random horizontal bar on a dark background, plus pixel noise
    rows = torch.randint(0, 8, (320,), generator=g)
    x = (torch.arange(8)[None, :, None] == rows[:, None, None]).float().expand(-1, 8, 8) * 200
    x = (x + torch.rand(320, 8, 8, generator=g) * 40).clamp(0, 255).to(torch.uint8)[:, None]
    m = R.RealNVP((1, 8, 8), scales=1, features=8, blocks=1, amp=True)
    cfg = R.TrainConfig(batch_size=32, max_steps=60, eval_size=64, eval_every_seconds=1e9,
                        lr=3e-3)
    R.train_flow(m, x[:256], x[256:], cfg, tmp_path / "bf16.pt", log=lambda s: None)
    f32 = R.evaluate_bpd(m, x[256:], seed=3, amp=False)
    bf16 = R.evaluate_bpd(m, x[256:], seed=3, amp=True)
    first = R.evaluate_bpd(R.RealNVP((1, 8, 8), scales=1, features=8, blocks=1), x[256:], seed=3)
    assert f32 < first - 0.5                       # it trained
    assert f32 != bf16
    assert abs(bf16 - f32) <= R.BF16_TOLERANCE_BPD
