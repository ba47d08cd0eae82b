"""Single-seed probes of notebook 07's unconditional DCGAN (docs/GAN_PROBES.md): train one
DCGAN on MNIST with 07's cpu settings, one lever changed, and print along the way what 07's
tests 4-6 measure: the recognisable fraction of 1,000 samples at fixed noise (confidence >= 0.9
of 07's classifier), the coverage KL of their labels, and the latent arithmetic's digit kept at
alpha = 1 (07's averaged-exemplar ink vector, 2,000 exemplars, 200 starts).

Not a notebook result: a quick, reproducible way to compare levers before spending 07's budget
on them, on a seed 07 does not report (default 3). Levers not in ``common.gan.train_gan`` are
applied here, scoped to the run: D's own learning rate (two time-scale updates, Heusel et al.
2017), one-sided label smoothing of D's real targets (Salimans et al. 2016), and an exponential
moving average of G's weights (Karras et al. 2018; its BN statistics re-estimated on 10,000
samples before evaluation), reported beside G itself.

    python -m tools.gan_probe --steps 8000 --batch 128 --ema 0.999
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from unittest import mock

import torch
import torch.nn.functional as F

from common import data, gan, gen_eval, runtime


@torch.no_grad()
def with_fresh_bn_stats(G: gan.Generator, n: int = 10_000, batch: int = 500, seed: int = 999) -> gan.Generator:
    """A copy of ``G`` whose batch-norm running statistics are the plain average over ``n``
    samples of fresh noise (not the training run's momentum average), in eval mode."""
    m = copy.deepcopy(G)
    for mod in m.modules():
        if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            mod.reset_running_stats()
            mod.momentum = None
    m.train()
    g = torch.Generator().manual_seed(seed)
    for _ in range(n // batch):
        m(gan.sample_noise(batch, m.z_dim, g).to(next(m.parameters()).device))
    return m.eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.gan_probe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=3, help="07 reports seeds 0-2: probe others")
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--ch", type=int, default=32, help="G and D width")
    ap.add_argument("--lr", type=float, default=2e-4, help="G's Adam learning rate (and D's)")
    ap.add_argument("--lr-d", type=float, default=None, help="D's learning rate (default: --lr)")
    ap.add_argument("--real-label", type=float, default=1.0, help="D's target on real digits (< 1: smoothing)")
    ap.add_argument("--ema", type=float, default=0.0, help="decay of an EMA of G's weights (0: none)")
    ap.add_argument("--eval-every", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the evaluations here")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    dev = torch.device("cpu")
    cfg = gan.CONFIGS["cpu"]
    amp, mf = runtime.resolve_amp(cfg["amp"], dev), runtime.memory_format(cfg["channels_last"], dev)
    x, y = data.load_mnist("train")
    xtr, ytr = gen_eval.as_images(x[: cfg["n_train"]]), y[: cfg["n_train"]]
    clf, _ = gen_eval.cached_classifier(xtr, ytr, gan.classifier_config(cfg),   # 07's classifier and cache
                                        gen_eval.checkpoint_dir("07_vae_vs_gan", "cpu"))
    predict = lambda xs: gen_eval.predict(clf, xs)

    torch.manual_seed(a.seed)
    G = gan.Generator(cfg["z_dim"], a.ch).to(dev, memory_format=mf)
    D = gan.Discriminator(a.ch).to(dev, memory_format=mf)
    ema = copy.deepcopy(G) if a.ema else None
    lr_d = a.lr if a.lr_d is None else a.lr_d

    def adam(model, lr, betas, fused):
        opt = torch.optim.Adam(model.parameters(), lr=a.lr if model is G else lr_d, betas=betas, fused=fused)
        if model is G and ema is not None:
            def average(*_):
                with torch.no_grad():
                    for pe, p in zip(ema.parameters(), G.parameters()):
                        pe.lerp_(p, 1 - a.ema)
            opt.register_step_post_hook(average)
        return opt

    def d_loss(real_logits, fake_logits):
        return (F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, a.real_label))
                + F.softplus(fake_logits).mean())

    z = gan.sample_noise(1000, cfg["z_dim"], torch.Generator().manual_seed(1234))
    z_pool = gan.sample_noise(cfg["n_arith"], cfg["z_dim"], torch.Generator().manual_seed(77))
    z_start = gan.sample_noise(200, cfg["z_dim"], torch.Generator().manual_seed(78))
    alphas = torch.linspace(0, 1.5, 7)

    def measure(model):
        xs = gan.generate(model, z)
        walk = gan.exemplar_walk(model, predict, gen_eval.ink, z_pool, z_start, alphas)
        return {"recognisable": round(gen_eval.confident_fraction(clf, xs), 3),
                "coverage_kl": round(gen_eval.coverage_kl(gen_eval.class_histogram(predict(xs))), 4),
                "kept_at_1": round(walk["kept"][alphas.tolist().index(1.0)], 3)}

    evals = []

    def on_eval(step):
        row = {"step": step, "G": measure(G)}
        if ema is not None:
            row["G_ema"] = measure(with_fresh_bn_stats(ema))
        evals.append(row)
        print(json.dumps(row), flush=True)
        return {}

    t0 = time.perf_counter()
    with mock.patch.object(gan, "adam", adam), mock.patch.object(gan, "d_loss", d_loss):
        hist = gan.train_gan(G, D, (xtr * 2 - 1).contiguous(memory_format=mf), steps=a.steps,
                             batch_size=a.batch, lr=a.lr, betas=cfg["betas"], seed=a.seed,
                             eval_every=a.eval_every, on_eval=on_eval, memory_format=mf, amp=amp)
    out = {"args": vars(a), "cpu": runtime.cpu_info()["model"], "amp": amp,
           "channels_last": mf == torch.channels_last, "torch": torch.__version__,
           "training_seconds": round(sum(hist.log.seconds), 1),
           "wall_seconds": round(time.perf_counter() - t0, 1), "evals": evals}
    print(json.dumps({k: v for k, v in out.items() if k != "evals"}))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
