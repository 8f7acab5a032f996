"""The workspace store: one SQLite database (WAL mode) that is the only channel between the UI
(and the CLI) and the engine.

Clients write jobs and control requests; the engine writes job state, metrics, outputs and
events. Every state change is a row, so a crash loses at most the work since the last
checkpoint and nothing the user typed. WAL lets readers poll at 10 Hz without blocking the
writer; a busy database is retried, never an error.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .errors import LoraboothError

T = TypeVar("T")

QUEUED, RUNNING, PAUSED, DONE, FAILED, CANCELLED = (
    "queued", "running", "paused", "done", "failed", "cancelled")
ACTIVE = (QUEUED, RUNNING, PAUSED)
LIVE = (RUNNING, PAUSED)  # a job the engine holds now
FINISHED = (DONE, FAILED, CANCELLED)
# The job param of a training started in a terminal (`lorabooth train`): the pid of the
# process that trains it and writes its rows; the engine never runs such a job.
TERMINAL_PID = "terminal_pid"
# ... and the model it renders queued prompts with between its steps, when it does.
RENDERS = "renders"

MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        params TEXT NOT NULL DEFAULT '{}',
        position REAL NOT NULL,
        control TEXT,
        step INTEGER NOT NULL DEFAULT 0,
        total INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        result TEXT,
        created REAL NOT NULL,
        started REAL,
        finished REAL,
        updated REAL NOT NULL
    );
    CREATE INDEX jobs_queue ON jobs(state, position);
    CREATE TABLE metrics (
        job INTEGER NOT NULL,
        step INTEGER NOT NULL,
        loss REAL, lr REAL, grad_norm REAL, seconds REAL, images_per_s REAL,
        memory_gb REAL, time REAL NOT NULL,
        PRIMARY KEY (job, step)
    );
    CREATE TABLE outputs (
        id INTEGER PRIMARY KEY,
        job INTEGER,
        path TEXT NOT NULL,
        kind TEXT NOT NULL,
        recipe TEXT NOT NULL DEFAULT '{}',
        created REAL NOT NULL
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        level TEXT NOT NULL,
        message TEXT NOT NULL,
        job INTEGER,
        kind TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE engine (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        pid INTEGER,
        state TEXT NOT NULL,
        job INTEGER,
        heartbeat REAL NOT NULL,
        started REAL NOT NULL,
        device TEXT
    );
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: the validation loss, measured at checkpoints and on the base model (step 0)
    """
    CREATE TABLE validations (
        job INTEGER NOT NULL,
        step INTEGER NOT NULL,
        loss REAL,
        time REAL NOT NULL,
        PRIMARY KEY (job, step)
    );
    """,
]


SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(LoraboothError):
    """The database cannot be used: newer schema, read-only disk, not a database."""


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    state: str
    params: dict[str, Any]
    position: float
    control: str | None
    step: int
    total: int
    error: str | None
    result: dict[str, Any] | None
    created: float
    started: float | None
    finished: float | None

    @property
    def terminal_pid(self) -> int | None:
        """For a training started in a terminal, the pid of its process; else None."""
        pid = self.params.get(TERMINAL_PID) if isinstance(self.params, dict) else None
        return pid if type(pid) is int and pid > 0 else None

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "state": self.state, "step": self.step,
                "total": self.total, "params": self.params, "error": self.error,
                "result": self.result, "created": self.created, "started": self.started,
                "finished": self.finished, "control": self.control}


@dataclass(frozen=True)
class Metric:
    job: int
    step: int
    loss: float | None
    lr: float | None
    grad_norm: float | None
    seconds: float | None
    images_per_s: float | None
    memory_gb: float | None
    time: float


@dataclass(frozen=True)
class Validation:
    job: int
    step: int  # 0: the base model, before the first step
    loss: float | None
    time: float


@dataclass(frozen=True)
class Output:
    id: int
    job: int | None
    path: str
    kind: str  # image | sample | lora
    recipe: dict[str, Any]
    created: float


@dataclass(frozen=True)
class Event:
    id: int
    time: float
    level: str  # info | warning | error
    message: str
    job: int | None
    kind: str  # engine | dataset


@dataclass(frozen=True)
class EngineRow:
    pid: int | None
    state: str
    job: int | None
    heartbeat: float
    started: float
    device: str | None


def _job(row: sqlite3.Row) -> Job:
    return Job(row["id"], row["kind"], row["state"], json.loads(row["params"]), row["position"],
               row["control"], row["step"], row["total"], row["error"],
               json.loads(row["result"]) if row["result"] else None, row["created"],
               row["started"], row["finished"])


class Store:
    """A connection per thread to `.lorabooth/workspace.db`."""

    def __init__(self, path: Path, *, retry_for: float = 30.0):
        self.path = path
        # SQLite takes an empty file for a new database: a truncated workspace.db would
        # silently start over, with every job and metric gone.
        if path.is_file() and path.stat().st_size == 0 and _was_used(path):
            raise StoreError(f"{path} is empty (0 bytes): it was truncated or damaged. Move "
                             "it aside to start a new history, or restore it from a backup")
        self.retry_for = retry_for
        self._local = threading.local()
        self._migrate()

    # -- connections and retries ----------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        conn = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 5000")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            if _busy(exc):
                # Switching a new database to WAL needs it to itself for a moment: the engine
                # and the client opening it together met here (a CI run lost an engine start
                # to it). _retry waits and tries again.
                raise
            raise StoreError(_explain(exc, self.path)) from None
        except OSError as exc:
            raise StoreError(f"cannot open {self.path}: {exc.strerror or exc}") from None
        self._local.conn = conn
        return conn

    def _retry(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        deadline = time.monotonic() + self.retry_for
        delay = 0.01
        while True:
            try:
                return fn(self._connect())
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or time.monotonic() > deadline:
                    raise StoreError(_explain(exc, self.path)) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one write transaction, retried while the database is busy."""
        def attempt(_: sqlite3.Connection) -> T:
            with self._tx() as conn:
                return fn(conn)
        return self._retry(attempt)

    def read(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        return self._retry(lambda conn: conn.execute(sql, args).fetchall())

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- schema -----------------------------------------------------------------------------

    def _migrate(self) -> None:
        # Read first: a current database needs no write transaction (and a read-only one
        # can still be read).
        current = self._retry(lambda conn: conn.execute("PRAGMA user_version").fetchone()[0])
        if current == SCHEMA_VERSION:
            return

        def migrate(conn: sqlite3.Connection) -> None:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} was written by a newer lorabooth (schema {version}; this one "
                    f"knows up to {SCHEMA_VERSION}): upgrade lorabooth to open this workspace")
            for number in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number + 1}")
        self.write(migrate)

    # -- jobs -------------------------------------------------------------------------------

    def add_job(self, kind: str, params: dict[str, Any] | None = None, total: int = 0,
                running_from: int | None = None) -> int:
        """A job queued last; or, with `running_from` (its first step), one already running
        in the process that adds it (a training in a terminal), never queued for the engine
        to take."""
        now = time.time()
        state, step, started = ((QUEUED, 0, None) if running_from is None
                                else (RUNNING, running_from, now))

        def insert(conn: sqlite3.Connection) -> int:
            last = conn.execute("SELECT COALESCE(MAX(position), 0) FROM jobs").fetchone()[0]
            cur = conn.execute(
                "INSERT INTO jobs (kind, state, params, position, step, total, created, "
                "started, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, state, json.dumps(params or {}), last + 1, step, total, now, started,
                 now))
            return int(cur.lastrowid)
        return self.write(insert)

    def take(self, job_id: int, params: dict[str, Any] | None = None) -> bool:
        """Mark a queued job running (with new `params`, when given), atomically: False when
        another process took it first (the engine and a training in a terminal both render
        queued prompts)."""
        def apply(conn: sqlite3.Connection) -> bool:
            now = time.time()
            cur = conn.execute("UPDATE jobs SET state = ?, started = ?, error = NULL, "
                               "updated = ? WHERE id = ? AND state = ?",
                               (RUNNING, now, now, job_id, QUEUED))
            if cur.rowcount == 1 and params is not None:
                conn.execute("UPDATE jobs SET params = ? WHERE id = ?",
                             (json.dumps(params), job_id))
            return cur.rowcount == 1
        return self.write(apply)

    def job(self, job_id: int) -> Job | None:
        rows = self.read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def jobs(self, states: tuple[str, ...] | None = None) -> list[Job]:
        if states:
            marks = ",".join("?" * len(states))
            rows = self.read(f"SELECT * FROM jobs WHERE state IN ({marks}) "
                             "ORDER BY position, id", states)
        else:
            rows = self.read("SELECT * FROM jobs ORDER BY position, id")
        return [_job(r) for r in rows]

    def jobs_in_view(self, finished: int) -> tuple[list[Job], int]:
        """Every job not finished, every training (a run's jobs are joined into one curve), and
        the newest `finished` others, in queue order; and how many jobs there are in all. A
        workspace used for months holds thousands of finished prompts, and a UI that read and
        drew them all four times a second would freeze."""
        marks = ",".join("?" * len(FINISHED))
        rows = self.read(
            f"SELECT * FROM jobs WHERE state NOT IN ({marks}) OR kind = 'train' OR id IN "
            f"(SELECT id FROM jobs WHERE state IN ({marks}) ORDER BY id DESC LIMIT ?) "
            "ORDER BY position, id", (*FINISHED, *FINISHED, finished))
        total = self.read("SELECT COUNT(*) FROM jobs")[0][0]
        return [_job(r) for r in rows], int(total)

    def next_queued(self) -> Job | None:
        rows = self.read("SELECT * FROM jobs WHERE state = ? ORDER BY position, id LIMIT 1",
                         (QUEUED,))
        return _job(rows[0]) if rows else None

    def update_job(self, job_id: int, **fields: Any) -> None:
        for key in ("params", "result"):
            if key in fields and fields[key] is not None:
                fields[key] = json.dumps(fields[key])
        fields["updated"] = time.time()
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.write(lambda conn: conn.execute(f"UPDATE jobs SET {sets} WHERE id = ?",
                                             (*fields.values(), job_id)))

    def request(self, job_id: int, control: str | None) -> bool:
        """Ask the engine to pause, resume (None) or cancel a job. A queued job is cancelled
        at once; a running one within a step."""
        def apply(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["state"] in FINISHED:
                return False
            if control == "cancel" and row["state"] == QUEUED:
                conn.execute("UPDATE jobs SET state = ?, finished = ?, updated = ? "
                             "WHERE id = ?", (CANCELLED, time.time(), time.time(), job_id))
                return True
            conn.execute("UPDATE jobs SET control = ?, updated = ? WHERE id = ?",
                         (control, time.time(), job_id))
            return True
        return self.write(apply)

    def control(self, job_id: int) -> str | None:
        rows = self.read("SELECT control FROM jobs WHERE id = ?", (job_id,))
        return rows[0]["control"] if rows else None

    def move(self, job_id: int, position: int) -> bool:
        """Put a queued job at `position` (1 = next) among the queued jobs."""
        def apply(conn: sqlite3.Connection) -> bool:
            queued = [r["id"] for r in conn.execute(
                "SELECT id FROM jobs WHERE state = ? ORDER BY position, id", (QUEUED,))]
            if job_id not in queued:
                return False
            queued.remove(job_id)
            queued.insert(max(0, min(position - 1, len(queued))), job_id)
            base = conn.execute("SELECT COALESCE(MIN(position), 0) FROM jobs WHERE state = ?",
                                (QUEUED,)).fetchone()[0]
            for offset, jid in enumerate(queued):
                conn.execute("UPDATE jobs SET position = ? WHERE id = ?", (base + offset, jid))
            return True
        return self.write(apply)

    # -- metrics, outputs, events -------------------------------------------------------------

    def add_metric(self, job_id: int, step: int, **values: float | None) -> None:
        cols = ["job", "step", "time", *values]
        marks = ",".join("?" * len(cols))
        self.write(lambda conn: conn.execute(
            f"INSERT OR REPLACE INTO metrics ({','.join(cols)}) VALUES ({marks})",
            (job_id, step, time.time(), *values.values())))

    def metrics(self, job_id: int, after_step: int = 0) -> list[Metric]:
        rows = self.read("SELECT * FROM metrics WHERE job = ? AND step > ? ORDER BY step",
                         (job_id, after_step))
        return [Metric(**dict(r)) for r in rows]

    def add_validation(self, job_id: int, step: int, loss: float) -> None:
        self.write(lambda conn: conn.execute(
            "INSERT OR REPLACE INTO validations (job, step, loss, time) VALUES (?, ?, ?, ?)",
            (job_id, step, loss, time.time())))

    def validations(self, job_id: int, after_step: int = -1) -> list[Validation]:
        rows = self.read("SELECT * FROM validations WHERE job = ? AND step > ? ORDER BY step",
                         (job_id, after_step))
        return [Validation(**dict(r)) for r in rows]

    def add_output(self, job_id: int | None, path: Path, kind: str,
                   recipe: dict[str, Any] | None = None) -> int:
        def insert(conn: sqlite3.Connection) -> int:
            cur = conn.execute("INSERT INTO outputs (job, path, kind, recipe, created) "
                               "VALUES (?, ?, ?, ?, ?)",
                               (job_id, str(path), kind, json.dumps(recipe or {}), time.time()))
            return int(cur.lastrowid)
        return self.write(insert)

    def outputs(self, job_id: int | None = None, after_id: int = 0) -> list[Output]:
        """Outputs oldest first: of one job, or of all jobs after output `after_id`."""
        if job_id is None:
            rows = self.read("SELECT * FROM outputs WHERE id > ? ORDER BY id", (after_id,))
        else:
            rows = self.read("SELECT * FROM outputs WHERE job = ? AND id > ? ORDER BY id",
                             (job_id, after_id))
        return [Output(r["id"], r["job"], r["path"], r["kind"], json.loads(r["recipe"] or "{}"),
                       r["created"]) for r in rows]

    def event(self, message: str, level: str = "info", job: int | None = None,
              kind: str = "") -> None:
        self.write(lambda conn: conn.execute(
            "INSERT INTO events (time, level, message, job, kind) VALUES (?, ?, ?, ?, ?)",
            (time.time(), level, message, job, kind)))

    def events(self, after_id: int = 0, limit: int = 500) -> list[Event]:
        rows = self.read("SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?",
                         (after_id, limit))
        return [Event(**dict(r)) for r in rows]

    # -- the engine's own row -----------------------------------------------------------------

    def set_engine(self, **fields: Any) -> None:
        fields.setdefault("heartbeat", time.time())

        def apply(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM engine WHERE id = 1").fetchone() is None:
                conn.execute("INSERT INTO engine (id, state, heartbeat, started) "
                             "VALUES (1, 'stopped', ?, ?)", (time.time(), time.time()))
            sets = ", ".join(f"{k} = ?" for k in fields)
            conn.execute(f"UPDATE engine SET {sets} WHERE id = 1", tuple(fields.values()))
        self.write(apply)

    def engine(self) -> EngineRow | None:
        rows = self.read("SELECT * FROM engine WHERE id = 1")
        if not rows:
            return None
        r = rows[0]
        return EngineRow(r["pid"], r["state"], r["job"], r["heartbeat"], r["started"],
                         r["device"])

    def setting(self, key: str, default: str | None = None) -> str | None:
        rows = self.read("SELECT value FROM settings WHERE key = ?", (key,))
        return rows[0]["value"] if rows else default

    def set_setting(self, key: str, value: str) -> None:
        self.write(lambda conn: conn.execute(
            "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value)))


def _was_used(path: Path) -> bool:
    """A store that ever held data has its WAL beside it, or is older than a creation takes."""
    import os

    wal = path.with_name(path.name + "-wal")
    return wal.exists() or time.time() - os.stat(path).st_mtime > 5.0


def _busy(exc: sqlite3.DatabaseError) -> bool:
    """Another connection holds the database for a moment: worth waiting for."""
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def _explain(exc: Exception, path: Path) -> str:
    import os

    text = str(exc)
    if "unable to open" in text and not os.access(path.parent, os.W_OK):
        return (f"cannot open {path}: its folder is not writable (a read-only disk?); "
                "move the workspace somewhere writable")
    if "readonly" in text.replace(" ", "").replace("-", "").lower():
        return f"{path} is on a read-only disk: move the workspace somewhere writable"
    if "not a database" in text or "malformed" in text:
        return f"{path} is not a lorabooth database or is damaged ({text})"
    if "disk" in text and "full" in text:
        return f"the disk holding {path} is full: free some space"
    return f"{path}: {text}"
