"""User-study storage in SQLite: blinded trials, per-objective ratings, favourites, pairwise arena votes,
CSV / preference-pair exports, results.

A *trial* is one prompt + weights + seed for which every method replied; the participant sees the replies
under slot letters in a shuffled order. An *arena trial* is the same for two methods drawn at random, shown as
A and B, with one vote (A, B, tie, both bad). A trial (with the hidden method of each slot) is written the
moment it is shown, its ratings or vote the moment they are given, so nothing is lost if the app restarts.
The database runs in WAL mode so readers (the results view, exports) never block a participant's write.
"""

from __future__ import annotations

import csv
import hmac
import json
import os
import random
import sqlite3
import threading
import time
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from ..arena import VOTES, leaderboard, preference_record

RATING_RANGE = (1, 5)
SLOTS = "ABCDEFGH"
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")  # spreadsheet apps run cells that start with these
FORMULA_CHARS = ("=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20")  # also after blanks; full-width too
BIDI_CONTROLS = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")  # reorder shown text
TEXT_CONTROLS = {"\n", "\t"}  # kept inside stored text (prompts and replies span lines)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    id TEXT PRIMARY KEY, created TEXT NOT NULL, participant TEXT NOT NULL, prompt TEXT NOT NULL,
    weights TEXT NOT NULL, seed INTEGER NOT NULL, settings TEXT NOT NULL,
    methods TEXT NOT NULL, texts TEXT NOT NULL, abandoned TEXT
);
CREATE TABLE IF NOT EXISTS ratings (
    trial_id TEXT NOT NULL REFERENCES trials(id), created TEXT NOT NULL, slot TEXT NOT NULL,
    method TEXT NOT NULL, objective TEXT NOT NULL, rating INTEGER NOT NULL,
    PRIMARY KEY (trial_id, slot, objective)
);
CREATE TABLE IF NOT EXISTS favourites (
    trial_id TEXT PRIMARY KEY REFERENCES trials(id), created TEXT NOT NULL, slot TEXT NOT NULL,
    method TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS arena_trials (
    id TEXT PRIMARY KEY, created TEXT NOT NULL, participant TEXT NOT NULL, prompt TEXT NOT NULL,
    weights TEXT NOT NULL, seed INTEGER NOT NULL, settings TEXT NOT NULL,
    method_a TEXT NOT NULL, method_b TEXT NOT NULL, text_a TEXT NOT NULL, text_b TEXT NOT NULL, abandoned TEXT
);
CREATE TABLE IF NOT EXISTS arena_votes (
    trial_id TEXT PRIMARY KEY REFERENCES arena_trials(id), created TEXT NOT NULL, vote TEXT NOT NULL
);
"""
EXPORT_QUERY = """
SELECT t.id AS trial_id, t.created AS shown_at, r.created AS rated_at, t.participant, t.prompt, t.weights,
       t.seed, t.settings, r.slot, r.method, r.objective, r.rating,
       CASE WHEN f.method = r.method THEN 1 ELSE 0 END AS favourite
FROM ratings r JOIN trials t ON t.id = r.trial_id LEFT JOIN favourites f ON f.trial_id = r.trial_id
ORDER BY r.created, r.trial_id, r.slot, r.objective
"""
ARENA_EXPORT_QUERY = """
SELECT t.id AS trial_id, t.created AS shown_at, v.created AS voted_at, t.participant, t.prompt, t.weights, t.seed,
       t.settings, t.method_a, t.method_b, t.text_a, t.text_b, v.vote,
       CASE v.vote WHEN 'A' THEN t.method_a WHEN 'B' THEN t.method_b ELSE '' END AS winner
FROM arena_votes v JOIN arena_trials t ON t.id = v.trial_id
ORDER BY v.rowid  -- in the order voted
"""


@dataclass
class Trial:
    """What a participant is shown: slot letters and texts, never the methods behind them (also an arena
    trial's, with slots A and B)."""

    id: str
    prompt: str
    weights: dict[str, float]
    slots: list[str]
    texts: list[str]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def neutralise(cell: object) -> object:
    """A CSV cell that a spreadsheet will show as text, never run as a formula (CSV injection): a leading ``'``
    for text that starts with a formula character, also after blanks or in its full-width form.

    >>> neutralise("=HYPERLINK(1)"), neutralise("-2"), neutralise("fine"), neutralise(3)
    ("'=HYPERLINK(1)", "'-2", 'fine', 3)
    >>> neutralise(" \\n=1+1"), neutralise("\\uff1dSUM(A1)")
    ("' \\n=1+1", "'＝SUM(A1)")
    """
    if isinstance(cell, str) and (cell.startswith(FORMULA_PREFIXES) or cell.lstrip().startswith(FORMULA_CHARS)):
        return "'" + cell
    return cell


def _use_wal(db: sqlite3.Connection, tries: int = 100) -> None:
    """Switch ``db`` to write-ahead logging. SQLite answers "database is locked" at once, without waiting out the
    busy timeout, when another connection holds the file while the mode changes (several app processes opening
    one file), so this retries for up to about ten seconds."""
    for attempt in range(tries):
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")  # a file system without WAL keeps its mode: that still works
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or attempt == tries - 1:
                raise
        time.sleep(0.1)


def printable(text: str, one_line: bool = False) -> str:
    """``text`` without control characters (NUL, ESC, …) and bidi overrides (U+202E, …); newlines and tabs
    stay unless ``one_line``. Line breaks become ``\\n`` (``\\r\\n`` and a lone ``\\r`` too), as a browser's text box
    reports them, so an export holds the reply the rater read.

    >>> printable("ab\\x00c\\x1b[31m\\u202eok\\r\\n"), printable("a\\rb"), printable("id\\n1", one_line=True)
    ('abc[31mok\\n', 'a\\nb', 'id1')
    """
    keep = set() if one_line else TEXT_CONTROLS
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(c for c in text if c in keep or (unicodedata.category(c) != "Cc" and c not in BIDI_CONTROLS))


def token_ok(given: str | None, expected: str | None) -> bool:
    """Admin check in constant time; with no token configured, nobody is admin."""
    return bool(expected) and isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


class StudyDB:
    """One SQLite file shared by every session of the app; each call opens its own connection."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"study database {self.path} is a folder; give a file path, e.g. {self.path / 'study.db'}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one writer at a time inside this process; WAL handles readers
        try:
            with self._connect() as db:
                _use_wal(db)
                db.executescript(_SCHEMA)
                db.execute("BEGIN IMMEDIATE")  # two processes opening an old file add the column once
                if "abandoned" not in {row[1] for row in db.execute("PRAGMA table_info(trials)")}:
                    db.execute("ALTER TABLE trials ADD COLUMN abandoned TEXT")  # files from before it existed
        except sqlite3.DatabaseError as err:
            raise ValueError(f"study database {self.path} cannot be used: {err}") from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10)
        db.execute("PRAGMA foreign_keys=ON")
        return db

    def journal_mode(self) -> str:
        with self._connect() as db:
            return db.execute("PRAGMA journal_mode").fetchone()[0]

    def add_trial(self, participant: str, prompt: str, weights: dict[str, float], seed: int,
                  settings: dict, replies: dict[str, str], rng: random.Random | None = None) -> Trial:
        """Store a trial with the methods' replies in a shuffled slot order; return its blinded view."""
        participant, methods, trial = _blinded(participant, prompt, weights, replies, rng)
        row = (trial.id, _now(), participant, prompt, json.dumps(weights), seed, json.dumps(settings),
               json.dumps(methods), json.dumps(trial.texts))
        with self._lock, self._connect() as db:
            db.execute("INSERT INTO trials (id, created, participant, prompt, weights, seed, settings, methods, texts) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        return trial

    def _methods_of(self, db: sqlite3.Connection, trial_id: str) -> list[str]:
        row = db.execute("SELECT methods, abandoned FROM trials WHERE id = ?", (trial_id,)).fetchone()
        if row is None:
            raise ValueError("This study trial is unknown; press 'New trial' to get one.")
        if row[1] is not None:
            raise ValueError("This trial was abandoned when the app restarted; press 'New trial' for a new one.")
        return json.loads(row[0])

    def abandon_unrated(self) -> int:
        """Mark every trial (ratings or arena) shown but never rated or voted on as abandoned (the app calls this
        once as it starts: a trial left by a restart can no longer be rated, and is not counted); returns how many."""
        with self._lock, self._connect() as db:
            done = db.execute("UPDATE trials SET abandoned = ? WHERE abandoned IS NULL AND id NOT IN "
                              "(SELECT trial_id FROM favourites)", (_now(),)).rowcount
            return done + db.execute("UPDATE arena_trials SET abandoned = ? WHERE abandoned IS NULL AND id NOT IN "
                                     "(SELECT trial_id FROM arena_votes)", (_now(),)).rowcount

    def trial_counts(self, arena: bool = False) -> dict[str, int]:
        """How many trials (``arena``: arena trials) were rated, are shown and waiting, or were abandoned."""
        trials, done = ("arena_trials", "arena_votes") if arena else ("trials", "favourites")
        with self._connect() as db:
            rated, abandoned, total = db.execute(
                f"SELECT (SELECT COUNT(*) FROM {done}), COUNT(abandoned), COUNT(*) FROM {trials}").fetchone()
        return {"rated": rated, "waiting": total - rated - abandoned, "abandoned": abandoned}

    def add_ratings(self, trial_id: str, ratings: dict[str, dict[str, int]], favourite: str) -> None:
        """Save slot -> objective -> rating (1–5) and the favourite slot of one trial, once."""
        with self._lock, self._connect() as db:
            # Take the write lock before the "already rated?" check: another StudyDB on the same file (a second
            # app process) could otherwise pass the check too and fail on the primary key with an IntegrityError.
            db.execute("BEGIN IMMEDIATE")
            methods = self._methods_of(db, trial_id)
            slots = SLOTS[: len(methods)]
            if db.execute("SELECT 1 FROM favourites WHERE trial_id = ?", (trial_id,)).fetchone():
                raise ValueError("This trial was already rated; press 'New trial' for the next one.")
            if favourite not in slots:
                raise ValueError(f"Pick a favourite among {', '.join(slots)}.")
            rows = [(trial_id, _now(), slot, methods[slots.index(slot)], objective, _rating(slot, objective, r))
                    for slot, per in _check_slots(ratings, slots).items() for objective, r in per.items()]
            db.executemany("INSERT INTO ratings VALUES (?, ?, ?, ?, ?, ?)", rows)
            db.execute("INSERT INTO favourites VALUES (?, ?, ?, ?)",
                       (trial_id, _now(), favourite, methods[slots.index(favourite)]))

    def export_csv(self, out: str | Path) -> Path:
        """Every rating joined with its trial, one row per (trial, slot, objective): control characters and bidi
        overrides stripped, formula-safe. The file is created readable by its owner only."""
        return self._write_csv(EXPORT_QUERY, Path(out))

    def _write_csv(self, query: str, out: Path) -> Path:
        with self._connect() as db:
            cursor = db.execute(query)
            header = [c[0] for c in cursor.description]
            rows = cursor.fetchall()
        with _private(out) as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows([neutralise(printable(c) if isinstance(c, str) else c) for c in row] for row in rows)
        return out

    def add_arena_trial(self, participant: str, prompt: str, weights: dict[str, float], seed: int,
                        settings: dict, replies: dict[str, str], rng: random.Random | None = None) -> Trial:
        """Store a pairwise trial: two methods' replies, in a random order as A and B; return its blinded view."""
        if len(replies) != 2:
            raise ValueError(f"an arena trial compares the replies of 2 methods, got {sorted(replies)}")
        participant, methods, trial = _blinded(participant, prompt, weights, replies, rng)
        row = (trial.id, _now(), participant, prompt, json.dumps(weights), seed, json.dumps(settings),
               *methods, *trial.texts)
        with self._lock, self._connect() as db:
            db.execute("INSERT INTO arena_trials (id, created, participant, prompt, weights, seed, settings, method_a, "
                       "method_b, text_a, text_b) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        return trial

    def add_vote(self, trial_id: str, vote: str) -> None:
        """Save the one vote of an arena trial: "A" or "B" (that reply is better), "tie" or "both bad"."""
        if vote not in VOTES:
            raise ValueError(f"The vote must be one of {', '.join(VOTES)}; got {vote!r:.40}.")
        with self._lock, self._connect() as db:
            db.execute("BEGIN IMMEDIATE")  # as in add_ratings: the check and the insert under one write lock
            row = db.execute("SELECT abandoned FROM arena_trials WHERE id = ?", (trial_id,)).fetchone()
            if row is None:
                raise ValueError("This arena pair is unknown; press 'New pair' to get one.")
            if row[0] is not None:
                raise ValueError("This pair was abandoned when the app restarted; press 'New pair' for a new one.")
            if db.execute("SELECT 1 FROM arena_votes WHERE trial_id = ?", (trial_id,)).fetchone():
                raise ValueError("This pair was already voted on; press 'New pair' for the next one.")
            db.execute("INSERT INTO arena_votes VALUES (?, ?, ?)", (trial_id, _now(), vote))

    def arena_votes(self) -> pd.DataFrame:
        """One row per vote: method_a, method_b, vote."""
        with self._connect() as db:
            return pd.read_sql_query("SELECT t.method_a, t.method_b, v.vote FROM arena_votes v "
                                     "JOIN arena_trials t ON t.id = v.trial_id ORDER BY v.rowid", db)

    def arena_leaderboard(self) -> pd.DataFrame:
        """Per method: Bradley–Terry strength with its 95 % bootstrap interval and vote counts (`arena.leaderboard`)."""
        return leaderboard(self.arena_votes()).round(3)

    def export_arena_csv(self, out: str | Path) -> Path:
        """Every arena vote with its trial (both methods, both texts, the winner's method), one row per vote:
        cleaned and formula-safe as `export_csv`, readable by its owner only."""
        return self._write_csv(ARENA_EXPORT_QUERY, Path(out))

    def export_preferences(self, out: str | Path) -> Path:
        """Preference pairs as JSON Lines, one ``{"prompt", "chosen", "rejected", "weights", "system"}`` object
        per vote for A or B (`arena.preference_record`: TRL's DPOTrainer reads prompt / chosen / rejected as its
        "standard" format; the weights come as fields and as a system prompt); ties, "both bad" and pairs of equal
        texts carry no preference and are left out. Control characters and bidi overrides are stripped;
        owner-only file."""
        out = Path(out)
        with self._connect() as db:
            rows = db.execute("SELECT t.prompt, t.text_a, t.text_b, v.vote, t.weights FROM arena_votes v JOIN "
                              "arena_trials t ON t.id = v.trial_id WHERE v.vote IN ('A', 'B') "
                              "ORDER BY v.rowid").fetchall()
        with _private(out) as f:
            for prompt, a, b, vote, weights in rows:
                chosen, rejected = (a, b) if vote == "A" else (b, a)
                if chosen != rejected:
                    pair = preference_record(printable(prompt), printable(chosen), printable(rejected),
                                             json.loads(weights))
                    f.write(json.dumps(pair, ensure_ascii=False) + "\n")
        return out

    def results(self) -> pd.DataFrame:
        """Per method: mean rating per objective, how often it was the favourite, and the trial count."""
        with self._connect() as db:
            ratings = pd.read_sql_query("SELECT method, objective, rating, trial_id FROM ratings", db)
            favs = pd.read_sql_query("SELECT method FROM favourites", db)
        if ratings.empty:
            return pd.DataFrame(columns=["method", "trials", "favourite share"])
        means = ratings.pivot_table(index="method", columns="objective", values="rating", aggfunc="mean")
        means.columns = [f"mean {c}" for c in means.columns]
        trials = ratings.groupby("method")["trial_id"].nunique().rename("trials")
        share = (favs["method"].value_counts() / max(1, len(favs))).rename("favourite share")
        table = pd.concat([trials, means, share], axis=1).fillna({"favourite share": 0.0})
        return table.round(3).rename_axis("method").reset_index()


def _blinded(participant: str, prompt: str, weights: dict[str, float], replies: dict[str, str],
             rng: random.Random | None) -> tuple[str, list[str], Trial]:
    """The participant id as stored, the methods in a shuffled slot order, and the trial's blinded view."""
    _check_text("participant id", participant)
    methods = list(replies)
    (rng or random.SystemRandom()).shuffle(methods)
    trial = Trial(uuid.uuid4().hex, prompt, weights, list(SLOTS[: len(methods)]), [replies[m] for m in methods])
    return printable(participant, one_line=True), methods, trial


def _private(out: Path):
    """``out`` opened for writing text, created readable by its owner only."""
    return open(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", newline="", encoding="utf-8")


def _check_text(what: str, text: str) -> None:
    """ValueError for text SQLite cannot store: a lone surrogate (half a character) fails with a codec error."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"The {what} is not valid text: it contains half of a character; remove it.") from None


def _check_slots(ratings: dict[str, dict[str, int]], slots: str) -> dict[str, dict[str, int]]:
    if sorted(ratings) != sorted(slots):
        raise ValueError(f"Rate every reply ({', '.join(slots)}); got ratings for {sorted(ratings) or 'none'}.")
    objectives = {frozenset(per) for per in ratings.values()}
    if len(objectives) != 1 or not next(iter(objectives)):
        raise ValueError("Rate every reply on the same objectives.")
    return ratings


def _rating(slot: str, objective: str, rating: object) -> int:
    low, high = RATING_RANGE
    if rating is None or rating == "":
        raise ValueError(f"Reply {slot} has no {objective} rating yet: give it {low} to {high}.")
    try:
        value = int(rating)
    except (TypeError, ValueError):
        raise ValueError(f"The {objective} rating of reply {slot} must be {low} to {high}, got {rating!r}.") from None
    if (value != rating and str(value) != str(rating)) or not low <= value <= high:
        raise ValueError(f"The {objective} rating of reply {slot} must be {low} to {high}, got {rating!r}.")
    return value
