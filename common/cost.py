"""What each notebook's ``full`` profile costs, counted: FLOPs per optimiser step of every model
(``torch.utils.flop_counter.FlopCounterMode`` on one real step: forward, backward; the
optimiser's elementwise update is not counted), the steps of the full schedule, the total, and
a time estimate for one H100 at a stated utilisation.

    python -m common.cost            # writes docs/COST.md, docs/cost.json, the README's cost table
    python -m common.cost --measure  # also times each step on this machine: achieved FLOP/s
    python -m common.cost --readme   # only the README's cost table, from docs/cost.json (cheap)

``docs/cost.json`` is the machine-readable form: every row, and per notebook its total, the
FLOP rate measured here and the H100 estimate; the notebooks print their row from it
(:func:`describe`), so no notebook counts FLOPs itself.

Steps come from the profile tables in ``common`` (the notebooks' own settings); models whose
schedule is a wall-clock budget (05) are counted per epoch. The estimate is
``FLOPs / (utilisation × peak)`` with ``H100_BF16_DENSE`` the dense bf16 tensor-core peak of an
H100 SXM (989 TFLOP/s) and ``UTILISATION`` 0.30: an assumption, not a measurement; small
models (01–04) are bound by kernel launches, not FLOPs, and run far below it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from . import dae, gan, imbalanced_cifar, kingma, long_tailed, profiles, realnvp, resnet, runtime
from .results import atomic_write_bytes, write_generated_table

H100_BF16_DENSE = 989e12
UTILISATION = 0.30
COST_MD = runtime.REPO_ROOT / "docs" / "COST.md"
COST_JSON = runtime.COST_JSON
README_COST = runtime.README_COST   # the README's generated cost table (git_state ignores it)


@dataclass
class StepCost:
    notebook: str
    model: str
    flops_per_step: float
    steps: float
    unit: str = "steps of the full schedule"
    seconds_per_step_here: float | None = None

    @property
    def total(self) -> float:
        return self.flops_per_step * self.steps

    @property
    def h100_minutes(self) -> float:
        return self.total / (UTILISATION * H100_BF16_DENSE) / 60


def count(step: Callable[[], None], measure: bool = False) -> tuple[float, float | None]:
    """FLOPs of one call of ``step`` (after one warm-up call) and, if ``measure``, its seconds."""
    step()
    with FlopCounterMode(display=False) as fc:
        step()
    seconds = None
    if measure:
        t0 = time.perf_counter()
        step()
        seconds = time.perf_counter() - t0
    return float(fc.get_total_flops()), seconds


def _m1_step(hidden, z, batch, runs=1):
    m = kingma.M1(784, z, hidden, seeds=list(range(runs)))
    x = (torch.rand(runs, batch, 784) < 0.2).float()

    def step():
        loss = -m.elbo(x).mean(1).sum()
        m.zero_grad(set_to_none=True)
        loss.backward()
    return step


def _m2_step(hidden, runs, labelled, batch, x_dim=784, z=50):
    m = kingma.M2(x_dim, z, hidden, seeds=list(range(runs)))
    x = (torch.rand(runs, batch, x_dim) < 0.2).float()
    y = torch.randint(0, 10, (runs, labelled))

    def step():
        out = kingma.m2_objective(m, x[:, :labelled], y, x[:, labelled:], 100, 49_900, 50.0)
        m.zero_grad(set_to_none=True)
        out["loss"].sum().backward()
    return step


def _conv_step(model: torch.nn.Module, x: torch.Tensor, loss: Callable[[torch.Tensor], torch.Tensor]):
    def step():
        model.zero_grad(set_to_none=True)
        loss(model(x)).backward()
    return step


def full_profile_costs(measure: bool = False) -> list[StepCost]:
    """One row per model of every notebook's ``full`` profile."""
    torch.manual_seed(0)
    rows: list[StepCost] = []

    def add(nb, name, step, steps, unit="steps of the full schedule"):
        flops, sec = count(step, measure)
        rows.append(StepCost(nb, name, flops, steps, unit, sec))

    c1 = runtime.pick(profiles.CONFIGS_01, "full")
    per_epoch = c1["n_train"] // c1["batch"]
    add("01", f"M1 {c1['hidden']} z={c1['z']}, batch {c1['batch']}",
        _m1_step(c1["hidden"], c1["z"], c1["batch"]), c1["epochs"] * per_epoch * len(c1["seeds"]))
    add("01", f"2-D M1 {c1['hidden_2d']}", _m1_step(c1["hidden_2d"], 2, c1["batch"]),
        c1["epochs_2d"] * per_epoch)
    for nb, table in (("02", profiles.CONFIGS_02), ("03", profiles.CONFIGS_03)):
        c = runtime.pick(table, "full")
        if nb == "03":   # 03's M2 on M1 features: its own widths for N=100
            def hidden(n, c=c):
                return c["hidden_n100"] if n == 100 else c["hidden"]
        else:
            hidden = c["hidden"]
        for ns, (epochs, n_batches, per_l, per_u), widths in kingma.schedule_groups(c["schedule"], hidden):
            bl, bu = kingma.minibatch_shape(n_batches, max(ns), c["n_train"] - max(ns), per_l, per_u)
            runs = len(ns) * len(c["seeds"])
            x_dim = 784 if nb == "02" else c["z"]   # 03: on the active M1 dims, at most z (upper bound)
            what = "M2" if nb == "02" else f"M1+M2 (M2 on <= {c['z']} M1 dims; M1 shared with 01)"
            add(nb, f"{what} N={'/'.join(map(str, ns))}, {widths}: {runs} stacked runs, {bl}+{bu} per run",
                _m2_step(widths, runs, bl, bl + bu, x_dim=x_dim), epochs * n_batches)
    c4 = runtime.pick(profiles.CONFIGS_04, "full")
    da = dae.DenoisingAutoencoder()
    xb = torch.rand(20, 784)

    def da_step():
        logits = da.decode_logits(da.encode(xb))
        da.zero_grad(set_to_none=True)
        torch.nn.functional.binary_cross_entropy_with_logits(logits, xb, reduction="sum").backward()
    add("04", "dA 784-500 tied, batch 20 (c = 0 and 0.3)", da_step, 2 * c4["epochs"] * c4["n_train"] // 20)
    c5 = realnvp.CONFIGS["full"]
    for key, shape in (("mnist", (1, 28, 28)), ("cifar", (3, 32, 32))):
        mc = c5[f"{key}_model"]
        model = realnvp.RealNVP(shape, mc["scales"], mc["features"], mc["blocks"])
        xb = torch.randint(0, 256, (c5[f"{key}_batch"], *shape), dtype=torch.uint8)
        noise = torch.rand(xb.shape)

        def nvp_step(model=model, xb=xb, noise=noise):
            logp, _ = realnvp._logp_unchecked(model, xb, realnvp.ALPHA, noise)
            model.zero_grad(set_to_none=True)
            (-logp.mean()).backward()
        n = 60_000 if key == "mnist" else 50_000
        add("05", f"Real NVP {key}: {mc}, batch {c5[f'{key}_batch']}", nvp_step,
            n / c5[f"{key}_batch"], "steps per epoch (schedule is a time budget)")
    c6 = imbalanced_cifar.CONFIGS["full"]
    t = c6["train"]
    net = resnet.resnet18_cifar(width=t.width, blocks=t.blocks, stem_stride=t.stem_stride)
    xb = torch.randn(t.batch_size, 3, 32, 32)
    yb = torch.randint(0, 10, (t.batch_size,))
    n_train = sum(imbalanced_cifar.split_counts())
    add("06", f"ResNet-18 (width {t.width}), batch {t.batch_size}",
        _conv_step(net, xb, lambda out: torch.nn.functional.cross_entropy(out, yb)),
        t.epochs * math.ceil(n_train / t.batch_size) * len(c6["configs"]) * len(c6["seeds"]))
    c7 = gan.CONFIGS["full"]
    G, D = gan.Generator(c7["z_dim"], c7["ch"]), gan.Discriminator(c7["ch"])
    z = torch.randn(c7["batch_size"], c7["z_dim"])
    xr = torch.rand(c7["batch_size"], 1, 28, 28) * 2 - 1

    def gan_step():
        fake = G(z)
        D.zero_grad(set_to_none=True)
        gan.d_loss(D(xr), D(fake.detach())).backward()
        G.zero_grad(set_to_none=True)
        gan.g_loss(D(fake)).backward()
    add("07", f"DCGAN G+D (ch {c7['ch']}), batch {c7['batch_size']}", gan_step,
        (c7["dcgan_steps"] + c7["gan_steps"]) * len(c7["seeds"]), "steps (DCGAN + cGAN, all seeds)")
    c8 = long_tailed.CONFIGS["full"]
    t8 = c8["train"]
    net8 = resnet.resnet18_cifar(width=t8.width, blocks=t8.blocks, stem_stride=t8.stem_stride)
    xb8 = torch.randn(t8.batch_size, 3, 32, 32)
    yb8 = torch.randint(0, 10, (t8.batch_size,))
    runs = len(imbalanced_cifar.sweep_plan(c8["configs"], c8["seeds"], c8["key_configs"]))
    n_sel = long_tailed.replica_n_max(c8["n_max"], c8["val_held_out"])
    steps8 = sum(t8.epochs * (math.ceil(sum(long_tailed.lt_counts(f, c8["n_max"])) / t8.batch_size) * runs
                              + math.ceil(sum(long_tailed.lt_counts(f, n_sel)) / t8.batch_size)
                              * len(c8["selection_configs"]) * len(c8["selection_seeds"]))
                 for f in c8["factors"])
    add("08", f"ResNet-32 (width {t8.width}, blocks {t8.blocks}), batch {t8.batch_size}",
        _conv_step(net8, xb8, lambda out: torch.nn.functional.cross_entropy(out, yb8)), steps8,
        "steps of the full schedule (all factors, configs, seeds, selection runs)")
    return rows


def table(rows: list[StepCost]) -> str:
    lines = ["| notebook | model (full profile) | GFLOP/step | steps | total PFLOP | H100 minutes at "
             f"{UTILISATION:.0%} of bf16 peak | this CPU: s/step, GFLOP/s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        here = "—"
        if r.seconds_per_step_here:
            here = f"{r.seconds_per_step_here:.3f}, {r.flops_per_step / r.seconds_per_step_here / 1e9:.1f}"
        lines.append(f"| {r.notebook} | {r.model} | {r.flops_per_step / 1e9:.3g} | {r.steps:,.0f} ({r.unit}) "
                     f"| {r.total / 1e15:.3g} | {r.h100_minutes:.3g} | {here} |")
    return "\n".join(lines)


def full_tables_digest() -> str:
    """Digest of every notebook's ``full`` profile entry: ``docs/cost.json`` records it, so a
    notebook can tell when the table it was counted from has changed since (``make cost``)."""
    tables = {"01": profiles.CONFIGS_01, "02": profiles.CONFIGS_02, "03": profiles.CONFIGS_03,
              "04": profiles.CONFIGS_04, "05": realnvp.CONFIGS, "06": imbalanced_cifar.CONFIGS,
              "07": gan.CONFIGS, "08": long_tailed.CONFIGS}
    blob = json.dumps({nb: t["full"] for nb, t in tables.items()}, sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def per_notebook(rows: list[StepCost]) -> dict[str, dict[str, Any]]:
    """Per notebook: total PFLOP, H100 minutes, and the FLOP rate measured here (all its measured
    models' FLOPs over their seconds; ``None`` unless measured) with the hours the full profile
    would take at that rate."""
    out: dict[str, dict[str, Any]] = {}
    for nb in sorted({r.notebook for r in rows}):
        mine = [r for r in rows if r.notebook == nb]
        timed = [r for r in mine if r.seconds_per_step_here]
        rate = (sum(r.flops_per_step for r in timed) / sum(r.seconds_per_step_here for r in timed)
                if timed and len(timed) == len(mine) else None)
        total = sum(r.total for r in mine)
        out[nb] = {"models": [r.model for r in mine], "total_pflop": total / 1e15,
                   "h100_minutes": sum(r.h100_minutes for r in mine),
                   "cpu_gflop_per_s": None if rate is None else rate / 1e9,
                   "cpu_hours": None if rate is None else total / rate / 3600,
                   "per_epoch_only": any("per epoch" in r.unit for r in mine)}
    return out


def record(rows: list[StepCost], measured: bool) -> dict[str, Any]:
    """The content of ``docs/cost.json``."""
    return {"generated_by": "python -m common.cost" + (" --measure" if measured else ""),
            "commit": runtime.git_state()["commit"][:8], "full_tables": full_tables_digest(),
            "h100_bf16_dense_flops": H100_BF16_DENSE, "utilisation": UTILISATION,
            "cpu": runtime.cpu_info()["model"] if measured else None, "cpu_threads": 1,
            "rows": [{"notebook": r.notebook, "model": r.model, "flops_per_step": r.flops_per_step,
                      "steps": r.steps, "unit": r.unit, "total_flops": r.total,
                      "h100_minutes": r.h100_minutes, "seconds_per_step_here": r.seconds_per_step_here}
                     for r in rows],
            "notebooks": per_notebook(rows)}


def load(path: Any = None) -> dict[str, Any]:
    """``docs/cost.json`` (written by ``make cost``)."""
    path = COST_JSON if path is None else path
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing: run `make cost` (python -m common.cost --measure)")


def _g(v: float | None, unit: str = "") -> str:
    return "—" if v is None else f"{v:.3g}{unit}"


def describe(notebook: str, rec: dict[str, Any] | None = None) -> str:
    """A few lines for notebook ``notebook`` ("01"): its full profile's counted cost, the FLOP
    rate measured on the CPU named in ``docs/cost.json``, and the H100 estimate; says so when the
    full profile tables changed since the file was written."""
    rec = load() if rec is None else rec
    nb = rec["notebooks"].get(notebook)
    if nb is None:
        raise KeyError(f"docs/cost.json has no notebook {notebook!r} (has {sorted(rec['notebooks'])})")
    per = " per epoch" if nb["per_epoch_only"] else ""
    total = f"{nb['total_pflop']:.3g} PFLOP{per}" + (" (the schedule is a time budget)" if per else "")
    lines = [f"full profile of {notebook}: {total}, counted by FlopCounterMode "
             f"(forward + backward of one real step x steps) over {len(nb['models'])} model(s):"]
    lines += [f"  {r['model']}: {r['flops_per_step'] / 1e9:.3g} GFLOP/step x {r['steps']:,.0f} "
              f"{r['unit']}" for r in rec["rows"] if r["notebook"] == notebook]
    if nb["cpu_gflop_per_s"] is not None:
        lines.append(f"measured on {rec['cpu']} ({rec['cpu_threads']} thread): "
                     f"{nb['cpu_gflop_per_s']:.3g} GFLOP/s, i.e. about {nb['cpu_hours']:.3g} hours{per} there")
    else:
        lines.append("CPU FLOP rate: not measured (python -m common.cost --measure)")
    lines.append(f"one H100 at {rec['utilisation']:.0%} of its dense bf16 peak (an assumption): "
                 f"about {nb['h100_minutes']:.3g} minutes{per}")
    stale = rec.get("full_tables") != full_tables_digest()
    lines.append(f"(docs/cost.json, commit {rec['commit']}" + (
        "; the full profile tables changed since: run `make cost`)" if stale else ")"))
    return "\n".join(lines)


def readme_table(rec: dict[str, Any] | None = None) -> str:
    """The README's cost table (one row per notebook) from ``docs/cost.json``."""
    rec = load() if rec is None else rec
    cpu = rec.get("cpu") or "this CPU"
    lines = ["| notebook | full profile, total PFLOP | measured CPU FLOP rate (GFLOP/s) | "
             f"CPU hours at that rate | H100 minutes at {rec['utilisation']:.0%} of bf16 peak |",
             "|---|---|---|---|---|"]
    for nb, v in sorted(rec["notebooks"].items()):
        per = " per epoch" if v["per_epoch_only"] else ""
        lines.append(f"| {nb} | {v['total_pflop']:.3g}{per} | {_g(v['cpu_gflop_per_s'])} | "
                     f"{_g(v['cpu_hours'])}{per} | {v['h100_minutes']:.3g}{per} |")
    return (f"Generated from [`docs/cost.json`](docs/cost.json) by `{rec['generated_by']}` "
            f"(commit {rec['commit']}; CPU: {cpu}, {rec['cpu_threads']} thread; details in "
            f"[docs/COST.md](docs/COST.md)).\n\n" + "\n".join(lines))


def update_readme(readme: Any = None, rec: dict[str, Any] | None = None) -> bool:
    """Rewrite the README's cost table between :data:`README_COST`; returns whether it changed."""
    readme = runtime.REPO_ROOT / "README.md" if readme is None else readme
    return write_generated_table(readme, readme_table(rec), README_COST)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--measure", action="store_true", help="also time one step of each model here")
    ap.add_argument("--readme", action="store_true",
                    help="only rewrite the README's cost table from docs/cost.json")
    args = ap.parse_args(argv)
    if args.readme:
        update_readme()
        return 0
    runtime.set_threads(1, torch.device("cpu"))
    rows = full_profile_costs(args.measure)
    cpu = runtime.cpu_info()
    text = ("# What the full profile costs\n\nGenerated by `python -m common.cost"
            + (" --measure" if args.measure else "") + "` (see its docstring for what is counted and "
            "the H100 assumption). FLOPs counted by `torch.utils.flop_counter.FlopCounterMode` on one "
            "real step (forward + backward); optimiser updates excluded. "
            + (f"Step times measured on {cpu['model']} with 1 thread. " if args.measure else "")
            + f"Commit {runtime.git_state()['commit'][:8]}.\n\n" + table(rows) + "\n")
    atomic_write_bytes(COST_MD, text.encode())
    rec = record(rows, args.measure)
    atomic_write_bytes(COST_JSON, (json.dumps(rec, indent=1) + "\n").encode())
    update_readme(rec=rec)
    print(text)
    print(readme_table(rec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
