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

import ast
import functools
import hashlib
import json
import os
import platform
import random
import socket
import subprocess
import sys
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


def requested_profile(spellings: Mapping[str, object]) -> str | None:
    """The one profile that the non-empty ``spellings`` name, each checked; ``None`` when none
    does. ``spellings`` maps where a profile was given to its value, e.g. ``{"--profile": ...,
    "--param PROFILE": ..., "$REPRO_PROFILE": ...}``: ``make reproduce`` decides its profile here,
    before any kernel starts (``runtime.resolve_profile(requested_profile(...))``), so every
    spelling passes the same check, and two that name different profiles are a
    :class:`ProfileError` naming both, never a silent override."""
    given = {source: _check_profile(str(value).strip(), source) for source, value in spellings.items()
             if value is not None and str(value).strip()}
    if len(set(given.values())) > 1:
        named = " and ".join(f"{source}={value}" for source, value in given.items())
        raise ProfileError(f"conflicting profiles: {named}; give the profile once (or the same "
                           f"one everywhere)")
    return next(iter(given.values()), None)


ALLOW_LONG_ENV = "REPRO_ALLOW_LONG"
COST_JSON = REPO_ROOT / "docs" / "cost.json"   # written by common.cost (make cost)


def cpu_estimate(notebook: str | None = None, path: Path | None = None) -> str:
    """What the full profile of ``notebook`` ("02"; every notebook when ``None`` or unrecorded)
    would take at the CPU FLOP rate that ``make cost`` measured (``docs/cost.json``), one line
    each. Read here, not through :mod:`common.cost`, which imports every model module (and would
    so enter every cache key, :func:`code_files`)."""
    try:
        rec = json.loads(Path(path or COST_JSON).read_text(encoding="utf-8"))
    except OSError as e:
        return f"no estimate ({e}; `make cost` writes it)"
    nbs = rec["notebooks"]
    lines = [f"estimates from docs/cost.json (CPU rate measured on {rec.get('cpu') or 'no CPU'}, "
             f"{rec['cpu_threads']} thread):"]
    for nb in [notebook] if notebook in nbs else sorted(nbs):
        hours = nbs[nb]["cpu_hours"]
        lines.append(f"  {nb}: " + ("not measured" if hours is None else f"about {hours:.3g} hours")
                     + (" per epoch" if nbs[nb]["per_epoch_only"] else ""))
    return "\n".join(lines)


class LongRunRefused(ProfileError):
    """The ``full`` profile asked for on a device without CUDA, without ``$REPRO_ALLOW_LONG=1``."""


def check_long_run(profile: str, device: torch.device | None = None, notebook: str | None = None) -> None:
    """Refuse the ``full`` profile on a device without CUDA unless ``$REPRO_ALLOW_LONG=1``: the
    papers' schedules take hours to weeks on a CPU (02: hundreds of hours), so they never start
    silently. The refusal (or, when allowed, a printed warning) gives the estimates of
    ``docs/cost.json`` (:func:`cpu_estimate`, ``notebook``'s or every notebook's).
    ``device``: the one the run will use, by default :func:`get_device`'s choice. Other profiles
    (``dryrun`` included) and ``full`` on CUDA pass silently. :func:`resolve_profile` calls it."""
    if profile != "full":
        return
    device = device or torch.device(os.environ.get(DEVICE_ENV) or
                                    ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return
    what = f"the full profile (the papers' schedules) on {device.type}"
    if os.environ.get(ALLOW_LONG_ENV, "").strip() != "1":
        raise LongRunRefused(f"refused: {what} would take hours to weeks; set {ALLOW_LONG_ENV}=1 to "
                             f"run it anyway, or use the cpu profile (reduced) or `make dryrun` "
                             f"(the full code path in minutes).\n{cpu_estimate(notebook)}")
    print(f"{ALLOW_LONG_ENV}=1: running {what}.\n{cpu_estimate(notebook)}", flush=True)


def _refuses_long_runs(resolve: Callable[..., str]) -> Callable[..., str]:
    """``resolve``, then :func:`check_long_run` of the profile it returns."""
    @functools.wraps(resolve)
    def resolved(*args: Any, **kwargs: Any) -> str:
        profile = resolve(*args, **kwargs)
        check_long_run(profile)
        return profile
    return resolved


@_refuses_long_runs   # the full profile on a device without CUDA: refused (check_long_run)
def resolve_profile(requested: str | None = None) -> str:
    """Return the active profile name (env var > ``requested`` > hardware). Inside a kernel the
    environment wins (nbval's ``REPRO_PROFILE=smoke``); ``make reproduce`` has refused a conflict
    before (:func:`requested_profile`)."""
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
    supports bfloat16, or a CPU that reports AVX-512 BF16 or AMX-BF16 (:func:`cpu_info`) while
    oneDNN may use them (``$ONEDNN_MAX_CPU_ISA`` not capped at AVX2 or below). CPUs without them
    (AVX2-only ones, say) emulate bfloat16, which is slower than float32, so there ``"auto"``
    stays float32. The result is what a notebook records and passes on."""
    if isinstance(setting, bool):
        return setting
    if setting != "auto":
        raise ValueError(f"amp must be True, False or 'auto', got {setting!r}")
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return (device.type == "cpu" and bool({"avx512_bf16", "amx_bf16"} & set(cpu_info()["isa"]))
            and not _onednn_capped_at_avx2())


def memory_format(channels_last: bool, device: torch.device) -> torch.memory_format:
    """The memory format for a conv model *and* its inputs, when a profile asks for
    ``channels_last``: on CUDA always; on CPU only where oneDNN runs its AVX-512 / AMX kernels,
    i.e. the CPU reports ``avx512f`` (:func:`cpu_info`) and ``$ONEDNN_MAX_CPU_ISA`` is unset or
    not capped at AVX2 or below. Everywhere else plain contiguous NCHW.

    oneDNN's AVX2 convolutions corrupt memory for small channel counts when fed channels-last
    tensors (``double free or corruption`` on AVX2-only AMD EPYCs; reproducible on any x86 CPU
    with ``ONEDNN_MAX_CPU_ISA=AVX2``, ``tests/test_native_safety.py``); its AVX-512 / AMX
    kernels take channels-last natively and, with bf16 autocast, are the fast path on the CPUs
    that have them (notebook 06's network: about 3x the float32 NCHW throughput, measured on a
    2-core Xeon with AMX). Model and inputs must share the format, else oneDNN reorders at
    every layer.
    """
    if not channels_last:
        return torch.contiguous_format
    if device.type == "cuda":
        return torch.channels_last
    if device.type != "cpu" or "avx512f" not in cpu_info()["isa"] or _onednn_capped_at_avx2():
        return torch.contiguous_format
    return torch.channels_last


class _FlattenKeepingFormat(torch.autograd.Function):
    """``x.flatten(1)`` whose gradient comes back in ``x``'s memory format."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.shape = x.shape
        ctx.channels_last = x.dim() == 4 and not x.is_contiguous() \
            and x.is_contiguous(memory_format=torch.channels_last)
        return x.flatten(1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.reshape(ctx.shape)
        return grad.contiguous(memory_format=torch.channels_last) if ctx.channels_last else grad


def flatten_keeping_format(x: torch.Tensor) -> torch.Tensor:
    """``x.flatten(1)`` (values and order as usual) whose backward hands the gradient back in
    ``x``'s memory format. A plain flatten of a channels_last map returns an NCHW gradient, and
    every layer below it then mixes formats: oneDNN's convolution backward and ATen's
    leaky_relu_backward fall off their fast paths (07's DCGAN discriminator at its cpu setting,
    bf16, 2 threads: leaky_relu_backward 9x slower with an NCHW gradient than with a
    channels_last one; the whole training step 1.10x faster with this, bit for bit the same)."""
    return _FlattenKeepingFormat.apply(x)


def _onednn_capped_at_avx2() -> bool:
    """Whether ``$ONEDNN_MAX_CPU_ISA`` keeps oneDNN at AVX2 or below (SSE41, AVX, AVX2,
    AVX2_VNNI, AVX2_VNNI_2; not AVX512_*, AVX10_*, ALL or unset)."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    return cap == "AVX" or cap.startswith(("SSE", "AVX2"))


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


def _git(*args: str, root: Path | None = None, stdin: str | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=root or REPO_ROOT, capture_output=True, text=True, timeout=10,
            check=True, input=stdin)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


README_TABLE = ("<!-- results:start -->", "<!-- results:end -->")   # generated by common.report
README_COST = ("<!-- cost:start -->", "<!-- cost:end -->")        # generated by common.cost
# What the repository generates itself, never an edit of the code behind a result (git_state):
# results/ (make reproduce), make cost's docs/COST.md and docs/cost.json, the README's tables.
GENERATED_PATHS: tuple[str, ...] = ("results/", "docs/COST.md", "docs/cost.json")
GENERATED_TABLES: dict[str, tuple[tuple[str, str], ...]] = {"README.md": (README_TABLE, README_COST)}
DIRTY_PATHS_SHOWN = 20   # git_state lists at most this many changed paths


def replace_generated_table(text: str, body: str,
                            markers: tuple[str, str] = README_TABLE) -> str | None:
    """``text`` with what stands between the ``markers`` (default :data:`README_TABLE`) replaced
    by ``body`` (markers kept), or ``None`` when ``text`` lacks them. The one place that knows the
    layout: :func:`common.results.write_generated_table` writes the README tables with it,
    :func:`git_state` ignores them (:data:`GENERATED_TABLES`)."""
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


def code_files(*modules: str) -> list[Path]:
    """The sources of the ``common`` modules ``modules`` (``"gan"`` or ``"common.gan"``) and of
    every ``common`` module they import, directly or through another (an AST walk over their
    ``import`` statements, those inside functions included), sorted: the file list of every
    cache key (:func:`settings_key`), so a cached model is reused only by the code that made it.

    The import closure, not all of ``common``: editing reporting code (``report``, ``cost``,
    ``dryrun``, ``reproduce``, ``plots``) or a settings table (``profiles``) cannot change a
    trained model and retrains nothing, while every module whose code a training can run is
    covered. A dependency that no import shows (07's kept runs hold FID curves computed by
    ``gen_eval`` through the notebook) is named by the caller."""
    pkg = REPO_ROOT / "common"
    todo, seen = [m.removeprefix("common.") for m in modules], set()
    for name in todo:
        if not (pkg / f"{name}.py").is_file():
            raise ValueError(f"no module common.{name} in {pkg}")
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in ast.walk(ast.parse((pkg / f"{name}.py").read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                dotted = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):   # from .x import y / from . import x / from common.x
                base = ".".join(filter(None, ["common" if node.level == 1 else "", node.module or ""]))
                dotted = [base, *(f"{base}.{a.name}" for a in node.names)]
            else:
                continue
            todo += [d.removeprefix("common.") for d in dotted if d.startswith("common.")
                     and (pkg / f"{d.removeprefix('common.')}.py").is_file()]
    return sorted(pkg / f"{name}.py" for name in seen)


def _source_names(names: Sequence[str]) -> list[str]:
    """Of the repository-relative ``names``, those :func:`source_hash` covers, in its order."""
    kept = [n for n in names if (n.startswith("common/") and n.endswith(".py"))
            or (n.startswith("notebooks/") and n.count("/") == 1 and n.endswith(".ipynb"))]
    return sorted(kept, key=lambda n: n.split("/"))


def source_hash_at(commit: str, root: Path | None = None) -> str | None:
    """:func:`source_hash` of ``commit``'s files, read from git (``None`` where git or the commit
    is not available). A result recorded with edits in its tree (``dirty``) or from a copy whose
    ``.git`` lacks its commit still provably comes from ``commit``'s code when its recorded
    ``source_hash`` equals this (:func:`common.report.tree_mark`)."""
    root = root or REPO_ROOT
    listing = _git("ls-tree", "-r", "-z", "--name-only", commit, "--", "common", "notebooks",
                   root=root)
    if not listing:
        return None
    h = hashlib.sha256()
    for name in _source_names([n for n in listing.split("\0") if n]):
        try:
            blob = subprocess.run(["git", "cat-file", "blob", f"{commit}:{name}"], cwd=root,
                                  capture_output=True, timeout=10, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        h.update(name.encode() + b"\0")
        h.update(blob + b"\0")
    return h.hexdigest()[:16]


def source_hash() -> str:
    """Digest of the code that produces numbers: ``common/**/*.py`` and ``notebooks/*.ipynb``.

    Recorded with every result, so a run from an uncommitted tree can still be matched to the
    commit whose files hash the same.
    """
    return file_digest(sorted([*REPO_ROOT.glob("common/**/*.py"), *REPO_ROOT.glob("notebooks/*.ipynb")]))


def _environment_paths(root: Path) -> list[str]:
    """Paths (relative to ``root``) of the project's own Python environment, however it is
    linked: ``.venv`` (a folder or a link), and ``$VIRTUAL_ENV`` and the running interpreter's
    ``sys.prefix`` where they lie inside ``root`` (``make VENV=...``)."""
    roots = {Path(os.path.abspath(root)), Path(root).resolve()}
    envs = {Path(os.path.abspath(e)) for e in (os.environ.get("VIRTUAL_ENV", ""), sys.prefix) if e.strip()}
    envs |= {e.resolve() for e in envs}
    return sorted({".venv"} | {e.relative_to(r).as_posix() for e in envs for r in roots
                               if e != r and e.is_relative_to(r)})


def _under(path: str, prefixes: Sequence[str]) -> bool:
    path = path.rstrip("/")
    return any(path == q or path.startswith(q + "/") for q in (p.rstrip("/") for p in prefixes))


def _without_tables(text: str, markers: Sequence[tuple[str, str]]) -> str:
    for pair in markers:
        text = replace_generated_table(text, "", pair) or text
    return text.strip()


def changed_paths(root: Path, commit: str) -> list[str] | None:
    """Paths whose content in the working tree at ``root`` differs from ``commit``'s: modified,
    deleted, and added (files git does not ignore; an untracked folder as ``name/``), compared
    by blob id, so a stale index (a copied ``.git``) does not matter. Left out: what the
    repository generates (:data:`GENERATED_PATHS`; a file whose only changes are its
    :data:`GENERATED_TABLES`) and its own Python environment (:func:`_environment_paths`).
    ``None`` when git or ``commit`` is not available."""
    skip = [*GENERATED_PATHS, *_environment_paths(root)]
    tree = _git("ls-tree", "-r", "-z", commit, root=root)
    listed = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard", "--directory",
                  "--no-empty-directory", "--", ".", *(f":(exclude){p}" for p in skip), root=root)
    if tree is None or listed is None:
        return None
    committed = {e.split("\t", 1)[1]: e.split(None, 3)[2] for e in tree.split("\0") if e}
    paths = sorted(p for p in set(committed) | set(filter(None, listed.split("\0"))) if not _under(p, skip))
    files = [p for p in paths if not p.endswith("/") and (root / p).is_file()]
    hashed = _git("hash-object", "--stdin-paths", root=root, stdin="\n".join(files)) if files else ""
    if hashed is None:
        return None
    now = dict(zip(files, hashed.split()))
    changed = [p for p in paths if p not in now or now[p] != committed.get(p)]
    for name, markers in GENERATED_TABLES.items():
        if name in changed and name in committed and name in now:
            before = _git("cat-file", "blob", committed[name], root=root)
            current = (root / name).read_text(encoding="utf-8")
            if before is not None and _without_tables(before, markers) == _without_tables(current, markers):
                changed.remove(name)
    return changed


def git_state(root: Path | None = None) -> dict[str, Any]:
    """Commit, whether the files differ from it, which ones, and :func:`source_hash`.

    The commit is ``$REPRO_COMMIT`` when set (a lent GPU machine's ``.git`` can be the session's
    first one, not the files it runs), else ``HEAD``. ``dirty`` compares the working tree with
    that commit (:func:`changed_paths`; generated outputs and the project's environment are not
    edits) and ``dirty_paths`` names up to :data:`DIRTY_PATHS_SHOWN` of the changed paths. Where
    the commit is not in ``.git`` (or there is no git), ``dirty`` is ``"unknown"`` and
    ``dirty_paths`` ``None``: never clean, and ``source_hash`` lets anyone check the claim
    against that commit's files.
    """
    root = root or REPO_ROOT
    head = _git("rev-parse", "HEAD", root=root)
    stated = os.environ.get("REPRO_COMMIT", "").strip()
    commit = _git("rev-parse", "--verify", "--quiet", f"{stated}^{{commit}}", root=root) if stated else head
    changed = changed_paths(root, commit) if commit else None
    shown = None if changed is None else changed[:DIRTY_PATHS_SHOWN] + (
        [f"... and {len(changed) - DIRTY_PATHS_SHOWN} more"] if len(changed) > DIRTY_PATHS_SHOWN else [])
    state = {"commit": commit or stated or "unknown",
             "dirty": "unknown" if changed is None else bool(changed), "dirty_paths": shown,
             "source_hash": source_hash() if root == REPO_ROOT else None}
    if stated and (commit is None or commit != head):   # not HEAD, or not checkable here
        state.update(commit_from="REPRO_COMMIT", git_head=head)
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


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 when it is a lower-precision float (bfloat16 / float16 under autocast),
    else unchanged: sums and densities are never computed below float32, and float64 stays
    float64 (gradient checks, double-precision runs)."""
    return t.float() if t.is_floating_point() and t.dtype.itemsize < 4 else t


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
