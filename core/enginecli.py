"""`lorabooth engine`, `lorabooth queue` and `lorabooth train --detach`: the headless clients of
the engine. Everything the UI can start, these can too."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console

from . import engine
from .safetext import plain
from .store import Store
from .workspace import Workspace


def _workspace(root: Path) -> Workspace:
    from .errors import UsageError

    ws = Workspace.at(root)
    if not ws.exists():
        raise UsageError(f"{ws.root} is not a lorabooth workspace (no lorabooth.toml)")
    return ws


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True)


def run_engine(root: Path, action: str, as_json: bool) -> int:
    ws = _workspace(root)
    out = _out()
    if action == "start":
        pid, fresh = engine.start_detached(ws)
        out.print(plain(f"engine {'started' if fresh else 'already running'} (pid {pid})"))
        return 0
    if action == "stop":
        pid = engine.stop(ws)
        out.print(plain(f"engine stopped (pid {pid})" if pid else "no engine was running"))
        return 0
    state = engine.status(ws)
    if as_json:
        print(json.dumps(state.public(), indent=2))
    elif state.pid is None:
        out.print("engine: stopped")
    else:
        job = state.job
        doing = f", job {job.id} ({job.kind}) step {job.step}/{job.total}" if job else ""
        out.print(plain(f"engine: {state.state} (pid {state.pid}){doing}"))
    return 0


def detach_training(root: Path, steps: int | None, resume: bool) -> int:
    ws = _workspace(root)
    ws.config()  # a broken config is reported now, not as a failed job later
    store = Store(ws.db_path)
    params = {"steps": steps, "resume": resume}
    job_id = store.add_job("train", {k: v for k, v in params.items() if v}, total=steps or 0)
    pid, _ = engine.start_detached(ws)
    _out().print(plain(f"training queued as job {job_id}; engine pid {pid}. "
                       f"Watch it with: lorabooth engine {ws.root} status"))
    return 0


def run_queue(root: Path, action: str, job_id: int | None, position: int | None,
              as_json: bool) -> int:
    from .errors import UsageError

    ws = _workspace(root)
    store = Store(ws.db_path)
    out = _out()
    if action == "list":
        jobs = store.jobs()
        if as_json:
            print(json.dumps([j.public() for j in jobs], indent=2))
            return 0
        for j in jobs:
            progress = f" {j.step}/{j.total}" if j.total else ""
            error = f"  {j.error}" if j.error else ""
            out.print(plain(f"{j.id:>4}  {j.kind:<9} {j.state:<10}{progress}{error}"))
        if not jobs:
            out.print("the queue is empty")
        return 0
    if job_id is None:
        raise UsageError(f"queue {action} needs a job id")
    if action == "cancel":
        if not store.request(job_id, "cancel"):
            raise UsageError(f"job {job_id} is not queued or running")
        out.print(plain(f"job {job_id}: cancel requested"))
        return 0
    if action == "move":
        if position is None or not store.move(job_id, position):
            raise UsageError(f"job {job_id} is not waiting in the queue")
        out.print(plain(f"job {job_id} moved to position {position}"))
        return 0
    raise UsageError(f"unknown queue action {action!r}")


def wait_for_job(store: Store, job_id: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = store.job(job_id)
        if job and job.state in ("done", "failed", "cancelled"):
            return job.state
        time.sleep(0.1)
    return "timeout"
