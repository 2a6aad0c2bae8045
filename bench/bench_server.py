"""Server-mode stacks forked from a zygote against a bare ``llama stack run``.

Per-test cycle: start to a healthy ``/v1/health``, one more GET of it (the client call),
stop. ``fork``: on a fresh store the schema files the plugin's server backend creates
(``shortcuts.server_schema``), then :class:`~pytest_llamastate.stack.forkserver.ForkServer`
spawns (with the release's server shortcuts, as the plugin's), the child says when it
listens, stopped with SIGTERM (``fork_sigterm``: uvicorn's graceful shutdown) or SIGKILL
(``fork_sigkill``: every registry write is already committed, the plugin's way, not
waiting for the kernel to free the killed server's memory; ``fork_sigkill_waited``:
waiting, as the plugin did before).
``fork_no_shortcuts``: the same SIGKILL cycle from a zygote without the server shortcuts
(``readymade``: as before them).
``exec``: the CLI as a subprocess in its own group, polled every 20 ms, SIGTERM to the
group. Alternating in one run, median of ``ROUNDS``; ``restart``: stop + spawn + ready on
the same store; ``fork_no_schema``: a SIGKILL cycle without the schema files (as before).
``*_child_cpu_s``: the CPU the forked child used up to its stop (``/proc``; it scatters
less than wall time on a shared machine); ``*_cpu_s``: that plus the CPU of this process
(the plugin's side) and of the zygote (the fork) during the cycle: what one more test costs
the machine, about its wall time on idle cores. The first stack (the zygote starts, imports
and learns) is reported apart.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from pytest_llamastate.releases import detect, server_shortcuts
from pytest_llamastate.stack import shortcuts
from pytest_llamastate.stack.forkserver import ForkServer, ServerChild
from pytest_llamastate.state.store import state_env

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "10"))
FLAVOR = detect()
CONFIG = Path(__file__).resolve().parent.parent / "pytest_llamastate" / "configs"


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _health(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=10) as r:
            return bool(json.load(r).get("status") == "OK")
    except OSError:
        return False


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` used so far (Linux ``/proc``; 0 else)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _fork_cycle(
    server: ForkServer, store: Path, grace: float, schema: bool = True, wait: bool = False
) -> tuple[float, float, float]:
    """Wall seconds of one cycle, the CPU seconds its child used up to the stop, and those
    plus the CPU of this process and of the zygote during the cycle."""
    store.mkdir(exist_ok=True)
    port = _port()
    config = CONFIG / FLAVOR.config_template
    zygote = getattr(server, "_proc", None)
    before = time.process_time() + (_cpu_s(zygote.pid) if zygote else 0.0)
    start = time.perf_counter()
    # As the plugin's server backend does (``schema=False``: as it did before).
    with shortcuts.server_schema(FLAVOR, config, store if schema else None) as skipped:
        child = server.spawn(
            config_path=config,
            port=port,
            env={**os.environ, **state_env(store)},
            log_path=store / "server.log",
            cwd=store,
            schema=skipped,
        )
        child.wait_ready(60)
    assert _health(port)
    cpu = _cpu_s(child.pid)
    child.stop(grace=grace, wait=wait)
    wall = time.perf_counter() - start
    zygote = getattr(server, "_proc", None)
    after = time.process_time() + (_cpu_s(zygote.pid) if zygote else 0.0)
    return wall, cpu, cpu + after - before


def _restart(server: ForkServer, store: Path) -> float:
    store.mkdir(exist_ok=True)
    port, config, env = _port(), CONFIG / FLAVOR.config_template, state_env(store)

    def spawn() -> ServerChild:
        child = server.spawn(
            config_path=config,
            port=port,
            env={**os.environ, **env},
            log_path=store / "server.log",
            cwd=store,
        )
        child.wait_ready(60)
        return child

    first = spawn()
    start = time.perf_counter()
    first.stop(grace=10)
    again = spawn()
    elapsed = time.perf_counter() - start
    again.stop(grace=0)
    return elapsed


def _exec_cycle(store: Path) -> float:
    store.mkdir(exist_ok=True)
    port = _port()
    cli = Path(sys.executable).with_name(FLAVOR.cli)
    config = CONFIG / FLAVOR.config_template
    command = [str(cli), *FLAVOR.run_args, str(config), "--port", str(port), *FLAVOR.server_flags]
    start = time.perf_counter()
    with (store / "server.log").open("ab") as log:
        proc = subprocess.Popen(
            command,
            env={**os.environ, **state_env(store)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=store,
            start_new_session=True,
        )
    while not _health(port):
        assert proc.poll() is None, (store / "server.log").read_text()[-2000:]
        time.sleep(0.02)
    assert _health(port)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait()
    return time.perf_counter() - start


def main() -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-server-"))
    server, plain = ForkServer(FLAVOR, server_shortcuts(FLAVOR)), ForkServer(FLAVOR)
    first = _fork_cycle(server, tmp / "first", 10)[0]  # zygote start, import, learning
    _fork_cycle(plain, tmp / "first_plain", 10)
    runs: dict[str, list[float]] = {
        k: [] for k in ("exec", "fork_sigterm", "fork_sigkill", "fork_no_shortcuts")
    }
    runs.update(fork_no_schema=[], fork_sigkill_waited=[], restart=[])
    kill = {"fork_sigkill": (server, True, False), "fork_no_shortcuts": (plain, True, False)}
    kill.update(fork_no_schema=(server, False, False), fork_sigkill_waited=(server, True, True))
    cpu: dict[str, list[float]] = {k: [] for k in kill}
    total: dict[str, list[float]] = {k: [] for k in kill}
    try:
        for n in range(ROUNDS):
            runs["exec"].append(_exec_cycle(tmp / f"exec{n}"))
            runs["fork_sigterm"].append(_fork_cycle(server, tmp / f"term{n}", 10)[0])
            for name, (zygote, schema, wait) in kill.items():
                wall, used, all_used = _fork_cycle(zygote, tmp / f"{name}{n}", 0, schema, wait)
                runs[name].append(wall)
                cpu[name].append(used)
                total[name].append(all_used)
            runs["restart"].append(_restart(server, tmp / f"restart{n}"))
    finally:
        server.close()
        plain.close()
    med = {k: statistics.median(v) for k, v in runs.items()}
    ratios = [a / b for a, b in zip(total["fork_sigkill"], total["fork_no_shortcuts"], strict=True)]
    return {
        "flavor": f"{FLAVOR.name} {FLAVOR.version()}",
        "rounds": ROUNDS,
        "server_shortcuts": sorted(server_shortcuts(FLAVOR)),
        "first_fork_stack_s": round(first, 3),
        **{f"{k}_s": round(v, 3) for k, v in med.items()},
        **{f"{k}_child_cpu_s": round(statistics.median(v), 3) for k, v in cpu.items()},
        **{f"{k}_cpu_s": round(statistics.median(v), 3) for k, v in total.items()},
        "fork_sigterm_ratio": round(med["fork_sigterm"] / med["exec"], 3),
        "fork_sigkill_ratio": round(med["fork_sigkill"] / med["exec"], 3),
        "shortcuts_wall_ratio": round(med["fork_sigkill"] / med["fork_no_shortcuts"], 3),
        "shortcuts_cpu_ratio_median_of_rounds": round(statistics.median(ratios), 3),
        "cpus": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 1),
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
