"""What the UI asks of a running job, obeyed between two of its steps: pause (wait here, the
model kept in memory), resume, cancel. The engine's jobs and a training in a terminal obey the
same rows, so `p` and `c` in the UI reach either."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..store import PAUSED, RUNNING, Store

POLL = 0.05  # seconds between looks at a paused job's control


def obey(store: Store, job_id: int, stopping: Callable[[], bool],
         say: Callable[[str], None]) -> str | None:
    """Returns "cancel" or "stop" (the process is shutting down) when the job must end, None
    to carry on; while the job is paused, waits here."""
    paused = False
    while True:
        if stopping():
            return "stop"
        control = store.control(job_id)
        if control == "cancel":
            return "cancel"
        if control == "pause":
            if not paused:
                store.update_job(job_id, state=PAUSED)
                say(f"job {job_id} paused")
                paused = True
            time.sleep(POLL)
            continue
        if paused:
            store.update_job(job_id, state=RUNNING)
            say(f"job {job_id} resumed")
        return None
