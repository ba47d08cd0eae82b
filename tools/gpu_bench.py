"""Time one optimiser step of every model the full profiles train, on this device, and write the
table as JSON: what a lent GPU's session needs to plan its calls (10 minutes each).

    python tools/gpu_bench.py [--out FILE] [--steps N]

Each row: a model at its full-profile shapes (synthetic data made here), the mean seconds of
``--steps`` steps after two untimed warm-up steps, and what that makes the full schedule cost
(steps of the schedule x step time; evaluation, data loading and start-up not included).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import dae, gan, kingma, runtime  # noqa: E402


def _time_run(run: Callable[[int], None], steps: int, dev: torch.device) -> float:
    """Seconds per step of a trainer called once for ``steps`` steps (after a 2-step warm-up)."""
    run(2)
    w = runtime.Stopwatch(dev)
    run(steps)
    return w.elapsed() / steps


def _dae_step(dev: torch.device) -> Callable[[], None]:
    model = dae.DenoisingAutoencoder(784, 500, torch.Generator().manual_seed(0)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, gen = torch.rand(20, 784, device=dev), torch.Generator(device=dev).manual_seed(0)

    def step() -> None:
        loss = model.cost(x, 0.3, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def _gan_run(dev: torch.device, mf: torch.memory_format, n_cls: int, ch: int = 64,
             batch: int = 128) -> Callable[[int], None]:
    x = (torch.rand(batch * 4, 1, 28, 28, device=dev) * 2 - 1).contiguous(memory_format=mf)
    y = torch.randint(0, 10, (batch * 4,), device=dev) if n_cls else None
    G = gan.Generator(100, ch, n_cls).to(dev, memory_format=mf)
    D = gan.Discriminator(ch, n_cls).to(dev, memory_format=mf)

    def run(steps: int) -> None:   # G steps with k = 1, through the notebook's own trainer
        gan.train_gan(G, D, x, y, steps=steps, batch_size=batch, memory_format=mf)
    return run


def _vae_run(dev: torch.device, mf: torch.memory_format, ch: int = 64,
             batch: int = 128) -> Callable[[int], None]:
    x = torch.rand(batch * 4, 1, 28, 28, device=dev).contiguous(memory_format=mf)
    vae = gan.ConvVAE(100, ch).to(dev, memory_format=mf)

    def run(steps: int) -> None:
        gan.train_vae(vae, x, steps=steps, batch_size=batch, memory_format=mf)
    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args(argv)
    dev = runtime.get_device()
    cl = runtime.memory_format(True, dev)
    rows: list[dict[str, Any]] = []
    t_all = time.perf_counter()

    def add(name: str, schedule_steps: int, fn: Callable[[], Callable[..., None]], steps: int,
            trainer: bool = True) -> None:
        t0 = time.perf_counter()
        dt = _time_run(fn(), steps, dev) if trainer else runtime.seconds_per_call(fn(), steps, dev)
        rows.append({"model": name, "step_ms": round(1e3 * dt, 3), "schedule_steps": schedule_steps,
                     "schedule_minutes": round(dt * schedule_steps / 60, 2),
                     "bench_seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)

    n = args.steps
    add("04 dA 784-500 batch 20", 75_000, lambda: _dae_step(dev), 10 * n, trainer=False)
    add("07 DCGAN ch64 b128 channels_last (3 seeds + 2 x sat_steps)", 9_750 * 3 + 2_000,
        lambda: _gan_run(dev, cl, 0), 4 * n)
    add("07 DCGAN ch64 b128 contiguous", 9_750 * 3, lambda: _gan_run(dev, torch.contiguous_format, 0), 4 * n)
    add("07 cGAN ch64 b128 channels_last", 9_750 * 3, lambda: _gan_run(dev, cl, 10), 4 * n)
    add("07 ConvVAE ch64 b128 channels_last", 9_750 * 3, lambda: _vae_run(dev, cl), 4 * n)
    for runs, lab, bs, sched, amp in ((5, 1, 500, 300_000, False), (5, 1, 500, 300_000, True),
                                      (15, 15, 250, 600_000, False), (15, 15, 250, 600_000, True)):
        t0 = time.perf_counter()
        r = kingma.bench(runs=runs, batch=bs, labelled=lab, steps=n, amp=amp, device=str(dev))
        rows.append({"model": f"02 M2 {runs} stacked runs, {lab}+{bs - lab}, amp={amp}",
                     "step_ms": round(1e3 * r["step_seconds"], 3), "schedule_steps": sched,
                     "schedule_minutes": round(r["step_seconds"] * sched / 60, 2),
                     "bench_seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
    report = {"device": runtime.device_name(dev), "torch": torch.__version__,
              "commit": runtime.git_state()["commit"], "steps_timed": n, "rows": rows,
              "seconds": round(time.perf_counter() - t_all, 1)}
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
