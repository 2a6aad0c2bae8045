"""The release table: what differs between Llama Stack's release lines and OGX (its new name).

:mod:`.lines` holds the facts as a timeline per release line (stdlib only: the Makefile
reads the pins from it); :mod:`.flavor` resolves them, once, for the installed release;
:mod:`.shortcuts` says which library-client and forked-server shortcuts each release allows.
Nothing else in the package asks which release is installed.
"""

from .flavor import (
    FLAVOR_CHOICES,
    FLAVORS,
    LLAMA_STACK,
    OGX,
    Flavor,
    FlavorChoice,
    FlavorName,
    Recorder,
    by_name,
    detect,
    import_quietly,
    installed_versions,
)
from .shortcuts import (
    LIBRARY_SHORTCUTS,
    SERVER_SHORTCUTS,
    ServerShortcut,
    Shortcut,
    library_shortcuts,
    server_shortcuts,
    sql_store_module,
)

__all__ = [
    "FLAVORS",
    "FLAVOR_CHOICES",
    "LIBRARY_SHORTCUTS",
    "LLAMA_STACK",
    "OGX",
    "SERVER_SHORTCUTS",
    "Flavor",
    "FlavorChoice",
    "FlavorName",
    "Recorder",
    "ServerShortcut",
    "Shortcut",
    "by_name",
    "detect",
    "import_quietly",
    "installed_versions",
    "library_shortcuts",
    "server_shortcuts",
    "sql_store_module",
]
