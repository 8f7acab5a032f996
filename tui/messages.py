"""Typed messages: from the store worker and the poller to the app, from the app to the panes,
and from the panes to the app (commands for the store, requests to switch or start things)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from textual.message import Message

from lorabooth.core.store import Event, Job, Metric, Output, Validation

if TYPE_CHECKING:
    from textual.widget import Widget

    from .store_io import Command


@dataclass
class StoreDelta:
    """What changed in the store since the last read."""

    engine_state: str  # running | idle | stopped | unreachable
    engine_pid: int | None
    device: str | None
    jobs: list[Job]  # the jobs in view: the store's `jobs_in_view`
    jobs_total: int = 0  # every job the store holds, finished ones out of view too
    metrics: dict[int, list[Metric]] = field(default_factory=dict)  # job -> new rows
    validations: dict[int, list[Validation]] = field(default_factory=dict)  # job -> new rows
    events: list[Event] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    error: str = ""
    # Error events no UI of this workspace has shown yet (earlier ones stay in the logs only).
    new_errors: list[Event] = field(default_factory=list)
    # A training the engine does not run (`lorabooth train` in a terminal): its pid, -1 unknown.
    training_elsewhere: int | None = None
    # The job an engine that ended without a word left marked running (engine.Status's).
    interrupted: Job | None = None
    # Bytes free on the disk holding .lorabooth (None: not known). A full disk stops the
    # engine's writes, heartbeat included, so it would otherwise read as frozen.
    disk_free: int | None = None


class StoreUpdated(Message):
    """The poller's read, posted to the app."""

    def __init__(self, delta: StoreDelta):
        super().__init__()
        self.delta = delta


class PaneUpdate(Message, bubble=False):
    """A store delta routed by the app to one pane (it does not bubble back)."""

    def __init__(self, delta: StoreDelta):
        super().__init__()
        self.delta = delta


class PaneReady(Message):
    """A pane mounted (lazily, maybe late): it wants what the store said before."""

    def __init__(self, pane: Widget):
        super().__init__()
        self.pane = pane


class Write(Message):
    """A pane asks the store worker to do something off the UI thread; `Done` comes back to
    `reply_to` (and bubbles to the app, which says how it went)."""

    def __init__(self, command: Command, reply_to: Widget | None = None):
        super().__init__()
        self.command = command
        self.reply_to = reply_to


class Done(Message):
    """The store worker finished a command: its result, or the error in words."""

    def __init__(self, command: Command, result: Any = None, error: str = "",
                 failure: type[Exception] | None = None):
        super().__init__()
        self.command = command
        self.result = result
        self.error = error
        self.failure = failure  # the error's type, for a pane that acts on one kind


class EngineWanted(Message):
    """Work was queued: start the engine if none runs."""


class DatasetScanned(Message):
    def __init__(self, scan, report, problem: str = ""):
        super().__init__()
        self.scan = scan
        self.report = report
        self.problem = problem


class FirstScreen(Message):
    """The Dataset pane has drawn its first scan: the hidden panes may mount now."""


class Notice(Message):
    """A one-line message for the user (from a worker)."""

    def __init__(self, text: str, severity: str = "information"):
        super().__init__()
        self.text = text
        self.severity = severity


class OpenViewer(Message):
    """Show these images full-screen, starting at `index`."""

    def __init__(self, items: list, index: int):
        super().__init__()
        self.items = items
        self.index = index


class Remake(Message):
    """Queue an output again from what it recorded (`variations`: with new seeds)."""

    def __init__(self, recipe: dict, variations: bool):
        super().__init__()
        self.recipe = recipe
        self.variations = variations
