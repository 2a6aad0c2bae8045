"""The plugin's markers: registered at configure, parsed once at collection.

Markers are evaluated when a test module is imported, long before a store exists, so each
is parsed here into a plain value in ``item.stash``: a malformed seed, store name or
unknown template stops the run with a ``UsageError`` before any test starts.
"""

from __future__ import annotations

import types

import pytest

from ..stack.state_templates import TemplateError, find_templates, pick
from ..state.persistent import check_name
from ..state.seeds import SeedError, merge_seeds, parse_seeds
from .session import marker_seeds_key, persistent_key, template_key

__all__ = ["MARKERS", "parse"]

MARKERS = (
    "llama_toolgroups(*seeds): toolgroups the test's llama_store starts with "
    "(ToolgroupSeed, mapping or mcp_tools(...); on a test, class or module)",
    "persistent(name=None): the test's llama_store is the named persistent store, kept "
    "across tests and runs (default name: the test module)",
    "llama_template(name): the test's llama_store starts as a copy of the state template "
    "built by the @llama_template function of that name (on a test, class or module)",
)


def parse(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every ``llama_toolgroups``, ``persistent`` and ``llama_template`` marker, parsed."""
    _resolve_templates(config, items)
    for item in items:
        layers = []
        for marker in reversed(list(item.iter_markers("llama_toolgroups"))):
            try:
                layers.append(parse_seeds(marker.args, f"{item.nodeid}: llama_toolgroups"))
            except SeedError as exc:
                raise pytest.UsageError(str(exc)) from None
        if layers:
            item.stash[marker_seeds_key] = merge_seeds(*layers)
        if (persistent := item.get_closest_marker("persistent")) is not None:
            name = persistent.args[0] if persistent.args else persistent.kwargs.get("name")
            if name is None:  # default: the module, e.g. tests.test_soak
                name = item.nodeid.split("::")[0].removesuffix(".py").replace("/", ".")
            try:
                item.stash[persistent_key] = check_name(name)
            except ValueError as exc:
                raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.persistent: {exc}") from None


def _resolve_templates(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Find the template each ``llama_template`` marker names, among the templates declared
    in conftests, plugins and the collected test modules."""
    marked = [(item, m) for item in items if (m := item.get_closest_marker("llama_template"))]
    if not marked:
        return
    modules = [p for p in config.pluginmanager.get_plugins() if isinstance(p, types.ModuleType)]
    modules += [m for item, _ in marked if (m := getattr(item, "module", None)) is not None]
    try:
        known = find_templates(vars(m) for m in dict.fromkeys(modules))
        for item, marker in marked:
            name = marker.args[0] if marker.args else marker.kwargs.get("name")
            persistent = item.get_closest_marker("persistent") is not None
            item.stash[template_key] = pick(known, name, item.nodeid, persistent=persistent)
    except TemplateError as exc:
        raise pytest.UsageError(str(exc)) from None
