"""Tests of common.gan: shapes and ranges, the two generator losses, a short training run."""
import math

import pytest
import torch

from common import gan


def _logit(p):
    return torch.log(torch.tensor(p) / (1 - torch.tensor(p)))


@pytest.mark.parametrize("n_classes", [0, 10])
def test_generator_shape_and_range(n_classes):
    G = gan.Generator(100, 8, n_classes).eval()
    z = gan.sample_noise(16, 100, torch.Generator().manual_seed(0))
    assert z.min() >= -1 and z.max() <= 1
    y = torch.arange(16) % 10 if n_classes else None
    x = G(z * 50, y)            # large inputs saturate tanh but never leave [-1, 1]
    assert x.shape == (16, 1, 28, 28)
    assert x.min() >= -1 and x.max() <= 1
    img = gan.generate(G, z, y)
    assert img.min() >= 0 and img.max() <= 1


def test_conditional_networks_require_labels():
    with pytest.raises(ValueError):
        gan.Generator(10, 4, 10)(torch.zeros(2, 10))
    with pytest.raises(ValueError):
        gan.Discriminator(4, 10)(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError):
        gan.Generator(10, 4)(torch.zeros(2, 10), torch.zeros(2, dtype=torch.long))


def test_unconditional_discriminator_refuses_labels():
    with pytest.raises(ValueError, match="unconditional"):
        gan.Discriminator(4)(torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long))


def test_discriminator_and_vae_shapes():
    D = gan.Discriminator(8, 10).eval()
    assert D(torch.zeros(5, 1, 28, 28), torch.arange(5)).shape == (5,)
    vae = gan.ConvVAE(12, 8).eval()
    x = torch.bernoulli(torch.full((4, 1, 28, 28), 0.3))
    assert vae.elbo(x).shape == (4,)
    out = vae(torch.randn(4, 12))
    assert out.shape == (4, 1, 28, 28) and out.min() >= -1 and out.max() <= 1


def test_generator_losses_on_known_d_outputs():
    # D(G(z)) = 0.5 and 0.1: non-saturating -log D, saturating log(1 - D)
    logits = torch.stack([_logit(0.5), _logit(0.1)])
    ns = [float(gan.g_loss(l[None], "non_saturating")) for l in logits]
    sat = [float(gan.g_loss(l[None], "saturating")) for l in logits]
    assert ns == pytest.approx([math.log(2), -math.log(0.1)], rel=1e-5)    # 0.6931, 2.3026
    assert sat == pytest.approx([math.log(0.5), math.log(0.9)], rel=1e-5)  # -0.6931, -0.1054
    # the batch mean of both
    assert float(gan.g_loss(logits)) == pytest.approx((math.log(2) + math.log(10)) / 2, rel=1e-5)


def test_saturating_gradient_vanishes_when_d_rejects_fakes():
    l = _logit(0.01).clone().requires_grad_()
    gan.g_loss(l[None], "saturating").backward()
    g_sat = float(l.grad)
    l.grad = None
    gan.g_loss(l[None], "non_saturating").backward()
    g_ns = float(l.grad)
    assert g_sat == pytest.approx(-0.01, rel=1e-4)       # -D
    assert g_ns == pytest.approx(-0.99, rel=1e-4)        # -(1 - D)


def test_d_loss_by_hand():
    real, fake = _logit(0.8)[None], _logit(0.3)[None]
    assert float(gan.d_loss(real, fake)) == pytest.approx(-math.log(0.8) - math.log(0.7), rel=1e-5)


def test_unknown_loss_kind_is_an_error():
    with pytest.raises(ValueError):
        gan.g_loss(torch.zeros(1), "wasserstein")


def test_short_training_run_logs_every_step_and_is_seeded():
    x = torch.rand(256, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        G, D = gan.Generator(16, 4), gan.Discriminator(4)
        h = gan.train_gan(G, D, x, steps=6, batch_size=32, k=2, seed=3, eval_every=3,
                          on_eval=lambda s: {"s": float(s)})
        runs.append(h)
    h = runs[0]
    assert len(h.g_loss) == len(h.g_grad_norm) == 6 and [e["step"] for e in h.evals] == [3, 6]
    assert len(h.log.seconds) == 2 and h.log.samples == [3 * 2 * 32, 3 * 2 * 32]
    assert h.g_loss == runs[1].g_loss
    assert all(0 < v < 1 for v in h.d_real + h.d_fake)


def test_vae_training_improves_the_bound():
    x = (torch.rand(256, 1, 28, 28, generator=torch.Generator().manual_seed(0)) < 0.2).float()
    torch.manual_seed(0)
    vae = gan.ConvVAE(8, 4)
    before = gan.test_elbo(vae, x)
    h = gan.train_vae(vae, x, steps=40, batch_size=64, lr=3e-3)
    assert len(h.elbo) == 40
    assert gan.test_elbo(vae, x) > before


def test_kept_run_trains_once_then_loads_the_same_model_and_history(tmp_path, monkeypatch):
    """Notebook 07's segments: a finished run is saved, and a rerun loads it instead of training."""
    from common import training

    x = torch.rand(64, 1, 28, 28) * 2 - 1
    path = tmp_path / f"dcgan-{gan.run_key(steps=3, ch=4)}.pt"
    calls = []

    def make():
        torch.manual_seed(0)
        return gan.Generator(8, 4), gan.Discriminator(4)

    G, D = make()

    def train():
        calls.append(1)
        return gan.train_gan(G, D, x, steps=3, batch_size=16, eval_every=2,
                             on_eval=lambda step: {"fid_mnist": float(step)})

    monkeypatch.setattr(gan, "_runs_trained", 0)
    training.start_segment(1e-9)          # over at once: still, one run per process trains
    try:
        hist, loaded = gan.kept_run(path, G, train)
        assert not loaded and calls == [1] and path.is_file()
        G2, _ = make()
        hist2, loaded2 = gan.kept_run(path, G2, lambda: calls.append(2))
        assert loaded2 and calls == [1]
        for a, b in zip(G.state_dict().values(), G2.state_dict().values()):
            assert torch.equal(a, b)
        assert hist2.steps == hist.steps and hist2.g_grad_norm == hist.g_grad_norm
        assert hist2.evals == hist.evals and hist2.log.summary() == hist.log.summary()
        with pytest.raises(training.SegmentUnfinished, match="run again"):
            gan.kept_run(tmp_path / "other.pt", gan.Generator(8, 4), lambda: calls.append(3))
        assert calls == [1]
    finally:
        training.start_segment(None)
    assert gan.run_key(steps=3, ch=4) != gan.run_key(steps=4, ch=4)
    vh = gan.VAEHistory(steps=[1], elbo=[-1.0], evals=[], log=None)
    assert gan.history_from_state(gan.history_state(vh)) == vh


@pytest.mark.parametrize("k,reuse,expected", [(1, True, 1), (2, True, 2), (1, False, 2), (2, False, 3)])
def test_generator_forwards_per_step(k, reuse, expected):
    """One G forward per G step (the D step's fake batch is reused) unless asked otherwise;
    k D steps draw k batches, the last of which G's step reuses."""
    x = torch.rand(128, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.manual_seed(0)
    G, D = gan.Generator(8, 4), gan.Discriminator(4)
    calls = []
    G.register_forward_hook(lambda *a: calls.append(1))
    gan.train_gan(G, D, x, steps=5, batch_size=16, k=k, reuse_fake=reuse)
    assert len(calls) == 5 * expected


def test_reused_fake_batch_gets_gradient_through_the_updated_d():
    """G's step with the reused batch equals G's loss on D (after D's step) of that same batch:
    one step from identical states, reproduced by hand."""
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    torch.manual_seed(0)
    G, D = gan.Generator(8, 4), gan.Discriminator(4)
    G2, D2 = gan.Generator(8, 4), gan.Discriminator(4)
    G2.load_state_dict(G.state_dict()); D2.load_state_dict(D.state_dict())
    h = gan.train_gan(G, D, x, steps=1, batch_size=16, seed=5)
    # by hand: same generator stream (batch order first, then noise), one D step, then G's loss
    gen = torch.Generator().manual_seed(5)
    order = torch.randperm(64, generator=gen)
    xr = x[order[:16]]
    z = gan.sample_noise(16, 8, gen)
    opt_d = torch.optim.Adam(D2.parameters(), lr=2e-4, betas=(0.5, 0.999))
    xf = G2(z)
    ld = gan.d_loss(D2(xr), D2(xf.detach()))
    opt_d.zero_grad(); ld.backward(); opt_d.step()
    d_grads = [p.grad.clone() for p in D2.parameters()]
    lg = gan.g_loss(D2(xf))
    opt_g = torch.optim.Adam(G2.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g.zero_grad(); lg.backward(); opt_g.step()
    assert h.d_loss[0] == pytest.approx(ld.item(), rel=1e-5)
    assert h.g_loss[0] == pytest.approx(lg.item(), rel=1e-5)
    # G's step moved G as by hand and left D alone: D frozen during it (its weight gradients
    # are not computed), so D's .grad still holds its own step's gradients, and D trains again
    for a, b in zip(G.parameters(), G2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    for a, b, g in zip(D.parameters(), D2.parameters(), d_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(a.grad, g, rtol=1e-5, atol=1e-7)
        assert a.requires_grad


def test_bf16_autocast_training_runs_and_stays_finite():
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.manual_seed(0)
    h = gan.train_gan(gan.Generator(8, 4), gan.Discriminator(4), x, steps=3, batch_size=16, amp=True)
    assert all(math.isfinite(v) for v in h.d_loss + h.g_loss)
    hv = gan.train_vae(gan.ConvVAE(8, 4), (x > 0).float(), steps=3, batch_size=16, amp=True)
    assert all(math.isfinite(v) for v in hv.elbo)


def test_attribute_direction_averages_out_the_class():
    """z = (attribute-carrying coordinate, class-carrying coordinate): within each class the
    attribute follows z[:, 0]; the class shifts z[:, 1] and correlates with the attribute
    across classes. The per-class difference of top and bottom means recovers coordinate 0
    alone, by hand: top 10 % of 20 = 2 samples."""
    zs, attr, lab = [], [], []
    for c in range(3):
        a = torch.arange(20, dtype=torch.float32)
        zs.append(torch.stack([a, torch.full((20,), 10.0 * c)], 1))
        attr.append(a + 100 * c)                 # the class also raises the attribute
        lab.append(torch.full((20,), c))
    v = gan.attribute_direction(torch.cat(zs), torch.cat(attr), torch.cat(lab), frac=0.1, n_classes=3)
    # top two (18, 19) minus bottom two (0, 1): 18 in coordinate 0, 0 in coordinate 1
    assert torch.allclose(v, torch.tensor([18.0, 0.0]))
    with pytest.raises(ValueError, match="10 samples"):
        gan.attribute_direction(torch.zeros(5, 2), torch.zeros(5), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="frac"):
        gan.attribute_direction(torch.zeros(5, 2), torch.zeros(5), torch.zeros(5), frac=0.9)


def test_walk_attribute_counts_kept_digits_and_the_attribute():
    """A 'generator' that paints z[0] as ink and a 'classifier' whose label is z[0]'s sign:
    moving along v = (1, 0) raises ink everywhere; the label flips for starts near 0."""
    class Paint(torch.nn.Module):
        def forward(self, z):
            return (z[:, :1, None, None] * torch.ones(1, 1, 28, 28)).clamp(-1, 1)

    def sign(x):
        return (x.flatten(1).mean(1) > 0.5).long()   # generate() maps [-1, 1] to [0, 1]

    z = torch.tensor([[-0.9, 0.0], [-0.1, 0.0], [0.2, 0.0], [0.5, 0.0]])
    out = gan.walk_attribute(Paint(), sign, z, torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.5]),
                             lambda x: x.flatten(1).mean(1))
    assert out["kept"] == [1.0, 0.75]            # only the start at -0.1 crosses 0 at alpha 0.5
    assert out["attribute"][1] > out["attribute"][0]
    assert out["images"].shape == (8, 1, 28, 28)


def test_exemplar_walk_is_the_direction_from_the_pool_then_the_walk():
    """Same labels and attribute as the pieces called by hand: the attribute and the label
    reach the right arguments (swapping them changes the direction)."""
    torch.manual_seed(0)
    G = gan.Generator(z_dim=6, ch=2).eval()
    label = lambda x: (x.flatten(1).mean(1) * 40).long().clamp(0, 9)
    ink = lambda x: x.flatten(1).mean(1)
    z_pool = gan.sample_noise(400, 6, torch.Generator().manual_seed(1))
    z_start, alphas = gan.sample_noise(20, 6, torch.Generator().manual_seed(2)), torch.tensor([0.0, 1.0])
    x_pool = gan.generate(G, z_pool)
    v = gan.attribute_direction(z_pool, ink(x_pool), label(x_pool))
    by_hand = gan.walk_attribute(G, label, z_start, v, alphas, ink)
    out = gan.exemplar_walk(G, label, ink, z_pool, z_start, alphas)
    assert out["kept"] == by_hand["kept"] and out["attribute"] == by_hand["attribute"]
    assert torch.equal(out["images"], by_hand["images"])


def test_classifier_config_is_the_profile_s_classifier():
    cfg = gan.CONFIGS["cpu"]
    c = gan.classifier_config(cfg)
    assert (c["epochs"], c["batch_size"], c["lr"]) == (cfg["clf_epochs"], cfg["clf_batch"], cfg["clf_lr"])
    assert c["arch"] == {"c1": 16, "c2": 32, "feat": 128} and c["seed"] == 0


def test_claim_checks_and_verdict_name_what_failed():
    from common import report

    per_seed = {"dcgan": {"sharpness": [0.30, 0.31, 0.32], "coverage_kl": [0.01, 0.02, 0.03],
                          "recognisable": [0.9, 0.9, 0.9]},
                "cgan": {"cond_acc": [0.97, 0.98, 0.99], "recognisable": [0.95, 0.95, 0.95]},
                "vae": {"sharpness": [0.20, 0.20, 0.21]}}
    arith = [{"alphas": [0.0, 0.5, 1.0], "kept": [1.0, 0.9, 0.8], "attribute": [0.1, 0.12, 0.14]}] * 3
    flat = {"a": True, "b": True}
    checks = gan.claim_checks(per_seed, [50, 60, 70], arith, flat)
    assert [c["met"] for c in checks] == [True] * 6
    assert report.claims_verdict(checks, reduced=True)[0] == "effect shown (reduced)"
    assert report.claims_verdict(checks, reduced=False)[0] == "reproduced"
    # one seed's gradient ratio below 10, the coverage over 0.05, one curve still falling
    per_seed["dcgan"]["coverage_kl"] = [0.2, 0.2, 0.2]
    checks = gan.claim_checks(per_seed, [50, 9, 70], arith, {"a": True, "b": False})
    met = [c["met"] for c in checks]
    assert met == [False, True, True, True, False, False]
    status, sentence = report.claims_verdict(checks, reduced=True)
    assert status == "not shown (reduced)"
    assert "Not shown: the saturating" in sentence and "covers all ten digits" in sentence.split("Not shown:")[1]
    assert "9–70x" in sentence        # the measured number is named with its claim
    # the digit lost at alpha 1, or ink not rising at every step
    lost = [{"alphas": [0.0, 0.5, 1.0], "kept": [1.0, 0.9, 0.6], "attribute": [0.1, 0.12, 0.14]}] * 3
    assert gan.claim_checks(per_seed, [50] * 3, lost, flat)[3]["met"] is False
    flatink = [{"alphas": [0.0, 0.5, 1.0], "kept": [1.0, 0.9, 0.8], "attribute": [0.1, 0.12, 0.12]}] * 3
    assert gan.claim_checks(per_seed, [50] * 3, flatink, flat)[3]["met"] is False
    with pytest.raises(ValueError):
        report.claims_verdict([], reduced=True)


def test_fused_adam_agrees_with_the_per_parameter_loop():
    """Fused Adam (train_vae's default) and torch's loop (train_gan's) end three cGAN steps at
    the same weights up to rounding."""
    x = torch.rand(64, 1, 28, 28) * 2 - 1
    y = torch.randint(0, 10, (64,))
    ends = []
    for fused in (False, True):
        torch.manual_seed(0)
        G, D = gan.Generator(8, 4, 10), gan.Discriminator(4, 10)
        gan.train_gan(G, D, x, y, steps=3, batch_size=16, fused=fused)
        ends.append(torch.cat([p.detach().flatten() for p in [*G.parameters(), *D.parameters()]]))
    torch.testing.assert_close(ends[1], ends[0], rtol=1e-4, atol=1e-6)
    assert gan.adam(G, 1e-3, (0.5, 0.999), True).defaults["fused"] is True
