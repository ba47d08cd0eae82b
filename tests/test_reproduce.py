"""make reproduce: a failing run never touches earlier results; unknown parameters are refused."""
import json

import pytest

from common import reproduce, runtime
from conftest import GOOD, write_book

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
    with pytest.raises(runtime.ProfileError, match="unknown profile 'turbo'"):
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
    monkeypatch.setattr(report, "update_readme", lambda: False)   # never the real README
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
