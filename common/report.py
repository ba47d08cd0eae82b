"""Generate the README's results table from ``results/*/metrics.json``.

    python -m common.report          # rewrite the table between the markers in README.md
    python -m common.report --print  # print it instead
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .results import RESULTS_DIR, atomic_write_bytes, load_all_metrics
from .runtime import README_TABLE, REPO_ROOT

START, END = README_TABLE


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def results_table(records: list[dict[str, Any]]) -> str:
    if not records:
        return "_No results yet: run `make reproduce`._"
    lines = ["| notebook | quantity | ours | paper | unit | profile | device | wall time | commit |",
             "|---|---|---|---|---|---|---|---|---|"]
    for rec in records:
        prov = rec["provenance"]
        profile = prov["profile"] + (" (reduced)" if prov.get("reduced") else "")
        commit = prov["commit"][:8] + ("+dirty" if prov.get("dirty") else "")
        wall = f"{prov['wall_time_s'] / 60:.1f} min" if prov.get("wall_time_s") else "—"
        for row in rec.get("summary", []):
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in [
                rec["notebook"], row["quantity"] + (f" ({row['note']})" if row.get("note") else ""),
                _fmt(row["ours"]), _fmt(row["paper"]), row["unit"], profile, prov["device"],
                wall, commit]) + " |")  # '|' inside a cell would split it
    return "\n".join(lines)


def update_readme(readme: Path = REPO_ROOT / "README.md", results: Path = RESULTS_DIR) -> bool:
    """Replace the text between the markers; returns whether the README changed."""
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise ValueError(f"{readme} lacks the markers {START} / {END}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{results_table(load_all_metrics(results))}\n{END}{tail}"
    if new != text:
        atomic_write_bytes(readme, new.encode("utf-8"))
    return new != text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--print", action="store_true", help="print the table, change nothing")
    args = ap.parse_args(argv)
    if args.print:
        print(results_table(load_all_metrics()))
    else:
        update_readme()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
