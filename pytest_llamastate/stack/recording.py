"""Deterministic inference: the stack side of switching the release's request recorder on.

Llama Stack ships a recorder (``testing/api_recorder.py``) that patches the model clients
inside a stack: ``record`` saves each request's answer as JSON, ``replay`` answers from
those files without a network, ``record-if-missing`` does both. It is switched on by
variables present when a stack initialises and keys each file by a hash of the request
and the current *test id*, which it reads from a context variable (library mode) or from
a provider-data header the server restores (server mode). This module sets those
variables for a starting stack, sets the test id around a test (or a template build),
stamps the header on a server client's requests, and loads ``recorderhook`` into the
stack's process so the plugin learns what was recorded, replayed or missing.

The recorder puts files in ``<repo root>/<test module's folder>/recordings/``, where the
repo root is its directory variable's grandparent's parent; so that variable is set three
levels below the pytest rootdir, and every recording lands beside the test module that
made it, as a path relative to the rootdir: a clone elsewhere replays the same files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..releases import Flavor, Recorder, import_quietly
from . import recorderhook

__all__ = [
    "INFERENCE_MODES",
    "STARTUP_DIR",
    "InferenceMode",
    "Recording",
]

InferenceMode = Literal["live", "record", "replay", "record-if-missing"]
INFERENCE_MODES: tuple[InferenceMode, ...] = ("live", "record", "replay", "record-if-missing")

#: The recorder's directory variable, relative to the rootdir. Its requests made while no
#: test runs (a server's start-up model listing) go to ``recordings`` inside it.
STARTUP_DIR = Path("recordings", "startup", "requests")
#: ``sitecustomize`` that loads the hook into a server started by the CLI (``exec``).
_SITE_DIR = Path(__file__).with_name("recorder_site")


@dataclass(frozen=True)
class Recording:
    """The session's recorder settings: a mode other than ``live``, and where files go."""

    mode: InferenceMode
    #: pytest's rootdir: test ids (node ids) are relative to it, and so are recordings.
    root: Path
    flavor: Flavor
    #: This pytest process's event file (one JSON line per recorded/replayed/missing request).
    events: Path

    @property
    def recorder(self) -> Recorder:
        assert self.flavor.recorder is not None  # checked when the session was configured
        return self.flavor.recorder

    def environment(self, *, server: Literal["fork", "exec"] | None) -> dict[str, str]:
        """Variables a stack starts with: the mode, the directory, the event file; for a
        server also what makes it read the test id from the header, and for a server
        started by the CLI the folder whose ``sitecustomize`` loads the hook."""
        env = {
            self.flavor.inference_mode_var: self.mode,
            self.recorder.dir_var: str(self.root / STARTUP_DIR),
            recorderhook.EVENTS_VAR: str(self.events),
            recorderhook.MODULE_VAR: self.recorder.module,
        }
        if server is not None and self.recorder.server_var is not None:
            name, value = self.recorder.server_var
            env[name] = value
        if server == "exec":
            paths = [str(_SITE_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
            env["PYTHONPATH"] = os.pathsep.join(paths)
        return env

    def install_here(self) -> None:
        """Load the hook into this process, for a library stack (idempotent)."""
        recorderhook.install(self.recorder.module, str(self.events))

    @contextmanager
    def as_test(self, test_id: str) -> Iterator[None]:
        """The recorder's test id is ``test_id`` in this thread (and what it calls) until
        the block ends: what ``set_test_context`` does in llama-stack's own conftest."""
        context: Any = import_quietly(self.recorder.context_module)
        token = context.set_test_context(test_id)
        try:
            yield
        finally:
            context.reset_test_context(token)

    def stamp(self, client: Any) -> None:
        """Make a server client send the current test id in the provider-data header.

        Through the generated client's ``_prepare_request`` hook, on this client only:
        merged into provider data the caller sends, read when each request is made.
        """
        context: Any = import_quietly(self.recorder.context_module)
        header = self.recorder.header
        prepare = client._prepare_request

        def prepare_request(request: Any) -> None:
            prepare(request)
            if (test_id := context.get_test_context()) is None:
                return
            data = json.loads(request.headers.get(header) or "{}")
            data["__test_id"] = test_id
            request.headers[header] = json.dumps(data)

        client._prepare_request = prepare_request

    def template_id(self, source: str | None, name: str) -> str:
        """The test id a template's build records under: beside the module declaring it."""
        path = Path(source).resolve() if source else self.root / "conftest.py"
        try:
            where = path.relative_to(self.root.resolve()).as_posix()
        except ValueError:  # declared outside the rootdir (an installed plugin)
            where = path.name
        return f"{where}::llama_template[{name}]"
