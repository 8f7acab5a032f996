"""The engine process: one job at a time from the store's queue, the photo folder watched, and
the one loaded model held by its owner between jobs.

It is started detached (its own session, stdio to `.lorabooth/engine.log`) so it outlives the
UI and the SSH link. It takes the workspace's lock before anything heavy, and imports torch only
when a job needs it. SIGTERM finishes the step, checkpoints, marks the job to resume, and exits
0; after a kill -9 the next start resumes the job from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import traceback

from ..config import ConfigError
from ..models.owner import ModelOwner
from ..safetext import printable
from ..store import (
    ACTIVE,
    CANCELLED,
    FAILED,
    LIVE,
    PAUSED,
    QUEUED,
    RENDERS,
    RUNNING,
    Job,
    Store,
    StoreError,
)
from ..train.claim import TrainingBusy, training_pid
from ..workspace import Workspace
from .controls import obey
from .failures import explain_failure
from .generate_job import fits_training
from .lock import EngineLock

IDLE_POLL = 0.05  # seconds between looks at the queue when idle: the pick-up latency
HEARTBEAT = 1.0
ORPHANS_EVERY = 2.0  # seconds between looks for terminal trainings whose process died


class Stop(Exception):
    """Raised inside a job when the engine is asked to shut down."""


class Engine:
    def __init__(self, ws: Workspace):
        self.ws = ws
        self.lock = EngineLock(ws)
        self.store: Store | None = None
        self.stopping = False
        self.current: Job | None = None
        self.watcher = None
        self.model = ModelOwner()  # the one loaded pipeline, lent to each job
        self.stamp: dict = {}  # a job the engine takes needs no mark: recover() knows it
        self.new_photos = 0
        self.dataset_primed = False  # the watcher's first report is the folder as it was
        self.waiting: set[int] = set()  # train jobs told to wait for another training
        self.orphans_due = 0.0  # when to look again for terminal trainings that died
        # A job's end the database could not take (a full disk): recorded when it can.
        self.unrecorded: tuple[int, dict, str, str] | None = None

    def log(self, text: str) -> None:
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}", flush=True)

    def event(self, message: str, level: str = "info", job: int | None = None) -> None:
        self.log(f"{level}: {message}")
        with contextlib.suppress(StoreError):
            self.store.event(message, level, job, kind="engine")

    def on_sigterm(self, signum, frame) -> None:
        self.stopping = True

    def run(self) -> int:
        self.lock.acquire()  # first: a second engine leaves before doing anything
        self.store = Store(self.ws.db_path)
        signal.signal(signal.SIGTERM, self.on_sigterm)
        signal.signal(signal.SIGINT, self.on_sigterm)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the terminal that started us may go
        self.store.set_engine(pid=os.getpid(), state="idle", job=None, started=time.time())
        self.event(f"engine started (pid {os.getpid()})")
        threading.Thread(target=self.heartbeat, name="lorabooth-heartbeat", daemon=True).start()
        self.recover()
        self.watch_photos()
        try:
            while not self.stopping:
                if self.unrecorded is not None and not self.record_unrecorded():
                    time.sleep(1.0)  # nothing new starts until the last job's end is written
                    continue
                job = self.next_job()
                if job is None:  # the heartbeat thread keeps saying we are alive
                    time.sleep(IDLE_POLL)
                    continue
                try:
                    self.run_job(job)
                except StoreError as exc:
                    # The database itself failed (full or read-only disk): say so and keep
                    # running, so the user can fix it and carry on.
                    self.log(f"error: {exc}")
                    time.sleep(1.0)
        finally:
            if self.watcher is not None:
                self.watcher.stop()
            with contextlib.suppress(StoreError):
                self.store.set_engine(state="stopped", job=None, pid=None)
            self.event("engine stopped")
            self.lock.release()
        return 0

    def heartbeat(self) -> None:
        """Say "alive" every HEARTBEAT seconds, whatever a job is doing, so that clients can
        tell a busy engine from a frozen one; and keep the lock file in place."""
        while not self.stopping:
            with contextlib.suppress(StoreError):
                self.store.set_engine()
            self.lock.keep()
            time.sleep(HEARTBEAT)

    # -- the photo folder -----------------------------------------------------------------

    def watch_photos(self) -> None:
        """Watch the photo folder; every change is a `dataset` event for the UI."""
        from ..dataset.scan import ScanOptions
        from ..watch import FolderWatcher

        try:
            config = self.ws.config(check_photos=False)
        except ConfigError as exc:
            self.event(f"not watching the photos: {exc}", "warning")
            return
        options = ScanOptions(resolution=min(config.train.resolution), trigger=config.trigger)
        self.watcher = FolderWatcher(config.photos_dir(self.ws.root), self.on_dataset_change,
                                     options, self.ws.cache)
        self.watcher.start()

    def on_dataset_change(self, change) -> None:
        """Runs on the watcher's thread; the store gives it its own connection."""
        parts = []
        for verb, names in (("added", change.added), ("removed", change.removed),
                            ("changed", change.changed)):
            if names:
                shown = ", ".join(printable(n) for n in names[:5]) + (f" and {len(names) - 5} more"
                                                if len(names) > 5 else "")
                parts.append(f"{len(names)} {verb}: {shown}")
        usable = len(change.scan.usable())
        self.store.event(f"photos: {'; '.join(parts)} ({usable} usable)", "info",
                         kind="dataset")
        if self.dataset_primed:
            self.maybe_continue_training(len(change.added))
        self.dataset_primed = True

    def maybe_continue_training(self, added: int) -> None:
        try:
            every = self.ws.config(check_photos=False).train.auto_continue_after
        except ConfigError:
            return
        if not every:
            return
        self.new_photos += added
        if self.new_photos >= every and not self.store.jobs(ACTIVE):
            self.new_photos = 0
            job = self.store.add_job("train", {"resume": True, "continue": True})
            self.event(f"{every}+ new photos arrived: queued job {job} to continue training")

    # -- jobs -----------------------------------------------------------------------------

    def recover(self) -> None:
        """Jobs left running or paused by an engine that died are queued again; training
        resumes from its last checkpoint. A training running in a terminal is its process's,
        left alone while that process lives."""
        self.close_orphans()
        for job in self.store.jobs((RUNNING, PAUSED)):
            if job.terminal_pid is not None:
                continue
            params = {**job.params, "resume": True}
            self.store.update_job(job.id, state=QUEUED, control=None, params=params)
            self.event(f"job {job.id} ({job.kind}) was interrupted at step {job.step}; "
                       "it will resume from its last checkpoint", "warning", job.id)

    def next_job(self) -> Job | None:
        """The first queued job that can run now. A training waits, queued, while another
        process (`lorabooth train` in a terminal) trains this workspace; jobs behind it that
        are not trainings go ahead."""
        if time.monotonic() > self.orphans_due:
            self.close_orphans()
        if self.store.setting("queue_paused") == "1":
            return None
        busy = training_pid(self.ws)  # between jobs the engine itself holds no claim
        renders = self.terminal_renders(busy)
        for job in self.store.jobs((QUEUED,)):
            if job.kind == "generate" and renders and fits_training(job, renders):
                continue  # the terminal's training renders it between its steps
            if job.kind != "train" or busy is None:
                self.waiting.discard(job.id)
                return job
            self.say_waiting(job, busy)
        return None

    def terminal_renders(self, busy: int | None) -> str:
        """The model a training in a terminal renders queued prompts with, between its steps,
        while it runs (its job says so); "" when none does. Those prompts are left to it: here
        they would load a second copy of the model."""
        if busy is None or busy <= 0:
            return ""
        for job in self.store.jobs(LIVE):
            if job.terminal_pid == busy and isinstance(job.params.get(RENDERS), str):
                return job.params[RENDERS]
        return ""

    def close_orphans(self) -> None:
        """A training in a terminal whose process died without a word is closed as stopped,
        so the UI does not show it running forever."""
        from .terminal_job import close_orphans

        self.orphans_due = time.monotonic() + ORPHANS_EVERY
        for job_id in close_orphans(self.store, self.ws):
            self.log(f"warning: job {job_id}, a training in a terminal, lost its process")

    def say_waiting(self, job: Job, pid: int) -> None:
        if job.id not in self.waiting:
            self.waiting.add(job.id)
            who = f"pid {pid}" if pid > 0 else "another process"
            self.event(f"job {job.id} waits for the training outside the engine ({who}) to "
                       "end: one training at a time in a workspace", "warning", job.id)

    def run_job(self, job: Job) -> None:
        from . import generate_job, train_job

        if not self.store.take(job.id):
            return  # a training in a terminal took it first, to render between its steps
        self.current = job
        self.store.set_engine(state="running", job=job.id)
        self.event(f"job {job.id} ({job.kind}) started", job=job.id)
        try:
            runner = {"train": train_job.run, "generate": generate_job.run}.get(job.kind)
            if runner is None:
                raise ValueError(f"unknown job kind {job.kind!r}")
            outcome = runner(self, job)
        except Stop:
            self.store.update_job(job.id, state=QUEUED, control=None,
                                  params={**job.params, "resume": True})
            self.event(f"job {job.id} will resume when the engine starts again", job=job.id)
        except TrainingBusy as exc:  # a terminal's training began since next_job looked
            self.store.update_job(job.id, state=QUEUED, control=None)
            self.say_waiting(job, exc.pid or -1)
        except Exception as exc:
            self.fail(job, exc)
        else:
            self.finish(job.id, f"job {job.id} {outcome}", "info", state=outcome)
        finally:
            self.current = None
            self.store.set_engine(state="idle", job=None)

    def fail(self, job: Job, exc: BaseException) -> None:
        message = explain_failure(exc)
        self.log(traceback.format_exc())
        self.finish(job.id, f"job {job.id} failed: {message}", "error", state=FAILED,
                    error=message)

    def finish(self, job_id: int, message: str, level: str, **fields) -> None:
        """Record a job's end; a database that takes no write (its disk full) keeps it
        pending, or the job would read `running` forever once space is freed."""
        fields.update(finished=time.time(), control=None)
        try:
            self.store.update_job(job_id, **fields)
        except StoreError:
            self.unrecorded = (job_id, fields, message, level)
            raise
        self.event(message, level, job_id)

    def record_unrecorded(self) -> bool:
        job_id, fields, message, level = self.unrecorded
        try:
            self.store.update_job(job_id, **fields)
            self.store.set_engine(state="idle", job=None)
        except StoreError:
            return False
        self.unrecorded = None
        self.event(message, level, job_id)
        return True

    def between_steps(self, job_id: int) -> str | None:
        """Between two steps of a job: obey pause, cancel and shutdown (see controls.py)."""
        return obey(self.store, job_id, lambda: self.stopping,
                    lambda text: self.event(text, job=job_id))

    def ended(self, verdict: str | None) -> str:
        """The outcome of a job its hook ended: a shutdown re-queues it, a cancel ends it."""
        if verdict == "stop" or self.stopping:
            raise Stop
        return CANCELLED

    def model_loaded(self, model: str, device) -> None:
        from ..models.load import describe_device

        self.store.set_engine(device=describe_device(device))
        self.event(f"model {model} loaded on {describe_device(device)}")
