import json

import pytest
import torch

from common import report, results, training


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "metrics.json"
    results.atomic_write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        results.atomic_write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp files left


def test_json_conversion_of_tensors_and_nonfinite(tmp_path):
    path = results.atomic_write_json(tmp_path / "x.json", {"t": torch.tensor([1.5, 2.0]), "n": float("nan")})
    assert json.loads(path.read_text()) == {"t": [1.5, 2.0], "n": "nan"}


def test_save_metrics_has_provenance_and_validates_summary(tmp_path):
    kw = dict(profile="smoke", seeds=[0], device=torch.device("cpu"), wall_time_s=1.0, config={"lr": 0.1},
              metrics={"acc": 0.5})
    path = results.save_metrics(tmp_path, "99_test", summary=[{"quantity": "acc", "ours": 50, "paper": 60, "unit": "%"}], **kw)
    rec = json.loads(path.read_text())
    assert rec["provenance"]["profile"] == "smoke" and rec["provenance"]["reduced"] is True
    assert rec["provenance"]["device"].startswith("cpu") and rec["notebook"] == "99_test"
    with pytest.raises(ValueError, match="lacks"):
        results.save_metrics(tmp_path, "99_test", summary=[{"quantity": "acc", "ours": 1}], **kw)


def test_out_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv(results.OUT_ENV, str(tmp_path / "env"))
    assert results.out_dir("04_x") == (tmp_path / "env" / "04_x").resolve()
    assert results.out_dir("04_x", tmp_path / "p") == (tmp_path / "p").resolve()
    assert (tmp_path / "p" / "figures").is_dir()


def test_readme_table_generated_from_metrics(tmp_path):
    res = tmp_path / "results"
    results.save_metrics(res / "04_demo", "04_demo", profile="cpu", seeds=[1], device=torch.device("cpu"),
                         wall_time_s=120.0, config={}, metrics={}, reduced=False,
                         summary=[{"quantity": "probe acc", "ours": 97.5, "paper": None, "unit": "%"},
                                  {"quantity": "max |x - y|", "ours": 1e-5, "paper": None, "unit": "abs"}])
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{report.START}\nold\n{report.END}\ntail\n")
    assert report.update_readme(readme, res)
    text = readme.read_text()
    assert "| [04_demo](results/04_demo/04_demo.ipynb) | probe acc | — | 97.5 | % accuracy | — | cpu |" in text
    assert "| probe acc | 97.5 | — | % accuracy |" in text and "old" not in text and text.endswith("tail\n")
    assert "2.0 min" in text and "| max \\|x - y\\| |" in text
    assert not report.update_readme(readme, res)  # idempotent


def test_check_finite_and_checkpoint_roundtrip(tmp_path):
    training.check_finite(torch.tensor([1.0, 2.0]), "loss")
    with pytest.raises(training.NonFiniteError, match="loss is not finite at step 7"):
        training.check_finite(torch.tensor([1.0, float("nan")]), "loss", 7)
    with pytest.raises(training.NonFiniteError):
        training.check_finite(float("inf"), "log-det")
    assert training.load_checkpoint(tmp_path / "none.pt") is None
    training.save_checkpoint(tmp_path / "c.pt", {"epoch": 3, "w": torch.ones(2)})
    ck = training.load_checkpoint(tmp_path / "c.pt")
    assert ck["epoch"] == 3 and torch.equal(ck["w"], torch.ones(2))


def test_epoch_log_summary_excludes_warmup():
    log = training.EpochLog()
    log.seconds, log.samples = [10.0, 2.0, 2.0, 4.0], [100, 100, 100, 100]
    s = log.summary()
    assert s["epoch_seconds_median"] == 2.0 and s["samples_per_second"] == 37.5 and s["epochs"] == 4
