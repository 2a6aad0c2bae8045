"""The command that installs this plugin with an extra, from where this copy came from.

The plugin is not on PyPI yet, so an error saying ``pip install 'pytest-llamastate[ogx]'``
would send a user to an index that does not have it. pip records where a distribution was
installed from (PEP 610, ``direct_url.json``): a clone's folder, a wheel or a git URL. The
hints of the plugin's errors name that source, so they work as printed; a copy installed
from an index (none has one yet) gets the plain name.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import metadata
from typing import Any
from urllib.parse import unquote, urlparse

__all__ = ["install_command", "requirement"]

DISTRIBUTION = "pytest-llamastate"


def requirement(extras: str, direct_url: dict[str, Any] | None) -> str:
    """The pip requirement for the plugin with ``extras`` from ``direct_url`` (the parsed
    ``direct_url.json``, ``None`` for an index install): a local folder or wheel as its
    path, anything else as a direct reference."""
    if not direct_url or not direct_url.get("url"):
        return f"{DISTRIBUTION}[{extras}]"
    url = str(direct_url["url"])
    parsed = urlparse(url)
    if parsed.scheme == "file" and "vcs_info" not in direct_url:
        return f"{unquote(parsed.path)}[{extras}]"
    if vcs := direct_url.get("vcs_info"):
        url = f"{vcs.get('vcs', 'git')}+{url}@{vcs.get('commit_id', '')}".rstrip("@")
    return f"{DISTRIBUTION}[{extras}] @ {url}"


@cache
def install_command(extras: str) -> str:
    """``pip install '<this copy's source>[extras]'``, quoted for a shell."""
    try:
        text = metadata.distribution(DISTRIBUTION).read_text("direct_url.json")
        direct_url = json.loads(text) if text else None
    except (metadata.PackageNotFoundError, ValueError):
        direct_url = None
    return f"pip install '{requirement(extras, direct_url)}'"
