"""The dryrun profile (`make dryrun`): every table's full entry with only steps, epochs and
evaluation sizes capped; it is reduced, never auto-selected, never writes results/ or checkpoints/."""
from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import nbformat
import pytest
import torch

from common import (dryrun, gan, gen_eval, imbalanced_cifar as ic, kingma, long_tailed as lt, losses,
                    profiles, realnvp, report, reproduce, runtime)

from conftest import GOOD, write_book

TABLES = {"01": profiles.CONFIGS_01, "02": profiles.CONFIGS_02, "03": profiles.CONFIGS_03,
          "04": profiles.CONFIGS_04, "05": realnvp.CONFIGS, "06": ic.CONFIGS, "07": gan.CONFIGS,
          "08": lt.CONFIGS}
# The only keys a dryrun entry may change, per notebook: optimiser steps, epochs, evaluation
# sizes. Listed here on purpose: a new cap (or a key that stops being capped) must be added here.
CAPPED = {
    "01": {"epochs", "epochs_2d", "eval_every", "n_valid", "n_test", "tsvm_n_labels", "tsvm_unlabelled"},
    "02": {"schedule", "eval_every", "sup_epochs", "sty_epochs", "cost_steps", "n_valid", "n_test"},
    "03": {"m1_epochs", "schedule", "m2_schedule", "eval_every", "cost_steps", "n_valid", "n_test"},
    "04": {"epochs", "probe_train", "probe_iter"},
    "05": {"toy_steps", "mnist_max_steps", "mnist_small_max_steps", "cifar_max_steps", "eval_size",
           "final_eval_n", "invert_n", "sample_grid", "manifold_steps", "classifier", "confidence_n"},
    "06": {"train", "test_per_class"},
    "07": {"clf_epochs", "gan_steps", "dcgan_steps", "eval_every", "sat_steps", "n_eval", "n_curve", "n_nn", "n_arith",
           "n_rec", "levers"},
    "08": {"train", "test_per_class", "n_val"},
}


def test_dryrun_resolves_is_reduced_takes_the_full_path_and_is_never_automatic(monkeypatch):
    monkeypatch.delenv(runtime.PROFILE_ENV, raising=False)
    assert runtime.resolve_profile("dryrun") == "dryrun"
    assert runtime.resolve_profile(None) in ("cpu", "full")
    monkeypatch.setenv(runtime.PROFILE_ENV, "dryrun")
    assert runtime.resolve_profile("full") == "dryrun"
    assert runtime.is_reduced("dryrun") and not runtime.is_reduced("full")
    assert runtime.is_full("dryrun") and runtime.is_full("full")
    assert not runtime.is_full("cpu") and not runtime.is_full("smoke")
    with pytest.raises(runtime.ProfileError):
        runtime.is_full("turbo")


def test_dryrun_of_refuses_a_cap_the_full_profile_lacks():
    assert runtime.dryrun_of({"a": 1, "b": 2}, b=1) == {"a": 1, "b": 1}
    with pytest.raises(runtime.ProfileError, match=r"\['epochz'\]"):
        runtime.dryrun_of({"epochs": 3}, epochz=1)


def _smaller(dry, full) -> bool:
    """A cap shrinks: a number no larger than full's (None in full means "all of it")."""
    if full is None:
        return isinstance(dry, int) and dry > 0
    return dry <= full


@pytest.mark.parametrize("nb", sorted(TABLES))
def test_dryrun_entry_is_full_except_the_capped_keys(nb):
    table = TABLES[nb]
    full, dry = runtime.pick(table, "full"), runtime.pick(table, "dryrun")
    changed = {k for k in full if dry[k] != full[k]}
    assert changed == CAPPED[nb]
    for k in changed:
        if isinstance(full[k], (int, float)) or full[k] is None:
            assert _smaller(dry[k], full[k]), (k, dry[k], full[k])


def test_nested_caps_shrink_only_steps():
    full, dry = realnvp.CONFIGS["full"]["classifier"], realnvp.CONFIGS["dryrun"]["classifier"]
    assert {k for k in full if full[k] != dry[k]} == {"epochs"} and dry["epochs"] < full["epochs"]
    lv_full, lv_dry = gan.CONFIGS["full"]["levers"], gan.CONFIGS["dryrun"]["levers"]   # 07's lever table
    assert lv_dry["rows"] == lv_full["rows"] and lv_dry["steps"] < lv_full["steps"]
    for table in (ic.CONFIGS, lt.CONFIGS):
        t_full, t_dry = table["full"]["train"], table["dryrun"]["train"]
        assert type(t_dry) is type(t_full)
        diff = {f.name for f in dataclasses.fields(t_full) if getattr(t_full, f.name) != getattr(t_dry, f.name)}
        assert diff == {"epochs", "steps_per_epoch"}
        assert t_dry.epochs < t_full.epochs and t_full.steps_per_epoch is None and t_dry.steps_per_epoch >= 1
        assert t_dry.compile == t_full.compile and t_dry.bf16 and t_dry.channels_last   # unchanged switches


@pytest.mark.parametrize("nb,keys", [("02", ["schedule"]), ("03", ["schedule", "m2_schedule"])])
def test_dryrun_m2_schedules_keep_the_full_minibatch_shapes_and_stacking(nb, keys):
    full, dry = TABLES[nb]["full"], TABLES[nb]["dryrun"]
    for key in keys:
        hidden = full["hidden"] if nb == "02" or key == "m2_schedule" else \
            (lambda n: full["hidden_n100"] if n == 100 else full["hidden"])
        if key == "m2_schedule":
            hidden = full["m2_hidden"]
        g_full = kingma.schedule_groups(full[key], hidden)
        g_dry = kingma.schedule_groups(dry[key], hidden)
        assert [ns for ns, _, _ in g_full] == [ns for ns, _, _ in g_dry]      # same stacked models
        for (ns, (e0, b0, l0, u0), _), (_, (e1, b1, l1, u1), _) in zip(g_full, g_dry):
            pool = full["n_train"] - max(ns)
            assert (kingma.minibatch_shape(b0, max(ns), pool, l0, u0)
                    == kingma.minibatch_shape(b1, max(ns), pool, l1, u1)), ns
            assert e1 * b1 <= 4 and e1 * b1 < e0 * b0                           # a handful of steps
    assert dry["schedule"][100][0] >= 2   # two epochs: the dry run stops between them and resumes


def test_checkpoints_of_a_dryrun_never_go_under_checkpoints(monkeypatch, tmp_path):
    repo_ckpt = (runtime.REPO_ROOT / "checkpoints").resolve()
    monkeypatch.delenv(runtime.CHECKPOINTS_ENV, raising=False)
    assert runtime.checkpoint_root("full") == runtime.REPO_ROOT / "checkpoints"
    paths = [runtime.checkpoint_root("dryrun"), profiles.kingma_checkpoint("m1", "dryrun", "cpu"),
             *ic.runs_dirs("dryrun"), gen_eval.checkpoint_dir("07_vae_vs_gan", "dryrun"),
             *lt.runs_dirs("dryrun", 100), *lt.runs_dirs("dryrun", 10, "selection")]
    for p in paths:
        assert not Path(p).resolve().is_relative_to(repo_ckpt), p
    assert runtime.checkpoint_root("dryrun") == runtime.checkpoint_root("dryrun")   # one per process
    monkeypatch.setenv(runtime.CHECKPOINTS_ENV, str(tmp_path))
    assert ic.runs_dirs("full")[0] == tmp_path / ic.NOTEBOOK / "full" / "runs"
    assert profiles.kingma_checkpoint("m1", "cpu", "cpu") == tmp_path / "kingma_m1_cpu_cpu.pt"


def _split(n: int = 40) -> ic.SplitData:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(10).repeat(n // 10)
    x = torch.randint(0, 256, (len(y), 32, 32, 3), dtype=torch.uint8, generator=g)
    return ic.SplitData(x, y, x, y, x[:20], y[:20], torch.arange(len(y)), {"synthetic": True})


def test_steps_per_epoch_caps_the_optimiser_steps_and_only_then_enters_the_identity(monkeypatch):
    tcfg = ic.TrainConfig(width=4, blocks=(1,), stem_stride=2, epochs=2, lr_milestones=(),
                          batch_size=8, bf16=False, channels_last=False)
    assert "steps_per_epoch" not in tcfg.identity()
    capped = dataclasses.replace(tcfg, steps_per_epoch=2)
    assert capped.identity()["steps_per_epoch"] == 2
    steps = []
    sgd_step = torch.optim.SGD.step
    monkeypatch.setattr(torch.optim.SGD, "step", lambda self, *a, **k: steps.append(1) or sgd_step(self, *a, **k))
    spec = losses.study_configs()["CE"]
    dev = torch.device("cpu")
    ic.train_one("CE", spec, tcfg, _split(), 0, dev, show_progress=False)
    assert len(steps) == 2 * 5                            # 40 images, batch 8: every batch, 2 epochs
    steps.clear()
    few = ic.train_one("CE", spec, capped, _split(), 0, dev, show_progress=False)
    assert len(steps) == 2 * 2 and [r["epoch"] for r in few["history"]] == [1, 2]
    assert all(r["train_loss"] > 0 for r in few["history"])
    assert ic.fingerprint("CE", spec, tcfg, 0, {}) != ic.fingerprint("CE", spec, capped, 0, {})
    with pytest.raises(ValueError, match="steps_per_epoch"):
        dataclasses.replace(tcfg, steps_per_epoch=0)


def test_scratch_run_publishes_nothing_and_leaves_the_readme_alone(sandbox, monkeypatch, tmp_path):
    books, res = sandbox
    monkeypatch.setattr(report, "update_readme", lambda *a, **k: pytest.fail("README rewritten"))
    write_book(books / "98_scratch.ipynb", GOOD)
    scratch = tmp_path / "scratch"
    assert reproduce.main(["--nb", "98", "--profile", "smoke", "--scratch", str(scratch)]) == 0
    assert list(res.iterdir()) == []                                   # nothing under results/
    assert json.loads((scratch / "98_scratch" / "metrics.json").read_text())["v"] == 1
    assert (scratch / "98_scratch" / "98_scratch.html").is_file()
    assert (scratch / "README-results.md").is_file()
    with pytest.raises(SystemExit, match="lies inside"):
        reproduce.main(["--nb", "98", "--scratch", str(res / "x")])
    with pytest.raises(SystemExit, match="never published"):   # not into results/, by any route
        reproduce.main(["--nb", "98", "--profile", "dryrun"])
    monkeypatch.setenv(runtime.PROFILE_ENV, "dryrun")
    with pytest.raises(SystemExit, match="never published"):
        reproduce.main(["--nb", "98"])        # (with --profile full: a conflict, refused too)
    assert list(res.iterdir()) == []


def _book(path: Path, body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("PROFILE = None\nOUT_DIR = None\nSEGMENT_SECONDS = None\n")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


# a notebook that records its profile with provenance, like the real ones
METRICS = ("import os, pathlib, torch\n"
           "from common import results, runtime, training\n"
           "profile = runtime.resolve_profile(PROFILE)\n"
           "name = pathlib.Path(OUT_DIR).name.removeprefix('.staging-')\n"
           "ck = runtime.checkpoint_root(profile) / 'demo.pt'\n"
           "resumed = 1 if ck.exists() else None\n"
           "if SEGMENT_SECONDS:\n"
           "    ck.parent.mkdir(parents=True, exist_ok=True); ck.write_text('epoch 1')\n"
           "    raise training.SegmentUnfinished('demo: the segment ran out after epoch 1 of 2')\n"
           "results.save_metrics(OUT_DIR, name, profile=profile, seeds=[0], device=torch.device('cpu'),\n"
           "    wall_time_s=0.1, config={}, metrics={'m': {'resumed_from': resumed}},\n"
           "    summary=[{'quantity': 'q', 'ours': 1.0, 'paper': None, 'unit': 'u', 'headline': True}])\n")


def _isolate(monkeypatch):
    """dryrun.main sets these for its kernels: restore them after the test."""
    for var in (runtime.PROFILE_ENV, "REPRO_OUT", runtime.CHECKPOINTS_ENV, runtime.THREADS_ENV):
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)


def test_dryrun_runs_segments_builds_rows_and_touches_nothing(sandbox, monkeypatch, capsys, tmp_path):
    books, res = sandbox
    _isolate(monkeypatch)
    monkeypatch.setattr(dryrun, "SEGMENT_DEMO", "91")
    _book(books / "91_seg.ipynb", METRICS)
    _book(books / "92_plain.ipynb", METRICS)
    before = dryrun.snapshot()
    out = tmp_path / "dry"
    rc = dryrun.main(["--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert re.search(r"91_seg \(segment 1 of 2\) +pass .*stopped by SEGMENT_SECONDS", text), text
    assert re.search(r"91_seg \(segment 2 of 2\) +pass .*resumed: metrics.m.resumed_from = 1", text)
    assert re.search(r"92_plain +pass", text) and re.search(r"README rows \(common.report\) +pass", text)
    assert re.search(r"total +pass", text)
    assert dryrun.changes(before, dryrun.snapshot()) == [] and list(res.iterdir()) == []
    assert (out / "checkpoints" / "demo.pt").is_file() and (out / "results" / "92_plain").is_dir()
    assert "92_plain" in (out / "results" / "README-results.md").read_text()


def test_dryrun_reports_a_failing_notebook_and_exits_1(sandbox, monkeypatch, capsys, tmp_path):
    books, _ = sandbox
    _isolate(monkeypatch)
    _book(books / "93_boom.ipynb", "raise RuntimeError('boom in the dry run')\n")
    rc = dryrun.main(["--out", str(tmp_path / "dry"), "--no-segments"])
    text = capsys.readouterr().out
    assert rc == 1 and re.search(r"93_boom +FAIL .*boom in the dry run", text), text
    assert re.search(r"total +FAIL", text) and "outputs kept in" in text


def test_snapshot_changes_are_detected(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "a.json").write_text("1")
    before = dryrun.snapshot(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "x.pt").write_text("x")
    os.utime(tmp_path / "results" / "a.json", ns=(1, 1))
    assert dryrun.changes(before, dryrun.snapshot(tmp_path)) == ["added checkpoints/x.pt",
                                                                 "changed results/a.json"]
