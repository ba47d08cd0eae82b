"""Single-seed probes of M1+M2 settings (docs/M2_PROBES.md): notebook 03's M1+M2 code path
(:func:`common.kingma.m2_schedule` on the active M1 features, Gaussian likelihood) for one N and
one label draw, with some of the cpu profile's settings overridden; prints the validation
accuracy along the way and, for the same draw, that of M1+SVC.

Not a notebook result: a quick way to compare settings before spending notebook 03's budget.
Needs a trained M1 checkpoint (notebook 01 or 03, cpu profile: ``checkpoints/kingma_m1_600x600_
cpu_cpu.pt``); its parameters are loaded whatever code wrote them.

    python -m tools.m1m2_probe --m1 checkpoints/kingma_m1_600x600_cpu_cpu.pt --n 3000 --labelled-weight 1
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from common import data, kingma, profiles
from common.training import load_checkpoint


def main(argv: list[str] | None = None) -> int:
    cfg = profiles.CONFIGS_03["cpu"]
    ap = argparse.ArgumentParser(prog="python -m tools.m1m2_probe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--m1", required=True, help="M1 checkpoint (notebook 01/03, cpu profile)")
    ap.add_argument("--n", type=int, default=3000, help="labelled points (balanced draw)")
    ap.add_argument("--seed", type=int, default=0, help="label draw")
    ap.add_argument("--epochs", type=int, default=None, help="default: the cpu profile's for N")
    ap.add_argument("--batches", type=int, default=None, help="minibatches per epoch")
    ap.add_argument("--labelled", type=int, default=None, help="labelled points per minibatch")
    ap.add_argument("--labelled-weight", type=float, default=cfg["labelled_weight"])
    ap.add_argument("--alpha", type=float, default=None, help="default: the cpu profile's for N")
    ap.add_argument("--lr", type=float, default=cfg["lr"])
    ap.add_argument("--lr-schedule", default=cfg["lr_schedule"])
    ap.add_argument("--hidden", type=int, default=None, help="default: the cpu profile's for N")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    # an N outside the profile takes the largest N's schedule
    epochs, n_batches, per_l, per_u = cfg["schedule"].get(a.n) or cfg["schedule"][max(cfg["schedule"])]
    sched = (a.epochs or epochs, a.batches or n_batches, a.labelled or per_l, per_u)
    hidden = (a.hidden,) if a.hidden else (cfg["hidden_n100"] if a.n == 100 else cfg["hidden"])
    alpha = a.alpha if a.alpha is not None else kingma.alpha_for(cfg["alpha"], a.n)

    x, y = data.load_mnist("train")
    xv, yv = data.load_mnist("valid")
    m1 = kingma.M1(784, 50, cfg["m1_hidden"], seeds=cfg["m1_seeds"])   # 01's stacked M1s; features: the first
    m1.load_state_dict(load_checkpoint(a.m1)["model"])
    (mu, lv), (mu_v, _) = kingma.m1_posterior(m1, x), kingma.m1_posterior(m1, xv)
    active = kingma.select_active_dims(mu[0], cfg["active_std"])
    f, lv, fv = mu[0][:, active].contiguous(), lv[0][:, active].contiguous(), mu_v[0][:, active].contiguous()
    svc = profiles.svc_errors(f, y, fv, yv, [a.n], [a.seed])[0][a.n][0]

    t0 = time.perf_counter()
    r = kingma.m2_schedule(f, y, fv, yv, fv, yv, schedule={a.n: sched}, hidden=hidden,
                           seeds=[a.seed], z_dim=cfg["z"], lr=a.lr, alpha_factor=cfg["alpha_factor"],
                           alpha=alpha, weighting=cfg["weighting"], labelled_weight=a.labelled_weight,
                           lr_schedule=a.lr_schedule, eval_every=1, likelihood="gaussian",
                           x_logvar=lv, desc="probe")[a.n]
    acc = [round(100 * v, 2) for v in r["valid_acc"][0]]
    print(json.dumps({"n": a.n, "seed": a.seed, "schedule": sched, "hidden": hidden,
                      "labelled_weight": a.labelled_weight, "alpha": alpha, "lr": a.lr,
                      "active_dims": len(active), "seconds": round(time.perf_counter() - t0, 1),
                      "valid_acc_curve": acc, "valid_acc": acc[-1],
                      "m1_svc_valid_acc": round(100 - svc, 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
