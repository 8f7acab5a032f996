"""`lorabooth engine`, `lorabooth queue list|cancel|move` and `lorabooth train --detach`: the
headless clients of the engine. Everything the UI can start, these can too."""

from __future__ import annotations

import argparse
import json

from .. import engine
from ..errors import EXIT_OK, UsageError
from ..safetext import plain
from ..store import LIVE, QUEUED, Store
from ..workspace import Workspace, require_workspace
from .console import console


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("workspace", metavar="WORKSPACE")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--json", action="store_true", help="status as JSON")


def run_engine(args: argparse.Namespace) -> int:
    ws = require_workspace(args.workspace)
    out = console()
    if args.action == "start":
        pid, fresh = engine.start_detached(ws)
        out.print(plain(f"engine {'started' if fresh else 'already running'} (pid {pid})"))
        return EXIT_OK
    if args.action == "stop":
        pid, how = engine.stop(ws)
        if how == "killed":
            out.print(plain(f"the engine (pid {pid}) was frozen and did not answer SIGTERM: "
                            "killed it; its job resumes from the last checkpoint"))
        else:
            out.print(plain(f"engine stopped (pid {pid})" if pid else "no engine was running"))
        return EXIT_OK
    state = engine.status(ws)
    if args.json:
        print(json.dumps(state.public(), indent=2))
    elif state.state == "stopped":
        out.print("engine: stopped")
        if state.interrupted is not None:
            out.print(plain(f"{engine.interrupted_text(state.interrupted)}: lorabooth engine "
                            f"{ws.root} start"))
    else:
        job = state.job
        doing = f", job {job.id} ({job.kind}) step {job.step}/{job.total}" if job else ""
        outside = training_outside_engine(ws)
        if outside:
            waits = any(j.kind == "train" for j in Store(ws.db_path).jobs((QUEUED,)))
            doing += f"; a queued training waits for {outside}" if waits else f"; {outside} runs"
        out.print(plain(f"engine: {state.state} (pid {state.pid}){doing}"))
    return EXIT_OK


def detach_training(ws: Workspace, steps: int | None, resume: bool, run: str | None) -> int:
    store = Store(ws.db_path)
    params = {"steps": steps, "resume": resume, "run": run}
    job_id = store.add_job("train", {k: v for k, v in params.items() if v}, total=steps or 0)
    pid, _ = engine.start_detached(ws)
    console().print(plain(f"training queued as job {job_id}; engine pid {pid}. "
                          f"Watch it with: lorabooth engine {ws.root} status"))
    return EXIT_OK


def run_queue(args: argparse.Namespace) -> int:
    """`queue list|cancel|move`; `queue add` is generate.run_queue_add."""
    ws = require_workspace(args.workspace)
    numbers = []
    for text in args.rest:
        if not (text.isascii() and text.lstrip("-").isdigit()):
            raise UsageError(f"queue {args.action}: {text!r} is not a number")
        numbers.append(int(text))
    job_id = numbers[0] if numbers else None
    position = numbers[1] if len(numbers) > 1 else None
    store = Store(ws.db_path)
    out = console()
    if args.action == "list":
        jobs = store.jobs()
        if args.json:
            print(json.dumps([j.public() for j in jobs], indent=2))
            return EXIT_OK
        outside = training_outside_engine(ws)
        left = engine.status(ws, store).interrupted
        for j in jobs:
            progress = f" {j.step}/{j.total}" if j.total else ""
            note = f"  {j.error}" if j.error else ""
            if outside and j.kind == "train" and j.state == QUEUED:
                note = f"  waits for {outside}"
            if j.terminal_pid is not None and j.state in LIVE:
                note = f"  in a terminal (pid {j.terminal_pid})"
            state = j.state
            if left is not None and j.id == left.id:  # its engine is gone: it runs no more
                state, note = "interrupted", "  the engine resumes it when started"
            out.print(plain(f"{j.id:>4}  {j.kind:<9} {state:<11}{progress}{note}"))
        if not jobs:
            out.print("the queue is empty")
        return EXIT_OK
    if job_id is None:
        raise UsageError(f"queue {args.action} needs a job id")
    if args.action == "cancel":
        if not store.request(job_id, "cancel"):
            raise UsageError(f"job {job_id} is not queued or running")
        out.print(plain(f"job {job_id}: cancel requested"))
        return EXIT_OK
    if position is None or position < 1:
        raise UsageError("queue move ID POS: POS is a place in the queue, 1 = next")
    if not store.move(job_id, position):
        raise UsageError(f"job {job_id} is not waiting in the queue")
    out.print(plain(f"job {job_id} moved to position {position}"))
    return EXIT_OK


def training_outside_engine(ws: Workspace) -> str:
    """"the training outside the engine (pid N)" while one holds the workspace, else ""."""
    from ..engine import running_pid
    from ..train.claim import training_pid

    pid = training_pid(ws)
    if pid is None or pid == running_pid(ws):
        return ""
    return f"the training outside the engine ({f'pid {pid}' if pid > 0 else 'pid unknown'})"
