"""Hardening (issue #16), one section per item: private single-use study exports; fair queueing (per-session and
per-address limits, a cap on one request's work, one concurrency limit for all model work, a disconnected
client's sweep stopped); size limits; a clear error for every bad request; study data (formula-safe, control
characters stripped, admin-token and trial rate limits, abandoned trials); safe stack paths.

The app runs in this process on the tiny random stack (one server for the module). A client "address" is set
with X-Forwarded-For, which uvicorn takes from loopback peers, so tests can act as several machines.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
from apputil import RATINGS

import app
from app import admin, controls, guard, server, trials
from mavis_core import sweep_plan
from mavis_core.study import StudyDB, neutralise, printable

AXES = ("helpful", "humor", controls.NO_Z)
GENERATE = ["hello there", 1.0, 8, 1.0, 4, 1, ["base"], *AXES, None, 0.5, 0.2, 0.3, "sample", 4, 4]  # + State
SLOW_SWEEP = ["hello", 1.0, 8, 1.0, 32, 0, ["mavis", "mod"], controls.SWEEP_MODES[1], *AXES, None, "best_of_n", 8, 4]


@pytest.fixture(scope="module")
def engine(tiny_dir):
    from apputil import app_engine

    return app_engine(tiny_dir)


@pytest.fixture(scope="module")
def served(engine, tmp_path_factory):
    """(demo, url) of the app on the tiny stack, in this process."""
    from apputil import launch

    demo, url = launch(engine, tmp_path_factory.mktemp("study") / "study.db")
    yield demo, url
    demo.close()


def _client(url: str, address: str | None = None):
    from gradio_client import Client

    headers = {"X-Forwarded-For": address} if address else None
    return Client(url, verbose=False, analytics_enabled=False, headers=headers)


def _post(url: str, api: str, data, address: str | None = None, session: str | None = None) -> httpx.Response:
    """POST a raw call (hand-written JSON, so NaN and wrong types get through) to /gradio_api/call/<api>."""
    body = {"data": data, **({"session_hash": session} if session else {})}
    headers = {"Content-Type": "application/json", **({"X-Forwarded-For": address} if address else {})}
    return httpx.post(f"{url}gradio_api/call/{api}", content=json.dumps(body), headers=headers, timeout=30)


def _result(url: str, api: str, posted: httpx.Response) -> tuple[str, object]:
    """("complete" | "error", data) of a posted call, read from its event stream."""
    stream = httpx.get(f"{url}gradio_api/call/{api}/{posted.json()['event_id']}", timeout=300).text
    events = [line.split(": ", 1)[1] for line in stream.splitlines() if line.startswith("event: ")]
    datas = [json.loads(line[len("data: "):]) for line in stream.splitlines() if line.startswith("data: ")]
    return events[-1], datas[-1]


def _call(url: str, api: str, data, **kw) -> tuple[str, object]:
    return _result(url, api, _post(url, api, data, **kw))


def _plain(message: str, words: str) -> None:
    """A message a person can act on: it names the problem, and is no stack trace or generic failure."""
    assert words.lower() in message.lower(), message
    assert "Traceback" not in message and 'File "' not in message and "upstream" not in message


def _logged(caplog) -> list[str]:
    """The app's own log lines (other libraries may log warnings too)."""
    return [r.getMessage() for r in caplog.records if r.name == "mavis.app"]


def _model_events(demo) -> list:
    return [e for e in list(demo._queue.event_ids_to_events.values()) if e.fn.concurrency_id == guard.MODEL_GROUP]


def _wait_idle(demo, timeout: float = 240) -> None:
    """Until no model request is queued or running (so a test leaves the server free for the next)."""
    deadline = time.monotonic() + timeout
    while _model_events(demo) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _model_events(demo), "model requests still running"


# ------------------------------------------------------------------ 1. study exports: private, single use, removed

def test_study_export_is_a_private_single_use_link(served):
    demo, url = served
    from apputil import TOKEN

    kind, data = _call(url, "study_export", [TOKEN])
    assert kind == "complete"
    path = Path(data[0]["path"])
    assert path.parent.name.startswith(admin.EXPORT_PREFIX) and len(path.parent.name) > len(admin.EXPORT_PREFIX) + 30
    assert path.parent.parent == demo.exports.cache  # gradio serves it from there: it made no copy of its own
    assert path.parent.stat().st_mode & 0o777 == 0o700 and path.stat().st_mode & 0o777 == 0o600
    first = httpx.get(f"{url}gradio_api/file={path}", timeout=30)  # the admin's download
    assert first.status_code == 200 and first.text.startswith("trial_id,")
    deadline = time.monotonic() + 10  # removed once the response is sent, a moment after the client has it
    while path.parent.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not path.parent.exists()  # no copy outlives the download
    again = httpx.get(f"{url}gradio_api/file={path}", timeout=30)
    assert again.status_code == 404 and "downloaded once" in again.json()["error"]


def test_cache_files_of_an_earlier_run_are_not_served(served, tmp_path):
    demo, url = served
    stray = Path(demo.exports.cache) / "0123abcd" / "study_ratings.csv"  # e.g. an export copy gradio made earlier
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_text("trial_id,participant\nsecret,row\n")
    try:
        answer = httpx.get(f"{url}gradio_api/file={stray}", timeout=30)
        assert answer.status_code == 404 and "secret" not in answer.text
    finally:
        shutil.rmtree(stray.parent)


def test_exports_expire_and_an_earlier_runs_are_deleted_at_start(tmp_path):
    old = tmp_path / f"{admin.EXPORT_PREFIX}left-by-an-earlier-run"
    old.mkdir()
    (old / "study_ratings.csv").write_text("x")
    exports = admin.Exports(tmp_path)
    assert not old.exists()
    path = exports.new("study_ratings.csv")
    path.write_text("x")
    assert exports.owns(path)
    exports.purge(now=time.monotonic() + admin.EXPORT_TTL_S + 1)  # never downloaded: gone after its time
    assert not exports.owns(path) and not path.parent.exists()


def test_gradio_deletes_the_runs_cached_files_too(served):
    assert served[0].delete_cache == (int(admin.EXPORT_TTL_S), int(admin.EXPORT_TTL_S))


# -------------------------------------------------------------------------------- 2. fair queueing

def test_one_session_cannot_queue_more_than_its_share(served):
    from apputil import N  # the first column's stats follow every column's text

    demo, url = served
    burst, other = _client(url, "10.2.0.1"), _client(url, "10.2.0.2")
    args = ("hello there", 1.0, 8, 1.0, 32, 0, ["base", "mavis", "mod", "rsoup"], *AXES, 0.5, 0.2, 0.3)
    jobs = [burst.submit(*args[:5], i, *args[6:], api_name="/generate") for i in range(8)]
    outcomes = []
    for job in jobs:
        try:
            outcomes.append("KL" in job.result(timeout=300)[N])
        except Exception as err:  # noqa: BLE001 - the message is what is checked
            outcomes.append(str(err))
    refused = [o for o in outcomes if isinstance(o, str)]
    assert outcomes.count(True) >= guard.MAX_JOBS_PER_SESSION and refused, outcomes
    assert all("the most one session may have" in o for o in refused), refused
    assert "KL" in other.predict(*args, api_name="/generate")[N]  # another user is served meanwhile
    _wait_idle(demo)


def test_one_address_cannot_fill_the_queue(served, monkeypatch):
    demo, url = served
    monkeypatch.setattr(guard, "MAX_JOBS_PER_ADDRESS", 2)
    answers = [_post(url, "sweep", SLOW_SWEEP, address="10.3.0.1", session=f"s{i}") for i in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 422, 422], [a.text for a in answers]
    assert "from your address" in answers[2].json()["error"]
    assert answers[2].json()["detail"][0]["__type__"] == "validate"  # gradio_client shows it as the message
    elsewhere = _post(url, "generate", GENERATE, address="10.3.0.2")
    assert elsewhere.status_code == 200
    for answer in answers[:2]:  # stop both sweeps: their reader leaves at once
        with pytest.raises(httpx.ReadTimeout), httpx.stream(
                "GET", f"{url}gradio_api/call/sweep/{answer.json()['event_id']}",
                timeout=httpx.Timeout(30, read=0.5)) as stream:
            for _ in stream.iter_lines():
                pass
    assert _result(url, "generate", elsewhere)[0] == "complete"
    _wait_idle(demo)


def test_one_request_cannot_ask_for_hours_of_work(served, monkeypatch):
    _, url = served
    monkeypatch.setattr(sweep_plan, "MAX_REQUEST_WORK", 1000)  # the tiny stack's 32 tokens cannot reach the real cap
    kind, data = _call(url, "sweep", ["hi", 1.0, 8, 1.0, 32, 0, ["mavis", "mod"], controls.SWEEP_MODES[1], *AXES, None,
                                      "best_of_n", 16, 4])
    assert kind == "error"
    _plain(data["error"], "30 replies × 16 samples × 32 tokens = 15,360 token steps; the limit is 1,000")
    kind, data = _call(url, "generate", [*GENERATE[:6], ["mavis", "mod"], *GENERATE[7:14], "beam", 4, 8])
    assert kind == "complete"  # 2 replies × 8 beams × 4 tokens = 64 token steps
    kind, data = _call(url, "generate", [*GENERATE[:4], 32, 0, ["base", "mavis", "mod", "rsoup"], *GENERATE[7:14],
                                         "best_of_n", 16, 4])
    _plain(data["error"], "4 replies × 16 samples × 32 tokens = 2,048 token steps")


def test_model_requests_share_one_concurrency_limit_and_the_queue(served):
    demo, url = served
    model = {fn.api_name: (fn.concurrency_id, fn.concurrency_limit) for fn in demo.fns.values()
             if fn.concurrency_id == guard.MODEL_GROUP}
    assert model == dict.fromkeys(["generate", "sweep", "study_new", "arena_new"],
                                  (guard.MODEL_GROUP, guard.CONCURRENCY))
    direct = httpx.post(f"{url}gradio_api/run/generate", json={"data": GENERATE}, timeout=30)  # around the queue
    assert direct.status_code == 404 and "join the queue" in direct.text


def test_a_disconnected_clients_sweep_stops(served, engine, monkeypatch, caplog):
    demo, url = served
    replies, reply = [], engine.reply
    monkeypatch.setattr(engine, "reply", lambda *a, **kw: replies.append(1) or reply(*a, **kw))
    caplog.set_level(logging.WARNING, "mavis.app")
    posted = _post(url, "sweep", SLOW_SWEEP, address="10.4.0.1")
    with pytest.raises(httpx.ReadTimeout), httpx.stream(
            "GET", f"{url}gradio_api/call/sweep/{posted.json()['event_id']}",
            timeout=httpx.Timeout(30, read=1.5)) as stream:
        for _ in stream.iter_lines():  # the client reads a little, then goes away
            pass
    _wait_idle(demo)
    assert 0 < len(replies) < 2 * 15, len(replies)  # 2 methods × 15 λ points when nobody stops it
    assert "stopped /sweep: its client is gone" in caplog.text


def test_a_disconnected_clients_generate_stops(served, engine, monkeypatch):
    demo, url = served
    steps, stream = [], engine.stream

    def slow(*args, **kw):  # a step every 0.1 s: long enough to leave in the middle
        for replies in stream(*args, **kw):
            steps.append(1)
            time.sleep(0.1)
            yield replies

    monkeypatch.setattr(engine, "stream", slow)
    data = [*GENERATE[:4], 32, 0, ["base", "mavis"], *GENERATE[7:]]
    assert _call(url, "generate", data)[0] == "complete"
    whole, steps[:] = len(steps), []  # the steps of a reply nobody leaves
    posted = _post(url, "generate", data, address="10.4.0.2")
    with httpx.stream("GET", f"{url}gradio_api/call/generate/{posted.json()['event_id']}", timeout=30) as events:
        next(line for line in events.iter_lines() if line == "event: generating")  # the first tokens, then away
    _wait_idle(demo)
    assert whole >= 10 and 0 < len(steps) <= whole // 2, (whole, len(steps))


# -------------------------------------------------------------------------------------------- 3. size limits

def test_an_oversized_request_is_refused_before_it_is_read(served):
    demo, url = served
    huge = json.dumps({"data": ["x" * (guard.MAX_REQUEST_BYTES + 10), *GENERATE[1:]]})
    answer = httpx.post(f"{url}gradio_api/call/generate", content=huge, timeout=60)
    assert answer.status_code == 422 and "the most this app takes" in answer.json()["error"]

    def chunks():  # no Content-Length: refused once the bytes read pass the limit
        yield b'{"data": ["'
        for _ in range(40):
            yield b"y" * 65_536

    answer = httpx.post(f"{url}gradio_api/queue/join", content=chunks(), timeout=60)
    assert answer.status_code == 422 and "the most this app takes" in answer.json()["error"]
    with pytest.raises(Exception, match="the most this app takes"):  # noqa: PT011 - gradio_client's error
        _client(url).predict("z" * guard.MAX_REQUEST_BYTES, *GENERATE[1:10], 0.5, 0.2, 0.3, api_name="/generate")


def test_uploads_are_refused(served):
    _, url = served
    answer = httpx.post(f"{url}gradio_api/upload", files={"files": ("big.bin", b"\0" * 200_000)}, timeout=60)
    assert answer.status_code == 413 and "no file uploads" in answer.json()["error"]


def test_a_long_prompt_is_cut_before_it_is_scanned():
    from mavis_core.engine import MAX_PROMPT_CHARS, clean_prompt

    prompt, warnings = clean_prompt("\x00\x1b[31m" + "a" * MAX_PROMPT_CHARS)  # control characters cut away unread
    assert prompt == "a" * MAX_PROMPT_CHARS and warnings
    with pytest.raises(ValueError, match="last 4000 characters, all the model would read, are blank"):
        clean_prompt("text " * 1000 + " " * MAX_PROMPT_CHARS)


# ------------------------------------------------------------------------------- 4. a clear error for every call

BAD_CALLS = [  # (endpoint, raw values, words the error must contain)
    ("generate", {1: "1"}, "beta ('β (MAVIS tilt strength)') must be a number between 0 and 10, got '1'"),
    ("generate", {11: None}, "'weight: helpful' must be a number between 0 and 1, got None"),
    ("generate", {6: None}, "methods must be a list of choices from ['base', 'mavis', 'mod', 'rsoup', 'prompted']"),
    ("generate", {5: float("nan")}, "seed must be a number between 0 and 2147483647, got nan"),
    ("generate", {7: ["helpful"]}, "x ('x axis') must be one of ['helpful', 'harmless', 'humor']"),
    ("generate", {14: "greedy"}, "'search (every ticked method)': Value: 'greedy'"),
    ("sweep", {7: 3}, "mode ('Sweep over'): Value: 3"),
    ("sweep", {14: float("inf")}, "num_beams ('B (beams)') must be a number between 1 and 8, got inf"),
    ("redraw", {0: {"a": 1}}, "x ('x axis') must be one of"),
    ("normalise", {0: float("nan")}, "'weight: helpful' must be a number between 0 and 1, got nan"),  # not a silent 0
    ("study_new", {1: ["hi"]}, "prompt ('Prompt (leave empty for a random example)') must be text, got list"),
    ("study_submit", {2: "3"}, "'A: helpful': Value: '3'"),
    ("study_results", {0: 5}, "token ('Admin token (MAVIS_ADMIN_TOKEN)') must be text, got int"),
    ("show_sample", {0: {"a": 1}}, "sample_id must be the number of a sample on your chart, got {'a': 1}"),
]
GOOD = {"generate": GENERATE, "sweep": SLOW_SWEEP[:4] + [4, 0, ["base"], controls.SWEEP_MODES[0], *AXES, None,
                                                         "sample", 4, 4],
        "redraw": [*AXES, None], "normalise": [0.5, 0.2, 0.3], "study_new": ["p", "hi"],
        "study_submit": [None, "A", *[3] * RATINGS], "study_results": ["guess"], "show_sample": [None, None]}


@pytest.mark.parametrize("endpoint, change, words", BAD_CALLS, ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD_CALLS)])
def test_every_endpoint_names_the_bad_field_logs_one_line_and_serves_on(served, endpoint, change, words, caplog,
                                                                        capfd):
    _, url = served
    caplog.set_level(logging.WARNING, "mavis.app")
    data = [change.get(i, v) for i, v in enumerate(GOOD[endpoint])]
    kind, answer = _call(url, endpoint, data)
    assert kind == "error" and answer["error"], answer
    _plain(answer["error"], words)
    assert _logged(caplog) == [f"refused /{endpoint}: {answer['error']}"]
    assert "Traceback" not in capfd.readouterr().err
    assert _call(url, "generate", GENERATE)[0] == "complete"


def test_a_wrong_number_of_values_or_an_unknown_endpoint_is_named(served, caplog):
    _, url = served
    caplog.set_level(logging.WARNING, "mavis.app")
    for data in (GENERATE[:5], GENERATE + [1, 2]):
        answer = _post(url, "generate", data)
        assert answer.status_code == 422, answer.text
        _plain(answer.json()["error"], "/generate takes 16 values (Prompt, β (MAVIS tilt strength), top-k")
        assert f"got {len(data)}." in answer.json()["error"]
    answer = _post(url, "nope", GENERATE)
    assert answer.status_code == 404
    assert "No such endpoint: /gradio_api/call/nope; this app has /arena_export_csv, /arena_export_jsonl" \
        in answer.json()["error"] and "/clear, /generate" in answer.json()["error"]
    answer = httpx.post(f"{url}gradio_api/queue/join", json={"data": [], "fn_index": 999, "session_hash": "x"})
    assert answer.status_code == 404 and "No such endpoint: fn_index 999" in answer.json()["error"]
    assert len(_logged(caplog)) == 4 and all(line.startswith("refused POST") for line in _logged(caplog))
    assert _call(url, "generate", GENERATE)[0] == "complete"


def test_normalise_refuses_a_nan_weight(engine):
    with pytest.raises(ValueError, match="the weight of helpful must be a number between 0 and 1, got nan"):
        engine.normalised({"helpful": float("nan"), "humor": 0.5})
    assert engine.normalised({"helpful": 0.0, "humor": 0.5}) == {"helpful": 0.0, "humor": 1.0}


# ------------------------------------------------------------------------------------------------ 5. study data

@pytest.mark.parametrize("cell", [" =1+1", "\n=HYPERLINK(1)", "\u3000@SUM(A1)", "＝1+1", "＋1", "－1", "＠A1",
                                  "  ＝cmd"])
def test_formulas_behind_blanks_or_full_width_are_neutralised(cell):
    assert neutralise(cell) == "'" + cell
    assert neutralise("a = b") == "a = b" and neutralise(" fine") == " fine"


def test_control_characters_and_bidi_overrides_are_stripped_before_export(tmp_path):
    db = StudyDB(tmp_path / "study.db")
    trial = db.add_trial("p\x00\x1b[2J\u202eevil\nid", "a\u202eprompt", {"helpful": 1.0}, 0, {},
                         {"base": "=\x00cmd|' /C calc'!A0", "mavis": "ok\tfine\nline\u2066two\x07"})
    db.add_ratings(trial.id, {s: {"helpful": 3} for s in trial.slots}, favourite="A")
    with sqlite3.connect(tmp_path / "study.db") as raw:
        assert raw.execute("SELECT participant FROM trials").fetchone()[0] == "p[2Jevilid"
    text = db.export_csv(tmp_path / "out.csv").read_text(encoding="utf-8")
    assert not any(c in text for c in "\x00\x1b\u202e\u2066\x07")
    assert "p[2Jevilid" in text and "aprompt" in text
    assert printable("ok\tfine\nline") == "ok\tfine\nline"
    assert printable("a\r\nb\rc") == "a\nb\nc"  # line breaks as a browser text box reports them


def test_admin_token_guesses_are_limited_and_logged(served, caplog):
    _, url = served
    caplog.set_level(logging.WARNING, "mavis.app")
    guesser = _client(url, "10.7.0.1")
    for i in range(admin.ADMIN_FAILURES[0]):
        with pytest.raises(Exception, match="Wrong admin token"):  # noqa: PT011 - gradio_client's AppError
            guesser.predict(f"guess{i}", api_name="/study_results")
    with pytest.raises(Exception, match="Too many wrong admin tokens from your address"):  # noqa: PT011
        guesser.predict("s3cret", api_name="/study_results")  # even the right one, from that address, for now
    wrong = [line for line in _logged(caplog) if line.startswith("wrong admin token from 10.7.0.1")]
    assert len(wrong) == admin.ADMIN_FAILURES[0]
    assert "refused /study_results: Too many wrong admin tokens" in caplog.text
    assert _client(url, "10.7.0.2").predict("s3cret", api_name="/study_results") is not None  # others are not


def test_one_session_or_address_cannot_stuff_the_ballot(served, monkeypatch):
    _, url = served
    monkeypatch.setattr(trials, "TRIALS_PER_SESSION", (2, 60.0))
    monkeypatch.setattr(trials, "TRIALS_PER_ADDRESS", (3, 600.0))
    one = _client(url, "10.8.0.1")
    for _ in range(2):
        assert "**Prompt:**" in one.predict("p", "hi", api_name="/study_new")[0]
    with pytest.raises(Exception, match="2 trials were started from this session in the last 60 s"):  # noqa: PT011
        one.predict("p", "hi", api_name="/study_new")
    assert "**Prompt:**" in _client(url, "10.8.0.1").predict("p", "hi", api_name="/study_new")[0]  # a new session
    with pytest.raises(Exception, match="3 trials were started from your address"):  # noqa: PT011
        _client(url, "10.8.0.1").predict("p", "hi", api_name="/study_new")
    assert "**Prompt:**" in _client(url, "10.8.0.2").predict("p", "hi", api_name="/study_new")[0]


def test_a_trial_left_unrated_by_a_restart_is_abandoned_not_counted(engine, tmp_path):
    path = tmp_path / "study.db"
    db = StudyDB(path)
    rated, left = (db.add_trial("p", "x", {"helpful": 1.0}, i, {}, {"base": "a", "mavis": "b"}) for i in range(2))
    db.add_ratings(rated.id, {s: {"helpful": 3} for s in rated.slots}, favourite="A")
    app.build_demo(engine, path)  # the app starting again on that file
    assert db.trial_counts() == {"rated": 1, "waiting": 0, "abandoned": 1}
    with pytest.raises(ValueError, match="abandoned when the app restarted"):
        db.add_ratings(left.id, {s: {"helpful": 3} for s in left.slots}, favourite="A")
    assert set(db.results()["trials"]) == {1}


def test_a_study_database_from_before_abandoned_trials_opens(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE trials (id TEXT PRIMARY KEY, created TEXT NOT NULL, participant TEXT NOT NULL, "
                    "prompt TEXT NOT NULL, weights TEXT NOT NULL, seed INTEGER NOT NULL, settings TEXT NOT NULL, "
                    "methods TEXT NOT NULL, texts TEXT NOT NULL)")
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            StudyDB(path)
        except BaseException as err:  # noqa: BLE001 - reported by the assert below
            errors.append(err)

    threads = [threading.Thread(target=open_it) for _ in range(8)]  # as several app processes at once
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert StudyDB(path).abandon_unrated() == 0


# ------------------------------------------------------------------------------------------------ 6. stack paths

def _stack_copy(tiny_dir: Path, root: Path, edit=lambda s: s) -> Path:
    """The tiny stack's folders symlinked into ``root`` (inside it, as written) and its TOML edited."""
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("base", "tokenizer", "rewards", "values", "policies"):
        (root / sub).symlink_to(tiny_dir / sub)
    path = root / "stack.toml"
    path.write_text(edit((tiny_dir / "stack-sep.toml").read_text()))
    return path


def _spec_error(path: Path) -> str:
    from mavis_core.stack_file import read_stack_spec

    with pytest.raises(ValueError) as err:
        read_stack_spec(path)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_a_missing_relative_folder_is_an_error_not_a_download(tiny_dir, tmp_path):
    path = _stack_copy(tiny_dir, tmp_path, lambda s: s.replace('"values/humor"', '"values/fused2"'))
    message = _spec_error(path)
    assert f"value model of 'humor' not found: {tmp_path}/values/fused2" in message
    assert 'a Hugging Face model is written "hf:values/fused2"' in message


def test_hub_ids_are_written_hf_and_never_mistaken_for_folders(tmp_path):
    from mavis_core.stack_file import is_local, resolve

    assert resolve("hf:Ray2333/gpt2-large-helpful-reward_model", tmp_path) == "Ray2333/gpt2-large-helpful-reward_model"
    assert not is_local(resolve("hf:Ray2333/gpt2-large-helpful-reward_model", tmp_path))
    (tmp_path / "Ray2333" / "gpt2").mkdir(parents=True)
    assert resolve("Ray2333/gpt2", tmp_path) == str(tmp_path / "Ray2333" / "gpt2")  # a folder that exists: a folder
    for bad in ("hf:../etc", "hf:a/b/c", "hf:", "hf:a..b/c"):
        with pytest.raises(ValueError, match="is not a Hugging Face id; write hf:owner/name"):
            resolve(bad, tmp_path)
    paper = Path(__file__).resolve().parents[1] / "stacks" / "hh-rlhf.toml"
    assert paper.read_text().count('"hf:') == 4  # the paper stack's base and three reward models


def test_a_path_may_not_leave_the_stacks_folder_unless_absolute(tiny_dir, tmp_path):
    outside = tmp_path / "elsewhere"
    shutil.copytree(tiny_dir / "values" / "humor", outside)
    root = tmp_path / "stack"
    message = _spec_error(_stack_copy(tiny_dir, root, lambda s: s.replace('"values/humor"', '"../elsewhere"')))
    assert "value model of 'humor' '../elsewhere' lies outside the stack file's folder" in message
    assert "write an absolute path" in message
    (root / "stack.toml").write_text((root / "stack.toml").read_text().replace('"../elsewhere"', f'"{outside}"'))
    from mavis_core.stack_file import read_stack_spec

    assert read_stack_spec(root / "stack.toml").objectives[2].value == str(outside)


@pytest.mark.parametrize("prompts", ["[1, 2]", '"hello"', '["ok", ""]', "{ a = 1 }"])
def test_bad_prompts_in_a_stack_are_one_line_errors(tiny_dir, tmp_path, prompts):
    path = _stack_copy(tiny_dir, tmp_path, lambda s: s.replace('prompts = ["hello there", "tell me a joke"]',
                                                               f"prompts = {prompts}"))
    assert "must be a list of non-empty strings" in _spec_error(path)
    with pytest.raises(SystemExit, match=r"^error: cannot load stack .*prompts in .* must be a list of non-empty"):
        app.main(["--stack", str(path), "--study-db", str(tmp_path / "study.db")])


def test_an_empty_mavis_stack_variable_means_the_default(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAVIS_STACK", "")
    monkeypatch.setenv("MAVIS_STUDY_DB", "")
    with pytest.raises(SystemExit, match=f"no stack at {app.DEFAULT_STACK} yet"):
        app.main([])
    assert not (tmp_path / app.DEFAULT_STUDY_DB).exists()  # a start that fails leaves no database behind
    (tmp_path / app.DEFAULT_STUDY_DB).mkdir()  # the empty MAVIS_STUDY_DB means the default file too
    with pytest.raises(SystemExit, match=f"^error: --study-db {app.DEFAULT_STUDY_DB}: .* is a folder"):
        app.main([])


@pytest.mark.parametrize("kind", ["folder", "text", "binary", "unwritable"])
def test_a_bad_study_db_fails_at_once_in_one_line(monkeypatch, tmp_path, kind):
    bad = tmp_path / "study.db"
    if kind == "folder":
        bad.mkdir()
    elif kind == "unwritable":
        (tmp_path / "file").write_text("x")
        bad = tmp_path / "file" / "study.db"  # its folder would be a file
    else:
        bad.write_bytes(b"ratings, not a database\n" * 100 if kind == "text" else os.urandom(4096))
    monkeypatch.setattr(server, "load_engine", lambda path: pytest.fail("the models were loaded first"))
    with pytest.raises(SystemExit) as exit_:
        app.main(["--stack", str(tmp_path / "any.toml"), "--study-db", str(bad)])
    message = str(exit_.value)
    assert message.startswith(f"error: --study-db {bad}: ") and "\n" not in message
    assert {"folder": "is a folder", "unwritable": "cannot create it"}.get(kind, "file is not a database") in message


def test_pickle_weights_are_refused_naming_their_folder(tiny_dir, tmp_path):
    values = tmp_path / "stack" / "pickled"
    shutil.copytree(tiny_dir / "values" / "humor", values)
    (values / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    message = _spec_error(_stack_copy(tiny_dir, tmp_path / "stack",
                                      lambda s: s.replace('"values/humor"', '"pickled"')))
    assert f"value model of 'humor' at {values} holds pickle files (pytorch_model.bin)" in message


# ------------------------------------------------------------- what the probe found sound, kept under test

def test_a_forged_trial_id_is_not_taken_from_the_request(served):
    _, url = served
    shown = _client(url).predict("p", "hi", api_name="/study_new")
    kind, answer = _call(url, "study_submit", ["0" * 32, "A", *[3] * RATINGS])  # a raw call naming someone's trial
    assert kind == "error" and "No trial to rate yet" in answer["error"]  # the trial id lives in gr.State only
    assert "**Prompt:**" in shown[0]


XSS = '<img src=x onerror="window.__xss = 1"><script>window.__xss = 2</script>'


@pytest.mark.slow
def test_in_a_browser_markup_stays_text_and_the_admin_downloads_the_export(served, browser, tmp_path):
    from apputil import TOKEN, browser_page

    demo, url = served
    with browser_page(browser, 1500, 1200) as page:
        page.goto(url)
        page.locator("#prompt textarea").fill(XSS)
        page.locator("#generate").click()
        page.wait_for_function("() => document.querySelector('#details').innerText.includes('Prompt')",
                               timeout=180_000)
        assert page.evaluate("() => window.__xss") is None
        assert page.locator("[onerror], #details script, #explain script").count() == 0  # sanitised markup
        page.get_by_role("tab", name="User study").click()
        page.get_by_text("Results (admin)").click()
        page.get_by_label(f"Admin token ({admin.ADMIN_TOKEN_ENV})").fill(TOKEN)
        page.get_by_role("button", name="Export CSV").click()
        link = page.locator("a[download]").first
        link.wait_for(timeout=60_000)
        assert len(demo.exports._deadlines) == 1  # shown, not fetched yet: the page does not prefetch it
        with page.expect_download() as download:
            link.click()
        assert Path(download.value.path()).read_text().startswith("trial_id,")
    deadline = time.monotonic() + 10
    while demo.exports._deadlines and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not demo.exports._deadlines  # served once, then deleted
