from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_llamastate.releases import detect

sys.path.insert(0, str(Path(__file__).parent))

#: ``LLAMASTATE_TEST_BACKEND=postgres`` runs the tests marked ``both_backends`` (and not
#: ``sqlite_only``) with every inner pytest run on Postgres: `make test` does it once more.
#: ``toy`` runs them on the toy backend of ``toy_storage`` (``test_toy_storage`` does).
BACKEND = os.environ.get("LLAMASTATE_TEST_BACKEND", "sqlite")
#: ``LLAMASTATE_TEST_SERVER_PROCESS=exec`` runs the server-mode cases (their id says
#: "server") of the tests marked ``exec_too`` with every inner run's servers started by the
#: CLI: `make test` does it too. One test per feature a server serves (start and failure,
#: restart, isolation, seeds, templates, MCP tools, Postgres): each exec'd server costs a
#: process importing the stack, and what the CLI's own path does differently (its exit, a
#: SIGKILL'd parent, the recorder's header) is tested with ``exec`` in every pass.
SERVER_PROCESS = os.environ.get("LLAMASTATE_TEST_SERVER_PROCESS", "")
#: The tests marked ``flavor_neutral`` run where llama-stack is installed, not in the OGX
#: venv: what they test (a SIGKILLed run's leftovers, sharing under xdist, store locks,
#: a full disk, the restart soak, the docker CLI) is the plugin's own, the same on both
#: flavors, while each costs a minute of starting stacks; what differs by flavor is
#: tested on both.
SECOND_FLAVOR = detect().name != "llama-stack"


def pytest_configure(config: pytest.Config) -> None:
    """Import the installed stack once, in this (outer) process.

    pytester's in-process runs drop every module imported during the run; re-importing
    the stack next time mixes fresh modules with compiled extensions that cannot be
    re-initialised (OGX's SQLAlchemy use then fails with "'InternalTraversal' object is
    not callable"). Imported here, the modules outlive each run, which is also faster.
    So is everything a stack on the default config imports beyond the client.
    """
    from pytest_zygote import preimport_stack

    from pytest_llamastate.releases import import_quietly

    preimport_stack()
    with contextlib.suppress(ModuleNotFoundError):  # the same for the Postgres driver
        import_quietly("asyncpg")
    config.addinivalue_line("markers", "both_backends: also run on Postgres (make test)")
    config.addinivalue_line("markers", "sqlite_only: reads or writes the SQLite files")
    config.addinivalue_line("markers", "exec_too: its server cases run with exec too (make test)")
    config.addinivalue_line("markers", "flavor_neutral: runs on llama-stack, not on OGX too")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    chosen = [item for item in items if _in_this_pass(item)]
    if len(chosen) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in chosen])
        items[:] = chosen


def _in_this_pass(item: pytest.Item) -> bool:
    if BACKEND != "sqlite":
        return bool(item.get_closest_marker("both_backends")) and not item.get_closest_marker(
            "sqlite_only"
        )
    if SERVER_PROCESS:
        return bool(item.get_closest_marker("exec_too")) and "server" in item.nodeid
    return not (SECOND_FLAVOR and item.get_closest_marker("flavor_neutral"))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """One throwaway server for the whole suite (shared by xdist workers), given to the
    inner runs by URL: a server per inner run would cost an initdb each."""
    from pytest_llamastate.storage.postgres.server import acquire

    server = acquire(data_dir=Path(tempfile.gettempdir()) / "llamastate-test-postgres")
    yield server.url
    server.release()


@pytest.fixture
def inner_args(request: pytest.FixtureRequest) -> list[str]:
    """What an inner pytest run needs to run as this suite is set to (none by default)."""
    args = [f"--llama-server-process={SERVER_PROCESS}"] if SERVER_PROCESS else []
    if BACKEND == "toy":  # the module adds its line to the table: in subprocesses too
        monkeypatch = request.getfixturevalue("monkeypatch")
        monkeypatch.syspath_prepend(str(Path(__file__).parent))  # and PYTHONPATH for them
        path = os.pathsep.join(
            filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])
        )
        monkeypatch.setenv("PYTHONPATH", path)
        return [*args, "-p", "toy_storage", "--llama-backend=toy"]
    if BACKEND != "postgres":
        return args
    from pytest_llamastate.storage.postgres.client import PostgresURL

    url = request.getfixturevalue("postgres_url")
    # The server is given by URL, so a store reopened from its marker needs PGPASSWORD.
    request.getfixturevalue("monkeypatch").setenv("PGPASSWORD", PostgresURL.parse(url).password)
    return [*args, "--llama-backend=postgres", f"--llama-postgres-url={url}"]


@pytest.fixture(autouse=True)
def _inner_runs_as_the_suite_is_set(request: pytest.FixtureRequest) -> None:
    if (BACKEND == "sqlite" and not SERVER_PROCESS) or "pytester" not in request.fixturenames:
        return
    pytester: pytest.Pytester = request.getfixturevalue("pytester")
    args = request.getfixturevalue("inner_args")
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    for name in ("inline_run", "runpytest_subprocess"):  # what every other run goes through
        run: Callable[..., Any] = getattr(pytester, name)
        monkeypatch.setattr(pytester, name, lambda *a, _run=run, **k: _run(*args, *a, **k))


@pytest.fixture(scope="session")
def mcp_url() -> Iterator[str]:
    """A real MCP server with one tool, ``add``, for the whole session."""
    from mcp_server import running_mcp_server

    with running_mcp_server("add") as url:
        yield url


@pytest.fixture(scope="session")
def mcp_url_2() -> Iterator[str]:
    """A second MCP server, with the tool ``multiply``."""
    from mcp_server import running_mcp_server

    with running_mcp_server("multiply") as url:
        yield url


@pytest.fixture(scope="session")
def container() -> Any:
    """The engine and the suite's image (tests/container_image.py, built once per machine)
    for container-mode tests; skipped, saying why, only where no engine can run one."""
    from container_image import usable

    if os.getuid() != 0:
        # Rootless podman keeps its images under ~/.local/share and its settings under
        # ~/.config: pytester's inner runs have a HOME of their own, these stay the user's.
        os.environ.setdefault("XDG_DATA_HOME", str(Path.home() / ".local" / "share"))
        os.environ.setdefault("XDG_CONFIG_HOME", str(Path.home() / ".config"))
    found = usable()
    if isinstance(found, str):
        pytest.skip(found)
    return found


@pytest.fixture
def container_args(container: Any) -> list[str]:
    """An inner run's options for container mode with the suite's image. A container's
    stack took 55 s to start on 2 cores under load 20: the start timeout (which only
    ends a start that hangs) is set well above that."""
    engine, image = container
    return [
        "--llama-stack-mode=container",
        f"--llama-stack-image={image}",
        f"--llama-container-engine={engine.name}",
        "--llama-stack-start-timeout=300",
        "-p",
        "no:cacheprovider",
    ]
