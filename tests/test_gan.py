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
