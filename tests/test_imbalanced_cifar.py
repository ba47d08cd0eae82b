"""Tests of the notebook-06 machinery: split, augmentation, ResNet, training resume, sweeps.

Synthetic data only (random uint8 images), tiny nets, CPU; the whole file runs in seconds.
"""
from __future__ import annotations

import json
import math
import re

import pytest
import torch

from common import augment, imbalanced_cifar as ic, losses, resnet


def _labels(per_class: int = 5000, c: int = 10) -> torch.Tensor:
    return torch.arange(c).repeat_interleave(per_class)[torch.randperm(per_class * c,
                                                   generator=torch.Generator().manual_seed(1))]


def test_split_counts_exactly_250_5000_and_seeded():
    y = _labels()
    idx = ic.make_split(y)
    counts = torch.bincount(y[idx], minlength=10).tolist()
    assert counts == [5000, 250, 5000, 5000, 250, 5000, 250, 5000, 5000, 5000]
    assert [c for c in range(10) if counts[c] == 250] == [1, 4, 6]   # automobile, deer, frog
    assert torch.equal(idx, ic.make_split(y))                         # same seed, same subset
    assert not torch.equal(idx, ic.make_split(y, seed=1))             # other seed, other subset
    assert len(set(idx.tolist())) == len(idx) == 35_750


def test_group_masks_partition_the_test_set():
    y = torch.arange(10).repeat(3)
    m = ic.group_masks(y)
    assert int(m["minority"].sum()) == 9 and int(m["majority"].sum()) == 21
    assert not bool((m["minority"] & m["majority"]).any())


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def test_crop_flip_is_a_shifted_possibly_flipped_window():
    x = _images(64)
    g = torch.Generator().manual_seed(0)
    out = augment.random_crop_flip(x, pad=4, generator=g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (0, 0, 4, 4, 4, 4))
    n_flipped = 0
    for i in range(len(x)):
        hits = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                if torch.equal(out[i], (padded[i, dy:dy + 32, dx:dx + 32].flip(1) if f
                                        else padded[i, dy:dy + 32, dx:dx + 32]))]
        assert hits, f"image {i} is not a crop of its padded original"
        n_flipped += hits[0][2]
    assert 10 < n_flipped < 54       # roughly half are flipped
    assert not torch.equal(out, x)   # something moved
    same = augment.random_crop_flip(x, pad=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, same)    # seeded
    assert torch.equal(augment.random_crop_flip(x, pad=0, flip=False), x)


def test_normalize_layout_and_errors():
    x = _images(4)
    z = augment.normalize(x)
    assert z.shape == (4, 3, 32, 32) and z.is_contiguous()      # plain NCHW for a CPU model
    zc = augment.normalize(x, memory_format=torch.channels_last)
    assert zc.is_contiguous(memory_format=torch.channels_last) and torch.equal(zc, z)
    m = augment.torch.tensor(augment.CIFAR10_MEAN)
    assert torch.allclose(z.mean((0, 2, 3)) * torch.tensor(augment.CIFAR10_STD) + m,
                          x.float().mean((0, 1, 2)) / 255, atol=1e-5)
    with pytest.raises(ValueError, match="uint8 NHWC"):
        augment.normalize(x.float())
    with pytest.raises(ValueError, match="uint8 NHWC"):
        augment.random_crop_flip(x[0])


def test_resnet18_shape_and_parameter_count():
    m = resnet.resnet18_cifar()
    assert resnet.n_parameters(m) == 11_173_962  # the standard CIFAR ResNet-18
    assert isinstance(m.stem[0], torch.nn.Conv2d) and m.stem[0].kernel_size == (3, 3)
    assert m.stem[0].stride == (1, 1)
    assert not any(isinstance(mod, torch.nn.MaxPool2d) for mod in m.modules())
    small = resnet.resnet18_cifar(width=4, blocks=(1, 1), stem_stride=2)
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="stem_stride"):
        resnet.resnet18_cifar(stem_stride=3)
    with pytest.raises(ValueError, match="blocks"):
        resnet.resnet18_cifar(blocks=())


def test_lr_schedule_is_the_studys():
    t = ic.TrainConfig()
    lrs = [t.lr_at(e) for e in range(1, 26)]
    assert all(math.isclose(v, 0.1) for v in lrs[:15])
    assert all(math.isclose(v, 0.01) for v in lrs[15:20])
    assert all(math.isclose(v, 0.001) for v in lrs[20:])


def test_full_profile_dry_run(capsys, monkeypatch):
    """The full profile (ResNet-18) builds and takes one training step on CPU (one step: the
    refusal of long full-profile runs on a CPU is lifted for it)."""
    monkeypatch.setenv("REPRO_ALLOW_LONG", "1")
    assert ic.main(["--profile", "full", "--dry-run"]) == 0
    assert "11,173,962 parameters" in capsys.readouterr().out


def _tiny_split(n_major: int = 24, n_minor: int = 6) -> ic.SplitData:
    g = torch.Generator().manual_seed(0)
    counts = ic.split_counts(n_major, n_minor)
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    x = torch.randint(0, 256, (len(y), 32, 32, 3), dtype=torch.uint8, generator=g)
    # make the classes learnable: add a class-dependent brightness
    x = (x // 2 + (y * 12)[:, None, None, None]).to(torch.uint8)
    yt = torch.arange(10).repeat(5)
    xt = (torch.randint(0, 256, (50, 32, 32, 3), dtype=torch.uint8, generator=g) // 2
          + (yt * 12)[:, None, None, None]).to(torch.uint8)
    yb = torch.arange(10).repeat(n_major)
    xb = (torch.randint(0, 256, (len(yb), 32, 32, 3), dtype=torch.uint8, generator=g) // 2
          + (yb * 12)[:, None, None, None]).to(torch.uint8)
    return ic.SplitData(x, y, xb, yb, xt, yt, torch.arange(len(y)), {"synthetic": True})


TINY = ic.TrainConfig(width=4, blocks=(1,), stem_stride=2, epochs=3, lr_milestones=(2,),
                      batch_size=32, bf16=False, channels_last=False, ckpt_every=1)


# the cpu profile's family: airbench-style net, Nesterov, warm-up + linear decay, bf16 where native
TINY_AIR = ic.TrainConfig(arch="airnet", width=4, epochs=3, lr=0.2, lr_milestones=(),
                          lr_schedule="linear", warmup_epochs=1.0, nesterov=True, batch_size=64,
                          crop_pad=2, bf16="auto", channels_last=True, ckpt_every=1)


@pytest.mark.parametrize("tcfg,name", [(TINY, "CB-focal γ=1 β=0.999"), (TINY_AIR, "DRW β=0.9999")],
                         ids=["resnet-step", "airnet-linear-drw"])
def test_interrupted_run_resumes_to_identical_result(tmp_path, tcfg, name):
    """Stopped after epoch 1 and resumed: the same numbers as one uninterrupted run (per-step
    learning rates and DRW's switch at epoch 3 of 3 included)."""
    split = _tiny_split()
    spec = losses.all_configs()[name]
    dev = torch.device("cpu")
    ref = ic.train_one("cbf", spec, tcfg, split, 3, dev, show_progress=False)
    ck = tmp_path / "run.pt"
    assert ic.train_one("cbf", spec, tcfg, split, 3, dev, ckpt_path=ck, max_epochs_per_call=1,
                        show_progress=False) is None
    assert ck.exists()
    got = ic.train_one("cbf", spec, tcfg, split, 3, dev, ckpt_path=ck, show_progress=False)
    assert got is not None and not ck.exists()
    assert got["final"] == ref["final"] and got["confusion"] == ref["confusion"]
    assert [h["train_loss"] for h in got["history"]] == [h["train_loss"] for h in ref["history"]]
    assert len(got["history"]) == 3
    assert sum(map(sum, got["confusion"])) == 50


def test_sweep_writes_per_run_files_and_reuses_them(tmp_path):
    split = _tiny_split()
    dev = torch.device("cpu")
    t = ic.TrainConfig(**{**TINY.__dict__, "epochs": 1, "lr_milestones": ()})
    names = ["CE", "balanced CE"]
    r1 = ic.run_sweep(names, [0], t, split, dev, tmp_path / "runs", max_epochs_per_call=None,
                      show_progress=False, verbose=False)
    assert sorted(r1.trained) == [("CE", 0), ("balanced CE", 0)] and not r1.loaded
    files = sorted(p.name for p in (tmp_path / "runs").glob("*.json"))
    assert files == ["balanced_ce_seed0.json", "ce_seed0.json"]
    rec = json.loads((tmp_path / "runs" / "balanced_ce_seed0.json").read_text())
    assert rec["train_counts"] == [24] * 10            # trained on the balanced set
    r2 = ic.run_sweep(names, [0], t, split, dev, tmp_path / "runs", show_progress=False,
                      verbose=False)
    assert sorted(r2.loaded) == sorted(r1.trained) and not r2.trained
    assert r2.records[("CE", 0)]["final"] == r1.records[("CE", 0)]["final"]
    # a changed setting is a different fingerprint: the stale file is not reused
    t2 = ic.TrainConfig(**{**t.__dict__, "lr": 0.05})
    r3 = ic.run_sweep(["CE"], [0], t2, split, dev, tmp_path / "runs", show_progress=False,
                      verbose=False)
    assert r3.trained == [("CE", 0)]
    # an exhausted budget leaves runs pending instead of training them
    r4 = ic.run_sweep(["focal γ=2"], [0, 1], t, split, dev, tmp_path / "runs", budget_s=-1,
                      show_progress=False, verbose=False)
    assert r4.pending == [("focal γ=2", 0), ("focal γ=2", 1)] and not r4.records
    with pytest.raises(ValueError, match="unknown loss configs"):
        ic.run_sweep(["nope"], [0], t, split, dev, tmp_path / "runs")


def _sweep_ce(tmp_path, tcfg: ic.TrainConfig, **kw) -> ic.SweepResult:
    """The CE config, seed 0, on the tiny split, runs/checkpoints under ``tmp_path``."""
    return ic.run_sweep(["CE"], [0], tcfg, _tiny_split(), torch.device("cpu"), tmp_path / "runs",
                        show_progress=False, verbose=False, **kw)


def test_sweep_rerun_at_another_lr_does_not_resume_the_old_checkpoint(tmp_path):
    """Interrupted at lr 0.1, rerun at lr 0.02: the record is a clean lr-0.02 run, not a mix."""
    assert _sweep_ce(tmp_path, TINY, max_epochs_per_call=1).pending == [("CE", 0)]
    (ck,) = (tmp_path / "runs" / "ckpt").glob("*.pt")
    t2 = ic.TrainConfig(**{**TINY.__dict__, "lr": 0.02})
    rec = _sweep_ce(tmp_path, t2).records[("CE", 0)]
    assert [h["lr"] for h in rec["history"]] == [t2.lr_at(e) for e in (1, 2, 3)]
    assert rec["train"]["lr"] == 0.02 and ck.exists()       # the lr-0.1 checkpoint is kept
    assert ic.fingerprint("CE", losses.study_configs()["CE"], TINY, 0,
                          _tiny_split().info, torch.device("cpu")) in ck.name


def test_sweep_with_fewer_epochs_than_the_checkpoint_trains_afresh(tmp_path):
    assert _sweep_ce(tmp_path, TINY, max_epochs_per_call=2).pending == [("CE", 0)]
    t1 = ic.TrainConfig(**{**TINY.__dict__, "epochs": 1})
    rec = _sweep_ce(tmp_path, t1).records[("CE", 0)]        # was: UnboundLocalError 'ev'
    assert [h["epoch"] for h in rec["history"]] == [1] and rec["train"]["epochs"] == 1


def test_train_one_refuses_a_checkpoint_with_another_key_or_too_many_epochs(tmp_path):
    split, dev = _tiny_split(), torch.device("cpu")
    spec, ck = losses.study_configs()["CE"], tmp_path / "run.pt"
    at = f"checkpoint {re.escape(str(ck))}"
    assert ic.train_one("CE", spec, TINY, split, 0, dev, ckpt_path=ck, ckpt_key="a",
                        max_epochs_per_call=2, show_progress=False) is None
    with pytest.raises(ValueError, match=f"{at}.*belongs to run 'a', not 'b'"):
        ic.train_one("CE", spec, TINY, split, 0, dev, ckpt_path=ck, ckpt_key="b",
                     show_progress=False)
    with pytest.raises(ValueError, match=f"{at}.*epoch 2 but the run has 2 epochs"):
        ic.train_one("CE", spec, ic.TrainConfig(**{**TINY.__dict__, "epochs": 2}), split, 0, dev,
                     ckpt_path=ck, ckpt_key="a", show_progress=False)
    with pytest.raises(ValueError, match="belongs to run 'a'"):   # default key: the fingerprint
        ic.train_one("CE", spec, TINY, split, 0, dev, ckpt_path=ck, show_progress=False)


def test_paired_difference_and_study_consistency():
    recs = {("a", s): {"final": {"all": v}} for s, v in enumerate([80.0, 81.0, 82.0])}
    recs |= {("b", s): {"final": {"all": v}} for s, v in enumerate([79.0, 79.5, 81.0])}
    d = ic.paired_difference(recs, "a", "b")
    assert d["n"] == 3 and math.isclose(d["mean"], (1.0 + 1.5 + 1.0) / 3)
    assert math.isclose(d["std"], torch.tensor([1.0, 1.5, 1.0]).std().item(), rel_tol=1e-6)
    assert d["ci_low"] < d["mean"] < d["ci_high"]
    one = ic.paired_difference({k: v for k, v in recs.items() if k[1] == 0}, "a", "b")
    assert one["n"] == 1 and math.isnan(one["std"]) and math.isnan(one["ci_low"])
    rows = ic.study_consistency({"ok": (80.0, 60.0, 74.0), "bad": (74.1, 74.67, 73.58)})
    assert rows[0]["consistent"] and not rows[1]["consistent"]
    assert math.isclose(rows[1]["all (implied by groups)"], 74.27, abs_tol=0.01)
    assert ic.fmt_pm(1.0, float("nan"), 1) == "1.00 (1 seed)"
    assert ic.fmt_pm(float("nan"), float("nan"), 0) == "not run"


# --------------------------------------------------------------------------- the cpu profile's net
def test_airnet_layout_and_parameter_count():
    from common import fastnet

    m = fastnet.AirNet(width=32)
    # by hand: stem conv 3·24·2² + BN 2·24; a group c->d: 9cd + 9d² + 2·2d (BNs); fc 128·10
    group = lambda c, d: 9 * c * d + 9 * d * d + 4 * d
    expected = 3 * 24 * 4 + 48 + group(24, 32) + group(32, 128) + group(128, 128) + 128 * 10
    assert resnet.n_parameters(m) == expected == 498_128
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert [g.conv1.out_channels for g in m.groups] == [32, 128, 128]
    with pytest.raises(ValueError, match="32x32"):
        m(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match="width"):
        fastnet.AirNet(width=0)
    assert isinstance(ic.build_model(ic.CONFIGS["cpu"]["train"], torch.device("cpu")), fastnet.AirNet)
    assert isinstance(ic.build_model(ic.CONFIGS["full"]["train"], torch.device("cpu")),
                      resnet.CifarResNet)


def test_linear_schedule_warms_up_then_decays_to_zero_per_step():
    t = ic.TrainConfig(epochs=4, lr=0.4, lr_schedule="linear", warmup_epochs=1.0)
    n = 10
    lrs = [t.lr_at_step(e, k, n) for e in range(1, 5) for k in range(n)]
    assert math.isclose(lrs[0], 0.4 * (1 / n) * 1.0)                      # warm-up, first step
    assert all(a < b for a, b in zip(lrs[:n - 1], lrs[1:n]))                  # rising in epoch 1
    assert all(a > b for a, b in zip(lrs[n:], lrs[n + 1:]))                   # then falling
    assert math.isclose(lrs[-1], 0.4 * (1 - (4 * n - 1) / (4 * n)))          # 0.4/40 at the end
    assert math.isclose(lrs[2 * n], 0.4 * (1 - 2 * n / (4 * n)))             # halfway: half
    step = ic.TrainConfig()
    assert step.lr_at_step(16, 3, n) == step.lr_at(16)                        # the study's, per epoch
    with pytest.raises(ValueError, match="lr_schedule"):
        ic.TrainConfig(lr_schedule="triangle")
    with pytest.raises(ValueError, match="arch"):
        ic.TrainConfig(arch="vgg")


def test_scaled_epochs_doubles_the_schedule():
    t2 = ic.scaled_epochs(ic.TrainConfig(), 2)
    assert t2.epochs == 50 and t2.lr_milestones == (30, 40)
    assert ic.scaled_epochs(ic.CONFIGS["cpu"]["train"], 2).epochs == 2 * ic.CONFIGS["cpu"]["train"].epochs
    with pytest.raises(ValueError, match="factor"):
        ic.scaled_epochs(ic.TrainConfig(), 0)


def test_numerics_enter_the_fingerprint_and_the_record():
    dev = torch.device("cpu")
    spec = losses.all_configs()["CE"]
    num = ic.numerics(TINY_AIR, dev)
    assert set(num) == {"bf16_autocast", "memory_format", "device_type"}
    assert ic.numerics(TINY, dev) == {"bf16_autocast": False, "memory_format": "contiguous",
                                      "device_type": "cpu"}
    assert ic.fingerprint("CE", spec, TINY, 0, {}, dev) != ic.fingerprint("CE", spec, TINY, 0, {})
    rec = ic.train_one("CE", spec, ic.TrainConfig(**{**TINY_AIR.__dict__, "epochs": 1}),
                       _tiny_split(), 0, dev, show_progress=False)
    assert rec["numerics"] == num and rec["spec"]["kind"] == "ce"


# --------------------------------------------------------------------------- sweep plan and status
def test_sweep_plan_gives_key_configs_every_seed_others_the_first():
    plan = ic.sweep_plan(["CE", "focal γ=1", "CB-softmax β=0.999"], [0, 1, 2],
                         key_configs=["CE", "CB-softmax β=0.999"])
    assert plan == [("CE", 0), ("focal γ=1", 0), ("CB-softmax β=0.999", 0),
                    ("CE", 1), ("CB-softmax β=0.999", 1), ("CE", 2), ("CB-softmax β=0.999", 2)]
    assert len(ic.sweep_plan(["a", "b"], [0, 1])) == 4                     # default: all seeds
    cpu = ic.CONFIGS["cpu"]
    assert set(cpu["key_configs"]) <= set(cpu["configs"]) and set(cpu["curve_configs"]) <= set(cpu["configs"])
    assert cpu["budget_s"] is None                                           # fixed epochs, no clock


def test_a_sweep_stopped_early_is_recorded_unfinished(tmp_path):
    """max_epochs_per_call stops the run: metrics say finished false, which make reproduce
    treats as unfinished (exit 3); once resumed to the end, finished true."""
    from common import reproduce

    split, dev = _tiny_split(), torch.device("cpu")
    cfg = {"configs": ["CE", "focal γ=1"], "key_configs": ["CE"], "seeds": [0, 1],
           "curve_configs": ["CE"], "curve_factor": 2}
    t = ic.TrainConfig(**{**TINY.__dict__, "epochs": 2, "lr_milestones": ()})
    kw = dict(show_progress=False, verbose=False)
    stopped = ic.run_profile(cfg, t, split, dev, tmp_path / "runs", max_epochs_per_call=1, **kw)
    status = ic.sweep_status(stopped)
    assert status["finished"] is False and status["sweeps"]["main"]["pending"] == [
        "CE|seed0", "focal γ=1|seed0", "CE|seed1"]
    assert status["sweeps"]["curves"]["pending"] == ["CE|seed0"]
    written = {"metrics": {"finished": status["finished"], "sweep": status}}
    assert "metrics.metrics" in reproduce.unfinished_parts(written)
    done = ic.run_profile(cfg, t, split, dev, tmp_path / "runs", **kw)
    assert ic.sweep_status(done) == {"finished": True, "sweeps": {
        "main": {"finished": True, "runs_finished": 3, "pending": []},
        "curves": {"finished": True, "runs_finished": 1, "pending": []}}}
    assert not reproduce.unfinished_parts({"metrics": {"sweep": ic.sweep_status(done)}})
    assert done["curves"].records[("CE", 0)]["train"]["epochs"] == 4           # twice the epochs
    assert (tmp_path / "runs" / ic.CURVES_SUBDIR / "ce_seed0.json").exists()
    assert json.loads((tmp_path / "runs" / "ce_seed0.json").read_text())["train"]["epochs"] == 2


# --------------------------------------------------------------------------- targets and verdict
def _claim_records(gains_min, gains_all, ce=(88.0, 50.0)):
    """CE and the claim on len(gains_min) seeds: the claim's minority / all are CE's plus the
    given paired gains (majority follows from All = 0.7 majority + 0.3 minority)."""
    rec = {}
    for s, (gm, ga) in enumerate(zip(gains_min, gains_all)):
        maj, mino = ce[0] + s * 0.1, ce[1] + s * 0.5
        allv = 0.7 * maj + 0.3 * mino
        rec[("CE", s)] = {"final": {"majority": maj, "minority": mino, "all": allv}}
        rec[(ic.CLAIM, s)] = {"final": {"majority": (allv + ga - 0.3 * (mino + gm)) / 0.7,
                                        "minority": mino + gm, "all": allv + ga}}
    return rec


def test_targets_are_checked_from_the_runs():
    rows = ic.targets(_claim_records([12.0, 15.0, 11.0], [0.5, -0.5, 0.2]), [0, 1, 2])
    assert [r["met"] for r in rows] == [True, True, True, True]
    assert "+12.00, +15.00, +11.00" in rows[2]["measured"]
    rows = ic.targets(_claim_records([12.0, 9.0, 11.0], [-1.5, -2.0, -1.0], ce=(70.0, 30.0)),
                      [0, 1, 2])
    assert [r["met"] for r in rows] == [False, False, False, False]  # CE too weak; one seed < 10
    rows = ic.targets(_claim_records([12.0, 15.0], [0.0, 0.0]), [0, 1, 2])
    assert rows[2]["met"] is None and rows[3]["met"] is None         # a seed missing: not judged


def test_verdict_effect_shown_only_with_interval_above_zero_and_no_significant_all_loss():
    rec = _claim_records([12.0, 15.0, 11.0], [0.5, -0.5, 0.2])
    status, why = ic.verdict(rec, reduced=True, finished=True)
    assert status == "effect shown (reduced)"
    assert why.startswith(f"{ic.CLAIM} raises minority accuracy over CE: +12.7 points (95 % CI ")
    assert "higher on 3/3 seeds" in why and "not shown" not in why
    assert ic.verdict(rec, reduced=False, finished=True)[0] == "reproduced"
    status, why = ic.verdict(rec, reduced=True, finished=False)
    assert status == "not shown (reduced)" and "did not finish" in why
    noisy = _claim_records([12.0, -9.0, 3.0], [0.0, 0.1, 0.0])
    status, why = ic.verdict(noisy, reduced=True, finished=True)
    assert status == "not shown (reduced)" and "2/3" in why
    assert f"Not shown: {ic.CLAIM} raises minority accuracy over CE." in why   # the failed claim, named
    costly = _claim_records([12.0, 15.0, 11.0], [-3.0, -3.2, -2.9])
    status, why = ic.verdict(costly, reduced=True, finished=True)
    assert status == "not shown (reduced)" and "Not shown: without costing all-class accuracy." in why
    assert ic.verdict(costly, reduced=False, finished=True)[0] == "not reproduced"
    one = {k: v for k, v in rec.items() if k[1] == 0}
    assert "fewer than 2 paired draws" in ic.verdict(one, reduced=True, finished=True)[1]


def test_reader_description_counts_reused_training_time():
    rec = {("CE", 0): {"wall_seconds": 90.0}, ("CB", 0): {"wall_seconds": 5.0},
           # resumed across segments: its last call's wall time (10 s) undercounts; the timing sums all
           ("CE", 1): {"wall_seconds": 10.0, "timing": {"total_seconds": 25.0, "eval_seconds_total": 5.0}}}
    res = ic.SweepResult(rec, loaded=[("CE", 0), ("CE", 1)], trained=[("CB", 0)], pending=[])
    assert ic.reused_seconds([res, res]) == 240.0
    text = ic.describe_reader(res)
    assert text == ("3 runs finished: 1 trained now, 2 reused from an earlier render on the same code and "
                    "settings (2.0 min of training when they ran)")
    assert "file" not in text and "pending" not in text
    assert ic.describe_reader(ic.SweepResult({}, [], [], [("CE", 2)])).endswith("; 1 pending")
