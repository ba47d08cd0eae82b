"""Imbalanced CIFAR-10 training and the loss sweep of notebook 06 (class-balanced loss).

The split (the study's): automobile, deer and frog keep a seeded random 250 training images
each, the other seven classes all 5,000. Test: the full 10,000 test images, reported as
minority (the 3 reduced classes), majority (the other 7) and all.

Training (the study's, for the ``full`` profile): CIFAR ResNet-18, 25 epochs, batch 128, SGD
momentum 0.9, weight decay 5e-4, lr 0.1 / 0.01 / 0.001 from epochs 1 / 16 / 21, standard
crop+flip augmentation. Everything lives on the device: the training set as uint8, crop/flip
batched on the device (:mod:`common.augment`), channels_last + bf16 autocast on CUDA, optional
``torch.compile``.

Sweeps are resumable at two levels:

* every finished (config, seed) run is written at once, atomically, to
  ``<runs_dir>/<config-slug>_seed<k>.json`` together with a fingerprint of everything it depends
  on (settings, split, source code of the modules involved); a later sweep with the same
  fingerprint reuses it instead of training again;
* a run that is stopped (time budget, ``max_epochs_per_call``, or a crash) resumes from its
  per-epoch checkpoint ``<ckpt_dir>/<slug>_seed<k>_<fingerprint>.pt`` with model, optimiser and
  RNG states; the checkpoint stores the fingerprint too and is resumed only by the same run.

So a full sweep can span several ≤10-minute commands::

    python -m common.imbalanced_cifar --profile full --budget-s 540   # repeat until "0 pending"
    python -m common.reproduce --nb 06 --profile full                 # renders, reuses all runs
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from . import augment, data, losses, resnet, runtime, training
from .results import atomic_write_json

NOTEBOOK = "06_class_balanced_loss"
MINORITY_CLASSES: tuple[int, ...] = (1, 4, 6)          # automobile, deer, frog
N_MINORITY, N_MAJORITY = 250, 5000
SPLIT_SEED = 0


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class TrainConfig:
    """Model and optimisation settings of one run (the loss is a :class:`losses.LossSpec`)."""

    width: int = 64
    blocks: tuple[int, ...] = (2, 2, 2, 2)
    stem_stride: int = 1
    epochs: int = 25
    lr: float = 0.1
    lr_milestones: tuple[int, ...] = (15, 20)   # lr ×0.1 after each of these epochs
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = True
    bf16: bool = True                 # autocast, CUDA only
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = False       # cuDNN determinism (slower); CPU runs are deterministic anyway
    eval_batch: int = 1000
    ckpt_every: int = 5               # epochs between crash-safety checkpoints
    steps_per_epoch: int | None = None  # cap on optimiser steps per epoch (dryrun); None: all batches

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch < 1 or self.ckpt_every < 1:
            raise ValueError(f"epochs, batch_size, eval_batch and ckpt_every must be positive: {self}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be positive or None, got {self.steps_per_epoch}")
        if list(self.lr_milestones) != sorted(self.lr_milestones):
            raise ValueError(f"lr_milestones must be increasing, got {self.lr_milestones}")

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 1-based ``epoch``: lr · 0.1^(number of milestones < epoch)."""
        return self.lr * 0.1 ** sum(epoch > m for m in self.lr_milestones)

    def identity(self) -> dict[str, Any]:
        """Settings that change results (speed-only switches left out of the fingerprint)."""
        d = asdict(self)
        for k in ("compile", "eval_batch", "ckpt_every"):
            d.pop(k)
        if d["steps_per_epoch"] is None:   # every batch: the identity runs had before the cap existed
            d.pop("steps_per_epoch")
        d["blocks"] = list(self.blocks)
        d["lr_milestones"] = list(self.lr_milestones)
        return d


# The notebook's profile table (same keys in every profile; see runtime.pick).
CONFIGS: dict[str, dict[str, Any]] = {
    "smoke": {
        "n_major": 40, "n_minor": 8, "test_per_class": 30,
        "train": TrainConfig(width=4, blocks=(1, 1), stem_stride=2, epochs=2, lr_milestones=(1,),
                             batch_size=32, bf16=False, channels_last=False, eval_batch=500,
                             ckpt_every=1),
        "configs": list(losses.study_configs()), "seeds": [0, 1],
        "budget_s": None, "demo_interrupt": True, "cache_runs": False, "threads": 1,
    },
    "cpu": {
        "n_major": N_MAJORITY, "n_minor": N_MINORITY, "test_per_class": None,
        "train": TrainConfig(width=8, blocks=(1, 1, 1), stem_stride=2, epochs=4,
                             lr_milestones=(2, 3), batch_size=128, bf16=False,
                             channels_last=False, eval_batch=1000, ckpt_every=1),
        "configs": ["CE", "inverse frequency", "focal γ=1", "CB-softmax β=0.999",
                    "CB-softmax β=0.9999", "CB-focal γ=1 β=0.999"],
        "seeds": [0, 1, 2], "budget_s": 14 * 60, "demo_interrupt": False, "cache_runs": True,
        "threads": 1,
    },
    "full": {
        "n_major": N_MAJORITY, "n_minor": N_MINORITY, "test_per_class": None,
        "train": TrainConfig(),
        "configs": list(losses.study_configs()), "seeds": [0, 1, 2],
        "budget_s": None, "demo_interrupt": False, "cache_runs": True, "threads": None,
    },
}
# dryrun (make dryrun): the full entry (ResNet-18, batch 128, every config and seed: 42 runs) with
# one epoch of one optimiser step per run (about 6 s on a shared 2-core CPU) and 10 test images
# per class, nothing else changed (tests/test_dryrun.py).
CONFIGS["dryrun"] = runtime.dryrun_of(
    CONFIGS["full"], train=replace(CONFIGS["full"]["train"], epochs=1, steps_per_epoch=1),
    test_per_class=10)


# --------------------------------------------------------------------------- data
@dataclass
class SplitData:
    """Device-resident train/test tensors (uint8 NHWC images, int64 labels)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    balanced_x: torch.Tensor
    balanced_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    train_idx: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def counts(self) -> list[int]:
        return data.class_counts(self.train_y)

    @property
    def balanced_counts(self) -> list[int]:
        return data.class_counts(self.balanced_y)


def split_counts(n_major: int = N_MAJORITY, n_minor: int = N_MINORITY,
                 minority: Sequence[int] = MINORITY_CLASSES, num_classes: int = 10) -> list[int]:
    """Per-class training counts of the study's split (``n_minor`` for minority classes)."""
    return [n_minor if c in minority else n_major for c in range(num_classes)]


def make_split(train_labels: torch.Tensor, n_major: int = N_MAJORITY, n_minor: int = N_MINORITY,
               seed: int = SPLIT_SEED, minority: Sequence[int] = MINORITY_CLASSES) -> torch.Tensor:
    """Sorted training indices of the imbalanced split (``common.data.imbalanced_subset``)."""
    return data.imbalanced_subset(train_labels, split_counts(n_major, n_minor, minority), seed)


def load_split(device: torch.device, n_major: int = N_MAJORITY, n_minor: int = N_MINORITY,
               test_per_class: int | None = None, seed: int = SPLIT_SEED) -> SplitData:
    """Load CIFAR-10, build the split, move everything to ``device`` (uint8)."""
    x, y = data.load_cifar10("train")
    xt, yt = data.load_cifar10("test")
    idx = make_split(y, n_major, n_minor, seed)
    # balanced reference: every class keeps n_major images (all 5,000 = the full training set)
    bal = data.balanced_subset(y, n_major, seed) if n_major < 5000 else torch.arange(len(y))
    if test_per_class is not None:
        tidx = data.balanced_subset(yt, test_per_class, seed)
        xt, yt = xt[tidx], yt[tidx]
    info = {"n_major": n_major, "n_minor": n_minor, "split_seed": seed,
            "minority_classes": list(MINORITY_CLASSES), "test_per_class": test_per_class,
            "train_index_sha256": hashlib.sha256(idx.numpy().tobytes()).hexdigest()[:16],
            "n_test": len(yt)}
    return SplitData(x[idx].to(device), y[idx].to(device), x[bal].to(device), y[bal].to(device),
                     xt.to(device), yt.to(device), idx, info)


def group_masks(labels: torch.Tensor, minority: Sequence[int] = MINORITY_CLASSES
                ) -> dict[str, torch.Tensor]:
    is_min = torch.isin(labels, torch.tensor(list(minority), device=labels.device))
    return {"minority": is_min, "majority": ~is_min, "all": torch.ones_like(is_min)}


# --------------------------------------------------------------------------- one run
def _source_hash() -> str:
    """Hash of the code a run's numbers depend on (not of settings tables or reporting code)."""
    import inspect

    h = hashlib.sha256()
    for mod in (losses, resnet, augment):
        h.update(Path(mod.__file__).read_bytes())
    for obj in (data.DeviceBatches, TrainConfig, split_counts, make_split, load_split,
                group_masks, build_model, evaluate, train_one):
        h.update(inspect.getsource(obj).encode())
    return h.hexdigest()[:16]


def fingerprint(name: str, spec: losses.LossSpec, tcfg: TrainConfig, seed: int,
                split_info: Mapping[str, Any]) -> str:
    """Hash of everything a run's result depends on (reuse only when it matches)."""
    key = {"name": name, "spec": spec.as_dict(), "train": tcfg.identity(), "seed": seed,
           "split": dict(split_info), "source": _source_hash(), "torch": torch.__version__}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def build_model(tcfg: TrainConfig, device: torch.device) -> torch.nn.Module:
    model = resnet.resnet18_cifar(width=tcfg.width, blocks=tcfg.blocks,
                                  stem_stride=tcfg.stem_stride).to(device)
    return model.to(memory_format=runtime.memory_format(tcfg.channels_last, device))


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, tcfg: TrainConfig,
             num_classes: int = 10) -> dict[str, Any]:
    """Test accuracy (%) by group, per-class accuracy and the confusion matrix (counts)."""
    model.eval()
    preds = []
    use_amp = tcfg.bf16 and x.device.type == "cuda"
    fmt = runtime.memory_format(tcfg.channels_last, x.device)
    for lo in range(0, len(x), tcfg.eval_batch):
        xb = augment.normalize(x[lo: lo + tcfg.eval_batch], memory_format=fmt)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_amp):
            preds.append(model(xb).argmax(1))
    pred = torch.cat(preds)
    correct = (pred == y).float()
    out = {g: float(correct[m].mean() * 100) if bool(m.any()) else float("nan")
           for g, m in group_masks(y).items()}
    conf = torch.zeros(num_classes, num_classes, dtype=torch.long, device=y.device)
    conf.index_put_((y, pred), torch.ones_like(y), accumulate=True)
    conf = conf.cpu()
    out["per_class"] = (conf.diag().float() / conf.sum(1).clamp_min(1) * 100).tolist()
    out["confusion"] = conf.tolist()
    return out


def train_one(name: str, spec: losses.LossSpec, tcfg: TrainConfig, split: SplitData, seed: int,
              device: torch.device, ckpt_path: Path | None = None, deadline: float | None = None,
              max_epochs_per_call: int | None = None, show_progress: bool = True,
              ckpt_key: str | None = None) -> dict[str, Any] | None:
    """Train one (config, seed); return its result record, or ``None`` if stopped early.

    Stops (after checkpointing) when ``time.time() > deadline`` at an epoch boundary or after
    ``max_epochs_per_call`` epochs; a later call with the same ``ckpt_path`` resumes exactly.
    The checkpoint stores ``ckpt_key`` (default: the run's :func:`fingerprint`); one with
    another key, or already at or past ``tcfg.epochs``, raises ``ValueError``.
    """
    runtime.seed_everything(seed, deterministic=tcfg.deterministic)
    if device.type == "cuda" and not tcfg.deterministic:
        torch.backends.cudnn.benchmark = True
    tx, ty = (split.balanced_x, split.balanced_y) if spec.balanced_data else (split.train_x,
                                                                               split.train_y)
    counts = data.class_counts(ty)
    loss_fn = spec.build(counts, device)
    model = build_model(tcfg, device)
    opt = torch.optim.SGD(model.parameters(), lr=tcfg.lr_at(1), momentum=tcfg.momentum,
                          weight_decay=tcfg.weight_decay)
    batches = data.DeviceBatches(tx, ty, batch_size=tcfg.batch_size, shuffle=True, seed=seed)
    aug_gen = torch.Generator(device=device).manual_seed(seed + 1_000_003)
    log = training.EpochLog(device)
    history: list[dict[str, Any]] = []
    eval_seconds: list[float] = []
    start_epoch = 1
    state: dict[str, Any] | None = None
    if ckpt_path is not None:
        if ckpt_key is None:
            ckpt_key = fingerprint(name, spec, tcfg, seed, split.info)
        state = training.load_checkpoint(ckpt_path, map_location=device)
    if state is not None:
        if state.get("key") != ckpt_key:
            raise ValueError(f"checkpoint {ckpt_path} belongs to run {state.get('key')!r}, not "
                             f"{ckpt_key!r} (other settings); delete it or use another path")
        if state["epoch"] >= tcfg.epochs:
            raise ValueError(f"checkpoint {ckpt_path} is at epoch {state['epoch']} but the run "
                             f"has {tcfg.epochs} epochs; delete it or use another path")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        batches.generator.set_state(state["batch_rng"].cpu())
        aug_gen.set_state(state["aug_rng"].cpu())
        log.seconds, log.samples, log.rows = state["log"]["seconds"], state["log"]["samples"], state["log"]["rows"]
        history, eval_seconds = state["history"], state["eval_seconds"]
        start_epoch = state["epoch"] + 1
    step_model = torch.compile(model) if tcfg.compile else model
    use_amp = tcfg.bf16 and device.type == "cuda"
    fmt = runtime.memory_format(tcfg.channels_last, device)

    def save(epoch: int) -> None:
        if ckpt_path is None:
            return
        training.save_checkpoint(ckpt_path, {
            "key": ckpt_key, "epoch": epoch, "model": model.state_dict(), "opt": opt.state_dict(),
            "batch_rng": batches.generator.get_state(), "aug_rng": aug_gen.get_state(),
            "log": {"seconds": log.seconds, "samples": log.samples, "rows": log.rows},
            "history": history, "eval_seconds": eval_seconds})

    done_this_call = 0
    for epoch in range(start_epoch, tcfg.epochs + 1):
        stop = ((deadline is not None and time.time() > deadline)
                or (max_epochs_per_call is not None and done_this_call >= max_epochs_per_call))
        if stop:
            save(epoch - 1)
            return None
        lr = tcfg.lr_at(epoch)
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        log.start()
        loss_sum = torch.zeros((), device=device)
        n_steps = min(len(batches), tcfg.steps_per_epoch or len(batches))
        seen = 0
        it: Iterable = zip(range(n_steps), batches)
        if show_progress:
            it = training.progress(it, f"{name} s{seed} ep{epoch}", total=n_steps)
        for _, (xb, yb) in it:
            if tcfg.augment:
                xb = augment.random_crop_flip(xb, generator=aug_gen)
            xin = augment.normalize(xb, memory_format=fmt)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = step_model(xin)
            loss = loss_fn(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(yb)
            seen += len(yb)
        train_loss = float(loss_sum) / seen
        training.check_finite(train_loss, f"training loss of {name} (seed {seed})", f"epoch {epoch}")
        log.end(seen, train_loss=train_loss, lr=lr)
        t0 = time.perf_counter()
        ev = evaluate(step_model, split.test_x, split.test_y, tcfg)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        eval_seconds.append(time.perf_counter() - t0)
        history.append({"epoch": epoch, "lr": lr, "train_loss": train_loss,
                        "minority": ev["minority"], "majority": ev["majority"], "all": ev["all"],
                        "train_seconds": log.seconds[-1]})
        done_this_call += 1
        if epoch % tcfg.ckpt_every == 0 and epoch < tcfg.epochs:
            save(epoch)
    final = history[-1]
    record = {
        "name": name, "slug": losses.slug(name), "seed": seed, "spec": spec.as_dict(),
        "train": tcfg.identity(), "train_counts": counts,
        "final": {k: final[k] for k in ("minority", "majority", "all")},
        "per_class": ev["per_class"], "confusion": ev["confusion"], "history": history,
        "timing": {**log.summary(), "eval_seconds_total": round(sum(eval_seconds), 2),
                   "compile": tcfg.compile},
        "device": runtime.device_name(device),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if ckpt_path is not None and Path(ckpt_path).exists():
        Path(ckpt_path).unlink()
    return record


# --------------------------------------------------------------------------- sweeps
@dataclass
class SweepResult:
    records: dict[tuple[str, int], dict[str, Any]]
    loaded: list[tuple[str, int]]
    trained: list[tuple[str, int]]
    pending: list[tuple[str, int]]

    def describe(self) -> str:
        return (f"{len(self.records)} runs finished ({len(self.loaded)} reused from per-run "
                f"files, {len(self.trained)} trained now), {len(self.pending)} pending")


def run_path(runs_dir: Path, name: str, seed: int) -> Path:
    return Path(runs_dir) / f"{losses.slug(name)}_seed{seed}.json"


def load_run(path: Path, fp: str) -> dict[str, Any] | None:
    """The record at ``path`` if it exists and its fingerprint is ``fp`` (else ``None``)."""
    try:
        with open(path) as f:
            rec = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    return rec if rec.get("fingerprint") == fp else None


def run_sweep(names: Sequence[str], seeds: Sequence[int], tcfg: TrainConfig, split: SplitData,
              device: torch.device, runs_dir: Path, ckpt_dir: Path | None = None,
              budget_s: float | None = None, max_epochs_per_call: int | None = None,
              show_progress: bool = True, verbose: bool = True) -> SweepResult:
    """Train every (config, seed) not already finished; seed-major order, so a time budget
    still gives every config its first seed before any gets a second.

    Finished runs are read from / written to ``runs_dir``; interrupted runs resume from
    ``ckpt_dir``. ``budget_s`` stops at the next epoch boundary once exceeded (the run in
    progress is checkpointed and listed as pending).
    """
    specs = losses.study_configs()
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise ValueError(f"unknown loss configs {unknown}; known: {list(specs)}")
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = Path(ckpt_dir) if ckpt_dir is not None else runs_dir / "ckpt"
    deadline = None if budget_s is None else time.time() + float(budget_s)
    res = SweepResult({}, [], [], [])
    for seed in seeds:
        for name in names:
            spec = specs[name]
            fp = fingerprint(name, spec, tcfg, seed, split.info)
            path = run_path(runs_dir, name, seed)
            rec = load_run(path, fp)
            if rec is not None:
                res.records[(name, seed)] = rec
                res.loaded.append((name, seed))
                continue
            if deadline is not None and time.time() > deadline:
                res.pending.append((name, seed))
                continue
            t0 = time.perf_counter()
            rec = train_one(name, spec, tcfg, split, seed, device,
                            ckpt_path=ckpt_dir / f"{losses.slug(name)}_seed{seed}_{fp}.pt",
                            deadline=deadline, max_epochs_per_call=max_epochs_per_call,
                            show_progress=show_progress, ckpt_key=fp)
            if rec is None:
                res.pending.append((name, seed))
                continue
            rec["fingerprint"] = fp
            rec["wall_seconds"] = round(time.perf_counter() - t0, 2)
            atomic_write_json(path, rec)
            res.records[(name, seed)] = rec
            res.trained.append((name, seed))
            if verbose:
                f = rec["final"]
                print(f"  {name:24s} seed {seed}: all {f['all']:.2f}  minority {f['minority']:.2f}"
                      f"  majority {f['majority']:.2f}  ({rec['wall_seconds']:.0f} s, "
                      f"{rec['timing'].get('samples_per_second', float('nan')):.0f} img/s)",
                      flush=True)
    return res


# --------------------------------------------------------------------------- summaries
def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof=1; NaN for one value) and count."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan"), len(v)


def fmt_pm(m: float, s: float, n: int, digits: int = 2) -> str:
    if n == 0 or not math.isfinite(m):
        return "not run"
    if n == 1 or not math.isfinite(s):
        return f"{m:.{digits}f} (1 seed)"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def paired_difference(records: Mapping[tuple[str, int], Mapping[str, Any]], a: str, b: str,
                      group: str = "all") -> dict[str, float]:
    """Paired (same seed: same init, data order and augmentation) difference a − b in %.

    Returns mean, sample std, n and a two-sided 95% t confidence interval of the mean
    (NaN bounds when n < 2).
    """
    seeds = sorted({s for (n, s) in records if n == a} & {s for (n, s) in records if n == b})
    d = [records[(a, s)]["final"][group] - records[(b, s)]["final"][group] for s in seeds]
    m, sd, n = mean_std(d)
    if n >= 2:
        from scipy import stats

        half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        lo, hi = m - half, m + half
    else:
        lo = hi = float("nan")
    return {"mean": m, "std": sd, "n": n, "ci_low": lo, "ci_high": hi}


def study_consistency(rows: Mapping[str, tuple[float, float, float]], n_minority: int = 3000,
                      n_majority: int = 7000, tol: float = 0.05) -> list[dict[str, Any]]:
    """For the study's (majority, minority, all) rows: the All implied by the two groups.

    On the full test set All = (7000·majority + 3000·minority)/10000 exactly; an All outside
    [min(groups), max(groups)] is impossible. ``tol``: allowed gap (numbers given to two
    decimals agree to ≈0.005 if they come from one set of predictions).
    """
    out = []
    for name, (maj, mino, allv) in rows.items():
        implied = (n_majority * maj + n_minority * mino) / (n_majority + n_minority)
        out.append({"config": name, "majority": maj, "minority": mino, "all (reported)": allv,
                    "all (implied by groups)": round(implied, 2),
                    "gap": round(allv - implied, 2),
                    "consistent": abs(allv - implied) <= tol
                    and min(maj, mino) <= allv <= max(maj, mino)})
    return out


# --------------------------------------------------------------------------- analysis (notebook 06)
# Reporting only: none of this enters a run's fingerprint (see _source_hash).
GROUPS: tuple[str, ...] = ("majority", "minority", "all")
Records = Mapping[tuple[str, int], Mapping[str, Any]]


def stats_of(records: Records, seeds: Sequence[int], name: str, group: str) -> tuple[float, float, int]:
    """Mean, sample std and count of ``name``'s final ``group`` accuracy over the seeds run."""
    return mean_std([records[(name, s)]["final"][group] for s in seeds if (name, s) in records])


def configs_run(records: Records, seeds: Sequence[int], names: Iterable[str]) -> list[str]:
    """The configurations of ``names`` with at least one finished seed, in that order."""
    return [n for n in names if any((n, s) in records for s in seeds)]


def _ci(d: Mapping[str, float]) -> str:
    return "n/a" if not math.isfinite(d["ci_low"]) else f"[{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]"


def _resolved(d: Mapping[str, float]) -> str:
    return ("n/a (<2 seeds)" if d["n"] < 2 else
            "yes" if d["ci_low"] > 0 or d["ci_high"] < 0 else "no")


def summary_table(records: Records, seeds: Sequence[int], names: Iterable[str],
                  study: Mapping[str, tuple[float, float, float]]):
    """Ours (mean ± std over seeds) beside the study's single runs, per configuration: a
    ``pandas.DataFrame`` with columns ``ours <group>``, ``seeds``, ``study <group>``."""
    import pandas as pd

    rows = []
    for name in names:
        row: dict[str, Any] = {"config": name}
        for g in GROUPS:
            row[f"ours {g}"] = fmt_pm(*stats_of(records, seeds, name, g))
        row["seeds"] = stats_of(records, seeds, name, "all")[2]
        for g, v in zip(GROUPS, study[name]):
            row[f"study {g}"] = v
        rows.append(row)
    return pd.DataFrame(rows).set_index("config")


def paired_table(records: Records, ran: Sequence[str], reference: str = "CE"):
    """Paired differences to ``reference`` (same seed) per configuration and group, with 95 %
    t intervals and whether the All difference is resolved (its interval excludes 0)."""
    import pandas as pd

    rows = []
    for name in ran:
        if name in (reference, "balanced CE"):
            continue
        row: dict[str, Any] = {"config": name}
        for g in ("minority", "majority", "all"):
            d = paired_difference(records, name, reference, g)
            row[f"Δ{g} vs {reference}"] = fmt_pm(d["mean"], d["std"], d["n"])
            row[f"95% CI {g}"] = _ci(d)
        dall = paired_difference(records, name, reference, "all")
        row["n"] = dall["n"]
        row["all: resolved?"] = _resolved(dall)
        rows.append(row)
    return pd.DataFrame(rows).set_index("config") if rows else pd.DataFrame()


def best_of(records: Records, seeds: Sequence[int], ran: Sequence[str],
            specs: Mapping[str, losses.LossSpec], pred) -> str | None:
    """The configuration among ``ran`` whose spec satisfies ``pred`` with the highest mean All."""
    cands = [n for n in ran if pred(specs[n])]
    return max(cands, key=lambda n: stats_of(records, seeds, n, "all")[0]) if cands else None


def best_pair_difference(records: Records, seeds: Sequence[int], names: Sequence[str]) -> str | None:
    """One line: the best minus the runner-up of ``names`` on All (paired, with its interval)."""
    by_all = sorted(names, key=lambda n: -stats_of(records, seeds, n, "all")[0])
    if len(by_all) < 2:
        return None
    d = paired_difference(records, by_all[0], by_all[1], "all")
    return (f"best vs runner-up on All: {by_all[0]} − {by_all[1]} = "
            f"{fmt_pm(d['mean'], d['std'], d['n'])} points, 95% CI {_ci(d)}")


def plot_effective_number(ax_curve, ax_ratio, weight_rows: Mapping[str, torch.Tensor]) -> None:
    """Left: E_n against n for every β (Cui et al. Fig. 3), the study's 250 and 5,000 marked
    and labelled. Right: the minority/majority weight ratio of each weighting."""
    n = np.unique(np.round(np.logspace(0, 4, 200)).astype(int))
    for b in losses.BETAS:
        ax_curve.plot(n, losses.effective_number(n, b).numpy(), label=f"β = {b:g}")
    ax_curve.plot(n, n, "k--", lw=1, label="β → 1 (E_n = n)")
    ax_curve.axhline(1, color="gray", lw=1, ls=":", label="β = 0 (E_n = 1)")
    for v, who in ((N_MINORITY, "minority"), (N_MAJORITY, "majority")):
        ax_curve.axvline(v, color="gray", lw=0.8, alpha=0.6)
        ax_curve.annotate(f"n = {v:,} ({who})", (v, 1.3), rotation=90, ha="right", va="bottom",
                          fontsize=8, color="dimgray", xytext=(-2, 0), textcoords="offset points")
    ax_curve.set(xscale="log", yscale="log", xlabel="number of samples n",
                 ylabel="effective number E_n", title="E_n = (1 − βⁿ)/(1 − β)  (Cui et al. Fig. 3)")
    ax_curve.legend(fontsize=8, loc="upper left")
    ratio = {k: float(w[MINORITY_CLASSES[0]] / w[0]) for k, w in weight_rows.items()}
    ax_ratio.bar(range(len(ratio)), list(ratio.values()))
    ax_ratio.set_xticks(range(len(ratio)), list(ratio.keys()), rotation=30, ha="right")
    ax_ratio.set(yscale="log", ylabel="w(minority) / w(majority)",
                 title=f"weight ratio, {N_MINORITY:,} vs {N_MAJORITY:,} images")


def plot_curves_by_group(axes, records: Records, seeds: Sequence[int], shown: Sequence[str]) -> None:
    """Test accuracy per epoch for ``shown`` configurations, one panel per group (minority,
    majority, all): mean over seeds with a min–max band. Curves that coincide (e.g. CE and
    focal loss at small γ) stay visible: each has its own line style and hollow marker and a
    small horizontal offset."""
    from matplotlib.ticker import MaxNLocator   # reporting only: training never imports matplotlib

    from . import plots

    width = 0.08 * (len(shown) - 1)
    for ax, g in zip(axes, ("minority", "majority", "all")):
        for i, name in enumerate(shown):
            H = np.array([[h[g] for h in records[(name, s)]["history"]]
                          for s in seeds if (name, s) in records])
            ep = np.arange(1, H.shape[1] + 1) + (i * 0.08 - width / 2)
            line, = ax.plot(ep, H.mean(0), label=f"{name} (n={len(H)})", lw=1.6,
                            **plots.line_styles(i))
            ax.fill_between(ep, H.min(0), H.max(0), color=line.get_color(), alpha=0.15)
        ax.set(title=f"{g} test accuracy", xlabel="epoch", ylabel="accuracy (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)


def per_class_table(records: Records, seeds: Sequence[int], ran: Sequence[str]):
    """Final test accuracy per class (mean over seeds), one row per configuration; minority
    classes are marked with ``*``."""
    import pandas as pd

    return pd.DataFrame(
        {n: np.mean([records[(n, s)]["per_class"] for s in seeds if (n, s) in records], axis=0)
         for n in ran}, index=[f"{c}*" if i in MINORITY_CLASSES else c
                               for i, c in enumerate(data.CIFAR_CLASSES)]).T


def plot_per_class(ax, per_class) -> None:
    import seaborn as sns

    sns.heatmap(per_class, annot=True, fmt=".0f", cmap="viridis", vmin=0, vmax=100, ax=ax,
                cbar_kws={"label": "test accuracy (%)"})
    ax.set(title="per-class test accuracy (* = minority class)", xlabel="", ylabel="")


def confusion_percent(records: Records, seeds: Sequence[int], name: str) -> np.ndarray:
    """Confusion matrix summed over seeds, each row in % of its true class."""
    c = np.sum([records[(name, s)]["confusion"] for s in seeds if (name, s) in records], axis=0)
    return c / c.sum(1, keepdims=True) * 100


def plot_confusion(ax, records: Records, seeds: Sequence[int], name: str) -> None:
    import seaborn as sns

    sns.heatmap(confusion_percent(records, seeds, name), annot=True, fmt=".0f", cmap="Blues",
                vmin=0, vmax=100, ax=ax, xticklabels=data.CIFAR_CLASSES,
                yticklabels=data.CIFAR_CLASSES, cbar=False)
    ax.set(title=f"{name}: confusion (% of true class)", xlabel="predicted", ylabel="true")


def findings_table(records: Records, seeds: Sequence[int], ran: Sequence[str], reference: str = "CE"):
    """Per configuration: mean difference to ``reference`` per group and whether the minority
    gain is resolved (paired 95 % interval excludes 0)."""
    import pandas as pd

    ce = {g: stats_of(records, seeds, reference, g)[0] for g in GROUPS}
    rows = []
    for name in ran:
        if name == reference:
            continue
        m = {g: stats_of(records, seeds, name, g)[0] for g in GROUPS}
        rows.append({"config": name,
                     **{f"{g} − {reference}": round(m[g] - ce[g], 2) for g in ("minority", "majority", "all")},
                     "minority gain resolved?": _resolved(paired_difference(records, name, reference, "minority"))})
    return pd.DataFrame(rows).set_index("config") if rows else pd.DataFrame()


def direction_agreement(records: Records, seeds: Sequence[int], ran: Sequence[str],
                        study: Mapping[str, tuple[float, float, float]], reference: str = "CE"
                        ) -> dict[str, dict[str, Any]]:
    """For every re-weighted or focal configuration run: our and the study's change of minority
    and majority accuracy relative to ``reference``, and whether the signs agree."""
    out = {}
    ce = {g: stats_of(records, seeds, reference, g)[0] for g in ("majority", "minority")}
    s_ce = dict(zip(GROUPS, study[reference]))
    for name in ran:
        if name in (reference, "balanced CE"):
            continue
        s = dict(zip(GROUPS, study[name]))
        ours = {g: stats_of(records, seeds, name, g)[0] - ce[g] for g in ("majority", "minority")}
        theirs = {g: s[g] - s_ce[g] for g in ("majority", "minority")}
        out[name] = {"ours": ours, "study": theirs,
                     "agree": all(np.sign(ours[g]) == np.sign(theirs[g]) for g in ("majority", "minority"))}
    return out


def findings_text(records: Records, seeds: Sequence[int], ran: Sequence[str],
                  specs: Mapping[str, losses.LossSpec], study: Mapping[str, tuple[float, float, float]],
                  reduced: bool) -> str:
    """The "what we find" paragraph, written from the numbers (Markdown)."""
    if "CE" not in ran or len(ran) < 2:
        return "Too few configurations finished to compare losses."
    ce = {g: stats_of(records, seeds, "CE", g)[0] for g in GROUPS}
    others = [n for n in ran if n not in ("CE", "balanced CE")]
    top_min = max(others, key=lambda n: stats_of(records, seeds, n, "minority")[0])
    top_all = max(others, key=lambda n: stats_of(records, seeds, n, "all")[0])
    d_min = paired_difference(records, top_min, "CE", "minority")
    d_maj = paired_difference(records, top_min, "CE", "majority")
    d_all = paired_difference(records, top_all, "CE", "all")
    agree = direction_agreement(records, seeds, ran, study)
    k = sum(v["agree"] for v in agree.values())
    s_best = max((n for n in specs if specs[n].kind.startswith("cb_")), key=lambda n: study[n][2])
    parts = [
        f"* **Minority vs majority.** CE reaches {ce['minority']:.1f} % on the minority classes and "
        f"{ce['majority']:.1f} % on the majority. The largest minority gain is {top_min}'s: "
        f"{d_min['mean']:+.1f} points (95 % CI {_ci(d_min)}), at {d_maj['mean']:+.1f} points on the "
        f"majority (paired over {d_min['n']} seed(s)).",
        f"* **All.** The best configuration on All is {top_all}, {d_all['mean']:+.2f} points over CE "
        f"(95 % CI {_ci(d_all)}: " + ("resolved" if _resolved(d_all) == "yes" else "not resolved") + ").",
        f"* **Against the study.** For {k} of {len(agree)} configurations the signs of our minority "
        f"and majority changes relative to CE match the study's; its best CB row by All is "
        f"{s_best} ({study[s_best][2]:.2f} %), ours {top_all}.",
    ]
    if reduced:
        parts.append(f"* **Levels.** Our CE All is {ce['all']:.1f} % against the study's "
                     f"{study['CE'][2]:.1f} %: a reduced run (small model, few epochs), so only the "
                     f"directions above are comparable, not the accuracies.")
    return "\n".join(parts)


def verdict_06(records: Records, seeds: Sequence[int], ran: Sequence[str],
               study: Mapping[str, tuple[float, float, float]], reduced: bool) -> tuple[str, str]:
    """(status, reason) for notebook 06: directions of the trade-off vs the study's, and levels."""
    agree = direction_agreement(records, seeds, ran, study)
    if not agree:
        return "not reproduced", "no re-weighted or focal configuration finished"
    k, m = sum(v["agree"] for v in agree.values()), len(agree)
    gaps = [abs(stats_of(records, seeds, n, "all")[0] - study[n][2]) for n in ran]
    if k == m and not reduced and max(gaps) <= 2.0:
        return "reproduced", ("every configuration's direction matches the study and All is within "
                              "2 points of its single runs")
    if 2 * k >= m:
        return "partly reproduced", (
            f"the direction of the re-weighting trade-off (minority up, majority down, relative to CE) "
            f"matches the study for {k} of {m} configurations, but accuracies differ by up to "
            f"{max(gaps):.0f} points" + (" in this reduced run" if reduced else ""))
    return "not reproduced", (f"the direction of the change relative to CE matches the study for "
                              f"only {k} of {m} configurations")


# --------------------------------------------------------------------------- CLI
def runs_dirs(profile: str) -> tuple[Path, Path]:
    """Persistent (git-ignored) per-run files and checkpoints of a profile, under
    :func:`common.runtime.checkpoint_root` (``checkpoints/``; never there for ``dryrun``)."""
    base = runtime.checkpoint_root(profile) / NOTEBOOK / profile
    return base / "runs", base / "ckpt"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=None, help="smoke | cpu | full (default: auto)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="stop at the next epoch boundary after this many seconds")
    ap.add_argument("--configs", nargs="*", default=None, help="subset of config names")
    ap.add_argument("--seeds", nargs="*", type=int, default=None)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--dry-run", action="store_true",
                    help="build the profile's model and run one training step on 8 images")
    args = ap.parse_args(argv)
    profile = runtime.resolve_profile(args.profile)
    cfg = runtime.pick(CONFIGS, profile)
    tcfg: TrainConfig = cfg["train"]
    if args.compile:
        tcfg = replace(tcfg, compile=True)
    device = runtime.get_device()
    runtime.set_threads(cfg["threads"], device)   # the notebook's policy; $REPRO_THREADS overrides
    if args.dry_run:
        model = build_model(tcfg, device)
        x = torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8, device=device)
        y = torch.arange(8, device=device) % 10
        with torch.autocast(device.type, dtype=torch.bfloat16,
                            enabled=tcfg.bf16 and device.type == "cuda"):
            logits = model(augment.normalize(augment.random_crop_flip(x),
                                             memory_format=runtime.memory_format(tcfg.channels_last, device)))
        loss = losses.cross_entropy(logits, y)
        loss.backward()
        print(f"dry run ok: profile {profile}, {resnet.n_parameters(model):,} parameters, "
              f"loss {float(loss.detach()):.3f} on {device}")
        return 0
    runs, ckpts = runs_dirs(profile)
    split = load_split(device, cfg["n_major"], cfg["n_minor"], cfg["test_per_class"])
    res = run_sweep(args.configs or cfg["configs"], args.seeds or cfg["seeds"], tcfg, split,
                    device, runs, ckpts, budget_s=args.budget_s)
    print(f"profile {profile}: {res.describe()}; per-run files in {runs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
