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
         "06": ["cb_study"], "08": ["cui2019", "cao2019", "menon2021", "ren2020", "he2016"]}


@pytest.mark.parametrize("table", [profiles.CONFIGS_01, profiles.CONFIGS_02, profiles.CONFIGS_03,
                                   profiles.CONFIGS_04])
def test_tables_pick_in_every_profile(table):
    for p in runtime.PROFILES:
        assert runtime.pick(table, p)


def test_svc_draws_and_m1_shared_by_01_and_03():
    """03's label draws start with 01's (the same M1+SVC numbers on those draws), and 03 builds
    the M1 of 01 (same widths, epochs, seeds), so that it can reuse 01's checkpoint."""
    for p in runtime.PROFILES:
        c1, c3 = profiles.CONFIGS_01[p], profiles.CONFIGS_03[p]
        assert c1["draws"] == profiles.SVC_DRAWS[p] == c3["seeds"][:len(c1["draws"])]
        assert (c3["m1_hidden"], c3["m1_epochs"], c3["m1_batch"], c3["m1_lr"], c3["m1_seeds"]) == \
            (c1["hidden"], c1["epochs"], c1["batch"], c1["lr"], c1["seeds"])


def test_checkpoint_names_unchanged():
    """The names the notebooks used before the tables moved: cached checkpoints stay valid."""
    path = profiles.kingma_checkpoint("m1_600x600", "cpu", torch.device("cpu"))
    assert path == runtime.REPO_ROOT / "checkpoints" / "kingma_m1_600x600_cpu_cpu.pt"
    assert profiles.kingma_checkpoint("m2_N100", "full", "cuda").name == "kingma_m2_N100_full_cuda.pt"
    assert profiles.kingma_checkpoint("m1_2d", "smoke", torch.device("cpu")) is None


def test_profile_summary_and_paths():
    text = profiles.summary(profiles.CONFIGS_02["cpu"], "cpu", ["n_train", "seeds"])
    assert text.splitlines()[0].startswith("profile cpu: reduced") and "seeds=[0, 1, 2, 3, 4]" in text
    assert "the verdict at the end says which of its claims this run shows" in text   # not "not a reproduction"
    assert "reduced" not in profiles.summary(profiles.CONFIGS_04["cpu"], "cpu", ["epochs"], reduced=False)
    words = profiles.summary({"lr_schedule": "wsd"}, "cpu", ["lr_schedule"])
    assert "wsd" not in words and "linear to 0 over the last 20%" in words
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
    assert diffs.loc["inverse frequency", "minority: resolved?"] == "yes"
    assert math.isclose(ic.confusion_percent(rec, seeds, "CE").sum(), 1000.0)
    extra = ic.summary_table(rec, seeds, ["CE"], {})       # a config the study did not run
    assert extra.loc["CE", "study all"] == "—" and extra.loc["CE", "study row consistent?"] == "—"
    flagged = ic.summary_table(rec, seeds, ["CE", "inverse frequency", "focal γ=2"], references.CB_STUDY)
    assert list(flagged["study row consistent?"]) == ["NO", "NO", "yes"]   # All ≠ its groups'
    assert flagged.loc["focal γ=2", "ours all"] == "not run"
    fig, axes = plt.subplots(1, 3)
    ic.plot_curves_by_group(axes, rec, seeds, ["CE", "focal γ=1"])
    xs = [line.get_xdata()[0] for line in axes[0].get_lines()]
    assert len(set(xs)) == 2 and {line.get_linestyle() for line in axes[0].get_lines()} == {"-", "--"}
    assert all(ax.get_ylim() == (0, 100) for ax in axes)   # small gains are drawn small
    plt.close(fig)


def test_06_weight_ratio_panel_has_plain_number_ticks_and_labelled_bars():
    import matplotlib.pyplot as plt

    rows = {"inverse frequency": losses.inverse_frequency_weights(ic.split_counts()),
            "CB β=0.9": losses.class_balanced_weights(ic.split_counts(), 0.9)}
    fig, (a, b) = plt.subplots(1, 2)
    ic.plot_effective_number(a, b, rows)
    fig.canvas.draw()
    ticks = [t.get_text() for t in b.get_yticklabels() if t.get_text()]
    assert {"1", "2", "5", "10", "20"} <= set(ticks) and not any("^" in t for t in ticks)
    assert [t.get_text() for t in b.texts] == ["20×", "1×"]   # 5,000 / 250; β = 0.9: about 1
    plt.close(fig)


def test_06_more_compute_table_and_plot():
    import matplotlib.pyplot as plt

    rec = _records()
    longer = {(n, 0): {**r, "train": {"epochs": 4},
                       "final": {g: v + 1.0 for g, v in r["final"].items()},
                       "history": [{"epoch": e, **{g: 50.0 + e for g in ("minority", "majority", "all")}}
                                   for e in range(1, 5)]}
              for (n, s), r in rec.items() if s == 0}
    for r in rec.values():
        r["train"] = {"epochs": 2}
    table = ic.more_compute_table(rec, longer, ["CE", "inverse frequency"], 0)
    assert list(table.index) == ["CE", "inverse frequency"]
    assert table.loc["CE", "Δminority"] == 1.0 and "minority @ 4 ep" in table.columns
    fig, axes = plt.subplots(1, 2)
    ic.plot_more_compute(axes, rec, longer, ["CE", "inverse frequency"], 0)
    assert all(ax.get_ylim() == (0, 100) for ax in axes)
    assert len(axes[0].get_lines()) == 4                   # a curve and a star per config
    plt.close(fig)
