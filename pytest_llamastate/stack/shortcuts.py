"""Library stacks without the work no test needs: shortcuts for the plugin's own clients.

Profiled (cProfile, 10 stacks): most of a library client's start is two things a test
never uses. Its client base class builds an HTTP client with a TLS context (llama-stack
0.7: ``ssl.create_default_context`` + ``load_verify_locations``, ~17 ms, twice; OGX 1.5:
the same in its REST object) for a client that never opens a connection. And
``initialize_route_impls`` builds the FastAPI route table (~36 ms: ``add_api_route``,
pydantic model fields), identical for every stack of one config and release but for the
implementations its endpoints call.

So while the plugin builds a library client, and only then, this module swaps a few
attributes of the stack's and its client's modules (restored afterwards, even on error):

- ``httpx-tls``: the client's httpx wrappers get ``verify=`` one default TLS context,
  built once per process the way httpx builds its default (llama-stack's stainless client).
- ``lazy-rest-tls``: the REST object builds its TLS context when first used, from the same
  configuration (OGX's OpenAPI client); a library client never uses it.
- ``route-table``: the route table is built once per (config, release, implementation
  classes) and every later stack gets a copy whose endpoints call its own implementations.
- ``sql-schema``: a fresh store's SQLite files get the schema the first fresh start of
  the config created, in one script, and its SQL stores skip what that covers
  (:mod:`.sqlschema`; on OGX 1.5 most of what was left of a start).
- ``config-once``: the run config's YAML is parsed once per text; each stack gets a copy.

Each stack still has its own store, files, providers, routing tables and event loop: only
the shape of the route table and of the SQL schema, a parsed config and an unused TLS
context are shared. Which shortcut a release allows is release data
(``releases/shortcuts.py``); a route table whose endpoints hold
anything but their implementation (or an object it holds) and plain constants is never
shared (built as usual).
A client built by the user, or any httpx client, is never touched.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import types
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from ..releases import Flavor, Shortcut, import_quietly, library_shortcuts, sql_store_module
from . import schemaskip
from .sqlschema import SchemaTemplates

__all__ = ["applied", "describe", "describe_one", "http_client", "server_schema"]

#: What each shortcut tells a user in the header.
_SAYS: dict[Shortcut, str] = {
    "httpx-tls": "one TLS context per process",
    "lazy-rest-tls": "no TLS context",
    "route-table": "route table built once per config",
    "sql-schema": "SQLite schema created in one script",
    "config-once": "config parsed once",
}

#: Closure values an endpoint may share with every stack: they hold nothing of one.
_CONSTANTS = (int, float, str, bytes, bool, type(None))

RouteTable = dict[str, dict[str, tuple[Any, ...]]]


def describe(flavor: Flavor) -> str:
    """The header line: what the plugin's library clients skip on this release."""
    release = f"{flavor.name} {flavor.version()}"
    if not (shortcuts := library_shortcuts(flavor)):
        return f"llamastate: library stacks start as {release}'s own client (no shortcut known)"
    said = ", ".join(describe_one(s) for s in sorted(shortcuts))
    return f"llamastate: library stacks on {release}: {said}"


def describe_one(shortcut: Shortcut) -> str:
    """What one shortcut tells a user in the header."""
    return _SAYS[shortcut]


@contextlib.contextmanager
def applied(flavor: Flavor, config: Path, store: Path | None) -> Iterator[None]:
    """The release's shortcuts, while the plugin builds one library client for ``config``
    on ``store`` (``None``: the store's state is not in SQLite files there)."""
    shortcuts = library_shortcuts(flavor)
    with contextlib.ExitStack() as stack:
        if "sql-schema" in shortcuts:
            key = (flavor.name, flavor.version(), config)
            stack.enter_context(_SCHEMAS.applied(flavor, key, store))
        if "httpx-tls" in shortcuts:
            stack.enter_context(_shared_tls(flavor))
        if "lazy-rest-tls" in shortcuts:
            rest = import_quietly(f"{flavor.client_package}.rest")
            stack.enter_context(_swapped(rest, "RESTClientObject", _lazy_rest(rest)))
        if "config-once" in shortcuts:
            module = import_quietly(flavor.library_module)
            stack.enter_context(_swapped(module, "yaml", _ParsedOnce(module.yaml)))
        if "route-table" in shortcuts:
            module = import_quietly(flavor.library_module)
            build = module.initialize_route_impls
            reuse = functools.partial(_ROUTE_TABLES.table, build, (flavor.name, config))
            stack.enter_context(_swapped(module, "initialize_route_impls", reuse))
        yield


@contextlib.contextmanager
def http_client(flavor: Flavor) -> Iterator[None]:
    """While the plugin builds the HTTP client of a server stack: ``httpx-tls`` when the
    release allows it (the one TLS context is httpx's default, so the client trusts what
    it would have trusted; the lazy REST context would be built by its first request)."""
    shared = "httpx-tls" in library_shortcuts(flavor)
    with _shared_tls(flavor) if shared else contextlib.nullcontext():
        yield


@contextlib.contextmanager
def _shared_tls(flavor: Flavor) -> Iterator[None]:
    base = import_quietly(f"{flavor.client_package}._base_client")
    with contextlib.ExitStack() as stack:
        for name in ("SyncHttpxClientWrapper", "AsyncHttpxClientWrapper"):
            wrapper = getattr(base, name)
            stack.enter_context(_swapped(base, name, _with_shared_tls(wrapper)))
        yield


@contextlib.contextmanager
def server_schema(
    flavor: Flavor, config: Path, store: Path | None
) -> Iterator[dict[str, Any] | None]:
    """While a forked server of ``config`` starts on ``store`` (``None``: not SQLite files
    there) and until it is ready: ``sql-schema``'s files, when the release allows it, and
    what the server's SQL stores may skip while it starts (``schemaskip.wire``: for the
    fork request; ``None``: nothing)."""
    if "sql-schema" not in library_shortcuts(flavor):
        yield None
        return
    key = ("server", flavor.name, flavor.version(), config)
    with _SCHEMAS.prepared(key, store) as known:
        yield schemaskip.wire(sql_store_module(flavor), known) if known else None


@contextlib.contextmanager
def _swapped(owner: object, name: str, value: object) -> Iterator[None]:
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


# -- TLS ---------------------------------------------------------------------------------


@functools.cache
def _default_tls_context() -> Any:
    """httpx's default context (certifi, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``), built once."""
    return import_quietly("httpx").create_ssl_context()


def _with_shared_tls(wrapper: Callable[..., Any]) -> Callable[..., Any]:
    """``wrapper`` that builds its httpx client on the shared context unless told one."""

    def build(**kwargs: Any) -> Any:
        kwargs.setdefault("verify", _default_tls_context())
        return wrapper(**kwargs)

    return build


@functools.cache
def _lazy_rest(rest: types.ModuleType) -> type:
    """A subclass of ``rest.RESTClientObject`` that runs its ``__init__`` (which builds
    the TLS context) only when one of the attributes it sets is first read."""
    base: Any = rest.RESTClientObject

    class LazyRESTClientObject(base):  # type: ignore[misc]
        def __init__(self, configuration: Any) -> None:
            self.__dict__["_lazy_configuration"] = configuration

        def __getattr__(self, name: str) -> Any:
            configuration = self.__dict__.pop("_lazy_configuration", None)
            if configuration is None:
                raise AttributeError(name)
            base.__init__(self, configuration)
            return getattr(self, name)

    return LazyRESTClientObject


# -- the config ------------------------------------------------------------------------


class _ParsedOnce:
    """``yaml`` as the library client's module sees it while the plugin builds a client:
    ``safe_load`` of a text parsed before returns a copy of what it returned then (pure
    Python YAML takes ~10 ms for the minimal config; the text is the same every test,
    the ``${env.X}`` in it are resolved after, per stack)."""

    _parsed: ClassVar[dict[str, Any]] = {}

    def __init__(self, yaml: types.ModuleType) -> None:
        self._yaml = yaml

    def __getattr__(self, name: str) -> Any:
        return getattr(self._yaml, name)

    def safe_load(self, stream: Any) -> Any:
        if not isinstance(stream, str):
            return self._yaml.safe_load(stream)
        if stream not in self._parsed:
            self._parsed[stream] = self._yaml.safe_load(stream)
        return copy.deepcopy(self._parsed[stream])


# -- the route table ---------------------------------------------------------------------


class _Slot:
    """Where a template's endpoint calls an implementation, or an object one holds as an
    attribute (llama-stack 0.2's tool runtime router serves the RAG tool's routes from
    its ``rag_tool``): filled per stack."""

    __slots__ = ("api", "attribute")

    def __init__(self, api: Any, attribute: str | None = None) -> None:
        self.api = api
        self.attribute = attribute

    def filled(self, impls: Mapping[Any, Any]) -> Any:
        """What this slot holds in the stack of ``impls``."""
        impl = impls[self.api]
        return impl if self.attribute is None else getattr(impl, self.attribute)


def _slots(impls: Mapping[Any, Any]) -> dict[int, _Slot]:
    """A slot per implementation and per object an implementation holds as an attribute,
    by the id of what it holds in this stack (an implementation's own slot wins)."""
    found: dict[int, _Slot] = {}
    for api, impl in impls.items():
        for name, value in vars(impl).items() if hasattr(impl, "__dict__") else ():
            if not isinstance(value, _CONSTANTS):
                found.setdefault(id(value), _Slot(api, name))
    found.update({id(impl): _Slot(api) for api, impl in impls.items()})
    return found


class _RouteTables:
    """Route tables of this process, one per (builder, release, config, implementation
    classes): a builder or class imported anew (pytester drops modules) is a new key.

    A template holds slots where the first stack's implementations were, not them: it
    keeps no stack alive.
    """

    def __init__(self) -> None:
        #: The template and its slots, or ``None`` when the table's endpoints hold
        #: something per stack (then every stack builds its own).
        self._templates: dict[object, tuple[RouteTable, list[_Slot]] | None] = {}

    def table(
        self,
        build: Callable[..., RouteTable],
        where: tuple[str, Path],
        impls: Mapping[Any, Any],
        *args: Any,
        **kwargs: Any,
    ) -> RouteTable:
        """What ``build(impls, ...)`` returns, from the template when there is one."""
        if any(args) or any(kwargs.values()):  # external APIs: built as usual
            return build(impls, *args, **kwargs)
        key = (build, where, tuple((api, type(impl)) for api, impl in impls.items()))
        if key not in self._templates:
            table = build(impls, *args, **kwargs)
            ids = _slots(impls)
            shareable = _shareable(table, ids)
            self._templates[key] = (_rebind(table, ids), list(ids.values())) if shareable else None
            return table
        if (template := self._templates[key]) is None:
            return build(impls, *args, **kwargs)
        table, slots = template
        try:
            filled = {id(slot): slot.filled(impls) for slot in slots}
        except AttributeError:  # this stack's implementation lacks an attribute: as usual
            return build(impls, *args, **kwargs)
        return _rebind(table, filled)


_ROUTE_TABLES = _RouteTables()
_SCHEMAS = SchemaTemplates()


def _shareable(table: RouteTable, impls: Mapping[int, Any]) -> bool:
    """Whether every endpoint holds only what has a slot (by id) and plain constants."""
    for routes in table.values():
        for entry in routes.values():
            func = entry[0]
            if isinstance(func, types.MethodType):
                if id(func.__self__) not in impls:
                    return False
            elif isinstance(func, types.FunctionType):
                for cell in func.__closure__ or ():
                    try:
                        value = cell.cell_contents
                    except ValueError:  # a free variable not bound yet
                        return False
                    if id(value) not in impls and not isinstance(value, _CONSTANTS):
                        return False
            else:
                return False
    return True


def _rebind(table: RouteTable, new: Mapping[int, Any]) -> RouteTable:
    """A copy of ``table`` whose endpoints hold ``new[id(x)]`` wherever they held ``x``."""
    return {
        method: {regex: (_rebound(entry[0], new), *entry[1:]) for regex, entry in routes.items()}
        for method, routes in table.items()
    }


def _rebound(func: Any, new: Mapping[int, Any]) -> Any:
    if isinstance(func, types.MethodType):
        return types.MethodType(func.__func__, new[id(func.__self__)])
    if not func.__closure__:
        return func  # a module-level function: a fresh build returns it too
    cells = tuple(
        types.CellType(new.get(id(cell.cell_contents), cell.cell_contents))
        for cell in func.__closure__
    )
    copy = types.FunctionType(
        func.__code__, func.__globals__, func.__name__, func.__defaults__, cells
    )
    copy.__kwdefaults__ = func.__kwdefaults__
    copy.__annotations__ = func.__annotations__
    copy.__qualname__ = func.__qualname__
    copy.__module__ = func.__module__
    copy.__doc__ = func.__doc__
    copy.__dict__.update(func.__dict__)
    return copy
