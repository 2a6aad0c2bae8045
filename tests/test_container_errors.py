"""Container mode's bad input: each stops the run (or the test) with one line naming it.

The engine and image checks run before any test; the refusals and a container exiting
during start-up are real containers of the suite's image (tests/container_image.py).
"""

from __future__ import annotations

import pytest

from pytest_llamastate.releases import detect
from pytest_llamastate.stack.engine import Engine

FLAVOR = detect()
# -- bad input: one line each ---------------------------------------------------------


def _one_line(result: pytest.RunResult, expected: str) -> None:
    assert result.ret != 0
    result.stderr.fnmatch_lines([f"ERROR: {expected}"])


def test_no_image_given(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--llama-stack-mode=container")
    _one_line(result, "--llama-stack-mode=container needs an image: --llama-stack-image=IMAGE*")


def test_an_image_that_is_not_local(pytester: pytest.Pytester, container_args: list[str]) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest(*container_args, "--llama-stack-image=localhost/no-such-image:1")
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
    container_args: list[str],
) -> None:
    """Podman refusing as it does on a host it is not set up for (an rlimit it may not
    set): the test errors with the engine's own last line, not a timeout."""
    if container[0].name != "podman":
        pytest.skip("reproduces a refusal through podman's CONTAINERS_CONF")
    conf = pytester.path / "refusing.conf"
    conf.write_text(REFUSED_CONF)
    monkeypatch.setenv("CONTAINERS_CONF", str(conf))
    pytester.makepyfile("def test_x(llama_stack): pass")
    result = pytester.runpytest(*container_args)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["podman could not start a container of *: Error: *rlimit* (log: *server.log)"]
    )


def test_a_container_exiting_during_start_up_is_reported_by_its_last_line(
    pytester: pytest.Pytester, container_args: list[str]
) -> None:
    config = FLAVOR.default_config.read_text().replace(
        "provider_type: remote::model-context-protocol", "provider_type: remote::no-such-thing"
    )
    pytester.path.joinpath("broken.yaml").write_text(config)
    pytester.makepyfile("def test_x(llama_stack): pass")
    result = pytester.runpytest(*container_args, "--llama-stack-config=broken.yaml")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "the container of * exited with code * during start-up: "
            "*remote::no-such-thing* (log: *server.log)"
        ]
    )
    assert "Traceback" not in "\n".join(line for line in result.outlines if line.startswith("E "))


def test_the_image_s_config_in_another_mode(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--llama-stack-config=image:/app/config.yaml")
    _one_line(
        result,
        "--llama-stack-config=image:/app/config.yaml: the image's own config needs "
        "--llama-stack-mode=container; *",
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/app/none.yaml", "* has no file /app/none.yaml"),
        ("app/config.yaml", "give the config's absolute path inside the image, *"),
        ("/etc", "* has no file /etc"),
    ],
)
def test_an_image_config_that_is_not_there(
    pytester: pytest.Pytester, container_args: list[str], path: str, expected: str
) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest(*container_args, f"--llama-stack-config=image:{path}")
    _one_line(result, f"--llama-stack-config=image:{path}: {expected}")
