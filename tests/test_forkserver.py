"""The fork server: real servers forked from a zygote, as `llama stack run` would serve them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ports import nothing_listens

from pytest_llamastate.releases import detect, server_shortcuts
from pytest_llamastate.stack import forkserver
from pytest_llamastate.state.store import state_env

_PACKAGE = Path(__file__).resolve().parent.parent / "pytest_llamastate"


FLAVOR = detect()
CONFIGS = _PACKAGE / "configs"
#: The default config, plus the prompts API (OGX serves ``/v1/prompts`` only when asked):
#: a route that writes to the store, on both flavors.
PROMPTS_CONFIG = (
    (CONFIGS / FLAVOR.config_template)
    .read_text()
    .replace("- tool_runtime\n", "- tool_runtime\n- prompts\n", 1)
)

pytestmark = [
    pytest.mark.skipif(not FLAVOR.installed(), reason="needs llama-stack or ogx"),
    pytest.mark.skipif(not forkserver.ForkServer.supported(), reason="needs os.fork"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


def _http(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


class Server:
    """A spawned server and what a test needs of it."""

    def __init__(self, fork: Any, store: Path, config: Path | None = None) -> None:
        store.mkdir(parents=True, exist_ok=True)
        if config is None:
            config = store / "stack.yaml"
            config.write_text(PROMPTS_CONFIG)
        self.store, self.port = store, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = store / "server.log"
        self.child = fork.spawn(
            config_path=config,
            port=self.port,
            env={**os.environ, **state_env(store)},
            log_path=self.log,
            cwd=store,
        )

    def ready(self) -> Server:
        self.child.wait_ready(60)
        return self

    def prompts(self) -> list[str]:
        return sorted(p["prompt"] for p in _http(f"{self.url}/v1/prompts")["data"])


@pytest.fixture(scope="module")
def fork() -> Iterator[Any]:
    """A zygote as the plugin's: with the release's server shortcuts."""
    server = forkserver.ForkServer(FLAVOR, server_shortcuts(FLAVOR))
    yield server
    server.close()


def test_serves_health_and_the_cli_routes(fork: Any, tmp_path: Path) -> None:
    config = CONFIGS / FLAVOR.config_template
    server = Server(fork, tmp_path / "fork", config).ready()
    assert _http(f"{server.url}/v1/health") == {"status": "OK"}
    forked = _http(f"{server.url}/openapi.json")
    server.child.stop(grace=0)

    store, port = tmp_path / "exec", _free_port()
    store.mkdir()
    cli = Path(sys.executable).with_name(FLAVOR.cli)
    with (store / "server.log").open("ab") as log:
        proc = subprocess.Popen(
            [str(cli), *FLAVOR.run_args, str(config), "--port", str(port), *FLAVOR.server_flags],
            env={**os.environ, **state_env(store)},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=store,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                executed = _http(f"http://127.0.0.1:{port}/openapi.json")
                break
            except (OSError, urllib.error.URLError):
                assert proc.poll() is None, (store / "server.log").read_text()[-2000:]
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert "/v1/health" in forked["paths"]
    assert forked == executed  # every route, parameter and model: prebuilt routers too


def test_state_and_environment_are_the_stores(fork: Any, tmp_path: Path) -> None:
    server = Server(fork, tmp_path / "store").ready()
    _http(f"{server.url}/v1/prompts", {"prompt": "only here"})
    assert (server.store / "kvstore.db").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
    if Path(f"/proc/{server.child.pid}/cwd").exists():
        assert os.readlink(f"/proc/{server.child.pid}/cwd") == str(server.store)
    server.child.stop(grace=0)
    assert "Uvicorn running on" in server.log.read_text()


def test_two_servers_at_once_are_isolated(fork: Any, tmp_path: Path) -> None:
    one, two = Server(fork, tmp_path / "one"), Server(fork, tmp_path / "two")
    one.ready(), two.ready()
    _http(f"{one.url}/v1/prompts", {"prompt": "for one"})
    assert one.prompts() == ["for one"]
    assert two.prompts() == []
    one.child.stop(grace=0), two.child.stop(grace=0)


@pytest.mark.parametrize("grace", [0.0, 10.0], ids=["sigkill", "sigterm"])
def test_stop_frees_the_port_and_a_restart_keeps_the_state(
    fork: Any, tmp_path: Path, grace: float
) -> None:
    server = Server(fork, tmp_path / "store").ready()
    _http(f"{server.url}/v1/prompts", {"prompt": "survives"})
    code = server.child.stop(grace=grace)
    assert code == (-signal.SIGKILL if grace == 0 else -signal.SIGTERM)
    assert server.child.poll() == code
    assert nothing_listens(server.port)
    assert not _alive(server.child.pid)
    again = Server(fork, server.store).ready()
    assert again.prompts() == ["survives"]
    again.child.stop(grace=grace)


def test_a_kill_not_waited_for_is_reaped_and_reported_later(fork: Any, tmp_path: Path) -> None:
    server = Server(fork, tmp_path / "store").ready()
    _http(f"{server.url}/v1/prompts", {"prompt": "committed"})
    assert server.child.stop(grace=0, wait=False) is None  # the signal sent, nothing read
    assert server.child.wait(10) == -signal.SIGKILL  # the zygote's word, read later
    assert not _alive(server.child.pid)
    assert nothing_listens(server.port)
    again = Server(fork, server.store).ready()  # the same store, port and zygote
    assert again.prompts() == ["committed"]
    again.child.stop(grace=0)


def test_a_server_that_fails_reports_its_code_and_logs_why(fork: Any, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    text = (CONFIGS / FLAVOR.config_template).read_text()
    config.write_text(text.replace("remote::model-context-protocol", "remote::no-such-thing"))
    server = Server(fork, tmp_path / "store", config)
    with pytest.raises(forkserver.ChildExitedError) as caught:
        server.ready()
    if FLAVOR.name == "llama-stack":  # `ogx run` itself exits 0 after a failed start-up
        assert caught.value.returncode != 0
    assert server.child.poll() == caught.value.returncode
    assert "remote::no-such-thing" in server.log.read_text()


REBASE = """
import os
from pytest_llamastate.stack import zygote
from {core}.utils import config_dirs, config_resolution
os.environ[{var!r}] = {new!r}
zygote.rebase_config_dirs({core!r})
print(config_dirs.DISTRIBS_BASE_DIR, config_resolution.DISTRIBS_BASE_DIR)
"""


def test_config_folder_constants_follow_the_childs_environment(tmp_path: Path) -> None:
    """Imported in the zygote, they must still name the store's config folder."""
    new = str(tmp_path / "new")
    script = REBASE.format(core=FLAVOR.core, var=FLAVOR.config_dir_var, new=new)
    env = {**os.environ, FLAVOR.config_dir_var: str(tmp_path / "old")}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == [f"{new}/distributions"] * 2


DRIVER = """
import json, os, sys, time, importlib.util, types
from pathlib import Path
sys.path.insert(0, {tests!r})
import test_forkserver as t
fork = t.forkserver.ForkServer(t.FLAVOR)
server = t.Server(fork, Path({store!r})).ready()
print(json.dumps({{"zygote": fork._proc.pid, "child": server.child.pid, "port": server.port}}), flush=True)
time.sleep(600)
"""


def test_a_sigkilled_parent_leaves_no_zygote_no_server_and_a_free_port(tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(
        textwrap.dedent(DRIVER.format(tests=str(Path(__file__).parent), store=str(tmp_path / "s")))
    )
    driver = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, cwd=tmp_path)
    assert driver.stdout is not None
    line = driver.stdout.readline()
    assert line, f"the driver exited with code {driver.wait()}"
    pids = json.loads(line)
    assert _alive(pids["zygote"])
    assert _alive(pids["child"])
    assert not nothing_listens(pids["port"])
    driver.kill()
    driver.wait()
    deadline = time.monotonic() + 5
    while _alive(pids["zygote"]) or _alive(pids["child"]) or not nothing_listens(pids["port"]):
        assert time.monotonic() < deadline, f"left behind: {pids}"
        time.sleep(0.05)


def test_close_stops_every_server_and_the_zygote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """And no temporary file is left: a server's ``TMPDIR`` is the zygote's, removed when
    it ends, SIGKILL included (OGX 1.5 wrote one ``ogx-run-*.yaml`` per server to /tmp);
    the folder of a zygote that died with a killed run is removed by the next one."""
    temp = tmp_path / "tmp"
    (temp / "llamastate-servers-999999999-old" / "12").mkdir(parents=True)
    monkeypatch.setenv("TMPDIR", str(temp))
    fork = forkserver.ForkServer(FLAVOR)
    killed = Server(fork, tmp_path / "killed").ready()
    server = Server(fork, tmp_path / "store").ready()
    (root,) = temp.iterdir()
    assert sorted(p.name for p in root.iterdir()) == sorted(
        str(s.child.pid) for s in (killed, server)
    )
    killed.child.stop(grace=0)
    assert [p.name for p in root.iterdir()] == [str(server.child.pid)]
    zygote = fork._proc.pid
    fork.close()
    assert server.child.returncode == -signal.SIGKILL
    assert not _alive(zygote)
    assert nothing_listens(server.port)
    assert list(temp.iterdir()) == []


def test_a_report_cut_short_teaches_the_zygote_nothing_and_it_goes_on() -> None:
    """A child stopped while it reported (a restart's SIGKILL mid-write) leaves half a JSON
    text in the pipe: the zygote must not die of it (it did, on llama-stack 0.2.12)."""
    from pytest_llamastate.stack import zygote

    learned: list[Any] = []
    said: list[dict[str, Any]] = []
    fake = type("Z", (), {})()
    fake.reports, fake.say = {}, said.append
    fake.readymade = type("R", (), {"learn": staticmethod(learned.append)})()
    read, write = os.pipe()
    fake.reports[read] = (4242, bytearray())
    os.write(write, b'ready\n{"modules": ["json", "unfinish')
    os.close(write)
    while read in fake.reports:
        zygote._Zygote.read_report(fake, read)
    assert said == [{"pid": 4242, "ready": True}]
    assert learned == []
