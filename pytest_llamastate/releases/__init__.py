"""The release table: what differs between Llama Stack's release lines and OGX (its new name).

:mod:`.lines` holds the facts as a timeline per release line (stdlib only: the Makefile
reads the pins from it); :mod:`.flavor` resolves them, once, for the installed release.
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
    Shortcut,
    by_name,
    detect,
    import_quietly,
    installed_versions,
    library_shortcuts,
)

__all__ = [
    "FLAVORS",
    "FLAVOR_CHOICES",
    "LLAMA_STACK",
    "OGX",
    "Flavor",
    "FlavorChoice",
    "FlavorName",
    "Recorder",
    "Shortcut",
    "by_name",
    "detect",
    "import_quietly",
    "installed_versions",
    "library_shortcuts",
]
