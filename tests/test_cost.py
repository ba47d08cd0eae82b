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


def test_per_notebook_rate_is_flops_over_seconds_and_none_unless_every_model_was_timed():
    rows = [cost.StepCost("01", "a", 2e9, 10, seconds_per_step_here=0.1),
            cost.StepCost("01", "b", 1e9, 5, seconds_per_step_here=0.2),
            cost.StepCost("02", "c", 1e9, 5), cost.StepCost("05", "d", 1e9, 3, "steps per epoch (x)")]
    nb = cost.per_notebook(rows)
    assert abs(nb["01"]["cpu_gflop_per_s"] - 3e9 / 0.3 / 1e9) < 1e-9
    assert abs(nb["01"]["total_pflop"] - 25e9 / 1e15) < 1e-18
    assert abs(nb["01"]["cpu_hours"] - 25e9 / (3e9 / 0.3) / 3600) < 1e-12
    assert nb["02"]["cpu_gflop_per_s"] is None and nb["02"]["cpu_hours"] is None
    assert nb["05"]["per_epoch_only"] and not nb["01"]["per_epoch_only"]
    rec = cost.record(rows, measured=True)
    text = cost.describe("01", rec)
    assert "GFLOP/s" in text and "H100" in text and "a: 2 GFLOP/step x 10" in text
    assert "not measured" in cost.describe("02", rec) and "per epoch" in cost.describe("05", rec)
    table = cost.readme_table(rec)
    assert table.count("\n| 0") == 3 and "| 02 | 5e-06 | — | — |" in table


def test_committed_cost_json_covers_every_notebook_and_matches_the_readme():
    """docs/cost.json (make cost) has a row for every notebook, each prints (the notebooks' cost
    cell), and the README's generated cost table is the one built from it."""
    from common import reproduce, runtime

    rec = cost.load()
    books = sorted(b.name[:2] for b in reproduce.find_notebooks(None))
    assert sorted(rec["notebooks"]) == books
    for nb in books:
        assert f"full profile of {nb}:" in cost.describe(nb, rec)
    readme = (runtime.REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start, end = cost.README_COST
    assert readme.split(start, 1)[1].split(end, 1)[0].strip() == cost.readme_table(rec).strip()
