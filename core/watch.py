"""Watching the photo folder: photos dropped in over scp show up in seconds.

watchdog's events only mark the folder dirty; a worker thread then re-scans it the cheap way
(unchanged files come from the scan cache). That one path handles new, changed, renamed and
deleted files, bursts of hundreds (one batch), and editors that save through temp files. A file
is taken only once its size and mtime have held still for `settle` seconds, because scp writes
under the final name. A slow poll backs the events up, and notices the folder being deleted and
re-created (the watch on the old folder dies with it).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from .dataset.files import list_photos
from .dataset.judge import PhotoRecord
from .dataset.scan import ScanOptions, ScanResult, scan_folder

log = logging.getLogger(__name__)

MAX_HOLD = 1.2  # seconds new files may be held back while more keep arriving


@dataclass
class DatasetChange:
    scan: ScanResult
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def diff_records(old: dict[str, PhotoRecord], new: ScanResult) -> DatasetChange:
    fresh = {r.path: r for r in new.records}
    change = DatasetChange(new)
    change.added = sorted(set(fresh) - set(old))
    change.removed = sorted(set(old) - set(fresh))
    change.changed = sorted(
        p for p in set(fresh) & set(old)
        if (fresh[p].measurement and old[p].measurement
            and fresh[p].measurement.sha256 != old[p].measurement.sha256)
        or fresh[p].caption != old[p].caption or fresh[p].status != old[p].status)
    return change


class _Dirty(FileSystemEventHandler):
    def __init__(self, wake: Callable[[], None]):
        self.wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in ("opened", "closed_no_write"):
            self.wake()


class FolderWatcher:
    """Calls `on_change` (from its own thread) whenever the folder's photo set changes."""

    def __init__(self, folder: Path, on_change: Callable[[DatasetChange], None],
                 options: ScanOptions | None = None, cache_dir: Path | None = None,
                 settle: float = 0.5, poll: float = 1.0):
        self.folder = folder
        self.on_change = on_change
        self.options = options or ScanOptions()
        self.cache_dir = cache_dir
        self.settle = settle
        self.poll = poll
        self.records: dict[str, PhotoRecord] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._observer: Observer | None = None
        self._watched_inode: int | None = None
        self._seen: dict[Path, tuple[int, int, float]] = {}  # size, mtime, since when
        self._held_since: float | None = None
        self._thread = threading.Thread(target=self._run, name="lorabooth-watch", daemon=True)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, initial: ScanResult | None = None) -> None:
        if initial is not None:
            self.records = {r.path: r for r in initial.records}
        self._wake.set()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        self._unwatch()

    def __enter__(self) -> FolderWatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the worker -----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=self.poll)
            if self._stop.is_set():
                return
            self._wake.clear()
            try:
                self._ensure_watch()
                pending = self._rescan()
            except Exception:  # the watcher must outlive any one bad moment
                log.exception("watching %s failed; retrying", self.folder)
                pending = True
            if pending:  # some file is still being written: look again soon
                self._stop.wait(min(self.settle / 2, 0.25))
                self._wake.set()

    def _ensure_watch(self) -> None:
        try:
            inode = os.stat(self.folder).st_ino
        except OSError:
            self._unwatch()
            return
        if self._observer is not None and inode == self._watched_inode \
                and self._observer.is_alive():
            return
        self._unwatch()
        observer = Observer()
        observer.schedule(_Dirty(self._wake.set), str(self.folder),
                          recursive=self.options.recursive)
        observer.daemon = True
        observer.start()
        self._observer, self._watched_inode = observer, inode

    def _unwatch(self) -> None:
        if self._observer is not None:
            try:
                self._observer.stop()
                self._observer.join(timeout=2)
            except Exception:
                log.debug("stopping the observer failed", exc_info=True)
        self._observer, self._watched_inode = None, None

    def _unsettled(self) -> frozenset[Path]:
        """Files whose size or mtime changed within the last `settle` seconds."""
        now, wall = time.monotonic(), time.time()
        seen: dict[Path, tuple[int, int, float]] = {}
        busy: set[Path] = set()
        files = list_photos(self.folder, self.options.recursive) if self.folder.is_dir() else []
        for path in files:
            try:
                st = path.stat()
            except OSError:
                continue
            old = self._seen.get(path)
            if old and old[:2] == (st.st_size, st.st_mtime_ns):
                since = old[2]
            elif old is None and wall - st.st_mtime > self.settle:
                since = now - self.settle  # untouched for a while before we first looked
            else:
                since = now
            seen[path] = (st.st_size, st.st_mtime_ns, since)
            if now - since < self.settle:
                busy.add(path)
        self._seen = seen
        return frozenset(busy)

    def _rescan(self) -> bool:
        busy = self._unsettled()
        skip = busy
        new = {p for p in self._seen if p.relative_to(self.folder).as_posix() not in self.records}
        if busy & new and time.monotonic() - (self._held_since or time.monotonic()) < MAX_HOLD:
            # New files are still arriving: hold them all back so that a burst lands as one
            # batch, but never past MAX_HOLD, so one slow copy cannot hide the others.
            self._held_since = self._held_since or time.monotonic()
            skip = frozenset(busy | new)
        else:
            self._held_since = None
        scan = scan_folder(self.folder, self.options, self.cache_dir, skip=skip)
        # A file still being written keeps its previous record rather than vanishing.
        keep = {p.relative_to(self.folder).as_posix() for p in skip}
        kept = [r for path, r in self.records.items() if path in keep]
        if kept:
            scan.records = sorted(scan.records + kept, key=lambda r: r.path)
        change = diff_records(self.records, scan)
        if change:
            self.records = {r.path: r for r in scan.records}
            self.on_change(change)
        return bool(busy)
