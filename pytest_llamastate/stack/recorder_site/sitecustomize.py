"""First on the ``PYTHONPATH`` of a server that ``llama stack run`` / ``ogx run`` started
with recording on: installs ``recorderhook``, then runs the ``sitecustomize`` this one
shadows, if the environment has one."""

import contextlib
import importlib
import os
import sys

import llamastate_recorder_boot  # type: ignore[import-not-found]  # noqa: F401  (installs)

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
del sys.modules["sitecustomize"]
with contextlib.suppress(ImportError):
    importlib.import_module("sitecustomize")
