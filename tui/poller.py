"""Reads the store without blocking the UI: the app calls `read()` from a thread worker on a
timer and posts the returned delta as a message."""

from __future__ import annotations

from lorabooth.core import engine
from lorabooth.core.store import Store, StoreError
from lorabooth.core.workspace import Workspace

from .gpu import gpu_line
from .messages import StoreDelta


class StorePoller:
    def __init__(self, ws: Workspace):
        self.ws = ws
        self.store: Store | None = None
        self.last_step: dict[int, int] = {}
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
        pid = engine.running_pid(self.ws)
        row = store.engine()
        jobs = store.jobs()
        if not pid:
            state = "stopped"
        elif row and row.job:
            state = "running"
        else:
            state = "idle"
        delta = StoreDelta(state, pid if pid and pid > 0 else None,
                           gpu_line() or (row.device if row else None), jobs)
        for job in jobs:
            if job.kind != "train":
                continue
            rows = store.metrics(job.id, self.last_step.get(job.id, 0))
            if rows:
                self.last_step[job.id] = rows[-1]["step"]
                delta.metrics[job.id] = [dict(r) for r in rows]
        events = store.events(self.last_event)
        if events:
            self.last_event = events[-1]["id"]
            delta.events = [dict(e) for e in events]
        outputs = store.read("SELECT * FROM outputs WHERE id > ? ORDER BY id",
                             (self.last_output,))
        if outputs:
            self.last_output = outputs[-1]["id"]
            delta.outputs = [dict(o) for o in outputs]
        return delta
