"""Results integrity: what provenance calls clean, and which source every cached artefact is keyed on."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from common import cost, gan, gen_eval, imbalanced_cifar, kingma, realnvp, report, runtime


# ------------------------------------------------------------------ provenance (git_state)
def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A git repository with one committed source file and a README with both generated tables;
    no .gitignore, so nothing is ignored by git itself."""
    monkeypatch.delenv("REPRO_COMMIT", raising=False)
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    root = tmp_path / "repo"
    (root / "common").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "common" / "a.py").write_text("x = 1\n")
    tables = "".join(f"{start}\n| old |\n{end}\n" for start, end in (runtime.README_TABLE, cost.README_COST))
    (root / "README.md").write_text(f"# title\n\n{tables}\nmore\n")
    (root / "docs" / "cost.json").write_text("{}\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "first")
    return root


def test_repro_commit_in_git_is_compared_with_the_working_tree(repo, monkeypatch):
    """REPRO_COMMIT != HEAD used to record dirty=None (shown clean) whatever the files held."""
    first = _git(repo, "rev-parse", "HEAD")
    (repo / "common" / "a.py").write_text("x = 2\n")
    _git(repo, "commit", "-qam", "second")
    second = _git(repo, "rev-parse", "HEAD")
    (repo / "common" / "a.py").write_text("x = 1\n")        # the files of `first`, .git at `second`
    monkeypatch.setenv("REPRO_COMMIT", first[:7])
    state = runtime.git_state(repo)
    assert state["commit"] == first and state["commit_from"] == "REPRO_COMMIT"
    assert state["git_head"] == second
    assert state["dirty"] is False and state["dirty_paths"] == []
    (repo / "common" / "a.py").write_text("x = 3\n")        # an edit on top of the stated commit
    (repo / "common" / "b.py").write_text("new\n")
    state = runtime.git_state(repo)
    assert state["dirty"] is True and state["dirty_paths"] == ["common/a.py", "common/b.py"]
    monkeypatch.setenv("REPRO_COMMIT", second)
    assert runtime.git_state(repo)["dirty_paths"] == ["common/a.py", "common/b.py"]
    assert "commit_from" not in runtime.git_state(repo)


def test_repro_commit_absent_from_git_is_unknown_and_shown_unverified(repo, monkeypatch):
    monkeypatch.setenv("REPRO_COMMIT", "0123456789abcdef")
    state = runtime.git_state(repo)
    assert state["commit"] == "0123456789abcdef" and state["dirty"] == "unknown"
    assert state["dirty_paths"] is None
    prov = {"profile": "full", "commit": state["commit"]}
    assert report._prov({"provenance": {**prov, "dirty": state["dirty"]}})["commit"] == "01234567+unverified"
    assert report._prov({"provenance": {**prov, "dirty": None}})["commit"] == "01234567+unverified"
    assert report._prov({"provenance": {**prov, "dirty": True}})["commit"] == "01234567+dirty"
    assert report._prov({"provenance": {**prov, "dirty": False}})["commit"] == "01234567"


def test_the_projects_environment_is_not_an_edit_however_linked(repo, monkeypatch, tmp_path):
    """The committed 05 result read `3d0094fa+dirty` because an untracked .venv link counted."""
    outside = tmp_path / "shared-venv"
    (outside / "bin").mkdir(parents=True)
    (repo / ".venv").symlink_to(outside, target_is_directory=True)
    assert runtime.git_state(repo)["dirty"] is False
    (repo / ".venv").unlink()
    (repo / ".venv" / "bin").mkdir(parents=True)             # a folder, not ignored by git
    (repo / ".venv" / "bin" / "python").write_text("")
    (repo / "envs" / "py" / "bin").mkdir(parents=True)        # make VENV=envs/py, activated
    (repo / "envs" / "py" / "bin" / "python").write_text("")
    monkeypatch.setenv("VIRTUAL_ENV", str(repo / "envs" / "py"))
    assert runtime.git_state(repo)["dirty"] is False
    (repo / "envs" / "notes.txt").write_text("mine\n")       # beside the environment: an edit
    state = runtime.git_state(repo)
    assert state["dirty"] is True and state["dirty_paths"] == ["envs/"]   # git names the folder


def test_make_cost_outputs_are_not_edits(repo):
    """make cost rewrites docs/COST.md, docs/cost.json and the README's cost table."""
    readme = (repo / "README.md").read_text()
    for start, end in (runtime.README_TABLE, cost.README_COST):
        readme = runtime.replace_generated_table(readme, "\n| regenerated | rows |\n", (start, end))
    (repo / "README.md").write_text(readme)
    (repo / "docs" / "cost.json").write_text('{"new": 1}\n')
    (repo / "docs" / "COST.md").write_text("# cost\n")
    assert runtime.git_state(repo)["dirty"] is False
    (repo / "README.md").write_text(readme.replace("more", "edited"))
    assert runtime.git_state(repo)["dirty_paths"] == ["README.md"]
    # the paths common.cost writes are the ones git_state leaves out
    assert cost.COST_JSON.relative_to(runtime.REPO_ROOT).as_posix() in runtime.GENERATED_PATHS
    assert cost.COST_MD.relative_to(runtime.REPO_ROOT).as_posix() in runtime.GENERATED_PATHS
    assert cost.README_COST in runtime.GENERATED_TABLES["README.md"]


def test_dirty_paths_are_capped(repo):
    for k in range(runtime.DIRTY_PATHS_SHOWN + 5):
        (repo / f"f{k:02d}.txt").write_text("x")
    paths = runtime.git_state(repo)["dirty_paths"]
    assert len(paths) == runtime.DIRTY_PATHS_SHOWN + 1 and paths[-1] == "... and 5 more"


# ------------------------------------------------------------------ cache keys (code_files)
@pytest.fixture
def tmp_common(tmp_path, monkeypatch):
    """A copy of ``common/`` that runtime.code_files reads instead of the real one."""
    shutil.copytree(runtime.REPO_ROOT / "common", tmp_path / "common",
                    ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(runtime, "REPO_ROOT", tmp_path)
    return tmp_path / "common"


def _edit(common: Path, module: str) -> None:
    path = common / f"{module}.py"
    path.write_text(path.read_text() + "\n# edited\n")


def test_code_files_is_the_import_closure():
    names = lambda *m: {p.stem for p in runtime.code_files(*m)}   # noqa: E731
    assert names("gan") >= {"gan", "kingma", "training", "runtime", "results"}
    assert "gen_eval" not in names("gan") and "gen_eval" in names("gan", "gen_eval")
    assert not names("gan", "gen_eval", "realnvp", "kingma") & {"report", "cost", "profiles", "reproduce"}
    assert names("common.gen_eval") == names("gen_eval")
    with pytest.raises(ValueError, match="no module common.nope"):
        runtime.code_files("nope")


KEYS = {
    "07 kept run": lambda: gan.run_key(cfg={"gan_steps": 2}, tag="gan-s0"),
    "05 run": lambda: realnvp.TrainConfig().key({"ch": 4}),
    "01-03 checkpoint": kingma.code_hash,
    "06 run": imbalanced_cifar._source_hash,
}


@pytest.mark.parametrize("key, edited, changes", [
    ("07 kept run", "gen_eval", True),        # the FID code: kept runs used to survive its edits
    ("07 kept run", "kingma", True),          # imported by gan
    ("07 kept run", "report", False),         # reporting only: nothing retrains
    ("05 run", "training", True),
    ("05 run", "profiles", False),
    ("01-03 checkpoint", "training", True),
    ("01-03 checkpoint", "profiles", False),  # settings tables stay out of the Kingma checkpoints
    ("06 run", "runtime", True),              # memory_format / seeding decide 06's numbers
])
def test_cache_keys_cover_all_the_source_they_depend_on(tmp_common, key, edited, changes):
    before = KEYS[key]()
    _edit(tmp_common, edited)
    assert (KEYS[key]() != before) is changes


def test_cached_classifier_is_retrained_after_its_imports_change(tmp_common, tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(32, 1, 28, 28, generator=g), torch.arange(10).repeat(4)[:32]
    cfg = {"epochs": 1, "batch_size": 32, "lr": 1e-3, "seed": 0, "arch": {"c1": 2, "c2": 2, "feat": 8}}
    _, first = gen_eval.cached_classifier(x, y, cfg, tmp_path / "cache")
    _edit(tmp_common, "training")                                # its training loop's helpers
    _, again = gen_eval.cached_classifier(x, y, cfg, tmp_path / "cache")
    assert again["key"] != first["key"] and not again["cached"]
    assert os.path.isfile(again["path"])


def test_source_hash_at_a_commit_equals_the_hash_of_its_checked_out_files(repo, monkeypatch):
    """source_hash_at reads a commit's files from git and hashes them as source_hash hashes the
    working tree (same files, names and order), so a recorded result can be matched to a commit."""
    (repo / "common" / "sub").mkdir()
    (repo / "common" / "sub" / "b.py").write_text("y = 2\n")
    (repo / "common" / "notes.txt").write_text("not code\n")
    (repo / "notebooks" / "sub").mkdir(parents=True)
    (repo / "notebooks" / "01_x.ipynb").write_text("{}\n")
    (repo / "notebooks" / "sub" / "old.ipynb").write_text("{}\n")   # source_hash: notebooks/*.ipynb
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "more")
    monkeypatch.setattr(runtime, "REPO_ROOT", repo)
    assert runtime.source_hash_at("HEAD", repo) == runtime.source_hash()
    (repo / "common" / "a.py").write_text("x = 3\n")
    assert runtime.source_hash_at("HEAD", repo) != runtime.source_hash()
    assert runtime.source_hash_at("0" * 40, repo) is None


def test_a_dirty_tree_whose_code_is_the_commits_is_shown_clean_with_the_reason(repo, monkeypatch):
    """05's committed result: recorded dirty only because of an untracked link beside the code;
    its source hash equals its commit's, so the README shows the commit without "+dirty" and says
    why; a hash that differs keeps "+dirty", an unknown tree "+unverified"."""
    monkeypatch.setattr(runtime, "REPO_ROOT", repo)
    monkeypatch.setattr(report, "source_hash_at", lambda c: runtime.source_hash_at(c, repo))
    head = _git(repo, "rev-parse", "HEAD")
    prov = {"commit": head, "dirty": True, "dirty_paths": [".venv-link"],
            "source_hash": runtime.source_hash()}
    mark, why = report.tree_mark(prov)
    assert mark == "" and "exactly commit" in why and ".venv-link" in why
    assert report.tree_mark({**prov, "source_hash": "0" * 16}) == ("+dirty", "")
    assert report.tree_mark({**prov, "dirty": "unknown", "source_hash": None}) == ("+unverified", "")
    assert report.tree_mark({**prov, "dirty": False}) == ("", "")
