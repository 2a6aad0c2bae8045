"""What a forked server takes ready-made from its zygote (``stack/readymade.py``).

A prebuilt router is bound to the first implementation a process builds it for, and any
other build is done as before; the memorized config parses and version look-ups answer
what the functions answer. Each real forked server of the suite (``test_forkserver``, the
plugin's server tests) runs with the release's shortcuts; here the pieces, and two
consecutive forked server stacks through the plugin, one registering, the next seeing none.
"""

from __future__ import annotations

import asyncio
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
