"""A training started in a terminal (`lorabooth train`), recorded in the workspace's store as a
job like the engine's: the UI, opened then or later, shows its loss curve, validation measures,
samples and log lines, and its pause and stop keys reach it.

The terminal's process writes the job's rows and no one else runs it. The engine leaves it be
while that process lives; once the process is gone without a word (kill -9, a closed SSH link
without tmux), the engine or the next training closes the job as stopped, so it never reads
`running` forever and `s` in the Train pane carries the run on from its last checkpoint.
A store that takes no write (a full disk, a newer lorabooth's workspace) costs the recording,
never the training: it is said once and training goes on.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..store import (
    CANCELLED,
    DONE,
    FAILED,
    LIVE,
    QUEUED,
    RENDERS,
    TERMINAL_PID,
    Store,
    StoreError,
)
from ..train.claim import training_pid
from ..workspace import Workspace
from . import generate_job
from .controls import obey
from .failures import explain_failure
from .train_job import RunRecorder

if TYPE_CHECKING:
    from ..models.owner import ModelOwner
    from ..train.trainer import StepMetrics, TrainResult

EVENT_KIND = "terminal"


class TerminalJob(RunRecorder):
    """The Trainer's callbacks for a training in a terminal, recording it as a store job from
    the moment its run is chosen (after the claim is taken, so a refused training records
    nothing) to its end."""

    def __init__(self, ws: Workspace, warn: Callable[[str], None],
                 interrupted: Callable[[], bool], say: Callable[[str], None],
                 note: Callable[[str], None] | None = None):
        """`warn` and `say` reach the terminal's person loudly, `note` quietly (a hint)."""
        super().__init__(None, 0)  # type: ignore[arg-type]  # until the run starts
        self.ws, self.warn, self.interrupted, self.say = ws, warn, interrupted, say
        self.note = note or say
        self.store: Store | None = None
        self.job_id: int | None = None
        self.warned = False
        self.stamp = {TERMINAL_PID: os.getpid()}  # on each queued prompt it takes

    def on_run_start(self, run: str, step: int, total: int) -> None:
        try:
            store = Store(self.ws.db_path, retry_for=5.0)
            close_orphans(store, self.ws, claimed=True)
            params = {"run": run, "steps": total, **self.stamp}
            if self.renders():
                params[RENDERS] = self.trainer.config.model
            self.job_id = store.add_job("train", params, total=total, running_from=step)
            store.event(f"job {self.job_id} (train) started in a terminal (pid {os.getpid()})",
                        job=self.job_id, kind=EVENT_KIND)
        except (StoreError, sqlite3.Error) as exc:
            self.lost(exc)
            return
        self.store = store
        self.note(f"job {self.job_id}: `lorabooth {self.ws.root}` shows this run live "
                  "(its curve, samples and checkpoints; p pauses it, x stops it)")

    def lost(self, exc: BaseException) -> None:
        """Recording stops; training does not."""
        if not self.warned:
            self.warn(f"the UI will not show this run's progress ({exc}); training goes on")
            self.warned = True
        self.store = None

    def recorded(self, write: Callable[[], object]) -> None:
        if self.store is None:
            return
        try:
            write()
        except (StoreError, sqlite3.Error) as exc:
            self.lost(exc)

    def on_step(self, m: StepMetrics) -> None:
        self.recorded(lambda: RunRecorder.on_step(self, m))

    def on_validation(self, step: int, loss: float) -> None:
        self.recorded(lambda: RunRecorder.on_validation(self, step, loss))

    def on_sample(self, step: int, paths: list[Path]) -> None:
        self.recorded(lambda: RunRecorder.on_sample(self, step, paths))

    def log(self, text: str) -> None:
        self.recorded(lambda: self.store.event(text, job=self.job_id, kind=EVENT_KIND))

    def should_stop(self) -> bool:
        """Ctrl-C in the terminal, or stop (`x`) from the UI; pause (`p`) waits here. Carrying
        on, a queued prompt may render first, as the engine renders one between its steps."""
        if self.store is None:
            return self.interrupted()
        verdict: list[str | None] = [None]

        def ask() -> None:
            verdict[0] = obey(self.store, self.job_id, self.interrupted, self.told)
            if verdict[0] is None and self.renders():
                generate_job.between_training_steps(self, self.trainer)
        self.recorded(ask)
        if verdict[0] == "cancel":
            self.say("stopping after this step, as the UI asked; writing a checkpoint")
        return verdict[0] is not None or self.interrupted()

    def renders(self) -> bool:
        """Queued prompts render between this training's steps: on one process (under
        `accelerate launch` the others would wait at the next step's all-reduce)."""
        return self.trainer is not None and self.trainer.team.world == 1

    # -- what generate_job.between_training_steps asks of its host ----------------------

    @property
    def model(self) -> ModelOwner:
        return self.trainer.owner

    def event(self, message: str, level: str = "info", job: int | None = None) -> None:
        self.say(message)
        self.store.event(message, level, job, kind=EVENT_KIND)

    def between_steps(self, job_id: int) -> str | None:
        """Between two denoising steps of a prompt rendered here: its cancel, or Ctrl-C."""
        return obey(self.store, job_id, self.interrupted, lambda text: None)

    def told(self, text: str) -> None:
        self.say(f"{text} from the UI (p there resumes it; Ctrl-C here stops it)"
                 if text.endswith("paused") else f"{text} from the UI")
        self.store.event(text, job=self.job_id, kind=EVENT_KIND)

    # -- the end --------------------------------------------------------------------------

    def on_run_end(self, result: TrainResult | None, exc: BaseException | None) -> None:
        if exc is not None:
            self.failed(exc)
        elif result.stopped:
            self.ended(CANCELLED, f"job {self.job_id} stopped at step {result.step}")
        else:
            self.finished(result)

    def finished(self, result: TrainResult) -> None:
        job = self.job_id

        def done() -> None:
            self.store.add_output(job, result.lora_path, "lora", {"step": result.step})
            self.store.update_job(job, state=DONE, finished=time.time(), control=None,
                                  result={"lora": str(result.lora_path), "step": result.step,
                                          "run": result.run})
            self.store.event(f"job {job} done", job=job, kind=EVENT_KIND)
        self.recorded(done)

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, KeyboardInterrupt):
            self.ended(CANCELLED, f"job {self.job_id} interrupted in its terminal",
                       error="interrupted in its terminal (Ctrl-C twice): it resumes from its "
                             "last checkpoint")
            return
        message = explain_failure(exc)
        self.ended(FAILED, f"job {self.job_id} failed: {message}", "error", error=message)

    def ended(self, state: str, message: str, level: str = "info",
              error: str | None = None) -> None:
        def write() -> None:
            self.store.update_job(self.job_id, state=state, finished=time.time(),
                                  control=None, error=error)
            self.store.event(message, level, self.job_id, kind=EVENT_KIND)
        self.recorded(write)


def close_orphans(store: Store, ws: Workspace, *, claimed: bool = False) -> list[int]:
    """Close the terminal trainings the store says are running whose process is gone, and
    queue again the prompts they were rendering; their ids. A training records its end while
    it holds the workspace's training claim, so one is alive only while its pid holds the
    claim. `claimed`: the caller holds it (and its pid may be a dead one's, reused)."""
    holder = None if claimed else training_pid(ws)
    closed = []
    for job in store.jobs(LIVE):
        pid = job.terminal_pid
        if pid is None or (not claimed and holder in (pid, -1)):  # -1: a holder, unnamed
            continue
        if job.kind == "train":
            message = (f"its terminal's process (pid {pid}) ended without a word at step "
                       f"{job.step} (killed, or its SSH link closed): it resumes from its last "
                       f"checkpoint")
            store.update_job(job.id, state=CANCELLED, finished=time.time(), control=None,
                             error=message)
        else:  # a prompt it was rendering between its steps: queued again, for anyone
            message = (f"the training that rendered it (pid {pid}) ended without a word: "
                       f"queued again")
            params = {k: v for k, v in job.params.items() if k != TERMINAL_PID}
            store.update_job(job.id, state=QUEUED, control=None, params=params)
        store.event(f"job {job.id} ({job.kind}): {message}", "warning", job.id,
                    kind=EVENT_KIND)
        closed.append(job.id)
    return closed
