"""`make bench` (common/bench.py): every notebook's main model, two modes, paired rounds."""
import torch

from common import bench, runtime


def test_every_notebook_with_its_own_model_has_a_case():
    names = {c.notebook for c in bench.cases(torch.device("cpu"))}
    # 03 trains notebook 02's M2 on notebook 01's features: no model of its own
    assert names == {"01", "02", "04", "05", "06", "07", "08"}


def test_paired_rounds_alternate_the_order_and_time_each_mode():
    calls = []
    a, b = (lambda: calls.append("a")), (lambda: calls.append("b"))
    ta, tb = bench.paired_seconds(a, b, rounds=3, steps=2)
    assert len(ta) == len(tb) == 3 and all(t >= 0 for t in ta + tb)
    assert calls == list("abab") + list("aabb") + list("bbaa") + list("aabb")


def test_rows_report_rates_and_which_mode_the_profile_uses(monkeypatch):
    rows = bench.run(only=["04", "05"], rounds=1, steps=1, log=lambda s: None)
    assert [r["notebook"] for r in rows] == ["04", "05"]
    assert all(r["float32_per_s"] > 0 and r["fast_per_s"] > 0 and r["ratio"] > 0 for r in rows)
    assert rows[0]["profile_uses"] == "float32"          # 04 always trains in float32
    native = runtime.resolve_amp("auto", torch.device("cpu"))
    assert rows[1]["profile_uses"] == ("fast" if native else "float32")
    # on a CPU without native bf16 (AVX2 only) the notebooks stay float32 and NCHW
    monkeypatch.setattr(runtime, "cpu_info", lambda: {"model": "an AVX2 CPU", "isa": ["avx2", "fma"],
                                                      "torch_capability": "AVX2", "onednn_max_isa": None})
    rows = bench.run(only=["05"], rounds=1, steps=1, log=lambda s: None)
    assert rows[0]["profile_uses"] == "float32" and rows[0]["fast_mode"] == "bf16"


def test_peer_shapes_are_those_of_the_public_comparison():
    cases = bench.peer_cases(torch.device("cpu"))
    assert [(c.notebook, c.items) for c in cases] == [("05", 16), ("05", 64), ("02", 500)]
    assert all("19.6 M parameters" in c.model for c in cases[:2])   # chrischute/real-nvp's size
    assert "1 labelled + 499 unlabelled" in cases[2].model and not cases[2].conv
