"""Reading what an inner pytest run printed about its stores."""

from __future__ import annotations

from pathlib import Path

import pytest


def kept_stores(result: pytest.RunResult) -> list[Path]:
    """The store paths the terminal summary lists under 'llama stores kept'."""
    lines = result.outlines
    if not any("llama stores kept" in line for line in lines):
        return []
    start = next(i for i, line in enumerate(lines) if "llama stores kept" in line) + 1
    paths = []
    for line in lines[start:]:
        if line.startswith("  psql "):  # a kept store's database, on Postgres
            continue
        if line.startswith("=") or ": " not in line:
            break
        paths.append(Path(line.rsplit(": ", 1)[1]))
    return paths
