"""Runs inside a stack's process and says what its request recorder did, one JSON line each.

The release's recorder decides, per request, to answer from a file, to record one, or
(replay) to fail; it tells nobody. A test wants to know (``llama_recordings``), and a
missing recording should fail the test with one line naming it, not with a server's
HTTP 500. So this wraps three of the recorder's own names: ``normalize_inference_request``
(remembers each request hash's endpoint and model), ``ResponseStorage.find_recording``
(``replayed`` or ``missing``) and ``ResponseStorage.store_recording`` (``recorded``), and
appends an event per call to the file named by ``LLAMASTATE_RECORDER_EVENTS``.

Loaded in-process for a library stack, by the fork server's child for a forked server,
and by ``recorder_site/sitecustomize.py`` for a server started by the CLI: so standard
library only, and importable by file path.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

__all__ = ["EVENTS_VAR", "MODULE_VAR", "install", "install_from_environment"]

EVENTS_VAR = "LLAMASTATE_RECORDER_EVENTS"
MODULE_VAR = "LLAMASTATE_RECORDER_MODULE"
_INSTALLED = "_llamastate_events"


def install_from_environment() -> None:
    """Install when the stack was started with recording on (a server's start-up)."""
    if (events := os.environ.get(EVENTS_VAR)) and (module := os.environ.get(MODULE_VAR)):
        install(module, events)


def install(module_name: str, events: str) -> None:
    """Wrap the recorder in ``module_name`` to append events to ``events`` (once per
    process; a later call only moves the file)."""
    module: Any = importlib.import_module(module_name)
    if getattr(module, _INSTALLED, None) is not None:
        setattr(module, _INSTALLED, events)
        return
    setattr(module, _INSTALLED, events)
    requests: dict[str, tuple[str, str]] = {}
    normalize = module.normalize_inference_request
    storage = module.ResponseStorage
    find, store = storage.find_recording, storage.store_recording
    # OGX falls back to the provider-data header where a context variable did not carry.
    test_id = getattr(module, "_get_test_context_with_fallback", None) or module.get_test_context

    def emit(event: str, digest: str, file: Path | None) -> None:
        endpoint, model = requests.get(digest, ("a tool call", ""))
        line = {
            "test": test_id(),
            "event": event,
            "endpoint": endpoint,
            "model": model,
            "file": str(file) if file is not None else "",
        }
        with open(getattr(module, _INSTALLED), "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")

    def normalize_inference_request(
        method: str, url: str, headers: dict[str, Any], body: dict[str, Any]
    ) -> str:
        digest: str = normalize(method, url, headers, body)
        # The recorder joins a base URL ending in /v1 and an endpoint starting with /v1.
        path = re.sub(r"^(/v\d+)\1/", r"\1/", urlparse(url).path)
        requests[digest] = (f"{method.upper()} {path}", str(body.get("model", "")))
        return digest

    def find_recording(self: Any, request_hash: str) -> Any:
        found = find(self, request_hash)
        primary = self._get_test_dir() / f"{request_hash}.json"
        fallback = self.base_dir / "recordings" / f"{request_hash}.json"
        where = primary if primary.exists() else fallback if found is not None else primary
        emit("replayed" if found is not None else "missing", request_hash, where)
        return found

    def store_recording(self: Any, request_hash: str, request: Any, response: Any) -> None:
        store(self, request_hash, request, response)
        folder = self._get_test_dir()
        written = [folder / f"{request_hash}.json", *folder.glob(f"models-{request_hash}-*.json")]
        emit("recorded", request_hash, next((p for p in written if p.exists()), None))

    module.normalize_inference_request = normalize_inference_request
    storage.find_recording = find_recording
    storage.store_recording = store_recording
