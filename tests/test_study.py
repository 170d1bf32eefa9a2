"""Study storage: WAL mode, trials and ratings saved as given, CSV export safe for spreadsheets, results."""

import csv
import json
import random
import sqlite3

import pandas as pd
import pytest

from mavis_core.dialogue import weights_prompt
from mavis_core.study import StudyDB, neutralise, token_ok

REPLIES = {"base": "=1+1", "mavis": "hello", "mod": "@SUM(A1)", "rsoup": "-3 and +4"}
WEIGHTS = {"helpful": 0.5, "harmless": 0.5}


def rate_all(trial, value=3):
    return {slot: {"helpful": value, "harmless": value} for slot in trial.slots}


def test_wal_mode_and_trial_saved_blinded(tmp_path):
    db = StudyDB(tmp_path / "study.db")
    assert db.journal_mode() == "wal"
    trial = db.add_trial("p1", "hi", WEIGHTS, 7, {"beta": 1.0}, REPLIES, rng=random.Random(0))
    assert trial.slots == ["A", "B", "C", "D"] and sorted(trial.texts) == sorted(REPLIES.values())
    assert not hasattr(trial, "methods")  # the blinded view carries no method labels
    with sqlite3.connect(tmp_path / "study.db") as raw:  # saved the moment it was shown
        (methods, seed), = raw.execute("SELECT methods, seed FROM trials").fetchall()
    assert sorted(json.loads(methods)) == sorted(REPLIES) and seed == 7


def test_ratings_saved_with_hidden_method_and_favourite(tmp_path):
    db = StudyDB(tmp_path / "study.db")
    trial = db.add_trial("p1", "hi", WEIGHTS, 7, {}, REPLIES, rng=random.Random(1))
    ratings = rate_all(trial)
    ratings["B"]["helpful"] = 5
    db.add_ratings(trial.id, ratings, favourite="B")
    method_b = {text: m for m, text in REPLIES.items()}[trial.texts[1]]
    with sqlite3.connect(tmp_path / "study.db") as raw:
        rows = raw.execute("SELECT method, rating FROM ratings WHERE slot='B' AND objective='helpful'").fetchall()
        fav = raw.execute("SELECT method FROM favourites").fetchone()[0]
    assert rows == [(method_b, 5)] and fav == method_b
    table = db.results().set_index("method")
    assert table.loc[method_b, "mean helpful"] == 5 and table.loc[method_b, "favourite share"] == 1.0
    assert set(table.index) == set(REPLIES)


@pytest.mark.parametrize("bad, message", [
    ({"A": {"helpful": 3, "harmless": 3}}, "Rate every reply"),
    ("zero", "must be 1 to 5"),
    ("missing", "no helpful rating"),
])
def test_bad_ratings_rejected_and_nothing_saved(tmp_path, bad, message):
    db = StudyDB(tmp_path / "study.db")
    trial = db.add_trial("p1", "hi", WEIGHTS, 7, {}, REPLIES)
    ratings = rate_all(trial)
    if bad == "zero":
        ratings["C"]["harmless"] = 0
    elif bad == "missing":
        ratings["A"]["helpful"] = None
    else:
        ratings = bad
    with pytest.raises(ValueError, match=message):
        db.add_ratings(trial.id, ratings, favourite="A")
    assert db.results().empty


def test_trial_rated_once_and_unknown_trial(tmp_path):
    db = StudyDB(tmp_path / "study.db")
    trial = db.add_trial("p1", "hi", WEIGHTS, 7, {}, REPLIES)
    db.add_ratings(trial.id, rate_all(trial), favourite="A")
    with pytest.raises(ValueError, match="already rated"):
        db.add_ratings(trial.id, rate_all(trial), favourite="A")
    with pytest.raises(ValueError, match="unknown"):
        db.add_ratings("nope", rate_all(trial), favourite="A")
    with pytest.raises(ValueError, match="favourite"):
        db.add_ratings(db.add_trial("p", "x", WEIGHTS, 1, {}, REPLIES).id, rate_all(trial), favourite="Z")


def test_csv_export_neutralises_formulas(tmp_path):
    db = StudyDB(tmp_path / "study.db")
    trial = db.add_trial("=cmd|' /C calc'!A0", "+prompt", WEIGHTS, 7, {}, REPLIES)
    db.add_ratings(trial.id, rate_all(trial), favourite="A")
    with db.export_csv(tmp_path / "out.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and sum(int(r["favourite"]) for r in rows) == 2
    for row in rows:
        assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row.values())
    assert rows[0]["participant"] == "'=cmd|' /C calc'!A0" and rows[0]["prompt"] == "'+prompt"
    assert neutralise("\tx") == "'\tx" and neutralise(-3) == -3


def test_admin_token():
    assert token_ok("s3cret", "s3cret")
    assert not token_ok("wrong", "s3cret") and not token_ok("", "") and not token_ok(None, None)


# ------------------------------------------------------------------------------------------------- arena storage

PAIR = {"mavis": "a joke", "base": "=HYPERLINK(1)"}


def test_arena_trial_saved_blinded_in_a_random_order(tmp_path):
    db = StudyDB(tmp_path / "study.db")
    orders = set()
    for seed in range(8):
        trial = db.add_arena_trial("p1", "hi", WEIGHTS, seed, {"beta": 1.0}, PAIR, rng=random.Random(seed))
        assert trial.slots == ["A", "B"] and sorted(trial.texts) == sorted(PAIR.values())
        assert not hasattr(trial, "methods")
        orders.add(tuple(trial.texts))
    assert len(orders) == 2  # both orders occur
    with sqlite3.connect(tmp_path / "study.db") as raw:
        rows = raw.execute("SELECT method_a, method_b, text_a, text_b FROM arena_trials").fetchall()
    assert all({a, b} == set(PAIR) and PAIR[a] == ta and PAIR[b] == tb for a, b, ta, tb in rows)
    with pytest.raises(ValueError, match="2 methods"):
        db.add_arena_trial("p1", "hi", WEIGHTS, 1, {}, REPLIES)


def test_a_pair_is_voted_on_once(tmp_path):
    db = StudyDB(tmp_path / "study.db")
    trial = db.add_arena_trial("p1", "hi", WEIGHTS, 7, {}, PAIR)
    with pytest.raises(ValueError, match=r"one of A, B, tie, both bad; got 'C'"):
        db.add_vote(trial.id, "C")
    db.add_vote(trial.id, "tie")
    with pytest.raises(ValueError, match="already voted on"):
        db.add_vote(trial.id, "A")
    with pytest.raises(ValueError, match="unknown"):
        db.add_vote("0" * 32, "A")
    assert db.arena_votes().to_dict("records") == [{"method_a": db.arena_votes()["method_a"][0],
                                                    "method_b": db.arena_votes()["method_b"][0], "vote": "tie"}]
    assert db.trial_counts(arena=True) == {"rated": 1, "waiting": 0, "abandoned": 0}


def test_an_unvoted_pair_is_abandoned_at_restart(tmp_path):
    db = StudyDB(tmp_path / "study.db")
    voted, left = (db.add_arena_trial("p", "x", WEIGHTS, i, {}, PAIR) for i in range(2))
    db.add_vote(voted.id, "A")
    assert db.abandon_unrated() == 1
    assert db.trial_counts(arena=True) == {"rated": 1, "waiting": 0, "abandoned": 1}
    with pytest.raises(ValueError, match="abandoned when the app restarted"):
        db.add_vote(left.id, "B")


def test_a_database_from_before_the_arena_opens_and_keeps_its_ratings(tmp_path):
    path = tmp_path / "old.db"
    old = StudyDB(path)
    trial = old.add_trial("p1", "hi", WEIGHTS, 7, {}, REPLIES)
    old.add_ratings(trial.id, rate_all(trial), favourite="A")
    with sqlite3.connect(path) as raw:  # as a file written before the arena tables existed
        raw.executescript("DROP TABLE arena_votes; DROP TABLE arena_trials;")
    db = StudyDB(path)
    assert len(db.results()) == len(REPLIES)
    pair = db.add_arena_trial("p1", "hi", WEIGHTS, 7, {}, PAIR)
    db.add_vote(pair.id, "A")
    assert db.arena_leaderboard()["votes"].tolist() == [1, 1]


def _voted(db, rng, vote, texts=PAIR):
    trial = db.add_arena_trial("=cmd|' /C calc'!A0", "-prompt", WEIGHTS, 3, {"beta": 1.0}, texts, rng=rng)
    db.add_vote(trial.id, vote)
    return trial


def test_arena_csv_has_every_vote_with_its_methods_formula_safe(tmp_path):
    db, rng = StudyDB(tmp_path / "study.db"), random.Random(0)
    trials = [_voted(db, rng, v) for v in ("A", "B", "tie", "both bad")]
    path = db.export_arena_csv(tmp_path / "votes.csv")
    assert path.stat().st_mode & 0o777 == 0o600
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["vote"] for r in rows] == ["A", "B", "tie", "both bad"]
    assert [r["trial_id"] for r in rows] == [t.id for t in trials]
    for row in rows:
        assert {row["method_a"], row["method_b"]} == set(PAIR)
        assert row["winner"] == {"A": row["method_a"], "B": row["method_b"]}.get(row["vote"], "")
        assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row.values())
    assert rows[0]["participant"] == "'=cmd|' /C calc'!A0" and rows[0]["prompt"] == "'-prompt"


def test_preference_pairs_are_the_decisive_votes_in_dpo_format(tmp_path):
    db, rng = StudyDB(tmp_path / "study.db"), random.Random(0)
    texts = {"mavis": "good\u202e one\x00", "base": "bad one"}
    for vote in ("A", "tie", "B", "both bad"):
        _voted(db, rng, vote, texts)
    _voted(db, rng, "A", {"mod": "same", "rsoup": "same"})  # equal texts: no preference to learn
    path = db.export_preferences(tmp_path / "pairs.jsonl")
    assert path.stat().st_mode & 0o777 == 0o600
    lines = path.read_text(encoding="utf-8").splitlines()
    pairs = [json.loads(line) for line in lines]
    assert len(pairs) == 2 and all(list(p) == ["prompt", "chosen", "rejected", "weights", "system"] for p in pairs)
    votes = pd.read_csv(db.export_arena_csv(tmp_path / "votes.csv"))
    for pair, (_, row) in zip(pairs, votes[votes["vote"].isin(["A", "B"])].head(2).iterrows(), strict=True):
        winner = row["winner"]
        loser = row["method_b"] if winner == row["method_a"] else row["method_a"]
        weights = pair.pop("weights")  # the λ the pair was judged under, also as the system prompt
        assert pair.pop("system") == weights_prompt(weights) and sum(weights.values()) == pytest.approx(1.0)
        assert pair == {"prompt": "-prompt", "chosen": texts[winner].replace("\u202e", "").replace("\x00", ""),
                        "rejected": texts[loser]}
