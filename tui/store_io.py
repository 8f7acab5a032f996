"""The UI's only way to the store: the poller (reads what changed, on a timer, in a thread
worker) and the store worker (one thread that runs the panes' commands in order, off the UI
thread, and posts `Done` back). Nothing else in `tui/` opens the store or writes a file.
"""

from __future__ import annotations

import contextlib
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorabooth.core import engine
from lorabooth.core.errors import LoraboothError, describe_os_error
from lorabooth.core.store import ACTIVE, LIVE, PAUSED, Metric, Store, StoreError, Validation
from lorabooth.core.train.claim import training_pid
from lorabooth.core.workspace import Workspace

from .gpu import gpu_line
from .messages import Done, StoreDelta

# -- reading ----------------------------------------------------------------------------------

FINISHED_IN_VIEW = 200  # finished prompts the Queue lists; `lorabooth queue list` has them all


class StorePoller:
    def __init__(self, ws: Workspace):
        self.ws = ws
        self.store: Store | None = None
        self.last_step: dict[int, int] = {}
        self.last_validation: dict[int, int] = {}
        self.settled: set[int] = set()  # finished train jobs whose metrics were all read
        self.last_event = 0
        self.last_output = 0
        self.errors_seen: int | None = None  # read from the store at the first read

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
        jobs, total = store.jobs_in_view(FINISHED_IN_VIEW)
        delta = StoreDelta(status.state, status.pid, gpu_line() or status.device, jobs,
                           jobs_total=total, interrupted=status.interrupted)
        with contextlib.suppress(OSError):
            delta.disk_free = shutil.disk_usage(self.ws.state).free
        trainer = training_pid(self.ws)
        if trainer is not None and trainer != status.pid:
            delta.training_elsewhere = trainer
        for job in jobs:
            if job.kind != "train" or job.id in self.settled:
                continue
            rows = store.metrics(job.id, self.last_step.get(job.id, 0))
            if rows:
                self.last_step[job.id] = rows[-1].step
                delta.metrics[job.id] = rows
            measured = store.validations(job.id, self.last_validation.get(job.id, -1))
            if measured:
                self.last_validation[job.id] = measured[-1].step
                delta.validations[job.id] = measured
            if job.state not in ACTIVE:
                self.settled.add(job.id)  # a finished run's metrics never change again
        events = store.events(self.last_event)
        if events:
            self.last_event = events[-1].id
            delta.events = events
        delta.new_errors = self._new_errors(store, events)
        outputs = store.outputs(after_id=self.last_output)
        if outputs:
            self.last_output = outputs[-1].id
            delta.outputs = outputs
        return delta

    def _new_errors(self, store: Store, events: list) -> list:
        """Errors after the last one a UI showed: reopening the app does not toast
        yesterday's failed job again (the app records what it showed, `ERRORS_SEEN`)."""
        if self.errors_seen is None:
            try:
                self.errors_seen = int(store.setting(ERRORS_SEEN) or 0)
            except ValueError:  # a hand-edited database: show everything once
                self.errors_seen = 0
        new = [e for e in events if e.level == "error" and e.id > self.errors_seen]
        if new:
            self.errors_seen = new[-1].id
        return new


ERRORS_SEEN = "ui.errors_seen"  # the id of the last error event a UI showed


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
class TogglePause:
    """Pause a running job, or resume a paused (or pausing) one, judged on its state now: the
    last poll may predate the last key press."""

    job_id: int


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
    run: str | None = None


@dataclass(frozen=True)
class SaveCaption:
    photo: Path
    text: str
    since: str | None = None  # the sidecar's caption_stamp when the edit began


@dataclass(frozen=True)
class SaveSettings:
    values: dict[str, Any] = field(default_factory=dict)
    says: str = ""


@dataclass(frozen=True)
class ReadMetrics:
    """Every metric and validation loss of these jobs (the jobs of one run: its start and its
    resumes): a RunNumbers."""

    job_ids: tuple[int, ...]


@dataclass(frozen=True)
class RunNumbers:
    metrics: dict[int, list[Metric]]  # job -> its rows
    validations: dict[int, list[Validation]]


Command = (AddJob | Control | TogglePause | Move | SetSetting | Promote | SaveCaption
           | SaveSettings | ReadMetrics)


def perform(command: Command, ws: Workspace, store: Store) -> Any:
    """Run one command; its result goes back in `Done`."""
    match command:
        case AddJob(kind, params, total):
            return store.add_job(kind, params, total=total)
        case Control(job_id, control):
            return store.request(job_id, control)
        case TogglePause(job_id):
            job = store.job(job_id)
            if job is None or job.state not in LIVE:
                return None
            wanted = None if job.state == PAUSED or job.control == "pause" else "pause"
            store.request(job_id, wanted)
            return wanted or "resume"
        case Move(job_id, position):
            return store.move(job_id, position)
        case SetSetting(key, value):
            return store.set_setting(key, value)
        case Promote(step, run):
            from lorabooth.core.train.checkpoint import promote

            return promote(ws, step, run)
        case SaveCaption(photo, text, since):
            from lorabooth.core.dataset.captions import write_caption

            return write_caption(photo, text, since)
        case SaveSettings(values, _):
            from lorabooth.core.config import set_config_values

            return set_config_values(ws.root, values)
        case ReadMetrics(job_ids):
            return RunNumbers({job_id: store.metrics(job_id) for job_id in job_ids},
                              {job_id: store.validations(job_id) for job_id in job_ids})
    raise TypeError(f"not a store command: {command!r}")


def describe(command: Command, result: Any) -> str:
    """What to tell the user when a command succeeded ("" says nothing)."""
    says = getattr(command, "says", "")
    if isinstance(command, Promote):
        return f"{command.run or ''}/step {command.step} is now the workspace's LoRA".lstrip("/")
    if isinstance(command, TogglePause):
        return {"pause": "pausing after this step", "resume": "resuming"}.get(result, "")
    if isinstance(command, SaveCaption):
        return f"caption saved: {command.photo.name}"
    return says.format(result=result) if says else ""


class StoreWorker:
    """One thread, one queue: commands run in the order the user gave them.

    A plain daemon thread rather than a Textual worker: it lives as long as the app, and
    `App.workers.wait_for_complete()` (which tests and snapshots rely on) must not wait on it.
    """

    def __init__(self, ws: Workspace, post: Callable[[Any, Done], None]):
        self.ws = ws
        self.post = post  # (reply_to, Done) -> None, safe from this thread
        self.queue: queue.Queue = queue.Queue()
        self.store: Store | None = None
        self.closed = False
        self._thread: threading.Thread | None = None

    def submit(self, command: Command, reply_to: Any) -> None:
        self.queue.put((command, reply_to))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lorabooth-store",
                                            daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop once what was submitted has run."""
        self.closed = True

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until every submitted command has run (for tests and for a clean exit)."""
        deadline = time.monotonic() + timeout
        while self.queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self.queue.unfinished_tasks

    def _run(self) -> None:
        while True:
            try:
                command, reply_to = self.queue.get(timeout=0.2)
            except queue.Empty:
                if self.closed:
                    return
                continue
            try:
                self.post(reply_to, self._run_one(command))
            finally:
                self.queue.task_done()

    def _run_one(self, command: Command) -> Done:
        try:
            if self.store is None:
                self.store = Store(self.ws.db_path)
            return Done(command, perform(command, self.ws, self.store))
        except LoraboothError as exc:
            return Done(command, error=str(exc), failure=type(exc))
        except OSError as exc:
            return Done(command, error=describe_os_error(exc))
        except Exception as exc:  # shown to the user, never dropped
            return Done(command, error=f"{type(exc).__name__}: {exc}")
