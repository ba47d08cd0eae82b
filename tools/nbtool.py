"""Keep notebook sources clean and their nbval reference outputs real.

    python tools/nbtool.py strip  notebooks/*.ipynb   # drop outputs, except NBVAL_CHECK_OUTPUT cells
    python tools/nbtool.py bless  notebooks/04_*.ipynb # run in the smoke profile, store the outputs
                                                      # of NBVAL_CHECK_OUTPUT cells, strip the rest
    python tools/nbtool.py check  notebooks/*.ipynb   # exit 1 if a notebook is not clean

Sources in notebooks/ carry no outputs except the deterministic ones nbval compares (cells tagged
``nbval-check-output``, which rendered pages do not show, or whose source contains
``NBVAL_CHECK_OUTPUT``). ``bless`` computes those with the code in this repo;
nobody types them in.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import nbformat

MARK = "NBVAL_CHECK_OUTPUT"
TAG = "nbval-check-output"   # the same marker as cell metadata: not shown in rendered pages


def is_checked(cell: nbformat.NotebookNode) -> bool:
    return cell.cell_type == "code" and (MARK in cell.source or TAG in cell.metadata.get("tags", ()))


def _keep_output(out: nbformat.NotebookNode) -> bool:
    return not (out.get("output_type") == "stream" and out.get("name") == "stderr")


def strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if not is_checked(cell):  # nbval refuses reference outputs of a cell marked unrun
            cell.execution_count = None
        cell.metadata.pop("execution", None)
        cell.metadata.pop("papermill", None)
        cell.outputs = [o for o in cell.outputs if _keep_output(o)] if is_checked(cell) else []
        for o in cell.outputs:
            if "execution_count" in o:
                o.execution_count = None
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)
    return nb


def problems(nb: nbformat.NotebookNode) -> list[str]:
    bad = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.execution_count is not None and not is_checked(cell):
            bad.append(f"cell {i}: execution_count set")
        if cell.outputs and not is_checked(cell):
            bad.append(f"cell {i}: has outputs but is not an {MARK} cell")
        if is_checked(cell) and (not cell.outputs or cell.execution_count is None):
            bad.append(f"cell {i}: {MARK} cell has no reference output (run bless)")
    if "papermill" in nb.metadata:
        bad.append("papermill metadata present")
    return bad


def bless(path: Path) -> None:
    import papermill

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["REPRO_PROFILE"] = "smoke"
        executed = Path(tmp) / path.name
        papermill.execute_notebook(str(path), str(executed), parameters={"OUT_DIR": tmp},
                                   kernel_name="python3", cwd=str(path.parent), progress_bar=False)
        ran = nbformat.read(executed, as_version=4)
    src = nbformat.read(path, as_version=4)
    by_id = {c.get("id"): c for c in ran.cells}
    for cell in src.cells:
        if is_checked(cell):
            cell.outputs = by_id[cell.get("id")].outputs
            cell.execution_count = by_id[cell.get("id")].execution_count
    nbformat.write(strip(src), path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["strip", "bless", "check"])
    ap.add_argument("paths", nargs="+", type=Path)
    args = ap.parse_args(argv)
    rc = 0
    for path in args.paths:
        if args.command == "bless":
            bless(path)
        nb = nbformat.read(path, as_version=4)
        if args.command == "strip":
            nbformat.write(strip(nb), path)
        elif args.command == "check":
            for p in problems(nb):
                print(f"{path}: {p}")
                rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
