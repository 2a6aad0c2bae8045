"""pytest-llamastate: isolated Llama Stack state for every test.

The fixtures come from the plugin (``llama_store``, ``llama_store_factory``); import these
names for type hints and for helpers that run outside a test.
"""

from __future__ import annotations

from .plugin.soak import restart_cycles
from .stack import LlamaStack, LlamaStackFactory, StackError, StackNotInstalledError
from .stack.state_templates import LlamaTemplate, TemplateError, llama_template
from .state.leaks import LlamaSharedStoreLeakWarning, LlamaStoreLeakWarning
from .state.mcptools import McpCall, McpServer, McpTools, McpToolsError, mcp_tools
from .state.registry import RegistryDiff, RegistrySnapshot, StoreCorruptError, ToolgroupRecord
from .state.seeds import SeedError, ToolgroupSeed
from .state.stackconfig import StackConfig, StackConfigError
from .state.store import LlamaStore, NotAStoreError
from .state.store_factory import LlamaStoreFactory

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
