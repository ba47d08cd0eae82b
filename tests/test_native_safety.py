"""Native crashes must fail a test, never kill or hang the test run.

Each check runs the training steps of a notebook's conv models in a **subprocess** with a
timeout, once on this CPU's own kernels and once with oneDNN limited to AVX2
(``ONEDNN_MAX_CPU_ISA=AVX2``), the instruction set of the AMD EPYC machines where notebook
06's smoke profile died with ``double free or corruption``. A segfault or abort there is an
exit code here, and a hang is a timeout.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from common import runtime
from common.runtime import REPO_ROOT

ISAS = {"native": None, "avx2": "AVX2"}

# 06: the smoke / cpu networks (airbench-style, bf16 autocast + channels_last where the CPU has
# AVX-512) and the full ResNet-18 through train_one (all its input handling), tiny data; each
# prints the memory format it ran in.
CLASS_BALANCED = """
import dataclasses, torch
from common import imbalanced_cifar as ic, losses
torch.set_num_threads(1); torch.manual_seed(0)
g = torch.Generator().manual_seed(0)
counts = ic.split_counts(12, 4)
y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
x = torch.randint(0, 256, (len(y), 32, 32, 3), dtype=torch.uint8, generator=g)
split = ic.SplitData(x, y, x, y, x[:40], y[:40], torch.arange(len(y)), {})
for profile in ("smoke", "cpu", "full"):
    tcfg = ic.CONFIGS[profile]["train"]
    if profile == "full":   # the full ResNet-18 and its switches, a few small steps
        tcfg = dataclasses.replace(tcfg, batch_size=16, epochs=1, eval_batch=40)
    else:
        tcfg = dataclasses.replace(tcfg, epochs=2, batch_size=32)
    for name in ("CE", "CB-focal γ=1 β=0.999"):
        rec = ic.train_one(name, losses.all_configs()[name], tcfg, split, 0,
                           torch.device("cpu"), show_progress=False)
        assert rec is not None
    print(profile, tcfg.arch, rec["numerics"]["memory_format"], rec["numerics"]["bf16_autocast"])
print("ok")
"""

# 05: a two-scale Real NVP (convolutional s/t ResNets) trained a few steps, then evaluated; the
# last variant is the cpu profile's policy (bf16 autocast and channels_last only where native).
REAL_NVP = """
import tempfile, pathlib, torch
from common import realnvp as R, runtime
torch.set_num_threads(1); torch.manual_seed(0)
g = torch.Generator().manual_seed(0)
auto = runtime.resolve_amp("auto", torch.device("cpu"))
for shape in ((1, 28, 28), (3, 32, 32)):
    x = torch.randint(0, 256, (32, *shape), generator=g, dtype=torch.uint8)
    for cl, amp in ((False, False), (True, False), (True, auto)):
        m = R.RealNVP(shape, scales=2, features=4, blocks=1, amp=amp)
        cfg = R.TrainConfig(batch_size=16, max_steps=4, eval_size=16, eval_every_seconds=1e9,
                            channels_last=cl)
        with tempfile.TemporaryDirectory() as d:
            R.train_flow(m, x, x, cfg, pathlib.Path(d) / "c.pt", log=lambda s: None)
print("ok")
"""


def run_isolated(script: str, isa: str | None, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh interpreter (repo on the path); a crash is a return code."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONFAULTHANDLER": "1"}
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    try:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO_ROOT,
                              env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"hung for more than {timeout:.0f} s (ONEDNN_MAX_CPU_ISA={isa}); "
                    f"output so far:\n{e.stdout}\n{e.stderr}")


def _check(proc: subprocess.CompletedProcess, isa: str | None) -> None:
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (
        f"exit code {proc.returncode} (negative: killed by signal {-proc.returncode}) with "
        f"ONEDNN_MAX_CPU_ISA={isa}\n--- stdout\n{proc.stdout[-2000:]}\n--- stderr\n{proc.stderr[-4000:]}")


@pytest.mark.parametrize("isa", ISAS.values(), ids=ISAS.keys())
def test_class_balanced_training_steps_do_not_crash(isa):
    proc = run_isolated(CLASS_BALANCED, isa)
    _check(proc, isa)
    ran = dict(line.split(" ", 1) for line in proc.stdout.splitlines()[:-1])
    assert ran["cpu"].startswith("airnet ")                  # the cpu profile's network ran
    if isa == "AVX2" or "avx512f" not in runtime.cpu_info()["isa"]:
        assert all("contiguous" in v for v in ran.values()), ran   # never channels_last on AVX2
        assert all(v.endswith("False") for v in ran.values()), ran  # nor emulated bf16
    else:
        assert "channels_last" in ran["cpu"], ran            # the fast path where it is safe


@pytest.mark.parametrize("cap,expected", [
    (None, "channels_last"), ("AVX2", "contiguous"), ("avx2", "contiguous"),
    ("AVX2_VNNI", "contiguous"), ("SSE41", "contiguous"), ("AVX", "contiguous"),
    ("AVX512_CORE", "channels_last"), ("AVX512_CORE_AMX", "channels_last"),
    ("AVX10_1_512", "channels_last")])
def test_memory_format_channels_last_on_cpu_only_with_avx512_kernels(monkeypatch, cap, expected):
    """channels_last on an AVX-512 CPU unless oneDNN is capped at AVX2 or below; contiguous on
    an AVX2-only CPU whatever the cap, and whenever channels_last is not asked for. Same for
    bf16 autocast ("auto") on a CPU with AMX."""
    cpu, fmt = torch.device("cpu"), {"channels_last": torch.channels_last,
                                     "contiguous": torch.contiguous_format}
    monkeypatch.setattr(runtime, "cpu_info", lambda: {"isa": ["avx2", "fma", "avx512f", "amx_bf16"]})
    if cap is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert runtime.memory_format(True, cpu) == fmt[expected]
    assert runtime.memory_format(False, cpu) == torch.contiguous_format
    # bf16 autocast follows the same cap: oneDNN capped at AVX2 would emulate bfloat16
    assert runtime.resolve_amp("auto", cpu) is (expected == "channels_last")
    monkeypatch.setattr(runtime, "cpu_info", lambda: {"isa": ["avx2", "fma"]})   # AVX2-only EPYC
    assert runtime.memory_format(True, cpu) == torch.contiguous_format
    assert runtime.memory_format(True, torch.device("cuda")) == torch.channels_last


@pytest.mark.parametrize("isa", ISAS.values(), ids=ISAS.keys())
def test_real_nvp_training_steps_do_not_crash(isa):
    _check(run_isolated(REAL_NVP, isa), isa)


def test_a_native_crash_is_a_failure_not_a_dead_run():
    """The harness itself: an abort in the child is reported, the test run goes on."""
    proc = run_isolated("import os; os.abort()", None, timeout=60)
    assert proc.returncode != 0
