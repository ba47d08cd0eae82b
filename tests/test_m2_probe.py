"""tools/m2_probe.py on small data it makes itself: it trains, evaluates and reports."""
import json

import torch

from tools import m2_probe


def test_probe_runs_and_reports(monkeypatch, capsys):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(400, 784, generator=g), torch.arange(10).repeat(40)
    monkeypatch.setattr(m2_probe.data, "load_mnist", lambda split: (x, y) if split == "train" else (x[:50], y[:50]))
    assert m2_probe.main(["--n", "20", "--steps", "3", "--eval-every", "2", "--labelled", "5",
                          "--unlabelled", "5", "--labelled-weight", "0.2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [json.loads(line) for line in lines[:-1]]
    assert [r["step"] for r in rows] == [2, 3]
    assert all(0 <= r["valid_acc"] <= 100 and 0 <= r["generative_acc_2000"] <= 100 for r in rows)
    final = json.loads(lines[-1].removeprefix("final "))
    assert final["labelled_weight"] == 0.2 and final["step"] == 3
