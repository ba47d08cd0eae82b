"""pytest plugin for the nbval run (``make nbval`` loads it with ``-p tools.nbval_guard``).

1. Before any kernel starts, relative path variables (``REPRO_DATA_MIRROR`` ...) are made
   absolute against the directory pytest was started from: kernels run in ``notebooks/``.
   Kernels run headless (``$REPRO_HEADLESS``): no progress bars.
2. A kernel that dies (a native crash in torch, the OOM killer) fails the cell that was running
   within seconds, naming the notebook and the cell, instead of nbval waiting for a reply that
   never comes. nbval's own ``--nbval-cell-timeout`` still bounds a cell that hangs.
"""
from __future__ import annotations

import time
from queue import Empty
from typing import Any

import pytest

POLL_SECONDS = 2.0
_current: dict[str, str] = {}


class KernelDied(RuntimeError):
    """The notebook's kernel process ended while a cell was running."""


def _exit_status(kernel: Any) -> str:
    proc = getattr(getattr(getattr(kernel, "km", None), "provisioner", None), "process", None)
    code = getattr(proc, "returncode", None)
    if code is None:
        return "exit status unknown"
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


def _guarded_await_reply(original):
    def await_reply(self, msg_id, timeout=None):
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        while True:
            if not self.is_alive():
                raise KernelDied(
                    f"the kernel died ({_exit_status(self)}) while running "
                    f"{_current.get('item', 'a cell')}; a native crash (see the kernel's stderr "
                    f"above) or the OOM killer. The remaining cells of this notebook fail at once.")
            left = POLL_SECONDS if deadline is None else min(POLL_SECONDS, deadline - time.monotonic())
            try:
                return original(self, msg_id, timeout=max(left, 0.01))
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
    return await_reply


def pytest_configure(config: pytest.Config) -> None:
    import os

    from common.runtime import absolutize_path_env
    from common.training import HEADLESS_ENV

    os.environ.setdefault(HEADLESS_ENV, "1")    # kernels: no progress bars
    for name, value in absolutize_path_env().items():
        print(f"nbval_guard: {name} -> {value}")
    try:
        from nbval import kernel as nbval_kernel
    except ImportError:  # plugin loaded without nbval: nothing to guard
        return
    cls = nbval_kernel.RunningKernel
    if not getattr(cls.await_reply, "_guarded", False):
        cls.await_reply = _guarded_await_reply(cls.await_reply)
        cls.await_reply._guarded = True


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    _current["item"] = item.nodeid
    yield
    _current.pop("item", None)
