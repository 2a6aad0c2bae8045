"""50 toolgroups per test: copied from a template vs registered through the stack.

The baseline is what a test does without seeds: register each toolgroup through the
running stack's routing table. Both sides run in the same process and run.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from pytest_llamastate import LlamaStackFactory, LlamaStore, ToolgroupSeed
from pytest_llamastate.state.seed_rows import TemplateCache
from pytest_llamastate.state.stackconfig import DEFAULT_CONFIG
from pytest_llamastate.storage.sqlite_backend import SqliteStorage

TOOLGROUPS = 50
COPY_ROUNDS = 200
REGISTER_ROUNDS = 10


def main() -> dict[str, float]:
    seeds = tuple(
        ToolgroupSeed(f"mcp::tg{n}", mcp_endpoint=f"http://127.0.0.1:9/{n}")
        for n in range(TOOLGROUPS)
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = TemplateCache(root / "templates").rows(seeds)
        assert rows is not None
        storage = SqliteStorage(root / "templates")
        storage.template(rows)  # built once per run; the per-test cost is the copy
        copies = []
        for n in range(COPY_ROUNDS):
            store = LlamaStore.create(root / f"copy{n}")
            start = time.perf_counter()
            storage.create(store.path, rows, None)
            copies.append(time.perf_counter() - start)
        factory = LlamaStackFactory("library", DEFAULT_CONFIG)
        registers = []
        for n in range(REGISTER_ROUNDS):
            with factory.start(LlamaStore.create(root / f"reg{n}")) as stack:
                start = time.perf_counter()
                for seed in seeds:
                    stack.register_toolgroup(seed.toolgroup_id, mcp_endpoint=seed.mcp_endpoint)
                registers.append(time.perf_counter() - start)
                assert len(stack.toolgroups()) == TOOLGROUPS
    copy_s, register_s = statistics.median(copies), statistics.median(registers)
    return {
        "toolgroups": TOOLGROUPS,
        "template_copy_ms": round(copy_s * 1000, 3),
        "routing_table_register_ms": round(register_s * 1000, 1),
        "speedup": round(register_s / copy_s, 1),
    }


if __name__ == "__main__":
    print(main())
