"""Container mode against real containers: the suite's image (tests/container_image.py,
built once per machine) on the installed engine, with inner pytest runs. Bad input is
tests/test_container_errors.py.

Skipped, saying why, only where no engine can run a container. Every container start
costs seconds, so each inner run checks as much as one set of starts can show.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from container_helpers import FLAVOR, containers, inner_helpers, reopen, run_line

from pytest_llamastate.stack.engine import OWNER_LABEL, Engine


@pytest.mark.both_backends
def test_restart_keeps_the_store_and_the_next_test_starts_empty(
    pytester: pytest.Pytester,
    container: tuple[Engine, str],
    container_args: list[str],
    mcp_url: str,
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
            raise AssertionError("fail on purpose: the container's log is in the report")
        """
    )
    result = pytester.runpytest(*container_args)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            f"*stack mode=container ({container[0].name} {container[1]})*",
            "E * AssertionError: fail on purpose*",
            "*- llama stack server log (*server.log) -*",
            "*Uvicorn running on http://*",
        ]
    )
    # every container was removed at its test's teardown
    owner = f"{OWNER_LABEL}={os.uname().nodename}:{os.getpid()}"
    assert containers(container[0], owner) == []


def test_a_persistent_store_is_served_again_by_the_next_run(
    pytester: pytest.Pytester,
    container: tuple[Engine, str],
    container_args: list[str],
    mcp_url: str,
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
            pytester.runpytest(*container_args, persist).assert_outcomes(passed=1)
        finally:
            del os.environ["RUN"]


@pytest.fixture
def image_with_a_config(container: tuple[Engine, str], pytester: pytest.Pytester) -> Iterator[str]:
    """The suite's image with a run config of its own at /app/config.yaml, as a team's
    distribution image has one (built on top of it: a copy, seconds)."""
    engine, image = container
    context = pytester.mkdir("image-context")
    text = "# the image's own config\n" + FLAVOR.default_config.read_text(encoding="utf-8")
    (context / "config.yaml").write_text(text, encoding="utf-8")
    (context / "Containerfile").write_text(f"FROM {image}\nCOPY config.yaml /app/config.yaml\n")
    name = f"localhost/llamastate-test-config:{os.getpid()}"
    # -f: docker's builder looks for a Dockerfile, podman's for either
    build = [engine.exe, "build", "-q", "-f", str(context / "Containerfile"), "-t", name]
    subprocess.run([*build, str(context)], check=True)
    yield name
    engine.call("rmi", "-f", name)


def test_the_image_s_own_run_config(
    pytester: pytest.Pytester, container_args: list[str], image_with_a_config: str
) -> None:
    """``--llama-stack-config=image:PATH``: the config is read from the image, then served
    from the store like any other (so keep and ``llamastate env`` reopen it too)."""
    pytester.makepyfile(
        """
        def test_served_from_the_image_s_config(llama_stack):
            text = llama_stack.store.config_path.read_text()
            assert text.startswith("# the image's own config"), text[:80]
            assert llama_stack.client.files.list().data == []
        """
    )
    result = pytester.runpytest(
        *container_args,
        f"--llama-stack-image={image_with_a_config}",
        "--llama-stack-config=image:/app/config.yaml",
    )
    result.assert_outcomes(passed=1)


def test_seeds_and_a_state_template_start_the_container_s_store(
    pytester: pytest.Pytester,
    container: tuple[Engine, str],
    container_args: list[str],
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
    pytester.runpytest(*container_args).assert_outcomes(passed=1)


def test_a_kept_store_reopens_with_the_run_line_llamastate_env_prints(
    pytester: pytest.Pytester, container: tuple[Engine, str], container_args: list[str]
) -> None:
    pytester.makepyfile(
        """
        import pathlib

        def test_writes_a_file(llama_stack):
            pathlib.Path("store").write_text(str(llama_stack.store.path))
            llama_stack.client.files.create(file=("kept.txt", b"hello"), purpose="assistants")
        """
    )
    pytester.runpytest(*container_args, "--llama-keep-store").assert_outcomes(passed=1)
    store = Path((pytester.path / "store").read_text())
    line = run_line(store)
    engine, image = container
    assert line.startswith(f"{engine.name} run "), line
    assert f" {image} " in line, line
    assert reopen(engine, line) == ["kept.txt"]
    shutil.rmtree(store)  # the runner can delete what the containers wrote
    assert not store.exists()


@pytest.mark.flavor_neutral
def test_a_run_killed_with_sigkill_leaves_no_container_after_the_next_run(
    pytester: pytest.Pytester, container: tuple[Engine, str], container_args: list[str]
) -> None:
    pytester.makepyfile(
        test_hold="""
        import pathlib, time

        def test_hold(llama_stack):
            pathlib.Path("started").write_text(str(llama_stack.store.path))
            time.sleep(600)
        """,
        test_next="""
        def test_next(llama_stack):
            assert llama_stack.toolgroups() == []
        """,
    )
    engine = container[0]
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", *container_args, "test_hold.py"],
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
    pytester.runpytest(*container_args, "test_next.py").assert_outcomes(passed=1)
    assert containers(engine, owner) == []
    # what the killed run's container wrote is the runner's (handed back where Docker
    # wrote it as the host's root): it can be deleted
    store = Path((pytester.path / "started").read_text())
    assert {p.stat().st_uid for p in [store, *store.rglob("*")]} == {os.getuid()}
    shutil.rmtree(store)
