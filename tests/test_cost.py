"""FLOP counting of the full-profile cost table."""
import torch

from common import cost


def test_count_matches_a_linear_layers_matmuls():
    lin = torch.nn.Linear(30, 20, bias=False)
    x = torch.randn(8, 30)                      # no input gradient: forward + weight gradient

    def step():
        lin.zero_grad()
        lin(x).sum().backward()
    flops, seconds = cost.count(step, measure=True)
    assert flops == 2 * (2 * 8 * 30 * 20) and seconds is not None and seconds > 0


def test_h100_estimate_uses_the_stated_assumption():
    row = cost.StepCost("xx", "m", flops_per_step=1e12, steps=60)
    assert row.total == 6e13
    assert abs(row.h100_minutes - 6e13 / (cost.UTILISATION * cost.H100_BF16_DENSE) / 60) < 1e-12
    assert "30%" in cost.table([row])
