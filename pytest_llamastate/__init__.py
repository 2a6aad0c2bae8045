"""pytest-llamastate: isolated Llama Stack state for every test.

The fixtures come from the plugin (``llama_store``, ``llama_store_factory``); import these
names for type hints and for helpers that run outside a test.
"""

from __future__ import annotations

from .leaks import LlamaSharedStoreLeakWarning, LlamaStoreLeakWarning
from .mcptools import McpCall, McpServer, McpTools, McpToolsError, mcp_tools
from .registry import RegistryDiff, RegistrySnapshot, StoreCorruptError, ToolgroupRecord
from .seeds import SeedError, ToolgroupSeed
from .soak import restart_cycles
from .stack import LlamaStack, LlamaStackFactory, StackError, StackNotInstalledError
from .stackconfig import StackConfig, StackConfigError
from .statetemplates import LlamaTemplate, TemplateError, llama_template
from .store import LlamaStore, NotAStoreError
from .stores import LlamaStoreFactory

__all__ = [
    "LlamaSharedStoreLeakWarning",
    "LlamaStack",
    "LlamaStackFactory",
    "LlamaStore",
    "LlamaStoreFactory",
    "LlamaStoreLeakWarning",
    "LlamaTemplate",
    "McpCall",
    "McpServer",
    "McpTools",
    "McpToolsError",
    "NotAStoreError",
    "RegistryDiff",
    "RegistrySnapshot",
    "SeedError",
    "StackConfig",
    "StackConfigError",
    "StackError",
    "StackNotInstalledError",
    "StoreCorruptError",
    "TemplateError",
    "ToolgroupRecord",
    "ToolgroupSeed",
    "llama_template",
    "mcp_tools",
    "restart_cycles",
]
