"""The UI's only way to the store: the poller (reads what changed, on a timer, in a thread
worker) and the store worker (one thread that runs the panes' commands in order, off the UI
thread, and posts `Done` back). Nothing else in `tui/` opens the store or writes a file.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorabooth.core import engine
from lorabooth.core.errors import LoraboothError, describe_os_error
from lorabooth.core.store import ACTIVE, Store, StoreError
from lorabooth.core.workspace import Workspace

from .gpu import gpu_line
from .messages import Done, StoreDelta

# -- reading ----------------------------------------------------------------------------------


class StorePoller:
    def __init__(self, ws: Workspace):
        self.ws = ws
        self.store: Store | None = None
        self.last_step: dict[int, int] = {}
        self.settled: set[int] = set()  # finished train jobs whose metrics were all read
        self.last_event = 0
        self.last_output = 0

    def read(self) -> StoreDelta:
        try:
            if self.store is None:
                self.store = Store(self.ws.db_path)
            return self._read(self.store)
        except (StoreError, OSError) as exc:
            self.store = None
            return StoreDelta("unreachable", None, None, [], error=str(exc))

    def _read(self, store: Store) -> StoreDelta:
        status = engine.status(self.ws, store)
        jobs = store.jobs()
        delta = StoreDelta(status.state, status.pid, gpu_line() or status.device, jobs)
        for job in jobs:
            if job.kind != "train" or job.id in self.settled:
                continue
            rows = store.metrics(job.id, self.last_step.get(job.id, 0))
            if rows:
                self.last_step[job.id] = rows[-1].step
                delta.metrics[job.id] = rows
            if job.state not in ACTIVE:
                self.settled.add(job.id)  # a finished run's metrics never change again
        events = store.events(self.last_event)
        if events:
            self.last_event = events[-1].id
            delta.events = events
        outputs = store.outputs(after_id=self.last_output)
        if outputs:
            self.last_output = outputs[-1].id
            delta.outputs = outputs
        return delta


# -- commands ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddJob:
    kind: str
    params: dict[str, Any]
    total: int = 0
    says: str = "queued as job {result}"


@dataclass(frozen=True)
class Control:
    job_id: int
    control: str | None  # pause | cancel | None (resume)
    says: str = ""


@dataclass(frozen=True)
class Move:
    job_id: int
    position: int  # 1 = next


@dataclass(frozen=True)
class SetSetting:
    key: str
    value: str
    says: str = ""


@dataclass(frozen=True)
class Promote:
    step: int


@dataclass(frozen=True)
class SaveCaption:
    photo: Path
    text: str


@dataclass(frozen=True)
class SaveSettings:
    values: dict[str, Any] = field(default_factory=dict)
    says: str = ""


@dataclass(frozen=True)
class ReadMetrics:
    job_id: int


Command = AddJob | Control | Move | SetSetting | Promote | SaveCaption | SaveSettings | \
    ReadMetrics


def perform(command: Command, ws: Workspace, store: Store) -> Any:
    """Run one command; its result goes back in `Done`."""
    match command:
        case AddJob(kind, params, total):
            return store.add_job(kind, params, total=total)
        case Control(job_id, control):
            return store.request(job_id, control)
        case Move(job_id, position):
            return store.move(job_id, position)
        case SetSetting(key, value):
            return store.set_setting(key, value)
        case Promote(step):
            from lorabooth.core.train.checkpoint import promote

            return promote(ws, step)
        case SaveCaption(photo, text):
            from lorabooth.core.dataset.captions import write_caption

            return write_caption(photo, text)
        case SaveSettings(values, _):
            from lorabooth.core.config import set_config_values

            return set_config_values(ws.root, values)
        case ReadMetrics(job_id):
            return store.metrics(job_id)
    raise TypeError(f"not a store command: {command!r}")


def describe(command: Command, result: Any) -> str:
    """What to tell the user when a command succeeded ("" says nothing)."""
    says = getattr(command, "says", "")
    if isinstance(command, Promote):
        return f"step {command.step} is now the workspace's LoRA"
    if isinstance(command, SaveCaption):
        return f"caption saved: {command.photo.name}"
    return says.format(result=result) if says else ""


class StoreWorker:
    """One thread, one queue: commands run in the order the user gave them."""

    def __init__(self, ws: Workspace, post: Callable[[Any, Done], None]):
        self.ws = ws
        self.post = post  # (reply_to, Done) -> None, safe from this thread
        self.queue: queue.Queue = queue.Queue()
        self.store: Store | None = None
        self.closed = False

    def submit(self, command: Command, reply_to: Any) -> None:
        self.queue.put((command, reply_to))

    def close(self) -> None:
        self.closed = True

    def run(self) -> None:
        """The worker's body: runs until `close` (what was submitted before it still runs)."""
        while True:
            try:
                command, reply_to = self.queue.get(timeout=0.2)
            except queue.Empty:
                if self.closed:
                    return
                continue
            self.post(reply_to, self._run_one(command))

    def _run_one(self, command: Command) -> Done:
        try:
            if self.store is None:
                self.store = Store(self.ws.db_path)
            return Done(command, perform(command, self.ws, self.store))
        except LoraboothError as exc:
            return Done(command, error=str(exc))
        except OSError as exc:
            return Done(command, error=describe_os_error(exc))
        except Exception as exc:  # shown to the user, never dropped
            return Done(command, error=f"{type(exc).__name__}: {exc}")
