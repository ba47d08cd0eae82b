"""Training utilities shared by every model: NaN guards, checkpoints, epoch timing, progress."""
from __future__ import annotations

import io
import math
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, TypeVar

import torch
from tqdm import tqdm

from .results import atomic_write_bytes
from .runtime import Stopwatch

T = TypeVar("T")


class NonFiniteError(FloatingPointError):
    """A loss, gradient or log-determinant became NaN or infinite."""


def check_finite(value: torch.Tensor | float, what: str, step: int | str | None = None) -> None:
    """Raise :class:`NonFiniteError` naming ``what`` and ``step`` if ``value`` is not finite."""
    t = value if isinstance(value, torch.Tensor) else torch.tensor(float(value))
    if not bool(torch.isfinite(t).all()):
        where = f" at step {step}" if step is not None else ""
        raise NonFiniteError(
            f"{what} is not finite{where} (value {t.detach().flatten()[:4].tolist()}). "
            f"Training stopped; lower the learning rate or restore the last checkpoint."
        )


class SegmentUnfinished(RuntimeError):
    """Training reached the end of this process's time segment (:func:`start_segment`) before
    its last epoch; its checkpoint is saved, so running the same command again resumes it."""


_segment_deadline: float | None = None


def start_segment(seconds: float | None) -> float | None:
    """Allow this process ``seconds`` of wall time, counted from now, for training (``None``:
    no limit). A training loop that honours it (:meth:`common.kingma.Trainer.run`) checks
    :func:`segment_over` before each epoch; once it is over the loop saves its checkpoint and
    raises :class:`SegmentUnfinished`. For machines that run a command for at most a few
    minutes: repeat the command until it finishes. Returns the deadline
    (``time.perf_counter()`` units)."""
    global _segment_deadline
    if seconds is not None and not float(seconds) > 0:
        raise ValueError(f"a segment needs a positive number of seconds, got {seconds!r}")
    _segment_deadline = None if seconds is None else time.perf_counter() + float(seconds)
    return _segment_deadline


def segment_over() -> bool:
    """Whether the time segment set by :func:`start_segment` has run out."""
    return _segment_deadline is not None and time.perf_counter() >= _segment_deadline


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint file holds more than plain data (tensors, numbers, strings, bools, None and
    lists/tuples/dicts of those), so :func:`load_checkpoint` refuses to unpickle it."""


LR_SCHEDULES = ("constant", "cosine", "wsd", "linear")
WSD_DECAY_FRACTION = 0.2


def check_lr_schedule(schedule: str) -> str:
    """``schedule`` if it is one of :data:`LR_SCHEDULES`, else a ``ValueError`` naming them."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    return schedule


def lr_factor(schedule: str, step: int, progress: float, warmup_steps: int = 0) -> float:
    """Learning-rate factor of optimiser step ``step`` (0-based) after the fraction ``progress``
    of the training budget (steps or seconds): a linear warm-up ``(step + 1) / warmup_steps``
    over the first ``warmup_steps``, times

    * ``"constant"``: 1;
    * ``"cosine"``: a half cosine ``(1 + cos(pi * progress)) / 2`` from 1 to 0 at ``progress >= 1``;
    * ``"wsd"`` (warm-up, stable, decay): 1 until the last ``WSD_DECAY_FRACTION`` of the budget,
      then linearly to 0 at ``progress >= 1``;
    * ``"linear"``: ``1 - progress``, linearly from 1 to 0 (with a short warm-up close to the
      triangular schedule of airbench, K. Jordan 2024, arXiv:2404.00498).
    """
    check_lr_schedule(schedule)
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    p = min(1.0, max(0.0, progress))
    if schedule == "cosine":
        return warm * 0.5 * (1.0 + math.cos(math.pi * p))
    if schedule == "wsd":
        return warm * min(1.0, (1.0 - p) / WSD_DECAY_FRACTION)
    if schedule == "linear":
        return warm * (1.0 - p)
    return warm


def _unsafe_globals(buf: io.BytesIO) -> list[str]:
    """Classes/functions a ``weights_only=True`` load of ``buf`` would refuse (``[]`` if none;
    always ``[]`` on torch < 2.5, which lacks the scanner: the load still refuses them)."""
    scan = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    buf.seek(0)
    return [] if scan is None else list(scan(buf))


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """``torch.save`` to ``path`` atomically (a crash mid-write keeps the previous checkpoint).

    ``state`` must be plain data (see :class:`UnsafeCheckpointError`; dataclasses as dicts, RNG
    states as tensors), so that :func:`load_checkpoint` can read it back; else ``TypeError``.
    """
    buf = io.BytesIO()
    torch.save(state, buf)
    unsafe = _unsafe_globals(buf)
    if unsafe:
        raise TypeError(f"checkpoint for {path} would hold non-plain objects {unsafe}; store "
                        f"tensors, numbers, strings, bools, None and lists/tuples/dicts of those")
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any] | None:
    """The checkpoint at ``path``, or ``None`` if there is none yet.

    Loaded with ``weights_only=True``: a file that would construct arbitrary objects (and so
    could run code on load) raises :class:`UnsafeCheckpointError` without running any of it.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:   # torch's reason stays attached as __cause__
        raise UnsafeCheckpointError(
            f"{path} is not a plain-data checkpoint (it would construct objects other than "
            f"tensors and plain containers); it was not written by this code's save_checkpoint "
            f"or was tampered with. Not loaded: delete it to retrain."
        ) from e


@dataclass
class EpochLog:
    """Per-epoch wall time and throughput, plus any metrics logged alongside."""

    device: torch.device | None = None
    seconds: list[float] = field(default_factory=list)
    samples: list[int] = field(default_factory=list)
    rows: list[dict[str, float]] = field(default_factory=list)

    def start(self) -> None:
        self._watch = Stopwatch(self.device)

    def end(self, n_samples: int, **metrics: float) -> dict[str, float]:
        dt = self._watch.elapsed()
        self.seconds.append(dt)
        self.samples.append(n_samples)
        row = {"epoch": len(self.seconds), "seconds": dt, **{k: float(v) for k, v in metrics.items()}}
        self.rows.append(row)
        return row

    def summary(self) -> dict[str, float]:
        """Median epoch time and samples/s (the first epoch is excluded when there are more,
        because it includes warm-up)."""
        if not self.seconds:
            return {}
        sec = self.seconds[1:] if len(self.seconds) > 1 else self.seconds
        smp = self.samples[1:] if len(self.samples) > 1 else self.samples
        med = sorted(sec)[len(sec) // 2]
        return {
            "epochs": len(self.seconds),
            "epoch_seconds_median": round(med, 4),
            "samples_per_second": round(sum(smp) / max(sum(sec), 1e-9), 1),
            "total_seconds": round(sum(self.seconds), 2),
        }


HEADLESS_ENV = "REPRO_HEADLESS"   # set by make reproduce and the nbval run for their kernels


def progress(iterable: Iterable[T], desc: str, total: int | None = None, **kw: Any) -> Iterator[T]:
    """tqdm progress bar (stderr, so it never enters compared notebook outputs).

    Live bars only in interactive use: under ``$REPRO_HEADLESS`` (papermill via ``make
    reproduce``, nbval) there is no bar at all, because every refresh would become one more
    output block of the rendered notebook; the notebooks print one summary line per stage.
    """
    if os.environ.get(HEADLESS_ENV):
        return iter(iterable)
    return iter(tqdm(iterable, desc=desc, total=total, leave=False, mininterval=5.0, **kw))
