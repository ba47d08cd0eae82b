"""Shared code of the reproduction notebooks (see README.md).

``make`` and ``common.reproduce`` set ``$REPRO_EXPECT_ROOT`` to the repository they run from; a
kernel or process that would import ``common`` from another clone (a shared virtualenv whose
editable install points elsewhere) stops here, before it could record that clone's provenance.
"""
from __future__ import annotations

import os as _os
from pathlib import Path as _Path

_expected = _os.environ.get("REPRO_EXPECT_ROOT", "").strip()
_here = _Path(__file__).resolve().parent.parent
if _expected and _Path(_expected).resolve() != _here:
    raise ImportError(
        f"this process imports `common` from {_here}, but it was started for the repository "
        f"{_Path(_expected).resolve()} ($REPRO_EXPECT_ROOT). A shared environment points its "
        f"editable install at another clone: run from that clone, or put this repository first "
        f"on PYTHONPATH (make does).")
