"""tools/gpu_bench.py: its timers run the notebooks' own trainers and return per-step seconds."""
import torch

from common import runtime
from tools import gpu_bench as gb


def test_trainer_timers_run_the_real_trainers_on_small_shapes():
    dev = torch.device("cpu")
    fmt = torch.contiguous_format
    for run in (gb._gan_run(dev, fmt, 0, ch=4, batch=8), gb._gan_run(dev, fmt, 10, ch=4, batch=8),
                gb._vae_run(dev, fmt, ch=4, batch=8)):
        dt = gb._time_run(run, 3, dev)
        assert 0 < dt < 5
    assert 0 < runtime.seconds_per_call(gb._dae_step(dev), 3, dev) < 5
