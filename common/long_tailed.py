"""Long-tailed CIFAR-10 (Cui et al. 2019, Table 2) for notebook 08: the splits, the profiles, the
sweep over imbalance factors, the choice of the class-balanced (CB) loss, targets, verdict, figures.

**Training sets** (Cui et al. sec. 5.1; the counts of Cao et al.'s ``imbalance_cifar.py`` and of
Cui et al.'s ``generate_cifar_tfrecords_im.py``): class i of CIFAR-10 (0-based, in the dataset's
class order, so airplane is the largest class and truck the smallest) keeps

    n_i = ⌊n_max · f^(−i/(C−1))⌋,    n_max = 5,000,  C = 10

of its training images (:func:`lt_counts`), f the imbalance factor n_0 / n_{C−1}: 12,406 images
at f = 100 (tail 50), 20,431 at f = 10 (tail 500). Each class keeps a seeded random subset of its
images (split seed 0, :func:`make_lt_split`). Test: the full, balanced test set (10,000 images).

**Validation** (:func:`make_selection_split`), for choosing the CB loss's type and β: class 0
keeps all 5,000 of its training images at every factor, so no balanced validation set can lie
outside the long-tailed training set itself. The selection runs therefore train on a *replica*:
500 images per class are held out first (seeded, balanced: the validation pool), and a
long-tailed subset with the same factor is drawn from the other 4,500 per class (n_max = 4,500,
the same exponential profile scaled by 0.9). Validation = ``n_val`` of the held-out images per
class, never seen in training. The configuration with the lowest validation error is then
trained on the paper's long-tailed set with other seeds and reported on the test set.

**Training** reuses notebook 06's machinery unchanged (:mod:`common.imbalanced_cifar`):
``train_one`` and ``run_sweep`` (per-run files, fingerprints, resumable checkpoints), the
networks of ``build_model`` (``"airnet"``: :class:`common.fastnet.AirNet`; ``"resnet"`` with
width 16 and blocks (5, 5, 5): ResNet-32, He et al. 2016 sec. 4.2, with 1×1 projection shortcuts
where the width changes) and ``paired_difference``. What this module adds: :class:`LTTrainConfig`
(the step schedule of Cui et al.: linear warm-up over 5 epochs, lr × 0.01 at epochs 160 and 180),
the split builders, a sweep per factor, the CB choice and the analysis. A run's fingerprint
(``imbalanced_cifar.fingerprint``) covers this module's data and schedule code through the split
information (``lt_code``), so a change here never reuses an old run, and 06's fingerprints are
untouched. The records' ``minority`` / ``majority`` groups are 06's (automobile, deer, frog) and
mean nothing here; 08 reads ``all`` (top-1 accuracy) and ``per_class``.

    python -m common.long_tailed --profile full --budget-s 540   # repeat until "0 pending"
    python -m common.reproduce --nb 08 --profile full            # renders, reuses every run
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import math
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from . import data, imbalanced_cifar as ic, losses, references, runtime

NOTEBOOK = "08_long_tailed_cifar10"
N_MAX = 5000                       # images per class in CIFAR-10's training set
SPLIT_SEED = 0
VAL_SEED = 1                       # the held-out validation pool's draw
PAPER_FACTORS: tuple[int, ...] = (200, 100, 50, 20, 10)
CLAIM_FACTOR, LOW_FACTOR = 100, 10

# The configurations (names of common.losses.all_configs()).
REFERENCE = "CE"
FOCAL = "focal γ=1"                # Cui et al.'s best focal γ at factor 100 (Table 2), softmax form
CB_FIXED = "CB-focal γ=1 β=0.9999"  # the paper's CB choice at factor 100 (Table 2), softmax form
LOGIT_ADJUSTED = "logit-adjusted τ=1"
DRW = "DRW β=0.9999"
CB_BETAS: tuple[float, ...] = (0.99, 0.999, 0.9999)
CB_CANDIDATES: tuple[str, ...] = (*(f"CB-softmax β={b:g}" for b in CB_BETAS),
                                  *(f"CB-focal γ=1 β={b:g}" for b in CB_BETAS))
CB_RULES = ("fixed", "validation")
CE_TARGET_MARGIN = 5.0             # points of error above the paper's CE at factor 100


# --------------------------------------------------------------------------- schedule
@dataclass(frozen=True)
class LTTrainConfig(ic.TrainConfig):
    """:class:`common.imbalanced_cifar.TrainConfig` with the step schedule of Cui et al. sec. 5.2:
    ``lr_schedule="step"`` multiplies the learning rate by ``lr_decay`` after each of
    ``lr_milestones`` (the paper: 0.01 at epochs 160 and 180, so 0.1 → 0.001 → 0.00001, its code's
    multipliers 1, 0.01, 0.0001) after a linear warm-up over the first ``warmup_epochs``, per
    optimiser step (lr · (k + 1) / warm-up steps at step k). Other schedules are TrainConfig's."""

    lr_decay: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.lr_decay <= 1.0:
            raise ValueError(f"lr_decay must lie in (0, 1], got {self.lr_decay}")

    def lr_at(self, epoch: int) -> float:
        """lr · lr_decay^(number of milestones < ``epoch``) (1-based), before any warm-up."""
        return self.lr * self.lr_decay ** sum(epoch > m for m in self.lr_milestones)

    def lr_at_step(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        if self.lr_schedule != "step":
            return super().lr_at_step(epoch, step, steps_per_epoch)
        warm_steps = round(self.warmup_epochs * steps_per_epoch)
        done = (epoch - 1) * steps_per_epoch + step
        warm = min(1.0, (done + 1) / warm_steps) if warm_steps > 0 else 1.0
        return self.lr_at(epoch) * warm


def as_lt(tcfg: ic.TrainConfig, **changes: Any) -> LTTrainConfig:
    """``tcfg``'s settings as an :class:`LTTrainConfig`, with ``changes``."""
    return LTTrainConfig(**{**{f.name: getattr(tcfg, f.name) for f in fields(ic.TrainConfig)},
                            **changes})


# --------------------------------------------------------------------------- profiles
# cpu: notebook 06's network and optimiser (AirNet width 32, Nesterov SGD, one warm-up epoch then
# a linear decay to 0, bf16 + channels_last where native), at batch 256 with the lr scaled
# linearly from 06's 0.4 at 512 (the long-tailed sets are 3-6 times smaller than 06's: batch 512
# would leave 25 steps per epoch at factor 100), for a fixed 11 epochs. Time, estimated from 06's
# measurement (14-16 s per epoch of 35,750 images on 2 cores in bf16: 2,200-2,500 images/s of
# training; 10,000 test images evaluated after every epoch, about 1.4 s): an epoch 6.4-7.0 s at
# factor 100 (12,406 images) and 9.6-10.6 s at factor 10 (20,431); 11 runs per factor of 11
# epochs: 33-36 minutes, plus about a minute of loading and figures.
CPU_TRAIN = as_lt(ic.CPU_TRAIN, epochs=11, batch_size=256, lr=0.2)
# full: Cui et al. sec. 5.2 / their code: ResNet-32, 200 epochs, batch 128, SGD momentum 0.9,
# weight decay 2e-4, lr 0.1 after a 5-epoch linear warm-up, × 0.01 at epochs 160 and 180, the
# standard crop (4-pixel padding) + flip.
FULL_TRAIN = LTTrainConfig(arch="resnet", width=16, blocks=(5, 5, 5), stem_stride=1, epochs=200,
                           lr=0.1, lr_milestones=(160, 180), lr_decay=0.01, warmup_epochs=5.0,
                           batch_size=128, momentum=0.9, weight_decay=2e-4, nesterov=False,
                           lr_schedule="step", crop_pad=4, bf16="auto", channels_last=True,
                           eval_batch=1000, ckpt_every=10)

# Same keys in every profile (runtime.pick). ``configs`` run at every factor: ``key_configs`` on
# every seed, the others on the first; ``cb_rule`` "fixed": the CB configuration is ``cb_fixed``,
# stated in advance; "validation": the ``selection_configs`` run first on the replica split
# (``selection_seeds``, disjoint from ``seeds``) and the lowest validation error picks the CB
# configuration per factor. ``val_held_out`` images per class are held out for validation, of
# which ``n_val`` are evaluated.
CONFIGS: dict[str, dict[str, Any]] = {
    "smoke": {
        "factors": [CLAIM_FACTOR, LOW_FACTOR], "n_max": 200, "test_per_class": 30,
        "val_held_out": 20, "n_val": 20,
        "train": as_lt(CPU_TRAIN, width=4, epochs=2, batch_size=32, eval_batch=500),
        "configs": [REFERENCE, "CB-softmax β=0.9999", CB_FIXED, LOGIT_ADJUSTED, FOCAL],
        "key_configs": [REFERENCE, "CB-softmax β=0.9999", CB_FIXED, LOGIT_ADJUSTED],
        "seeds": [0, 1], "cb_rule": "validation", "cb_fixed": CB_FIXED,
        "selection_configs": ["CB-softmax β=0.9999", CB_FIXED], "selection_seeds": [100],
        "budget_s": None, "cache_runs": False, "threads": 1,
    },
    "cpu": {
        "factors": [CLAIM_FACTOR, LOW_FACTOR], "n_max": N_MAX, "test_per_class": None,
        "val_held_out": 500, "n_val": 500,
        "train": CPU_TRAIN,
        "configs": [REFERENCE, CB_FIXED, LOGIT_ADJUSTED, FOCAL, "CB-softmax β=0.9999"],
        "key_configs": [REFERENCE, CB_FIXED, LOGIT_ADJUSTED],
        "seeds": [0, 1, 2], "cb_rule": "fixed", "cb_fixed": CB_FIXED,
        "selection_configs": [], "selection_seeds": [100],
        "budget_s": None, "cache_runs": True, "threads": 2,
    },
    "full": {
        "factors": list(PAPER_FACTORS), "n_max": N_MAX, "test_per_class": None,
        "val_held_out": 500, "n_val": 500,
        "train": FULL_TRAIN,
        "configs": [REFERENCE, FOCAL, *CB_CANDIDATES, LOGIT_ADJUSTED, DRW],
        "key_configs": [REFERENCE, FOCAL, *CB_CANDIDATES, LOGIT_ADJUSTED, DRW],
        "seeds": [0, 1, 2], "cb_rule": "validation", "cb_fixed": CB_FIXED,
        "selection_configs": list(CB_CANDIDATES), "selection_seeds": [100],
        "budget_s": None, "cache_runs": True, "threads": None,
    },
}
# dryrun (make dryrun): the full entry (ResNet-32, batch 128, five factors, every configuration
# and seed, the selection runs) with one epoch of one optimiser step per run, 10 test and 10
# validation images per class; nothing else changed (tests/test_dryrun.py).
CONFIGS["dryrun"] = runtime.dryrun_of(
    CONFIGS["full"], train=replace(FULL_TRAIN, epochs=1, steps_per_epoch=1), test_per_class=10,
    n_val=10)


def check_profile(cfg: Mapping[str, Any]) -> None:
    """``ValueError`` unless the profile entry ``cfg`` is consistent: known configurations, CE
    and logit-adjusted CE on every seed, the CB rule's configurations on every seed, selection
    seeds disjoint from the reported ones, and a tail of ≥ 1 image at every factor."""
    known = losses.all_configs()
    unknown = [n for n in [*cfg["configs"], *cfg["selection_configs"], cfg["cb_fixed"]] if n not in known]
    if unknown:
        raise ValueError(f"unknown loss configs {unknown}; known: {list(known)}")
    if cfg["cb_rule"] not in CB_RULES:
        raise ValueError(f"cb_rule must be one of {CB_RULES}, got {cfg['cb_rule']!r}")
    needed = {REFERENCE, LOGIT_ADJUSTED} | ({cfg["cb_fixed"]} if cfg["cb_rule"] == "fixed"
                                           else set(cfg["selection_configs"]))
    if cfg["cb_rule"] == "validation" and not cfg["selection_configs"]:
        raise ValueError("cb_rule 'validation' needs selection_configs")
    if not needed <= set(cfg["key_configs"]) or not set(cfg["key_configs"]) <= set(cfg["configs"]):
        raise ValueError(f"key_configs must hold {sorted(needed)} and lie in configs: {cfg['key_configs']}")
    if set(cfg["seeds"]) & set(cfg["selection_seeds"]):
        raise ValueError(f"selection_seeds {cfg['selection_seeds']} must be disjoint from seeds {cfg['seeds']}")
    if cfg["n_val"] > cfg["val_held_out"]:
        raise ValueError(f"n_val ({cfg['n_val']}) must not exceed val_held_out ({cfg['val_held_out']})")
    for f in cfg["factors"]:
        lt_counts(f, cfg["n_max"])
        lt_counts(f, replica_n_max(cfg["n_max"], cfg["val_held_out"]))


# --------------------------------------------------------------------------- splits
def lt_counts(factor: float, n_max: int = N_MAX, num_classes: int = 10) -> list[int]:
    """Training images per class: n_i = ⌊n_max · factor^(−i/(C−1))⌋, i = 0..C−1 (Cui et al.
    sec. 5.1, the counts of Cao et al.'s code). ``ValueError`` when a class would get none."""
    if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor >= 1):
        raise ValueError(f"factor must be a number ≥ 1, got {factor!r}")
    if int(n_max) != n_max or n_max < 1 or int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"n_max ({n_max}) must be a positive integer and num_classes "
                         f"({num_classes}) an integer ≥ 2")
    counts = [int(n_max * (1.0 / factor) ** (i / (num_classes - 1))) for i in range(num_classes)]
    if min(counts) < 1:
        raise ValueError(f"factor {factor} with n_max {n_max} leaves class {counts.index(min(counts))} "
                         f"without images ({counts}); raise n_max")
    return counts


def make_lt_split(labels: torch.Tensor, factor: float, n_max: int = N_MAX,
                  seed: int = SPLIT_SEED) -> torch.Tensor:
    """Sorted training indices of the long-tailed subset (:func:`lt_counts`, seeded per class)."""
    return data.imbalanced_subset(labels, lt_counts(factor, n_max, int(labels.max()) + 1), seed)


def replica_n_max(n_max: int, held_out: int, per_class: int = N_MAX) -> int:
    """Largest class of the selection replica: n_max, or what is left after holding out
    ``held_out`` images per class when that is less."""
    return min(int(n_max), int(per_class) - int(held_out))


def make_selection_split(labels: torch.Tensor, factor: float, n_val: int, held_out: int,
                         n_max: int = N_MAX, seed: int = SPLIT_SEED
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(validation indices, replica training indices), both sorted and disjoint.

    ``held_out`` images per class are drawn first (seed :data:`VAL_SEED`, balanced); validation
    is ``n_val`` of them per class; the replica is the long-tailed subset of the other images with
    the same ``factor`` and n_max = :func:`replica_n_max` (seeded by ``seed``)."""
    if not 1 <= n_val <= held_out:
        raise ValueError(f"need 1 ≤ n_val ≤ held_out, got n_val={n_val}, held_out={held_out}")
    labels = labels.cpu()
    per_class = min(data.class_counts(labels, int(labels.max()) + 1))
    pool = data.balanced_subset(labels, held_out, VAL_SEED)
    val = pool[data.balanced_subset(labels[pool], n_val, VAL_SEED)]
    rest = torch.ones(len(labels), dtype=torch.bool)
    rest[pool] = False
    rest_idx = torch.nonzero(rest).flatten()
    counts = lt_counts(factor, replica_n_max(n_max, held_out, per_class), int(labels.max()) + 1)
    train = rest_idx[data.imbalanced_subset(labels[rest_idx], counts, seed)]
    return torch.sort(val).values, torch.sort(train).values


def _sha(idx: torch.Tensor) -> str:
    return hashlib.sha256(idx.cpu().numpy().tobytes()).hexdigest()[:16]


def lt_code_hash() -> str:
    """Hash of this module's code that decides a run's data and schedule (part of every 08 run's
    fingerprint through its split information)."""
    h = hashlib.sha256()
    for obj in (LTTrainConfig, as_lt, lt_counts, make_lt_split, replica_n_max,
                make_selection_split, split_data):
        h.update(inspect.getsource(obj).encode())
    return h.hexdigest()[:16]


def split_data(x: torch.Tensor, y: torch.Tensor, eval_x: torch.Tensor, eval_y: torch.Tensor,
               idx: torch.Tensor, device: torch.device, info: Mapping[str, Any]) -> ic.SplitData:
    """A :class:`common.imbalanced_cifar.SplitData` of the training images ``idx`` on ``device``,
    evaluated on ``eval_x``/``eval_y`` (already there); no balanced reference set (empty), and
    ``info`` with the training index hash and :func:`lt_code_hash` added."""
    empty_x, empty_y = x[:0].to(device), y[:0].to(device)
    full_info = {**info, "train_index_sha256": _sha(idx), "lt_code": lt_code_hash()}
    return ic.SplitData(x[idx].to(device), y[idx].to(device), empty_x, empty_y, eval_x, eval_y,
                        idx, full_info)


def _test_set(cfg: Mapping[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    xt, yt = data.load_cifar10("test")
    if cfg["test_per_class"] is not None:
        keep = data.balanced_subset(yt, cfg["test_per_class"], SPLIT_SEED)
        xt, yt = xt[keep], yt[keep]
    return xt.to(device), yt.to(device)


def load_splits(device: torch.device, cfg: Mapping[str, Any]) -> dict[int, ic.SplitData]:
    """Per factor of ``cfg``: its long-tailed training set, evaluated on the test set."""
    x, y = data.load_cifar10("train")
    xt, yt = _test_set(cfg, device)
    out = {}
    for f in cfg["factors"]:
        idx = make_lt_split(y, f, cfg["n_max"])
        info = {"dataset": "CIFAR-10-LT", "factor": f, "n_max": cfg["n_max"],
                "counts": data.class_counts(y[idx]), "split_seed": SPLIT_SEED,
                "evaluated_on": "test", "test_per_class": cfg["test_per_class"], "n_test": len(yt)}
        out[f] = split_data(x, y, xt, yt, idx, device, info)
    return out


def load_selection_splits(device: torch.device, cfg: Mapping[str, Any]) -> dict[int, ic.SplitData]:
    """Per factor of ``cfg``: the replica training set, evaluated on the validation images
    (:func:`make_selection_split`)."""
    x, y = data.load_cifar10("train")
    out = {}
    for f in cfg["factors"]:
        val, idx = make_selection_split(y, f, cfg["n_val"], cfg["val_held_out"], cfg["n_max"])
        info = {"dataset": "CIFAR-10-LT replica", "factor": f,
                "n_max": replica_n_max(cfg["n_max"], cfg["val_held_out"]),
                "counts": data.class_counts(y[idx]), "split_seed": SPLIT_SEED,
                "evaluated_on": "validation", "val_held_out": cfg["val_held_out"],
                "n_val": cfg["n_val"], "val_seed": VAL_SEED, "val_index_sha256": _sha(val)}
        out[f] = split_data(x, y, x[val].to(device), y[val].to(device), idx, device, info)
    return out


# --------------------------------------------------------------------------- sweeps
Records = Mapping[tuple[str, int], Mapping[str, Any]]
Dirs = Callable[[int, str], tuple[Path, Path]]


def runs_dirs(profile: str, factor: int, part: str = "main") -> tuple[Path, Path]:
    """Per-run files and checkpoints of one factor and part (``main`` / ``selection``) under
    :func:`common.runtime.checkpoint_root` (never ``checkpoints/`` for ``dryrun``)."""
    base = runtime.checkpoint_root(profile) / NOTEBOOK / profile / f"imbalance{factor}" / part
    return base / "runs", base / "ckpt"


def run_order(factors: Iterable[int]) -> list[int]:
    """The claim's factors first (100, then 10), then the others in their order: a time budget
    finishes what the verdict needs before the rest."""
    factors = list(factors)
    return [f for f in (CLAIM_FACTOR, LOW_FACTOR) if f in factors] + \
        [f for f in factors if f not in (CLAIM_FACTOR, LOW_FACTOR)]


def run_all(cfg: Mapping[str, Any], tcfg: ic.TrainConfig, splits: Mapping[int, ic.SplitData],
            selection_splits: Mapping[int, ic.SplitData], device: torch.device, dirs: Dirs,
            budget_s: float | None = None, max_epochs_per_call: int | None = None,
            show_progress: bool = False, verbose: bool = True
            ) -> dict[str, dict[int, ic.SweepResult]]:
    """Every run of a profile entry, under one budget: ``"selection"`` (the ``selection_configs``
    on the replica splits, evaluated on validation, first: the CB choice never sees the test
    set) and ``"main"`` (``configs`` over ``seeds``, ``key_configs`` on all of them), each a
    dict factor -> :class:`common.imbalanced_cifar.SweepResult` (:func:`run_order`).
    ``dirs(factor, part)`` gives the per-run and checkpoint folders."""
    check_profile(cfg)
    t0 = time.time()

    def left() -> float | None:
        return None if budget_s is None else float(budget_s) - (time.time() - t0)

    kw = dict(max_epochs_per_call=max_epochs_per_call, show_progress=show_progress, verbose=False)
    out: dict[str, dict[int, ic.SweepResult]] = {"selection": {}, "main": {}}

    def report(part: str, f: int, res: ic.SweepResult) -> None:
        for name, seed in res.trained if verbose else ():
            rec = res.records[(name, seed)]
            print(f"  imbalance {f:>3}, {part:9s} {name:24s} seed {seed}: {error_of(rec):6.2f} % error "
                  f"on {'validation' if part == 'selection' else 'test'} ({rec['wall_seconds']:.0f} s, "
                  f"{rec['timing'].get('samples_per_second', float('nan')):.0f} img/s)", flush=True)

    if cfg["selection_configs"]:
        for f in run_order(cfg["factors"]):
            runs, ckpt = dirs(f, "selection")
            out["selection"][f] = ic.run_sweep(cfg["selection_configs"], cfg["selection_seeds"],
                                               tcfg, selection_splits[f], device, runs, ckpt,
                                               budget_s=left(), **kw)
            report("selection", f, out["selection"][f])
    for f in run_order(cfg["factors"]):
        runs, ckpt = dirs(f, "main")
        out["main"][f] = ic.run_sweep(cfg["configs"], cfg["seeds"], tcfg, splits[f], device, runs,
                                      ckpt, budget_s=left(), key_configs=cfg["key_configs"], **kw)
        report("main", f, out["main"][f])
    return out


def sweep_status(sweeps: Mapping[str, Mapping[int, ic.SweepResult]]) -> dict[str, Any]:
    """:func:`common.imbalanced_cifar.sweep_status` of every (part, factor): ``finished`` false
    while any run is pending (an unfinished render, exit 3)."""
    return ic.sweep_status({f"{part} imbalance {f}": r for part, by_f in sweeps.items()
                            for f, r in by_f.items()})


def records_of(sweeps: Mapping[int, ic.SweepResult]) -> dict[int, dict[tuple[str, int], Any]]:
    return {f: dict(r.records) for f, r in sweeps.items()}


# --------------------------------------------------------------------------- numbers
def error_of(rec: Mapping[str, Any]) -> float:
    """Top-1 error (%) of a run on its evaluation set (test, or validation for selection runs)."""
    return 100.0 - float(rec["final"]["all"])


def error_stats(records: Records, seeds: Sequence[int], name: str) -> tuple[float, float, int]:
    """Mean, sample std and count of ``name``'s error over the ``seeds`` that ran."""
    return ic.mean_std([error_of(records[(name, s)]) for s in seeds if (name, s) in records])


def paired_error(records: Records, a: str | None, b: str) -> dict[str, float]:
    """Paired error difference a − b (points; negative: ``a`` is better) over the seeds both ran,
    with its 95 % t interval (:func:`common.imbalanced_cifar.paired_difference` of accuracy,
    negated)."""
    if a is None:
        return {"mean": float("nan"), "std": float("nan"), "n": 0, "ci_low": float("nan"),
                "ci_high": float("nan")}
    d = ic.paired_difference(records, a, b, "all")
    return {"mean": -d["mean"], "std": d["std"], "n": d["n"], "ci_low": -d["ci_high"],
            "ci_high": -d["ci_low"]}


_ci = ic._ci   # the same bracketed interval text as notebook 06's tables


def _wins(records: Records, a: str, b: str) -> tuple[int, int]:
    seeds = sorted({s for (n, s) in records if n == a} & {s for (n, s) in records if n == b})
    return sum(error_of(records[(a, s)]) < error_of(records[(b, s)]) for s in seeds), len(seeds)


def choose_cb(cfg: Mapping[str, Any], selection: Mapping[int, Records]) -> dict[int, dict[str, Any]]:
    """The CB configuration per factor and why: ``cb_rule`` "fixed" -> ``cb_fixed``;
    "validation" -> the ``selection_configs`` entry with the lowest mean validation error over
    ``selection_seeds`` (the first in list order on a tie), ``None`` while any of them has not
    finished every selection seed."""
    out: dict[int, dict[str, Any]] = {}
    for f in cfg["factors"]:
        if cfg["cb_rule"] == "fixed":
            out[f] = {"config": cfg["cb_fixed"], "rule": "fixed in advance (Cui et al.'s choice "
                      "at imbalance 100)", "validation_error": {}}
            continue
        recs = selection.get(f, {})
        errs = {n: error_stats(recs, cfg["selection_seeds"], n) for n in cfg["selection_configs"]}
        complete = all(k == len(cfg["selection_seeds"]) for _, _, k in errs.values())
        pick = min(cfg["selection_configs"], key=lambda n: errs[n][0]) if complete else None
        out[f] = {"config": pick, "rule": "lowest validation error (replica split, seeds "
                  f"{list(cfg['selection_seeds'])})", "validation_error": {n: e[0] for n, e in errs.items()}}
    return out


def pick_on_test(records: Records, seeds: Sequence[int], candidates: Sequence[str]) -> str | None:
    """The candidate with the lowest mean *test* error among those that ran on every seed (the
    paper's Table 2 reports its best CB loss per column this way: optimistic); None if none did."""
    full = [n for n in candidates if error_stats(records, seeds, n)[2] == len(seeds)]
    return min(full, key=lambda n: error_stats(records, seeds, n)[0]) if full else None


def paper_value(name: str, factor: int) -> tuple[float | None, str]:
    """The published error for configuration ``name`` at ``factor`` and where it comes from:
    CE ↔ Cui et al. Table 2 "Softmax"; focal γ ↔ "Focal (γ)" (sigmoid-based there); a CB
    configuration ↔ "Class-Balanced" only at factors where the paper's best CB loss is that
    loss type, β and γ; logit-adjusted CE at 100 ↔ Menon et al. (marked when not checked against the paper). Otherwise
    ``(None, "")``."""
    t2, choice = references.CUI_TABLE2_CIFAR10, references.CUI_TABLE2_CB_CHOICE
    spec = losses.all_configs().get(name)
    if spec is None:
        return None, ""
    if spec.kind == "ce" and not spec.balanced_data:
        return t2["Softmax"].get(factor), "Cui et al. Table 2, Softmax"
    if spec.kind == "focal":
        row = f"Focal (γ={spec.gamma:.1f})"
        if row in t2 and factor in t2[row]:
            return t2[row][factor], f"Cui et al. Table 2, {row} (sigmoid focal)"
        return None, ""
    if spec.kind in ("cb_softmax", "cb_focal") and factor in choice:
        kind, beta, gamma = choice[factor]
        ours = ("SM", spec.beta, None) if spec.kind == "cb_softmax" else ("Focal", spec.beta, spec.gamma)
        if ours != (kind, beta, gamma):
            return None, ""
        what = f"SM, β={beta:g}" if kind == "SM" else f"sigmoid focal, β={beta:g}, γ={gamma:g}"
        return t2["Class-Balanced"][factor], f"Cui et al. Table 2, Class-Balanced ({what})"
    if spec.kind == "logit_adjusted" and spec.tau == 1.0:
        values, src, table, checked = references.LT_CIFAR10_OTHERS["logit-adjusted loss"]
        if factor in values:
            return values[factor], f"Menon et al. {table}" + ("" if checked else " (not yet verified)")
    return None, ""


# --------------------------------------------------------------------------- tables
def _fmt(m: float, s: float, n: int) -> str:
    return ic.fmt_pm(m, s, n)


def counts_table(factors: Sequence[int], n_max: int = N_MAX):
    """Training images per class (rows: CIFAR-10 classes, then the total) per factor."""
    import pandas as pd

    cols = {f"imbalance {f}": lt_counts(f, n_max) for f in factors}
    df = pd.DataFrame(cols, index=list(data.CIFAR_CLASSES))
    df.loc["total"] = df.sum()
    return df


def results_table(records: Mapping[int, Records], seeds: Sequence[int], names: Sequence[str]):
    """Test error (%) per configuration and factor: ours (mean ± sample std over the seeds run)
    beside the paper's (:func:`paper_value`, "—" where it has none) and the paper row used."""
    import pandas as pd

    rows = []
    for name in names:
        row: dict[str, Any] = {"config": name}
        sources = []
        for f in sorted(records, reverse=True):
            row[f"ours {f}"] = _fmt(*error_stats(records[f], seeds, name))
            value, src = paper_value(name, f)
            row[f"paper {f}"] = "—" if value is None else value
            if src and src not in sources:
                sources.append(src)
        row["paper row"] = "; ".join(sources) or "—"
        rows.append(row)
    return pd.DataFrame(rows).set_index("config")


def paired_table(records: Mapping[int, Records], names: Sequence[str], reference: str = REFERENCE):
    """Per configuration and factor: the paired error difference to ``reference`` (same seed),
    mean ± std, its 95 % t interval, seeds, and whether it is resolved (interval excludes 0)."""
    import pandas as pd

    rows = []
    for name in names:
        if name == reference:
            continue
        for f in sorted(records, reverse=True):
            d = paired_error(records[f], name, reference)
            if d["n"] == 0:
                continue
            rows.append({"config": name, "imbalance": f,
                         f"Δerror vs {reference}": _fmt(d["mean"], d["std"], d["n"]),
                         "95% CI": _ci(d), "seeds": d["n"],
                         "resolved?": "n/a (<2 seeds)" if d["n"] < 2 else
                         "yes" if d["ci_low"] > 0 or d["ci_high"] < 0 else "no"})
    return pd.DataFrame(rows).set_index(["config", "imbalance"]) if rows else pd.DataFrame()


def selection_table(cfg: Mapping[str, Any], selection: Mapping[int, Records],
                    records: Mapping[int, Records], seeds: Sequence[int]):
    """Per factor and CB candidate: validation error (selection seeds, replica split) and test
    error (the reported seeds), and which candidate validation and test would pick."""
    import pandas as pd

    chosen = choose_cb(cfg, selection)
    cands = cfg["selection_configs"] or [n for n in cfg["configs"] if n in CB_CANDIDATES or n == cfg["cb_fixed"]]
    rows = []
    for f in sorted(records, reverse=True):
        by_test = pick_on_test(records[f], seeds, cands)
        for name in cands:
            v = error_stats(selection.get(f, {}), cfg["selection_seeds"], name)
            t = error_stats(records[f], seeds, name)
            rows.append({"imbalance": f, "config": name,
                         "validation error": _fmt(*v), "test error": _fmt(*t),
                         "picked by validation": "◀" if chosen[f]["config"] == name else "",
                         "picked by test (paper's way)": "◀" if by_test == name else ""})
    return pd.DataFrame(rows).set_index(["imbalance", "config"]) if rows else pd.DataFrame()


# --------------------------------------------------------------------------- targets and verdict
def targets(records: Mapping[int, Records], seeds: Sequence[int],
            cb: Mapping[int, str | None]) -> list[dict[str, Any]]:
    """Notebook 08's targets, checked against the runs (``met`` is None while a run they need is
    missing): (1) CE's test error at imbalance 100 is at most the paper's 29.64 + 5 points (seed
    mean); (2) the CB configuration lowers the error at 100 against CE with a paired 95 % interval
    entirely below 0; (3) its mean paired gain at 10 is smaller than at 100."""
    paper_ce = references.CUI_TABLE2_CIFAR10["Softmax"][CLAIM_FACTOR]
    r100, r10 = records.get(CLAIM_FACTOR, {}), records.get(LOW_FACTOR, {})
    m, _, n = error_stats(r100, seeds, REFERENCE)
    d100, d10 = paired_error(r100, cb.get(CLAIM_FACTOR), REFERENCE), paired_error(r10, cb.get(LOW_FACTOR), REFERENCE)
    ok100, ok10 = d100["n"] == len(seeds) >= 2, d10["n"] == len(seeds) >= 1
    return [
        {"target": f"{REFERENCE} test error at imbalance {CLAIM_FACTOR} ≤ {paper_ce:g} + "
                   f"{CE_TARGET_MARGIN:g} % (the paper's + {CE_TARGET_MARGIN:g} points)",
         "measured": f"{m:.2f} % (mean of {n})" if n else "not run",
         "met": None if n == 0 else m <= paper_ce + CE_TARGET_MARGIN},
        {"target": f"CB ({cb.get(CLAIM_FACTOR)}) − {REFERENCE} test error at imbalance "
                   f"{CLAIM_FACTOR}: paired 95 % interval below 0",
         "measured": f"{d100['mean']:+.2f} points, 95% CI {_ci(d100)} ({d100['n']} seeds)",
         "met": None if not ok100 else d100["ci_high"] < 0},
        {"target": f"CB's gain over {REFERENCE} smaller at imbalance {LOW_FACTOR} than at "
                   f"{CLAIM_FACTOR} (mean paired gains)",
         "measured": f"gain {-d10['mean']:+.2f} at {LOW_FACTOR} vs {-d100['mean']:+.2f} at {CLAIM_FACTOR}",
         "met": None if not (ok100 and ok10) else -d10["mean"] < -d100["mean"]},
    ]


def verdict(records: Mapping[int, Records], seeds: Sequence[int], cb: Mapping[int, str | None],
            reduced: bool, finished: bool) -> tuple[str, str]:
    """(status, sentence) from notebook 08's claim cell, through
    :func:`common.report.claims_verdict` (one vocabulary for every notebook).

    The claim: in a finished sweep, the CB configuration's paired error difference to CE at
    imbalance 100 has its 95 % t interval entirely below 0 (≥ 2 seeds). The paper's setting adds
    a second: the CB error at 100 within :data:`CE_TARGET_MARGIN` points of the paper's (or lower).
    The difference at imbalance 10 is reported in the sentence, not judged."""
    from .report import claims_verdict, interval_text, unfinished_claim

    name = cb.get(CLAIM_FACTOR)
    r100 = records.get(CLAIM_FACTOR, {})
    d = paired_error(r100, name, REFERENCE)
    wins, n = _wins(r100, name, REFERENCE) if name else (0, 0)
    claim = f"{name or 'CB'} lowers the test error at imbalance {CLAIM_FACTOR} against {REFERENCE}"
    if name is None:
        main = {"claim": claim, "met": None,
                "measured": "no CB configuration was chosen (selection runs missing)"}
    else:
        main = {"claim": claim,
                "measured": f"{d['mean']:+.1f} points ({interval_text(d, 1)}, lower on {wins}/{n} seeds)",
                "met": d["n"] >= 2 and d["ci_high"] < 0}
    checks = [main]
    if not finished:
        checks.append(unfinished_claim())
    if not reduced:
        paper_cb = references.CUI_TABLE2_CIFAR10["Class-Balanced"][CLAIM_FACTOR]
        level, _, k = error_stats(r100, seeds, name) if name else (float("nan"), float("nan"), 0)
        checks.append({"claim": f"the CB error at imbalance {CLAIM_FACTOR} within {CE_TARGET_MARGIN:g} points "
                                f"of the paper's {paper_cb:g} %",
                       "measured": f"CB error {level:.2f} % vs the paper's {paper_cb:g} %" if k else "not run",
                       "met": (level <= paper_cb + CE_TARGET_MARGIN) if k else None})
    status, sentence = claims_verdict(checks, reduced)
    if LOW_FACTOR in records and cb.get(LOW_FACTOR):
        d10 = paired_error(records[LOW_FACTOR], cb[LOW_FACTOR], REFERENCE)
        sentence += (f" Reported, not judged: at imbalance {LOW_FACTOR}, {cb[LOW_FACTOR]} − {REFERENCE} "
                     f"{d10['mean']:+.1f} points ({interval_text(d10, 1)}).")
    return status, sentence


# --------------------------------------------------------------------------- figures
def per_class_accuracy(records: Records, seeds: Sequence[int], name: str) -> np.ndarray | None:
    """Mean over the seeds run of ``name``'s per-class test accuracy (%), or None."""
    rows = [records[(name, s)]["per_class"] for s in seeds if (name, s) in records]
    return np.mean(rows, axis=0) if rows else None


def plot_per_class_vs_size(axes: Sequence[Any], records: Mapping[int, Records], seeds: Sequence[int],
                           counts: Mapping[int, Sequence[int]], shown: Mapping[int, Sequence[str]]) -> None:
    """One panel per factor: per-class test accuracy (mean over seeds) against the class's number
    of training images (log axis), one line per configuration in ``shown[factor]``; 0–100 %."""
    from . import plots

    for ax, f in zip(axes, sorted(records, reverse=True)):
        n = np.asarray(counts[f])
        order = np.argsort(n)
        for i, name in enumerate(shown[f]):
            acc = per_class_accuracy(records[f], seeds, name)
            if acc is None:
                continue
            k = sum((name, s) in records[f] for s in seeds)
            ax.plot(n[order], acc[order], label=f"{name} (n={k})", lw=1.6, **plots.line_styles(i))
        ax.set(xscale="log", ylim=(0, 100), xlabel="training images of the class (log scale)",
               ylabel="test accuracy of the class (%)", title=f"imbalance {f}")
        _plain_log_ticks(ax.xaxis)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8, loc="lower right")


def _plain_log_ticks(axis: Any) -> None:
    """Log-axis ticks at 1, 2, 5 × 10^k labelled as plain numbers (50, 100, 200, ...)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_locator(NullLocator())


def plot_error_vs_factor(ax: Any, records: Mapping[int, Records], seeds: Sequence[int],
                         series: Sequence[tuple[str, Mapping[int, str | None]]],
                         paper_rows: Sequence[str] = ("Softmax", "Class-Balanced")) -> None:
    """Test error against the imbalance factor (log axis): ours per series (label, factor ->
    configuration), mean over seeds with min–max bars; the paper's Table 2 rows dashed with
    hollow markers, labelled "paper"."""
    from matplotlib.ticker import NullLocator

    from . import plots

    for i, (label, by_f) in enumerate(series):
        fs = [f for f in sorted(records) if by_f.get(f) and error_stats(records[f], seeds, by_f[f])[2]]
        if not fs:
            continue
        errs = [[error_of(records[f][(by_f[f], s)]) for s in seeds if (by_f[f], s) in records[f]]
                for f in fs]
        mean = np.array([np.mean(e) for e in errs])
        lo, hi = mean - np.array([min(e) for e in errs]), np.array([max(e) for e in errs]) - mean
        ax.errorbar(fs, mean, yerr=[lo, hi], capsize=3, lw=1.6, label=f"ours: {label}",
                    **plots.line_styles(i))
    t2 = references.CUI_TABLE2_CIFAR10
    for row in paper_rows:
        fs = [f for f in PAPER_FACTORS if f in t2[row]]
        ax.plot(fs, [t2[row][f] for f in fs], ls="--", marker="o", mfc="none", color="gray",
                alpha=0.5 + 0.5 * (row == "Class-Balanced"), label=f"paper (Cui et al. Table 2): {row}")
    ax.set(xscale="log", xlabel="imbalance factor n_max / n_min (log scale)",
           ylabel="top-1 test error (%)", title="test error against imbalance")
    ax.set_xticks(list(PAPER_FACTORS), [str(f) for f in PAPER_FACTORS])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


# --------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=None, help="smoke | cpu | full (default: auto)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="stop at the next epoch boundary after this many seconds")
    ap.add_argument("--factors", nargs="*", type=int, default=None, help="subset of the factors")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = ap.parse_args(argv)
    profile = runtime.resolve_profile(args.profile)
    cfg = runtime.pick(CONFIGS, profile)
    if args.factors:
        cfg["factors"] = [f for f in cfg["factors"] if f in args.factors]
    tcfg: ic.TrainConfig = cfg["train"]
    if args.compile:
        tcfg = replace(tcfg, compile=True)
    device = runtime.get_device()
    runtime.set_threads(cfg["threads"], device)
    splits = load_splits(device, cfg)
    selection = load_selection_splits(device, cfg) if cfg["selection_configs"] else {}
    res = run_all(cfg, tcfg, splits, selection, device,
                  lambda f, part: runs_dirs(profile, f, part), budget_s=args.budget_s)
    for part, by_f in res.items():
        for f, r in by_f.items():
            print(f"profile {profile}, {part}, imbalance {f}: {r.describe()}")
    print(f"finished: {sweep_status(res)['finished']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
