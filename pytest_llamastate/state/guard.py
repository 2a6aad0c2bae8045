"""Catch tests that write to a developer's real Llama Stack / OGX home.

Isolation that silently fails looks exactly like isolation that works, until a developer's
``~/.llama`` holds a toolgroup from the test suite. The guard names every path under the
real homes that a test created, changed or removed.

Walking the homes around each test costs what they hold (20,000 files: +147 ms a test), so
on Linux the kernel watches: inotify on every folder of the homes (on the nearest existing
parent of a home not made yet), set up once; per test, a non-blocking read of the queue.
The kernel queues an event within the syscall that caused it, so the read at teardown has
all the test did, at the cost of what it wrote. Three libc calls via ctypes: no dependency,
nothing asynchronous. Without inotify (macOS, Windows) the guard walks the homes around each
test, a cost that grows with them. If inotify gives out (queue overflow, max_user_watches),
one walk judges the test at hand (names known, ctimes since it began), then the guard
watches afresh, or walks from then on: slower, never blind.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
import struct
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..releases import FLAVORS

__all__ = ["GUARD_MODES", "GuardMode", "HomeGuard", "Mark", "Snapshot", "real_state_homes"]

GuardMode = Literal["error", "warn", "off"]
GUARD_MODES: tuple[GuardMode, ...] = ("error", "warn", "off")

#: path -> (mtime_ns, size); folders have size -1 so only their presence counts.
Snapshot = dict[str, tuple[int, int]]

_MAX_LISTED = 20

# <sys/inotify.h>: _NEW is CREATE | MOVED_TO, _GONE is DELETE | MOVED_FROM, _SELF is
# DELETE_SELF | MOVE_SELF | UNMOUNT | IGNORED (the watched folder itself is done for).
_IN_MODIFY, _IN_ATTRIB, _NEW, _GONE, _SELF = 0x2, 0x4, 0x180, 0x240, 0xAC00
_IN_Q_OVERFLOW, _IN_IGNORED, _IN_ONLYDIR, _IN_ISDIR = 0x4000, 0x8000, 0x1000000, 0x40000000
# MASK_ADD (0x20000000): a folder may be both a home's and the parent through which
# another home is watched; adding one mask must not drop the other's events.
_ANCHOR_MASK = _NEW | _GONE | 0xC00 | _IN_ONLYDIR | 0x20000000
_TREE_MASK = _ANCHOR_MASK | _IN_MODIFY | _IN_ATTRIB
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name
# The kernel stamps ctime from a clock that may lag ours by a tick (10 ms at HZ=100).
_SLACK_NS = 20_000_000


def real_state_homes(environ: Mapping[str, str]) -> list[Path]:
    """The user's real state homes; call before anything points the environment elsewhere."""
    home = Path(environ.get("HOME") or os.path.expanduser("~"))
    # Both flavors' homes, whichever is installed: the OGX CLI moves ~/.llama to ~/.ogx.
    roots = [home / flavor.home for flavor in FLAVORS]
    roots += [Path(environ[f.config_dir_var]) for f in FLAVORS if f.config_dir_var in environ]
    return list(dict.fromkeys(p.absolute() for p in roots))


def _scan(root: Path, out: Snapshot) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.join(dirpath, name)] = (0, -1)
        for name in filenames:
            full = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                st = os.lstat(full)
                out[full] = (st.st_mtime_ns, st.st_size)
    if root.is_dir():
        out[str(root)] = (0, -1)


class _Lost(Exception):
    """inotify cannot vouch for what happened: the queue overflowed, or a watch failed."""


class _Inotify:
    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.rm = libc.inotify_rm_watch
        self.fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        if self.fd < 0:
            raise _Lost(f"inotify_init1: {os.strerror(ctypes.get_errno())}")

    def add(self, path: str, mask: int) -> int | None:
        """The watch, or None for a folder that is gone or unreadable (the walk skips it too)."""
        wd = int(self._add(self.fd, os.fsencode(path), mask))
        if wd >= 0:
            return wd
        err = ctypes.get_errno()
        if err in (errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.ELOOP):
            return None
        hint = " (fs.inotify.max_user_watches)" if err == errno.ENOSPC else ""
        raise _Lost(f"inotify_add_watch {path}: {os.strerror(err)}{hint}")

    def read(self) -> Iterator[tuple[int, int, str]]:
        while True:
            try:
                buf = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return
            except OSError as exc:
                raise _Lost(f"reading inotify events: {exc}") from None
            pos = 0
            while pos < len(buf):
                wd, mask, _cookie, size = _EVENT.unpack_from(buf, pos)
                pos += _EVENT.size + size
                yield wd, mask, os.fsdecode(buf[pos - size : pos].rstrip(b"\0"))


class _Watch:
    """What the homes hold (names only: stat-ing 20,000 files is the cost we avoid), kept
    current from inotify events, and which paths the current test touched."""

    def __init__(self, roots: tuple[str, ...], *, watch: bool = True, since: int = 0) -> None:
        self.roots = roots
        self.since = since  # when recovering: files with a later ctime were written
        self.dirs: dict[int, str] = {}  # wd -> folder
        self.wds: dict[str, int] = {}  # folder -> wd
        self.anchors: dict[int, tuple[str, set[str]]] = {}  # wd -> (folder, roots below)
        self.ino: dict[str, tuple[int, int]] = {}  # root -> (dev, ino) of the folder seen
        self.known: dict[str, set[str]] = {}  # folder -> names in it
        self.touched: dict[str, bool] = {}  # path -> whether it existed when the test began
        self.written: set[str] = set()
        self.recording = False  # not while listing the homes at start: 20,000 entries
        self.inotify = _Inotify() if watch else None
        try:
            for root in roots:
                self._resync(root)
        except BaseException:
            self.close()
            raise
        self.recording = True

    def close(self) -> None:
        if self.inotify is not None:
            os.close(self.inotify.fd)
        self.inotify = None

    def has(self, path: str) -> bool:
        parent, name = os.path.split(path)
        return path in self.known or name in self.known.get(parent, ())

    def drain(self) -> None:
        """Apply every queued event; only a test's own teardown has queued its last ones."""
        assert self.inotify is not None
        for wd, mask, name in self.inotify.read():
            if mask & _IN_Q_OVERFLOW:
                raise _Lost("the inotify event queue overflowed")
            if (folder := self.dirs.get(wd)) is None:
                pass
            elif not name:  # the folder itself went away or was moved
                if mask & _IN_IGNORED and self.wds.get(folder) == wd:
                    del self.wds[folder], self.dirs[wd]
                if mask & _SELF and folder in self.roots:  # its parent's watch takes over
                    self._resync(folder)
            elif mask & _GONE:
                self._gone(os.path.join(folder, name))
            elif not mask & _IN_ISDIR:  # made, written, renamed over, mode or times set
                self._touch(path := os.path.join(folder, name))
                self.written.add(path)
                self.known.setdefault(folder, set()).add(name)
            elif mask & _NEW:
                self._new(os.path.join(folder, name))
            if (anchor := self.anchors.get(wd)) is not None:
                if not name and mask & _IN_IGNORED:
                    del self.anchors[wd]
                full = os.path.join(anchor[0], name)
                for root in list(anchor[1]):
                    if not name or root == full or root.startswith(full + os.sep):
                        self._resync(root)

    def _touch(self, path: str) -> None:
        if self.recording and path not in self.touched:
            self.touched[path] = self.has(path)

    def _resync(self, root: str) -> None:
        """Bring a home's watches in line with what is at its path now, and watch the parent
        that sees it created, removed or replaced (stale parents' events are filtered)."""
        ino = None
        with contextlib.suppress(OSError):
            st = os.stat(root)
            ino = (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None
        if root in self.known and self.ino.get(root) != ino:
            self._gone(root)
        if ino is not None and root not in self.known:
            self.ino[root] = ino
            self._new(root)
        child, parent = root, os.path.dirname(root)
        while ino is None and parent != child and not os.path.isdir(parent):
            child, parent = parent, os.path.dirname(parent)
        if (wd := self._add(parent, _ANCHOR_MASK)) is None:  # vanished: restart, not blind
            raise _Lost(f"cannot watch {parent}")
        self.anchors.setdefault(wd, (parent, set()))[1].add(root)

    def _add(self, path: str, mask: int) -> int | None:  # -1: walking without watches
        return -1 if self.inotify is None else self.inotify.add(path, mask)

    def _new(self, path: str) -> None:
        """Watch a new folder first, then list it: whatever was made in it before the watch
        is in the listing, whatever comes after is an event."""
        if path in self.known:  # renamed over an empty folder
            self._gone(path)
        stack = [path]
        while stack:
            top = stack.pop()
            if (wd := self._add(top, _TREE_MASK)) is None:
                continue
            try:
                entries = list(os.scandir(top))
            except OSError:
                continue  # its watch ends with it (IN_IGNORED)
            self._touch(top)
            if top not in self.roots:
                self.known.setdefault(os.path.dirname(top), set()).add(os.path.basename(top))
            stack += [entry.path for entry in entries if entry.is_dir(follow_symlinks=False)]
            for entry in entries if self.recording or self.since else ():
                self.touched.setdefault(entry.path, False)  # new, unless _gone() said otherwise
                if self.since and not entry.is_dir(follow_symlinks=False):  # after an overflow
                    with contextlib.suppress(OSError):
                        if entry.stat(follow_symlinks=False).st_ctime_ns >= self.since:
                            self.written.add(entry.path)
            self.known[top] = {entry.name for entry in entries}
            if wd >= 0:
                self.dirs[wd], self.wds[top] = top, wd

    def _gone(self, path: str) -> None:
        self._touch(path)
        parent, name = os.path.split(path)
        self.known.get(parent, set()).discard(name)
        stack = [path] if path in self.known else []
        while stack:
            top = stack.pop()
            for name in self.known[top]:
                child = os.path.join(top, name)
                self._touch(child)
                if child in self.known:
                    stack.append(child)
            del self.known[top]
            wd = self.wds.pop(top, None)
            if wd is not None:
                del self.dirs[wd]
                if self.inotify and wd not in self.anchors:  # EINVAL if deleted: no matter
                    self.inotify.rm(self.inotify.fd, wd)

    def lines(self, before: Mapping[str, bool] | None = None) -> list[str]:
        out = []
        for path, existed in (self.touched if before is None else before).items():
            if (exists := self.has(path)) != existed:
                out.append(f"{'created' if exists else 'removed'}: {path}")
            elif existed and path in self.written and path not in self.known:
                out.append(f"changed: {path}")
        return sorted(out, key=lambda line: line.split(": ", 1)[1])


def _outermost(roots: Iterable[Path]) -> tuple[str, ...]:
    """A home inside another (``LLAMA_STACK_CONFIG_DIR=~/.llama/cfg``), or the same one
    through a symlink, is watched as part of the other: one inode, one watch."""
    real = {os.path.normpath(root): os.path.realpath(root) for root in roots}
    keep: dict[str, str] = {}  # target -> the first path to it
    for path, target in real.items():
        if not any(target.startswith(o + os.sep) for o in real.values()):
            keep.setdefault(target, path)
    return tuple(keep.values())


@dataclass(frozen=True)
class Mark:
    """When a test began (a walk after an overflow needs it), and what a scan saw then."""

    since_ns: int
    before: Snapshot | None = None


class HomeGuard:
    """``mark = begin()`` at setup, ``end(mark)`` at teardown, ``close()`` at the end; the
    first ``begin()`` (or ``start()``) sets the watches up. ``mode``: whether the kernel
    watches (``"inotify"``) or the guard walks (``"scan"``); ``fallback_reason``: why."""

    def __init__(self, roots: Iterable[Path], *, watch: bool = True) -> None:
        self.roots = tuple(dict.fromkeys(roots))
        self._watch: _Watch | None = None
        self._wanted = watch
        self.fallback_reason: str | None = None  # also: started, and walking

    @classmethod
    def for_roots(cls, roots: Iterable[Path], *, watch: bool = True) -> HomeGuard:
        return cls(roots, watch=watch)  # the name the plugin has always called

    @property
    def mode(self) -> Literal["inotify", "scan"]:
        return "inotify" if self._watch is not None else "scan"

    def start(self) -> None:
        if self._watch is not None or self.fallback_reason is not None:
            return
        if not self._wanted or not sys.platform.startswith("linux"):
            self.fallback_reason = f"no inotify on {sys.platform}" if self._wanted else "off"
            return
        try:
            self._watch = _Watch(_outermost(self.roots))
        except (_Lost, OSError, AttributeError) as exc:  # AttributeError: libc lacks it
            self.fallback_reason = str(exc)

    def begin(self) -> Mark:
        self.start()
        if self._watch is not None:
            try:  # what happened between tests is not this test's doing
                self._watch.drain()
            except _Lost as exc:
                self._recover(str(exc))
        if self._watch is not None:
            self._watch.touched.clear()
            self._watch.written.clear()
            return Mark(time.time_ns() - _SLACK_NS)
        return Mark(time.time_ns(), self.snapshot())

    def end(self, mark: Mark) -> list[str]:
        """``created|changed|removed: path`` lines, sorted by path: what the test did."""
        if self._watch is None:
            return self.changes(mark.before or {}, self.snapshot())
        try:
            self._watch.drain()
        except _Lost as exc:
            return self._recover(str(exc), mark.since_ns)
        return self._watch.lines()

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
        self._watch, self.fallback_reason = None, None

    def _recover(self, reason: str, since: int = 0) -> list[str]:
        """Judge the test by a walk against what the guard knew; watch afresh, or walk."""
        old = self._watch
        assert old is not None
        old.close()  # a new queue: the old one's remains are not worth reading
        roots = _outermost(self.roots)
        try:
            self._watch = new = _Watch(roots, since=since)
        except (_Lost, OSError) as exc:
            self._watch = None
            self.fallback_reason = f"{reason}; then {exc}"
            new = _Watch(roots, watch=False, since=since)
        new.since = 0
        if not since:
            return []
        known = [(d, ns) for w in (old, new) for d, ns in w.known.items()]
        before = {p: old.has(p) for d, ns in known for p in (d, *(os.path.join(d, n) for n in ns))}
        before.update(old.touched)
        new.written |= old.written
        return new.lines(before)

    def snapshot(self) -> Snapshot:
        out: Snapshot = {}
        for root in self.roots:
            _scan(root, out)
        return out

    @staticmethod
    def changes(before: Snapshot, after: Snapshot) -> list[str]:
        """Human-readable ``created|changed|removed: path`` lines, sorted."""
        lines = [f"created: {p}" for p in after.keys() - before.keys()]
        lines += [f"removed: {p}" for p in before.keys() - after.keys()]
        lines += [
            f"changed: {p}"
            for p in after.keys() & before.keys()
            if after[p] != before[p] and after[p][1] != -1
        ]
        return sorted(lines, key=lambda line: line.split(": ", 1)[1])

    @staticmethod
    def describe(changes: list[str]) -> str:
        listed = changes[:_MAX_LISTED]
        more = len(changes) - len(listed)
        tail = [f"  ... and {more} more"] if more else []
        return "\n".join(
            [
                "this test wrote to the real Llama Stack home, outside its isolated store:",
                *(f"  {line}" for line in listed),
                *tail,
                "Start stacks through the llama_store / llama_stack fixtures, or inside "
                "store.activate(), so their state lands in the test's store "
                "(--llama-guard=warn|off to relax this check).",
            ]
        )
