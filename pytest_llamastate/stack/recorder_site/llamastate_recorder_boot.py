"""Installs ``recorderhook`` (one folder up) in a server process started with recording
on: imported by ``sitecustomize`` here (a server the CLI started) and by the fork server's
child. Loaded by path: the plugin's package is not imported into a server."""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "_llamastate_recorderhook",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recorderhook.py"),
)
if _spec is not None and _spec.loader is not None:
    _hook = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_hook)
    _hook.install_from_environment()
