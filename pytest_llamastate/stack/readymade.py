"""What a forked server takes ready-made from its zygote (``zygote``), so that a child's
start is its own stack and little else.

Profiled (py-spy, 25 forked servers of the minimal config, llama-stack 0.7.3): ~58% of a
child's start went to FastAPI routers (each API's ``create_router(impl)``: ``add_api_route``,
pydantic model fields), built twice per API (for the request-metrics map, then to serve),
the same in every child but for the implementation their endpoints call; ~5% to parsing
the run config (three times); ~3% to reading the release's version from package metadata
(three times). The zygote, which imports the stack once, does these once:

- ``prebuilt-routers``: every router factory runs once in the zygote on a stand-in
  implementation (:class:`_Late`), bound by the child to its own on its first
  ``build_fastapi_router(api, impl)``. A factory that touches the implementation while it
  builds (reads an attribute, checks its class) gets no prebuilt router: the child builds
  that one, as before; so does any other call (another implementation, ``None``, a factory
  replaced by an external API).
  With FastAPI's lazy inclusion the routes' request handlers are built here too
  (:func:`_warm_route_contexts`), for the child's app to take.
- ``config-once``: ``yaml.safe_load`` of a text parsed before returns a deep copy of it.
- ``versions-once``: ``importlib.metadata.version`` of a distribution looked up before
  returns the answer of then (the zygote's imported code is what each child runs anyway).
- ``batched-log-levels``: the stack's logging set-up clears the loggers' caches once.
- ``uncolored-log-lines``: a log line for a console without colors is not highlighted.

The zygote learns the texts and versions from its children: each says, when ready, what it
parsed and looked up (and imported, and compiled), and the zygote does that itself for the
next child. Each child still builds its own stack, store, providers, app and event loop;
only route shapes and handlers, parsed texts, version strings and compiled patterns are
shared, and a child's bindings are its own process's memory.

Stdlib only, loaded by path: the zygote runs as a script, without the plugin's package.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import importlib
import io
import logging
import re
import sys
import warnings
from collections.abc import Callable, Collection, Iterable
from typing import Any

__all__ = ["import_quietly", "learn", "learned", "prepare"]

#: A text longer than this is not sent back for the zygote to parse.
_MAX_TEXT = 1 << 16

#: What this process's children looked up and parsed themselves (reported when ready).
_missed: dict[str, set[str]] = {"versions": set(), "texts": set()}
#: What this process answers from memory: distribution versions, parsed texts.
_versions: dict[str, str] = {}
_parsed: dict[str, Any] = {}


def import_quietly(names: Iterable[str]) -> None:
    """Import what is not imported yet; a module that fails is the child's to import."""
    with warnings.catch_warnings(action="ignore"):  # the stack needs Python 3.12 anyway
        for name in names:
            if name not in sys.modules and not name.startswith("__"):
                with contextlib.suppress(BaseException):
                    importlib.import_module(name)


def prepare(modules: Iterable[str], core: str, shortcuts: Collection[str]) -> None:
    """In the zygote, once: import ``modules``, then set up what ``shortcuts`` share."""
    import_quietly(modules)
    if "prebuilt-routers" in shortcuts:
        _prebuild_routers(core)
    if "batched-log-levels" in shortcuts:
        _batch_log_levels(f"{core.partition('.')[0]}.log")
    if "uncolored-log-lines" in shortcuts:
        _skip_unseen_highlighting()
    if "versions-once" in shortcuts:
        _remember(importlib.import_module("importlib.metadata").version, _version)
    if "config-once" in shortcuts and (yaml := sys.modules.get("yaml")) is not None:
        _remember(yaml.safe_load, _safe_load)
    _snapshot()


def learned() -> dict[str, Any]:
    """In a ready child: what the zygote can learn from it, that it did not know when it
    forked: the modules the child imported, the regular expressions it compiled (its log
    lines' highlighting compiles ~150 per start), the texts and versions it missed.

    A child that learned nothing new (the usual case once the zygote has learned) says
    so without reading all its module names: that would copy the pages they are on."""
    said: dict[str, Any] = {k: sorted(v) for k, v in _missed.items()}
    if _marks() != _known["marks"]:
        patterns = _patterns() - _known["patterns"]
        said["patterns"] = [[p, f] for _, p, f in patterns if len(p) <= _MAX_TEXT]
        said["modules"] = sorted(sys.modules.keys() - _known["modules"])
    return said


#: What this process knew when it last learned (its children report what they add).
_known: dict[str, Any] = {"modules": frozenset(), "patterns": frozenset(), "marks": None}


def _patterns() -> frozenset[tuple[type, str, int]]:
    """The text patterns in ``re``'s cache."""
    cache: dict[tuple[type, Any, int], Any] = getattr(re, "_cache", {})
    return frozenset(key for key in list(cache) if key[0] is str)


def _marks() -> tuple[int, int]:
    """Changes when a module is imported or a pattern compiled: the sizes of both
    (``re`` reorders its cache as it is used; a pattern compiled once it is full is
    not learned, and needs none of this to work)."""
    return len(sys.modules), len(getattr(re, "_cache", {}))


def _snapshot() -> None:
    _known.update(modules=frozenset(sys.modules), patterns=_patterns(), marks=_marks())


def learn(said: dict[str, Any]) -> None:
    """In the zygote: do what a child reported (see :func:`learned`) for the next one."""
    import_quietly(said.get("modules", []))
    for pattern, flags in said.get("patterns", []):
        with contextlib.suppress(Exception):
            re.compile(pattern, flags)
    with warnings.catch_warnings(action="ignore"):
        for name in said.get("versions", []) if _version in _originals else ():
            with contextlib.suppress(Exception):
                _versions.setdefault(name, _originals[_version](name))
        for text in said.get("texts", []) if _safe_load in _originals else ():
            with contextlib.suppress(Exception):
                _parsed.setdefault(text, _originals[_safe_load](text))
    _snapshot()


#: The functions :func:`_remember` replaced, by what replaced them.
_originals: dict[Callable[..., Any], Callable[..., Any]] = {}


def _remember(original: Callable[..., Any], memo: Callable[..., Any]) -> None:
    """Point every module attribute that is ``original`` (``from x import f`` copied it)
    at ``memo``, which answers from memory or else calls ``original``."""
    _originals[memo] = original
    _replace_everywhere(original, functools.wraps(original)(memo))


def _replace_everywhere(old: object, new: object) -> None:
    for module in list(sys.modules.values()):
        with contextlib.suppress(Exception):  # a module whose namespace is not a dict
            for attr, value in list(vars(module).items()):
                if value is old:
                    setattr(module, attr, new)


# -- versions and texts ------------------------------------------------------------------


def _version(distribution_name: str) -> str:
    if distribution_name not in _versions:
        _versions[distribution_name] = _originals[_version](distribution_name)
        _missed["versions"].add(distribution_name)
    return _versions[distribution_name]


def _safe_load(stream: Any) -> Any:
    """``yaml.safe_load``: a text (or a text file's content) seen before is a deep copy."""
    original = _originals[_safe_load]
    text = stream if isinstance(stream, str) or not hasattr(stream, "read") else stream.read()
    if not isinstance(text, str):  # bytes, a binary file's too: as PyYAML reads them
        return original(text)
    if text in _parsed:
        return copy.deepcopy(_parsed[text])
    if len(text) <= _MAX_TEXT:
        _missed["texts"].add(text)
    if stream is text:
        return original(text)
    named = io.StringIO(text)
    named.name = getattr(stream, "name", "<file>")  # what its errors say
    return original(named)


# -- logging -------------------------------------------------------------------------------


def _batch_log_levels(module_name: str) -> None:
    """The stack's ``setup_logging`` and ``logging.config.dictConfig`` (uvicorn's, the
    stack's) clear every logger's level cache once, not once per ``setLevel``: the stack
    sets ~140 levels, and each ``Logger.setLevel`` clears the caches of all ~150 loggers
    (~10 ms of a child's start). Neither logs while it runs."""
    config = importlib.import_module("logging.config")
    functions = [config.dictConfig, getattr(sys.modules.get(module_name), "setup_logging", None)]
    for original in filter(None, functions):
        _replace_everywhere(original, _clearing_caches_once(original))


def _clearing_caches_once(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def batched(*args: Any, **kwargs: Any) -> Any:
        manager: Any = logging.Logger.manager
        if "_clear_cache" in vars(manager):  # called by one that batches already
            return original(*args, **kwargs)
        manager._clear_cache = lambda: None  # this instance's, over the class's
        try:
            return original(*args, **kwargs)
        finally:
            del manager._clear_cache
            manager._clear_cache()

    return batched


def _skip_unseen_highlighting() -> None:
    """A rich log handler whose console has no color system (a child's log is a file)
    renders its lines without highlighting them: highlighting only adds styles, which
    such a console never writes, so the text is the same (~10 ms of a child's start)."""
    if (rich_logging := sys.modules.get("rich.logging")) is None:
        return
    handler_class: Any = rich_logging.RichHandler
    original = handler_class.render_message

    @functools.wraps(original)
    def render_message(self: Any, record: Any, message: str) -> Any:
        if self.console.color_system is not None:
            return original(self, record, message)
        highlighter, keywords = self.highlighter, self.keywords
        self.highlighter, self.keywords = None, []  # under the handler's lock
        try:
            return original(self, record, message)
        finally:
            self.highlighter, self.keywords = highlighter, keywords

    handler_class.render_message = render_message


# -- routers -------------------------------------------------------------------------------


class _Late:
    """The implementation a prebuilt router's endpoints call, bound once by the child.

    Forwards every attribute (and ``__class__``, for ``isinstance``) to it; unbound, any
    look-up marks the router as one that needs its implementation to be built."""

    __slots__ = ("_llamastate_target", "_llamastate_touched")

    def __init__(self) -> None:
        self._llamastate_target: Any = None
        self._llamastate_touched = False

    def __getattr__(self, name: str) -> Any:
        if self._llamastate_target is None:
            self._llamastate_touched = True
            raise AttributeError(name)
        return getattr(self._llamastate_target, name)

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        if self._llamastate_target is None:
            self._llamastate_touched = True
            return _Late
        return type(self._llamastate_target)

    def bind(self, impl: Any) -> bool:
        """Whether this stands for ``impl`` (bound now if it was not yet)."""
        if self._llamastate_target is None:
            self._llamastate_target = impl
        return self._llamastate_target is impl


def _prebuild_routers(core: str) -> None:
    """Build every router once on a :class:`_Late`; the child's builds bind one."""
    if (registry := sys.modules.get(f"{core}.server.fastapi_router_registry")) is None:
        return
    factories: dict[str, Callable[[Any], Any]] = registry._ROUTER_FACTORIES
    original: Callable[[Any, Any], Any] = registry.build_fastapi_router
    prebuilt: dict[str, tuple[Callable[[Any], Any], _Late, Any]] = {}
    for api, factory in list(factories.items()):
        late = _Late()
        with warnings.catch_warnings(action="ignore"), contextlib.suppress(Exception):
            router = factory(late)
            if not late._llamastate_touched:
                prebuilt[api] = (factory, late, router)

    @functools.wraps(original)
    def build_fastapi_router(api: Any, impl: Any) -> Any:
        factory, late, router = prebuilt.get(getattr(api, "value", api), (None, None, None))
        if late is None or impl is None or factories.get(api.value) is not factory:
            return original(api, impl)
        return router if late.bind(impl) else original(api, impl)

    _replace_everywhere(original, build_fastapi_router)
    _warm_route_contexts([router for _, _, router in prebuilt.values()])


def _warm_route_contexts(routers: list[Any]) -> None:
    """FastAPI builds each included route's request handler on the app's first request
    (the releases with ``_IncludedRouter``; ~20 ms of a child's start): build them here, for
    an app that includes ``routers`` as they are, and give a child's app including one
    of them those, its own app bound as their dependency-overrides provider (a
    :class:`_Late`). An inclusion that differs (a prefix, tags...) builds its own."""
    routing: Any = sys.modules.get("fastapi.routing")
    included_class: Any = getattr(routing, "_IncludedRouter", None)
    fields = getattr(included_class, "__dataclass_fields__", {})
    if not routers or "_effective_candidates_version" not in fields:
        return  # a FastAPI that builds routes as it includes them, or not at all
    app, source = _Late(), getattr(routing, "_extract_endpoint_context", None)
    parent = importlib.import_module("fastapi").FastAPI().router
    parent.dependency_overrides_provider = app
    warmed: dict[int, Any] = {}
    for router in routers:
        with warnings.catch_warnings(action="ignore"), contextlib.suppress(Exception):
            parent.include_router(router)
            included = parent.routes[-1]
            for context in included.effective_route_contexts():
                if (call := getattr(getattr(context, "dependant", None), "call", None)) and source:
                    source(call)  # where its errors say it is: read on its first request
            included.effective_low_priority_routes()
            warmed[id(router)] = included
    original = routing.APIRouter.include_router

    @functools.wraps(original)
    def include_router(self: Any, router: Any, *args: Any, **kwargs: Any) -> None:
        original(self, router, *args, **kwargs)
        new, warm = self.routes[-1] if self.routes else None, warmed.get(id(router))
        if warm is None or not isinstance(new, included_class) or new.original_router is not router:
            return
        context = dataclasses.replace(new.include_context, dependency_overrides_provider=None)
        if context != dataclasses.replace(warm.include_context, dependency_overrides_provider=None):
            return
        if app.bind(new.include_context.dependency_overrides_provider):
            for name in fields:
                if name.startswith("_effective_") and not name.endswith("_lock"):
                    setattr(new, name, getattr(warm, name))

    routing.APIRouter.include_router = include_router
