"""Tests of notebook 08's machinery (common.long_tailed): long-tailed counts and splits, the
validation replica, ResNet-32, the schedule, profiles, the CB choice, targets, verdict, tables and
figures, and a tiny sweep end to end. Synthetic labels and images, tiny nets, CPU, seconds."""
from __future__ import annotations

import json
import math

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from common import data, imbalanced_cifar as ic, long_tailed as lt, losses, references, resnet, runtime  # noqa: E402


def _labels(per_class: int = 5000, c: int = 10) -> torch.Tensor:
    y = torch.arange(c).repeat_interleave(per_class)
    return y[torch.randperm(len(y), generator=torch.Generator().manual_seed(3))]


# --------------------------------------------------------------------------- counts and splits
def test_lt_counts_are_the_papers_sets():
    c100, c10 = lt.lt_counts(100), lt.lt_counts(10)
    assert sum(c100) == 12_406 and sum(c10) == 20_431              # the totals of Cao et al.'s code
    assert c100[0] == c10[0] == 5000 and c100[-1] == 50 and c10[-1] == 500
    assert c100 == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert all(a > b for a, b in zip(c100, c100[1:]))              # class order: airplane largest
    for f in lt.PAPER_FACTORS:                                     # largest / smallest = the factor
        c = lt.lt_counts(f)
        assert c[0] / c[-1] == pytest.approx(f, rel=0.01)
        assert c == [int(5000 * (1 / f) ** (i / 9)) for i in range(10)]
    assert lt.lt_counts(1) == [5000] * 10
    assert lt.lt_counts(100, n_max=4500)[-1] == 45
    with pytest.raises(ValueError, match="factor"):
        lt.lt_counts(0.5)
    with pytest.raises(ValueError, match="without images"):
        lt.lt_counts(100, n_max=60)                                # the tail would be 0
    with pytest.raises(ValueError, match="n_max"):
        lt.lt_counts(10, n_max=0)


def test_make_lt_split_is_seeded_and_keeps_the_counts():
    y = _labels()
    idx = lt.make_lt_split(y, 100)
    assert data.class_counts(y[idx]) == lt.lt_counts(100)
    assert torch.equal(idx, lt.make_lt_split(y, 100)) and not torch.equal(idx, lt.make_lt_split(y, 100, seed=1))
    assert len(set(idx.tolist())) == len(idx) == 12_406 and torch.equal(idx, idx.sort().values)


def test_selection_split_is_disjoint_balanced_and_independent_of_n_val():
    y = _labels()
    val, train = lt.make_selection_split(y, 100, n_val=500, held_out=500)
    assert data.class_counts(y[val]) == [500] * 10                 # balanced validation
    assert data.class_counts(y[train]) == lt.lt_counts(100, n_max=4500)
    assert not set(val.tolist()) & set(train.tolist())             # never trained on
    val10, train10 = lt.make_selection_split(y, 100, n_val=10, held_out=500)
    assert torch.equal(train10, train)                             # dryrun's n_val cap: same replica
    assert set(val10.tolist()) <= set(val.tolist()) and data.class_counts(y[val10]) == [10] * 10
    val_f10, train_f10 = lt.make_selection_split(y, 10, n_val=500, held_out=500)
    assert torch.equal(val_f10, val)                               # one validation set for all factors
    assert data.class_counts(y[train_f10]) == lt.lt_counts(10, n_max=4500)
    assert not set(val_f10.tolist()) & set(train_f10.tolist())
    assert lt.replica_n_max(200, 20) == 200 and lt.replica_n_max(5000, 500) == 4500
    with pytest.raises(ValueError, match="n_val"):
        lt.make_selection_split(y, 100, n_val=600, held_out=500)


# --------------------------------------------------------------------------- network and schedule
def test_full_profile_builds_resnet32():
    """ResNet-32 of He et al. sec. 4.2 (6n+2 layers, n = 5; 16/32/64 channels) from
    common.resnet, with 1×1 projection shortcuts where the width changes (option B)."""
    m = ic.build_model(lt.FULL_TRAIN, torch.device("cpu"))
    convs3 = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d) and mod.kernel_size == (3, 3)]
    fcs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)]
    assert len(convs3) + len(fcs) == 32                              # 31 3×3 convs + the classifier
    assert sorted({c.out_channels for c in convs3}) == [16, 32, 64]
    block = lambda c: 2 * 9 * c * c + 2 * 2 * c                        # two 3×3 convs + two BNs
    down = lambda a, b: 9 * a * b + 9 * b * b + 2 * 2 * b + a * b + 2 * b   # + 1×1 conv + BN
    expected = (3 * 16 * 9 + 2 * 16) + 5 * block(16) + down(16, 32) + 4 * block(32) \
        + down(32, 64) + 4 * block(64) + 64 * 10 + 10
    assert resnet.n_parameters(m) == expected == 466_906              # ≈ 0.46 M (option A: 464,154)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_step_schedule_warms_up_then_decays_by_lr_decay():
    t = lt.FULL_TRAIN
    n = 10
    assert t.lr_at_step(1, 0, n) == pytest.approx(0.1 / (5 * n))       # first step of the warm-up
    assert t.lr_at_step(3, 4, n) == pytest.approx(0.1 * 25 / 50)
    assert t.lr_at_step(5, n - 1, n) == pytest.approx(0.1)             # warm-up over after 5 epochs
    assert t.lr_at_step(160, 3, n) == pytest.approx(0.1)
    assert t.lr_at_step(161, 0, n) == pytest.approx(1e-3)              # × 0.01 after epoch 160
    assert t.lr_at_step(181, 0, n) == pytest.approx(1e-5)              # and again after 180
    assert t.lr_at(200) == pytest.approx(1e-5) and t.identity()["lr_decay"] == 0.01
    cpu = lt.CONFIGS["cpu"]["train"]                                   # linear: TrainConfig's schedule
    as06 = ic.TrainConfig(**{k: v for k, v in cpu.__dict__.items() if k != "lr_decay"})
    assert [cpu.lr_at_step(e, k, 7) for e in (1, 6, 11) for k in (0, 6)] == \
        [as06.lr_at_step(e, k, 7) for e in (1, 6, 11) for k in (0, 6)]
    no_warm = lt.LTTrainConfig(epochs=3, lr=0.1, lr_milestones=(1,), lr_decay=0.5)
    assert [no_warm.lr_at_step(e, 0, 4) for e in (1, 2, 3)] == [0.1, 0.05, 0.05]
    with pytest.raises(ValueError, match="lr_decay"):
        lt.LTTrainConfig(lr_decay=0.0)
    assert isinstance(lt.as_lt(ic.CPU_TRAIN), lt.LTTrainConfig) and lt.as_lt(ic.CPU_TRAIN, epochs=3).epochs == 3


# --------------------------------------------------------------------------- profiles
def test_every_profile_is_consistent_and_the_cpu_one_is_the_stated_one():
    for p in runtime.PROFILES:
        cfg = runtime.pick(lt.CONFIGS, p)
        lt.check_profile(cfg)
        assert isinstance(cfg["train"], lt.LTTrainConfig)
    cpu = lt.CONFIGS["cpu"]
    assert cpu["factors"] == [100, 10] and cpu["cb_rule"] == "fixed" and cpu["cb_fixed"] == lt.CB_FIXED
    assert len(cpu["seeds"]) >= 3 and {"CE", lt.CB_FIXED, lt.LOGIT_ADJUSTED} <= set(cpu["key_configs"])
    assert cpu["train"].arch == "airnet" and cpu["budget_s"] is None
    full = lt.CONFIGS["full"]
    assert full["factors"] == [200, 100, 50, 20, 10] and full["cb_rule"] == "validation"
    assert set(lt.CB_CANDIDATES) == set(full["selection_configs"]) and lt.DRW in full["configs"]


@pytest.mark.parametrize("change,match", [
    ({"cb_rule": "best"}, "cb_rule"),
    ({"configs": ["CE", "nope"]}, "unknown loss configs"),
    ({"selection_seeds": [0]}, "disjoint"),
    ({"key_configs": ["CE", lt.CB_FIXED]}, "key_configs"),
    ({"n_val": 501}, "n_val"),
    ({"factors": [100], "n_max": 60}, "without images"),
])
def test_check_profile_refuses_inconsistent_entries(change, match):
    with pytest.raises(ValueError, match=match):
        lt.check_profile({**lt.CONFIGS["cpu"], **change})
    with pytest.raises(ValueError, match="selection_configs"):
        lt.check_profile({**lt.CONFIGS["cpu"], "cb_rule": "validation"})


def test_run_order_puts_the_claims_factors_first():
    assert lt.run_order([200, 100, 50, 20, 10]) == [100, 10, 200, 50, 20]
    assert lt.run_order([10, 100]) == [100, 10] and lt.run_order([50]) == [50]


# --------------------------------------------------------------------------- numbers from records
def _records(errors: dict[str, list[float]], first_seed: int = 0) -> dict:
    """Records with the given errors on seeds first_seed, first_seed + 1, ... (and per-class
    accuracies around them)."""
    return {(n, first_seed + s): {"final": {"all": 100.0 - e},
                                  "per_class": [100.0 - e + (4.5 - c) for c in range(10)]}
            for n, es in errors.items() for s, e in enumerate(es)}


def test_paired_error_is_the_negated_accuracy_difference():
    recs = _records({"CE": [30.0, 31.0, 29.0], "CB": [26.0, 28.0, 26.5]})
    d = lt.paired_error(recs, "CB", "CE")
    assert d["n"] == 3 and d["mean"] == pytest.approx((-4 - 3 - 2.5) / 3)
    assert d["ci_low"] < d["mean"] < d["ci_high"] < 0
    assert lt.error_stats(recs, [0, 1, 2], "CE") == pytest.approx((30.0, 1.0, 3))
    assert lt.paired_error(recs, None, "CE")["n"] == 0


def test_choose_cb_fixed_or_lowest_validation_error_and_pick_on_test():
    cfg = {**lt.CONFIGS["full"], "factors": [100, 10]}
    sel = {100: _records({n: [20.0 + i] for i, n in enumerate(lt.CB_CANDIDATES)}, 100),
           10: _records({n: [20.0 - i] for i, n in enumerate(lt.CB_CANDIDATES)}, 100)}
    cb = lt.choose_cb(cfg, sel)
    assert cb[100]["config"] == lt.CB_CANDIDATES[0] and cb[10]["config"] == lt.CB_CANDIDATES[-1]
    assert cb[100]["validation_error"][lt.CB_CANDIDATES[1]] == pytest.approx(21.0)
    partial = {100: {k: v for k, v in sel[100].items() if k[0] != lt.CB_CANDIDATES[3]}}
    assert lt.choose_cb(cfg, partial)[100]["config"] is None       # a candidate missing: no choice
    fixed = lt.choose_cb(lt.CONFIGS["cpu"], {})
    assert {f: c["config"] for f, c in fixed.items()} == {100: lt.CB_FIXED, 10: lt.CB_FIXED}
    test = _records({"a": [10.0, 12.0], "b": [11.0, 10.0], "c": [5.0]})
    assert lt.pick_on_test(test, [0, 1], ["a", "b", "c"]) == "b"   # c ran one seed only
    assert lt.pick_on_test(test, [0, 1], ["c"]) is None


def test_paper_values_match_configuration_and_column():
    assert lt.paper_value("CE", 100)[0] == 29.64 and lt.paper_value("CE", 10)[0] == 13.61
    assert lt.paper_value(lt.FOCAL, 10) == (13.34, "Cui et al. Table 2, Focal (γ=1.0) (sigmoid focal)")
    assert lt.paper_value(lt.CB_FIXED, 100)[0] == 25.43
    assert lt.paper_value(lt.CB_FIXED, 10) == (None, "")           # the paper's CB at 10 is sigmoid
    assert lt.paper_value("CB-softmax β=0.9999", 200)[0] == 31.11
    assert lt.paper_value("CB-softmax β=0.9999", 100) == (None, "")
    value, src = lt.paper_value(lt.LOGIT_ADJUSTED, 100)
    assert value == references.LT_CIFAR10_OTHERS["logit-adjusted loss"][0][100] == 22.33
    assert src == "Menon et al. Table 3 (arXiv v2)"              # checked against the paper's text
    assert lt.paper_value(lt.DRW, 100) == (None, "") and lt.paper_value("nope", 100) == (None, "")


def _claim(gain100: list[float], gain10: list[float], ce100: float = 32.0, ce10: float = 15.0) -> dict:
    cb = lt.CB_FIXED
    return {100: _records({"CE": [ce100 + s for s in range(len(gain100))],
                           cb: [ce100 + s - g for s, g in enumerate(gain100)]}),
            10: _records({"CE": [ce10 + s for s in range(len(gain10))],
                          cb: [ce10 + s - g for s, g in enumerate(gain10)]})}


def test_targets_are_checked_from_the_runs():
    cb = {100: lt.CB_FIXED, 10: lt.CB_FIXED}
    rows = lt.targets(_claim([4.0, 3.5, 4.5], [1.0, 0.5, 1.5]), [0, 1, 2], cb)
    assert [r["met"] for r in rows] == [True, True, True]
    assert "33.00 % (mean of 3)" in rows[0]["measured"]
    rows = lt.targets(_claim([4.0, -3.0, 1.0], [5.0, 6.0, 5.5], ce100=36.0), [0, 1, 2], cb)
    assert [r["met"] for r in rows] == [False, False, False]      # CE too weak; noisy; gain grows at 10
    rows = lt.targets(_claim([4.0, 3.5], [1.0, 0.5]), [0, 1, 2], cb)
    assert rows[1]["met"] is None and rows[2]["met"] is None       # a seed missing: not judged
    assert lt.targets({}, [0, 1, 2], {})[0]["met"] is None


def test_verdict_effect_shown_only_with_an_interval_below_zero():
    cb, seeds = {100: lt.CB_FIXED, 10: lt.CB_FIXED}, [0, 1, 2]
    good = _claim([4.0, 3.5, 4.5], [1.0, 0.5, 1.5])
    status, why = lt.verdict(good, seeds, cb, reduced=True, finished=True)
    assert status == "effect shown (reduced)"
    assert why.startswith(f"{lt.CB_FIXED} lowers the test error at imbalance 100 against CE: -4.0 points")
    assert "lower on 3/3 seeds" in why and "at imbalance 10, " in why and "CE -1.0 points" in why
    assert "Not shown" not in why and "Every claim holds." in why
    assert lt.verdict(good, seeds, cb, reduced=True, finished=False)[0] == "not shown (reduced)"
    status, why = lt.verdict(_claim([4.0, -3.0, 1.0], [1, 1, 1]), seeds, cb, reduced=True, finished=True)
    assert status == "not shown (reduced)" and "2/3" in why
    assert f"Not shown: {lt.CB_FIXED} lowers the test error at imbalance 100 against CE." in why
    status, why = lt.verdict(good, seeds, {100: None}, reduced=True, finished=True)
    assert status == "not shown (reduced)" and "no CB configuration was chosen" in why
    one = {100: {k: v for k, v in good[100].items() if k[1] == 0}}
    assert "fewer than 2 paired draws" in lt.verdict(one, seeds, cb, reduced=True, finished=True)[1]
    # the paper's setting: the level counts too (CB error 29.0 %; the paper's 25.43 + 5 points)
    status, why = lt.verdict(good, seeds, cb, reduced=False, finished=True)
    assert status == "reproduced" and "CB error 29.00 % vs the paper's 25.43 %" in why
    status, why = lt.verdict(_claim([4.0, 3.5, 4.5], [1, 1, 1], ce100=40.0), seeds, cb, False, True)
    assert status == "not reproduced" and "Not shown: the CB error at imbalance 100 within 5 points" in why


# --------------------------------------------------------------------------- tables and figures
def test_tables():
    recs = _claim([4.0, 3.5, 4.5], [1.0, 0.5, 1.5])
    recs[100].update(_records({lt.LOGIT_ADJUSTED: [27.0, 28.0, 27.5]}))
    names = ["CE", lt.CB_FIXED, lt.LOGIT_ADJUSTED]
    t = lt.results_table(recs, [0, 1, 2], names)
    assert list(t.columns) == ["ours 100", "paper 100", "ours 10", "paper 10", "paper row"]
    assert t.loc["CE", "ours 100"] == "33.00 ± 1.00" and t.loc["CE", "paper 100"] == 29.64
    assert t.loc[lt.CB_FIXED, "paper 10"] == "—" and t.loc[lt.LOGIT_ADJUSTED, "ours 10"] == "not run"
    p = lt.paired_table(recs, names)
    assert p.loc[(lt.CB_FIXED, 100), "resolved?"] == "yes" and (lt.LOGIT_ADJUSTED, 10) not in p.index
    c = lt.counts_table([100, 10])
    assert c.loc["total", "imbalance 100"] == 12_406 and c.loc["truck", "imbalance 10"] == 500
    cfg = {**lt.CONFIGS["full"], "factors": [100, 10]}
    sel = {f: _records({n: [20.0 + i] for i, n in enumerate(lt.CB_CANDIDATES)}, 100) for f in (100, 10)}
    test = {f: _records({n: [30.0 - i] * 3 for i, n in enumerate(lt.CB_CANDIDATES)}) for f in (100, 10)}
    s = lt.selection_table(cfg, sel, test, [0, 1, 2])
    assert s.loc[(100, lt.CB_CANDIDATES[0]), "picked by validation"] == "◀"
    assert s.loc[(100, lt.CB_CANDIDATES[-1]), "picked by test (paper's way)"] == "◀"


def test_figures():
    import matplotlib.pyplot as plt

    recs = _claim([4.0, 3.5, 4.5], [1.0, 0.5, 1.5])
    fig, axes = plt.subplots(1, 2)
    lt.plot_per_class_vs_size(axes, recs, [0, 1, 2], {f: lt.lt_counts(f) for f in (100, 10)},
                              {f: ["CE", lt.CB_FIXED, lt.LOGIT_ADJUSTED] for f in (100, 10)})
    assert all(ax.get_xscale() == "log" and ax.get_ylim() == (0, 100) for ax in axes)
    assert [len(ax.get_lines()) for ax in axes] == [2, 2]           # logit-adjusted did not run
    x, yv = axes[0].get_lines()[0].get_data()
    assert list(x) == sorted(lt.lt_counts(100)) and yv[0] == pytest.approx(100 - 33.0 - 4.5)  # truck
    plt.close(fig)
    fig, ax = plt.subplots()
    lt.plot_error_vs_factor(ax, recs, [0, 1, 2], [("CE", {100: "CE", 10: "CE"}),
                                                  ("CB", {100: lt.CB_FIXED, 10: lt.CB_FIXED})])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert ax.get_xscale() == "log" and {"ours: CE", "ours: CB"} <= set(labels)
    assert sum(lab.startswith("paper") for lab in labels) == 2
    plt.close(fig)


# --------------------------------------------------------------------------- a tiny sweep end to end
def _tiny_data(n_max: int = 40, per_class: int = 60):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(10).repeat_interleave(per_class)
    x = (torch.randint(0, 128, (len(y), 32, 32, 3), dtype=torch.uint8, generator=g)
         + (y * 12)[:, None, None, None]).to(torch.uint8)
    return x, y


def test_tiny_sweep_selects_on_validation_then_trains_reuses_and_respects_a_budget(tmp_path):
    torch.set_num_threads(1)
    dev = torch.device("cpu")
    x, y = _tiny_data()
    cfg = {**lt.CONFIGS["smoke"], "factors": [10], "n_max": 40, "val_held_out": 10, "n_val": 5,
           "configs": ["CE", "CB-softmax β=0.9999", lt.CB_FIXED, lt.LOGIT_ADJUSTED],
           "key_configs": ["CE", "CB-softmax β=0.9999", lt.CB_FIXED, lt.LOGIT_ADJUSTED], "seeds": [0, 1]}
    tcfg = lt.as_lt(lt.CONFIGS["smoke"]["train"], epochs=1, batch_size=64, bf16=False, channels_last=False)
    xt, yt = x[::6], y[::6]
    idx = lt.make_lt_split(y, 10, cfg["n_max"])
    splits = {10: lt.split_data(x, y, xt, yt, idx, dev, {"factor": 10, "evaluated_on": "test"})}
    val, ridx = lt.make_selection_split(y, 10, cfg["n_val"], cfg["val_held_out"], cfg["n_max"])
    sel = {10: lt.split_data(x, y, x[val], y[val], ridx, dev, {"factor": 10, "evaluated_on": "validation"})}
    assert splits[10].counts == lt.lt_counts(10, 40) and sel[10].counts == lt.lt_counts(10, 40)
    dirs = lambda f, part: (tmp_path / part / "runs", tmp_path / part / "ckpt")
    kw = dict(show_progress=False, verbose=False)
    res = lt.run_all(cfg, tcfg, splits, sel, dev, dirs, **kw)
    assert sorted(res["selection"][10].trained) == sorted([("CB-softmax β=0.9999", 100), (lt.CB_FIXED, 100)])
    assert len(res["main"][10].trained) == 8 and lt.sweep_status(res)["finished"] is True
    assert not (tmp_path / "selection" / "runs" / "ce_seed0.json").exists()   # CE: no selection run
    assert json.loads((tmp_path / "main" / "runs" / "ce_seed1.json").read_text())["seed"] == 1
    sel_rec = res["selection"][10].records[(lt.CB_FIXED, 100)]
    assert sum(map(sum, sel_rec["confusion"])) == 50                  # evaluated on 5 × 10 validation images
    assert sum(map(sum, res["main"][10].records[("CE", 0)]["confusion"])) == len(yt)
    assert sel_rec["fingerprint"] != ic.fingerprint(lt.CB_FIXED, losses.all_configs()[lt.CB_FIXED], tcfg,
                                                    100, splits[10].info, dev)   # split info differs
    cb = lt.choose_cb(cfg, lt.records_of(res["selection"]))
    assert cb[10]["config"] in cfg["selection_configs"]
    again = lt.run_all(cfg, tcfg, splits, sel, dev, dirs, budget_s=-1, **kw)
    assert not again["main"][10].trained and len(again["main"][10].loaded) == 8   # reused, not retrained
    other = lt.run_all({**cfg, "seeds": [0, 1, 2]}, tcfg, splits, sel, dev, dirs, budget_s=-1, **kw)
    assert other["main"][10].pending == [(n, 2) for n in cfg["key_configs"]]
    assert lt.sweep_status(other)["finished"] is False


def test_split_info_carries_the_code_hash_into_the_fingerprint():
    x, y = _tiny_data()
    dev = torch.device("cpu")
    sp = lt.split_data(x, y, x[:10], y[:10], torch.arange(20), dev, {"factor": 10})
    assert sp.info["lt_code"] == lt.lt_code_hash() and len(sp.info["train_index_sha256"]) == 16
    assert len(sp.balanced_y) == 0 and sp.counts == data.class_counts(y[:20])
    spec = losses.all_configs()["CE"]
    other = {**sp.info, "lt_code": "0" * 16}
    assert ic.fingerprint("CE", spec, lt.CPU_TRAIN, 0, sp.info) != ic.fingerprint("CE", spec, lt.CPU_TRAIN, 0, other)
    # 06's fingerprints do not depend on this module
    assert "long_tailed.py" not in {p.name for p in runtime.code_files("losses", "resnet", "fastnet", "augment")}
    assert math.isfinite(float(int(lt.lt_code_hash(), 16)))


def test_the_dryrun_entry_trains_resnet32_one_step_with_the_papers_schedule():
    """The full code path's network, optimiser and schedule (the dryrun entry: one step)."""
    torch.set_num_threads(1)
    dev = torch.device("cpu")
    x, y = _tiny_data(per_class=20)
    tcfg = lt.CONFIGS["dryrun"]["train"]
    sp = lt.split_data(x, y, x[::4], y[::4], torch.arange(len(y)), dev, {"factor": 1})
    rec = ic.train_one(lt.DRW, losses.all_configs()[lt.DRW], tcfg, sp, 0, dev, show_progress=False)
    assert rec["train"]["arch"] == "resnet" and rec["train"]["lr_decay"] == 0.01
    assert [h["epoch"] for h in rec["history"]] == [1] and math.isfinite(rec["history"][0]["train_loss"])
    assert rec["history"][0]["lr"] == pytest.approx(0.1 / 5)    # warm-up over 5 epochs of 1 (capped) step
