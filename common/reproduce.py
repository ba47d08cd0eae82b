"""Run notebooks headless with papermill into ``results/`` (``make reproduce``).

    python -m common.reproduce [--nb 04] [--profile smoke|cpu|full|dryrun] [--param NAME=VALUE ...]
                               [--force]
    python -m common.reproduce --scratch DIR ...   # the same into DIR: never publishes (make dryrun)

Each notebook runs into a staging folder ``results/.staging-<name>/``. Only when it finished and
wrote its ``metrics.json`` is the HTML rendered and the folder swapped into
``results/<name>/``; a failure leaves the earlier results untouched, keeps the failed run in
``results/<name>.failed/`` for inspection, and stops with a non-zero exit: 3 when a
notebook's time segment (parameter ``SEGMENT_SECONDS``) ran out before training finished (its
checkpoints are saved; run the same command again to resume), else 1. A run whose
``metrics.json`` says some model is not ``finished`` counts as unfinished too (exit 3): it is
never published. Publishing (the swap and the README's regenerated results tables, after every
published notebook) holds SIGTERM back until it is complete.

Refused before any kernel starts (one line, exit 2): an unknown or dryrun profile (every
spelling: ``--profile``, ``--param PROFILE=``, ``$REPRO_PROFILE``; two that disagree are a
conflict), parameters a notebook does not declare, parameters that choose where outputs go
(``OUT_DIR``, ``*_DIR``/``*_PATH``/``*_ROOT``/``*_FILE``), a value of the wrong kind (a
true/false parameter, a non-positive ``SEGMENT_SECONDS``), and a run of a profile ranked below
the published one (smoke < cpu < full, read from ``results/<name>/metrics.json``) unless
``--force``. A read-only ``results/`` or a full disk is one line naming the path (exit 1).

``--scratch DIR`` runs the same way (staging, checks, HTML) with ``DIR`` in place of
``results/``: nothing under ``results/`` is touched, the README is not regenerated (its rows are
written to ``DIR/README-results.md`` instead), and the lock is ``DIR``'s.

One ``make reproduce`` at a time per clone (a lock file in ``results/``). Kernels import the
``common`` of this repository (``PYTHONPATH``), and refuse to start with any other
(``$REPRO_EXPECT_ROOT``, checked in ``common/__init__.py``).
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from .results import METRICS_FILE, RESULTS_DIR, atomic_write_bytes
from .training import HEADLESS_ENV
from .runtime import (PROFILE_ENV, PROFILES, REPO_ROOT, ProfileError, absolutize_path_env,
                      requested_profile, resolve_profile, show_path)

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
REQUIRED_PARAMETERS = ("PROFILE", "OUT_DIR")
UNFINISHED_EXIT = 3   # a notebook's time segment (SEGMENT_SECONDS) ran out: run again to resume
USAGE_EXIT = 2        # refused before any kernel started (profile, parameters, published rank)
LOCK_FILE = ".reproduce.lock"
# parameters that choose where a notebook writes: set by run_one (OUT_DIR = its staging folder)
# or left to the notebook's default, never given on the command line
OUTPUT_PARAMETER = re.compile(r"OUT_DIR|.*_(DIR|PATH|ROOT|FILE)", re.IGNORECASE)
# which published result a run may replace without --force: not one of a higher rank
# (dryrun is never published: refused without --scratch)
PUBLISH_RANK = {"smoke": 0, "cpu": 1, "full": 2}
FS_FIXES = {errno.EROFS: "the file system is read-only: make it writable, or run into a writable "
                         "folder with --scratch DIR",
            errno.EACCES: "no permission to write there: make it writable (chmod u+w), or run into "
                          "a writable folder with --scratch DIR",
            errno.ENOSPC: "the disk is full: free some space and run the same command again",
            errno.EDQUOT: "the disk quota is used up: free some space and run the same command again"}
FS_FIXES[errno.EPERM] = FS_FIXES[errno.EACCES]


class Unfinished(RuntimeError):
    """A notebook ran to its end but its metrics say a model did not finish training."""


class Busy(SystemExit):
    """Another ``make reproduce`` holds this clone's results lock."""


class UsageError(SystemExit):
    """A command line refused before any kernel starts: :func:`cli` prints it as one line and
    exits 2 (uncaught elsewhere, e.g. under ``make dryrun``, it is printed and exits 1)."""


class PublishError(SystemExit):
    """The file system refused a step on the way into ``results/`` (read-only, full disk): one
    line naming the path and the fix, exit 1."""


@contextlib.contextmanager
def filesystem_step(what: str, path: Path) -> Iterator[None]:
    """Turn an ``OSError`` of the block into :class:`PublishError` "cannot <what> <path>: ..."."""
    try:
        yield
    except OSError as e:
        fix = FS_FIXES.get(e.errno, "check that the folder is writable and the disk has space")
        where = show_path(e.filename) if e.filename else show_path(path)
        raise PublishError(f"cannot {what} {where}: {e.strerror or e}; {fix}") from e


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


@contextlib.contextmanager
def sigterm_deferred() -> Iterator[None]:
    """Hold SIGTERM back while the block runs and deliver it (to whatever handler was in force)
    once the block is over: publishing (the swap into ``results/<name>`` and the README) is
    never cut in half. Outside the main thread, where no handler can be set, a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if caught:
            signal.raise_signal(signal.SIGTERM)


def find_notebooks(prefix: str | None) -> list[Path]:
    books = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    if prefix:
        books = [b for b in books if b.name.startswith(prefix)]
        if not books:
            raise UsageError(f"no notebook in {NOTEBOOKS_DIR} starts with {prefix!r}; "
                             f"have: {[b.name for b in sorted(NOTEBOOKS_DIR.glob('*.ipynb'))]}")
    return books


def check_parameters(book: Path, given: dict[str, object]) -> None:
    """Refuse parameters the notebook does not declare (papermill would only warn), and values of
    the wrong kind (:func:`value_problem`)."""
    import papermill

    declared = papermill.inspect_notebook(str(book))
    lacking = [p for p in REQUIRED_PARAMETERS if p not in declared]
    unknown = sorted(set(given) - set(declared))
    if lacking or unknown:
        raise UsageError(f"{book.name}: parameters cell lacks {lacking}, unknown parameters "
                         f"{unknown}; declared: {sorted(declared)} (papermill skips a parameter line "
                         f"whose comment contains '=')")
    bad = [f"{name}={value!r} ({why})" for name, value in given.items()
           if (why := value_problem(name, value, declared[name]["default"]))]
    if bad:
        raise UsageError(f"{book.name}: refused {'; '.join(bad)}")


def value_problem(name: str, value: object, default: str) -> str | None:
    """Why ``value`` does not fit parameter ``name`` whose declared default is the source text
    ``default`` (papermill's), or ``None``: a parameter whose default is True/False takes only
    True/False, ``SEGMENT_SECONDS`` only a positive number of seconds (or None)."""
    try:
        default_value = ast.literal_eval(default)
    except (ValueError, SyntaxError):
        default_value = None
    if isinstance(default_value, bool) and not isinstance(value, bool):
        return "a true/false parameter: give True or False"
    if name == "SEGMENT_SECONDS" and value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
        return "a time segment needs a positive number of seconds, e.g. SEGMENT_SECONDS=480"
    return None


def refuse_output_parameters(given: dict[str, object]) -> None:
    """Parameters that choose where a notebook writes (``OUT_DIR``, ``RUNS_DIR``, any
    ``*_DIR``/``*_PATH``/``*_ROOT``/``*_FILE``) are not the command line's: ``OUT_DIR`` is the
    staging folder that only a finished run is swapped out of, and a path of one's own could
    write into ``results/`` directly."""
    steering = sorted(name for name in given if OUTPUT_PARAMETER.fullmatch(name))
    if steering:
        raise UsageError(f"--param {', '.join(steering)} refused: where a notebook writes is "
                         f"decided by `make reproduce` (results/<notebook>, through a staging "
                         f"folder), never on the command line; to run into a folder of your own "
                         f"use `python -m common.reproduce --scratch DIR`")


def render_html(executed: Path) -> Path:
    import nbconvert
    import nbformat

    html, _ = nbconvert.HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    out = executed.with_suffix(".html")
    out.write_text(html, encoding="utf-8")
    return out


TEXT_OUTPUTS = (".ipynb", ".json", ".txt", ".md", ".csv", ".tex", ".log", ".yaml", ".yml")


def relocate_paths(staging: Path, final: Path) -> int:
    """Rewrite every text output under ``staging`` (the executed notebook, ``metrics.json``, any
    ``TEXT_OUTPUTS`` file) so that the staging folder reads as where the results end up: every
    occurrence of ``staging`` (absolute, and as a repository-relative path) in sources, outputs,
    metadata (papermill's injected parameters, banners) and recorded settings (06's
    ``config.runs_dir``) becomes ``final`` relative to the repository (``results/<name>``).
    Returns the number of replacements."""
    target = show_path(final)
    olds = sorted({str(staging), str(staging.resolve()), show_path(staging)}, key=len, reverse=True)
    forms = [(f, t) for old in olds                      # as written, and JSON-escaped
             for f, t in ((old, target), (json.dumps(old)[1:-1], json.dumps(target)[1:-1]))]
    count = 0
    for path in sorted(staging.rglob("*")):
        if path.suffix not in TEXT_OUTPUTS or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        found = 0
        for old, new in forms:
            found += text.count(old)
            text = text.replace(old, new)
        if found:
            atomic_write_bytes(path, text.encode("utf-8"))
        count += found
    return count


def run_one(book: Path, profile: str | None, extra: dict[str, object],
            results_dir: Path | None = None,
            on_publish: Callable[[], object] | None = None) -> Path:
    """Run ``book`` into ``results_dir`` (default ``results/``) via its staging folder; returns
    ``results_dir/<name>``. ``on_publish`` (``make reproduce``: the README) runs right after the
    swap, and SIGTERM waits until both are done (:func:`sigterm_deferred`)."""
    import papermill

    name = book.stem
    results_dir = Path(results_dir) if results_dir is not None else RESULTS_DIR
    staging = results_dir / f".staging-{name}"
    final, failed = results_dir / name, results_dir / f"{name}.failed"
    refuse_output_parameters(extra)
    params: dict[str, object] = {"OUT_DIR": str(staging), **extra}
    if profile:
        params["PROFILE"] = profile
    check_parameters(book, params)            # before anything is created
    shown = resolve_profile(profile)          # what the kernel will decide, for the banner
    with filesystem_step("create the staging folder", staging):
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    executed = staging / book.name
    t0 = time.perf_counter()
    print(f"== {name}: profile={shown} -> {show_path(final)}", flush=True)
    publishing = contextlib.ExitStack()
    try:
        with kernel_environment():
            papermill.execute_notebook(str(book), str(executed), parameters=params,
                                       kernel_name="python3", cwd=str(NOTEBOOKS_DIR),
                                       progress_bar=True, log_output=True)
        relocate_paths(staging, final)   # the reader sees results/<name>, not staging
        if not (staging / METRICS_FILE).is_file():
            raise RuntimeError(f"{name} finished without writing {METRICS_FILE}")
        unfinished = unfinished_parts(json.loads((staging / METRICS_FILE).read_text()))
        if unfinished:
            raise Unfinished(f"{name}: {', '.join(unfinished)} did not finish training (its time "
                             f"segment ran out); checkpoints are saved, run again to resume")
        render_html(executed)
        publishing.enter_context(sigterm_deferred())   # from here on SIGTERM waits for publishing
    except BaseException:
        with filesystem_step("keep the failed run in", failed):
            shutil.rmtree(failed, ignore_errors=True)
            staging.rename(failed)
        print(f"!! {name} failed after {time.perf_counter() - t0:.0f}s; earlier results kept, "
              f"the failed run is in {show_path(failed)}", file=sys.stderr)
        raise
    with publishing, filesystem_step("publish into", final):
        old = results_dir / f".old-{name}"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        staging.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(failed, ignore_errors=True)
        if on_publish is not None:
            on_publish()
    print(f"== {name}: done in {time.perf_counter() - t0:.0f}s", flush=True)
    return final


def published_profile(folder: Path) -> str | None:
    """The profile of the result published in ``folder`` (its ``metrics.json`` provenance), or
    ``None`` when there is none or it cannot be read."""
    try:
        record = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    profile = (record.get("provenance") or {}).get("profile") if isinstance(record, dict) else None
    return profile if isinstance(profile, str) else None


def refuse_outranked(books: list[Path], profile: str, results_dir: Path) -> None:
    """Refuse (before any kernel starts) when one of ``books`` has a published result of a
    profile ranked above ``profile`` (:data:`PUBLISH_RANK`: smoke < cpu < full)."""
    for book in books:
        published = published_profile(results_dir / book.stem)
        if PUBLISH_RANK.get(published or "", -1) > PUBLISH_RANK[profile]:
            raise UsageError(
                f"{show_path(results_dir / book.stem)} holds a published {published} run, and a "
                f"{profile} run ranks lower (smoke < cpu < full): nothing was run. To replace it "
                f"anyway: `make reproduce ... FORCE=1` (--force); to run {profile} without "
                f"publishing: `python -m common.reproduce --scratch DIR ...`")


def refresh_readme(results: Path | None = None) -> None:
    """Regenerate the results tables of the README beside ``results`` (default ``results/``) from
    it, after each published notebook: the README and the results it describes always belong to
    the same folder (a test's temporary ``results/`` never reaches the repository's README)."""
    from . import report

    results = Path(results) if results is not None else RESULTS_DIR
    readme = results.parent / "README.md"
    with filesystem_step("regenerate the results tables of", readme):
        report.update_readme(readme, results)


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
    path = results / LOCK_FILE
    with filesystem_step("lock", path):
        results.mkdir(parents=True, exist_ok=True)
        lock = open(path, "a+")
    with lock as f:
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
    """``NAME=VALUE`` -> (NAME, literal VALUE); ``RESUME=False`` (or ``false``, any case) gives
    the bool False, ``M1_HIDDEN=(500,500)`` the list ``[500, 500]``, anything else the string."""
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise UsageError(f"--param expects NAME=VALUE, got {text!r}")
    if value.strip().lower() in ("true", "false"):
        return name, value.strip().lower() == "true"
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
    ap.add_argument("--force", action="store_true",
                    help="replace a published result even of a higher-ranked profile (smoke < cpu < full)")
    ap.add_argument("--scratch", default=None, metavar="DIR",
                    help="run into DIR instead of results/ and publish nothing (README untouched)")
    args = ap.parse_args(argv)
    for name, value in absolutize_path_env().items():   # kernels run in notebooks/
        print(f"{name} -> {value}")
    extra = dict(parse_param(p) for p in args.param)
    refuse_output_parameters(extra)
    try:   # the one decision, from every spelling; passed to the kernel as PROFILE
        profile = resolve_profile(requested_profile({
            "--profile": args.profile, "--param PROFILE": extra.pop("PROFILE", None),
            f"${PROFILE_ENV}": os.environ.get(PROFILE_ENV)}))
    except ProfileError as e:
        raise UsageError(str(e)) from None
    books = find_notebooks(args.nb)
    for book in books:   # every notebook's parameters before any result is replaced
        check_parameters(book, {"OUT_DIR": "", "PROFILE": profile, **extra})
    if profile == "dryrun" and not args.scratch:
        raise UsageError("the dryrun profile is never published into results/: run `make dryrun`, "
                         "or add --scratch DIR")
    scratch = scratch_dir(args.scratch) if args.scratch else None
    with results_lock(scratch), terminate_cleanly():
        if scratch is None and not args.force:
            refuse_outranked(books, profile, RESULTS_DIR)
        for book in books:
            try:
                run_one(book, profile, extra, results_dir=scratch,
                        on_publish=refresh_readme if scratch is None else None)
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


def cli(argv: list[str] | None = None) -> int:
    """``python -m common.reproduce``: :func:`main`, with a command line refused before any kernel
    started (:class:`UsageError`) as one line on stderr and exit 2."""
    try:
        return main(argv)
    except UsageError as e:
        print(f"reproduce: {e}", file=sys.stderr)
        return USAGE_EXIT


def scratch_dir(path: str | os.PathLike) -> Path:
    """``path`` resolved, refused when it is or lies inside ``results/`` (or the repository's
    ``checkpoints/``): a scratch run must not be able to publish or to leave resumable state."""
    path = Path(path).expanduser().resolve()
    for protected in (RESULTS_DIR, REPO_ROOT / "checkpoints"):
        if path == protected.resolve() or path.is_relative_to(protected.resolve()):
            raise UsageError(f"--scratch {path} lies inside {show_path(protected)}; use a folder "
                             f"outside it (e.g. one from mktemp -d)")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_scratch_rows(scratch: Path) -> Path:
    """The README's results block, built from ``scratch/*/metrics.json`` by the same code as
    ``make report``, into ``scratch/README-results.md``; the README itself is never touched."""
    from .report import results_table
    from .results import load_all_metrics

    return atomic_write_bytes(scratch / "README-results.md",
                              (results_table(load_all_metrics(scratch)) + "\n").encode())


if __name__ == "__main__":
    sys.exit(cli())
