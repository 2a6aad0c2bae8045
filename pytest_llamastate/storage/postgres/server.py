"""Where the Postgres server comes from: given by URL, or started for the run.

Both kinds have one surface, :func:`acquire` returning a :class:`PostgresServer` with an
admin ``url`` and ``release()`` (like pytest-postgresql's executor / executor_noop).

A throwaway server runs from the binaries of the ``pgserver`` package (PostgreSQL with
pip alone) or ``initdb``/``postgres`` found on the machine, on a data folder the caller
names, so named persistent databases survive runs. It listens on TCP 127.0.0.1 only:
llama-stack 0.7.3's ``sql_postgres`` puts ``host:port`` into its SQLAlchemy URL, so a
unix-socket host fails at the first SQL write.

One server per data folder, shared by every process that acquires it (xdist workers,
concurrent runs), stopped when the last one is gone, even one killed with SIGKILL. The
reference count is the kernel's: each user holds a shared ``flock`` on ``users.lock``
for as long as it uses the server, and a watchdog process, the postmaster's parent, polls
for an exclusive lock; once it gets one, nobody is left and it stops the server. The
postmaster gets a parent-death signal (Linux ``PR_SET_PDEATHSIG``), so it also goes if
the watchdog is killed. ``initdb`` and ``postgres`` refuse to run as root, so as root
they run as the system user ``pgserver``, on a data folder of that user's own (``root``
module): the caller's folder keeps the locks, password, log and a link to it.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import secrets
import select
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ...releases.install import install_command
from . import watchdog

__all__ = ["PostgresServer", "acquire", "find_binaries"]

_SUPERUSER = "postgres"


@dataclass
class PostgresServer:
    """A server the plugin may use: ``url`` names its admin database and a CREATEDB role."""

    url: str
    #: Whether the plugin started it (a throwaway server) or was given it.
    started: bool
    data_dir: Path | None = None
    log_path: Path | None = None
    _users_fd: int | None = None
    #: How much of ``log_path`` was there when this process joined the server.
    _log_start: int = 0

    def explain(self, exc: BaseException) -> str | None:
        """What a throwaway server adds to a failed call, naming its data folder: where its
        disk ran full, or the last ``PANIC`` (else ``FATAL``) its log got since this
        process joined it when it went away (a full disk stops it); else ``None``."""
        from .client import is_unreachable

        if self.log_path is None or self.data_dir is None:
            return None
        data = (self.data_dir / "pgdata").resolve()  # as root, a link to the server user's
        if type(exc).__name__ == "DiskFullError":
            return f"{exc} (data folder: {data})"
        if not is_unreachable(exc):
            return None
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_start)
                lines = log.read().decode(errors="replace").splitlines()
        except OSError:
            return None
        for level in ("PANIC:", "FATAL:"):
            said = [line[line.index(level) :] for line in lines if level in line]
            if said:
                cause = " ".join(said[-1].split())
                where = f"data folder: {data}; log: {self.log_path}"
                return f"the throwaway Postgres stopped: {cause} ({where})"
        return None

    def release(self) -> None:
        """Stop using the server; the last user of a throwaway server stops it."""
        if self._users_fd is not None:
            fd, self._users_fd = self._users_fd, None
            os.close(fd)  # drops the shared lock; the watchdog does the rest


def acquire(
    url: str | None = None, *, data_dir: Path | None = None, timeout: float = 60.0
) -> PostgresServer:
    """The server at ``url`` (checked), or a throwaway one on ``data_dir``."""
    from .client import PostgresError, check_server

    if url:
        return PostgresServer(str(check_server(url)), started=False)
    if data_dir is None:
        raise PostgresError("no Postgres URL and no data folder for a throwaway server")
    return _acquire_throwaway(Path(data_dir).absolute(), timeout)


def find_binaries() -> Path | None:
    """A folder with ``initdb`` and ``postgres``: pgserver's, else the machine's."""
    spec = importlib.util.find_spec("pgserver")  # finds it without importing it
    candidates = []
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10
            )
            candidates.append(Path(out.stdout.strip()))
    candidates += [Path(p).parent for p in [shutil.which("postgres")] if p]
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    return None


def _acquire_throwaway(root: Path, timeout: float) -> PostgresServer:
    from filelock import FileLock, Timeout

    from .client import PostgresError, PostgresURL, check_server
    from .root import binaries_for, run_as_user

    bin_dir = find_binaries()
    if bin_dir is None:
        raise PostgresError(
            "no Postgres to start a throwaway server: "
            f"{install_command('postgres')}, or pass --llama-postgres-url for a server you run"
        )
    root.mkdir(parents=True, exist_ok=True)
    try:
        start_lock = FileLock(str(root / "start.lock")).acquire(timeout=timeout)
    except Timeout:
        raise PostgresError(
            f"{root}: another process holds start.lock for over {timeout:g}s"
        ) from None
    with start_lock:
        fd = os.open(root / "users.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits while a watchdog is stopping its server
            user = run_as_user()
            pgdata = _pgdata(root, user)
            if user:
                bin_dir = binaries_for(bin_dir, user)
            password = _credentials(root, pgdata, bin_dir, user)
            state = _read_state(root)
            log_start = _size(root / "server.log")
            if state is None:
                state = _spawn_watchdog(root, pgdata, bin_dir, user, timeout)
            url = PostgresURL(_SUPERUSER, password, "127.0.0.1", int(state["port"]), "postgres")
            check_server(url)
        except BaseException:
            os.close(fd)
            raise
    return PostgresServer(str(url), True, root, root / "server.log", fd, log_start)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_state(root: Path) -> dict[str, int] | None:
    """The running server of ``root`` (``server.json``), if its watchdog is alive.

    Alive means holding ``watchdog.lock``: a pid check would take a zombie or a reused
    pid for a watchdog, a lock goes with the process, however it ended.
    """
    fd = os.open(root / "watchdog.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None  # nobody holds it: no watchdog, whatever server.json says
    except BlockingIOError:
        pass
    finally:
        os.close(fd)
    try:
        state = json.loads((root / "server.json").read_text(encoding="utf-8"))
        return {"port": int(state["port"]), "watchdog": int(state["watchdog"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _pgdata(root: Path, user: str | None) -> Path:
    """The data folder: in ``root``, or as root a folder of the server user's own
    (``root`` module), ``root/pgdata`` linking to it; made (empty) if missing."""
    from .root import data_folder

    if user:
        return data_folder(root, user)
    pgdata = root / "pgdata"
    pgdata.mkdir(mode=0o700, exist_ok=True)
    return pgdata


def _credentials(root: Path, pgdata: Path, bin_dir: Path, user: str | None) -> str:
    """The superuser's password, making the cluster (``initdb``) on first use."""
    from .client import PostgresError
    from .root import as_user

    secret = root / "password"
    if (pgdata / "PG_VERSION").is_file():
        if not secret.is_file():
            raise PostgresError(f"{root}: a cluster without its password file; delete the folder")
        return secret.read_text(encoding="utf-8").strip()
    password = secrets.token_hex(16)  # URL-safe: 0.7.3 puts it into a URL unquoted
    for leftover in pgdata.iterdir():  # a half-made cluster: initdb wants an empty folder
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()
    # Beside the data folder, where its user reaches it too.
    pwfile = pgdata.parent / f".pw-{pgdata.name}-{os.getpid()}"
    with os.fdopen(os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        out.write(password)
    if user:
        import pwd

        entry = pwd.getpwnam(user)
        os.chown(pwfile, entry.pw_uid, entry.pw_gid)
    command = [
        str(bin_dir / "initdb"), "-D", str(pgdata), "-U", _SUPERUSER, "-E", "UTF8",
        f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync",
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, **as_user(user))
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode:
        lines = done.stderr.strip().splitlines() or ["no output"]
        first = next((line for line in lines if "error" in line.lower()), lines[-1])
        raise PostgresError(f"{pgdata}: initdb failed: {first}")
    secret.write_text(password, encoding="utf-8")
    secret.chmod(0o600)
    return password


def _spawn_watchdog(
    root: Path, pgdata: Path, bin_dir: Path, user: str | None, timeout: float
) -> dict[str, int]:
    from .client import PostgresError
    from .root import as_user

    (root / "server.json").unlink(missing_ok=True)
    child = json.dumps(as_user(user))  # how the watchdog runs postgres
    command = [sys.executable, watchdog.__file__, str(root), str(pgdata), str(bin_dir), child]
    with (root / "server.log").open("ab") as log:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline().decode(errors="replace").strip() if ready else ""
    proc.stdout.close()
    if not line.startswith("ready "):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(10)
        cause = line.removeprefix("error ") or f"not ready within {timeout:g}s"
        raise PostgresError(f"{root}: the throwaway Postgres did not start: {cause}")
    # Not waited for: the watchdog outlives this process if other users remain.
    return {"port": int(line.split()[1]), "watchdog": proc.pid}
