"""Docker or Podman: finding one that runs containers, and the lines it is given.

Container mode runs the team's distribution image as it runs in CI, so the engine is
whatever is installed: ``docker`` when its daemon answers, else ``podman``. Every
container the plugin starts carries labels naming the process that owns it (host and
pid), so a run killed with SIGKILL (no teardown, no atexit) leaves nothing behind for
long: the next run removes containers whose owner is gone. The ``run`` line is built in
one place, for the backend and for ``llamastate env`` (which prints it to reopen a kept
store by hand).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from ..process.lifetime import alive
from ..releases import Flavor, detect
from ..state.stackconfig import env_references
from ..state.store import LlamaStore, state_env
from .backend import StackError

__all__ = [
    "ENGINE_CHOICES",
    "OWNER_LABEL",
    "STORE_LABEL",
    "Engine",
    "EngineChoice",
    "EngineError",
    "container_env",
    "container_run_line",
    "find_engine",
    "run_command",
    "state_mount",
]

EngineChoice = Literal["auto", "docker", "podman"]
ENGINE_CHOICES: tuple[EngineChoice, ...] = ("auto", "docker", "podman")
#: ``host:pid`` of the process that started a container (and removes it at teardown).
OWNER_LABEL = "io.github.pytest-llamastate.owner"
#: The store a container serves, for ``podman ps`` readers.
STORE_LABEL = "io.github.pytest-llamastate.store"
_ENGINE_TIMEOUT = 60.0
#: How podman ("image not known") and docker ("No such image") say an image is not local.
_MISSING = re.compile(r"image not known|no such (image|object)", re.IGNORECASE)
#: How podman and docker say a path is not in a container.
_NOT_FOUND = re.compile(r"could not be found|could not find|no such file", re.IGNORECASE)


class EngineError(StackError):
    """No engine, or one that cannot do what container mode needs; one line says why."""


def state_mount(flavor: Flavor) -> PurePosixPath:
    """Where a distribution image keeps its state, and so where the store is mounted:
    ``~/.llama`` of its root user (``~/.ogx`` for OGX), the folder the seed's
    ``docker run -v ~/.llama:/root/.llama`` shared between containers."""
    return PurePosixPath("/root") / flavor.home


@dataclass(frozen=True)
class Engine:
    """An installed engine's CLI; every call is one subprocess with a timeout."""

    name: Literal["docker", "podman"]
    exe: str

    def call(
        self, *args: str, timeout: float = _ENGINE_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [self.exe, *args],
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise EngineError(
                f"`{self.name} {args[0]}` did not answer within {timeout:g}s; is {self.name} "
                "working? (try it by hand)"
            ) from None

    def has_image(self, image: str) -> bool:
        return self.call("image", "inspect", image).returncode == 0

    def check_image(self, image: str) -> None:
        """The image must be local: no registry is asked (``--pull=never``). An engine
        that cannot even look is a broken engine, not a missing image."""
        done = self.call("image", "inspect", image)
        if done.returncode == 0:
            return
        said = last_line(done.stderr, f"exit code {done.returncode}")
        if not _MISSING.search(said):
            raise EngineError(f"{self.name} does not work: {said} (`{self.name} info` tells more)")
        raise EngineError(
            f"--llama-stack-image: {image!r} is not among {self.name}'s local images; "
            f"build it or `{self.name} pull {image}` first (container mode never pulls)"
        )

    def copy_out(self, image: str, path: str, dest: Path) -> None:
        """Copy the file ``path`` of ``image`` to ``dest``, without running the image: a
        container is created (never started), copied from and removed."""
        created = self.call("create", "--pull=never", "--entrypoint=true", image)
        if created.returncode != 0:
            said = last_line(created.stderr, f"exit code {created.returncode}")
            raise EngineError(f"{self.name} could not create a container of {image}: {said}")
        cid = created.stdout.strip().splitlines()[-1]
        try:
            copied = self.call("cp", f"{cid}:{path}", str(dest))
        finally:
            self.call("rm", "-f", cid)
        if copied.returncode != 0 and not _NOT_FOUND.search(copied.stderr):
            said = last_line(copied.stderr, f"exit code {copied.returncode}")
            raise EngineError(f"{self.name} could not copy {path} out of {image}: {said}")
        if not dest.is_file():
            raise EngineError(f"{image} has no file {path}")

    def writes_as_host_root(self) -> bool:
        """Whether what root writes inside a container is owned by the host's root, which
        a runner that is not root cannot delete: Docker's daemon runs as root (unless
        rootless). Rootless Podman maps root inside to the runner, and a root runner can
        delete anything. The container keeps running as the image says (an image's
        ``/root`` is not the runner's to enter): its files are handed back instead."""
        if self.name != "docker" or os.getuid() == 0:
            return False
        info = self.call("info", "--format", "{{json .SecurityOptions}}")
        return "rootless" not in info.stdout

    def hand_back(self, image: str, folder: Path) -> None:
        """Give the runner what a container wrote in ``folder`` (a store), with a
        throwaway container of the same image."""
        done = self.call(
            "run", "--rm", "--pull=never", "--network=none", "-v", f"{folder}:/store",
            "--entrypoint=chown", image, "-R", f"{os.getuid()}:{os.getgid()}", "/store",
        )  # fmt: skip
        if done.returncode != 0:
            said = last_line(done.stderr, f"exit code {done.returncode}")
            raise EngineError(f"could not give {folder} back to uid {os.getuid()}: {said}")

    def orphans(self) -> list[tuple[str, str, Path]]:
        """Containers of this host whose owning process is gone (a pytest killed hard):
        id, image and the store each served."""
        # One label's value: podman's template has the map, docker's a method.
        label = "index .Labels" if self.name == "podman" else ".Label"
        fields = ["{{.ID}}", "{{.Image}}", f'{{{{{label} "{OWNER_LABEL}"}}}}']
        listed = self.call(
            "ps", "-a", "--filter", f"label={OWNER_LABEL}",
            "--format", "\t".join([*fields, f'{{{{{label} "{STORE_LABEL}"}}}}']),
        )  # fmt: skip
        host, dead = socket.gethostname(), []
        for line in listed.stdout.splitlines():
            cid, image, owner, store = [*line.split("\t", 3), "", "", ""][:4]
            owner_host, _, pid = owner.strip().rpartition(":")
            if owner_host == host and pid.isdigit() and not alive(int(pid)):
                dead.append((cid, image, Path(store)))
        return dead

    def prune(self) -> int:
        """Remove the orphans, and give the runner back what they wrote in its stores
        (their run was killed before it could); how many there were."""
        if not (dead := self.orphans()):
            return 0
        self.call("rm", "-f", *(cid for cid, _, _ in dead))
        if self.writes_as_host_root():
            for _, image, store in dead:
                # only the runner's own stores: another user's killed run stays theirs
                with contextlib.suppress(OSError, EngineError):
                    if store.is_absolute() and store.stat().st_uid == os.getuid():
                        self.hand_back(image, store)
        return len(dead)


def last_line(text: str, default: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else default


def _docker_answers(exe: str) -> tuple[bool, str]:
    try:
        done = subprocess.run(
            [exe, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, "`docker version` did not answer within 15s"
    said = last_line(done.stderr, "no answer")
    return done.returncode == 0, said


def find_engine(choice: str = "auto") -> Engine:
    """``docker`` when installed and its daemon answers, else ``podman``; or the one forced."""
    docker, podman = shutil.which("docker"), shutil.which("podman")
    if choice in ("auto", "docker") and docker:
        answers, said = _docker_answers(docker)
        if answers:
            return Engine("docker", docker)
        if choice == "docker" or not podman:
            raise EngineError(
                f"docker is installed but its daemon does not answer ({said}); start it"
                + (", or install podman" if choice == "auto" else "")
            )
    if choice == "docker" and not docker:
        raise EngineError(
            "--llama-container-engine=docker: docker is not on PATH; install it or choose podman"
        )
    if podman and choice in ("auto", "podman"):
        return Engine("podman", podman)
    if choice == "podman":
        raise EngineError(
            "--llama-container-engine=podman: podman is not on PATH; install it "
            "(apt-get install podman) or choose docker"
        )
    raise EngineError(
        "container mode needs docker or podman, and neither is on PATH: install one "
        "(apt-get install podman), or use --llama-stack-mode=server"
    )


def container_env(store: LlamaStore, flavor: Flavor, config_text: str) -> dict[str, str | None]:
    """The variables set inside: every state root at the mount, the store's database, and
    (``None``: copied from the host by name) the variables the run config refers to."""
    inside = {**store.env, **state_env(Path(state_mount(flavor)))}
    env: dict[str, str | None] = dict(inside)
    for name in env_references(config_text):
        if name not in inside and name in os.environ:
            env[name] = None
    return env


def run_command(
    engine: Engine,
    image: str,
    store: LlamaStore,
    flavor: Flavor,
    port: int,
    *,
    config_text: str,
    name: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> list[str]:
    """``docker run`` / ``podman run`` of ``image`` serving ``store`` on ``port``: the
    store at the image's state folder, host networking (``127.0.0.1`` is the host's:
    a Postgres store's server and an MCP server on the host are reachable as they are)."""
    mount = state_mount(flavor)
    args: list[str] = [engine.exe, "run", "--rm", "--pull=never", "--network=host"]
    if name:
        args += ["--name", name]
    for key, value in (labels or {}).items():
        args += ["--label", f"{key}={value}"]
    args += ["-v", f"{store.path}:{mount}"]
    for key, env_value in sorted(container_env(store, flavor, config_text).items()):
        args += ["-e", key if env_value is None else f"{key}={env_value}"]
    # The image's own entrypoint (a distribution image has one) is replaced by the CLI.
    cli, *inner = flavor.run_command(Path(mount / store.config_path.name), port, flavor.cli)
    return [*args, f"--entrypoint={cli}", image, *inner]


def container_run_line(store: LlamaStore, served: Mapping[str, Any], port: int) -> str:
    """The run line that serves ``store`` again as the container recorded in its marker
    (``served``: engine, image, flavor) did: what ``llamastate env`` prints."""
    name = str(served.get("engine"))
    if name not in ("docker", "podman"):
        raise EngineError(f"unknown container engine {name!r} in the store's marker")
    engine = Engine("docker" if name == "docker" else "podman", name)
    flavor = detect(str(served.get("flavor", "llama-stack")))
    text = store.config_path.read_text(encoding="utf-8")
    return shown(run_command(engine, str(served["image"]), store, flavor, port, config_text=text))


def owner_labels(store: LlamaStore) -> dict[str, str]:
    return {OWNER_LABEL: f"{socket.gethostname()}:{os.getpid()}", STORE_LABEL: str(store.path)}


def shown(command: Sequence[str]) -> str:
    """A run line for a person: the engine by name, not by path."""
    return shlex.join([Path(command[0]).name, *command[1:]])
