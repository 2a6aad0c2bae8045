"""State templates: a function builds state on a real stack once, every test gets a copy.

Prompts, conversations with items, uploaded files: state only the stack's own API writes
correctly (several tables, files on disk, registry rows at once). Building it through
the API in every test costs hundreds of milliseconds; sharing one stack loses isolation.
So, like pytest-postgresql's template databases and pytest-django's ``--reuse-db``, a
builder runs once per run and config (once across xdist workers, under a file lock) on a
stack the plugin starts and stops, the store it wrote is sealed (``templates.seal``), and
each test's store starts as a copy. With ``reuse`` the built template stays in pytest's
cache folder for the next run, keyed by a fingerprint of what made it, and is rebuilt
when one part changes, saying which.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, overload

from filelock import FileLock

from ..releases import installed_versions
from ..state import live
from ..state.guard import HomeGuard
from ..state.leaks import LlamaStoreLeakWarning
from ..state.seed_rows import IN_DATABASE, BuiltTemplate, TemplateCache, TemplateSealError, seal
from ..state.seeds import SeedError, ToolgroupSeed, parse_seeds, seed_set_key
from ..state.stackconfig import StackConfig
from ..state.store import MARKER_NAME, LlamaStore, is_store, read_json, remove_store
from ..storage.base import Storage
from ..storage.sqlite_backend import SqliteStorage
from . import LlamaStack, LlamaStackFactory, StackError

__all__ = [
    "Builder",
    "LlamaTemplate",
    "StateTemplates",
    "TemplateError",
    "TemplateEvent",
    "find_templates",
    "llama_template",
    "pick",
]

Builder = Callable[[LlamaStack], object]


class TemplateError(TypeError):
    """A template that cannot be declared, found or built; the message says which and why."""


def _where(fn: Callable[..., object]) -> str:
    code = getattr(fn, "__code__", None)
    return f"{code.co_filename}:{code.co_firstlineno}" if code else repr(fn)


def _check_builder(fn: object, name: str) -> Builder:
    """A builder is a plain function taking the stack: checked where it is declared."""
    if not inspect.isfunction(fn):
        raise TemplateError(
            f"@llama_template({name!r}) decorates {fn!r}, which is not a function; write "
            "def builder(stack): ..."
        )
    if inspect.iscoroutinefunction(fn) or inspect.isgeneratorfunction(fn):
        raise TemplateError(
            f"template {name!r} ({_where(fn)}): the builder must be a plain function "
            "(not async, not a generator); it runs once, on a started stack"
        )
    try:
        inspect.signature(fn).bind(object())
    except TypeError:
        raise TemplateError(
            f"template {name!r} ({_where(fn)}): def {fn.__name__}{inspect.signature(fn)} "
            "takes the wrong arguments; a builder takes one, the LlamaStack: "
            f"def {fn.__name__}(stack): ..."
        ) from None
    return fn


@dataclass(frozen=True)
class LlamaTemplate:
    """A declared template: its name, its builder, and the seeds its store starts with."""

    name: str
    builder: Builder
    seeds: tuple[ToolgroupSeed, ...] = ()

    def __call__(self, stack: LlamaStack) -> object:
        return self.builder(stack)

    @property
    def where(self) -> str:
        return _where(self.builder)

    def source_hash(self) -> str:
        """The builder's source (its code when the source is not on disk)."""
        try:
            material = inspect.getsource(self.builder)
        except (OSError, TypeError):
            code = self.builder.__code__
            material = repr((code.co_code, code.co_consts, code.co_names))
        return _hash(material)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@overload
def llama_template(name: Builder, /) -> LlamaTemplate: ...
@overload
def llama_template(
    name: str | None = None, /, *, seeds: Iterable[object] = ()
) -> Callable[[Builder], LlamaTemplate]: ...
def llama_template(
    name: Builder | str | None = None, /, *, seeds: Iterable[object] = ()
) -> LlamaTemplate | Callable[[Builder], LlamaTemplate]:
    """Declare a state template: ``@llama_template`` or ``@llama_template("crm")``.

    The decorated ``def crm(stack): ...`` is called once per run with a ``LlamaStack`` on
    the template's own store; ``seeds`` are in that store before it runs. Tests ask for it
    with ``@pytest.mark.llama_template("crm")``. Declare it in a ``conftest.py`` (or a
    test module, or a plugin): the plugin finds it there at collection.
    """
    if callable(name):
        return llama_template(None)(name)
    if name is not None and (not isinstance(name, str) or not re.fullmatch(r"[\w.:-]+", name)):
        raise TemplateError(
            f"@llama_template({name!r}): a template name is a non-empty string of letters, "
            "digits, '_', '-', '.' and ':'"
        )
    try:
        parsed = parse_seeds(seeds, f"@llama_template({name!r}) seeds")
    except SeedError as exc:
        raise TemplateError(str(exc)) from None
    plain = tuple(s for s in parsed if isinstance(s, ToolgroupSeed))
    if len(plain) < len(parsed):  # a built template outlives the session's MCP servers
        raise TemplateError(
            f"@llama_template({name!r}): mcp_tools seeds cannot be part of a template; "
            "put them on the tests (they are layered on top of the template)"
        )

    def declare(fn: Builder) -> LlamaTemplate:
        chosen = str(name or getattr(fn, "__name__", ""))
        return LlamaTemplate(chosen, _check_builder(fn, chosen), plain)

    return declare


def find_templates(namespaces: Iterable[Mapping[str, object]]) -> dict[str, LlamaTemplate]:
    """Every template declared in these module namespaces, by name.

    One definition found twice (imported into another module, a conftest imported under
    two names) is one template; two definitions with one name are refused.
    """
    found: dict[str, LlamaTemplate] = {}
    for namespace in namespaces:
        for value in list(namespace.values()):
            if not isinstance(value, LlamaTemplate):
                continue
            known = found.setdefault(value.name, value)
            if known is not value and known.where != value.where:
                raise TemplateError(
                    f"two templates are named {value.name!r}: {known.where} and {value.where}; "
                    "rename one (@llama_template('other-name'))"
                )
    return found


def pick(
    known: Mapping[str, LlamaTemplate], name: object, nodeid: str, *, persistent: bool
) -> LlamaTemplate:
    """The template a test's ``llama_template(name)`` marker names."""
    where = f"{nodeid}: @pytest.mark.llama_template({name!r})"
    if not isinstance(name, str) or name not in known:
        names = ", ".join(sorted(known)) or "none (declare one with @llama_template)"
        raise TemplateError(f"{where}: no template of that name; known: {names}")
    if persistent:
        raise TemplateError(f"{where}: a persistent store cannot start from a template")
    return known[name]


@dataclass(frozen=True)
class TemplateEvent:
    """How a test's process got a template, for the terminal summary."""

    name: str
    path: str
    #: ``built`` (first build), ``rebuilt`` (a part changed), ``reused`` (already built).
    status: str
    reason: str = ""
    seconds: float = 0.0


def _parts(template: LlamaTemplate, config: StackConfig) -> dict[str, str]:
    """What a built template depends on; a change in one means it must be rebuilt."""
    return {
        "builder source": template.source_hash(),
        "config": _hash(config.text),
        "seeds": seed_set_key(template.seeds),
        "installed versions": installed_versions(),
    }


@dataclass
class StateTemplates:
    """Builds templates under ``root`` and hands out the built ones.

    ``root`` is per run (shared with the xdist workers) or, with ``reuse``, the cache
    folder. ``guard`` watches the real homes while a builder runs (``guard_warns``: warn
    instead of failing the build).
    """

    root: Path
    stacks: LlamaStackFactory
    seed_templates: TemplateCache
    run_id: str
    reuse: bool = False
    guard: HomeGuard | None = None
    guard_warns: bool = False
    #: Where a template's store keeps its tables (default: SQLite files in its folder).
    storage: Storage = None  # type: ignore[assignment]
    _built: dict[Path, BuiltTemplate] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.storage is None:
            self.storage = SqliteStorage(self.seed_templates.root)

    def folder(self, template: LlamaTemplate, config: StackConfig) -> Path:
        """One folder per template, flavor and config file."""
        safe = re.sub(r"[^\w.-]", "_", template.name)[:40]
        backend = self.storage.name
        key = _hash(f"{template.name}|{self.stacks.flavor.name}|{config.path}|{backend}")[:8]
        return self.root / f"{safe}-{key}"

    def get(
        self, template: LlamaTemplate, config: StackConfig, nodeid: str
    ) -> tuple[BuiltTemplate, TemplateEvent | None]:
        """The built template, building it first if needed; the event on first use here.

        A build that failed in this run (in any worker) fails every later use with one
        line naming the test whose error shows the builder's traceback.
        """
        folder = self.folder(template, config)
        if folder in self._built:
            return self._built[folder], None
        failed = folder.with_name(folder.name + ".failed")
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder.with_name(folder.name + ".lock"))):
            record = read_json(failed)
            if record.get("run") == self.run_id:
                raise TemplateError(
                    f"template {template.name!r} failed to build earlier in this run; the "
                    f"error of {record.get('nodeid')} shows why"
                )
            parts = _parts(template, config)
            marker = LlamaStore.read_marker(folder) if is_store(folder) else {}
            if marker.get("complete") and marker.get("fingerprint") == parts:
                event = TemplateEvent(template.name, str(folder), "reused")
            else:
                event = self._rebuild(template, config, folder, parts, marker, failed, nodeid)
        built = BuiltTemplate.from_marker(folder, LlamaStore.read_marker(folder))
        self._built[folder] = built
        return built, event

    def _rebuild(
        self,
        template: LlamaTemplate,
        config: StackConfig,
        folder: Path,
        parts: dict[str, str],
        marker: Mapping[str, Any],
        failed: Path,
        nodeid: str,
    ) -> TemplateEvent:
        old = marker.get("fingerprint") if marker.get("complete") else None
        if isinstance(old, dict):
            changed = [p for p in parts if old.get(p) != parts[p]]
            status, reason = "rebuilt", ", ".join(changed) + " changed"
        else:
            status, reason = "built", "first build" if self.reuse else ""
        if folder.exists() and not remove_store(folder):
            raise TemplateError(
                f"{folder} exists but is not a pytest-llamastate store; move it away "
                "(it is never deleted for you)"
            )
        start = time.perf_counter()
        try:
            references = self._build(template, config, folder)
        except TemplateError as exc:
            failed.write_text(json.dumps({"run": self.run_id, "nodeid": nodeid, "error": str(exc)}))
            raise
        seconds = time.perf_counter() - start
        fields = {
            "fingerprint": parts,
            "fingerprint_id": _hash(json.dumps(parts, sort_keys=True)),
            "references": [list(r) for r in references],
            "build_seconds": round(seconds, 3),
            "complete": True,
        }
        _rewrite_marker(folder, fields)
        return TemplateEvent(template.name, str(folder), status, reason, seconds)

    def _build(self, template: LlamaTemplate, config: StackConfig, folder: Path) -> list[Any]:
        what = f"template {template.name!r} ({template.where})"
        store = LlamaStore.create(folder, label=template.name, kind="template")
        seeds = self.seed_templates.rows(template.seeds)
        store = store.on(self.storage.for_state_template(folder, seeds))
        store = replace(store, seeds=template.seeds)
        mark = self.guard.begin() if self.guard is not None else None
        with store.activate(), live.only(folder, what), self._recorded_as(template):
            try:
                stack = self.stacks.start(store, config=config, label=what)
            except StackError as exc:
                raise TemplateError(f"{what}: its stack did not start: {exc}") from None
            try:
                template(stack)
            except Exception as exc:
                trace = _builder_trace(exc, template)
                raise TemplateError(f"{what} failed to build:\n{trace}") from None
            finally:
                stack.close()
        if self.guard is not None and mark is not None:
            changes = self.guard.end(mark)
            if changes:
                message = f"{what}: " + self.guard.describe(changes)
                if not self.guard_warns:
                    raise TemplateError(message)
                warnings.warn(LlamaStoreLeakWarning(message), stacklevel=1)
        try:
            references = list(seal(folder))
        except TemplateSealError as exc:
            raise TemplateError(f"{what}: {exc}") from None
        found = self.storage.seal(store.tables, folder)
        references += [(IN_DATABASE, table, column) for table, column in found]
        return references

    def _recorded_as(self, template: LlamaTemplate) -> AbstractContextManager[None]:
        """A build's model calls are recorded under the template's own id (once per run,
        whichever test asked first), beside the module that declares it."""
        if (recording := self.stacks.recording) is None:
            return nullcontext()
        source = inspect.getsourcefile(template.builder)
        return recording.as_test(recording.template_id(source, template.name))


def _builder_trace(exc: BaseException, template: LlamaTemplate) -> str:
    """The traceback from the builder's own frame down: the plugin's frames say nothing."""
    tb = exc.__traceback__
    code = getattr(template.builder, "__code__", None)
    while tb is not None and tb.tb_frame.f_code is not code:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__)).rstrip()


def _rewrite_marker(folder: Path, fields: Mapping[str, Any]) -> None:
    """Add ``fields`` to a store's marker; written last, so ``complete`` means complete."""
    marker = {**LlamaStore.read_marker(folder), **fields}
    tmp = folder / (MARKER_NAME + ".tmp")
    tmp.write_text(json.dumps(marker), encoding="utf-8")
    tmp.replace(folder / MARKER_NAME)
