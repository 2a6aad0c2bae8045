"""pytest-llamastate: isolated Llama Stack state for every test.

The fixtures come from the plugin (``llama_store``, ``llama_store_factory``); import these
names for type hints and for helpers that run outside a test.
"""

from __future__ import annotations

from .factory import LlamaStoreFactory
from .store import LlamaStore, NotAStoreError

__all__ = ["LlamaStore", "LlamaStoreFactory", "NotAStoreError"]
