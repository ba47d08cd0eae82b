"""Run notebooks headless with papermill into ``results/`` (``make reproduce``).

    python -m common.reproduce [--nb 04] [--profile smoke|cpu|full|dryrun] [--param NAME=VALUE ...]
    python -m common.reproduce --scratch DIR ...   # the same into DIR: never publishes (make dryrun)

Each notebook runs into a staging folder ``results/.staging-<name>/``. Only when it finished and
wrote its ``metrics.json`` is the HTML rendered and the folder swapped into
``results/<name>/``; a failure leaves the earlier results untouched, keeps the failed run in
``results/<name>.failed/`` for inspection, and stops with a non-zero exit: 3 when a
notebook's time segment (parameter ``SEGMENT_SECONDS``) ran out before training finished (its
checkpoints are saved; run the same command again to resume), else 1. A run whose
``metrics.json`` says some model is not ``finished`` counts as unfinished too (exit 3): it is
never published.

``--scratch DIR`` runs the same way (staging, checks, HTML) with ``DIR`` in place of
``results/``: nothing under ``results/`` is touched, the README is not regenerated (its rows are
written to ``DIR/README-results.md`` instead), and the lock is ``DIR``'s.

One ``make reproduce`` at a time per clone (a lock file in ``results/``). Kernels import the
``common`` of this repository (``PYTHONPATH``), and refuse to start with any other
(``$REPRO_EXPECT_ROOT``, checked in ``common/__init__.py``).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from .results import METRICS_FILE, RESULTS_DIR
from .training import HEADLESS_ENV
from .runtime import (PROFILE_ENV, PROFILES, REPO_ROOT, ProfileError, absolutize_path_env,
                      show_path)

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
REQUIRED_PARAMETERS = ("PROFILE", "OUT_DIR")
UNFINISHED_EXIT = 3   # a notebook's time segment (SEGMENT_SECONDS) ran out: run again to resume
LOCK_FILE = ".reproduce.lock"


class Unfinished(RuntimeError):
    """A notebook ran to its end but its metrics say a model did not finish training."""


class Busy(SystemExit):
    """Another ``make reproduce`` holds this clone's results lock."""


class Terminated(SystemExit):
    """SIGTERM (``timeout``, a batch system, a lent machine's call limit) arrived mid-run."""


@contextlib.contextmanager
def terminate_cleanly():
    """Turn SIGTERM into :class:`Terminated` (exit 143) while running, so that a killed run goes
    the way of every failure: the partly executed notebook (papermill saves it cell by cell)
    lands in ``results/<name>.failed/`` and earlier results stay. A plain SIGTERM would end the
    process with the run still in its staging folder and no message."""
    def handler(signum: int, frame: object) -> None:
        raise Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def find_notebooks(prefix: str | None) -> list[Path]:
    books = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    if prefix:
        books = [b for b in books if b.name.startswith(prefix)]
        if not books:
            raise SystemExit(f"no notebook in {NOTEBOOKS_DIR} starts with {prefix!r}; "
                             f"have: {[b.name for b in sorted(NOTEBOOKS_DIR.glob('*.ipynb'))]}")
    return books


def check_parameters(book: Path, given: dict[str, object]) -> None:
    """Refuse parameters the notebook does not declare (papermill would only warn)."""
    import papermill

    declared = set(papermill.inspect_notebook(str(book)))
    lacking = [p for p in REQUIRED_PARAMETERS if p not in declared]
    unknown = sorted(set(given) - declared)
    if lacking or unknown:
        raise SystemExit(f"{book.name}: parameters cell lacks {lacking}, unknown parameters "
                         f"{unknown}; declared: {sorted(declared)} (papermill skips a parameter line "
                         f"whose comment contains '=')")


def render_html(executed: Path) -> Path:
    import nbconvert
    import nbformat

    html, _ = nbconvert.HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    out = executed.with_suffix(".html")
    out.write_text(html, encoding="utf-8")
    return out


def relocate_paths(executed: Path, staging: Path, final: Path) -> int:
    """Rewrite ``executed`` so that the staging folder reads as where the results end up: every
    occurrence of ``staging`` (absolute, and as a repository-relative path) in sources, outputs
    and metadata (papermill's injected parameters, banners) becomes ``final`` relative to the
    repository (``results/<name>``). Returns the number of replacements."""
    text = executed.read_text(encoding="utf-8")
    target = show_path(final)
    olds = sorted({str(staging), str(staging.resolve()), show_path(staging)}, key=len, reverse=True)
    count = 0
    for old in olds:
        for form in (old, json.dumps(old)[1:-1]):          # as written, and JSON-escaped
            count += text.count(form)
            text = text.replace(form, json.dumps(target)[1:-1] if form != old else target)
    if count:
        executed.write_text(text, encoding="utf-8")
    return count


def run_one(book: Path, profile: str | None, extra: dict[str, object],
            results_dir: Path | None = None) -> Path:
    """Run ``book`` into ``results_dir`` (default ``results/``) via its staging folder; returns
    ``results_dir/<name>``."""
    import papermill

    name = book.stem
    results_dir = Path(results_dir) if results_dir is not None else RESULTS_DIR
    staging = results_dir / f".staging-{name}"
    final, failed = results_dir / name, results_dir / f"{name}.failed"
    params: dict[str, object] = {"OUT_DIR": str(staging), **extra}
    if profile:
        params["PROFILE"] = profile
    check_parameters(book, params)            # before anything is created
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    executed = staging / book.name
    t0 = time.perf_counter()
    print(f"== {name}: profile={effective_profile(profile)} -> {show_path(final)}", flush=True)
    try:
        with kernel_environment():
            papermill.execute_notebook(str(book), str(executed), parameters=params,
                                       kernel_name="python3", cwd=str(NOTEBOOKS_DIR),
                                       progress_bar=True, log_output=True)
        relocate_paths(executed, staging, final)   # the reader sees results/<name>, not staging
        if not (staging / METRICS_FILE).is_file():
            raise RuntimeError(f"{name} finished without writing {METRICS_FILE}")
        unfinished = unfinished_parts(json.loads((staging / METRICS_FILE).read_text()))
        if unfinished:
            raise Unfinished(f"{name}: {', '.join(unfinished)} did not finish training (its time "
                             f"segment ran out); checkpoints are saved, run again to resume")
        render_html(executed)
    except BaseException:
        shutil.rmtree(failed, ignore_errors=True)
        staging.rename(failed)
        print(f"!! {name} failed after {time.perf_counter() - t0:.0f}s; earlier results kept, "
              f"the failed run is in {show_path(failed)}", file=sys.stderr)
        raise
    old = RESULTS_DIR / f".old-{name}"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(failed, ignore_errors=True)
    print(f"== {name}: done in {time.perf_counter() - t0:.0f}s", flush=True)
    return final


def effective_profile(requested: str | None) -> str:
    """What the notebook will run: ``$REPRO_PROFILE`` > ``--profile`` > auto (for the banner)."""
    return os.environ.get(PROFILE_ENV, "").strip() or requested or "auto"


def unfinished_parts(record: object, path: str = "metrics") -> list[str]:
    """Keys of ``record`` (a metrics.json) under which ``"finished": false`` appears."""
    found: list[str] = []
    if isinstance(record, dict):
        if record.get("finished") is False:
            found.append(path)
        for k, v in record.items():
            if isinstance(v, (dict, list)):
                found += unfinished_parts(v, f"{path}.{k}")
    elif isinstance(record, list):
        for i, v in enumerate(record):
            found += unfinished_parts(v, f"{path}[{i}]")
    return found


@contextlib.contextmanager
def kernel_environment():
    """Kernels (started by papermill from here) import this repository's ``common`` first and
    check it (``$REPRO_EXPECT_ROOT``), whatever the environment's editable install points at;
    they run headless (``$REPRO_HEADLESS``: no progress bars)."""
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "REPRO_EXPECT_ROOT", HEADLESS_ENV)}
    rest = [p for p in (saved["PYTHONPATH"] or "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *rest])
    os.environ["REPRO_EXPECT_ROOT"] = str(REPO_ROOT)
    os.environ[HEADLESS_ENV] = "1"          # no progress bars in the rendered notebooks
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def results_lock(results: Path | None = None):
    """Hold this clone's ``results/.reproduce.lock`` (refuse at once if another run has it)."""
    results = Path(results or RESULTS_DIR)
    results.mkdir(parents=True, exist_ok=True)
    path = results / LOCK_FILE
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise Busy(f"another `make reproduce` is running in this clone ({holder}); wait for it "
                       f"to finish, or run the second one from another clone. Nothing was changed.")
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        try:
            yield path
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


def _literal(value: object) -> object:
    """Tuples become lists: papermill writes a tuple parameter as its string."""
    if isinstance(value, tuple):
        return [_literal(v) for v in value]
    return value


def parse_param(text: str) -> tuple[str, object]:
    """``NAME=VALUE`` -> (NAME, literal VALUE); ``RESUME=False`` gives the bool False,
    ``M1_HIDDEN=(500,500)`` the list ``[500, 500]``."""
    import ast

    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise SystemExit(f"--param expects NAME=VALUE, got {text!r}")
    try:
        return name, _literal(ast.literal_eval(value))
    except (ValueError, SyntaxError):
        return name, value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nb", default=None, help="run only notebooks whose name starts with this, e.g. 04")
    ap.add_argument("--profile", default=None, help=f"one of {', '.join(PROFILES)} (default: auto)")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="extra papermill parameter (VALUE read as a Python literal, else a string)")
    ap.add_argument("--scratch", default=None, metavar="DIR",
                    help="run into DIR instead of results/ and publish nothing (README untouched)")
    args = ap.parse_args(argv)
    for name, value in absolutize_path_env().items():   # kernels run in notebooks/
        print(f"{name} -> {value}")
    extra = dict(parse_param(p) for p in args.param)
    if args.profile and args.profile not in PROFILES:
        raise ProfileError(f"unknown profile {args.profile!r}; choose one of {', '.join(PROFILES)}")
    books = find_notebooks(args.nb)
    for book in books:   # every notebook's parameters before any result is replaced
        check_parameters(book, {"OUT_DIR": "", **({"PROFILE": args.profile} if args.profile else {}),
                                **extra})
    if effective_profile(args.profile) == "dryrun" and not args.scratch:
        raise SystemExit("the dryrun profile is never published into results/: run `make dryrun`, "
                         "or add --scratch DIR")
    scratch = scratch_dir(args.scratch) if args.scratch else None
    with results_lock(scratch), terminate_cleanly():
        for book in books:
            try:
                run_one(book, args.profile, extra, results_dir=scratch)
            except Unfinished as e:
                print(f"!! {e} (exit {UNFINISHED_EXIT})", file=sys.stderr)
                return UNFINISHED_EXIT
            except Exception as e:  # already reported; stop at the first failure
                if getattr(e, "ename", None) == "SegmentUnfinished":   # papermill's error names it
                    print(f"!! {book.stem}: time segment used up (exit {UNFINISHED_EXIT}): {e.evalue}",
                          file=sys.stderr)
                    return UNFINISHED_EXIT
                print(f"!! {type(e).__name__}: {e}", file=sys.stderr)
                return 1
        if scratch is not None:
            print(f"README rows (not written to README.md): {write_scratch_rows(scratch)}")
            return 0
        from .report import update_readme

        update_readme()
    return 0


def scratch_dir(path: str | os.PathLike) -> Path:
    """``path`` resolved, refused when it is or lies inside ``results/`` (or the repository's
    ``checkpoints/``): a scratch run must not be able to publish or to leave resumable state."""
    path = Path(path).expanduser().resolve()
    for protected in (RESULTS_DIR, REPO_ROOT / "checkpoints"):
        if path == protected.resolve() or path.is_relative_to(protected.resolve()):
            raise SystemExit(f"--scratch {path} lies inside {show_path(protected)}; use a folder "
                             f"outside it (e.g. one from mktemp -d)")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_scratch_rows(scratch: Path) -> Path:
    """The README's results block, built from ``scratch/*/metrics.json`` by the same code as
    ``make report``, into ``scratch/README-results.md``; the README itself is never touched."""
    from .report import results_table
    from .results import atomic_write_bytes, load_all_metrics

    return atomic_write_bytes(scratch / "README-results.md",
                              (results_table(load_all_metrics(scratch)) + "\n").encode())


if __name__ == "__main__":
    sys.exit(main())
