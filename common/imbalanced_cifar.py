"""Imbalanced CIFAR-10 training and the loss sweep of notebook 06 (class-balanced loss).

The split (the study's): automobile, deer and frog keep a seeded random 250 training images
each, the other seven classes all 5,000. Test: the full 10,000 test images, reported as
minority (the 3 reduced classes), majority (the other 7) and all.

Training (the study's, for the ``full`` profile): CIFAR ResNet-18, 25 epochs, batch 128, SGD
momentum 0.9, weight decay 5e-4, lr 0.1 / 0.01 / 0.001 from epochs 1 / 16 / 21, standard
crop+flip augmentation. The ``cpu`` profile trains an airbench-style network instead
(:mod:`common.fastnet`, K. Jordan 2024) with Nesterov SGD and a linearly decaying learning rate
for a fixed number of epochs. Everything lives on the device: the training set as uint8,
crop/flip batched on the device (:mod:`common.augment`), bf16 autocast where the device computes
bfloat16 natively (:func:`common.runtime.resolve_amp`), channels_last where its kernels want it
(:func:`common.runtime.memory_format`), optional ``torch.compile``.

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

from . import augment, data, fastnet, losses, resnet, runtime, training
from .results import atomic_write_json
from .stats import mean_interval

NOTEBOOK = "06_class_balanced_loss"
MINORITY_CLASSES: tuple[int, ...] = (1, 4, 6)          # automobile, deer, frog
N_MINORITY, N_MAJORITY = 250, 5000
SPLIT_SEED = 0


# --------------------------------------------------------------------------- settings
ARCHS: tuple[str, ...] = ("resnet", "airnet")


@dataclass(frozen=True)
class TrainConfig:
    """Model and optimisation settings of one run (the loss is a :class:`losses.LossSpec`).

    ``arch``: ``"resnet"`` (:func:`common.resnet.resnet18_cifar` with ``width``, ``blocks``,
    ``stem_stride``) or ``"airnet"`` (:class:`common.fastnet.AirNet` with ``width``; ``blocks``
    and ``stem_stride`` unused). ``lr_schedule``: ``"step"`` (×0.1 after each of
    ``lr_milestones``, set per epoch: the study's) or a :func:`common.training.lr_factor` schedule
    set per optimiser step, after a linear warm-up over ``warmup_epochs``. ``bf16``: autocast
    ``True`` / ``False`` / ``"auto"`` (:func:`common.runtime.resolve_amp`); ``channels_last``:
    asked for, granted by :func:`common.runtime.memory_format`.
    """

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
    bf16: bool | str = "auto"         # bf16 autocast: True / False / "auto" (native bf16 only)
    channels_last: bool = True
    arch: str = "resnet"
    nesterov: bool = False
    lr_schedule: str = "step"
    warmup_epochs: float = 0.0
    crop_pad: int = 4                 # random-crop padding (pixels); the flip is always on
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
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.lr_schedule != "step":
            training.check_lr_schedule(self.lr_schedule)
        if self.warmup_epochs < 0 or self.crop_pad < 0:
            raise ValueError(f"warmup_epochs and crop_pad must be ≥ 0: {self}")

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 1-based ``epoch`` under the ``"step"`` schedule:
        lr · 0.1^(number of milestones < epoch)."""
        return self.lr * 0.1 ** sum(epoch > m for m in self.lr_milestones)

    def lr_at_step(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        """Learning rate of optimiser step ``step`` (0-based) of 1-based ``epoch``: :meth:`lr_at`
        for ``"step"``, else lr · :func:`common.training.lr_factor` at the fraction of all
        ``epochs × steps_per_epoch`` steps done."""
        if self.lr_schedule == "step":
            return self.lr_at(epoch)
        done = (epoch - 1) * steps_per_epoch + step
        total = self.epochs * steps_per_epoch
        return self.lr * training.lr_factor(self.lr_schedule, done, done / total,
                                            round(self.warmup_epochs * steps_per_epoch))

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


# The claim under test and its reference (notebook 06's targets and verdict), and the
# configurations that get every seed of a profile (the others get its first seed only).
CLAIM, REFERENCE = "CB-softmax β=0.999", "CE"
KEY_CONFIGS: tuple[str, ...] = (REFERENCE, CLAIM, "logit-adjusted τ=1")
CURVE_CONFIGS: tuple[str, ...] = (REFERENCE, CLAIM)

# The cpu profile's network and optimiser: the airbench-style net at half width (0.49 M
# parameters), the study's lr per example (0.1 per 128 images) scaled linearly to batch 512, its
# momentum and weight decay, Nesterov momentum, one warm-up epoch, then a linear decay to 0
# (airbench's schedule shape); a fixed number of epochs, set by the compute budget: 14 runs of
# 12 epochs and the two 24-epoch runs, about 14 s per epoch on 2 idle Xeon cores in bf16
# (airbench-style nets: about 3,000 images/s), are about 50 minutes.
CPU_TRAIN = TrainConfig(arch="airnet", width=32, epochs=12, lr=0.4, lr_milestones=(),
                        lr_schedule="linear", warmup_epochs=1.0, nesterov=True, batch_size=512,
                        crop_pad=2, bf16="auto", channels_last=True, eval_batch=1000, ckpt_every=1)

# The notebook's profile table (same keys in every profile; see runtime.pick). ``key_configs``
# run every seed in ``seeds``, the other ``configs`` the first seed; ``curve_configs`` run once
# more (first seed) for ``curve_factor`` times the epochs, evaluated after every epoch.
CONFIGS: dict[str, dict[str, Any]] = {
    "smoke": {
        "n_major": 40, "n_minor": 8, "test_per_class": 30,
        "train": replace(CPU_TRAIN, width=4, epochs=2, batch_size=32, eval_batch=500),
        "configs": list(losses.all_configs()), "key_configs": list(KEY_CONFIGS), "seeds": [0, 1],
        "curve_configs": list(CURVE_CONFIGS), "curve_factor": 2,
        "budget_s": None, "demo_interrupt": True, "cache_runs": False, "threads": 1,
    },
    "cpu": {
        "n_major": N_MAJORITY, "n_minor": N_MINORITY, "test_per_class": None,
        "train": CPU_TRAIN,
        "configs": [*KEY_CONFIGS, "CB-softmax β=0.9999", "focal γ=1", "CB-focal γ=1 β=0.999",
                    "inverse frequency", "DRW β=0.9999"],
        "key_configs": list(KEY_CONFIGS), "seeds": [0, 1, 2],
        "curve_configs": list(CURVE_CONFIGS), "curve_factor": 2,
        "budget_s": None, "demo_interrupt": False, "cache_runs": True, "threads": 2,
    },
    "full": {
        "n_major": N_MAJORITY, "n_minor": N_MINORITY, "test_per_class": None,
        "train": TrainConfig(),
        "configs": list(losses.all_configs()), "key_configs": list(losses.all_configs()),
        "seeds": [0, 1, 2], "curve_configs": list(CURVE_CONFIGS), "curve_factor": 2,
        "budget_s": None, "demo_interrupt": False, "cache_runs": True, "threads": None,
    },
}
# dryrun (make dryrun): the full entry (ResNet-18, batch 128, every config and seed: 48 runs, and
# the two curve runs) with one epoch of one optimiser step per run (about 6 s each on a shared
# 2-core CPU) and 10 test images per class, nothing else changed (tests/test_dryrun.py).
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
    h.update(runtime.file_digest(runtime.code_files("losses", "resnet", "fastnet", "augment")).encode())
    for obj in (data.DeviceBatches, TrainConfig, split_counts, make_split, load_split,
                group_masks, build_model, evaluate, train_one, numerics, training.lr_factor):
        h.update(inspect.getsource(obj).encode())
    return h.hexdigest()[:16]


def numerics(tcfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    """What ``tcfg``'s precision and layout switches resolve to on ``device``: bf16 autocast
    (:func:`common.runtime.resolve_amp`) and the memory format
    (:func:`common.runtime.memory_format`). Recorded with every run and part of its fingerprint."""
    fmt = runtime.memory_format(tcfg.channels_last, device)
    return {"bf16_autocast": runtime.resolve_amp(tcfg.bf16, device),
            "memory_format": "channels_last" if fmt == torch.channels_last else "contiguous",
            "device_type": device.type}


def fingerprint(name: str, spec: losses.LossSpec, tcfg: TrainConfig, seed: int,
                split_info: Mapping[str, Any], device: torch.device | None = None) -> str:
    """Hash of everything a run's result depends on (reuse only when it matches); with
    ``device``, also what the precision switches resolve to there (:func:`numerics`)."""
    key = {"name": name, "spec": spec.as_dict(), "train": tcfg.identity(), "seed": seed,
           "split": dict(split_info), "source": _source_hash(), "torch": torch.__version__}
    if device is not None:
        key["numerics"] = numerics(tcfg, device)
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def build_model(tcfg: TrainConfig, device: torch.device) -> torch.nn.Module:
    """``tcfg``'s network (:data:`ARCHS`) on ``device`` in its memory format."""
    if tcfg.arch == "airnet":
        model: torch.nn.Module = fastnet.AirNet(width=tcfg.width)
    else:
        model = resnet.resnet18_cifar(width=tcfg.width, blocks=tcfg.blocks,
                                      stem_stride=tcfg.stem_stride)
    return model.to(device).to(memory_format=runtime.memory_format(tcfg.channels_last, device))


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, tcfg: TrainConfig,
             num_classes: int = 10) -> dict[str, Any]:
    """Test accuracy (%) by group, per-class accuracy and the confusion matrix (counts)."""
    model.eval()
    preds = []
    use_amp = runtime.resolve_amp(tcfg.bf16, x.device)
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
    model = build_model(tcfg, device)
    opt = torch.optim.SGD(model.parameters(), lr=tcfg.lr_at(1), momentum=tcfg.momentum,
                          weight_decay=tcfg.weight_decay, nesterov=tcfg.nesterov)
    batches = data.DeviceBatches(tx, ty, batch_size=tcfg.batch_size, shuffle=True, seed=seed)
    aug_gen = torch.Generator(device=device).manual_seed(seed + 1_000_003)
    log = training.EpochLog(device)
    history: list[dict[str, Any]] = []
    eval_seconds: list[float] = []
    start_epoch = 1
    state: dict[str, Any] | None = None
    if ckpt_path is not None:
        if ckpt_key is None:
            ckpt_key = fingerprint(name, spec, tcfg, seed, split.info, device)
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
    use_amp = runtime.resolve_amp(tcfg.bf16, device)
    fmt = runtime.memory_format(tcfg.channels_last, device)
    n_steps = min(len(batches), tcfg.steps_per_epoch or len(batches))

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
        lr = tcfg.lr_at_step(epoch, 0, n_steps)
        loss_fn = spec.build(counts, device, epoch=epoch, epochs=tcfg.epochs)   # DRW: per epoch
        model.train()
        log.start()
        loss_sum = torch.zeros((), device=device)
        seen = 0
        it: Iterable = zip(range(n_steps), batches)
        if show_progress:
            it = training.progress(it, f"{name} s{seed} ep{epoch}", total=n_steps)
        for step, (xb, yb) in it:
            for g in opt.param_groups:
                g["lr"] = tcfg.lr_at_step(epoch, step, n_steps)
            if tcfg.augment:
                xb = augment.random_crop_flip(xb, pad=tcfg.crop_pad, generator=aug_gen)
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
        "numerics": numerics(tcfg, device), "torch_threads": torch.get_num_threads(),
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


def describe_reader(res: SweepResult) -> str:
    """What a rendered page says of a sweep: runs trained now, and runs reused from an earlier
    render with their own recorded training time (no file or cache words)."""
    done = f"{len(res.records)} runs finished: {len(res.trained)} trained now"
    if res.loaded:
        done += (f", {len(res.loaded)} reused from an earlier render on the same code and settings "
                 f"({reused_seconds([res]) / 60:.1f} min of training when they ran)")
    return done + (f"; {len(res.pending)} pending" if res.pending else "")


def reused_seconds(results: Iterable[SweepResult]) -> float:
    """Recorded wall seconds of the runs ``results`` reused rather than trained."""
    def seconds(rec: Mapping[str, Any]) -> float:
        t = rec.get("timing") or {}
        if t.get("total_seconds") is not None:   # summed over every segment the run took
            return float(t["total_seconds"]) + float(t.get("eval_seconds_total") or 0.0)
        return float(rec.get("wall_seconds") or 0.0)

    return round(sum(seconds(r.records[k]) for r in results for k in r.loaded), 1)


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


def sweep_plan(names: Sequence[str], seeds: Sequence[int],
               key_configs: Sequence[str] | None = None) -> list[tuple[str, int]]:
    """The (config, seed) runs of a sweep in seed-major order (every config's first seed before
    any second seed): configs in ``key_configs`` (default: all) get every seed, the others the
    first one only."""
    every = set(names if key_configs is None else key_configs)
    return [(n, s) for i, s in enumerate(seeds) for n in names if i == 0 or n in every]


def run_sweep(names: Sequence[str], seeds: Sequence[int], tcfg: TrainConfig, split: SplitData,
              device: torch.device, runs_dir: Path, ckpt_dir: Path | None = None,
              budget_s: float | None = None, max_epochs_per_call: int | None = None,
              show_progress: bool = True, verbose: bool = True,
              key_configs: Sequence[str] | None = None) -> SweepResult:
    """Train every (config, seed) of :func:`sweep_plan` not already finished, in its order, so a
    time budget still gives every config its first seed before any gets a second.

    Finished runs are read from / written to ``runs_dir``; interrupted runs resume from
    ``ckpt_dir``. ``budget_s`` stops at the next epoch boundary once exceeded (the run in
    progress is checkpointed and listed as pending).
    """
    specs = losses.all_configs()
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise ValueError(f"unknown loss configs {unknown}; known: {list(specs)}")
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = Path(ckpt_dir) if ckpt_dir is not None else runs_dir / "ckpt"
    deadline = None if budget_s is None else time.time() + float(budget_s)
    res = SweepResult({}, [], [], [])
    for name, seed in sweep_plan(names, seeds, key_configs):
        spec = specs[name]
        fp = fingerprint(name, spec, tcfg, seed, split.info, device)
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



def scaled_epochs(tcfg: TrainConfig, factor: int) -> TrainConfig:
    """``tcfg`` with ``factor`` times the epochs (step-schedule milestones scaled alike): the
    schedule of the "what more compute buys" runs."""
    if int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    return replace(tcfg, epochs=tcfg.epochs * factor,
                   lr_milestones=tuple(m * factor for m in tcfg.lr_milestones))


CURVES_SUBDIR = "curves"   # the longer runs' files, beside the main sweep's (same names)


def run_profile(cfg: Mapping[str, Any], tcfg: TrainConfig, split: SplitData, device: torch.device,
                runs_dir: Path, ckpt_dir: Path | None = None, budget_s: float | None = None,
                max_epochs_per_call: int | None = None, names: Sequence[str] | None = None,
                seeds: Sequence[int] | None = None, show_progress: bool = True,
                verbose: bool = True) -> dict[str, SweepResult]:
    """Everything a profile entry ``cfg`` trains, under one budget: ``"main"``, the sweep of
    its ``configs`` (``names`` if given) over ``seeds`` (its ``key_configs`` on every seed), and
    ``"curves"``, its ``curve_configs`` on the first seed for ``curve_factor`` times the epochs
    (:func:`scaled_epochs`, files under ``runs_dir / CURVES_SUBDIR``)."""
    t0 = time.time()
    seeds = list(seeds or cfg["seeds"])
    kw = dict(max_epochs_per_call=max_epochs_per_call, show_progress=show_progress,
              verbose=verbose)
    main = run_sweep(list(names or cfg["configs"]), seeds, tcfg, split, device, runs_dir, ckpt_dir,
                     budget_s=budget_s, key_configs=cfg["key_configs"], **kw)
    left = None if budget_s is None else float(budget_s) - (time.time() - t0)
    curves = run_sweep(cfg["curve_configs"], seeds[:1], scaled_epochs(tcfg, cfg["curve_factor"]),
                       split, device, Path(runs_dir) / CURVES_SUBDIR, ckpt_dir, budget_s=left, **kw)
    return {"main": main, "curves": curves}


def sweep_status(sweeps: Mapping[str, SweepResult]) -> dict[str, Any]:
    """Whether every planned run of ``sweeps`` (name -> result) finished, for ``metrics.json``:
    ``finished`` is false when any run is pending (a budget or ``max_epochs_per_call`` stopped
    it), which :func:`common.reproduce.unfinished_parts` reads as an unfinished render (exit 3,
    nothing published); per sweep its finished count and pending runs."""
    parts = {k: {"finished": not r.pending, "runs_finished": len(r.records),
                 "pending": [f"{n}|seed{s}" for n, s in r.pending]} for k, r in sweeps.items()}
    return {"finished": all(v["finished"] for v in parts.values()), "sweeps": parts}

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
    d = mean_interval([records[(a, s)]["final"][group] - records[(b, s)]["final"][group] for s in seeds])
    return {"mean": d["mean"], "std": d["std"], "n": d["n"], "ci_low": d["low"], "ci_high": d["high"]}


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

# Notebook 06's targets, stated in its claim cell before any result (percent / points).
CE_TARGET_ALL, CE_TARGET_MINORITY = 75.0, 40.0
CLAIM_TARGET_GAIN, CLAIM_TARGET_ALL_LOSS = 10.0, 1.0


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
    ``pandas.DataFrame`` with columns ``ours <group>``, ``seeds``, ``study <group>`` ("—" where
    the study has no such row) and ``study row consistent?`` (:func:`study_consistency`: "NO"
    flags a row whose All cannot come from its own groups)."""
    import pandas as pd

    consistent = {r["config"]: r["consistent"] for r in study_consistency(study)}
    rows = []
    for name in names:
        row: dict[str, Any] = {"config": name}
        for g in GROUPS:
            row[f"ours {g}"] = fmt_pm(*stats_of(records, seeds, name, g))
        row["seeds"] = stats_of(records, seeds, name, "all")[2]
        for g, v in zip(GROUPS, study.get(name, ("—",) * len(GROUPS))):
            row[f"study {g}"] = v
        row["study row consistent?"] = ("—" if name not in consistent else
                                        "yes" if consistent[name] else "NO")
        rows.append(row)
    return pd.DataFrame(rows).set_index("config")


def paired_table(records: Records, ran: Sequence[str], reference: str = REFERENCE):
    """Paired differences to ``reference`` (same seed) per configuration and group, with 95 %
    t intervals and whether the minority and All differences are resolved (interval excludes 0)."""
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
        row["n"] = paired_difference(records, name, reference, "all")["n"]
        for g in ("minority", "all"):
            row[f"{g}: resolved?"] = _resolved(paired_difference(records, name, reference, g))
        rows.append(row)
    return pd.DataFrame(rows).set_index("config") if rows else pd.DataFrame()


def _paired_values(records: Records, a: str, b: str, group: str) -> list[float]:
    seeds = sorted({s for (n, s) in records if n == a} & {s for (n, s) in records if n == b})
    return [records[(a, s)]["final"][group] - records[(b, s)]["final"][group] for s in seeds]


def targets(records: Records, seeds: Sequence[int], claim: str = CLAIM,
            reference: str = REFERENCE) -> list[dict[str, Any]]:
    """Notebook 06's targets, checked against the runs: ``reference`` (CE) reaches
    :data:`CE_TARGET_ALL` % on all classes and :data:`CE_TARGET_MINORITY` % on the minority
    (seed means); ``claim`` beats it on minority accuracy by :data:`CLAIM_TARGET_GAIN` points on
    every seed of ``seeds`` (paired) and loses at most :data:`CLAIM_TARGET_ALL_LOSS` points of
    all-class accuracy (mean paired difference). ``met`` is ``None`` when a run is missing."""
    ce_all, _, n_all = stats_of(records, seeds, reference, "all")
    ce_min, _, _ = stats_of(records, seeds, reference, "minority")
    gains = _paired_values(records, claim, reference, "minority")
    d_all = paired_difference(records, claim, reference, "all")
    complete = len(gains) == len(seeds)
    return [
        {"target": f"{reference} all-class accuracy ≥ {CE_TARGET_ALL:g} %",
         "measured": f"{ce_all:.2f} % (mean of {n_all})",
         "met": None if n_all == 0 else ce_all >= CE_TARGET_ALL},
        {"target": f"{reference} minority accuracy ≥ {CE_TARGET_MINORITY:g} %",
         "measured": f"{ce_min:.2f} % (mean of {n_all})",
         "met": None if n_all == 0 else ce_min >= CE_TARGET_MINORITY},
        {"target": f"{claim} minority ≥ {reference} minority + {CLAIM_TARGET_GAIN:g} points on "
                   f"every seed (paired)",
         "measured": "gains " + ", ".join(f"{g:+.2f}" for g in gains) + f" ({len(gains)} seeds)",
         "met": None if not complete else all(g >= CLAIM_TARGET_GAIN for g in gains)},
        {"target": f"{claim} all-class accuracy not below {reference} by more than "
                   f"{CLAIM_TARGET_ALL_LOSS:g} point (mean paired difference)",
         "measured": f"{d_all['mean']:+.2f} points, 95% CI {_ci(d_all)}",
         "met": None if not complete else d_all["mean"] >= -CLAIM_TARGET_ALL_LOSS},
    ]


def verdict(records: Records, reduced: bool, finished: bool, claim: str = CLAIM,
            reference: str = REFERENCE) -> tuple[str, str]:
    """(status, sentence) for notebook 06 from its claim cell's rule, through
    :func:`common.report.claims_verdict` (one vocabulary for every notebook).

    Two claims: ``claim`` raises minority accuracy over ``reference`` (paired 95 % t interval
    above 0, ≥ 2 seeds), and it does so without costing all-class accuracy (that interval not
    entirely below 0); a sweep with runs pending adds a failed "the sweep finished". Reduced
    profiles: ``effect shown (reduced)`` / ``not shown (reduced)``; the study's setting:
    ``reproduced`` / ``not reproduced``; the sentence names each claim with its number."""
    from .report import claims_verdict, interval_text, unfinished_claim

    d_min = paired_difference(records, claim, reference, "minority")
    d_all = paired_difference(records, claim, reference, "all")
    wins = sum(g > 0 for g in _paired_values(records, claim, reference, "minority"))
    checks = [
        {"claim": f"{claim} raises minority accuracy over {reference}",
         "measured": f"{d_min['mean']:+.1f} points ({interval_text(d_min, 1)}, higher on {wins}/{d_min['n']} seeds)",
         "met": d_min["n"] >= 2 and d_min["ci_low"] > 0},
        {"claim": "without costing all-class accuracy",
         "measured": f"all-class change {d_all['mean']:+.1f} points ({interval_text(d_all, 1)})",
         "met": not (d_all["n"] >= 2 and d_all["ci_high"] < 0)},
    ]
    return claims_verdict(checks + ([] if finished else [unfinished_claim()]), reduced)


def plot_effective_number(ax_curve, ax_ratio, weight_rows: Mapping[str, torch.Tensor]) -> None:
    """Left: E_n against n for every β (Cui et al. Fig. 3), the study's 250 and 5,000 marked
    and labelled. Right: the minority/majority weight ratio of each weighting, each bar labelled
    with its value, on a log axis with plain-number ticks (1, 2, 5, 10, 20)."""
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

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
    bars = ax_ratio.bar(range(len(ratio)), list(ratio.values()))
    ax_ratio.bar_label(bars, labels=[f"{r:.3g}×" for r in ratio.values()], fontsize=8)
    ax_ratio.set_xticks(range(len(ratio)), list(ratio.keys()), rotation=30, ha="right")
    ax_ratio.set(yscale="log", ylabel="w(minority) / w(majority)",
                 title=f"weight ratio, {N_MINORITY:,} vs {N_MAJORITY:,} images")
    ax_ratio.yaxis.set_major_locator(FixedLocator([1, 2, 5, 10, 20, 50]))
    ax_ratio.yaxis.set_major_formatter(ScalarFormatter())
    ax_ratio.yaxis.set_minor_locator(NullLocator())
    ax_ratio.set_ylim(0.8, max(ratio.values()) * 1.6)


def plot_curves_by_group(axes, records: Records, seeds: Sequence[int], shown: Sequence[str]) -> None:
    """Test accuracy per epoch for the ``shown`` configurations (fixed in advance, never a
    "best" picked from the runs), one panel per group (minority, majority, all): mean over
    seeds with a min–max band, on the full 0–100 % scale. Each configuration has its own line
    style and hollow marker and a small horizontal offset, so coinciding curves stay visible."""
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
        ax.set(title=f"{g} test accuracy", xlabel="epoch", ylabel="accuracy (%)", ylim=(0, 100))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)


def more_compute_table(main: Records, longer: Records, names: Sequence[str], seed: int):
    """Per configuration (one seed): final accuracy by group after the profile's epochs and
    after the longer schedule (:func:`scaled_epochs`), and the change."""
    import pandas as pd

    rows = []
    for name in names:
        if (name, seed) not in main or (name, seed) not in longer:
            continue
        a, b = main[(name, seed)], longer[(name, seed)]
        row: dict[str, Any] = {"config": name}
        for g in ("minority", "all"):
            row[f"{g} @ {a['train']['epochs']} ep"] = round(a["final"][g], 2)
            row[f"{g} @ {b['train']['epochs']} ep"] = round(b["final"][g], 2)
            row[f"Δ{g}"] = round(b["final"][g] - a["final"][g], 2)
        rows.append(row)
    return pd.DataFrame(rows).set_index("config") if rows else pd.DataFrame()


def plot_more_compute(axes, main: Records, longer: Records, names: Sequence[str], seed: int) -> None:
    """Minority and all-class test accuracy after every epoch of the longer runs (one seed;
    the learning rate decays over the whole longer schedule, so an intermediate epoch is not an
    early-stopped shorter run), with the shorter runs' final accuracy marked at their last epoch;
    full 0–100 % scale."""
    from matplotlib.ticker import MaxNLocator

    from . import plots

    for ax, g in zip(axes, ("minority", "all")):
        for i, name in enumerate(names):
            style = plots.line_styles(i)
            if (name, seed) in longer:
                h = longer[(name, seed)]["history"]
                line, = ax.plot([r["epoch"] for r in h], [r[g] for r in h], lw=1.6,
                                label=f"{name}, {longer[(name, seed)]['train']['epochs']} epochs",
                                **style)
                color = line.get_color()
            else:
                color = None
            if (name, seed) in main:
                rec = main[(name, seed)]
                ax.plot([rec["train"]["epochs"]], [rec["final"][g]], marker="*", ms=12, ls="",
                        color=color, label=f"{name}, {rec['train']['epochs']} epochs (final)")
        ax.set(title=f"{g} test accuracy (seed {seed})", xlabel="epoch", ylabel="accuracy (%)",
               ylim=(0, 100))
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
                            enabled=runtime.resolve_amp(tcfg.bf16, device)):
            logits = model(augment.normalize(augment.random_crop_flip(x),
                                             memory_format=runtime.memory_format(tcfg.channels_last, device)))
        loss = losses.cross_entropy(logits, y)
        loss.backward()
        print(f"dry run ok: profile {profile}, {resnet.n_parameters(model):,} parameters, "
              f"loss {float(loss.detach()):.3f} on {device}")
        return 0
    runs, ckpts = runs_dirs(profile)
    split = load_split(device, cfg["n_major"], cfg["n_minor"], cfg["test_per_class"])
    res = run_profile(cfg, tcfg, split, device, runs, ckpts, budget_s=args.budget_s,
                      names=args.configs, seeds=args.seeds)
    for part, r in res.items():
        print(f"profile {profile}, {part}: {r.describe()}")
    print(f"per-run files in {runs}; finished: {sweep_status(res)['finished']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
