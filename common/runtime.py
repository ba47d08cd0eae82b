"""Runtime: device choice, seeding, compute profiles and provenance.

Every notebook runs under one of four *profiles*:

``smoke``
    seconds; exercises every code path (CI / nbval). Numbers are meaningless.
``cpu``
    the default on a machine without a GPU: meaningful numbers in minutes on 2 cores,
    always reported as a *reduced* run.
``full``
    the paper's settings, meant for a GPU.
``dryrun``
    the ``full`` entry of every table with a handful of optimiser steps and small evaluation
    subsets (:func:`dryrun_of`): the full code path end to end on a CPU in minutes
    (``make dryrun``); always *reduced*, never a reproduction, never auto-selected.

Precedence: the environment variable ``REPRO_PROFILE`` > the notebook's papermill
parameter ``PROFILE`` > auto-selection from the hardware (``full`` if CUDA is available,
else ``cpu``).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

PROFILES: tuple[str, ...] = ("smoke", "cpu", "full", "dryrun")
PROFILE_ENV = "REPRO_PROFILE"
DEVICE_ENV = "REPRO_DEVICE"
THREADS_ENV = "REPRO_THREADS"
CHECKPOINTS_ENV = "REPRO_CHECKPOINTS"
REPO_ROOT = Path(__file__).resolve().parent.parent


def show_path(path: str | os.PathLike) -> str:
    """``path`` relative to the repository when inside it (banners, messages), else as it is."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


class ProfileError(ValueError):
    """An unknown profile name, or a notebook config that lacks a profile."""


def _check_profile(name: str, source: str) -> str:
    if name not in PROFILES:
        raise ProfileError(
            f"unknown profile {name!r} (from {source}); choose one of {', '.join(PROFILES)}"
        )
    return name


def resolve_profile(requested: str | None = None) -> str:
    """Return the active profile name (env var > ``requested`` > hardware)."""
    env = os.environ.get(PROFILE_ENV, "").strip()
    if env:
        return _check_profile(env, f"${PROFILE_ENV}")
    if requested:
        return _check_profile(str(requested), "the PROFILE parameter")
    return "full" if torch.cuda.is_available() else "cpu"


def is_reduced(profile: str) -> bool:
    """Whether numbers from ``profile`` must be labelled as a reduced (non-paper) run."""
    return _check_profile(profile, "is_reduced") != "full"


def is_full(profile: str) -> bool:
    """Whether ``profile`` takes the ``full`` code path (``full`` and its capped ``dryrun``):
    for branches on *what runs*; whether numbers are a reproduction is :func:`is_reduced`."""
    return _check_profile(profile, "is_full") in ("full", "dryrun")


def dryrun_of(full: Mapping[str, Any], **caps: Any) -> dict[str, Any]:
    """The ``dryrun`` entry of a profile table: ``full`` with the keys in ``caps`` replaced.

    ``caps`` may only shrink optimiser steps, epochs and evaluation sizes (the tests check each
    table); model sizes, batch sizes, precision, memory format, compile, optimisers and segment
    settings stay the full profile's. A cap naming a key that ``full`` lacks is an error, so a
    renamed setting cannot silently stop being capped.
    """
    unknown = sorted(set(caps) - set(full))
    if unknown:
        raise ProfileError(f"dryrun caps {unknown} are not keys of the full profile")
    return {**full, **caps}


def pick(configs: Mapping[str, Mapping[str, Any]], profile: str) -> dict[str, Any]:
    """Select the config of ``profile`` from a ``{profile: {key: value}}`` table.

    All profiles must define the same keys, so that a code path cannot silently exist in
    one profile only.
    """
    _check_profile(profile, "pick")
    missing = [p for p in PROFILES if p not in configs]
    if missing:
        raise ProfileError(f"config table lacks profiles {missing}")
    keys = {p: set(configs[p]) for p in PROFILES}
    ref = keys[PROFILES[0]]
    for p, k in keys.items():
        if k != ref:
            raise ProfileError(f"profile {p!r} keys differ from {PROFILES[0]!r}: {sorted(k ^ ref)}")
    return dict(configs[profile])


def get_device(prefer: str | None = None) -> torch.device:
    """``$REPRO_DEVICE`` > ``prefer`` > cuda if available > cpu.

    Also makes the float32 precision explicit: true float32 for matmuls and convolutions (no
    TF32, which cuDNN would otherwise use for convolutions on recent GPUs), so "float32" means
    the same on every device; a profile that wants lower precision asks for bfloat16 autocast
    by name (tested against float32 on CPU). :func:`precision_state` records it."""
    torch.set_float32_matmul_precision("highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    name = os.environ.get(DEVICE_ENV) or prefer
    if name:
        dev = torch.device(name)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} requested but CUDA is not available")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_amp(setting: bool | str, device: torch.device) -> bool:
    """Whether a profile's ``amp`` setting (bfloat16 autocast) is on for ``device``: ``True`` /
    ``False`` as given; ``"auto"`` on where bfloat16 matmuls are native, i.e. a CUDA device that
    supports bfloat16, or a CPU that reports AVX-512 BF16 or AMX-BF16 (:func:`cpu_info`). CPUs
    without them (AVX2-only ones, say) emulate bfloat16, which is slower than float32, so there
    ``"auto"`` stays float32. The result is what a notebook records and passes on."""
    if isinstance(setting, bool):
        return setting
    if setting != "auto":
        raise ValueError(f"amp must be True, False or 'auto', got {setting!r}")
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu" and bool({"avx512_bf16", "amx_bf16"} & set(cpu_info()["isa"]))


def memory_format(channels_last: bool, device: torch.device) -> torch.memory_format:
    """The memory format for a conv model *and* its inputs: ``channels_last`` only on CUDA.

    On CPU every conv model and input is plain contiguous NCHW. oneDNN's CPU convolutions
    corrupt memory on AVX2-only processors for small channel counts when fed channels-last
    tensors (``double free or corruption``; reproducible here with ``ONEDNN_MAX_CPU_ISA=AVX2``),
    and a mismatch between model and input formats makes oneDNN reorder at every layer anyway.
    cuDNN's fast kernels want channels_last, so CUDA keeps it when asked for.
    """
    if channels_last and device.type == "cuda":
        return torch.channels_last
    return torch.contiguous_format


def cpu_info() -> dict[str, Any]:
    """CPU model, the vector instruction sets torch's kernels can use, and torch's choice.

    ``isa`` lists the flags among AVX2 / AVX-512 (F, BF16, VNNI) / AMX that ``/proc/cpuinfo``
    reports; ``torch_capability`` is the kernel set ATen dispatches to. A native crash or a
    number can so be tied to the hardware (oneDNN picks different kernels on AVX2-only CPUs).
    """
    first: dict[str, str] = {}   # the first core's "model name" and "flags" lines
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            first.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    model = first.get("model name") or platform.processor() or platform.machine()
    flags = set(first.get("flags", "").split())
    wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile",
              "amx_bf16")
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # older torch
        capability = None
    return {"model": model, "isa": [f for f in wanted if f in flags],
            "torch_capability": capability, "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA")}


PATH_ENVS: tuple[str, ...] = ("REPRO_DATA_MIRROR", "REPRO_DATA_ROOT", "REPRO_OUT", CHECKPOINTS_ENV)
_dryrun_checkpoints: Path | None = None


def checkpoint_root(profile: str | None = None) -> Path:
    """Folder of resumable checkpoints and cached runs: ``$REPRO_CHECKPOINTS``, else the
    repository's ``checkpoints/`` (git-ignored). The ``dryrun`` profile never writes there:
    without ``$REPRO_CHECKPOINTS`` (``make dryrun`` sets a temporary one) it gets a temporary
    folder of this process, so nothing a dry run saves can be resumed by a real run."""
    global _dryrun_checkpoints
    env = os.environ.get(CHECKPOINTS_ENV, "").strip()
    if env:
        return Path(env).expanduser().resolve()
    if profile is not None and _check_profile(profile, "checkpoint_root") == "dryrun":
        if _dryrun_checkpoints is None:
            import atexit
            import shutil
            import tempfile

            _dryrun_checkpoints = Path(tempfile.mkdtemp(prefix="repro-dryrun-checkpoints-"))
            atexit.register(shutil.rmtree, _dryrun_checkpoints, True)
        return _dryrun_checkpoints
    return REPO_ROOT / "checkpoints"


def absolutize_path_env(names: Sequence[str] = PATH_ENVS, base: Path | None = None) -> dict[str, str]:
    """Make the path variables ``names`` absolute, against ``base`` (default: the current
    directory, i.e. where the user ran ``make``), in ``os.environ``; returns what changed.

    Called once by ``make reproduce`` and by the nbval plugin before any kernel starts: a kernel
    runs in ``notebooks/``, where a relative ``REPRO_DATA_MIRROR=../shared/datasets`` would name
    another folder.
    """
    base = Path(base) if base is not None else Path.cwd()
    changed = {}
    for name in names:
        value = os.environ.get(name, "").strip()
        if value and not Path(value).expanduser().is_absolute():
            os.environ[name] = changed[name] = str((base / Path(value).expanduser()).resolve())
    return changed


def set_threads(requested: int | None, device: torch.device) -> int:
    """Fix torch's CPU intra-op thread count: ``$REPRO_THREADS`` > ``requested`` > torch's default.

    One policy for every notebook: the CPU profiles request a fixed count (1), so a run does
    not depend on how busy the machine was. On a shared 2-core machine, small models with more
    OpenMP threads than free cores ran 15-25x slower per step (measured here); on an idle one,
    2 threads were 1.2-1.5x faster (M2 steps), so ``REPRO_THREADS=2`` is worth it there.
    Results depend on the count only through float summation order. The count is recorded in
    :func:`provenance` (``torch_threads``). On a GPU the CPU thread count is left alone.
    """
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"${THREADS_ENV} must be a positive integer, got {env!r}")
        requested = int(env)
    if requested is not None and device.type == "cpu":
        if int(requested) < 1:
            raise ValueError(f"threads must be a positive integer, got {requested!r}")
        torch.set_num_threads(int(requested))
    return torch.get_num_threads()


def seed_everything(seed: int, deterministic: bool = True) -> torch.Generator:
    """Seed python, numpy and torch; set the cheap determinism flags.

    Returns a CPU ``torch.Generator`` seeded with ``seed`` for code that wants its own stream.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _git(*args: str, root: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=root or REPO_ROOT, capture_output=True, text=True, timeout=10,
            check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


README_TABLE = ("<!-- results:start -->", "<!-- results:end -->")   # generated by common.report


def replace_generated_table(text: str, body: str,
                            markers: tuple[str, str] = README_TABLE) -> str | None:
    """``text`` with what stands between the ``markers`` (default :data:`README_TABLE`) replaced
    by ``body`` (markers kept), or ``None`` when ``text`` lacks them. The one place that knows the
    layout: :func:`common.results.write_generated_table` writes the README tables with it,
    :func:`git_state` ignores the results one."""
    start, end = markers
    if start not in text or end not in text:
        return None
    head, rest = text.split(start, 1)
    return f"{head}{start}{body}{end}{rest.split(end, 1)[1]}"


def file_digest(paths: Sequence[Path]) -> str:
    """Short sha256 over the names (relative to the repository) and contents of ``paths``."""
    h = hashlib.sha256()
    for path in paths:
        path = Path(path).resolve()
        name = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else Path(path.name)
        h.update(name.as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def settings_key(settings: Mapping[str, Any], files: Sequence[Path], length: int = 16) -> str:
    """Short sha256 over ``settings`` (as sorted JSON; non-JSON values by ``str``) and the sources
    ``files`` (:func:`file_digest`): the name of a cached model that only the same code with the
    same settings may reuse."""
    blob = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256((blob + file_digest(files)).encode()).hexdigest()[:length]


def source_hash() -> str:
    """Digest of the code that produces numbers: ``common/**/*.py`` and ``notebooks/*.ipynb``.

    Recorded with every result, so a run from an uncommitted tree can still be matched to the
    commit whose files hash the same.
    """
    return file_digest(sorted([*REPO_ROOT.glob("common/**/*.py"), *REPO_ROOT.glob("notebooks/*.ipynb")]))


def git_state(root: Path | None = None) -> dict[str, Any]:
    """Commit hash, whether the tree differs from it, and :func:`source_hash`.

    ``dirty`` counts modified or untracked non-ignored files, except the repository's own
    generated outputs: everything under ``results/`` and the README's results table (a README
    whose only change is that table, as ``make reproduce`` leaves it, is not an edit).
    """
    root = root or REPO_ROOT
    commit = _git("rev-parse", "HEAD", root=root)
    status = _git("status", "--porcelain", "--untracked-files=normal", "--", ".",
                  ":(exclude)results", root=root)
    if status is None:
        dirty = None
    else:
        changed = [line.split(None, 1)[1] for line in status.splitlines() if line.strip()]
        if "README.md" in changed:
            committed = _git("show", "HEAD:README.md", root=root)
            try:
                current = (root / "README.md").read_text(encoding="utf-8")
            except OSError:
                current = None
            if (committed is not None and current is not None and
                    (replace_generated_table(committed, "") or committed).strip()
                    == (replace_generated_table(current, "") or current).strip()):
                changed.remove("README.md")
        dirty = bool(changed)
    state = {"commit": commit or "unknown", "dirty": dirty,
             "source_hash": source_hash() if root == REPO_ROOT else None}
    stated = os.environ.get("REPRO_COMMIT", "").strip()
    if stated and stated != commit:
        # a copy whose .git is missing or stale (a lent GPU machine gets the session's first
        # .git with the current files): the commit the caller says the files are from; whether
        # they differ from it is then unknown, and source_hash lets anyone check the claim
        state.update(commit=stated, commit_from="REPRO_COMMIT", git_head=commit, dirty=None)
    return state


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} logical cores)"


def precision_state() -> dict[str, Any]:
    """The float32 matmul/convolution precision in force: ``float32_matmul_precision``
    ("highest": true float32; "high"/"medium" allow TF32/bfloat16 internally) and the CUDA
    TF32 switches. Recorded with every result, since a GPU run's numbers depend on them."""
    return {"float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32)}


def provenance(
    profile: str,
    seeds: Sequence[int],
    device: torch.device,
    wall_time_s: float | None = None,
    reduced: bool | None = None,
) -> dict[str, Any]:
    """Everything needed to trace a number back to code, hardware and settings.

    ``reduced`` defaults to :func:`is_reduced` of the profile; a notebook whose CPU profile
    already is the paper's full setting passes ``False``.
    """
    return {
        **git_state(),
        "profile": profile,
        "reduced": is_reduced(profile) if reduced is None else bool(reduced),
        "seeds": list(seeds),
        "device": device_name(device),
        "device_type": device.type,
        "cpu": cpu_info(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "precision": precision_state(),
        "host": socket.gethostname(),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_time_s": None if wall_time_s is None else round(float(wall_time_s), 2),
    }


class Stopwatch:
    """Wall-clock timer that also synchronises CUDA, so GPU timings are real."""

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device
        self.start = self._now()

    def _now(self) -> float:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def elapsed(self) -> float:
        return self._now() - self.start

    def lap(self) -> float:
        """Seconds since the last lap (or start); restarts the clock."""
        now = self._now()
        dt, self.start = now - self.start, now
        return dt


def seconds_per_call(fn: Callable[[], object], calls: int, device: torch.device | None = None,
                     warmup: int = 2) -> float:
    """Mean wall-clock seconds of ``fn()`` over ``calls`` calls after ``warmup`` untimed ones
    (allocations, kernel selection, compilation), CUDA synchronised (:class:`Stopwatch`)."""
    if calls < 1:
        raise ValueError(f"calls must be >= 1, got {calls}")
    for _ in range(warmup):
        fn()
    w = Stopwatch(device)
    for _ in range(calls):
        fn()
    return w.elapsed() / calls
