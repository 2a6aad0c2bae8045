"""Container mode against real containers: the suite's image (tests/container_image.py,
built once per machine) on the installed engine, with inner pytest runs.

Skipped, saying why, only where no engine can run a container. Every container start
costs seconds, so each inner run checks as much as one set of starts can show.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from container_image import usable

from pytest_llamastate.releases import detect
from pytest_llamastate.stack.engine import OWNER_LABEL, STORE_LABEL, Engine

FLAVOR = detect()
#: Whether the server can list tools over HTTP: OGX 1.5's route answers HTTP 500.
SERVER_LISTS_TOOLS = not FLAVOR.tools_route_bug


@pytest.fixture(scope="session")
def container() -> tuple[Engine, str]:
    found = usable()
    if isinstance(found, str):
        pytest.skip(found)
    return found


@pytest.fixture
def args(container: tuple[Engine, str]) -> list[str]:
    engine, image = container
    return [
        "--llama-stack-mode=container",
        f"--llama-stack-image={image}",
        f"--llama-container-engine={engine.name}",
        "-p",
        "no:cacheprovider",
    ]


def containers(engine: Engine, label: str) -> list[str]:
    listed = engine.call("ps", "-a", "--filter", f"label={label}", "--format", "{{.Names}}")
    return listed.stdout.split()


def inner_helpers(pytester: pytest.Pytester, engine: Engine) -> None:
    """Helpers for the inner tests: the container serving a store, and the toolgroups the
    server itself knows (its tool listing; OGX's rows, its route being broken upstream)."""
    pytester.syspathinsert()
    pytester.makepyfile(
        inner_helpers=f"""
import subprocess

def container_of(stack):
    listed = subprocess.run(
        [{engine.exe!r}, "ps", "--filter",
         "label={STORE_LABEL}=" + str(stack.store.path), "--format", "{{{{.Names}}}}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert len(listed) == 1, listed
    return listed[0]

def served_toolgroups(stack):
    if {SERVER_LISTS_TOOLS!r}:
        return sorted({{t["toolgroup_id"] for t in stack.tools()}})
    return sorted(t.identifier for t in stack.toolgroups())
"""
    )


@pytest.mark.both_backends
def test_restart_keeps_the_store_and_the_next_test_starts_empty(
    pytester: pytest.Pytester, container: tuple[Engine, str], args: list[str], mcp_url: str
) -> None:
    """The seed's scenario: a toolgroup registered in one container is served by the next
    one on the same store; another test's container starts on an empty store."""
    inner_helpers(pytester, container[0])
    pytester.makepyfile(
        f"""
        import os
        from inner_helpers import container_of, served_toolgroups

        def test_register_then_restart(llama_stack):
            assert llama_stack.base_url.startswith("http://127.0.0.1:")
            llama_stack.register_toolgroup("mcp::shared", mcp_endpoint={mcp_url!r})
            first = container_of(llama_stack)
            llama_stack.restart()
            assert container_of(llama_stack) != first
            assert served_toolgroups(llama_stack) == ["mcp::shared"]
            # what the container wrote is the runner's to read and delete
            for root, dirs, files in os.walk(llama_stack.store.path):
                for name in dirs + files:
                    assert os.stat(os.path.join(root, name)).st_uid == os.getuid(), name

        def test_next_container_starts_empty(llama_stack):
            assert served_toolgroups(llama_stack) == []
            assert llama_stack.toolgroups() == []
        """
    )
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([f"*stack mode=container ({args[2].split('=')[1]} *)*"])


def test_a_persistent_store_is_served_again_by_the_next_run(
    pytester: pytest.Pytester, container: tuple[Engine, str], args: list[str], mcp_url: str
) -> None:
    inner_helpers(pytester, container[0])
    pytester.makepyfile(
        f"""
        import os, pytest
        from inner_helpers import served_toolgroups

        @pytest.mark.persistent("kept")
        def test_uses_the_store(llama_stack):
            if os.environ["RUN"] == "1":
                assert served_toolgroups(llama_stack) == []
                llama_stack.register_toolgroup("mcp::p", mcp_endpoint={mcp_url!r})
            else:
                assert served_toolgroups(llama_stack) == ["mcp::p"]
        """
    )
    persist = f"--llama-persist-dir={pytester.path / 'persist'}"
    for run in ("1", "2"):
        os.environ["RUN"] = run
        try:
            pytester.runpytest(*args, persist).assert_outcomes(passed=1)
        finally:
            del os.environ["RUN"]


def test_seeds_and_a_state_template_start_the_container_s_store(
    pytester: pytest.Pytester,
    container: tuple[Engine, str],
    args: list[str],
    mcp_url: str,
    mcp_url_2: str,
) -> None:
    """The template is built by a container stack; the test's container serves a copy of
    it with the seed added."""
    inner_helpers(pytester, container[0])
    pytester.makeconftest(
        f"""
        from pytest_llamastate import llama_template

        @llama_template("base")
        def base(stack):
            stack.register_toolgroup("mcp::base", mcp_endpoint={mcp_url!r})
            stack.client.files.create(file=("base.txt", b"x"), purpose="assistants")
        """
    )
    pytester.makepyfile(
        f"""
        import pytest
        from inner_helpers import served_toolgroups

        @pytest.mark.llama_template("base")
        @pytest.mark.llama_toolgroups({{"toolgroup_id": "mcp::seeded", "mcp_endpoint": {mcp_url_2!r}}})
        def test_starts_from_both(llama_stack):
            assert served_toolgroups(llama_stack) == ["mcp::base", "mcp::seeded"]
            assert [f.filename for f in llama_stack.client.files.list().data] == ["base.txt"]
        """
    )
    pytester.runpytest(*args).assert_outcomes(passed=1)


def _healthy(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/v1/health", timeout=1) as response:
                return bool(json.load(response).get("status") == "OK")
        except OSError:
            time.sleep(0.2)
    return False


def test_a_kept_store_reopens_with_the_run_line_llamastate_env_prints(
    pytester: pytest.Pytester, container: tuple[Engine, str], args: list[str]
) -> None:
    pytester.makepyfile(
        """
        import pathlib

        def test_writes_a_file(llama_stack):
            pathlib.Path("store").write_text(str(llama_stack.store.path))
            llama_stack.client.files.create(file=("kept.txt", b"hello"), purpose="assistants")
        """
    )
    pytester.runpytest(*args, "--llama-keep-store").assert_outcomes(passed=1)
    store = Path((pytester.path / "store").read_text())
    env = subprocess.run(
        [sys.executable, "-m", "pytest_llamastate", "env", str(store)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(line[2:] for line in env.splitlines() if line.startswith("# "))
    engine, image = container
    assert line.startswith(f"{engine.name} run "), line
    assert image in line, line
    command = shlex.split(line)
    port = command[command.index("--port") + 1]
    name = f"llamastate-reopen-{os.getpid()}"
    run = subprocess.Popen(
        [engine.exe, command[1], "--name", name, *command[2:]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        assert _healthy(url, 120), f"{line} did not become healthy"
        with urllib.request.urlopen(f"{url}/v1/files", timeout=30) as response:
            names = [f["filename"] for f in json.load(response)["data"]]
        assert names == ["kept.txt"]
    finally:
        engine.call("rm", "-f", name)
        run.wait(60)
    shutil.rmtree(store)  # the runner can delete what the containers wrote
    assert not store.exists()


def test_a_run_killed_with_sigkill_leaves_no_container_after_the_next_run(
    pytester: pytest.Pytester, container: tuple[Engine, str], args: list[str]
) -> None:
    pytester.makepyfile(
        test_hold="""
        import pathlib, time

        def test_hold(llama_stack):
            pathlib.Path("started").write_text("yes")
            time.sleep(600)
        """,
        test_next="""
        def test_next(llama_stack):
            assert llama_stack.toolgroups() == []
        """,
    )
    engine = container[0]
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", *args, "test_hold.py"],
        cwd=pytester.path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    owner = f"{OWNER_LABEL}={os.uname().nodename}:{run.pid}"
    try:
        deadline = time.monotonic() + 180
        while not (pytester.path / "started").exists() and run.poll() is None:
            assert time.monotonic() < deadline, "the container did not start"
            time.sleep(0.2)
        assert len(containers(engine, owner)) == 1
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait()
    pytester.runpytest(*args, "test_next.py").assert_outcomes(passed=1)
    assert containers(engine, owner) == []


# -- bad input: one line each ---------------------------------------------------------


def _one_line(result: pytest.RunResult, expected: str) -> None:
    assert result.ret != 0
    result.stderr.fnmatch_lines([f"ERROR: {expected}"])


def test_no_image_given(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--llama-stack-mode=container")
    _one_line(result, "--llama-stack-mode=container needs an image: --llama-stack-image=IMAGE*")


def test_an_image_that_is_not_local(pytester: pytest.Pytester, args: list[str]) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest(*args, "--llama-stack-image=localhost/no-such-image:1")
    _one_line(result, "--llama-stack-image: 'localhost/no-such-image:1' is not among *")


def test_no_engine_installed(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile("def test_x(): pass")
    monkeypatch.setenv("PATH", str(pytester.path))
    result = pytester.runpytest("--llama-stack-mode=container", "--llama-stack-image=any")
    _one_line(result, "container mode needs docker or podman, and neither is on PATH*")


def test_docker_without_a_daemon(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = pytester.path / "bin" / "docker"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock.'"
        " >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest(
        "--llama-stack-mode=container",
        "--llama-stack-image=any",
        "--llama-container-engine=docker",
    )
    _one_line(
        result, "docker is installed but its daemon does not answer (Cannot connect*); start it"
    )


REFUSED_CONF = """
[containers]
default_ulimits = ["nofile=99999999999:99999999999"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""


def test_an_engine_that_refuses_to_start_the_container(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    container: tuple[Engine, str],
    args: list[str],
) -> None:
    """Podman refusing as it does on a host it is not set up for (an rlimit it may not
    set): the test errors with the engine's own last line, not a timeout."""
    if container[0].name != "podman":
        pytest.skip("reproduces a refusal through podman's CONTAINERS_CONF")
    conf = pytester.path / "refusing.conf"
    conf.write_text(REFUSED_CONF)
    monkeypatch.setenv("CONTAINERS_CONF", str(conf))
    pytester.makepyfile("def test_x(llama_stack): pass")
    result = pytester.runpytest(*args)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["podman could not start a container of *: Error: *rlimit* (log: *server.log)"]
    )


def test_a_container_exiting_during_start_up_is_reported_by_its_last_line(
    pytester: pytest.Pytester, args: list[str]
) -> None:
    config = FLAVOR.default_config.read_text().replace(
        "provider_type: remote::model-context-protocol", "provider_type: remote::no-such-thing"
    )
    pytester.path.joinpath("broken.yaml").write_text(config)
    pytester.makepyfile("def test_x(llama_stack): pass")
    result = pytester.runpytest(*args, "--llama-stack-config=broken.yaml")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "the container of * exited with code * during start-up: "
            "*remote::no-such-thing* (log: *server.log)"
        ]
    )
    assert "Traceback" not in "\n".join(line for line in result.outlines if line.startswith("E "))
