"""What a rendered page says in prose is either the papers' text or a number the run printed:
markdown cells state no run times (a typed "about 25 minutes" goes stale with the next run,
and did: 05 said 25 for a 29-minute run, 06 "within about 50 minutes" for 83)."""
import re

import nbformat
import pytest

from common.reproduce import NOTEBOOKS_DIR

# "about 25 minutes", "≈ 15–20 min", "~25 GPU-minutes", "30 CPU-minutes", "a 14-minute budget"
RUN_TIME = re.compile(
    r"(?:about|≈|~|roughly|within|takes|took)\s*\d[\d.,]*\s*(?:[-–]\s*\d[\d.,]*\s*)?(?:CPU-|GPU-)?"
    r"(?:min|mins|minutes?|hours?|h)\b"
    r"|\d[\d.,]*\s*(?:CPU|GPU)-(?:minutes?|hours?)\b"
    r"|\b\d[\d.,]*-(?:minute|hour) (?:budget|run)\b", re.I)

BOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


@pytest.mark.parametrize("book", BOOKS, ids=[b.stem[:2] for b in BOOKS])
def test_markdown_states_no_run_times(book):
    nb = nbformat.read(book, as_version=4)
    found = [(i, m.group(0)) for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
             for m in RUN_TIME.finditer(c.source)]
    assert not found, f"{book.name}: run times typed in markdown (print them from the run): {found}"


def test_the_rule_catches_what_it_is_for():
    for bad in ("about 25 CPU-minutes", "≈ 15–20 min on one thread", "~25 GPU-minutes",
                "a 14-minute budget", "within about 50 minutes on 2 cores", "took 3 hours"):
        assert RUN_TIME.search(bad), bad
    for fine in ("15 epochs", "batch 20", "arXiv:1605.08803",
                 "94% on CIFAR-10 in 3.29 seconds", "$\\log 10 - H(p)$"):
        assert not RUN_TIME.search(fine), fine


# What a reader of a rendered page should never have to decode: test-harness markers, this
# repository's cache and scheduling machinery, and bibliography keys instead of authors and year.
MACHINERY = re.compile(r"NBVAL_CHECK_OUTPUT|lent GPU|SegmentUnfinished|fingerprint|per-run file|"
                       r"re-render check|stacked with|\bwsd\b|\bkey [0-9a-f]{8,}|checkpoint [\w-]+\.pt")


def _bib_keys():
    from common.references import SOURCES

    return re.compile(r"\b(" + "|".join(map(re.escape, SOURCES)) + r")\b")


def _reader_text(cell):
    """Markdown, and what a code cell shows when run (its outputs); a code cell's source only for
    the nbval marker (which a cell tag replaces)."""
    if cell.cell_type == "markdown":
        return cell.source
    parts = ["NBVAL_CHECK_OUTPUT" if "NBVAL_CHECK_OUTPUT" in cell.source else ""]
    for out in cell.get("outputs", []):
        parts.append("".join(out.get("text", "")))
        data = out.get("data", {})
        parts.append("".join(data.get("text/markdown", "")))
        if "text/html" not in data:
            parts.append("".join(data.get("text/plain", "")))
    return "\n".join(parts)


@pytest.mark.parametrize("book", BOOKS, ids=[b.stem[:2] for b in BOOKS])
def test_sources_show_no_machinery_or_bibliography_keys(book):
    nb = nbformat.read(book, as_version=4)
    keys = _bib_keys()
    found = [(i, m.group(0)) for i, c in enumerate(nb.cells)
             for m in [*MACHINERY.finditer(_reader_text(c)), *keys.finditer(_reader_text(c))]]
    assert not found, f"{book.name}: machinery or bibliography keys a reader would see: {found}"


def test_the_machinery_rule_catches_what_it_is_for():
    for bad in ("split index fingerprint 35b8", "per-run files: checkpoints/x", "stacked with N=[600]",
                "pass SEGMENT_SECONDS ... SegmentUnfinished", "# NBVAL_CHECK_OUTPUT",
                "checkpoint mnist_cpu_db34daa703.pt", "lr_schedule=wsd"):
        assert MACHINERY.search(bad), bad
    assert _bib_keys().search("published: 1.06 (grathwohl2018)")
    for fine in ("Grathwohl et al. 2018", "the checkpoint is resumed", "a fixed key of the table"):
        assert not MACHINERY.search(fine) and not _bib_keys().search(fine), fine


RENDERED = sorted(NOTEBOOKS_DIR.parent.glob("results/[0-9][0-9]_*/[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("page", RENDERED, ids=[p.stem[:2] for p in RENDERED])
def test_rendered_pages_show_no_machinery_or_bibliography_keys(page):
    """The executed notebooks in results/ (what readers open): their markdown and every printed
    output, with the same rule as the sources."""
    nb = nbformat.read(page, as_version=4)
    keys = _bib_keys()
    found = [(i, m.group(0)) for i, c in enumerate(nb.cells)
             for m in [*MACHINERY.finditer(_reader_text(c)), *keys.finditer(_reader_text(c))]]
    assert not found, f"{page.parent.name}: machinery or bibliography keys on the rendered page: {found}"
