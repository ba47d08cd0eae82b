"""Profile tables of notebooks 01–04 (one ``{profile: {key: value}}`` table per notebook, read
with :func:`common.runtime.pick`), the checkpoint names of the Kingma et al. notebooks, and a
short printed summary of the active profile.

Notebook 06 keeps its table beside its training code (:data:`common.imbalanced_cifar.CONFIGS`).
The tables live here, not in :mod:`common.kingma`, because that module's source is hashed into
every Kingma checkpoint (:func:`common.kingma.code_hash`): settings tables can change without
invalidating trained models.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .runtime import REPO_ROOT, is_reduced, show_path  # noqa: F401  (show_path: for the notebooks)
from .runtime import checkpoint_root, dryrun_of
from .training import WSD_DECAY_FRACTION

# M1+SVC label draws (seeds of :func:`common.kingma.labelled_subsets`), shared by 01 and 03 so
# that both report the same M1+SVC numbers for the same M1.
SVC_DRAWS: dict[str, list[int]] = {"smoke": [0, 1, 2], "cpu": [0, 1, 2], "full": [0, 1, 2, 3, 4]}

# 01 · M1. seeds: the M1 initialisations, trained together as stacked runs; the first is the M1
# of the figures, of test 1 and of M1+TSVM, and 03 reuses the whole checkpoint (its m1_* settings
# and m1_seeds must stay equal); the others give M1+SVC's spread over M1 seeds (3 seeds since
# 2026-12-06, 1 before). cpu: 40 epochs (the validation ELBO still rose ~0.25 nats per epoch at
# 20), on both cores (threads None; renders run one at a time; 1 thread before 2026-12-06).
CONFIGS_01: dict[str, dict[str, Any]] = {
    "smoke": {"n_train": 2000, "n_valid": 500, "n_test": 1000, "hidden": (64, 64), "z": 50,
              "epochs": 2, "batch": 100, "lr": 1e-3, "eval_every": 1,
              "hidden_2d": (64, 64), "epochs_2d": 2, "lr_2d": 1e-3, "grid": 8,
              "n_labels": [100], "draws": SVC_DRAWS["smoke"], "seeds": [0, 1], "threads": 1,
              "active_std": 0.001, "tsvm_n_labels": [100], "tsvm_unlabelled": 300},
    "cpu": {"n_train": 50000, "n_valid": 10000, "n_test": 10000, "hidden": (600, 600), "z": 50,
            "epochs": 40, "batch": 100, "lr": 1e-3, "eval_every": 4,
            "hidden_2d": (500, 500), "epochs_2d": 10, "lr_2d": 1e-3, "grid": 20,
            "n_labels": [100, 600, 1000, 3000], "draws": SVC_DRAWS["cpu"], "seeds": [0, 1, 2],
            "threads": None, "active_std": 0.1, "tsvm_n_labels": [100, 600, 1000, 3000],
            "tsvm_unlabelled": 5000},
    "full": {"n_train": 50000, "n_valid": 10000, "n_test": 10000, "hidden": (600, 600), "z": 50,
             "epochs": 3000, "batch": 100, "lr": 3e-4, "eval_every": 50,
             "hidden_2d": (500, 500), "epochs_2d": 1000, "lr_2d": 3e-4, "grid": 20,
             "n_labels": [100, 600, 1000, 3000], "draws": SVC_DRAWS["full"], "seeds": [0, 1, 2],
             "threads": None, "active_std": 0.1, "tsvm_n_labels": [100, 600, 1000, 3000],
             "tsvm_unlabelled": 10_000},
}
# tsvm_n_labels / tsvm_unlabelled: the N at which M1+TSVM (Joachims 1999, common.tsvm) runs and
# how many unlabelled training features it sees per draw (the paper: all 50,000; cpu: 5,000 at
# every N since 2026-12-06, N = 100 only before; its time is printed by notebook 01).

# 02 · M2. Per N: (epochs, minibatches per epoch, labelled per minibatch or None for the paper's
# ceil(N / minibatches), unlabelled per minibatch or None for N_u / minibatches, i.e. every
# unlabelled point once per epoch). N with equal schedules train as one stacked model.
# cost_steps: optimiser steps timed per stacked model to estimate the paper's schedule here.
CONFIGS_02: dict[str, dict[str, Any]] = {
    "smoke": {"n_train": 2000, "n_valid": 500, "n_test": 1000, "hidden": (32,), "z": 50,
              "lr": 1e-3, "alpha_factor": 0.1, "alpha": 50.0, "labelled_weight": 0.2, "seeds": [0, 1],
              "schedule": {100: (2, 4, 5, None), 600: (1, 4, None, None), 1000: (1, 4, None, None)},
              "eval_every": 1,
              "sup_hidden": (32, 32), "sup_epochs": 1, "sup_batches": 4,
              "sty_hidden": (32,), "sty_epochs": 1, "grid": 6, "threads": 1,
              "weighting": "mean", "lr_schedule": "cosine", "paper_objective": True,
              "eq9_long": {"schedule": (2, 4, 1, None), "lr": 3e-4, "lr_schedule": "constant"},
              "compile": None, "amp": "auto", "cost_steps": 1},
    # cpu: labelled terms as minibatch means weighted labelled_weight = 0.2 against the unlabelled
    # mean, with a fixed alpha = 50 for every N (a deviation from eq. 9; the paper's objective
    # runs beside it on the same budget, first seed), Adam 3e-3 decayed along a cosine to 0 over
    # the run; bfloat16 autocast where the CPU has native bfloat16 ("auto": AVX-512 BF16 / AMX).
    # alpha_factor: the paper's alpha of that beside-run. Optimiser steps: 9,000 at N = 100,
    # 3,000 at N = 600 / 1000 and 5,000 at N = 3000, where M2's lead over labels only still grows
    # with the steps (docs/M2_PROBES.md), on both cores (threads 2): notebooks render one at a
    # time (03 reads 02's results), and one M2 step takes 73 ms on 2 threads against 146 ms on
    # 1 (3 stacked runs, bfloat16). Five label draws per N (0-4, as the full profile), so that
    # each N's paired M2 - labels-only interval rests on 5 differences (3 before 2026-12-05;
    # the notebook may take up to an hour for this).
    "cpu": {"n_train": 50000, "n_valid": 10000, "n_test": 10000, "hidden": (500,), "z": 50,
            "lr": 3e-3, "alpha_factor": 0.1, "alpha": 50.0, "labelled_weight": 0.2, "seeds": [0, 1, 2, 3, 4],
            "schedule": {100: (90, 100, 100, 100), 600: (30, 100, 100, 50),
                         1000: (30, 100, 100, 50), 3000: (50, 100, 100, 50)}, "eval_every": 1,
            # the fully labelled M2 of the analogies: 30 passes over the 50,000 labels (3 before
            # 2026-12-05 gave 4.26 % test error, its validation error still falling; ~100 s)
            "sup_hidden": (500, 500), "sup_epochs": 30, "sup_batches": 100,
            "sty_hidden": (500,), "sty_epochs": 10, "grid": 10, "threads": 2,
            "weighting": "mean", "lr_schedule": "cosine", "paper_objective": True,
            # eq9_long: the paper's objective with its optimiser settings and minibatch shape
            # (sec. 4 / the full profile: Adam 3e-4 constant, 100 minibatches of 1 labelled + 499
            # unlabelled points per epoch), first label draw, for as many epochs as the hour
            # leaves (the rest of the notebook takes ~39 min; one epoch of this run measured
            # 7.0 s, bf16, 2 threads, so 120 epochs ~14 min): is eq. 9 slow or does it fail?
            # The render of 2026-12-06 measured 8.5 s an epoch (16.9 min) on a host that ran the
            # reported M2 1.23x slower than the day before: the notebook took 69.7 min, over its hour.
            # Since 2026-12-06 (later) 80 epochs (8,000 steps, ~11 min at 8.5 s), so that the
            # notebook fits its hour on the slower hosts too (docs/M2_PROBES.md).
            "eq9_long": {"schedule": (80, 100, 1, None), "lr": 3e-4, "lr_schedule": "constant"},
            "compile": None, "amp": "auto", "cost_steps": 3},
    "full": {"n_train": 50000, "n_valid": 10000, "n_test": 10000, "hidden": (500,), "z": 50,
             "lr": 3e-4, "alpha_factor": 0.1, "alpha": None, "labelled_weight": 1.0,
             "seeds": [0, 1, 2, 3, 4],
             "schedule": {100: (3000, 100, 1, None), 600: (3000, 200, None, None),
                          1000: (3000, 200, None, None), 3000: (3000, 200, None, None)},
             "eval_every": 10, "sup_hidden": (500, 500), "sup_epochs": 1000, "sup_batches": 500,
             "sty_hidden": (500,), "sty_epochs": 1000, "grid": 10, "threads": None,
             "weighting": "paper", "lr_schedule": "constant", "paper_objective": False,
             "eq9_long": None,   # the reported M2 is eq. 9 with the paper's settings
             # the step's ~hundreds of small kernels as one CUDA graph; float32 (amp: bfloat16)
             "compile": "reduce-overhead", "amp": False, "cost_steps": 20},
}

# 03 · M1+M2. M1 settings (m1_*, m1_seeds) equal notebook 01's, so its checkpoint is reused when
# present; M1+M2 and M1+SVC use the first M1 seed's features. schedule: as in CONFIGS_02. seeds
# are the label draws of M1+M2 and of M1+SVC: SVC_DRAWS in smoke and full, draws 0-4 in cpu
# since 2026-12-06 (3 before; 01's M1+SVC / M1+TSVM draws 0-2 are the first three of them).
CONFIGS_03: dict[str, dict[str, Any]] = {
    "smoke": {"n_train": 2000, "n_valid": 500, "n_test": 1000,
              "m1_hidden": (64, 64), "m1_epochs": 2, "m1_batch": 100, "m1_lr": 1e-3,
              "m1_seeds": CONFIGS_01["smoke"]["seeds"],
              "active_std": 0.001, "seeds": SVC_DRAWS["smoke"], "hidden_n100": (16,),
              "hidden": (24,), "z": 50, "lr": 1e-3, "alpha_factor": 0.1,
              "alpha": {100: 50.0, 600: 50.0, 1000: 10.0},   # per N, as in cpu
              "labelled_weight": 0.2,
              "schedule": {100: (2, 4, 5, None), 600: (1, 4, None, None), 1000: (1, 4, None, None)},
              "eval_every": 1, "m2_fallback_train": True, "m2_hidden": (16,),
              "m2_schedule": {100: (1, 4, 5, None), 600: (1, 4, None, None), 1000: (1, 4, None, None)},
              "weighting": "mean", "lr_schedule": "wsd", "compile": None, "amp": False,
              "threads": 1, "cost_steps": 1},
    "cpu": {"n_train": 50000, "n_valid": 10000, "n_test": 10000,
            "m1_hidden": (600, 600), "m1_epochs": 40, "m1_batch": 100, "m1_lr": 1e-3,
            "m1_seeds": CONFIGS_01["cpu"]["seeds"],
            "active_std": 0.1, "seeds": [0, 1, 2, 3, 4], "hidden_n100": (300,),
            "hidden": (500,), "z": 50, "lr": 3e-3, "alpha_factor": 0.1,
            # alpha 10 at N = 3000: there M1+M2 ties M1+SVC, and a weaker pull of the labels
            # measured +0.31 / -0.02 validation points on two draws, 36 epochs +0.10 more
            # (docs/M2_PROBES.md, tools/m1m2_probe.py)
            "alpha": {100: 50.0, 600: 50.0, 1000: 50.0, 3000: 10.0},
            "labelled_weight": 0.2,
            # 60, 24 and 36 epochs on both cores (threads 2; a step is 1.5-1.7x faster than on
            # one) fill the 40-minute budget with 01's M1 reused;
            # "wsd": constant 3e-3, then linear to 0 over the last 20 % of the epochs; the M2
            # objective weighted as in notebook 02's cpu profile (minibatch means, labelled terms
            # x 0.2, a fixed alpha per N; alpha_factor unused)
            "schedule": {100: (60, 500, 100, 100), 600: (24, 500, 100, 100),
                         1000: (24, 500, 100, 100), 3000: (36, 500, 100, 100)}, "eval_every": 1,
            "m2_fallback_train": False, "m2_hidden": (500,), "m2_schedule": {},
            # amp "auto" (since 2026-12-06; float32 before): bfloat16 autocast of the networks
            # where the CPU has native bf16, as 02's cpu profile. Measured through m2_groups, 5
            # draws, 2 threads, one epoch of 100 steps: 40.6 -> 26.6 ms a step at N = 100,
            # 103 -> 80 at N = 600 + 1000, 51 -> 45 at N = 3000 (about 43 min of training for 5
            # draws, where float32 would take about 60)
            "weighting": "mean", "lr_schedule": "wsd", "compile": None, "amp": "auto",
            "threads": 2, "cost_steps": 3},
    "full": {"n_train": 50000, "n_valid": 10000, "n_test": 10000,
             "m1_hidden": (600, 600), "m1_epochs": 3000, "m1_batch": 100, "m1_lr": 3e-4,
             "m1_seeds": CONFIGS_01["full"]["seeds"],
             "active_std": 0.1, "seeds": SVC_DRAWS["full"], "hidden_n100": (300,),
             "hidden": (500,), "z": 50, "lr": 3e-4, "alpha_factor": 0.1, "alpha": None,
             "labelled_weight": 1.0, "schedule": {100: (3000, 100, 1, None), 600: (3000, 200, None, None),
                          1000: (3000, 200, None, None), 3000: (3000, 200, None, None)},
             "eval_every": 10, "m2_fallback_train": True, "m2_hidden": (500,),
             "m2_schedule": {100: (3000, 100, 1, None), 600: (3000, 200, None, None),
                             1000: (3000, 200, None, None), 3000: (3000, 200, None, None)},
             "weighting": "paper", "lr_schedule": "constant", "compile": "reduce-overhead",
             "amp": False, "threads": None, "cost_steps": 20},
}

# 04 · denoising autoencoder: images, epochs, probe: train images, L-BFGS iterations. The
# tutorial's own settings (784-500, lr 0.1, batch 20, c = 0 / 0.3, seed 123) are TUTORIAL_04.
CONFIGS_04: dict[str, dict[str, Any]] = {
    "smoke": dict(n_train=1_000, epochs=2, probe_train=1_000, probe_iter=50, seeds=[123, 124]),
    "cpu": dict(n_train=50_000, epochs=15, probe_train=50_000, probe_iter=300, seeds=[123, 124, 125]),
    "full": dict(n_train=50_000, epochs=15, probe_train=50_000, probe_iter=300, seeds=[123, 124, 125]),
}
# seeds: initialisation and noise seeds of the dA runs behind the claims' intervals; the first is
# the tutorial's 123 (the one the figures show).
TUTORIAL_04: dict[str, Any] = dict(n_hidden=500, lr=0.1, batch_size=20, levels=(0.0, 0.3), seed=123)

# dryrun (make dryrun): each full entry with these caps on epochs, steps and evaluation sizes, and
# nothing else changed (tests/test_dryrun.py). M2 schedules keep the full minibatch shapes, made
# explicit: (epochs, minibatches, labelled, unlabelled) = N=100: 1 + 499 per minibatch, the
# N=600/1000/3000 group: 15 + 235; N=100 gets 2 epochs of 1 step so that the dry run can stop it
# between them (SEGMENT_SECONDS) and resume it. M1 and the dA loop over the whole training set
# per epoch (500 and 2,500 steps): one epoch each.
_DRY_SCHEDULE = {100: (2, 1, 1, 499), 600: (1, 2, 15, 235), 1000: (1, 2, 15, 235), 3000: (1, 2, 15, 235)}
SVC_DRAWS["dryrun"] = SVC_DRAWS["full"]
CONFIGS_01["dryrun"] = dryrun_of(CONFIGS_01["full"], n_valid=1000, n_test=1000, epochs=1,
                                 eval_every=1, epochs_2d=1, tsvm_n_labels=[100], tsvm_unlabelled=500)
CONFIGS_02["dryrun"] = dryrun_of(CONFIGS_02["full"], n_valid=1000, n_test=1000,
                                 schedule=_DRY_SCHEDULE, eval_every=1, sup_epochs=1, sty_epochs=1,
                                 cost_steps=1)
CONFIGS_03["dryrun"] = dryrun_of(CONFIGS_03["full"], n_valid=1000, n_test=1000, m1_epochs=1,
                                 schedule=_DRY_SCHEDULE, eval_every=1, m2_schedule=_DRY_SCHEDULE,
                                 cost_steps=1)
CONFIGS_04["dryrun"] = dryrun_of(CONFIGS_04["full"], epochs=1, probe_train=2_000, probe_iter=50)


def kingma_checkpoint(name: str, profile: str, device: torch.device | str) -> Path | None:
    """Checkpoint path of a Kingma et al. model (resumable long runs) shared by 01–03:
    ``checkpoints/kingma_<name>_<profile>_<device type>.pt`` (the folder:
    :func:`common.runtime.checkpoint_root`); ``None`` in the smoke profile, so CI always trains."""
    if profile == "smoke":
        return None
    kind = device.type if isinstance(device, torch.device) else torch.device(device).type
    return checkpoint_root(profile) / f"kingma_{name}_{profile}_{kind}.pt"


def svc_errors(f_train: torch.Tensor, y_train: torch.Tensor, f_test: torch.Tensor,
               y_test: torch.Tensor, n_labels: Sequence[int], draws: Sequence[int]
               ) -> tuple[dict[int, list[float]], dict[int, float]]:
    """M1+SVC (or, with pixels as features, a raw-pixel SVC) for notebooks 01 and 03 alike: for
    every N, the test errors (%) of :func:`common.kingma.feature_classifier_errors` over the
    balanced label draws ``draws`` (:func:`common.kingma.labelled_subsets`), and its seconds."""
    import time

    from .kingma import feature_classifier_errors, labelled_subsets

    errors, seconds = {}, {}
    for n in n_labels:
        t0 = time.perf_counter()
        lab = labelled_subsets(y_train.cpu(), n, draws)
        errors[n] = feature_classifier_errors(f_train, y_train, lab, f_test, y_test)
        seconds[n] = round(time.perf_counter() - t0, 2)
    return errors, seconds


def tsvm_errors(f_train: torch.Tensor, y_train: torch.Tensor, f_test: torch.Tensor,
                y_test: torch.Tensor, n_labels: Sequence[int], draws: Sequence[int],
                n_unlabelled: int | None = None, **kw: Any
                ) -> tuple[dict[int, list[float]], dict[int, float]]:
    """M1+TSVM, the paper's baseline (Kingma et al. 2014, Table 1), for notebooks 01 and 03: as
    :func:`svc_errors` (same balanced label draws ``draws``, RBF kernel, ``C = 10``; ``gamma``
    "scale" over labelled and unlabelled features together), but
    each draw's classifier is the one-vs-rest transductive SVM of Joachims (1999),
    :func:`common.tsvm.feature_tsvm_errors`, trained on the labelled features plus
    ``n_unlabelled`` other training features (``None``: :data:`common.tsvm.N_UNLABELLED`; a
    subsample seeded by the draw's seed; ``len(f_train)``: all of them); ``kw`` goes to
    :func:`common.tsvm.tsvm_ovr`. Returns the test errors (%) per N and the seconds per N."""
    import time

    from .kingma import labelled_subsets
    from .tsvm import N_UNLABELLED, feature_tsvm_errors

    n_unl = N_UNLABELLED if n_unlabelled is None else n_unlabelled
    errors, seconds = {}, {}
    for n in n_labels:
        t0 = time.perf_counter()
        lab = labelled_subsets(y_train.cpu(), n, draws)
        errors[n], _ = feature_tsvm_errors(f_train, y_train, lab, f_test, y_test,
                                           n_unlabelled=n_unl, seeds=draws, **kw)
        seconds[n] = round(time.perf_counter() - t0, 2)
    return errors, seconds


def _short(v: Any) -> str:
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k}: {_short(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(_short(x) for x in v) + ")" if isinstance(v, tuple) else \
            "[" + ", ".join(_short(x) for x in v) + "]"
    return f"{v:g}" if isinstance(v, float) else str(v)


# settings whose code name would mean nothing to a reader of the rendered page
_WORDS = {("lr_schedule", "wsd"): f"(constant, then linear to 0 over the last {WSD_DECAY_FRACTION:.0%})"}


def summary(cfg: Mapping[str, Any], profile: str, keys: Sequence[str], reduced: bool | None = None,
            width: int = 96) -> str:
    """A few lines naming the active profile, whether it is reduced, and ``keys`` of ``cfg``
    (``key=value``, wrapped at ``width``); unknown keys raise a ``KeyError`` naming them."""
    unknown = [k for k in keys if k not in cfg]
    if unknown:
        raise KeyError(f"summary keys {unknown} not in the config (has {sorted(cfg)})")
    red = is_reduced(profile) if reduced is None else reduced
    lines = [f"profile {profile}: " + ("reduced (a smaller budget than the paper's: the verdict at the end "
                                       "says which of its claims this run shows)" if red
                                       else "the paper's / tutorial's setting")]
    line = " "
    for k in keys:
        item = f" {k}={_WORDS.get((k, cfg[k]), _short(cfg[k])) if isinstance(cfg[k], str) else _short(cfg[k])}"
        if len(line) + len(item) > width and line.strip():
            lines.append(line.rstrip())
            line = " "
        line += item
    if line.strip():
        lines.append(line.rstrip())
    return "\n".join(lines)
