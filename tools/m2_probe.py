"""Single-seed probes of the M2 objective's weighting (docs/M2_PROBES.md): train one M2 run on
MNIST for a fixed number of steps and print the validation accuracy of q(y|x) and of the
generative classifier argmax_y ELBO(x, y) along the way.

Not a notebook result: a quick, reproducible way to compare settings before spending a
notebook's budget on them. Minibatches are drawn with replacement (the notebooks' ``train_m2``
permutes); the objective is :func:`common.kingma.step_objective` (eq. 9 or the minibatch means).

    python -m tools.m2_probe --n 100 --labelled-weight 0.2 --alpha 50 --steps 3000
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from common import data, kingma
from common.training import lr_factor


@torch.no_grad()
def generative_accuracy(model: kingma.M2, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of argmax_y [log p(x|y, z=mu) - KL(q(z|x,y) || p(z))] (z at the posterior mean)."""
    mu, logvar = model.encode(x[None], None)                       # [1, B, K, Z]
    score = model.log_px(model.decode(mu, None), x[None, :, None]) - kingma.gaussian_kl(mu, logvar)
    return float((score[0].argmax(-1) == y).float().mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.m2_probe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="labelled points (balanced draw)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--lr-schedule", default="cosine")
    ap.add_argument("--labelled", type=int, default=100, help="labelled points per minibatch")
    ap.add_argument("--unlabelled", type=int, default=100, help="unlabelled points per minibatch")
    ap.add_argument("--weighting", default="mean", choices=["mean", "paper"])
    ap.add_argument("--labelled-weight", type=float, default=1.0)
    ap.add_argument("--alpha", type=float, default=50.0)
    ap.add_argument("--no-unlabelled", action="store_true", help="labels-only baseline")
    ap.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed + 123)
    x, y = data.load_mnist("train")
    xv, yv = data.load_mnist("valid")
    lab = kingma.labelled_subsets(y, a.n, [a.seed])[0]
    mask = torch.ones(len(x), dtype=torch.bool)
    mask[lab] = False
    pool = torch.nonzero(mask).flatten()
    model = kingma.M2(784, 50, (500,), 10, [a.seed])
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    objective = kingma.step_objective(model, a.n, len(pool), a.alpha, a.weighting, amp=a.amp,
                                      labelled_weight=a.labelled_weight)
    t0, row = time.perf_counter(), {}
    for k in range(a.steps):
        for g in opt.param_groups:
            g["lr"] = a.lr * lr_factor(a.lr_schedule, k, k / a.steps)
        li = lab[torch.randint(len(lab), (a.labelled,))]
        xl, yl = torch.bernoulli(x[li])[None], y[li][None]
        xu = None if a.no_unlabelled else torch.bernoulli(x[pool[torch.randint(len(pool), (a.unlabelled,))]])[None]
        out = objective(xl, yl, xu)
        opt.zero_grad(set_to_none=True)
        out["loss"].sum().backward()
        opt.step()
        if (k + 1) % a.eval_every == 0 or k + 1 == a.steps:
            model.eval()
            row = {"step": k + 1, "valid_acc": round(100 * float(kingma.classifier_accuracy(model, xv, yv)[0]), 2),
                   "generative_acc_2000": None if a.no_unlabelled else
                   round(100 * generative_accuracy(model, xv[:2000], yv[:2000]), 2),
                   "seconds": round(time.perf_counter() - t0)}
            model.train()
            print(json.dumps(row), flush=True)
    print("final", json.dumps({**vars(a), **row,
                               "ms_per_step": round(1000 * (time.perf_counter() - t0) / a.steps, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
