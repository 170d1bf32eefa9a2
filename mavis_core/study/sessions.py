"""Participant sessions of a study whose pool is built: ``start(pid)`` and ``submit(pid, position, answer)``.

A participant's whole plan of trials is drawn (`assign.plan`) and stored the first time their pid arrives, so a
reload or a return resumes at their first unanswered trial; one who finished gets their completion again, never
new trials. Each answer is checked, then committed (``synchronous=FULL``) before ``submit`` returns: an
acknowledged answer survives the process being killed. Each (pid, trial) takes one answer (a primary key, and
the check runs under SQLite's write lock), so two tabs with the same pid cannot both answer a trial, nor both
finish. Serving a pool reads stored rows only: no model is called. A study with ``serve = "live"`` decodes each
trial's replies with the given stack when the trial is first shown, and stores them as pool rows.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..arena import VOTES
from .assign import Assignment, count, plan
from .db import SLOTS
from .pool import Pool, decode_cells, layout, read_pool, register
from .spec import StudySpec, read_study
from .store import connect

PID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # recruiting platforms' ids (Prolific: 24 hex digits) fit


def check_pid(pid: object) -> str:
    """``pid`` when it is 1 to 64 letters, digits, ``_`` or ``-``; a ValueError saying what is allowed otherwise.

    >>> check_pid("5f3a9c")
    '5f3a9c'
    """
    if not isinstance(pid, str) or not PID.fullmatch(pid):
        shown = f"{len(pid)} characters" if isinstance(pid, str) and len(pid) > 64 else repr(pid)[:40]
        raise ValueError(f"participant id: got {shown}; allowed: 1 to 64 letters, digits, _ or -")
    return pid


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class ShownTrial:
    """What a participant sees: the prompt, the replies under slot letters (methods hidden), and what to answer
    (``asks``: "ratings" per objective on ``scale``, a "favourite" slot, or a pairwise "vote" of VOTES)."""

    study: str
    pid: str
    position: int
    total: int
    kind: str
    prompt: str
    weights: dict[str, float]
    slots: list[str]
    texts: list[str]
    asks: tuple[str, ...]
    objectives: tuple[str, ...] = ()
    scale: tuple[str, ...] = ()

    @property
    def progress(self) -> str:
        return f"{self.position} of {self.total}"


@dataclass
class Completion:
    """A participant who answered every trial: the code to return with, or the address to go to."""

    study: str
    pid: str
    total: int
    code: str | None = None
    redirect_url: str | None = None
    progress: str = field(init=False)

    def __post_init__(self) -> None:
        self.progress = f"{self.total} of {self.total}"


def _assignment(row: tuple) -> Assignment:
    position, kind, prompt, condition, seed, methods, check, order = row
    return Assignment(position, kind, prompt, condition, seed, tuple(json.loads(methods)), check,
                      tuple(json.loads(order)))


_ASSIGNMENT_COLUMNS = "position, kind, prompt, condition, seed, methods, check_index, check_order"


def _asks(spec: StudySpec, kind: str) -> tuple[str, ...]:
    if kind == "pair":
        return ("vote",)
    return tuple(k for k in ("ratings", "favourite") if k in spec.task.kinds)


def _rating(value: object, slot: str, objective: str, points: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= points:
        raise ValueError(f"the {objective} rating of reply {slot}: got {value!r:.20}; allowed: a whole number "
                         f"from 1 to {points}")
    return value


def check_answer(spec: StudySpec, trial: ShownTrial, answer: object) -> dict:
    """``answer`` checked against what ``trial`` asks: {"ratings": {slot: {objective: 1…len(scale)}},
    "favourite": slot} for a full trial (the keys its task asks), {"vote": one of VOTES} for a pair."""
    keys = set(trial.asks)
    if not isinstance(answer, dict) or set(answer) != keys:
        raise ValueError(f"answer: got keys {sorted(answer) if isinstance(answer, dict) else answer!r:.40}; "
                         f"allowed: exactly {sorted(keys)}")
    if "vote" in keys and answer["vote"] not in VOTES:
        raise ValueError(f"vote: got {answer['vote']!r:.20}; allowed: {', '.join(VOTES)}")
    if "favourite" in keys and answer["favourite"] not in trial.slots:
        raise ValueError(f"favourite: got {answer['favourite']!r:.20}; allowed: one of {', '.join(trial.slots)}")
    if "ratings" in keys:
        ratings = answer["ratings"]
        if not isinstance(ratings, dict) or sorted(ratings) != sorted(trial.slots) or any(
                not isinstance(r, dict) or sorted(r) != sorted(trial.objectives) for r in ratings.values()):
            raise ValueError(f"ratings: allowed: every reply ({', '.join(trial.slots)}) rated on every objective "
                             f"({', '.join(trial.objectives)}); got {ratings!r:.80}")
        for slot, per in ratings.items():
            for objective, value in per.items():
                _rating(value, slot, objective, len(trial.scale))
    return answer


def check_passed(answer: dict, correct_slot: str) -> bool:
    """An attention check's verdict: the known reply was picked (favourite or vote), or, with ratings only,
    rated above every other reply on the mean of its ratings."""
    if "favourite" in answer:
        return answer["favourite"] == correct_slot
    if "vote" in answer:
        return answer["vote"] == correct_slot
    means = {s: sum(r.values()) / len(r) for s, r in answer["ratings"].items()}
    return all(means[correct_slot] > m for s, m in means.items() if s != correct_slot)


class StudySessions:
    """The participant side of one study on its study database: start or resume, submit, progress.

    Args:
        study: the study file (or its `StudySpec`).
        study_db: the SQLite file its pool was built into (`pool.build_pool`).
    """

    def __init__(self, study: str | Path | StudySpec, study_db: str | Path, stack=None) -> None:
        self.spec = study if isinstance(study, StudySpec) else read_study(study)
        self.path = Path(study_db)
        self._local = threading.local()  # one connection per thread, kept open: no reopening per call
        self.stack, self._decoding = None, threading.Lock()
        if self.spec.serve == "live":
            if stack is None:
                raise ValueError(f"study {self.spec.name!r} decodes live (serve = \"live\"); it needs a loaded stack "
                                 "(the app's)")
            self.stack = stack
            with self._db() as db:  # the pool's layout, registered once; its replies come as trials need them
                register(db, layout(self.spec, stack, stack.spec.path), self.spec, str(self.path))
        with self._db() as db:
            pool = read_pool(db, self.spec.name)
        if pool is None or (pool.built is None and self.stack is None):
            raise ValueError(f"study {self.spec.name!r} has no finished pool in {self.path}; build it first: "
                             f"python -m mavis_core study build studies/{self.spec.name}.toml --study-db {self.path}")
        self.pool: Pool = pool
        own = [p.text for p in self.spec.prompts]
        if (own and own != [p.text for p in pool.prompts]) or list(self.spec.conditions) != list(pool.conditions):
            raise ValueError(f"study {self.spec.name!r} changed its prompts or conditions since its pool was built in "
                             f"{self.path}; allowed: the study file as built (or a new --study-db and a new build)")

    def _db(self) -> sqlite3.Connection:
        """This thread's connection; ``with self._db() as db:`` commits at the end of the block."""
        if getattr(self._local, "db", None) is None:
            self._local.db = connect(self.path)
        return self._local.db

    def start(self, pid: str, simulated: bool = False) -> ShownTrial | Completion:
        """Start ``pid``'s session, or resume it: their next unanswered trial, or their completion."""
        pid = check_pid(pid)
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")  # two first arrivals of one pid draw one plan; counts stay exact
            if db.execute("SELECT 1 FROM study_participants WHERE study = ? AND pid = ?",
                          (self.spec.name, pid)).fetchone() is None:
                self._enrol(db, pid, simulated)
            current = self._current(db, pid)
        return self._reveal(pid, current)

    def peek(self, pid: str) -> Completion | int | None:
        """Where ``pid`` stands, read only (nothing is drawn or marked shown): None before their first start,
        their `Completion` once finished, else the number of their current trial."""
        pid = check_pid(pid)
        with self._db() as db:
            if not self._known(db, pid):
                return None
            done = db.execute("SELECT COUNT(*) FROM study_answers WHERE study = ? AND pid = ?",
                              (self.spec.name, pid)).fetchone()[0]
        if done >= self.spec.total_trials:
            return Completion(self.spec.name, pid, self.spec.total_trials, self.spec.completion_code,
                              self.spec.redirect_url)
        return done + 1

    def _enrol(self, db: sqlite3.Connection, pid: str, simulated: bool) -> None:
        rows = db.execute(f"SELECT {_ASSIGNMENT_COLUMNS} FROM study_assignments WHERE study = ?", (self.spec.name,))
        seen = count([_assignment(r) for r in rows], self.pool.methods)
        trials = plan(self.spec, pid, len(self.pool.prompts), self.pool.methods, seen)
        db.execute("INSERT INTO study_participants (study, pid, started, simulated) VALUES (?, ?, ?, ?)",
                   (self.spec.name, pid, _now(), int(simulated)))
        db.executemany("INSERT INTO study_assignments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                       [(self.spec.name, pid, a.position, a.kind, a.prompt, a.condition, a.seed, json.dumps(a.methods),
                         a.check, json.dumps(a.order)) for a in trials])

    def _current(self, db: sqlite3.Connection, pid: str) -> Assignment | None:
        """``pid``'s first unanswered trial, or None when they answered every one."""
        row = db.execute(f"SELECT {_ASSIGNMENT_COLUMNS} FROM study_assignments a WHERE study = ? AND pid = ? AND NOT "
                         "EXISTS (SELECT 1 FROM study_answers b WHERE b.study = a.study AND b.pid = a.pid AND "
                         "b.position = a.position) ORDER BY position LIMIT 1", (self.spec.name, pid)).fetchone()
        return None if row is None else _assignment(row)

    def _reveal(self, pid: str, a: Assignment | None) -> ShownTrial | Completion:
        """What ``pid`` sees next: trial ``a`` (a live study's replies decoded first, outside any transaction; its
        first showing time recorded once they are there), or their completion."""
        if a is None:
            return Completion(self.spec.name, pid, self.spec.total_trials, self.spec.completion_code,
                              self.spec.redirect_url)
        if self.stack is not None and a.check < 0:
            self._decode(a)
        with self._db() as db:
            db.execute("UPDATE study_assignments SET shown = ? WHERE study = ? AND pid = ? AND position = ? AND "
                       "shown IS NULL", (_now(), self.spec.name, pid, a.position))
            return self._shown(db, pid, a)

    def _decode(self, a: Assignment) -> None:
        """A live study: decode and store the replies of trial ``a`` not yet stored (one trial at a time, so two
        participants shown one cell decode it once)."""
        cells = [(a.prompt, a.condition, m, a.seed) for m in a.methods]
        with self._decoding:
            decode_cells(self.stack, self.spec, self.pool, self.path, cells)

    def _shown(self, db: sqlite3.Connection, pid: str, a: Assignment, texts: bool = True) -> ShownTrial:
        """Trial ``a`` as ``pid`` sees it; ``texts`` False leaves the replies blank (to check an answer)."""
        if a.check >= 0:
            check = self.spec.attention_checks[a.check]
            prompt, weights, shown = check.prompt, {}, [check.replies[i] for i in a.order]
        else:
            prompt, weights = self.pool.prompts[a.prompt].text, self.pool.conditions[a.condition]
            shown = [self._reply(db, a, m)[0] if texts else "" for m in a.methods]
        return ShownTrial(self.spec.name, pid, a.position, self.spec.total_trials, a.kind, prompt, dict(weights),
                          list(SLOTS[: len(shown)]), shown, _asks(self.spec, a.kind), self.spec.task.objectives,
                          self.spec.task.scale)

    def _reply(self, db: sqlite3.Connection, a: Assignment, method: str) -> tuple[str, dict, float]:
        text, rewards, kl = db.execute(
            "SELECT text, rewards, kl FROM study_replies WHERE study = ? AND prompt = ? AND condition = ? AND "
            "method = ? AND seed = ?", (self.spec.name, a.prompt, a.condition, method, a.seed)).fetchone()
        return text, json.loads(rewards), kl

    def submit(self, pid: str, position: int, answer: dict) -> ShownTrial | Completion:
        """Store ``pid``'s answer to trial ``position`` (their current one) and return what comes next.

        The answer is committed before this returns. ValueError, with nothing stored, for an unknown pid, a
        trial already answered (say, in another tab) or not yet reached, and an answer the trial did not ask for.
        """
        pid = check_pid(pid)
        if isinstance(position, bool) or not isinstance(position, int):
            raise ValueError(f"trial: got {position!r:.20}; allowed: a trial number (an integer)")
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")  # the "already answered?" check and the insert under one write lock
            if not self._known(db, pid):
                raise ValueError(f"participant {pid!r} has not started study {self.spec.name!r}; open the study link")
            a = self._current(db, pid)
            if a is None or position < a.position:
                raise ValueError(f"trial {position} was already answered (perhaps in another tab); reload for the next")
            if position != a.position:
                raise ValueError(f"trial: got {position!r}; allowed: your current trial, {a.position}")
            answer = check_answer(self.spec, self._shown(db, pid, a, texts=False), answer)
            passed = None
            if a.check >= 0:
                answer_slot = SLOTS[a.order.index(self.spec.attention_checks[a.check].answer - 1)]
                passed = int(check_passed(answer, answer_slot))
            db.execute("INSERT INTO study_answers VALUES (?, ?, ?, ?, ?, ?)",
                       (self.spec.name, pid, position, _now(), json.dumps(answer), passed))
            if position == self.spec.total_trials:
                db.execute("UPDATE study_participants SET finished = ? WHERE study = ? AND pid = ?",
                           (_now(), self.spec.name, pid))
            following = self._current(db, pid)
        return self._reveal(pid, following)  # the answer was committed as the block ended, before this returns

    def _known(self, db: sqlite3.Connection, pid: str) -> bool:
        return db.execute("SELECT 1 FROM study_participants WHERE study = ? AND pid = ?",
                          (self.spec.name, pid)).fetchone() is not None

    def hidden(self, pid: str, position: int) -> list[dict]:
        """For simulations and the researcher (never a participant): per slot of a pool trial, its method and
        the reward models' scores of its reply."""
        with self._db() as db:
            row = db.execute(f"SELECT {_ASSIGNMENT_COLUMNS} FROM study_assignments WHERE study = ? AND pid = ? AND "
                             "position = ?", (self.spec.name, check_pid(pid), position)).fetchone()
            if row is None:
                raise ValueError(f"participant {pid!r} has no trial {position!r:.20}")
            a = _assignment(row)
            if a.check >= 0:  # the reply a careful participant picks is the known answer
                answer = self.spec.attention_checks[a.check].answer - 1
                return [{"method": "check", "rewards": {}, "kl": 0.0, "correct": i == answer} for i in a.order]
            replies = {m: self._reply(db, a, m) for m in a.methods}
            return [{"method": m, "rewards": replies[m][1], "kl": replies[m][2]} for m in a.methods]
