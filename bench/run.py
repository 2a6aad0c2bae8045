"""Run every benchmark and write bench/results/latest.json (``make bench``).

Each benchmark compares against a baseline measured in the same run, so the ratios hold
on a busy machine better than the absolute times do.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_container
import bench_core
import bench_guard
import bench_inference
import bench_library
import bench_postgres
import bench_seeds
import bench_server
import bench_stack
import bench_templates


def main() -> None:
    results = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "python": platform.python_version(),
        "core": bench_core.main(),
        "guard": bench_guard.main(),
        "seeds": bench_seeds.main(),
        "stack": bench_stack.main(),
        "library_marginal": bench_library.main(),
        "fork_server": bench_server.main(),
        "postgres": {**bench_postgres.main(), "stacks": bench_postgres.stacks()},
        "templates": bench_templates.main(),
        "container": bench_container.main(),
        "inference": bench_inference.main(),
    }
    out = Path(__file__).parent / "results" / "latest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
