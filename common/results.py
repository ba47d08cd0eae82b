"""Results I/O: where a notebook writes, atomic files, metrics with provenance.

Layout: ``results/<notebook>/`` holds the executed notebook, its HTML rendering, ``figures/``
and ``metrics.json``. ``make reproduce`` runs a notebook into a staging folder and swaps it into
place only when the run succeeded, so a crash never leaves half-written results behind.
Interactive and nbval runs write to ``results/scratch/<notebook>/`` (git-ignored) unless
``OUT_DIR`` / ``$REPRO_OUT`` say otherwise.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .runtime import README_TABLE, REPO_ROOT, provenance, replace_generated_table

OUT_ENV = "REPRO_OUT"
RESULTS_DIR = REPO_ROOT / "results"
METRICS_FILE = "metrics.json"


def out_dir(notebook: str, override: str | os.PathLike | None = None) -> Path:
    """Output folder: ``override`` (papermill ``OUT_DIR``) > ``$REPRO_OUT/<notebook>`` >
    ``results/scratch/<notebook>``. Created if needed."""
    if override:
        path = Path(override)
    elif os.environ.get(OUT_ENV):
        path = Path(os.environ[OUT_ENV]) / notebook
    else:
        path = RESULTS_DIR / "scratch" / notebook
    (path / "figures").mkdir(parents=True, exist_ok=True)
    return path.resolve()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be read
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_generated_table(readme: str | os.PathLike, body: str,
                          markers: tuple[str, str] = README_TABLE) -> bool:
    """Replace what stands between ``markers`` in ``readme`` by ``body`` (atomically, only when
    it changes); returns whether it changed. A README without the markers is a ``ValueError``."""
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    new = replace_generated_table(text, f"\n{body}\n", markers)
    if new is None:
        raise ValueError(f"{readme} lacks the markers {markers[0]} / {markers[1]}")
    if new != text:
        atomic_write_bytes(readme, new.encode("utf-8"))
    return new != text


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.detach().cpu().tolist())
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)  # JSON has no NaN/inf; keep it visible instead of failing
    if isinstance(obj, Path):
        return str(obj)
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    text = json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n"
    return atomic_write_bytes(path, text.encode())


def save_metrics(
    out: Path,
    notebook: str,
    *,
    profile: str,
    seeds: Sequence[int],
    device: torch.device,
    wall_time_s: float,
    config: Mapping[str, Any],
    metrics: Mapping[str, Any],
    summary: Sequence[Mapping[str, Any]] = (),
    timing: Mapping[str, Any] | None = None,
    reduced: bool | None = None,
) -> Path:
    """Write ``out/metrics.json`` atomically, with provenance.

    ``summary`` rows (``quantity``, ``ours``, ``paper``, ``unit``, optional ``note``) feed the
    README results table; ``paper`` values must come from :mod:`common.references`.
    ``reduced`` overrides the profile's default label (see :func:`runtime.provenance`).
    """
    for row in summary:
        missing = {"quantity", "ours", "paper", "unit"} - set(row)
        if missing:
            raise ValueError(f"summary row {row} lacks {sorted(missing)}")
    record = {
        "notebook": notebook,
        "provenance": provenance(profile, seeds, device, wall_time_s, reduced),
        "config": dict(config),
        "timing": dict(timing or {}),
        "metrics": dict(metrics),
        "summary": [dict(r) for r in summary],
    }
    return atomic_write_json(Path(out) / METRICS_FILE, record)


def save_figure(fig: Any, out: Path, name: str, dpi: int = 120) -> Path:
    """Save a matplotlib figure as ``out/figures/<name>.png`` atomically."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(Path(out) / "figures" / f"{name}.png", buf.getvalue())


PUBLISHED_NAME = re.compile(r"[0-9][0-9]_[A-Za-z0-9_]+")   # results/<notebook>/, nothing else


def load_all_metrics(results: Path = RESULTS_DIR) -> list[dict[str, Any]]:
    """Every published ``results/<notebook>/metrics.json``.

    Only folders named exactly like a notebook count, and only when the record names that
    notebook: ``<notebook>.failed/``, ``.staging-*``, ``.old-*`` and ``scratch/`` never do.
    """
    found = []
    for path in sorted(Path(results).glob(f"*/{METRICS_FILE}")):
        if not PUBLISHED_NAME.fullmatch(path.parent.name):
            continue
        with open(path) as f:
            rec = json.load(f)
        if rec.get("notebook") == path.parent.name:
            found.append(rec)
    return found
