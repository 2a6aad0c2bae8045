"""A throwaway Postgres started by root: run as the system user ``pgserver``, on folders
that user always reaches and nobody else does.

``initdb`` and ``postgres`` refuse to run as root, so as root they run as ``pgserver``
(the user the pgserver package uses). That user reaches its data folder and binaries by
path at every start, and a user's own folders may be private or become private at any
time: root's home is 0700, and pytest makes its basetemp root 0700 again at every session
start. So nothing the server reads lives there: its data folder is a folder of its own
under the system temp folder, owned by that user, mode 0700, one per plugin folder (the
plugin folder keeps a symlink to it, its locks, its password and its log), and binaries
that user cannot reach are linked (or copied) beside it. The plugin changes the
permissions of no folder it did not create.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ...process.lifetime import alive

__all__ = ["as_user", "binaries_for", "data_folder", "run_as_user"]

_SYSTEM_USER = "pgserver"
#: The plugin's folder under the system temp folder: root's, 0711 (passable, not listable).
_BASE = "pytest-llamastate-postgres"


def run_as_user() -> str | None:
    """The system user to run Postgres as: ``pgserver`` as root (created if missing)."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", _SYSTEM_USER],
            check=True,
            capture_output=True,
        )
    return _SYSTEM_USER


def as_user(user: str | None) -> dict[str, Any]:
    """Popen arguments that run a child as ``user`` with that user's group only.

    Keeping root's group would make root-owned ``0701`` folders untraversable: the group
    bits, not the other bits, apply to a member of the owning group.
    """
    if not user:
        return {}
    import pwd

    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def _reaches(path: Path, user: str) -> bool:
    """Whether ``user`` (in its own group only) can pass through every folder down to
    ``path``, ``path`` included: the modes as they are now, nothing changed."""
    import pwd

    entry = pwd.getpwnam(user)
    for folder in [*reversed(path.parents), path]:
        try:
            st = folder.stat()
        except OSError:
            return False
        if st.st_uid == entry.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid == entry.pw_gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def _base(user: str) -> Path:
    """``<temp>/pytest-llamastate-postgres``, root's and 0711, in the first of the system
    temp folder, ``/tmp`` and ``/var/tmp`` that ``user`` reaches."""
    from .client import PostgresError

    temps = dict.fromkeys([Path(tempfile.gettempdir()), Path("/tmp"), Path("/var/tmp")])
    for temp in temps:
        if not _reaches(temp, user):
            continue
        base = temp / _BASE
        with contextlib.suppress(FileExistsError):
            base.mkdir(mode=0o711)
        st = base.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
            raise PostgresError(
                f"{base}: not a folder of root's that only root writes to; remove it"
            )
        if st.st_mode & 0o777 != 0o711:
            base.chmod(0o711)  # ours: made by the plugin
        return base
    raise PostgresError(
        f"no temp folder the {user} user can reach ({', '.join(map(str, temps))}): the "
        "throwaway Postgres cannot run as root here; pass --llama-postgres-url"
    )


def data_folder(root: Path, user: str) -> Path:
    """The data folder of the throwaway server of plugin folder ``root``, as root: made
    empty (for ``initdb``) if it is not there, owned by ``user``, 0700; ``root/pgdata``
    is a symlink to it, and ``<folder>.root`` names ``root``. Data folders whose plugin
    folder is gone (a deleted project's, a pytester run's) are removed."""
    import pwd

    base = _base(user)
    _prune(base)
    folder = base / hashlib.sha256(str(root.absolute()).encode()).hexdigest()[:16]
    link = root / "pgdata"
    # Owner, link, folder: in this order, so a concurrent prune never sees a folder unowned.
    folder.with_suffix(".root").write_text(str(root.absolute()), encoding="utf-8")
    entry = pwd.getpwnam(user)
    if link.is_dir() and not link.is_symlink():  # an earlier release's, in the user's folders
        if folder.exists():
            shutil.rmtree(link)
        else:
            shutil.move(link, folder)  # its persistent databases move along
            for path in [folder, *folder.rglob("*")]:
                os.lchown(path, entry.pw_uid, entry.pw_gid)
    if not (link.is_symlink() and link.readlink() == folder):
        link.unlink(missing_ok=True)
        link.symlink_to(folder, target_is_directory=True)
    if not folder.is_dir():
        folder.mkdir(mode=0o700)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    return folder


def _prune(base: Path) -> None:
    for folder in base.iterdir():
        if folder.name.startswith(("pginstall-", ".")) or not folder.is_dir():
            continue
        owner = folder.with_suffix(".root")
        linked = False
        with contextlib.suppress(OSError):
            linked = (Path(owner.read_text(encoding="utf-8")) / "pgdata").readlink() == folder
        if not linked and not _postmaster_alive(folder):
            shutil.rmtree(folder, ignore_errors=True)
            owner.unlink(missing_ok=True)


def _postmaster_alive(folder: Path) -> bool:
    try:
        pid = int((folder / "postmaster.pid").read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError):
        return False
    return alive(pid)


def binaries_for(bin_dir: Path, user: str) -> Path:
    """``bin_dir`` if ``user`` reaches it; else the same installation (``bin_dir``'s parent:
    bin, lib, share) hard-linked (copied across file systems) into the plugin's temp
    folder, once per installation, and its ``bin`` there."""
    if _reaches(bin_dir, user):
        return bin_dir
    install = bin_dir.parent
    marker = (bin_dir / "postgres").stat()
    key = f"{install.absolute()}:{marker.st_ino}:{marker.st_mtime_ns}"
    base = _base(user)
    target = base / f"pginstall-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if not target.is_dir():
        partial = Path(tempfile.mkdtemp(prefix=".pginstall-", dir=base))
        try:
            shutil.copytree(install, partial / "i", symlinks=True, copy_function=_link_or_copy)
            for folder, _, _ in os.walk(partial / "i"):
                os.chmod(folder, 0o755)  # ours; the files keep their modes
            with contextlib.suppress(OSError):  # another process was faster: use its copy
                (partial / "i").rename(target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return target / bin_dir.name


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
