"""Results integrity: no run publishes wrong numbers or loses good ones (make reproduce, report,
provenance, the environment a kernel imports from)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from common import report, reproduce, results, runtime

from conftest import GOOD, write_book

UNFINISHED = ("import json, pathlib\n"
              "pathlib.Path(OUT_DIR, 'metrics.json').write_text(json.dumps("
              "{'v': 2, 'metrics': {'mnist': {'finished': False, 'test_bpd': 5.3}}}))\n")


@pytest.fixture
def no_readme(monkeypatch):
    calls = []
    monkeypatch.setattr(report, "update_readme", lambda *a, **k: calls.append(1) or False)
    return calls


def test_unfinished_run_exits_3_and_keeps_published_results(sandbox, no_readme):
    books, res = sandbox
    book = write_book(books / "94_flow.ipynb", GOOD)
    assert reproduce.main(["--nb", "94", "--profile", "smoke"]) == 0
    write_book(book, UNFINISHED)
    assert reproduce.main(["--nb", "94", "--profile", "smoke"]) == reproduce.UNFINISHED_EXIT
    assert json.loads((res / "94_flow" / "metrics.json").read_text())["v"] == 1
    assert (res / "94_flow.failed" / "metrics.json").is_file()      # kept for inspection only
    assert len(no_readme) == 1                                        # README only after the good run
    assert reproduce.unfinished_parts({"a": [{"finished": True}, {"b": {"finished": False}}]}) \
        == ["metrics.a[1].b"]


def test_failed_and_staging_folders_never_reach_the_report(tmp_path):
    for name in ("04_dae", "04_dae.failed", ".staging-05_flow", ".old-04_dae", "scratch"):
        (tmp_path / name).mkdir()
        rec = {"notebook": name.split(".")[0].removeprefix("staging-") or name, "provenance": {},
               "summary": []}
        (tmp_path / name / "metrics.json").write_text(json.dumps(rec))
    (tmp_path / "05_other").mkdir()
    (tmp_path / "05_other" / "metrics.json").write_text(json.dumps({"notebook": "04_dae"}))
    assert [r["notebook"] for r in results.load_all_metrics(tmp_path)] == ["04_dae"]


def test_second_reproduce_in_one_clone_is_refused_and_changes_nothing(sandbox, no_readme):
    books, res = sandbox
    book = write_book(books / "93_lock.ipynb", GOOD)
    assert reproduce.main(["--nb", "93", "--profile", "smoke"]) == 0
    before = (res / "93_lock" / "metrics.json").read_bytes()
    write_book(book, GOOD.replace("'v': 1", "'v': 9"))
    with reproduce.results_lock(res):
        with pytest.raises(reproduce.Busy, match="another `make reproduce` is running in this clone"):
            reproduce.main(["--nb", "93", "--profile", "smoke"])
    assert (res / "93_lock" / "metrics.json").read_bytes() == before
    assert not list(res.glob(".staging-*")) and not (res / "93_lock.failed").exists()
    assert reproduce.main(["--nb", "93", "--profile", "smoke"]) == 0   # the lock was released


def test_kernel_imports_this_clones_common_even_from_a_foreign_path(sandbox, tmp_path, monkeypatch,
                                                                     no_readme):
    books, res = sandbox
    other = tmp_path / "other_clone"
    (other / "common").mkdir(parents=True)
    (other / "common" / "__init__.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", str(other))          # what a shared environment amounts to
    write_book(books / "92_env.ipynb",
               "import json, pathlib, common\n"
               "pathlib.Path(OUT_DIR, 'metrics.json').write_text(json.dumps({'common': common.__file__}))\n")
    assert reproduce.main(["--nb", "92", "--profile", "smoke"]) == 0
    got = json.loads((res / "92_env" / "metrics.json").read_text())["common"]
    assert got == str(runtime.REPO_ROOT / "common" / "__init__.py")
    assert os.environ["PYTHONPATH"] == str(other)          # restored afterwards


def test_importing_another_clones_common_is_refused(tmp_path):
    env = {**os.environ, "REPRO_EXPECT_ROOT": str(tmp_path), "PYTHONPATH": str(runtime.REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-c", "import common"], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "imports `common` from" in proc.stderr, proc.stderr
    env["REPRO_EXPECT_ROOT"] = str(runtime.REPO_ROOT)
    assert subprocess.run([sys.executable, "-c", "import common"], cwd=tmp_path, env=env).returncode == 0


def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_regenerated_readme_table_is_not_an_edit(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    start, end = runtime.README_TABLE
    (repo / "README.md").write_text(f"# title\n\n{start}\n| old |\n{end}\n\nmore\n")
    _git(repo, "init", "-q")
    _git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "add", "README.md")
    _git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x")
    assert runtime.git_state(repo)["dirty"] is False
    (repo / "README.md").write_text(f"# title\n\n{start}\n| new | rows |\n| more |\n{end}\n\nmore\n")
    assert runtime.git_state(repo)["dirty"] is False          # only the generated table changed
    (repo / "README.md").write_text(f"# edited title\n\n{start}\n| new |\n{end}\n\nmore\n")
    assert runtime.git_state(repo)["dirty"] is True


def test_tuple_parameter_reaches_the_notebook_as_a_sequence(sandbox, no_readme):
    """`make reproduce PARAMS="M1_HIDDEN=(500,500)"`: what the notebook receives, as 01 uses it."""
    books, res = sandbox
    book = books / "91_tuple.ipynb"
    write_book(book, "import json, pathlib\n"
                     "hidden = tuple(int(h) for h in M1_HIDDEN)   # notebook 01's own line\n"
                     "pathlib.Path(OUT_DIR, 'metrics.json').write_text(json.dumps({'hidden': hidden}))\n")
    import nbformat

    nb = nbformat.read(book, as_version=4)
    nb.cells[0].source += "M1_HIDDEN = None\n"
    nbformat.write(nb, book)
    name, value = reproduce.parse_param("M1_HIDDEN=(500,500)")
    assert reproduce.main(["--nb", "91", "--profile", "smoke", "--param", "M1_HIDDEN=(500,500)"]) == 0
    assert json.loads((res / "91_tuple" / "metrics.json").read_text())["hidden"] == [500, 500]
    assert (name, value) == ("M1_HIDDEN", [500, 500])


def test_parameters_of_every_notebook_checked_before_any_result_changes(sandbox, no_readme):
    books, res = sandbox
    write_book(books / "81_a.ipynb", GOOD)
    b = write_book(books / "82_b.ipynb", GOOD)
    import nbformat

    nb = nbformat.read(b, as_version=4)
    nb.cells[0].source += "ONLY_IN_B = 1\n"
    nbformat.write(nb, b)
    with pytest.raises(SystemExit, match="81_a.ipynb: .*unknown parameters \\['ONLY_IN_B'\\]"):
        reproduce.main(["--nb", "8", "--param", "ONLY_IN_B=2"])
    assert not list(res.iterdir())                             # nothing run, no empty staging


def test_banner_shows_the_profile_that_decides(sandbox, no_readme, capsys):
    """Whatever spelling names the profile (here --param PROFILE=), the banner names it, not auto."""
    books, res = sandbox
    write_book(books / "90_banner.ipynb", GOOD)
    assert reproduce.main(["--nb", "90", "--param", "PROFILE=smoke"]) == 0
    assert "== 90_banner: profile=smoke " in capsys.readouterr().out
    assert json.loads((res / "90_banner" / "metrics.json").read_text())["profile"] == "smoke"


def test_headless_runs_draw_no_progress_bars(monkeypatch):
    from common import training

    monkeypatch.delenv(training.HEADLESS_ENV, raising=False)
    assert type(training.progress(range(3), "x")).__name__ != "range_iterator"   # a live bar
    with reproduce.kernel_environment():
        assert os.environ[training.HEADLESS_ENV] == "1"
        it = training.progress(range(3), "x")
        assert type(it).__name__ == "range_iterator" and list(it) == [0, 1, 2]
    assert training.HEADLESS_ENV not in os.environ


def test_commit_of_a_copy_without_git_comes_from_repro_commit(tmp_path, monkeypatch):
    """A lent GPU machine gets the files with no .git, or a stale one: the caller names the
    commit, and the record says so."""
    monkeypatch.delenv("REPRO_COMMIT", raising=False)
    assert runtime.git_state(tmp_path)["commit"] == "unknown"
    monkeypatch.setenv("REPRO_COMMIT", "abc123")
    state = runtime.git_state(tmp_path)
    assert state["commit"] == "abc123" and state["commit_from"] == "REPRO_COMMIT"
    assert state["dirty"] == "unknown" and state["git_head"] is None
    head = runtime.git_state()["git_head"]           # this repository: a real, different HEAD
    assert head is not None and len(head) == 40
    monkeypatch.setenv("REPRO_COMMIT", head)
    assert "commit_from" not in runtime.git_state()   # agrees with .git: nothing to mark
