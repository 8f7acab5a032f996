"""Opening the store while another process switches the new database to WAL: "database is
locked" is waited out, never an error (a CI run lost an engine start to it: the engine and
the client that started it opened the new database together)."""

from __future__ import annotations

import sqlite3

from lorabooth.core.store import Store


class LockedOnce:
    """A connection whose first journal-mode switch finds the database locked."""

    failed = 0

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def execute(self, sql: str, *args):
        if "journal_mode" in sql and LockedOnce.failed < 2:
            LockedOnce.failed += 1
            raise sqlite3.OperationalError("database is locked")
        return self.conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.conn, name)

    def __setattr__(self, name, value):
        if name == "conn":
            object.__setattr__(self, name, value)
        else:
            setattr(self.conn, name, value)


def test_a_database_locked_while_opening_is_waited_out(tmp_path, monkeypatch):
    real = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: LockedOnce(real(*a, **k)))
    store = Store(tmp_path / "state.db")
    job = store.add_job("generate", {"x": 1})
    assert [j.id for j in store.jobs()] == [job]
    assert LockedOnce.failed == 2  # it was locked, twice, and that was no error


def test_a_workspace_from_before_validation_losses_opens_with_its_history(tmp_path):
    """A database of the first schema (made by an earlier lorabooth) gains the validations
    table on opening, and keeps its jobs and metrics."""
    from lorabooth.core.store import MIGRATIONS

    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
    conn.execute("INSERT INTO jobs (kind, state, position, created, updated) "
                 "VALUES ('train', 'done', 1, 0, 0)")
    conn.execute("INSERT INTO metrics (job, step, loss, time) VALUES (1, 5, 0.25, 0)")
    conn.commit()
    conn.close()
    store = Store(path)
    assert [m.loss for m in store.metrics(1)] == [0.25]
    store.add_validation(1, 0, 0.5)
    store.add_validation(1, 5, 0.4)
    assert [(v.step, v.loss) for v in store.validations(1)] == [(0, 0.5), (5, 0.4)]
    assert [v.step for v in store.validations(1, after_step=0)] == [5]
