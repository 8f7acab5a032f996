"""One training at a time per workspace. Two would write the same LoRA file, could continue
the same run's checkpoints, and on a GPU each would hold a whole Flux model, so the second is
refused before it loads anything, whether it was started in a terminal (`lorabooth train`) or
by the engine. The claim is an flock on `.lorabooth/training.lock`, which the kernel drops
when its process dies: a killed training never leaves the workspace locked."""

from __future__ import annotations

import contextlib
import fcntl
import os

from ..engine import lock as engine_lock
from ..engine.lock import LockHeld, lock_holder, take_pid_lock
from ..workspace import Workspace
from . import TrainingError

LOCK_FILE = "training.lock"


class TrainingBusy(TrainingError):
    def __init__(self, ws: Workspace, pid: int | None):
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        if pid is not None and pid == engine_lock.running_pid(ws):
            advice = (f"the engine is training it ({who}): watch it with `lorabooth "
                      f"{ws.root}`; `lorabooth queue {ws.root} list` shows its job and "
                      f"`lorabooth queue {ws.root} cancel N` stops it")
        else:
            advice = (f"{who} is training it, maybe in another terminal: let it finish, or "
                      f"stop it (Ctrl-C there writes a checkpoint)")
        super().__init__(f"a training already runs in this workspace; {advice}")


class TrainingClaim:
    """`with TrainingClaim(ws):` holds the workspace's training for the block, or raises
    TrainingBusy at once."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.path = ws.state / LOCK_FILE
        self.fd: int | None = None

    def __enter__(self) -> TrainingClaim:
        try:
            fd = take_pid_lock(self.path)
        except LockHeld as held:
            raise TrainingBusy(self.ws, held.pid) from None
        # The pid is only for the message a refused training prints; the lock is the flock.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc_info) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                os.close(self.fd)
            self.fd = None


def training_pid(ws: Workspace) -> int | None:
    """The pid of the process training in this workspace (-1 when its pid is unreadable), or
    None; a probe that takes nothing (for the UI, which shows a training it did not start)."""
    try:
        return lock_holder(ws.state / LOCK_FILE)
    except OSError:
        return None
