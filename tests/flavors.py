"""What the real-stack tests know about the installed flavor (llama-stack or OGX).

Every such test runs against whichever is installed, with the same assertions; the few
things that differ by design are named here once.
"""

from __future__ import annotations

import pytest

from pytest_llamastate.releases import detect

FLAVOR = detect()

#: Whether the flavor's library client can upload a file: llama-stack 0.2.12's calls the
#: files API without its ``file`` argument (a TypeError; upstream bug, gone by 0.2.24).
LIBRARY_UPLOADS = not (FLAVOR.name == "llama-stack" and FLAVOR.version() == "0.2.12")

#: The start of a registry key under the default config: OGX prefixes the metadata
#: store's namespace ("registry"), llama-stack 0.7 does not.
KEY = ("registry:" if FLAVOR.name == "ogx" else "") + "distributions:registry:v10::"

#: Both modes for tests of ``tools()``: OGX 1.5's only list-tools route fails.
TOOLS_MODES = pytest.mark.parametrize(
    "mode",
    [
        "library",
        pytest.param(
            "server",
            marks=pytest.mark.xfail(
                FLAVOR.name == "ogx",
                reason="ogx 1.5.0: GET /v1/admin/tools fails with HTTP 500 (upstream bug)",
                strict=True,
            ),
        ),
    ],
)


NEEDS_A_STACK = "needs pytest-llamastate[stack] or [ogx]"

#: For a test in a module that otherwise runs without a stack.
needs_stack = pytest.mark.skipif(not FLAVOR.installed(), reason=NEEDS_A_STACK)


def skip_module_without_a_stack() -> None:
    """Call at module level: skip the module unless llama-stack or ogx is installed."""
    if not FLAVOR.installed():
        pytest.skip(NEEDS_A_STACK, allow_module_level=True)


#: Both modes for tests that list tools with the flavor's own client: OGX 1.5's client
#: reaches the same broken route in library mode too (``client.tools`` in both).
CLIENT_TOOLS_MODES = pytest.mark.parametrize(
    "mode",
    [
        pytest.param(
            mode,
            marks=pytest.mark.xfail(
                FLAVOR.name == "ogx",
                reason="ogx 1.5.0: /v1/admin/tools fails (KeyError: Api.tool_groups, upstream bug)",
                strict=True,
            ),
        )
        for mode in ("library", "server")
    ],
)

#: How the flavor's own client lists tools, as the README tells users (an expression on
#: ``llama_stack.client`` that evaluates to a list of tool names).
CLIENT_TOOL_NAMES = (
    "[t.name for t in llama_stack.client.tools.tools_v1_admin_tools_get()]"
    if FLAVOR.name == "ogx"
    else '[t["name"] for t in llama_stack.client.get("/v1/tools", cast_to=object)["data"]]'
)
