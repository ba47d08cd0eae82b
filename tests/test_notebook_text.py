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
