"""tools/gan_probe.py on small data it makes itself: BN statistics re-estimated exactly, and one
run with every lever on that reports G and its weight average at each evaluation."""
import json

import torch

from common import gan
from tools import gan_probe


def test_fresh_bn_stats_are_the_plain_average_over_the_samples():
    torch.manual_seed(0)
    G = gan.Generator(z_dim=4, ch=2)
    G.bn0.running_mean.fill_(5.0)                 # a stale training average, to be replaced
    before = {k: v.clone() for k, v in G.state_dict().items()}
    fresh = gan_probe.with_fresh_bn_stats(G, n=1000, batch=250, seed=7)
    g = torch.Generator().manual_seed(7)
    z = torch.cat([gan.sample_noise(250, 4, g) for _ in range(4)])
    with torch.no_grad():
        pre = G.fc(z)                             # what bn0 normalises
    torch.testing.assert_close(fresh.bn0.running_mean, pre.mean(0), rtol=1e-5, atol=1e-6)
    assert not fresh.training and fresh.bn0.momentum is None
    for k, v in G.state_dict().items():           # the original is untouched
        assert torch.equal(v, before[k]), k


def test_probe_runs_every_lever_and_reports_g_and_its_average(monkeypatch, capsys, tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(300, 784, generator=g), torch.arange(10).repeat(30)
    monkeypatch.setattr(gan_probe.data, "load_mnist", lambda split: (x, y))
    monkeypatch.setattr(gan_probe.gen_eval, "checkpoint_dir", lambda *a: tmp_path / "clf")
    monkeypatch.setitem(gan.CONFIGS["cpu"], "clf_epochs", 1)
    monkeypatch.setitem(gan.CONFIGS["cpu"], "n_arith", 300)
    d_loss, adam = gan.d_loss, gan.adam
    out = tmp_path / "probe.json"
    assert gan_probe.main(["--steps", "4", "--batch", "16", "--ch", "4", "--eval-every", "2", "--lr-d", "4e-4",
                           "--real-label", "0.9", "--ema", "0.5", "--threads", "1", "--json", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert [e["step"] for e in rec["evals"]] == [2, 4]
    for e in rec["evals"]:
        assert set(e) == {"step", "G", "G_ema"}
        for m in (e["G"], e["G_ema"]):
            assert 0 <= m["recognisable"] <= 1 and 0 <= m["coverage_kl"] <= 2.31 and 0 <= m["kept_at_1"] <= 1
    assert rec["args"]["lr_d"] == 4e-4 and rec["args"]["real_label"] == 0.9
    assert gan.d_loss is d_loss and gan.adam is adam     # the levers were scoped to the run
    # without --ema only G is reported
    assert gan_probe.main(["--steps", "2", "--batch", "16", "--ch", "4", "--eval-every", "2", "--threads", "1"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines() if line.startswith('{"step"')]
    assert set(rows[-1]) == {"step", "G"}
