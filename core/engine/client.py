"""Starting, stopping and asking after a workspace's engine: what the CLI and the UI call.
Nothing here imports torch."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import LoraboothError
from ..store import FINISHED, LIVE, Job, Store, StoreError
from ..workspace import Workspace
from .lock import running_pid

LOG_FILE = "engine.log"
LOG_ROTATE_BYTES = 5 * 2**20


def _rotate_log(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(path, path.with_suffix(".log.1"))


def start_detached(ws: Workspace, wait: float = 20.0) -> tuple[int, bool]:
    """Start the engine in its own session and wait until it has reported in through the
    store. Returns (pid, started_now); an engine that runs already is (its pid, False)."""
    pid = _known_pid(ws, 2.0)
    if pid:
        return pid, False
    ws.state.mkdir(parents=True, exist_ok=True)
    log = ws.state / LOG_FILE
    _rotate_log(log)
    started = time.time()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lorabooth.core.engine", str(ws.root)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
            close_fds=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + wait
    stores: list[Store] = []  # opened once, when the engine has made the database
    while time.monotonic() < deadline:
        pid = running_pid(ws)
        if pid and pid > 0 and pid != proc.pid:
            # Another start won the lock: ours exits as soon as it finds the lock taken (it
            # takes the lock before any heavy import); wait for that, so no second engine
            # process outlives this call.
            _reap(proc)
            return pid, False
        if pid == proc.pid and _reported_in(ws, pid, started, stores):
            return pid, True
        if proc.poll() is not None:
            pid = _known_pid(ws, 2.0)
            if pid:  # lost a race with another start: that engine runs
                return pid, False
            raise EngineStartFailed(f"the engine exited at once (code {proc.returncode}); "
                                    f"see {log}")
        time.sleep(0.02)
    if running_pid(ws) == proc.pid:
        raise EngineStartFailed(
            f"the engine (pid {proc.pid}) started but could not write to its database "
            f"within {wait:.0f} s (is another program holding {ws.db_path.name} locked?); "
            f"see {log}")
    raise EngineStartFailed(f"the engine did not start within {wait:.0f} s; see {log}")


def _known_pid(ws: Workspace, wait: float) -> int | None:
    """The running engine's pid; when one runs whose pid file is not written yet (it is
    starting), wait a moment for it."""
    deadline = time.monotonic() + wait
    pid = running_pid(ws)
    while pid == -1 and time.monotonic() < deadline:
        time.sleep(0.02)
        pid = running_pid(ws)
    return pid


def _reported_in(ws: Workspace, pid: int, since: float, stores: list[Store]) -> bool:
    """The engine's own row says it runs: it could open and write the store."""
    try:
        if not stores:
            stores.append(Store(ws.db_path, retry_for=1.0))
        row = stores[0].engine()
    except StoreError:
        return False
    return row is not None and row.pid == pid and row.heartbeat >= since - 1.0


def _reap(proc: subprocess.Popen, wait: float = 10.0) -> None:
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop(ws: Workspace, wait: float = 60.0) -> tuple[int | None, str]:
    """SIGTERM the engine and wait for it to checkpoint and exit: (pid, "stopped"). A frozen
    engine (no heartbeat) does not act on SIGTERM: it is killed, (pid, "killed"); one that is
    alive but slower than `wait` is an error that says so. (None, "") when none ran."""
    pid = running_pid(ws)
    if not pid:
        return None, ""
    if pid < 0:
        raise EngineStopFailed("an engine runs but its pid file is gone; it re-creates it "
                               "within a second: try again")
    if status(ws).state == UNRESPONSIVE:
        wait = min(wait, FROZEN_GRACE)  # it cannot act on SIGTERM: no minute of waiting
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_gone(ws, wait):
        return pid, "stopped"
    if status(ws).state == UNRESPONSIVE:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if _wait_gone(ws, 10.0):
            return pid, "killed"
    raise EngineStopFailed(f"the engine (pid {pid}) did not stop within {wait:.0f} s; it is "
                           f"still running. Try again, or end it with: kill -9 {pid}")


def _wait_gone(ws: Workspace, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not running_pid(ws):
            return True
        time.sleep(0.05)
    return not running_pid(ws)


STALE_HEARTBEAT = 30.0  # seconds without a heartbeat before an engine counts as frozen
FROZEN_GRACE = 5.0  # seconds a frozen engine gets to act on SIGTERM before it is killed
UNRESPONSIVE = "unresponsive"


@dataclass
class Status:
    pid: int | None
    state: str  # running (a job), idle, stopped, unresponsive (alive, no heartbeat)
    job: Job | None
    step: int | None
    device: str | None = None
    # Stopped with a job still marked running or paused: the engine ended without a word
    # (killed, often by the system's out-of-memory killer, or crashed). The next engine resumes it.
    interrupted: Job | None = None

    def public(self) -> dict:
        return {"pid": self.pid, "state": self.state,
                "job": self.job.public() if self.job else None, "step": self.step,
                "interrupted": self.interrupted.public() if self.interrupted else None}


def interrupted_text(job: Job) -> str:
    """What became of a job whose engine ended without a word, and how to carry it on."""
    resumes = "from its last checkpoint" if job.kind == "train" else "where it was"
    return (f"job {job.id} ({job.kind}) was at step {job.step}/{job.total} when the engine "
            "ended without a word: killed (the system's out-of-memory killer does this when "
            f"RAM runs out) or crashed. Starting the engine resumes it {resumes}")


def status(ws: Workspace, store: Store | None = None) -> Status:
    """The engine's state, the one computation the CLI and the UI share: stopped (no process
    holds the lock), running (it holds a job) or idle."""
    store = store or Store(ws.db_path)
    pid = running_pid(ws)
    if not pid:
        # A training in a terminal is its own process's, not a job the engine left.
        left = [j for j in store.jobs(LIVE) if j.terminal_pid is None]
        return Status(None, "stopped", None, None, interrupted=left[0] if left else None)
    row = store.engine()
    job = store.job(row.job) if row and row.job else None
    state = "running" if job and job.state in LIVE else "idle"
    if row is None or time.time() - row.heartbeat > STALE_HEARTBEAT:
        state = UNRESPONSIVE  # alive (it holds the lock) but frozen: SIGSTOP, a hung call
    return Status(pid if pid > 0 else None, state, job, job.step if job else None,
                  row.device if row else None)


def wait_for_job(ws: Workspace, store: Store, job_id: int, timeout: float) -> str:
    """Wait for a job to finish: its final state; or "timeout"; or, when the engine stops or
    freezes meanwhile, what became of it."""
    deadline = time.monotonic() + timeout
    next_look = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        job = store.job(job_id)
        if job and job.state in FINISHED:
            return job.state
        if time.monotonic() > next_look:
            next_look = time.monotonic() + 1.0
            state = status(ws, store).state
            if state in ("stopped", UNRESPONSIVE):
                return "waiting: the engine " + ("stopped" if state == "stopped"
                                                 else "stopped responding")
        time.sleep(0.1)
    return "timeout"


class EngineStopFailed(LoraboothError):
    """The engine could not be stopped; the message says what to do."""


class EngineStartFailed(LoraboothError):
    """The engine process would not start; the message points at its log."""
