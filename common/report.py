"""Generate the README's results tables from ``results/*/metrics.json``, and the one-line
verdict every notebook prints at the top of its "what differs" section (with the paired
per-draw comparison the Kingma et al. verdicts rest on).

    python -m common.report          # rewrite the tables between the markers in README.md
    python -m common.report --print  # print them instead

Layout: one *headline* table (one row per notebook: its summary row marked ``headline: True``,
else its first row; with verdict, profile, device, wall time, commit and a link to the rendered
notebook, each once per notebook), then one short table per notebook with every summary row
(quantity ≤ 60 characters, ours, paper, unit, note). Rows written before these fields existed
(no ``headline``/``verdict``, unit ``%``) are read too: their unit is inferred from the quantity
("% error" / "% accuracy") and long quantities are shortened.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from .results import RESULTS_DIR, load_all_metrics, write_generated_table
from .runtime import README_TABLE, REPO_ROOT, source_hash_at

START, END = README_TABLE
# One vocabulary for every notebook (claims_verdict): the paper's setting -> reproduced / not
# reproduced; a reduced run, which tests the claim's effect, not the paper's numbers -> effect
# shown (reduced) / not shown (reduced).
VERDICTS = ("reproduced", "not reproduced", "effect shown (reduced)", "not shown (reduced)")
MAX_QUANTITY = 60


def verdict(status: str, why: str) -> str:
    """``**Verdict: <status>** — <why>`` (Markdown); ``status`` is one of :data:`VERDICTS`."""
    if status not in VERDICTS:
        raise ValueError(f"status must be one of {VERDICTS}, got {status!r}")
    return f"**Verdict: {status}** — {why.strip()}"


def claims_verdict(checks: Sequence[Mapping[str, Any]], reduced: bool) -> tuple[str, str]:
    """One verdict from a notebook's claim checks, written in its claim cell before the results.

    ``checks``: rows with ``claim`` (what the paper says, short), ``measured`` (this run's
    number, as text) and ``met`` (True / False; None = not run). Every claim holds: *effect
    shown (reduced)* for a reduced run, *reproduced* in the paper's setting; otherwise *not
    shown (reduced)* / *not reproduced*, naming each claim that failed or did not run. Returns
    ``(status, sentence)``; the sentence names every claim with its number."""
    if not checks:
        raise ValueError("no claims to judge")
    parts = [f"{c['claim']}: {c['measured']} ({'holds' if c['met'] else 'not run' if c['met'] is None else 'fails'})"
             for c in checks]
    failed = [c["claim"] for c in checks if c["met"] is not True]
    if reduced:
        status = "not shown (reduced)" if failed else "effect shown (reduced)"
    else:
        status = "not reproduced" if failed else "reproduced"
    tail = f" Not shown: {'; '.join(failed)}." if failed else " Every claim holds."
    return status, "; ".join(parts) + "." + tail


def interval_text(d: Mapping[str, Any], digits: int = 2) -> str:
    """"95 % CI lo..hi" of a :func:`common.stats.mean_interval`-style dict (keys ``low``/``high``
    or ``ci_low``/``ci_high``), or "no interval (one draw)" when there is none."""
    lo, hi = d.get("low", d.get("ci_low")), d.get("high", d.get("ci_high"))
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return "no interval: fewer than 2 paired draws"
    return f"95 % CI {lo:+.{digits}f}..{hi:+.{digits}f}"


def unfinished_claim() -> dict[str, Any]:
    """The claim row a sweep with runs pending adds: it fails, and nothing else is concluded."""
    return {"claim": "the sweep finished", "met": False,
            "measured": "the sweep did not finish (runs pending), so nothing is concluded"}


def paired_check(claim: str, ours: Sequence[float], other: Sequence[float], what: str,
                 unit: str = "points", digits: int = 2) -> dict[str, Any]:
    """A claim row for :func:`claims_verdict`: ``ours`` lower than ``other`` on the same draws
    (draw i paired with draw i), met when the 95 % Student-t interval of the mean paired
    difference ``ours - other`` lies below 0 (:func:`common.stats.mean_interval`; never with
    fewer than two draws). The measured text names the outcome: lower, a tie (the interval
    covers 0) or higher (the interval lies above 0). ``what`` names the difference."""
    from .stats import mean_interval

    if len(ours) != len(other) or not ours:
        raise ValueError(f"{claim}: need the same non-zero number of draws, got {len(ours)} and {len(other)}")
    d = mean_interval([a - b for a, b in zip(ours, other)])
    lower = sum(a < b for a, b in zip(ours, other))
    met = d["n"] >= 2 and d["high"] < 0
    outcome = ("" if d["n"] < 2 else "; lower" if met else "; higher" if d["low"] > 0 else "; a tie")
    measured = (f"{what} {d['mean']:+.{digits}f} {unit} ({interval_text(d, digits)}, lower on {lower} of "
                f"{d['n']} draws{outcome})")
    return {"claim": claim, "measured": measured, "met": met, "diff": d, "lower_on": lower}


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")   # '|' inside a cell would split it


def unit_of(row: Mapping[str, Any]) -> str:
    """The row's unit; a bare ``%`` becomes "% error" or "% accuracy" when the quantity says."""
    unit = str(row.get("unit", ""))
    if unit == "%":
        q = str(row.get("quantity", "")).lower()
        if "error" in q:
            return "% error"
        if "acc" in q:
            return "% accuracy"
    return unit


def short_quantity(text: str, limit: int = MAX_QUANTITY) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters (with "…")."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut:
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip(" ,;:(") + "…"


def headline_row(rec: Mapping[str, Any]) -> Mapping[str, Any] | None:
    rows = rec.get("summary") or []
    return next((r for r in rows if r.get("headline")), rows[0] if rows else None)


def _verdict_of(rec: Mapping[str, Any]) -> str | None:
    return next((r["verdict"] for r in rec.get("summary") or [] if r.get("verdict")), None)


def _prov(rec: Mapping[str, Any]) -> dict[str, str]:
    prov = rec["provenance"]
    mark, why = tree_mark(prov)
    return {"profile": prov["profile"] + (" (reduced)" if prov.get("reduced") else ""),
            "device": str(prov.get("device", "—")),
            "wall": (f"{prov['wall_time_s'] / 60:.1f} min" if prov.get("wall_time_s") else "—")
                    + _reused(rec),
            "commit": str(prov.get("commit") or "—")[:8] + mark, "tree": why}


def _reused(rec: Mapping[str, Any]) -> str:
    """" + N min of reused runs" where a render reused runs trained by an earlier one (06, 08:
    ``timing.reused_run_seconds``, the reused runs' own recorded wall time)."""
    sec = (rec.get("timing") or {}).get("reused_run_seconds")
    return f" + {sec / 60:.1f} min of reused runs" if sec else ""


def tree_mark(prov: Mapping[str, Any]) -> tuple[str, str]:
    """What follows the commit, and a sentence for the details: nothing for a tree known to be
    clean (``dirty`` false), nor for one whose recorded ``source_hash`` equals that of the
    commit's own files (:func:`runtime.source_hash_at`: the numbers come from the commit's code,
    whatever else the tree held, e.g. an untracked link to the environment); else ``+dirty`` for
    a tree with edits and ``+unverified`` where it is unknown (``"unknown"``, ``None``: no git,
    or ``$REPRO_COMMIT`` naming a commit absent from ``.git``)."""
    dirty = prov.get("dirty")
    if dirty is False:
        return "", ""
    commit, recorded = prov.get("commit"), prov.get("source_hash")
    if commit and recorded and source_hash_at(str(commit)) == recorded:
        paths = prov.get("dirty_paths")
        held = f" ({', '.join(paths)})" if paths else ""
        return "", (f"The tree was recorded as {'not checked' if dirty is not True else 'holding other files'}"
                    f"{held}, but its code (`common/`, `notebooks/`, source hash {recorded}) is "
                    f"exactly commit {str(commit)[:8]}'s.")
    return ("+dirty" if dirty is True else "+unverified"), ""


def _link(nb: str) -> str:
    """The executed notebook, which code hosts render as a page (the HTML beside it is for
    reading locally: a code host shows it as source)."""
    return f"[{nb}](results/{nb}/{nb}.ipynb)"


def reference_of(rec: Mapping[str, Any], row: Mapping[str, Any]) -> str:
    """The headline's reference number and where it comes from (:data:`references.HEADLINE_SOURCE`
    by notebook number), e.g. "11.82 (Kingma et al. 2014, Table 1, M1+TSVM)"; "—" without one."""
    from .references import HEADLINE_SOURCE

    if row.get("paper") is None:
        return "—"
    source = HEADLINE_SOURCE.get(str(rec["notebook"])[:2])
    return _fmt(row["paper"]) + (f" ({source})" if source else "")


def headline_table(records: list[dict[str, Any]]) -> str:
    """One row per notebook: its headline quantity, the reference number with its source, ours,
    the verdict, profile and wall time (device and commit are in :func:`detail_tables`)."""
    lines = ["| notebook | headline | reference | ours | unit | verdict | profile | wall time |",
             "|---|---|---|---|---|---|---|---|"]
    for rec in records:
        row, p = headline_row(rec), _prov(rec)
        if row is None:
            continue
        lines.append("| " + " | ".join(_cell(c) for c in [
            _link(rec["notebook"]), short_quantity(row["quantity"]), reference_of(rec, row),
            _fmt(row.get("ours")), unit_of(row), _verdict_of(rec) or "—", p["profile"],
            p["wall"]]) + " |")
    return "\n".join(lines)


def detail_tables(records: list[dict[str, Any]]) -> str:
    parts = []
    for rec in records:
        p = _prov(rec)
        lines = [f"**{rec['notebook']}** · {p['profile']} · {p['device']} · {p['wall']} · "
                 f"commit {p['commit']}", *(["", p["tree"]] if p["tree"] else []), "",
                 "| quantity | ours | reference | unit | note |", "|---|---|---|---|---|"]
        for row in rec.get("summary") or []:
            lines.append("| " + " | ".join(_cell(c) for c in [
                short_quantity(row["quantity"]), _fmt(row.get("ours")), _fmt(row.get("paper")),
                unit_of(row), row.get("note") or ""]) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def results_table(records: list[dict[str, Any]]) -> str:
    """The generated README block: headline table, then the per-notebook details."""
    if not records:
        return "_No results yet: run `make reproduce`._"
    return (headline_table(records) + "\n\n<details><summary>Every reported quantity, per notebook"
            "</summary>\n\n" + detail_tables(records) + "\n\n</details>")


def update_readme(readme: Path = REPO_ROOT / "README.md", results: Path = RESULTS_DIR) -> bool:
    """Replace the text between the markers; returns whether the README changed."""
    return write_generated_table(readme, results_table(load_all_metrics(results)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--print", action="store_true", help="print the tables, change nothing")
    args = ap.parse_args(argv)
    if args.print:
        print(results_table(load_all_metrics()))
    else:
        update_readme()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
