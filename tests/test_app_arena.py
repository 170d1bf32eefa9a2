"""The arena tab through gradio_client on the tiny stack: a blinded pair, one vote per pair, the admin-gated
leaderboard and exports (CSV, preference JSONL), bad input named by its field; and the study tab's progress."""

import csv
import json
import re

import httpx
import pytest
from apputil import METHODS, TOKEN
from gradio_client import Client

import app
from app import guard
from mavis_core.testing import OBJECTIVES

ARENA = ["/arena_new", "/arena_vote", "/arena_leaderboard", "/arena_export_csv", "/arena_export_jsonl"]


def session(client: Client) -> Client:
    """A new session of the same app (a session may start only TRIALS_PER_SESSION trials a minute)."""
    return Client(client.src, verbose=False, analytics_enabled=False)


def vote_on_a_pair(client: Client, vote: str, prompt: str = "hello there") -> tuple:
    """A new pair in a new session, voted on; returns what /arena_new showed."""
    rater = session(client)
    shown = rater.predict("rater", prompt, api_name="/arena_new")
    assert "saved" in rater.predict(vote, api_name="/arena_vote")
    return shown


@pytest.mark.slow
def test_every_arena_endpoint_is_named(client):
    assert set(ARENA) <= set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])


@pytest.mark.slow
def test_a_pair_is_blinded_and_voted_on_once(client):
    rater = session(client)
    header, text_a, text_b, vote = rater.predict("p1", "", api_name="/arena_new")  # a random example prompt
    assert "**Prompt:**" in header and "**Weights:**" in header and "how much each objective counts" in header
    assert not any(m in header.lower() for m in METHODS)  # which method wrote which reply is not shown
    assert isinstance(text_a, str) and isinstance(text_b, str) and vote is None
    assert "saved" in rater.predict("B", api_name="/arena_vote")  # the pair's id lives in gr.State
    with pytest.raises(Exception, match="No pair to vote on yet"):  # consumed: no second vote
        rater.predict("A", api_name="/arena_vote")
    with pytest.raises(Exception, match="No pair to vote on yet"):
        session(client).predict("A", api_name="/arena_vote")


@pytest.mark.slow
def test_a_forged_pair_id_is_not_taken_from_the_request(client):
    rater = session(client)
    rater.predict("p", "hi", api_name="/arena_new")
    posted = httpx.post(f"{client.src}gradio_api/call/arena_vote", json={"data": ["0" * 32, "A"]}, timeout=30)
    stream = httpx.get(f"{client.src}gradio_api/call/arena_vote/{posted.json()['event_id']}", timeout=60).text
    assert "event: error" in stream and "No pair to vote on yet" in stream
    assert "saved" in rater.predict("A", api_name="/arena_vote")  # the rater's own pair is still open


@pytest.mark.slow
@pytest.mark.parametrize("endpoint, values, words", [
    ("/arena_vote", ["C"], "vote ('Your vote'): Value: 'C'"),
    ("/arena_vote", [None], "vote: pick one of A, B, tie or both bad"),
    ("/arena_new", ["p", ["hi"]], "prompt ('Prompt (leave empty for a random example)') must be text, got list"),
    ("/arena_new", ["p", "hi\x07there"], "control characters"),
    ("/arena_leaderboard", [5], "token ('Admin token for the leaderboard (MAVIS_ADMIN_TOKEN)') must be text"),
])
def test_bad_input_gets_an_error_naming_the_field(client, endpoint, values, words):
    rater = session(client)
    if endpoint == "/arena_vote":
        rater.predict("p", "hi", api_name="/arena_new")
    with pytest.raises(Exception, match=re.escape(words)) as err:
        rater.predict(*values, api_name=endpoint)
    assert "Traceback" not in str(err.value)


@pytest.mark.slow
def test_leaderboard_and_exports_need_the_admin_token(client):
    for vote in ("A", "B", "tie", "both bad", "A"):
        vote_on_a_pair(client, vote)
    for endpoint in ARENA[2:]:
        with pytest.raises(Exception, match="Wrong admin token"):
            client.predict("guess", api_name=endpoint)
    table = client.predict(TOKEN, api_name="/arena_leaderboard")
    assert table["headers"] == ["method", "strength", "low", "high", "votes", "wins", "losses", "ties", "both bad"]
    rows = [dict(zip(table["headers"], row, strict=True)) for row in table["data"]]
    assert {r["method"] for r in rows} <= set(METHODS) and all(r["low"] <= r["strength"] <= r["high"] for r in rows)
    assert sum(r["strength"] for r in rows) == pytest.approx(1.0, abs=0.01)
    with open(client.predict(TOKEN, api_name="/arena_export_csv"), newline="") as f:
        votes = list(csv.DictReader(f))
    assert sum(r["votes"] for r in rows) == 2 * len(votes)  # every vote counts for both its methods
    assert [v["vote"] for v in votes[-5:]] == ["A", "B", "tie", "both bad", "A"]
    assert all(v["participant"] == "rater" and {v["method_a"], v["method_b"]} <= set(METHODS) for v in votes[-5:])
    with open(client.predict(TOKEN, api_name="/arena_export_jsonl"), encoding="utf-8") as f:
        pairs = [json.loads(line) for line in f]
    decisive = [v for v in votes if v["vote"] in ("A", "B") and v["text_a"] != v["text_b"]]
    assert len(pairs) == len(decisive)
    assert all(set(p) == {"prompt", "chosen", "rejected", "weights", "system"} for p in pairs)
    assert all(p["system"].startswith("Weigh your reply") and set(p["weights"]) == set(OBJECTIVES) for p in pairs)
    assert pairs[-1]["prompt"] == "hello there"


def test_each_trial_shows_one_progress_bar_and_runs_with_the_model_work(tiny_dir, tmp_path):
    from apputil import app_engine

    demo = app.build_demo(app_engine(tiny_dir), tmp_path / "study.db", admin_token=TOKEN)
    ids = {c["id"]: c.get("props", {}).get("elem_id") for c in demo.config["components"]}
    deps = {d["api_name"]: d for d in demo.config["dependencies"] if d.get("api_name")}
    assert [ids[i] for i in deps["study_new"]["show_progress_on"]] == ["study-header"]
    assert [ids[i] for i in deps["arena_new"]["show_progress_on"]] == ["arena-header"]
    model = {fn.api_name for fn in demo.fns.values() if fn.concurrency_id == guard.MODEL_GROUP}
    assert {"study_new", "arena_new"} <= model and not {"arena_vote", "arena_leaderboard"} & model
