"""What a forked server takes ready-made from its zygote (``stack/readymade.py``).

A prebuilt router is bound to the first implementation a process builds it for, and any
other build is done as before; the memorized config parses and version look-ups answer
what the functions answer. Each real forked server of the suite (``test_forkserver``, the
plugin's server tests) runs with the release's shortcuts; here the pieces, and two
consecutive forked server stacks through the plugin, one registering, the next seeing none.
"""

from __future__ import annotations

import asyncio
import io
import logging
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from flavors import skip_module_without_a_stack
from isolation import ISOLATION

from pytest_llamastate.stack import readymade


class _Api:
    def __init__(self, value: str) -> None:
        self.value = value


class _Impl:
    def __init__(self, name: str) -> None:
        self.name = name

    async def list_files(self) -> str:
        return self.name


def _router_of(impl: Any) -> dict[str, Any]:
    """A router factory as llama-stack's: its endpoint calls the implementation it got."""

    async def list_files() -> str:
        return str(await impl.list_files())

    return {"endpoint": list_files}


def _peeking_router_of(impl: Any) -> dict[str, Any]:
    """A factory that reads the implementation while it builds: never prebuilt."""
    return {"endpoint": impl.list_files}


@pytest.fixture
def core(monkeypatch: pytest.MonkeyPatch) -> tuple[types.ModuleType, list[str]]:
    """A fake release: a router registry and a server module that imported its builder."""
    built: list[str] = []
    registry = types.ModuleType("fakecore.server.fastapi_router_registry")
    factories = {"files": _router_of, "peeky": _peeking_router_of}

    def build_fastapi_router(api: _Api, impl: Any) -> Any:
        built.append(api.value)
        return factories[api.value](impl)

    registry.__dict__.update(_ROUTER_FACTORIES=factories, build_fastapi_router=build_fastapi_router)
    server = types.ModuleType("fakecore.server.server")
    server.build_fastapi_router = build_fastapi_router  # type: ignore[attr-defined]
    for module in (registry, server):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    readymade._prebuild_routers("fakecore")
    return server, built


def test_a_prebuilt_router_calls_the_implementation_it_was_first_built_for(
    core: tuple[types.ModuleType, list[str]],
) -> None:
    server, built = core
    mine, other = _Impl("mine"), _Impl("other")
    router = server.build_fastapi_router(_Api("files"), mine)
    assert server.build_fastapi_router(_Api("files"), mine) is router  # map, then serve
    assert asyncio.run(router["endpoint"]()) == "mine"
    assert built == []  # prebuilt in the "zygote"
    again = server.build_fastapi_router(_Api("files"), other)  # another implementation
    assert again is not router
    assert asyncio.run(again["endpoint"]()) == "other"
    assert asyncio.run(router["endpoint"]()) == "mine"
    assert built == ["files"]


def test_a_factory_that_reads_its_implementation_builds_as_before(
    core: tuple[types.ModuleType, list[str]],
) -> None:
    server, built = core
    mine = _Impl("mine")
    router = server.build_fastapi_router(_Api("peeky"), mine)
    assert asyncio.run(router["endpoint"]()) == "mine"
    assert server.build_fastapi_router(_Api("files"), None) is not None
    assert built == ["peeky", "files"]  # and ``None`` (a route listing) is built too


MEMORY = """
import importlib.metadata, importlib.util, io, sys
import yaml
spec = importlib.util.spec_from_file_location("readymade", {path!r})
readymade = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readymade)
readymade.prepare([], "nocore", ["config-once", "versions-once"])
from importlib.metadata import version
text = "a: [1, 2]\\nb: ${{env.X}}\\n"
first = yaml.safe_load(text)
assert readymade.learned()["texts"] == [text]
readymade.learn(readymade.learned())  # what the zygote does with a child's report
second = yaml.safe_load(text)
assert second == first == {{"a": [1, 2], "b": "${{env.X}}"}}
second["a"].append(3)
assert yaml.safe_load(io.StringIO(text)) == first  # a copy each time, files too
bad = io.StringIO("a: [")
bad.name = "stack.yaml"
try:
    yaml.safe_load(bad)
except yaml.YAMLError as exc:
    assert "stack.yaml" in str(exc), exc
assert yaml.safe_load(b"c: 1") == {{"c": 1}}
pytest_version = version("pytest")
assert readymade.learned()["versions"] == ["pytest"]
readymade.learn(readymade.learned())
assert importlib.metadata.version("pytest") == pytest_version
print("ok")
"""


def test_config_and_versions_come_from_memory_as_the_functions_answer() -> None:
    """In a process of its own: the shortcuts patch ``yaml`` and ``importlib.metadata``."""
    script = MEMORY.format(path=str(Path(readymade.__file__)))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_consecutive_forked_server_stacks_see_nothing_of_each_other(
    pytester: pytest.Pytester, inner_args: list[str]
) -> None:
    """Each server stack (forked from one zygote with the release's shortcuts) has its own
    files and registry, through the prebuilt routers."""
    skip_module_without_a_stack()
    pytester.makepyfile(ISOLATION)
    pytester.runpytest("--llama-stack-mode=server", *inner_args).assert_outcomes(passed=5)


LEARNING = """
import importlib.util, re, sys
spec = importlib.util.spec_from_file_location("readymade", {path!r})
readymade = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readymade)
readymade.prepare([], "nocore", [])
assert readymade.learned() == {{"versions": [], "texts": []}}  # nothing new: no names read
import colorsys
re.compile("llamastate-[a-z]+", re.I)
said = readymade.learned()
assert said["modules"] == ["colorsys"], said
assert said["patterns"] == [["llamastate-[a-z]+", re.I.value]], said
readymade.learn(said)  # the zygote: imports and compiles them, then knows them
assert "modules" not in readymade.learned()
print("ok")
"""


def test_a_child_reports_what_it_added_since_its_zygote_last_learned() -> None:
    """In a process of its own: what it imported and compiled, nothing once it is known."""
    script = LEARNING.format(path=str(Path(readymade.__file__)))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


BATCHED = """
import importlib.util, logging, logging.config, sys, types
spec = importlib.util.spec_from_file_location("readymade", {path!r})
readymade = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readymade)
loggers = [logging.getLogger(f"batchcore.test.{{n}}") for n in range(3)]
def setup_logging(level):
    for logger in loggers:
        logger.setLevel(level)
    logging.config.dictConfig({{"version": 1, "incremental": True}})  # nested: batched too
sys.modules["batchcore.log"] = log = types.ModuleType("batchcore.log")
sys.modules["batchcore.server"] = server = types.ModuleType("batchcore.server")
log.setup_logging = server.setup_logging = setup_logging
before = [setup_logging]  # a module attribute would be replaced too (this module's)
manager = logging.Logger.manager
clears = []
clear = type(manager)._clear_cache
type(manager)._clear_cache = lambda self: clears.append(1) or clear(self)
setup_logging(logging.WARNING)
assert not loggers[0].isEnabledFor(logging.DEBUG)  # cached now
readymade.prepare([], "batchcore.core", ["batched-log-levels"])
clears.clear()
server.setup_logging(logging.DEBUG)
assert clears == [1], clears  # once, not once per logger
assert loggers[0].isEnabledFor(logging.DEBUG)  # the cache of then is gone
assert "_clear_cache" not in vars(manager)
assert log.setup_logging is server.setup_logging is not before[0]
clears.clear()
logging.config.dictConfig({{"version": 1, "loggers": {{"a": {{"level": "INFO"}}, "b": {{}}}}}})
assert clears == [1], clears
print("ok")
"""


def test_the_stacks_logging_set_up_clears_level_caches_once() -> None:
    """In a process of its own: the shortcut patches ``logging.config``."""
    script = BATCHED.format(path=str(Path(readymade.__file__)))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_log_lines_are_the_same_text_and_highlighted_only_in_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rich_logging = pytest.importorskip("rich.logging")
    from rich.console import Console
    from rich.highlighter import ReprHighlighter

    handler_class = rich_logging.RichHandler
    monkeypatch.setattr(handler_class, "render_message", handler_class.render_message)
    highlighted: list[str] = []
    highlight = ReprHighlighter.highlight
    monkeypatch.setattr(
        ReprHighlighter,
        "highlight",
        lambda self, text: highlighted.append(text) or highlight(self, text),
    )
    said = [
        'GET /v1/health HTTP/1.1" 200 [bold]{"a": 1}[/bold] http://127.0.0.1:8321/v1 True None',
        "apis:\n- files\nserver:\n  port: 8321\n" + "x" * 150,
    ]

    def logged(color: bool) -> str:
        out = io.StringIO()  # not a terminal
        console = Console(file=out, width=120, force_terminal=color or None)
        handler = handler_class(console=console, markup=True, show_time=False, show_path=False)
        for message in said:
            handler.emit(logging.LogRecord("x", logging.INFO, __file__, 1, message, None, None))
        return out.getvalue()

    before = logged(False), logged(True)
    assert "\x1b[" in before[1]
    assert "\x1b[" not in before[0]
    readymade._skip_unseen_highlighting()
    highlighted.clear()
    assert logged(False) == before[0]  # the same text, with nothing highlighted
    assert highlighted == []
    assert logged(True) == before[1]  # a console with colors still gets them
    assert highlighted


def test_an_app_including_a_prebuilt_router_takes_its_routes_built_in_the_zygote(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Built before any request, with the app's own dependency overrides; an app that
    includes it otherwise (a prefix), or a second app, builds its own."""
    routing = pytest.importorskip("fastapi.routing")
    if "_effective_candidates_version" not in getattr(
        getattr(routing, "_IncludedRouter", None), "__dataclass_fields__", {}
    ):
        pytest.skip("this FastAPI builds its routes as it includes them")
    from fastapi import APIRouter, Depends, FastAPI
    from fastapi.testclient import TestClient

    monkeypatch.setattr(routing.APIRouter, "include_router", routing.APIRouter.include_router)

    def caller() -> str:
        return "nobody"

    def router_of(impl: Any) -> Any:
        router = APIRouter()

        @router.get("/v1/name")
        async def name(who: str = Depends(caller)) -> dict[str, str]:
            return {"name": await impl.list_files(), "caller": who}

        return router

    registry = types.ModuleType("warmcore.server.fastapi_router_registry")
    registry.__dict__.update(_ROUTER_FACTORIES={"files": router_of}, build_fastapi_router=None)
    registry.build_fastapi_router = lambda api, impl: router_of(impl)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, registry.__name__, registry)
    readymade._prebuild_routers("warmcore")
    router = registry.build_fastapi_router(_Api("files"), _Impl("mine"))  # type: ignore[attr-defined]

    app = FastAPI()
    app.include_router(router)
    assert app.router.routes[-1]._effective_candidates_version is not None  # before a request
    app.dependency_overrides[caller] = lambda: "overridden"
    assert TestClient(app).get("/v1/name").json() == {"name": "mine", "caller": "overridden"}
    for other, prefix in ((FastAPI(), "/x"), (FastAPI(), "")):
        other.include_router(router, prefix=prefix)
        assert other.router.routes[-1]._effective_candidates_version is None
        other.dependency_overrides[caller] = lambda: "other"
        got = TestClient(other).get(f"{prefix}/v1/name").json()
        assert got == {"name": "mine", "caller": "other"}
