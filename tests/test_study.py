"""Study storage: WAL mode, trials and ratings saved as given, CSV export safe for spreadsheets, results."""

import csv
import json
import random
import sqlite3

import pytest

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
