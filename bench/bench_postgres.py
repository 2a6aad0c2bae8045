"""Per-test cost of a Postgres store: create a database from a template, then drop it.

That is what every ``llama_store`` on the Postgres backend pays (goal: <= 60 ms median).
Also measured: starting the throwaway server (first start with ``initdb``, a restart on the
same data folder, and joining one that runs), and opening a store's database for a
registry read. Runs on a throwaway server in a temporary folder, so the figures are
those of the zero-config path; needs the ``[postgres]`` extra.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

ROUNDS = 50


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def main(rounds: int = ROUNDS) -> dict[str, Any]:
    from pytest_llamastate.storage.postgres.client import read_kv_rows, write_kv_rows
    from pytest_llamastate.storage.postgres.janitor import Janitor
    from pytest_llamastate.storage.postgres.server import acquire

    with tempfile.TemporaryDirectory(prefix="llamastate-bench-pg-") as tmp:
        data = Path(tmp) / "postgres"
        start = time.perf_counter()
        server = acquire(data_dir=data)
        first_start = time.perf_counter() - start
        server.release()
        while (data / "server.json").exists():  # the watchdog stops it: nobody is left
            time.sleep(0.05)
        start = time.perf_counter()
        server = acquire(data_dir=data)
        restart = time.perf_counter() - start
        start = time.perf_counter()
        joined = acquire(data_dir=data)
        join = time.perf_counter() - start
        joined.release()
        janitor = Janitor(server.url, run_id="bench")
        try:
            template = janitor.new_name("template")
            janitor.create(template, kind="template")
            rows = [(f"distributions:registry:v10::tool_group:mcp::t{i}", "{}") for i in range(20)]
            write_kv_rows(janitor.url.with_database(template), "llamastack_kvstore", rows)
            janitor.mark_template(template)
            create, drop, both, read = [], [], [], []
            for _ in range(rounds):
                name = janitor.new_name("gw0")
                t0 = time.perf_counter()
                url = janitor.create(name, template=template)
                t1 = time.perf_counter()
                read_kv_rows(url, "llamastack_kvstore")
                t2 = time.perf_counter()
                janitor.drop(name)
                t3 = time.perf_counter()
                create.append(t1 - t0)
                read.append(t2 - t1)
                drop.append(t3 - t2)
                both.append((t1 - t0) + (t3 - t2))
            janitor.drop(template)
        finally:
            janitor.close()
            server.release()
    return {
        "rounds": rounds,
        "server_first_start_ms": _ms(first_start),
        "server_restart_ms": _ms(restart),
        "server_join_ms": _ms(join),
        "create_from_template_median_ms": _ms(statistics.median(create)),
        "drop_median_ms": _ms(statistics.median(drop)),
        "create_plus_drop_median_ms": _ms(statistics.median(both)),
        "create_plus_drop_p90_ms": _ms(sorted(both)[int(len(both) * 0.9) - 1]),
        "read_kv_rows_median_ms": _ms(statistics.median(read)),
        "goal_ms": 60,
    }


def stacks(tests: int = 30) -> dict[str, Any]:
    """A library ``llama_stack`` per test on Postgres against the same on SQLite: two whole
    pytest processes in one run (each pays its imports; Postgres also its server start)."""
    import subprocess
    import sys

    suite = (
        "import pytest\n"
        f"@pytest.mark.parametrize('n', range({tests}))\n"
        "def test_it(llama_stack, n):\n"
        "    llama_stack.register_toolgroup('mcp::x', mcp_endpoint='http://127.0.0.1:9/x')\n"
        "    assert [t.identifier for t in llama_stack.toolgroups()] == ['mcp::x']\n"
    )
    walls = {}
    with tempfile.TemporaryDirectory(prefix="llamastate-bench-pgs-") as tmp:
        (Path(tmp) / "test_stacks.py").write_text(suite)
        for backend in ("sqlite", "postgres"):
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 f"--llama-backend={backend}", tmp],
                check=True, capture_output=True, cwd=tmp,
            )  # fmt: skip
            walls[backend] = time.perf_counter() - start
    return {
        "tests": tests,
        "sqlite_wall_s": round(walls["sqlite"], 2),
        "postgres_wall_s": round(walls["postgres"], 2),
        "ratio": round(walls["postgres"] / walls["sqlite"], 2),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(main(), indent=2))
