"""The README's generated tables: a compact headline table, then short per-notebook tables."""
import math

import pytest
import torch

from common import report, results


def _save(res, name, summary, wall=600.0, reduced=True):
    results.save_metrics(res / name, name, profile="cpu", seeds=[0], device=torch.device("cpu"),
                         wall_time_s=wall, config={}, metrics={}, reduced=reduced, summary=summary)


def test_headline_and_detail_layout(tmp_path):
    res = tmp_path / "results"
    long_q = ("the paper's M2 schedule (full profile: 3000 epochs, 5 seeds, 4 N) on this device "
              "(measured step time x steps)")
    _save(res, "01_new", [
        {"quantity": "M1 test ELBO", "ours": -99.5, "paper": None, "unit": "nats"},
        {"quantity": "M1+SVC test error, N=100", "ours": 18.1, "paper": 11.82, "unit": "% error",
         "headline": True, "verdict": "not shown (reduced)", "note": "paper: M1+TSVM"}])
    _save(res, "02_old", [   # a metrics.json from before headline/verdict/units existed
        {"quantity": "M2 test error, N=100", "ours": 27.9, "paper": 11.97, "unit": "%"},
        {"quantity": "CE minority test accuracy", "ours": 1.0, "paper": 50.4, "unit": "%"},
        {"quantity": long_q, "ours": 663.4, "paper": None, "unit": "hours"}])
    text = report.results_table(results.load_all_metrics(res))
    head, detail = text.split("<details>", 1)
    rows = [l for l in head.splitlines() if l.startswith("| [")]
    assert len(rows) == 2                                    # one row per notebook
    # the executed notebook is linked (code hosts render it); the reference names its source
    assert rows[0] == ("| [01_new](results/01_new/01_new.ipynb) | M1+SVC test error, N=100 | "
                       "11.82 (Kingma et al. 2014, Table 1, M1+TSVM) | 18.1 | % error | "
                       "not shown (reduced) | cpu (reduced) | 10.0 min |")
    assert "| M2 test error, N=100 | 11.97 (Kingma et al. 2014, Table 1) | 27.9 | % error | — |" in rows[1]
    assert "commit" not in head and "cpu (" not in head.replace("cpu (reduced)", "")   # details only
    assert detail.count("· commit ") == 2 and detail.count("| quantity | ours | reference |") == 2
    assert head.count("10.0 min") == 2 and detail.count("10.0 min") == 2     # once per notebook
    assert "| CE minority test accuracy | 1 | 50.4 | % accuracy |" in detail
    for line in detail.splitlines():
        if line.startswith("| ") and not line.startswith("| quantity") and "---" not in line:
            assert len(line.split(" | ")[0][2:]) <= report.MAX_QUANTITY
    assert "…" in detail and long_q not in detail


def test_verdict_line_and_unknown_status():
    assert report.verdict("reproduced", "the setting ran exactly.") == \
        "**Verdict: reproduced** — the setting ran exactly."
    try:
        report.verdict("sort of", "x")
    except ValueError as e:
        assert "sort of" in str(e)
    else:
        raise AssertionError("accepted an unknown status")


def test_short_quantity():
    assert report.short_quantity("a b", 60) == "a b"
    s = report.short_quantity("word " * 30, 60)
    assert len(s) <= 60 and s.endswith("…")


def test_readme_first_screen_lists_every_notebook_the_commands_and_the_headline_table():
    """A newcomer's first 60 lines: every notebook of notebooks/, the two commands, and the
    headline table (the per-notebook details may follow, collapsed)."""
    from common.runtime import REPO_ROOT

    lines = (REPO_ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    first = "\n".join(lines[:60])
    for nb in sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        assert f"(notebooks/{nb.name})" in first, nb.name
    assert "make test" in first and "make reproduce" in first
    start = lines.index(report.START)
    table_end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith("|"))
    assert table_end <= 60, f"the headline table ends at line {table_end}"


def test_mean_interval_by_hand():
    from common.stats import mean_interval

    r = mean_interval([1.0, 2.0, 3.0])
    # mean 2, sd 1, t(0.975, 2) = 4.3027: half-width 4.3027 / sqrt(3) = 2.4841
    assert r["mean"] == 2.0 and r["std"] == pytest.approx(1.0) and r["n"] == 3
    assert r["low"] == pytest.approx(2 - 2.4841, abs=1e-3) and r["high"] == pytest.approx(2 + 2.4841, abs=1e-3)
    one = mean_interval([5.0])
    assert one["n"] == 1 and math.isnan(one["low"])


def test_short_citation_names_authors_and_year_never_the_key():
    from common import references

    assert references.short("grathwohl2018") == "Grathwohl et al. 2018"
    assert references.short("kingma_welling2014") == "Kingma & Welling 2014"
    assert references.short("mirza2014") == "Mirza & Osindero 2014"     # two authors, one in the key
    assert references.short("jordan2024") == "Jordan 2024"               # a single author
    assert references.short("dlt_da") == references.SOURCES["dlt_da"]   # no year: the full citation
    with pytest.raises(KeyError, match="unknown source"):
        references.short("nobody2020")


def test_paired_check_needs_an_interval_below_zero():
    win = report.paired_check("a beats b", [1.0, 2.0, 3.0], [2.0, 3.1, 3.9], "a − b")
    assert win["met"] and win["lower_on"] == 3 and win["diff"]["high"] < 0 and win["measured"].endswith("; lower)")
    tie = report.paired_check("a beats b", [1.0, 2.0, 3.0], [1.5, 1.8, 3.2], "a − b")
    assert not tie["met"] and tie["diff"]["low"] < 0 < tie["diff"]["high"] and "; a tie)" in tie["measured"]
    worse = report.paired_check("a beats b", [3.0, 4.0, 5.0], [1.0, 2.1, 2.9], "a − b")
    assert not worse["met"] and "; higher)" in worse["measured"]
    one = report.paired_check("a beats b", [1.0], [5.0], "a − b")   # one draw: no interval, not met
    assert not one["met"] and "lower on 1 of 1" in one["measured"] and "no interval" in one["measured"]
    assert "nan" not in one["measured"]
    with pytest.raises(ValueError, match="same non-zero number"):
        report.paired_check("a beats b", [1.0, 2.0], [1.0], "a − b")


def test_wall_time_names_the_reused_runs_time(tmp_path):
    res = tmp_path / "results"
    results.save_metrics(res / "06_x", "06_x", profile="cpu", seeds=[0], device=torch.device("cpu"),
                         wall_time_s=120.0, config={}, metrics={}, reduced=True,
                         summary=[{"quantity": "q", "ours": 1.0, "paper": None, "unit": "%"}],
                         timing={"reused_run_seconds": 4800.0})
    text = report.results_table(results.load_all_metrics(res))
    assert "2.0 min + 80.0 min of reused runs" in text


def test_every_published_result_speaks_the_one_vocabulary():
    """Each notebook's headline verdict in results/ is one of report.VERDICTS (no result rendered
    before the vocabulary, e.g. "partly reproduced", stays published)."""
    recs = results.load_all_metrics()
    assert recs, "no published results"
    for rec in recs:
        v = report._verdict_of(rec)
        assert v in report.VERDICTS, f"{rec['notebook']}: verdict {v!r} is not one of {report.VERDICTS}"
