"""Run notebooks headless with papermill into ``results/`` (``make reproduce``).

    python -m common.reproduce [--nb 04] [--profile smoke|cpu|full] [--param NAME=VALUE ...]

Each notebook runs into a staging folder ``results/.staging-<name>/``. Only when it finished and
wrote its ``metrics.json`` is the HTML rendered and the folder swapped into
``results/<name>/``; a failure leaves the earlier results untouched, keeps the failed run in
``results/<name>.failed/`` for inspection, and stops with a non-zero exit: 3 when a
notebook's time segment (parameter ``SEGMENT_SECONDS``) ran out before training finished (its
checkpoints are saved; run the same command again to resume), else 1.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from .results import METRICS_FILE, RESULTS_DIR
from .runtime import PROFILES, REPO_ROOT, ProfileError, absolutize_path_env

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
REQUIRED_PARAMETERS = ("PROFILE", "OUT_DIR")
UNFINISHED_EXIT = 3   # a notebook's time segment (SEGMENT_SECONDS) ran out: run again to resume


def _show(path: Path) -> str:
    """``path`` relative to the repository when inside it (for messages)."""
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


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


def run_one(book: Path, profile: str | None, extra: dict[str, object]) -> Path:
    import papermill

    name = book.stem
    staging = RESULTS_DIR / f".staging-{name}"
    final, failed = RESULTS_DIR / name, RESULTS_DIR / f"{name}.failed"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    params: dict[str, object] = {"OUT_DIR": str(staging), **extra}
    if profile:
        params["PROFILE"] = profile
    check_parameters(book, params)
    executed = staging / book.name
    t0 = time.perf_counter()
    print(f"== {name}: profile={profile or 'auto'} -> {_show(final)}", flush=True)
    try:
        papermill.execute_notebook(str(book), str(executed), parameters=params,
                                   kernel_name="python3", cwd=str(NOTEBOOKS_DIR),
                                   progress_bar=True, log_output=True)
        if not (staging / METRICS_FILE).is_file():
            raise RuntimeError(f"{name} finished without writing {METRICS_FILE}")
        render_html(executed)
    except BaseException:
        shutil.rmtree(failed, ignore_errors=True)
        staging.rename(failed)
        print(f"!! {name} failed after {time.perf_counter() - t0:.0f}s; earlier results kept, "
              f"the failed run is in {_show(failed)}", file=sys.stderr)
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


def parse_param(text: str) -> tuple[str, object]:
    """``NAME=VALUE`` -> (NAME, literal VALUE); ``RESUME=False`` gives the bool False."""
    import ast

    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise SystemExit(f"--param expects NAME=VALUE, got {text!r}")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nb", default=None, help="run only notebooks whose name starts with this, e.g. 04")
    ap.add_argument("--profile", default=None, help=f"one of {', '.join(PROFILES)} (default: auto)")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="extra papermill parameter (VALUE read as a Python literal, else a string)")
    args = ap.parse_args(argv)
    for name, value in absolutize_path_env().items():   # kernels run in notebooks/
        print(f"{name} -> {value}")
    extra = dict(parse_param(p) for p in args.param)
    if args.profile and args.profile not in PROFILES:
        raise ProfileError(f"unknown profile {args.profile!r}; choose one of {', '.join(PROFILES)}")
    for book in find_notebooks(args.nb):
        try:
            run_one(book, args.profile, extra)
        except Exception as e:  # already reported; stop at the first failure
            if getattr(e, "ename", None) == "SegmentUnfinished":   # papermill's error names it
                print(f"!! {book.stem}: time segment used up (exit {UNFINISHED_EXIT}): {e.evalue}",
                      file=sys.stderr)
                return UNFINISHED_EXIT
            print(f"!! {type(e).__name__}: {e}", file=sys.stderr)
            return 1
    from .report import update_readme

    update_readme()
    return 0


if __name__ == "__main__":
    sys.exit(main())
