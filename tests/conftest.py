from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

#: ``LLAMASTATE_TEST_BACKEND=postgres`` runs the tests marked ``both_backends`` (and not
#: ``sqlite_only``) with every inner pytest run on Postgres: `make test` does it once more.
#: ``toy`` runs them on the toy backend of ``toy_storage`` (``test_toy_storage`` does).
BACKEND = os.environ.get("LLAMASTATE_TEST_BACKEND", "sqlite")
#: ``LLAMASTATE_TEST_SERVER_PROCESS=exec`` runs the server-mode tests (their id says
#: "server") with every inner run's servers started by the CLI: `make test` does it too.
SERVER_PROCESS = os.environ.get("LLAMASTATE_TEST_SERVER_PROCESS", "")


def import_stack() -> None:
    """Import the installed stack once, in this (outer) process.

    pytester's in-process runs drop every module imported during the run; re-importing
    the stack next time mixes fresh modules with compiled extensions that cannot be
    re-initialised (OGX's SQLAlchemy use then fails with "'InternalTraversal' object is
    not callable"; llama-stack 0.3's API types recurse in ``typing``). Imported here, the
    modules outlive each run, which is also faster. So is everything a stack on the
    default config imports beyond the client, and the request recorder where it can run.
    """
    from pytest_llamastate.plugin.inference import recorder_problem
    from pytest_llamastate.releases import detect, import_quietly

    flavor = detect()
    import_quietly(flavor.library_module)
    # The default config's files provider stores through SQLAlchemy, which the library
    # client alone does not import.
    if flavor.sqlstore_module:
        import_quietly(flavor.sqlstore_module.rpartition(".")[0] + ".sqlalchemy_sqlstore")
    elif flavor.sqlalchemy_module:
        import_quietly(flavor.sqlalchemy_module)
    import_quietly(f"{flavor.package}.providers.inline.files.localfs.files")
    if flavor.recorder is not None and recorder_problem(flavor) is None:
        import_quietly(flavor.recorder.module)


def pytest_configure(config: pytest.Config) -> None:
    """The stack imported once where the suite's in-process runs start stacks: llama-stack
    0.4.3 and later, and OGX (a test on an older line that needs it calls it)."""
    from pytest_llamastate.releases import detect, import_quietly

    flavor = detect()
    if flavor.installed() and flavor.sqlstore_module and not flavor.support_problem():
        import_stack()
    with contextlib.suppress(ModuleNotFoundError):  # the same for the Postgres driver
        import_quietly("asyncpg")
    config.addinivalue_line("markers", "both_backends: also run on Postgres (make test)")
    config.addinivalue_line("markers", "sqlite_only: reads or writes the SQLite files")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if BACKEND == "sqlite" and not SERVER_PROCESS:
        return
    chosen = [
        i
        for i in items
        if (
            i.get_closest_marker("both_backends") and not i.get_closest_marker("sqlite_only")
            if BACKEND != "sqlite"
            else "server" in i.nodeid and "forkserver" not in i.nodeid
        )
    ]
    config.hook.pytest_deselected(items=[i for i in items if i not in chosen])
    items[:] = chosen


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
