import json
import time

import pytest
import torch

from common import runtime


def test_env_overrides_parameter(monkeypatch):
    monkeypatch.setenv(runtime.PROFILE_ENV, "smoke")
    assert runtime.resolve_profile("full") == "smoke"


def test_parameter_then_auto(monkeypatch):
    monkeypatch.delenv(runtime.PROFILE_ENV, raising=False)
    assert runtime.resolve_profile("cpu") == "cpu"
    assert runtime.resolve_profile(None) == ("full" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("source", ["env", "param"])
def test_unknown_profile_is_a_clear_error(monkeypatch, source):
    monkeypatch.delenv(runtime.PROFILE_ENV, raising=False)
    if source == "env":
        monkeypatch.setenv(runtime.PROFILE_ENV, "fast")
    with pytest.raises(runtime.ProfileError, match="unknown profile 'fast'.*smoke, cpu, full"):
        runtime.resolve_profile("fast")


def test_reduced_labels():
    assert runtime.is_reduced("smoke") and runtime.is_reduced("cpu") and not runtime.is_reduced("full")


def test_pick_requires_all_profiles_with_same_keys():
    good = {"smoke": {"a": 1}, "cpu": {"a": 2}, "full": {"a": 3}, "dryrun": {"a": 0}}
    assert runtime.pick(good, "cpu") == {"a": 2}
    with pytest.raises(runtime.ProfileError, match="lacks profiles"):
        runtime.pick({"smoke": {"a": 1}, "cpu": {"a": 2}}, "cpu")
    with pytest.raises(runtime.ProfileError, match=r"lacks profiles \['dryrun'\]"):
        runtime.pick({"smoke": {"a": 1}, "cpu": {"a": 2}, "full": {"a": 3}}, "cpu")
    with pytest.raises(runtime.ProfileError, match="keys differ"):
        runtime.pick({"smoke": {"a": 1}, "cpu": {"a": 2, "b": 0}, "full": {"a": 3}, "dryrun": {"a": 0}},
                     "cpu")


def test_seeding_is_reproducible():
    runtime.seed_everything(5)
    a = torch.randn(3)
    runtime.seed_everything(5)
    assert torch.equal(a, torch.randn(3))


def test_provenance_records_everything(monkeypatch):
    p = runtime.provenance("cpu", [1, 2], torch.device("cpu"), wall_time_s=12.345)
    for key in ("commit", "dirty", "source_hash", "profile", "reduced", "seeds", "device", "torch", "cuda", "wall_time_s"):
        assert key in p
    assert p["reduced"] is True and p["seeds"] == [1, 2] and p["wall_time_s"] == 12.35
    assert runtime.provenance("cpu", [0], torch.device("cpu"), reduced=False)["reduced"] is False


def test_device_override(monkeypatch):
    monkeypatch.setenv(runtime.DEVICE_ENV, "cpu")
    assert runtime.get_device().type == "cpu"
    if not torch.cuda.is_available():
        monkeypatch.setenv(runtime.DEVICE_ENV, "cuda")
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            runtime.get_device()


def test_file_digest_tracks_names_and_contents(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("x = 1\n")
    b.write_text("x = 1\n")
    d = runtime.file_digest([a])
    assert d == runtime.file_digest([a]) and len(d) == 16
    assert d != runtime.file_digest([b])          # same content, other name
    a.write_text("x = 2\n")
    assert d != runtime.file_digest([a])          # other content


def test_set_threads_env_overrides_and_bad_values_fail(monkeypatch):
    before = torch.get_num_threads()
    cpu = torch.device("cpu")
    try:
        monkeypatch.delenv(runtime.THREADS_ENV, raising=False)
        assert runtime.set_threads(1, cpu) == 1
        monkeypatch.setenv(runtime.THREADS_ENV, "2")
        assert runtime.set_threads(1, cpu) == 2            # the environment wins
        monkeypatch.setenv(runtime.THREADS_ENV, "two")
        with pytest.raises(ValueError, match="REPRO_THREADS"):
            runtime.set_threads(1, cpu)
        monkeypatch.delenv(runtime.THREADS_ENV)
        with pytest.raises(ValueError, match="positive"):
            runtime.set_threads(0, cpu)
        assert runtime.set_threads(None, cpu) == torch.get_num_threads()   # left alone
    finally:
        torch.set_num_threads(before)


def test_memory_format_is_contiguous_on_avx2_only_cpus(monkeypatch):
    """(AVX-512 CPUs and $ONEDNN_MAX_CPU_ISA: tests/test_native_safety.py.)"""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(runtime, "cpu_info", lambda: {"isa": ["avx2", "fma"]})
    assert runtime.memory_format(True, cpu) == torch.contiguous_format
    assert runtime.memory_format(False, cuda) == torch.contiguous_format
    assert runtime.memory_format(True, cuda) == torch.channels_last


def test_cpu_info_in_provenance():
    info = runtime.provenance("smoke", [0], torch.device("cpu"))["cpu"]
    assert set(info) >= {"model", "isa", "torch_capability"}
    assert isinstance(info["model"], str) and info["model"]
    assert set(info["isa"]) <= {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni",
                                "avx512_bf16", "amx_tile", "amx_bf16"}


@pytest.mark.parametrize("isa, expected", [(["avx2", "fma"], False), (["avx2", "avx512f"], False),
                                         (["avx512f", "avx512_bf16"], True), (["amx_tile", "amx_bf16"], True)])
def test_resolve_amp_auto_follows_native_bf16_on_cpu(monkeypatch, isa, expected):
    monkeypatch.setattr(runtime, "cpu_info", lambda: {"isa": isa})
    cpu = torch.device("cpu")
    assert runtime.resolve_amp("auto", cpu) is expected
    assert runtime.resolve_amp(True, cpu) is True and runtime.resolve_amp(False, cpu) is False
    with pytest.raises(ValueError, match="amp must be"):
        runtime.resolve_amp("yes", cpu)


def test_relative_path_variables_resolve_against_the_callers_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("REPRO_DATA_MIRROR", "../shared/datasets")
    monkeypatch.setenv("REPRO_DATA_ROOT", str(tmp_path / "abs"))
    monkeypatch.setenv("REPRO_OUT", "")
    (tmp_path / "repo").mkdir()
    changed = runtime.absolutize_path_env(base=tmp_path / "repo")
    assert changed == {"REPRO_DATA_MIRROR": str(tmp_path / "shared" / "datasets")}
    assert runtime.os.environ["REPRO_DATA_MIRROR"] == str(tmp_path / "shared" / "datasets")
    assert runtime.os.environ["REPRO_DATA_ROOT"] == str(tmp_path / "abs")
    assert runtime.absolutize_path_env(base=tmp_path) == {}        # idempotent


def test_get_device_makes_float32_mean_float32_and_provenance_records_it():
    torch.set_float32_matmul_precision("medium")
    torch.backends.cudnn.allow_tf32 = True
    try:
        runtime.get_device("cpu")
        assert runtime.precision_state() == {"float32_matmul_precision": "highest",
                                             "cuda_matmul_allow_tf32": False,
                                             "cudnn_allow_tf32": False}
        assert runtime.provenance("smoke", [0], torch.device("cpu"))["precision"] == runtime.precision_state()
    finally:
        torch.set_float32_matmul_precision("highest")


def test_settings_key_changes_with_settings_and_source(tmp_path):
    src = tmp_path / "model.py"
    src.write_text("a = 1\n")
    k = runtime.settings_key({"steps": 3, "ch": 4}, [src])
    assert k == runtime.settings_key({"ch": 4, "steps": 3}, [src]) and len(k) == 16   # order-free
    assert k != runtime.settings_key({"steps": 4, "ch": 4}, [src])
    assert len(runtime.settings_key({"steps": 3}, [src], length=10)) == 10
    src.write_text("a = 2\n")
    assert k != runtime.settings_key({"steps": 3, "ch": 4}, [src])


def test_seconds_per_call_warms_up_then_averages():
    calls = []
    dt = runtime.seconds_per_call(lambda: calls.append(time.sleep(0.01)), 3, warmup=2)
    assert len(calls) == 5 and 0.01 <= dt < 0.5
    with pytest.raises(ValueError, match="calls"):
        runtime.seconds_per_call(lambda: None, 0)


def test_full_profile_without_cuda_is_refused_unless_allowed(monkeypatch, capsys):
    """PROFILE=full on a CPU-only machine used to start the papers' schedules silently (02:
    hundreds of hours)."""
    for var in (runtime.PROFILE_ENV, runtime.DEVICE_ENV, runtime.ALLOW_LONG_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(runtime.LongRunRefused, match=r"REPRO_ALLOW_LONG=1(.|\n)*02: about [\d.]+ hours"):
        runtime.resolve_profile("full")
    monkeypatch.setenv(runtime.PROFILE_ENV, "full")
    with pytest.raises(runtime.LongRunRefused):
        runtime.resolve_profile("cpu")
    monkeypatch.delenv(runtime.PROFILE_ENV)
    assert [runtime.resolve_profile(p) for p in ("smoke", "cpu", "dryrun", None)] == \
        ["smoke", "cpu", "dryrun", "cpu"]
    assert capsys.readouterr().out == ""
    monkeypatch.setenv(runtime.ALLOW_LONG_ENV, "1")
    assert runtime.resolve_profile("full") == "full"
    assert "REPRO_ALLOW_LONG=1: running the full profile" in capsys.readouterr().out
    monkeypatch.delenv(runtime.ALLOW_LONG_ENV)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)      # a GPU: unaffected
    assert runtime.resolve_profile("full") == "full" and capsys.readouterr().out == ""
    monkeypatch.setenv(runtime.DEVICE_ENV, "cpu")                       # ... unless forced off it
    with pytest.raises(runtime.LongRunRefused, match="on cpu"):
        runtime.resolve_profile(None)
    runtime.check_long_run("full", torch.device("cuda"))                # the caller's device decides


def test_cpu_estimate_names_one_notebook_or_all(tmp_path):
    rec = {"cpu": "Some CPU", "cpu_threads": 1, "notebooks": {
        "01": {"cpu_hours": 8.87, "per_epoch_only": False},
        "05": {"cpu_hours": None, "per_epoch_only": True}}}
    path = tmp_path / "cost.json"
    path.write_text(json.dumps(rec))
    assert runtime.cpu_estimate("01", path).splitlines()[1:] == ["  01: about 8.87 hours"]
    assert runtime.cpu_estimate(None, path).splitlines()[1:] == ["  01: about 8.87 hours",
                                                                 "  05: not measured per epoch"]
    assert "make cost" in runtime.cpu_estimate("01", tmp_path / "missing.json")


@pytest.mark.parametrize("channels_last", [True, False])
def test_flatten_keeping_format_hands_the_gradient_back_in_the_input_format(channels_last):
    """Values as ``flatten(1)``; the gradient reaching the layer below equals plain flatten's,
    in the input's layout (caught on a non-leaf: a leaf's .grad is re-strided anyway)."""
    x0 = torch.randn(3, 4, 5, 6, generator=torch.Generator().manual_seed(0))
    if channels_last:
        x0 = x0.contiguous(memory_format=torch.channels_last)
    w = torch.randn(3, 120, generator=torch.Generator().manual_seed(1))
    grads = {}
    for name, flatten in (("kept", runtime.flatten_keeping_format), ("plain", lambda t: t.flatten(1))):
        h = x0.clone().requires_grad_() * 2.0               # the map a layer below produced
        h.register_hook(lambda g, name=name: grads.__setitem__(name, g))
        y = flatten(h)
        assert torch.equal(y, (x0 * 2.0).flatten(1))
        (y * w).sum().backward()
    assert torch.equal(grads["kept"], grads["plain"])
    assert grads["kept"].is_contiguous(memory_format=torch.channels_last if channels_last
                                       else torch.contiguous_format)
    if channels_last:   # what the plain flatten hands down, and the reason for the helper
        assert not grads["plain"].is_contiguous(memory_format=torch.channels_last)
