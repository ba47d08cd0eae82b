"""What `make reproduce` may publish, decided before any kernel starts: one decision of the
profile from every spelling, no command-line parameter that moves outputs, values of the right
kind, and no lower-ranked run over a published higher-ranked one without --force."""
import json
import subprocess

import nbformat
import pytest

from common import report, reproduce, runtime
from conftest import GOOD, write_book

RANKED = ("import json, pathlib\n"
          "pathlib.Path(OUT_DIR, 'metrics.json').write_text(json.dumps("
          "{'provenance': {'profile': PROFILE}}))\n")


@pytest.fixture
def readme_calls(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(report, "update_readme", lambda *a, **k: calls.append(1) or False)
    return calls


def left_behind(res):
    """What a refused run left in results/: nothing but (at most) the lock file."""
    return sorted(p.name for p in res.iterdir() if p.name != reproduce.LOCK_FILE)


def add_parameters(book, lines: str) -> None:
    nb = nbformat.read(book, as_version=4)
    nb.cells[0].source += lines
    nbformat.write(nb, book)


@pytest.mark.parametrize("param", ["OUT_DIR={res}/88_out", "RUNS_DIR={res}/88_out", "out_dir=x",
                                   "CACHE_PATH=/tmp/x"])
def test_parameters_that_move_outputs_are_refused(sandbox, param):
    books, res = sandbox
    book = write_book(books / "88_out.ipynb", GOOD)
    add_parameters(book, "RUNS_DIR = None\n")
    param = param.format(res=res)
    with pytest.raises(reproduce.UsageError, match="refused: where a notebook writes"):
        reproduce.main(["--nb", "88", "--profile", "smoke", "--param", param])
    assert reproduce.cli(["--nb", "88", "--profile", "smoke", "--param", param]) == reproduce.USAGE_EXIT
    name, value = reproduce.parse_param(param)
    with pytest.raises(reproduce.UsageError, match=name):
        reproduce.run_one(book, "smoke", {name: value})
    assert left_behind(res) == []


def test_requested_profile_checks_every_spelling():
    assert runtime.requested_profile({"--profile": None, "--param PROFILE": "", "$X": " cpu "}) == "cpu"
    assert runtime.requested_profile({"a": "full", "b": "full"}) == "full"
    assert runtime.requested_profile({"a": None}) is None
    with pytest.raises(runtime.ProfileError, match="conflicting profiles: a=cpu and b=smoke"):
        runtime.requested_profile({"a": "cpu", "b": "smoke"})
    with pytest.raises(runtime.ProfileError, match="unknown profile 'bogus' \\(from b\\)"):
        runtime.requested_profile({"a": "cpu", "b": "bogus"})


def test_every_profile_spelling_goes_through_one_check(sandbox, monkeypatch, capsys):
    books, res = sandbox
    write_book(books / "87_p.ipynb", GOOD)
    with pytest.raises(reproduce.UsageError, match="never published"):      # not only --profile
        reproduce.main(["--nb", "87", "--param", "PROFILE=dryrun"])
    monkeypatch.setenv(runtime.PROFILE_ENV, "smoke")
    with pytest.raises(reproduce.UsageError,
                       match=r"conflicting profiles: --profile=cpu and \$REPRO_PROFILE=smoke"):
        reproduce.main(["--nb", "87", "--profile", "cpu"])
    with pytest.raises(reproduce.UsageError,
                       match=r"--param PROFILE=full and \$REPRO_PROFILE=smoke"):
        reproduce.main(["--nb", "87", "--param", "PROFILE=full"])
    capsys.readouterr()
    for env, argv in (("bogus", []), (None, ["--profile", "bogus"]), (None, ["--param", "PROFILE=bogus"])):
        if env:
            monkeypatch.setenv(runtime.PROFILE_ENV, env)
        else:
            monkeypatch.delenv(runtime.PROFILE_ENV, raising=False)
        assert reproduce.cli(["--nb", "87", *argv]) == reproduce.USAGE_EXIT
        err = capsys.readouterr().err.strip()
        assert "unknown profile 'bogus'" in err and len(err.splitlines()) == 1, err
    assert left_behind(res) == []                       # refused before any staging or .failed


def test_true_false_and_segment_values_are_checked_before_any_kernel(sandbox):
    assert reproduce.parse_param("RESUME=false") == ("RESUME", False)
    assert reproduce.parse_param("RESUME=TRUE") == ("RESUME", True)
    assert reproduce.parse_param("RESUME=False") == ("RESUME", False)
    assert reproduce.value_problem("SEGMENT_SECONDS", 0.001, "None") is None
    books, res = sandbox
    book = write_book(books / "86_v.ipynb", GOOD)
    add_parameters(book, "RESUME = True\nSEGMENT_SECONDS = None\n")
    for bad, why in (("RESUME=maybe", "true/false"), ("RESUME=0", "true/false"),
                     ("SEGMENT_SECONDS=0", "positive number"), ("SEGMENT_SECONDS=-5", "positive number"),
                     ("SEGMENT_SECONDS=soon", "positive number"),
                     ("SEGMENT_SECONDS=true", "positive number")):
        with pytest.raises(reproduce.UsageError, match=f"{bad.split('=')[0]}=.*{why}"):
            reproduce.main(["--nb", "86", "--profile", "smoke", "--param", bad])
    assert left_behind(res) == []


def test_lower_profile_does_not_replace_a_published_higher_one(sandbox, readme_calls):
    books, res = sandbox
    write_book(books / "89_rank.ipynb", RANKED)
    published = res / "89_rank" / "metrics.json"
    published.parent.mkdir()
    for higher, lower in (("cpu", "smoke"), ("full", "cpu"), ("full", "smoke")):
        published.write_text(json.dumps({"provenance": {"profile": higher}}))
        with pytest.raises(reproduce.UsageError,
                           match=f"holds a published {higher} run.*{lower} run ranks lower.*FORCE=1"):
            reproduce.main(["--nb", "89", "--profile", lower])
        assert json.loads(published.read_text())["provenance"]["profile"] == higher
        assert left_behind(res) == ["89_rank"]          # no kernel ran: no staging, no .failed
    assert readme_calls == []
    assert reproduce.main(["--nb", "89", "--profile", "smoke", "--force"]) == 0
    assert json.loads(published.read_text())["provenance"]["profile"] == "smoke"
    assert reproduce.main(["--nb", "89", "--profile", "smoke"]) == 0   # the same rank replaces


def test_make_force_reaches_the_command_line():
    def line(*args: str) -> str:
        out = subprocess.run(["make", "-n", "reproduce", "NB=04", *args], cwd=runtime.REPO_ROOT,
                             capture_output=True, text=True, check=True).stdout
        return next(x for x in out.replace("\\\n", " ").splitlines() if "common.reproduce" in x)

    assert "--force" in line("FORCE=1").split("--param")[0]
    assert "--force" not in line() and "--force" not in line("FORCE=0")
