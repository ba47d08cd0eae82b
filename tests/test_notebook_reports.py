"""Report scaffolding of notebooks 01–04 and 06: profile tables in common, shared checkpoint
names, citations at the top, the 06 analysis helpers."""
import math

import matplotlib
import nbformat
import pytest
import torch

matplotlib.use("Agg")

from common import imbalanced_cifar as ic, losses, profiles, references, runtime  # noqa: E402
from common.reproduce import NOTEBOOKS_DIR  # noqa: E402

CITES = {"01": ["kingma2014"], "02": ["kingma2014"], "03": ["kingma2014"], "04": ["dlt_da"],
         "05": ["dinh2016", "grathwohl2018"], "07": ["goodfellow2014", "radford2016", "mirza2014"],
         "06": ["cb_study"]}


@pytest.mark.parametrize("table", [profiles.CONFIGS_01, profiles.CONFIGS_02, profiles.CONFIGS_03,
                                   profiles.CONFIGS_04])
def test_tables_pick_in_every_profile(table):
    for p in runtime.PROFILES:
        assert runtime.pick(table, p)


def test_svc_draws_shared_by_01_and_03():
    for p in runtime.PROFILES:
        assert profiles.CONFIGS_01[p]["draws"] == profiles.CONFIGS_03[p]["seeds"] == profiles.SVC_DRAWS[p]


def test_checkpoint_names_unchanged():
    """The names the notebooks used before the tables moved: cached checkpoints stay valid."""
    path = profiles.kingma_checkpoint("m1_600x600", "cpu", torch.device("cpu"))
    assert path == runtime.REPO_ROOT / "checkpoints" / "kingma_m1_600x600_cpu_cpu.pt"
    assert profiles.kingma_checkpoint("m2_N100", "full", "cuda").name == "kingma_m2_N100_full_cuda.pt"
    assert profiles.kingma_checkpoint("m1_2d", "smoke", torch.device("cpu")) is None


def test_profile_summary_and_paths():
    text = profiles.summary(profiles.CONFIGS_02["cpu"], "cpu", ["n_train", "seeds"])
    assert text.splitlines()[0].startswith("profile cpu: REDUCED") and "seeds=[0, 1, 2]" in text
    assert "REDUCED" not in profiles.summary(profiles.CONFIGS_04["cpu"], "cpu", ["epochs"], reduced=False)
    with pytest.raises(KeyError, match="nope"):
        profiles.summary({}, "cpu", ["nope"])
    assert profiles.show_path(runtime.REPO_ROOT / "results" / "x") == "results/x"
    assert profiles.show_path("/elsewhere/x") == "/elsewhere/x"


@pytest.mark.parametrize("prefix", sorted(CITES))
def test_citation_heads_the_notebook(prefix):
    book = next(NOTEBOOKS_DIR.glob(f"{prefix}_*.ipynb"))
    nb = nbformat.read(book, as_version=4)
    first_md = next(c for c in nb.cells if c.cell_type == "markdown")
    for key in CITES[prefix]:
        assert references.SOURCES[key] in first_md.source, (book.name, key)
    text = "\n".join(c.source for c in nb.cells)
    for phrase in ("issue's", "development probes", "not outputs of this notebook", "issue #"):
        assert phrase not in text, (book.name, phrase)
    assert "**Verdict" not in text or "report.verdict" in text


def _records(seeds=(0, 1, 2)):
    """Synthetic sweep: inverse frequency raises minority and lowers majority accuracy."""
    rec = {}
    for s in seeds:
        for name, (maj, mino) in {"CE": (80.0, 20.0), "inverse frequency": (75.0, 40.0),
                                  "focal γ=1": (80.5, 21.0)}.items():
            mino += s
            allv = 0.7 * maj + 0.3 * mino
            rec[(name, s)] = {"final": {"majority": maj, "minority": mino, "all": allv},
                              "history": [{"majority": maj - 5, "minority": mino - 5, "all": allv - 5},
                                          {"majority": maj, "minority": mino, "all": allv}],
                              "per_class": [50.0] * 10, "confusion": torch.eye(10).tolist()}
    return rec


def test_06_analysis_helpers():
    import matplotlib.pyplot as plt

    rec, seeds, specs = _records(), [0, 1, 2], losses.study_configs()
    ran = ic.configs_run(rec, seeds, specs)
    assert ran == ["CE", "inverse frequency", "focal γ=1"]
    table = ic.summary_table(rec, seeds, ran, references.CB_STUDY)
    assert "study minority" in table.columns and not any(c.startswith("paper") for c in table.columns)
    assert table.loc["CE", "ours minority"] == "21.00 ± 1.00"
    diffs = ic.paired_table(rec, ran)
    assert diffs.loc["inverse frequency", "all: resolved?"] == "yes"
    agree = ic.direction_agreement(rec, seeds, ran, references.CB_STUDY)
    assert agree["inverse frequency"]["agree"]      # the study: minority up, majority down too
    status, why = ic.verdict_06(rec, seeds, ran, references.CB_STUDY, reduced=True)
    assert status == "partly reproduced" and "reduced" in why
    text = ic.findings_text(rec, seeds, ran, specs, references.CB_STUDY, reduced=True)
    assert "inverse frequency" in text and "+20.0 points" in text and "Levels" in text
    assert math.isclose(ic.confusion_percent(rec, seeds, "CE").sum(), 1000.0)
    fig, axes = plt.subplots(1, 3)
    ic.plot_curves_by_group(axes, rec, seeds, ["CE", "focal γ=1"])
    xs = [line.get_xdata()[0] for line in axes[0].get_lines()]
    assert len(set(xs)) == 2 and {line.get_linestyle() for line in axes[0].get_lines()} == {"-", "--"}
    plt.close(fig)
