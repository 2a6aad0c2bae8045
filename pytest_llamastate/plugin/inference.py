"""Deterministic inference per test: ``--llama-inference``, the test id, ``llama_recordings``.

A test that calls a model through the stack costs money, needs a network and a key, and
gets another answer each run. The release's own recorder (see ``stack.recording``) can
record each test's model calls once and replay them offline; this plugin module turns it
on for the session, gives it each test's id (the node id, relative to the rootdir, so
recordings land beside the test module and a clone elsewhere finds them), fails a
replayed test whose request has no recording with one line saying how to record it, and
hands tests what was recorded or replayed. Registered by ``plugin`` (``pytest_plugins``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from ..releases import Flavor
from ..releases.install import install_command
from ..stack.recording import INFERENCE_MODES, STARTUP_DIR, InferenceMode, Recording
from .session import session_state

__all__ = ["ENV_VAR", "LlamaRecordings", "RecordedRequest", "llama_recordings"]

#: Overrides the ini file (not the command line): what CI sets to replay.
ENV_VAR = "LLAMASTATE_INFERENCE"
_FIX = "--llama-inference=record-if-missing"
_NEEDS = "recording and replay need llama-stack 0.3 or later, or OGX"

Event = Literal["recorded", "replayed", "missing"]


@dataclass(frozen=True)
class RecordedRequest:
    """One model request of a test, as the recorder handled it."""

    event: Event
    #: ``POST /v1/chat/completions``; ``a tool call`` for a recorded tool runtime call.
    endpoint: str
    model: str
    #: The recording's file, relative to the rootdir (``tests/recordings/<hash>.json``).
    file: str

    def __str__(self) -> str:
        model = f" (model {self.model})" if self.model else ""
        return f"{self.event}: {self.endpoint}{model} {self.file}".rstrip()


@dataclass
class _State:
    mode: InferenceMode
    source: str
    recording: Recording | None
    #: Where this test's events start in the event file.
    offset: int = 0


_key = pytest.StashKey[_State]()
_item_key = pytest.StashKey[int]()


class LlamaRecordings:
    """What the recorder did for one test: ``llama_recordings`` returns it.

    ``requests`` lists each model request in order; ``recorded``, ``replayed`` and
    ``missing`` filter it. ``directory`` is where this test's recordings are.
    """

    def __init__(self, state: _State, item: pytest.Item, root: Path) -> None:
        self.mode: InferenceMode = state.mode
        self._state, self._item, self._root = state, item, root
        self.directory = (root / item.nodeid.split("::")[0]).parent / "recordings"

    @property
    def requests(self) -> list[RecordedRequest]:
        recording = self._state.recording
        if recording is None or not recording.events.is_file():
            return []
        with recording.events.open(encoding="utf-8") as events:
            events.seek(self._item.stash.get(_item_key, 0))
            lines = [json.loads(line) for line in events if line.strip()]
        found = [self._request(e) for e in lines if e.get("test") == self._item.nodeid]
        recorded = {r.file for r in found if r.event == "recorded"}
        # record-if-missing looks first, then records: a recorded miss is no miss.
        return [r for r in found if not (r.event == "missing" and r.file in recorded)]

    def _request(self, event: dict[str, Any]) -> RecordedRequest:
        file = Path(event["file"]) if event["file"] else None
        if file is not None and file.is_relative_to(self._root):
            file = file.relative_to(self._root)
        return RecordedRequest(
            event["event"], event["endpoint"], event["model"], file.as_posix() if file else ""
        )

    @property
    def recorded(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.event == "recorded"]

    @property
    def replayed(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.event == "replayed"]

    @property
    def missing(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.event == "missing"]

    def __repr__(self) -> str:
        return f"<LlamaRecordings {self._item.nodeid} mode={self.mode} {self.requests}>"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llamastate")
    group.addoption(
        "--llama-inference",
        metavar="MODE",
        help="model calls of stacks: live (default), record, replay (offline; a request "
        "without a recording fails its test) or record-if-missing "
        f"(ini: llama_inference; env {ENV_VAR} overrides the ini)",
    )
    parser.addini("llama_inference", "model calls of stacks: live, record, replay, ...")


def _chosen(config: pytest.Config) -> tuple[str, str]:
    """(value, where it came from): the command line, then the variable, then the ini."""
    if cli := config.getoption("llama_inference", None):
        return str(cli), "--llama-inference"
    if env := os.environ.get(ENV_VAR):
        return env, ENV_VAR
    if ini := str(config.getini("llama_inference")):
        return ini, "ini llama_inference"
    return "live", "default"


def recorder_problem(flavor: Flavor) -> str | None:
    """Why the installed release's recorder cannot be switched on, or ``None``.

    The release table names the recorder of the installed line: none the plugin drives
    before llama-stack 0.3 (none before 0.2.17; 0.2.17 to 0.2.24's ``inference_recorder``
    keys and stores recordings in another way, without a test context).
    """
    recorder = flavor.recorder
    where = f"{flavor.name} {flavor.version() or '(not installed)'}"
    if recorder is None:
        return f"{where} has no request recorder the plugin drives; {_NEEDS}"
    if importlib.util.find_spec(recorder.module.split(".")[0]) is None:
        return f"{where} is not installed"
    for needed in recorder.needs:
        if importlib.util.find_spec(needed) is None:
            return (
                f"{where}'s recorder imports {needed!r}, which is not installed: "
                + install_command("inference")
            )
    return None


@pytest.hookimpl(trylast=True)  # after the plugin's own configure made the session state
def pytest_configure(config: pytest.Config) -> None:
    value, source = _chosen(config)
    mode = next((m for m in INFERENCE_MODES if m == value.strip().lower()), None)
    if mode is None:
        raise pytest.UsageError(
            f"{source}: unknown inference mode {value!r}; allowed: {', '.join(INFERENCE_MODES)}"
        )
    recording = None
    if mode != "live":
        settings = session_state(config).settings
        if settings.stack_mode == "container":
            raise pytest.UsageError(
                f"{source}={mode}: not in container mode (the stack could not reach the "
                "recordings beside the tests); use --llama-stack-mode=library or server"
            )
        flavor = settings.flavor
        if (problem := recorder_problem(flavor)) is not None:
            raise pytest.UsageError(f"{source}={mode}: {problem}")
        handle, events = tempfile.mkstemp(prefix="llamastate-recorder-", suffix=".jsonl")
        os.close(handle)
        recording = Recording(mode, config.rootpath, flavor, Path(events))
        session_state(config).stacks.recording = recording
    config.stash[_key] = _State(mode, source, recording)


def pytest_unconfigure(config: pytest.Config) -> None:
    if (state := config.stash.get(_key, None)) and state.recording:
        state.recording.events.unlink(missing_ok=True)


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = config.stash[_key]
    if state.recording is None:
        return [f"llamastate: inference=live ({state.source}): model calls are not recorded"]
    return [
        f"llamastate: inference={state.mode} ({state.source}): recordings in <test module's "
        f"folder>/recordings under {config.rootpath}; outside any test in {STARTUP_DIR}/recordings"
    ]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """The recorder's test id is this test's node id from its setup to its teardown."""
    state = item.config.stash[_key]
    if state.recording is None:
        return (yield)
    events = state.recording.events
    item.stash[_item_key] = events.stat().st_size if events.is_file() else 0
    with state.recording.as_test(item.nodeid):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A request without a recording fails the test in one line; a failing test's report
    lists what was recorded and replayed."""
    report = yield
    state = item.config.stash[_key]
    if state.recording is None or report.skipped:
        return report
    handle = LlamaRecordings(state, item, item.config.rootpath)
    requests = handle.requests
    missing = [r for r in requests if r.event == "missing"]
    if missing and report.when == "call" and state.mode == "replay":
        first = missing[0]
        model = f" (model {first.model})" if first.model else ""
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid}: no recording of {first.endpoint}{model} in "
            f"{_relative(handle.directory, item.config.rootpath)}/; record it with {_FIX}"
        )
    if report.failed and requests:
        report.sections.append(("llama recordings", "\n".join(map(str, requests))))
    return report


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


@pytest.fixture
def llama_recordings(request: pytest.FixtureRequest) -> LlamaRecordings:
    """What the stack's recorder did for this test (``--llama-inference``): ``requests``,
    ``recorded``, ``replayed``, ``missing``, ``mode`` and ``directory``."""
    state = request.config.stash[_key]
    return LlamaRecordings(state, request.node, request.config.rootpath)
