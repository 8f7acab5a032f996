"""The engine's lock: an exclusive flock on `.lorabooth/engine.lock` makes a second engine
refuse; the kernel drops it when a process dies, so a stale lock is simply taken over."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from ..errors import LoraboothError
from ..workspace import Workspace

LOCK_FILE = "engine.lock"


class EngineRunning(LoraboothError):
    def __init__(self, pid: int | None):
        self.pid = pid
        super().__init__(f"an engine already runs for this workspace (pid {pid})")


class EngineLock:
    def __init__(self, ws: Workspace):
        self.path = ws.state / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise EngineRunning(read_lock_pid(self.path)) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                os.close(self.fd)
            self.fd = None


def read_lock_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def running_pid(ws: Workspace) -> int | None:
    """The pid of the engine holding the workspace's lock, or None when none does."""
    path = ws.state / LOCK_FILE
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return read_lock_pid(path) or -1
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
