"""make reproduce: a failing run never touches earlier results; unknown parameters are refused."""
import json

import pytest

from common import reproduce, runtime
from conftest import GOOD, needs_real_data, write_book

CRASH = ("import pathlib\n"
         "pathlib.Path(OUT_DIR, 'half.txt').write_text('partial')\n"
         "raise RuntimeError('boom mid-run')\n")


def test_success_then_failure_keeps_good_results(sandbox):
    books, res = sandbox
    book = write_book(books / "98_demo.ipynb", GOOD)
    final = reproduce.run_one(book, "smoke", {})
    assert json.loads((final / "metrics.json").read_text()) == {"profile": "smoke", "v": 1}
    assert (final / "98_demo.html").is_file() and (final / "98_demo.ipynb").is_file()

    write_book(book, CRASH)
    with pytest.raises(Exception, match="boom mid-run"):
        reproduce.run_one(book, "smoke", {})
    assert json.loads((final / "metrics.json").read_text())["v"] == 1   # untouched
    assert not (final / "half.txt").exists()
    assert (res / "98_demo.failed" / "half.txt").is_file()             # kept for inspection
    assert not list(res.glob(".staging-*"))


def test_executed_notebook_names_the_final_folder_not_staging(sandbox):
    books, res = sandbox
    book = write_book(books / "94_paths.ipynb", GOOD + "print('out', OUT_DIR)\n")
    final = reproduce.run_one(book, "smoke", {})
    for name in ("94_paths.ipynb", "94_paths.html"):
        text = (final / name).read_text()
        assert ".staging-" not in text, name
    assert str(runtime.show_path(final)) in (final / "94_paths.ipynb").read_text()


def test_run_without_metrics_is_a_failure(sandbox):
    books, res = sandbox
    book = write_book(books / "97_nometrics.ipynb", "x = 1\n")
    with pytest.raises(RuntimeError, match="without writing metrics.json"):
        reproduce.run_one(book, None, {})
    assert not (res / "97_nometrics").exists()


def test_unknown_parameter_and_profile_refused(sandbox):
    books, _ = sandbox
    book = write_book(books / "96_p.ipynb", GOOD)
    with pytest.raises(SystemExit, match="unknown parameters \\['EPOCHS'\\]"):
        reproduce.run_one(book, None, {"EPOCHS": 3})
    with pytest.raises(reproduce.UsageError, match="unknown profile 'turbo'"):
        reproduce.main(["--profile", "turbo"])
    with pytest.raises(SystemExit, match="no notebook"):
        reproduce.find_notebooks("55")


def test_param_parsing():
    assert reproduce.parse_param("RESUME=False") == ("RESUME", False)
    assert reproduce.parse_param("SEGMENT_SECONDS=300") == ("SEGMENT_SECONDS", 300)
    assert reproduce.parse_param("TAG=abc") == ("TAG", "abc")
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        reproduce.parse_param("RESUME")


def test_segment_ran_out_exits_3_and_keeps_results(sandbox, monkeypatch):
    from common import report

    books, res = sandbox
    monkeypatch.setattr(report, "update_readme", lambda *a, **k: False)   # never the real README
    book = write_book(books / "95_seg.ipynb", GOOD)
    assert reproduce.main(["--nb", "95", "--profile", "smoke"]) == 0
    write_book(book, "from common.training import SegmentUnfinished\n"
                     "raise SegmentUnfinished('M2: the time segment ran out after epoch 4 of 9')\n")
    assert reproduce.main(["--nb", "95", "--profile", "smoke"]) == reproduce.UNFINISHED_EXIT
    assert json.loads((res / "95_seg" / "metrics.json").read_text())["v"] == 1
    write_book(book, CRASH)
    assert reproduce.main(["--nb", "95", "--profile", "smoke"]) == 1


def test_make_passes_parameters_with_shell_characters():
    """`make reproduce PARAMS="M1_HIDDEN=(500,500) ..."`: each NAME=VALUE reaches --param intact."""
    import shlex
    import subprocess

    out = subprocess.run(["make", "-n", "reproduce", "NB=01",
                          "PARAMS=M1_HIDDEN=(500,500) SEGMENT_SECONDS=480"],
                         cwd=runtime.REPO_ROOT, capture_output=True, text=True, check=True).stdout
    cmd = next(line for line in out.replace("\\\n", " ").splitlines() if "common.reproduce" in line)
    subprocess.run(["sh", "-n", "-c", cmd], check=True)            # the shell can parse it
    args = shlex.split(cmd)
    i = args.index("--param")
    assert args[i:i + 4] == ["--param", "M1_HIDDEN=(500,500)", "--param", "SEGMENT_SECONDS=480"]


def test_sigterm_mid_run_keeps_the_partial_notebook(sandbox):
    """`timeout` / a lent machine's call limit sends SIGTERM: the half-run goes to .failed."""
    import os
    import signal
    import threading

    books, res = sandbox
    book = write_book(books / "93_slow.ipynb",
                      "import pathlib, time\npathlib.Path(OUT_DIR, 'half.txt').write_text('x')\n"
                      "time.sleep(60)\n")
    half = res / ".staging-93_slow" / "half.txt"

    def kill_when_half_done() -> None:     # however slow the kernel is to start
        for _ in range(1200):
            if half.is_file():
                break
            threading.Event().wait(0.1)
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    killer = threading.Thread(target=kill_when_half_done, daemon=True)
    killer.start()
    with pytest.raises(reproduce.Terminated) as info, reproduce.terminate_cleanly():
        reproduce.run_one(book, "smoke", {})
    killer.join()
    assert info.value.code == 128 + signal.SIGTERM
    assert (res / "93_slow.failed" / "half.txt").is_file()
    assert (res / "93_slow.failed" / "93_slow.ipynb").is_file()
    assert not list(res.glob(".staging-*")) and not (res / "93_slow").exists()
    assert signal.getsignal(signal.SIGTERM) is before              # handler restored


# ------------------------------------------------ issue #23: publishing keeps results/ and README in step
@pytest.fixture
def readme_states(sandbox, monkeypatch):
    """Each README regeneration, as the list of notebooks published at that moment."""
    from common import report

    _, res = sandbox
    states: list[list[str]] = []
    monkeypatch.setattr(report, "update_readme",
                        lambda *a, **k: states.append(sorted(p.name for p in res.glob("[0-9]*_*")
                                                     if not p.name.endswith(".failed"))) or True)
    return states


def test_readme_follows_every_published_notebook_even_when_a_later_one_fails(sandbox, readme_states,
                                                                            tmp_path):
    books, res = sandbox
    write_book(books / "71_ok.ipynb", GOOD)
    write_book(books / "72_crash.ipynb", CRASH)
    assert reproduce.main(["--nb", "7", "--profile", "smoke"]) == 1
    assert readme_states == [["71_ok"]]           # regenerated once 71 was published, before 72 failed
    assert reproduce.main(["--nb", "7", "--profile", "smoke", "--scratch", str(tmp_path / "s")]) == 1
    assert readme_states == [["71_ok"]]           # a scratch run never touches the README


def test_sigterm_during_publishing_waits_until_results_and_readme_agree(sandbox, monkeypatch):
    """SIGTERM right after the HTML render: the swap and the README finish, then the run stops."""
    import os
    import signal
    import threading

    from common import report

    books, res = sandbox
    write_book(books / "73_term.ipynb", GOOD)
    done: list[str] = []

    def readme_killed_midway(*args: object) -> bool:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):                     # a handler would raise within these bytecodes
            threading.Event().wait(0.001)
        done.append("README")
        return True

    monkeypatch.setattr(report, "update_readme", readme_killed_midway)
    with pytest.raises(reproduce.Terminated) as info:
        reproduce.main(["--nb", "73", "--profile", "smoke"])
    assert info.value.code == 128 + signal.SIGTERM
    assert done == ["README"] and (res / "73_term" / "73_term.html").is_file()
    assert not list(res.glob(".staging-*")) and not list(res.glob(".old-*"))


def test_staging_paths_are_relocated_in_metrics_and_text_outputs(sandbox):
    books, res = sandbox
    book = write_book(books / "74_rel.ipynb",
                      "import json, pathlib\n"
                      "out = pathlib.Path(OUT_DIR)\n"
                      "(out / 'notes.txt').write_text(f'runs in {out}/runs')\n"
                      "(out / 'metrics.json').write_text(json.dumps({'config': {'runs_dir': str(out / 'runs')}}))\n")
    final = reproduce.run_one(book, "smoke", {})
    for name in ("metrics.json", "notes.txt", "74_rel.ipynb", "74_rel.html"):
        assert ".staging-" not in (final / name).read_text(), name
    assert json.loads((final / "metrics.json").read_text())["config"]["runs_dir"] == \
        f"{runtime.show_path(final)}/runs"


@pytest.mark.parametrize("where", ["lock", "staging", "publish", "readme"])
def test_unwritable_results_is_one_line_naming_the_path(sandbox, monkeypatch, where):
    import errno
    import os
    import pathlib

    from common import report

    books, res = sandbox
    write_book(books / "75_ro.ipynb", GOOD)
    code = errno.ENOSPC if where in ("publish", "readme") else errno.EROFS

    def fail(path) -> None:
        raise OSError(code, os.strerror(code), str(path))

    if where == "lock":
        monkeypatch.setattr(reproduce, "open", lambda path, mode: fail(path), raising=False)
    elif where == "staging":
        real_mkdir = pathlib.Path.mkdir
        monkeypatch.setattr(pathlib.Path, "mkdir", lambda self, *a, **k: fail(self)
                            if self.name.startswith(".staging-") else real_mkdir(self, *a, **k))
    elif where == "publish":
        real_rename = pathlib.Path.rename
        monkeypatch.setattr(pathlib.Path, "rename", lambda self, target: fail(target)
                            if pathlib.Path(target).name == "75_ro" else real_rename(self, target))
    else:
        monkeypatch.setattr(report, "update_readme", lambda *a, **k: fail(runtime.REPO_ROOT / "README.md"))
    with pytest.raises(reproduce.PublishError) as info:
        reproduce.main(["--nb", "75", "--profile", "smoke"])
    message = str(info.value.code)
    assert message.startswith("cannot ") and "\n" not in message, message
    assert {"lock": ".reproduce.lock", "staging": ".staging-75_ro", "publish": "75_ro",
            "readme": "README.md"}[where] in message
    assert ("read-only" if code == errno.EROFS else "disk is full") in message


def _fake_clone(tmp_path, rc: int = 0):
    """The Makefile in a folder whose name has a space, with a stand-in venv whose python records
    its arguments and environment and exits ``rc``."""
    import shutil
    import stat

    clone = tmp_path / "my clone"
    (clone / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(runtime.REPO_ROOT / "Makefile", clone / "Makefile")
    for name in ("requirements.txt", "requirements-lock.txt", "pyproject.toml"):
        (clone / name).write_text("")
    python = clone / ".venv" / "bin" / "python"
    python.write_text('#!/bin/sh\nprintf "%s\\n" "$@" "PYTHONPATH=$PYTHONPATH" '
                      f'"ROOT=$REPRO_EXPECT_ROOT" >> "$(dirname "$0")/../calls"\nexit {rc}\n')
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    return clone


def test_makefile_works_in_a_path_with_spaces(tmp_path):
    import os
    import subprocess

    clone = _fake_clone(tmp_path)
    proc = subprocess.run(["make", "venv"], cwd=clone, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (clone / ".venv" / ".installed").is_file()
    (clone / ".venv" / "calls").unlink()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(["make", "reproduce", "NB=04", "PARAMS=A=1 B=(1,2)"], cwd=clone,
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = (clone / ".venv" / "calls").read_text().splitlines()
    assert calls[:7] == ["-m", "common.reproduce", "--nb", "04", "--param", "A=1", "--param"]
    assert f"PYTHONPATH={clone}" in calls and f"ROOT={clone}" in calls


def test_make_names_the_exit_status_of_an_unfinished_run(tmp_path):
    import subprocess

    clone = _fake_clone(tmp_path, rc=3)
    (clone / ".venv" / ".installed").touch()
    proc = subprocess.run(["make", "reproduce"], cwd=clone, capture_output=True, text=True)
    assert proc.returncode == 2                   # make's own status, whatever failed
    assert "common.reproduce exited 3 (unfinished: run the same command again to resume)" in proc.stderr


@needs_real_data
def test_05_smoke_with_a_too_short_segment_is_unfinished(tmp_path, monkeypatch):
    """SEGMENT_SECONDS=0.001 in 05's smoke profile: exit 3 (its resume demo stops too), not an
    AssertionError; SEGMENT_SECONDS=0 is refused up front instead of meaning the profile's 600 s."""
    monkeypatch.delenv(runtime.PROFILE_ENV, raising=False)
    monkeypatch.setenv(runtime.CHECKPOINTS_ENV, str(tmp_path / "checkpoints"))
    args = ["--nb", "05", "--profile", "smoke", "--scratch", str(tmp_path / "scratch")]
    with pytest.raises(reproduce.UsageError, match="SEGMENT_SECONDS=0 .*positive number"):
        reproduce.main([*args, "--param", "SEGMENT_SECONDS=0"])
    assert reproduce.main([*args, "--param", "SEGMENT_SECONDS=0.001"]) == reproduce.UNFINISHED_EXIT


def test_the_readme_regenerated_is_the_one_beside_the_results_published(sandbox, monkeypatch):
    """refresh_readme writes the README of the folder whose results/ it reads, so a run into a
    temporary results/ can never rewrite the repository's README with its rows."""
    from common import report

    _, res = sandbox
    calls = []
    monkeypatch.setattr(report, "update_readme", lambda *a, **k: calls.append(a) or True)
    reproduce.refresh_readme(res)
    assert calls == [(res.parent / "README.md", res)]
