"""What every way of running a stack provides, and the errors all of them raise.

A test reads the same whichever way its stack runs; so the handle (``LlamaStack``) does
what all ways share once, and a :class:`Backend` does the rest. A new way to run a stack
is one new module beside ``library`` and ``server`` implementing this protocol.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from ..releases import FLAVORS, Flavor
from ..state import environ
from ..state.registry import RegistryFormat, ToolgroupRecord, installed_format
from ..state.seeds import ToolgroupSeed
from ..state.stackconfig import StackConfig
from ..state.store import LlamaStore
from .recording import Recording

__all__ = ["Backend", "StackError", "StackNotInstalledError", "StartSpec"]

#: Variables that change what a stack does to its state (the request recorder); unset
#: while one starts, unless ``--llama-inference`` chose a mode (``recording``).
UNSET_WHILE_STARTING = tuple(flavor.inference_mode_var for flavor in FLAVORS)


class StackError(RuntimeError):
    """A stack could not start, stop or do what was asked; the message says why."""


class StackNotInstalledError(StackError):
    """Neither llama-stack nor ogx is importable."""


@dataclass(frozen=True)
class StartSpec:
    """Everything a backend needs to start a stack: decided once by the handle."""

    store: LlamaStore
    config: StackConfig
    #: The config as written into the store (``stack.yaml``): what the stack loads.
    config_path: Path
    flavor: Flavor
    start_timeout: float
    label: str
    #: The request recorder's settings when it is on (``--llama-inference``).
    recording: Recording | None = None
    #: How a server starts (``fork``/``exec``); ``None`` for a library stack.
    server: Literal["fork", "exec"] | None = None

    def environment(self) -> AbstractContextManager[None]:
        """The process environment a stack starts in: every state root in the store, and
        the recorder's variables when it is on."""
        on = self.recording.environment(server=self.server) if self.recording else {}
        unset = [name for name in UNSET_WHILE_STARTING if name not in on]
        return environ.patched({**self.store.env, **on}, unset)

    def registry_format(self) -> RegistryFormat:
        """How this stack keys its registry rows (OGX: under the config's namespace)."""
        try:
            return installed_format(
                self.flavor,
                self.config.metadata_namespace,
                prefixed=self.store.tables.prefixes_keys,
            )
        except ModuleNotFoundError as exc:
            raise StackNotInstalledError(str(exc)) from None


class Backend(Protocol):
    """One way of running a stack on a store."""

    mode: ClassVar[str]
    #: The flavor's client once started (``None`` while stopped).
    client: Any
    #: ``http://127.0.0.1:<port>`` for a server, ``None`` in-process.
    base_url: str | None

    def start(self, spec: StartSpec) -> None:
        """Start on ``spec.store`` with the environment already pointing at it."""

    def stop(self) -> None:
        """Stop; safe to call twice. What survives a restart (a port) stays held."""

    def release(self, wait: bool = True) -> None:
        """Give back what was held across restarts: the handle is done for good.
        ``wait=False``: a process killed at once is not waited for (see ``LlamaStack.close``)."""

    def toolgroups(self) -> list[ToolgroupRecord]: ...

    def register(self, seed: ToolgroupSeed) -> None: ...

    def unregister(self, toolgroup_id: str) -> None: ...

    def tools(self, toolgroup_id: str | None) -> list[dict[str, Any]]: ...

    def invoke_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """Call a tool through the stack's tool runtime; its ``ToolInvocationResult``
        as plain data (``content``, ``error_code``, ``error_message``)."""
