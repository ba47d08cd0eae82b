import math

import pytest
import torch

from common import dae, training


def make(seed=0, n_visible=20, n_hidden=8):
    return dae.DenoisingAutoencoder(n_visible, n_hidden, torch.Generator().manual_seed(seed))


def test_tutorial_initialisation():
    m = dae.DenoisingAutoencoder(784, 500, torch.Generator().manual_seed(0))
    bound = 4 * math.sqrt(6 / (784 + 500))
    assert m.W.shape == (784, 500)
    assert float(m.W.detach().abs().max()) <= bound and float(m.W.detach().abs().max()) > 0.95 * bound
    assert torch.count_nonzero(m.b) == 0 and torch.count_nonzero(m.b_prime) == 0


def test_cost_equals_tutorial_formula_with_tied_weights():
    m = make().double()
    with torch.no_grad():
        m.b.uniform_(-1, 1)
        m.b_prime.uniform_(-1, 1)
    x = torch.rand(5, 20, dtype=torch.float64)
    y = torch.sigmoid(x @ m.W + m.b)
    z = torch.sigmoid(y @ m.W.T + m.b_prime)  # W' = W^T
    expected = -(x * torch.log(z) + (1 - x) * torch.log(1 - z)).sum(1).mean()
    torch.testing.assert_close(m.cost(x, 0.0), expected)


def test_corruption_keeps_fraction_and_target_stays_clean():
    x = torch.ones(200, 500)
    g = torch.Generator().manual_seed(1)
    xt = dae.DenoisingAutoencoder.corrupt(x, 0.3, g)
    assert set(xt.unique().tolist()) == {0.0, 1.0}
    assert abs(float(xt.mean()) - 0.7) < 0.01
    assert dae.DenoisingAutoencoder.corrupt(x, 0.0) is x
    with pytest.raises(ValueError, match="corruption level"):
        dae.DenoisingAutoencoder.corrupt(x, 1.0)
    # the cost with corruption reconstructs the clean x: equals the clean-input cost of a model
    # fed x̃ only when nothing is dropped
    m = make()
    xs = torch.rand(4, 20)
    assert not torch.isclose(m.cost(xs, 0.5, torch.Generator().manual_seed(0)), m.cost(xs, 0.0))


def test_training_lowers_cost_and_calls_back_every_epoch():
    g = torch.Generator().manual_seed(0)
    proto = (torch.rand(4, 20, generator=g) > 0.5).float()
    x = proto[torch.randint(0, 4, (400,), generator=g)]
    m = make()
    seen = []
    before = dae.reconstruction_error(m, x)
    log = dae.train_dae(m, x, 0.3, lr=0.1, batch_size=20, epochs=3, on_epoch=lambda e, _: seen.append(e))
    assert seen == [0, 1, 2, 3]
    assert len(log.rows) == 3 and log.rows[-1]["cost"] < log.rows[0]["cost"]
    assert dae.reconstruction_error(m, x) < before
    assert dae.hidden_codes(m, x).shape == (400, 8)


def test_filters_shape():
    m = dae.DenoisingAutoencoder(784, 500)
    assert m.filters(100).shape == (100, 28, 28)
    assert torch.equal(m.filters(3)[1].flatten(), m.W.detach()[:, 1])


def test_nan_input_stops_training():
    m = make()
    x = torch.rand(40, 20)
    x[3, 2] = float("nan")
    with pytest.raises(training.NonFiniteError, match="dA cost"):
        dae.train_dae(m, x, 0.0, epochs=1)


def test_filter_smoothness_noise_vs_strokes_and_mask():
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(784, 4, generator=g) - 0.5             # the initialisation: i.i.d.
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    blob = torch.exp(-((yy - 14) ** 2 + (xx - 10) ** 2) / 20).reshape(784, 1)
    ramp = (xx + yy).reshape(784, 1)
    mask = torch.zeros(28, 28, dtype=torch.bool)
    mask[4:24, 4:24] = True
    s = dae.filter_smoothness(torch.cat([noise, blob, ramp], 1), mask)
    assert s.shape == (6,)
    assert s[:4].abs().max() < 0.2 and s[4] > 0.9 and s[5] > 0.99
    # the mask decides which pixels count: noise outside it does not lower a smooth filter's score
    mixed = blob.clone().reshape(28, 28)
    mixed[:4] = torch.rand(4, 28, generator=g)
    assert dae.filter_smoothness(mixed.reshape(784, 1), mask)[0] > 0.9
    assert dae.filter_smoothness(mixed.reshape(784, 1), torch.ones(28, 28, dtype=torch.bool))[0] < 0.9
    with pytest.raises(ValueError):
        dae.filter_smoothness(noise, torch.ones(27, 27, dtype=torch.bool))
