"""The study-file tables of the study database (the same SQLite file as `StudyDB`'s, WAL): each study's pool of
pre-decoded replies, its participants, their assigned trials and their answers.

Every write that a participant is told succeeded is committed before the call returns, with ``synchronous=FULL``
so that it survives the process being killed (and the machine losing power).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .db import _use_wal

SCHEMA = """
CREATE TABLE IF NOT EXISTS study_pools (
    study TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, created TEXT NOT NULL, built TEXT, stack TEXT NOT NULL,
    prompts TEXT NOT NULL, conditions TEXT NOT NULL, methods TEXT NOT NULL, beta REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS study_replies (
    study TEXT NOT NULL, prompt INTEGER NOT NULL, condition INTEGER NOT NULL, method TEXT NOT NULL,
    seed INTEGER NOT NULL, text TEXT NOT NULL, tokens INTEGER NOT NULL, kl REAL NOT NULL, finish TEXT NOT NULL,
    rewards TEXT NOT NULL,
    PRIMARY KEY (study, prompt, condition, method, seed)
);
CREATE TABLE IF NOT EXISTS study_participants (
    study TEXT NOT NULL, pid TEXT NOT NULL, started TEXT NOT NULL, finished TEXT,
    simulated INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (study, pid)
);
CREATE TABLE IF NOT EXISTS study_assignments (
    study TEXT NOT NULL, pid TEXT NOT NULL, position INTEGER NOT NULL, kind TEXT NOT NULL, prompt INTEGER NOT NULL,
    condition INTEGER NOT NULL, seed INTEGER NOT NULL, methods TEXT NOT NULL, check_index INTEGER NOT NULL,
    check_order TEXT NOT NULL, shown TEXT,
    PRIMARY KEY (study, pid, position)
);
CREATE TABLE IF NOT EXISTS study_answers (
    study TEXT NOT NULL, pid TEXT NOT NULL, position INTEGER NOT NULL, answered TEXT NOT NULL,
    answer TEXT NOT NULL, passed INTEGER,
    PRIMARY KEY (study, pid, position)
);
"""


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection to the study database, its tables created, in WAL mode, every commit flushed to disk.
    ``with connect(p) as db:`` commits at the end of the block (and rolls back on an exception)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"study database {path} is a folder; give a file path, e.g. {path / 'study.db'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        db = sqlite3.connect(path, timeout=30)
        _use_wal(db)
        db.execute("PRAGMA synchronous=FULL")
        _create(db)
    except sqlite3.DatabaseError as err:
        raise ValueError(f"study database {path} cannot be used: {err}") from None
    return db


def _create(db: sqlite3.Connection, tries: int = 100) -> None:
    """Create the tables; several processes opening a new file at once may see "locked" while one creates them."""
    for attempt in range(tries):
        try:
            db.executescript(SCHEMA)
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or attempt == tries - 1:
                raise
        time.sleep(0.1)


@contextmanager
def opened(path: str | Path) -> Iterator[sqlite3.Connection]:
    """`connect`, then commit at the end of the block (roll back on an exception) and close."""
    db = connect(path)
    try:
        with db:
            yield db
    finally:
        db.close()
