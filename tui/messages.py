"""Typed messages from background workers to the widgets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message

from lorabooth.core.store import Job


@dataclass
class StoreDelta:
    """What changed in the store since the last read."""

    engine_state: str  # running | idle | stopped | unreachable
    engine_pid: int | None
    device: str | None
    jobs: list[Job]
    metrics: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # job -> new rows
    events: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""


class StoreUpdated(Message):
    def __init__(self, delta: StoreDelta):
        super().__init__()
        self.delta = delta


class DatasetScanned(Message):
    def __init__(self, scan, report, problem: str = ""):
        super().__init__()
        self.scan = scan
        self.report = report
        self.problem = problem


class Notice(Message):
    """A one-line message for the user (from a worker)."""

    def __init__(self, text: str, severity: str = "information"):
        super().__init__()
        self.text = text
        self.severity = severity
