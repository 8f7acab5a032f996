"""The engine's lock: a second engine for a workspace refuses while the first lives.

Two claims, both dropped by the kernel when the process dies (a stale lock is simply taken
over): an exclusive flock on `.lorabooth/engine.lock` (which also holds the pid), and, on
Linux, a name in the abstract socket namespace derived from the workspace's path, which no
file operation can remove: deleting `.lorabooth/` or the lock file while an engine runs does
not let a second one start. The engine re-creates a deleted lock file (`keep`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import socket
import sys
import time
from pathlib import Path

from ..errors import LoraboothError
from ..workspace import Workspace

LOCK_FILE = "engine.lock"


class EngineRunning(LoraboothError):
    def __init__(self, pid: int | None):
        self.pid = pid
        super().__init__(f"an engine already runs for this workspace (pid {pid})")


PROBE_GRACE = 1.0  # seconds a claim is retried: a status probe may hold it for a moment


def claim_name(ws: Workspace) -> bytes:
    digest = hashlib.sha256(str(ws.root).encode("utf-8", "surrogateescape")).hexdigest()
    return b"\0lorabooth-engine-" + digest[:40].encode()


def _bind(name: bytes) -> socket.socket | None:
    """The abstract-namespace claim, or None where the platform has no such namespace.
    Raises OSError(EADDRINUSE) while another process holds it."""
    if not sys.platform.startswith("linux"):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(name)
    except OSError:
        sock.close()
        raise
    return sock


def _retry(attempt, busy: tuple[int, ...]):
    """`attempt()`, retried for PROBE_GRACE while it fails with one of `busy`."""
    deadline = time.monotonic() + PROBE_GRACE
    while True:
        try:
            return attempt()
        except OSError as exc:
            if exc.errno not in busy or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class EngineLock:
    def __init__(self, ws: Workspace):
        self.ws = ws
        self.path = ws.state / LOCK_FILE
        self.fd: int | None = None
        self.claim: socket.socket | None = None

    def acquire(self) -> None:
        try:
            self.claim = _retry(lambda: _bind(claim_name(self.ws)), (errno.EADDRINUSE,))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise EngineRunning(read_lock_pid(self.path)) from None
            raise
        try:
            self._lock_file()
        except BaseException:
            self.release()
            raise

    def _lock_file(self) -> None:
        try:
            fd = take_pid_lock(self.path)
        except LockHeld as held:
            raise EngineRunning(held.pid) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self.fd = fd

    def keep(self) -> None:
        """Re-create the lock file if someone deleted it (or the whole `.lorabooth/`), so that
        clients find the engine's pid again."""
        if self.fd is None:
            return
        try:
            same = os.stat(self.path).st_ino == os.fstat(self.fd).st_ino
        except OSError:
            same = False
        if not same:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
            with contextlib.suppress(OSError, EngineRunning):
                self._lock_file()

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                os.close(self.fd)
            self.fd = None
        if self.claim is not None:
            self.claim.close()
            self.claim = None


class LockHeld(Exception):
    def __init__(self, pid: int | None):
        super().__init__(f"held by pid {pid}")
        self.pid = pid


def take_pid_lock(path: Path) -> int:
    """An exclusive flock on `path` (made if missing): its fd, for the caller to write its
    pid into, or LockHeld with the holder's pid. Retried for a moment, since a status probe
    (`lock_holder`) may hold it shared just then. The engine's lock and the training claim."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _retry(lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB),
               (errno.EAGAIN, errno.EACCES))
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            raise LockHeld(read_lock_pid(path)) from None
        raise
    return fd


def read_lock_pid(path: Path) -> int | None:
    """The pid written in a lock file (a few bytes of a regular file, never a FIFO)."""
    from ..fsutil import NotRegular, read_regular_file

    try:
        data, _ = read_regular_file(path, 64)
        return int(data.decode("ascii").strip() or 0) or None
    except (OSError, NotRegular, ValueError, UnicodeDecodeError):
        return None


def lock_holder(path: Path) -> int | None:
    """The pid of the process holding `path`'s flock (-1 when its pid is unreadable), or None
    when no one holds it or there is no such file; a probe that takes nothing."""
    with contextlib.suppress(FileNotFoundError):
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return read_lock_pid(path) or -1
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    return None


def running_pid(ws: Workspace) -> int | None:
    """The pid of the engine holding the workspace's lock, -1 when one runs whose pid file is
    gone, or None when none runs."""
    path = ws.state / LOCK_FILE
    deadline = time.monotonic() + PROBE_GRACE
    while True:
        pid = lock_holder(path)
        if pid is not None:
            return pid
        try:
            probe = _bind(claim_name(ws))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return None
            # Held: by an engine (starting, or whose lock file was deleted), or for a moment by
            # another client's probe, when the lock file's pid is the last engine's, long gone.
            # Asked again until the lock is taken or the grace is over.
            if time.monotonic() > deadline:
                return read_lock_pid(path) or -1
            time.sleep(0.02)
            continue
        if probe is not None:
            probe.close()
        return None
