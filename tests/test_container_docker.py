"""Container mode through the ``docker`` CLI: its own ``ps`` templates, error lines and
``run`` line, which differ from podman's.

Where a Docker daemon answers, against it. Where only podman runs (this repository's CI
machine), against podman's Docker-compatible API (``podman system service`` on a socket
of the test's own, given to the docker CLI by ``DOCKER_HOST``): the docker CLI is real,
the daemon behind it is podman's. Skipped, saying why, without the docker CLI.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from container_helpers import containers, inner_helpers, reopen, run_line

from pytest_llamastate.stack.engine import OWNER_LABEL, STORE_LABEL, Engine, find_engine

#: What differs here is the engine's CLI, not the stack: the podman suite runs on both.
pytestmark = pytest.mark.flavor_neutral


@pytest.fixture(scope="module")
def docker_host(container: tuple[Engine, str]) -> Iterator[str]:
    """``DOCKER_HOST`` for a docker CLI whose daemon runs the suite's image."""
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI is not installed (apt-get install docker.io)")
    engine = container[0]
    if engine.name == "docker":
        yield os.environ.get("DOCKER_HOST", "")
        return
    folder = Path(tempfile.mkdtemp(prefix="docker-api-"))
    host = f"unix://{folder}/docker.sock"
    service = subprocess.Popen(
        [engine.exe, "system", "service", "--time=0", host],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while _answers(host) is False:
            assert service.poll() is None, "podman system service exited"
            assert time.monotonic() < deadline, "podman's Docker API did not answer"
            time.sleep(0.2)
        yield host
    finally:
        service.terminate()
        service.wait(30)
        shutil.rmtree(folder, ignore_errors=True)


def _answers(host: str) -> bool:
    done = subprocess.run(
        ["docker", "version"], env={**os.environ, "DOCKER_HOST": host}, capture_output=True
    )
    return done.returncode == 0


def _dead_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def test_docker_serves_the_seed_scenario_prunes_orphans_and_reopens_a_kept_store(
    pytester: pytest.Pytester,
    container: tuple[Engine, str],
    container_args: list[str],
    docker_host: str,
    monkeypatch: pytest.MonkeyPatch,
    mcp_url: str,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    docker, image = find_engine("auto"), container[1]
    assert docker.name == "docker"  # auto: docker, its daemon answering
    # what a pytest killed with SIGKILL left: a container whose owner process is gone
    orphan = f"{OWNER_LABEL}={socket.gethostname()}:{_dead_pid()}"
    started = docker.call(
        "run", "-d", "--pull=never", "--network=host", "--label", orphan,
        "--entrypoint=sleep", image, "600",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    inner_helpers(pytester, docker)
    pytester.makepyfile(
        f"""
        import pathlib
        from inner_helpers import container_of, served_toolgroups

        def test_register_restart_and_keep(llama_stack):
            pathlib.Path("store").write_text(str(llama_stack.store.path))
            llama_stack.register_toolgroup("mcp::docker", mcp_endpoint={mcp_url!r})
            first = container_of(llama_stack)
            llama_stack.restart()
            assert container_of(llama_stack) != first
            assert served_toolgroups(llama_stack) == ["mcp::docker"]
            llama_stack.client.files.create(file=("d.txt", b"hi"), purpose="assistants")
        """
    )
    auto = [a for a in container_args if not a.startswith("--llama-container-engine")]
    result = pytester.runpytest(*auto, "--llama-keep-store")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*stack mode=container (docker {image})*"])
    assert containers(docker, orphan) == []
    assert containers(docker, f"{OWNER_LABEL}={socket.gethostname()}:{os.getpid()}") == []
    store = Path((pytester.path / "store").read_text())
    line = run_line(store)
    assert line.startswith("docker run "), line
    assert reopen(docker, line) == ["d.txt"]
    shutil.rmtree(store)


def test_a_runner_that_is_not_root_gets_the_store_back(
    container: tuple[Engine, str],
    docker_host: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Docker's root inside is the host's root: what the stack writes in the store would
    be root's, so a runner that is not root gets it back once the container stops, or,
    when its run was killed before it could, when the next run removes the container. Run
    as root, the runner is uid 1000 by pretence; the containers are real either way."""
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    docker, image = find_engine("docker"), container[1]
    uid, gid = (1000, 1000) if os.getuid() == 0 else (os.getuid(), os.getgid())
    stopped, orphaned = tmp_path / "stopped", tmp_path / "orphaned"
    for store in (stopped, orphaned):
        store.mkdir()
        os.chown(store, uid, gid)  # the plugin makes each store as the runner
        wrote = docker.call(
            "run", "--rm", "--pull=never", "-v", f"{store}:/store", "--entrypoint=sh", image,
            "-c", "mkdir /store/files && echo x > /store/files/a",
        )  # fmt: skip
        assert wrote.returncode == 0, wrote.stderr
        assert (store / "files" / "a").stat().st_uid == 0
    # what a pytest killed with SIGKILL left: its container, still serving its store
    owner = f"{OWNER_LABEL}={socket.gethostname()}:{_dead_pid()}"
    left = docker.call(
        "run", "-d", "--pull=never", "--network=none", "--label", owner,
        "--label", f"{STORE_LABEL}={orphaned}", "-v", f"{orphaned}:/store",
        "--entrypoint=sleep", image, "600",
    )  # fmt: skip
    assert left.returncode == 0, left.stderr
    if os.getuid() == 0:
        monkeypatch.setattr(os, "getuid", lambda: uid)
        monkeypatch.setattr(os, "getgid", lambda: gid)
    assert docker.writes_as_host_root()
    docker.hand_back(image, stopped)
    assert docker.prune() >= 1  # the next run's start
    assert containers(docker, owner) == []
    for store in (stopped, orphaned):
        owners = {(p.stat().st_uid, p.stat().st_gid) for p in [store, *store.rglob("*")]}
        assert owners == {(uid, gid)}, store
