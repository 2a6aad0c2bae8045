"""The SQL engines a library stack opens and never closes (llama-stack up to 0.5).

Up to 0.5.x the SQL store builds a throwaway SQLAlchemy engine for every table it creates
(and, before 0.4.5, never disposes even its own), so each stopped stack leaves pooled
SQLite connections open, each with an aiosqlite thread: a long suite accumulates them,
and a state template cannot leave WAL mode (``database is locked``). While a library
stack of such a release runs, every engine its SQL store creates is recorded, and all of
them are disposed when it stops. Which releases: ``Flavor.sqlalchemy_module``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ..releases import Flavor, import_quietly

__all__ = ["EngineTracker"]


class EngineTracker:
    """Records the engines of one library stack's SQL store; disposes them at the end."""

    def __init__(self, flavor: Flavor) -> None:
        self.engines: list[Any] = []
        self._restore: tuple[Any, Any] | None = None
        if flavor.sqlalchemy_module is None:
            return
        module = import_quietly(flavor.sqlalchemy_module)
        original = module.create_async_engine
        engines = self.engines

        def create_async_engine(*args: Any, **kwargs: Any) -> Any:
            engine = original(*args, **kwargs)
            engines.append(engine)
            return engine

        module.create_async_engine = create_async_engine
        self._restore = (module, original)

    def dispose(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close every recorded engine's connections on the stack's (idle) ``loop``."""
        if self._restore is not None:
            module, original = self._restore
            module.create_async_engine = original
            self._restore = None
        engines, self.engines[:] = list(self.engines), []

        async def dispose_all() -> None:
            for engine in engines:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(engine.dispose(), 10)

        if engines and not loop.is_closed():
            loop.run_until_complete(dispose_all())
