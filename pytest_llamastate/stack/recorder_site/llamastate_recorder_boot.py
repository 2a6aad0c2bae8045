"""Installs ``recorderhook`` (one folder up) in a server process started with recording
on: imported by ``sitecustomize`` here (a server the CLI started) and by the fork server's
child, whose zygote loaded it already. Loaded by path: the plugin's package is not
imported into a server."""

import importlib.util
import os
import sys

_NAME = "_llamastate_recorderhook"
_hook = sys.modules.get(_NAME)
if _hook is None:
    _spec = importlib.util.spec_from_file_location(
        _NAME,
        os.path.join(
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recorderhook.py"
        ),
    )
    if _spec is not None and _spec.loader is not None:
        _hook = sys.modules[_NAME] = importlib.util.module_from_spec(_spec)
        _spec.loader.exec_module(_hook)
if _hook is not None:
    _hook.install_from_environment()
