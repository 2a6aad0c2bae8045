"""Container mode's stack per test against a bare ``podman run`` of the same image.

Per-test cycle, both ways: start to a healthy ``/v1/health``, one call (list files), stop;
each phase is reported too.
``plugin``: ``LlamaStackFactory(mode="container")`` on a fresh store (port claim, config
written, the run line, labels, the log in the store, the client), ``close()`` (the
container killed and removed). ``bare``: the engine's ``run -d`` of the image
serving the same config on a store folder, polled every 50 ms, then ``kill`` and
``wait`` (until ``--rm`` removed it). Alternating
in one run, median of ``ROUNDS``, after one unmeasured start of each (page cache).
The image is the suite's (tests/container_image.py).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from container_image import usable

from pytest_llamastate.releases import detect
from pytest_llamastate.stack import ContainerRuntime, LlamaStackFactory
from pytest_llamastate.stack.engine import Engine, state_mount
from pytest_llamastate.state.store import LlamaStore, state_env

ROUNDS = int(os.environ.get("BENCH_CONTAINER_ROUNDS", "5"))
FLAVOR = detect()


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return dict(json.load(response))


def _bare(engine: Engine, image: str, store: Path) -> tuple[float, float]:
    """(start to healthy + one call, stop): ``run -d``, poll, ``kill`` (the plugin's stop of
    a test's store), wait until ``--rm`` removed it."""
    store.mkdir()
    shutil.copy(FLAVOR.default_config, store / "stack.yaml")
    port, mount = _port(), state_mount(FLAVOR)
    env = [f"-e{key}={value}" for key, value in state_env(Path(mount)).items()]
    cli, *inner = FLAVOR.run_command(Path(mount / "stack.yaml"), port, FLAVOR.cli)
    start = time.perf_counter()
    started = engine.call(
        "run", "-d", "--rm", "--network=host", "-v", f"{store}:{mount}", *env,
        f"--entrypoint={cli}", image, *inner,
    )  # fmt: skip
    cid = started.stdout.strip()
    while True:
        try:
            if _get(f"http://127.0.0.1:{port}/v1/health").get("status") == "OK":
                break
        except OSError:
            time.sleep(0.05)
    _get(f"http://127.0.0.1:{port}/v1/files")
    ready = time.perf_counter()
    engine.call("kill", cid)
    engine.call("wait", cid)
    return ready - start, time.perf_counter() - ready


def _plugin(factory: LlamaStackFactory, store_path: Path) -> tuple[float, float]:
    start = time.perf_counter()
    stack = factory.start(LlamaStore.create(store_path))
    stack.client.files.list()
    ready = time.perf_counter()
    stack.close()
    return ready - start, time.perf_counter() - ready


def main() -> dict[str, object]:
    found = usable()
    if isinstance(found, str):
        return {"skipped": found}
    engine, image = found
    factory = LlamaStackFactory(
        "container", FLAVOR.default_config, flavor=FLAVOR, container=ContainerRuntime(engine, image)
    )
    plugin: list[tuple[float, float]] = []
    bare: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        _bare(engine, image, Path(tmp, "warm-bare"))
        _plugin(factory, Path(tmp, "warm-plugin"))
        for i in range(ROUNDS):
            bare.append(_bare(engine, image, Path(tmp, f"bare-{i}")))
            plugin.append(_plugin(factory, Path(tmp, f"plugin-{i}")))

    def median(runs: list[tuple[float, float]], part: int | None = None) -> float:
        return statistics.median(r[part] if part is not None else sum(r) for r in runs)

    return {
        "engine": engine.name,
        "flavor": FLAVOR.name,
        "rounds": ROUNDS,
        "cores": os.cpu_count(),
        "bare_run_s": round(median(bare), 3),
        "bare_ready_s": round(median(bare, 0), 3),
        "bare_stop_s": round(median(bare, 1), 3),
        "plugin_container_s": round(median(plugin), 3),
        "plugin_ready_s": round(median(plugin, 0), 3),
        "plugin_stop_s": round(median(plugin, 1), 3),
        "ratio": round(median(plugin) / median(bare), 3),
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
