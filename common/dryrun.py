"""Every notebook's ``full`` code path end to end on this machine, publishing nothing
(``make dryrun``).

    python -m common.dryrun [--nb 05] [--keep] [--out DIR] [--no-segments]

Each notebook runs under the ``dryrun`` profile: its ``full`` table entry (full model sizes,
batch sizes, precision and real, full datasets from the mirror) with a handful of optimiser
steps per model and small evaluation subsets (``runtime.dryrun_of`` in each table), through
``common.reproduce``'s staging, checks and HTML rendering, into a temporary folder:
``results/`` and ``checkpoints/`` are never written (``$REPRO_OUT``, ``$REPRO_CHECKPOINTS`` and
``reproduce --scratch`` point into the temporary folder, and a before/after listing of both
folders and the README is compared). Notebook 02 runs twice to exercise the time-segment path
of a long run: first with ``SEGMENT_SECONDS`` so short that its first model stops after epoch 1
of 2 (``SegmentUnfinished``, exit 3 in ``make reproduce``), then again, resuming from the
checkpoint; the metrics must say so. Then the README's results rows are built from the dry
run's ``metrics.json`` files (``common.report``, into the temporary folder and into a copy of the
README). Prints pass/fail and wall seconds per notebook and exits 1 if anything failed (the
temporary folder is then kept for inspection).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from . import gan, imbalanced_cifar, long_tailed, profiles, realnvp, reproduce, runtime
from .results import METRICS_FILE, RESULTS_DIR

PROFILE = "dryrun"
SEGMENT_DEMO = "02"            # notebook whose long training is run in two segments
SEGMENT_SECONDS = 0.001        # over before the first epoch ends: stop after epoch 1, resume
WATCHED = ("results", "checkpoints", "README.md")   # must be byte-for-byte as before


def snapshot(root: Path = runtime.REPO_ROOT) -> dict[str, tuple[int, int]]:
    """``{path: (size, mtime_ns)}`` of every file under :data:`WATCHED` (relative to ``root``)."""
    found: dict[str, tuple[int, int]] = {}
    for name in WATCHED:
        top = root / name
        for path in ([top] if top.is_file() else sorted(top.rglob("*")) if top.is_dir() else []):
            if path.is_file() or path.is_symlink():
                st = path.lstat()
                found[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return found


def changes(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[str]:
    """What differs between two :func:`snapshot` listings ("added x", "changed y", "removed z")."""
    out = [f"added {p}" for p in sorted(set(after) - set(before))]
    out += [f"changed {p}" for p in sorted(set(before) & set(after)) if before[p] != after[p]]
    return out + [f"removed {p}" for p in sorted(set(before) - set(after))]


def resumed_values(record: Any, path: str = "metrics") -> dict[str, Any]:
    """Every ``resumed_from*`` entry of a metrics record that is not ``None`` (where a run
    restarted from a checkpoint), by its path in the record."""
    found: dict[str, Any] = {}
    if isinstance(record, dict):
        for k, v in record.items():
            if str(k).startswith("resumed_from") and not isinstance(v, (dict, list)) and v is not None:
                found[f"{path}.{k}"] = v
            elif isinstance(v, (dict, list)):
                found.update(resumed_values(v, f"{path}.{k}"))
    elif isinstance(record, list):
        for i, v in enumerate(record):
            found.update(resumed_values(v, f"{path}[{i}]"))
    return found


def _why(e: BaseException) -> str:
    """One line for a failure: papermill's exception name and value when a cell raised."""
    if getattr(e, "ename", None):
        return f"{e.ename}: {str(getattr(e, 'evalue', '')).splitlines()[0][:200]}"
    return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


def run_book(book: Path, res_dir: Path, extra: dict[str, object] | None = None
             ) -> tuple[bool, float, str, dict[str, Any] | None]:
    """Run ``book`` in the dryrun profile into ``res_dir``: (passed, seconds, note, metrics)."""
    t0 = time.perf_counter()
    try:
        final = reproduce.run_one(book, PROFILE, dict(extra or {}), results_dir=res_dir)
    except Exception as e:   # reported, the next notebook still runs
        return False, time.perf_counter() - t0, _why(e), None
    seconds = time.perf_counter() - t0
    rec = json.loads((final / METRICS_FILE).read_text())
    prov = rec.get("provenance", {})
    if prov.get("profile") != PROFILE or prov.get("reduced") is not True:
        return False, seconds, (f"metrics say profile {prov.get('profile')!r}, reduced "
                                f"{prov.get('reduced')!r}; a dry run must be {PROFILE!r} and reduced"), rec
    return True, seconds, "", rec


def segment_demo(book: Path, res_dir: Path, ckpt: Path) -> tuple[bool, float, str]:
    """First segment of ``book``: must stop with ``SegmentUnfinished`` and leave a checkpoint."""
    before = set(ckpt.rglob("*.pt")) if ckpt.is_dir() else set()
    t0 = time.perf_counter()
    try:
        reproduce.run_one(book, PROFILE, {"SEGMENT_SECONDS": SEGMENT_SECONDS}, results_dir=res_dir)
    except Exception as e:
        seconds = time.perf_counter() - t0
        if getattr(e, "ename", None) != "SegmentUnfinished":
            return False, seconds, f"expected SegmentUnfinished, got {_why(e)}"
        saved = sorted(p.name for p in set(ckpt.rglob("*.pt")) - before) if ckpt.is_dir() else []
        if not saved:
            return False, seconds, "stopped, but saved no checkpoint"
        return True, seconds, (f"stopped by SEGMENT_SECONDS={SEGMENT_SECONDS} as intended "
                               f"(make reproduce: exit {reproduce.UNFINISHED_EXIT}); saved {', '.join(saved)}")
    return False, time.perf_counter() - t0, "finished although its segment was over: no segment stop"


def readme_rows(res_dir: Path, scratch: Path) -> tuple[bool, float, str]:
    """Build the README's results block from the dry run's metrics, into ``res_dir`` and into a
    copy of the README (the real one is never written)."""
    from . import report
    from .results import load_all_metrics

    t0 = time.perf_counter()
    try:
        records = load_all_metrics(res_dir)
        rows = reproduce.write_scratch_rows(res_dir)
        copy = scratch / "README.md"
        shutil.copyfile(runtime.REPO_ROOT / "README.md", copy)
        report.update_readme(readme=copy, results=res_dir)
        table = [line for line in copy.read_text(encoding="utf-8").splitlines()
                 if line.startswith("| [") and "(reduced)" in line and PROFILE in line]
    except Exception as e:
        return False, time.perf_counter() - t0, _why(e)
    if len(table) != len(records):
        return False, time.perf_counter() - t0, (f"{len(records)} metrics.json but {len(table)} "
                                                 f"headline rows marked '{PROFILE} (reduced)'")
    return True, time.perf_counter() - t0, f"{len(table)} headline rows, {rows}"


SWITCHES = ("compile", "amp", "bf16", "channels_last")   # the full profiles' speed/precision switches


def switches() -> dict[str, dict[str, Any]]:
    """:data:`SWITCHES` as every notebook's dryrun entry sets them (06's and 08's live in their
    TrainConfig)."""
    tables = {"01": profiles.CONFIGS_01, "02": profiles.CONFIGS_02, "03": profiles.CONFIGS_03,
              "04": profiles.CONFIGS_04, "05": realnvp.CONFIGS, "06": imbalanced_cifar.CONFIGS,
              "07": gan.CONFIGS, "08": long_tailed.CONFIGS}
    out = {}
    for nb, table in tables.items():
        cfg = dict(table[PROFILE])
        for value in list(cfg.values()):
            if dataclasses.is_dataclass(value):
                cfg.update(dataclasses.asdict(value))
        out[nb] = {k: cfg[k] for k in SWITCHES if k in cfg}
    return out


def coverage_notes(device: torch.device) -> list[str]:
    """What the full profiles' switches did on this device (read from the tables)."""
    sw, cpu = switches(), device.type == "cpu"

    def which(key: str, on: bool = True) -> str:
        found = [f"{nb} ({v[key]})" if not isinstance(v[key], bool) else nb
                 for nb, v in sw.items() if key in v and bool(v[key]) == on]
        return ", ".join(found) or "none"

    compiled = which("compile")
    return [
        f"channels_last (asked by {which('channels_last')}; 07 always): "
        + (f"{'used' if runtime.memory_format(True, device) == torch.channels_last else 'a no-op'}"
           " on this CPU (runtime.memory_format: channels_last only where oneDNN runs AVX-512 / AMX "
           "kernels; it crashed on AVX2-only CPUs)" if cpu else "used"),
        f"bf16 autocast (amp) on {device.type}: ran in {which('amp')}; not asked by {which('amp', False)}"
        + (f"; bf16 \"auto\" of {which('bf16')} "
           f"{'ran' if runtime.resolve_amp('auto', device) else 'is off (no native bf16 here)'}"
           if cpu else ""),
        f"torch.compile: {'ran in ' + compiled if compiled != 'none' else 'no full profile enables it: none ran'}"
        + (" (on CPU: inductor C++ kernels, no CUDA graphs)" if cpu and compiled != "none" else "")
        + f"; off in {which('compile', False)}",
        "fused Adam (one kernel for all parameters): the Kingma trainer and 07's VAE trainer "
        f"use it on every device, this {device.type} included (07's GAN trainer keeps torch's loop)",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nb", default=None, help="only notebooks whose name starts with this, e.g. 05")
    ap.add_argument("--out", default=None, metavar="DIR",
                    help="use DIR (outside results/ and checkpoints/) instead of a temporary folder; kept")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder even if all passed")
    ap.add_argument("--no-segments", action="store_true",
                    help=f"skip the two-segment run of notebook {SEGMENT_DEMO}")
    args = ap.parse_args(argv)
    for name, value in runtime.absolutize_path_env().items():   # kernels run in notebooks/
        print(f"{name} -> {value}")
    if os.environ.get(runtime.PROFILE_ENV, PROFILE) != PROFILE:
        print(f"note: ${runtime.PROFILE_ENV}={os.environ[runtime.PROFILE_ENV]} ignored: a dry run is "
              f"profile {PROFILE}")
    books = reproduce.find_notebooks(args.nb)
    for book in books:   # every notebook's parameters before anything runs
        extra = {"SEGMENT_SECONDS": SEGMENT_SECONDS} if book.name.startswith(SEGMENT_DEMO) else {}
        reproduce.check_parameters(book, {"OUT_DIR": "", "PROFILE": PROFILE,
                                          **({} if args.no_segments else extra)})
    scratch = reproduce.scratch_dir(args.out or tempfile.mkdtemp(prefix="repro-dryrun-"))
    res_dir, ckpt = scratch / "results", scratch / "checkpoints"
    res_dir.mkdir(exist_ok=True)
    os.environ.update({runtime.PROFILE_ENV: PROFILE, runtime.CHECKPOINTS_ENV: str(ckpt),
                       "REPRO_OUT": str(scratch / "out")})
    if not os.environ.get(runtime.THREADS_ENV, "").strip():
        os.environ[runtime.THREADS_ENV] = "1"   # fastest on a shared 2-core machine
    device = runtime.get_device()
    print(f"== dry run: profile {PROFILE} on {runtime.device_name(device)}, "
          f"{os.environ[runtime.THREADS_ENV]} torch thread(s); outputs in {scratch} "
          f"(results -> {res_dir}, checkpoints -> {ckpt}); {runtime.show_path(RESULTS_DIR)}/ is not touched", flush=True)
    before = snapshot()
    t_all = time.perf_counter()
    rows: list[tuple[str, bool, float, str]] = []
    with reproduce.results_lock(res_dir):
        for book in books:
            if not args.no_segments and book.name.startswith(SEGMENT_DEMO):
                ok, sec, note = segment_demo(book, res_dir, ckpt)
                rows.append((f"{book.stem} (segment 1 of 2)", ok, sec, note))
            ok, sec, note, rec = run_book(book, res_dir)
            if ok and not args.no_segments and book.name.startswith(SEGMENT_DEMO):
                resumed = resumed_values(rec.get("metrics", {}))
                if resumed:
                    note = "resumed: " + ", ".join(f"{k} = {v}" for k, v in resumed.items())
                else:
                    ok, note = False, "the second segment did not resume from the first one's checkpoint"
            rows.append((book.stem + (" (segment 2 of 2)" if not args.no_segments and
                                      book.name.startswith(SEGMENT_DEMO) else ""), ok, sec, note))
    rows.append(("README rows (common.report)", *readme_rows(res_dir, scratch)))
    diff = changes(before, snapshot())
    rows.append((f"{', '.join(WATCHED)} untouched", not diff, 0.0,
                 "; ".join(diff[:10]) + (f" (+{len(diff) - 10} more)" if len(diff) > 10 else "")))
    total = time.perf_counter() - t_all
    failed = [r for r in rows if not r[1]]
    width = max(len(r[0]) for r in rows)
    print(f"\n== dry run summary (profile {PROFILE}: full models, batches and data; capped steps and "
          f"evaluation sizes; numbers meaningless)")
    for name, ok, sec, note in rows:
        print(f"  {name:{width}s}  {'pass' if ok else 'FAIL'}  {sec:7.1f} s" + (f"  {note}" if note else ""))
    print(f"  {'total':{width}s}  {'pass' if not failed else 'FAIL'}  {total:7.1f} s")
    for line in coverage_notes(device):
        print(f"  note: {line}")
    if failed or args.keep or args.out:
        print(f"outputs kept in {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
