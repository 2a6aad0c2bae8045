"""The container way: the team's distribution image serving the test's own store.

A server as in server mode (same port claim, health check, client, log in the store,
same registry edits), except that the process is ``docker run`` / ``podman run`` of an
image with the store mounted where the image keeps its state. The engine's client runs
in the foreground, so the container's output is the store's log and its exit is seen
at once; ``--rm`` removes the container when it stops, and labels let the next run
remove one whose pytest was killed before it could stop it.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import ClassVar

from ..state.store import MARKER_NAME, LlamaStore
from .backend import StartSpec
from .engine import Engine, EngineError, find_engine, owner_labels, run_command, shown
from .server import ExecChild, ServerBackend, failure_line, mark_start

__all__ = ["IMAGE_CONFIG", "ContainerBackend", "ContainerRuntime"]

#: ``--llama-stack-config=image:PATH``: the run config is the image's own file at PATH.
IMAGE_CONFIG = "image:"

#: ``docker run`` / ``podman run`` exit codes of their own, not the stack's: the engine
#: failed (125), or its runtime could not run the command (126: refused, 127: not found).
_ENGINE_CODES = (125, 126, 127)


@dataclass(frozen=True)
class ContainerRuntime:
    """What container mode runs: an engine and a local image."""

    engine: Engine
    image: str
    #: Whether each store is handed back to the runner after its container stops.
    hand_back: bool = False

    @classmethod
    def checked(cls, engine: str, image: str) -> ContainerRuntime:
        """The engine chosen (``auto``, ``docker``, ``podman``) with ``image`` among its
        local images; :class:`EngineError` says what is missing. Once per session (and
        xdist worker), before any test."""
        if not image:
            raise EngineError(
                "--llama-stack-mode=container needs an image: --llama-stack-image=IMAGE "
                "(ini llama_stack_image)"
            )
        found = find_engine(engine)
        found.check_image(image)
        found.prune()  # what runs killed before they could stop their containers left
        return cls(found, image, found.writes_as_host_root())

    def config_file(self, path: str, folder: Path) -> Path:
        """The run config ``path`` of the image (``--llama-stack-config=image:PATH``),
        copied into ``folder`` once: from there it is a config like any other, checked,
        copied into each store and mounted with it. Named after the image's id, so a
        rebuilt image is read again; written whole (xdist workers copy it at once)."""
        if not PurePosixPath(path).is_absolute():
            raise EngineError(
                "give the config's absolute path inside the image, "
                f"e.g. {IMAGE_CONFIG}/app/config.yaml"
            )
        image_id = self.engine.call("image", "inspect", "--format", "{{.Id}}", self.image)
        key = hashlib.sha256(f"{image_id.stdout.strip()}:{path}".encode()).hexdigest()[:16]
        target = folder / f"{key}-{PurePosixPath(path).name}"
        if not target.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=folder) as scratch:
                copied = Path(scratch, "config")
                self.engine.copy_out(self.image, path, copied)
                os.replace(copied, target)
        return target

    def __str__(self) -> str:
        return f"{self.engine.name} {self.image}"


class _ContainerChild(ExecChild):
    """The engine's ``run`` in the foreground; stopping it stops and removes the container
    by name."""

    def __init__(
        self, runtime: ContainerRuntime, name: str, command: list[str], url: str, log: Path
    ) -> None:
        self.runtime, self.engine, self.name = runtime, runtime.engine, name
        self.store_path = log.parent
        # The stack's temporary files are the container's, removed with it.
        super().__init__(command, url, log, log.parent, temp=False)

    def stop(self, grace: float = 10.0, wait: bool = True) -> int | None:
        if self.poll() is None:
            if grace > 0:
                self.engine.call("stop", "-t", f"{grace:.0f}", self.name, timeout=grace + 60)
            else:
                self.engine.call("kill", self.name)
        code = super().stop(grace=10.0)  # the client ends with its container
        # ``--rm`` removes the container after the client has gone, so not necessarily
        # before teardown ends: removed here, a test leaves nothing when it is done.
        self.engine.call("rm", "-f", self.name)
        if self.runtime.hand_back:
            self.engine.hand_back(self.runtime.image, self.store_path)
        return code


class ContainerBackend(ServerBackend):
    """``IMAGE`` on the store, over HTTP like a server."""

    mode: ClassVar[str] = "container"

    def __init__(self, runtime: ContainerRuntime) -> None:
        super().__init__("exec")
        self.runtime = runtime

    def _spawn(self, spec: StartSpec, port: int, schema: object = None) -> ExecChild:
        """``schema`` is never given: the stack's process is the image's own."""
        engine, image = self.runtime.engine, self.runtime.image
        name = f"llamastate-{port}-{secrets.token_hex(4)}"
        command = run_command(
            engine,
            image,
            spec.store,
            spec.flavor,
            port,
            config_text=spec.config.text,
            name=name,
            labels=owner_labels(spec.store),
        )
        _record(spec.store, engine, image, spec.flavor.name)
        mark_start(spec.store.log_path, "container", [shown(command)])
        return _ContainerChild(
            self.runtime, name, command, f"http://127.0.0.1:{port}", spec.store.log_path
        )

    def _exited(self, code: int, log: Path) -> str:
        engine, image = self.runtime.engine.name, self.runtime.image
        said = failure_line(log)
        if code in _ENGINE_CODES:
            return f"{engine} could not start a container of {image}: {said}"
        return f"the container of {image} exited with code {code} during start-up: {said}"

    def _grace(self) -> float:
        """A persistent store gets a graceful stop; a test's store is killed (its writes
        are committed as they are made, as in server mode)."""
        assert self._spec is not None
        return 10.0 if self._spec.store.kind == "persistent" else 0.0


def _record(store: LlamaStore, engine: Engine, image: str, flavor: str) -> None:
    """Note in the store's marker what served it, for ``llamastate env``'s run line."""
    marker = LlamaStore.read_marker(store.path)
    wanted = {"engine": engine.name, "image": image, "flavor": flavor}
    if marker.get("container") != wanted:
        marker["container"] = wanted
        (store.path / MARKER_NAME).write_text(json.dumps(marker), encoding="utf-8")
