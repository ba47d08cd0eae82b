"""tools/m1m2_probe.py on small data it makes itself: it loads an M1, trains M1+M2 and reports."""
import json

import torch

from common import kingma, profiles
from common.training import save_checkpoint
from tools import m1m2_probe


def test_probe_loads_m1_trains_and_reports(monkeypatch, capsys, tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(400, 784, generator=g), torch.arange(10).repeat(40)
    monkeypatch.setattr(m1m2_probe.data, "load_mnist", lambda split: (x, y) if split == "train" else (x[:50], y[:50]))
    m1 = kingma.M1(784, 50, profiles.CONFIGS_03["cpu"]["m1_hidden"], seeds=profiles.CONFIGS_03["cpu"]["m1_seeds"])
    save_checkpoint(tmp_path / "m1.pt", {"model": m1.state_dict()})
    monkeypatch.setitem(profiles.CONFIGS_03["cpu"], "active_std", 0.0)   # an untrained M1: keep every dim
    assert m1m2_probe.main(["--m1", str(tmp_path / "m1.pt"), "--n", "20", "--epochs", "2", "--batches", "3",
                            "--labelled", "5", "--hidden", "8", "--alpha", "10"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["alpha"] == 10.0 and out["schedule"] == [2, 3, 5, 100] and out["hidden"] == [8]
    assert len(out["valid_acc_curve"]) == 2 and 0 <= out["valid_acc"] <= 100
    assert 0 <= out["m1_svc_valid_acc"] <= 100 and out["active_dims"] == 50
    # without --alpha: the profile's per-N alpha for that N
    monkeypatch.setitem(profiles.CONFIGS_03["cpu"], "alpha", {20: 7.0})
    assert m1m2_probe.main(["--m1", str(tmp_path / "m1.pt"), "--n", "20", "--epochs", "1", "--batches", "2",
                            "--labelled", "5", "--hidden", "8"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["alpha"] == 7.0
