"""``make bench``: what this machine does with every notebook's main model.

For each notebook's main model at its ``cpu`` profile's shapes, one full optimiser step
(forward, backward, Adam) is timed in two modes, side by side in one process:

* ``float32``: float32, plain contiguous (NCHW) tensors;
* ``fast``: bfloat16 autocast, plus channels_last for convolutional models: the fast path on
  GPUs and on CPUs with native bf16 (AVX-512 BF16 / AMX).

The modes alternate within each of ``rounds`` paired rounds (so a load change on the machine
hits both), and the table gives median images (or points) per second of each and the median of
the per-round ratios. The last column names the mode the notebook's own profile uses on this
machine (:func:`common.runtime.resolve_amp`, :func:`common.runtime.memory_format`; bf16 is
emulated, hence slow, on CPUs without it, where every notebook stays float32).

    python -m common.bench [--rounds 5] [--only 05 07] [--threads N]
    python -m common.bench --peer-shapes --threads 1   # Real NVP CIFAR size, M2 at 1 + 499
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from . import dae, gan, imbalanced_cifar, kingma, long_tailed, profiles, realnvp, runtime

Step = Callable[[], None]


@dataclass
class Case:
    """One notebook's main model: ``build(amp, memory_format)`` returns a step closure that
    runs one optimiser step on ``items`` images (or data points)."""

    notebook: str
    model: str
    items: int
    conv: bool
    build: Callable[[bool, torch.memory_format], Step]
    profile_amp: bool | str = False       # the notebook's cpu profile setting ("auto": native bf16)


def _adam_step(model: torch.nn.Module, loss: Callable[[], torch.Tensor], amp: bool, dev: torch.device) -> Step:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            value = loss()
        opt.zero_grad(set_to_none=True)
        value.float().backward()
        opt.step()
    return step


def _m2(dev: torch.device, z: int, hidden: tuple[int, ...], labelled: int, unlabelled: int
        ) -> Callable[[bool, torch.memory_format], Step]:
    """M2 (one run) on minibatches of ``labelled`` + ``unlabelled`` points, 02's objective (set
    sizes of N = 100: they scale terms, not the work)."""
    def build(amp: bool, fmt: torch.memory_format) -> Step:
        m = kingma.M2(784, z, hidden, seeds=[0]).to(dev)
        x = (torch.rand(1, labelled + unlabelled, 784, device=dev) < 0.2).float()
        y = torch.randint(0, 10, (1, labelled), device=dev)
        objective = kingma.step_objective(m, 100, 49_900, 50.0, amp=amp)   # autocasts itself
        return _adam_step(m, lambda: objective(x[:, :labelled], y, x[:, labelled:])["loss"].sum(), False, dev)
    return build


def _nvp(dev: torch.device, shape: tuple[int, int, int], model: dict, batch: int
         ) -> Callable[[bool, torch.memory_format], Step]:
    """Real NVP (``model``: scales, features, blocks) on ``batch`` images of ``shape``."""
    def build(amp: bool, fmt: torch.memory_format) -> Step:
        m = realnvp.RealNVP(shape, model["scales"], model["features"], model["blocks"], amp=amp)
        m = m.to(dev, memory_format=fmt)
        xb = torch.randint(0, 256, (batch, *shape), dtype=torch.uint8, device=dev).contiguous(memory_format=fmt)

        def loss() -> torch.Tensor:   # the model autocasts its s/t nets itself
            logp, _ = realnvp._logp_unchecked(m, xb, realnvp.ALPHA, torch.rand(xb.shape, device=dev))
            return -logp.mean()
        return _adam_step(m, loss, False, dev)
    return build


def cases(dev: torch.device) -> list[Case]:
    """The main model of every notebook, at its cpu profile's sizes, on ``dev``."""
    c1, c2 = profiles.CONFIGS_01["cpu"], profiles.CONFIGS_02["cpu"]
    c5, c7 = realnvp.CONFIGS["cpu"], gan.CONFIGS["cpu"]
    t6, t8 = imbalanced_cifar.CONFIGS["cpu"]["train"], long_tailed.CONFIGS["cpu"]["train"]

    def m1(amp: bool, fmt: torch.memory_format) -> Step:
        m = kingma.M1(784, c1["z"], c1["hidden"]).to(dev)
        x = (torch.rand(1, c1["batch"], 784, device=dev) < 0.2).float()
        return _adam_step(m, lambda: -m.elbo(x).mean(), amp, dev)

    def da(amp: bool, fmt: torch.memory_format) -> Step:
        m = dae.DenoisingAutoencoder().to(dev)
        x = torch.rand(20, 784, device=dev)
        return _adam_step(m, lambda: m.cost(x, 0.3), amp, dev)

    def cifar(tcfg: imbalanced_cifar.TrainConfig) -> Callable[[bool, torch.memory_format], Step]:
        def build(amp: bool, fmt: torch.memory_format) -> Step:
            m = imbalanced_cifar.build_model(tcfg, dev).to(memory_format=fmt)
            x = torch.randn(tcfg.batch_size, 3, 32, 32, device=dev).contiguous(memory_format=fmt)
            y = torch.randint(0, 10, (tcfg.batch_size,), device=dev)
            return _adam_step(m, lambda: F.cross_entropy(m(x).float(), y), amp, dev)
        return build

    def dcgan(amp: bool, fmt: torch.memory_format) -> Step:
        G = gan.Generator(c7["z_dim"], c7["ch"]).to(dev, memory_format=fmt)
        D = gan.Discriminator(c7["ch"]).to(dev, memory_format=fmt)
        x = (torch.rand(c7["dcgan_batch"], 1, 28, 28, device=dev) * 2 - 1).contiguous(memory_format=fmt)
        return lambda: gan.train_gan(G, D, x, steps=1, batch_size=len(x), memory_format=fmt, amp=amp)

    return [
        Case("01", f"M1 {c1['hidden']}, batch {c1['batch']}", c1["batch"], False, m1),
        Case("02", f"M2 {c2['hidden']}, 100 labelled + 100 unlabelled", 200, False,
             _m2(dev, c2["z"], c2["hidden"], 100, 100), c2["amp"]),
        Case("04", "dA 784-500, batch 20", 20, False, da),
        Case("05", "Real NVP {scales} scales, {features} maps, {blocks} block(s)".format(**c5["mnist_model"])
             + f", batch {c5['mnist_batch']}", c5["mnist_batch"], True,
             _nvp(dev, (1, 28, 28), c5["mnist_model"], c5["mnist_batch"]), c5["amp"]),
        Case("06", f"{t6.arch} width {t6.width}, batch {t6.batch_size}", t6.batch_size, True,
             cifar(t6), t6.bf16),
        Case("07", f"DCGAN G+D ch {c7['ch']}, batch {c7['dcgan_batch']}", c7["dcgan_batch"], True,
             dcgan, c7["amp"]),
        Case("08", f"ResNet width {t8.width}, {t8.blocks} blocks, batch {t8.batch_size}", t8.batch_size,
             True, cifar(t8), t8.bf16),
    ]


def peer_cases(dev: torch.device) -> list[Case]:
    """The shapes of the public implementations' comparison (issue #27 of this repository):
    Real NVP at the CIFAR size (05's ``full`` model, 19.6 M parameters, as chrischute/real-nvp's)
    at batch 16 and 64, and M2 at the paper's 1 labelled + 499 unlabelled. Only ours is timed:
    float32 NCHW (ours when the comparison was made) against the mode the notebooks pick here."""
    cm, c2 = realnvp.CONFIGS["full"]["cifar_model"], profiles.CONFIGS_02["cpu"]
    n = sum(p.numel() for p in realnvp.RealNVP((3, 32, 32), cm["scales"], cm["features"], cm["blocks"]).parameters())
    name = "Real NVP CIFAR {scales} scale(s), {features} maps, {blocks} blocks".format(**cm) + f" ({n / 1e6:.1f} M parameters)"
    return [Case("05", f"{name}, batch {b}", b, True, _nvp(dev, (3, 32, 32), cm, b), "auto") for b in (16, 64)] + [
        Case("02", f"M2 {c2['hidden']}, 1 labelled + 499 unlabelled", 500, False, _m2(dev, c2["z"], c2["hidden"], 1, 499),
             c2["amp"])]


def paired_seconds(a: Step, b: Step, rounds: int, steps: int) -> tuple[list[float], list[float]]:
    """Seconds per step of ``a`` and of ``b`` in each of ``rounds`` rounds (after two untimed
    steps each), the order alternating between rounds."""
    for s in (a, b, a, b):
        s()
    ta, tb = [], []
    for r in range(rounds):
        for s, out in ((a, ta), (b, tb)) if r % 2 == 0 else ((b, tb), (a, ta)):
            t0 = time.perf_counter()
            for _ in range(steps):
                s()
            out.append((time.perf_counter() - t0) / steps)
    return ta, tb


def run(only: list[str] | None = None, rounds: int = 5, steps: int = 3,
        device: str | None = None, log: Callable[[str], None] = print, peer_shapes: bool = False
        ) -> list[dict[str, object]]:
    """Time every case (or those of the notebooks in ``only``; ``peer_shapes``: the cases of
    :func:`peer_cases` instead); print and return the rows."""
    dev = runtime.get_device(device)
    info = runtime.cpu_info()
    log(f"device {runtime.device_name(dev)}; CPU {info['model']}; vector units "
        f"{', '.join(info['isa']) or 'none listed'}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {rounds} paired rounds of {steps} steps")
    rows = []
    for case in (peer_cases if peer_shapes else cases)(dev):
        if only and case.notebook not in only:
            continue
        fast_fmt = runtime.memory_format(True, dev) if case.conv else torch.contiguous_format
        torch.manual_seed(0)
        slow = case.build(False, torch.contiguous_format)
        torch.manual_seed(0)
        fast = case.build(True, fast_fmt)
        ts, tf = paired_seconds(slow, fast, rounds, steps)
        uses_fast = runtime.resolve_amp(case.profile_amp, dev)
        row = {"notebook": case.notebook, "model": case.model,
               "float32_per_s": case.items / statistics.median(ts),
               "fast_per_s": case.items / statistics.median(tf),
               "ratio": statistics.median(a / b for a, b in zip(ts, tf)),
               "fast_mode": "bf16" + (" + channels_last" if fast_fmt == torch.channels_last else ""),
               "profile_uses": "fast" if uses_fast else "float32"}
        rows.append(row)
        log(f"{row['notebook']}  {row['model']:48s} float32 {row['float32_per_s']:9.1f}/s  "
            f"{row['fast_mode']:22s} {row['fast_per_s']:9.1f}/s  x{row['ratio']:.2f}  "
            f"cpu profile here: {row['profile_uses']}")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m common.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="steps per mode per round")
    ap.add_argument("--only", nargs="+", metavar="NB", help="notebooks, e.g. 05 07")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--peer-shapes", action="store_true",
                    help="the public implementations' comparison shapes (Real NVP CIFAR, M2 1 + 499)")
    a = ap.parse_args(argv)
    if a.rounds < 1 or a.steps < 1:
        ap.error("--rounds and --steps must be positive")
    runtime.set_threads(a.threads, runtime.get_device(a.device))
    run(a.only, a.rounds, a.steps, a.device, peer_shapes=a.peer_shapes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
