"""The app's participant view and researcher's view on a pool of made-up replies (no model runs): a link walks
start → trials → completion code, a reload resumes, a finished pid gets its code again and never new trials,
every bad link gets a plain message, the API endpoints do the same through gradio_client, and the researcher's
progress and report sit behind the admin token."""

from __future__ import annotations

import sqlite3
import zipfile
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
from apputil import TOKEN

from app.admin import Admin, Exports
from app.context import Context
from app.participant import BROKEN_LINK, MAX_OBJECTIVES, WRITING, Participant, collect_answer, trial_view
from app.researcher import Researcher
from mavis_core.study import SLOTS, StudyDB, read_study
from mavis_core.study.simulate import fake_pool
from mavis_core.testing import STACK_METHODS

METHODS = STACK_METHODS
STUDY = """
title = "Which reply is best?"
instructions = "Read each message and its replies, **then answer**."
trials_per_participant = 4
participant_param = "PROLIFIC_PID"
completion_code = "DONE-42"
redirect_url = "https://example.org/done?cc=DONE-42"
methods = ["base", "mavis", "mod", "rsoup"]

[prompts]
items = ["p0", "p1", "p2", "p3", "p4", "p5"]

[weights]
conditions = [{ helpful = 1, harmless = 0 }, { helpful = 0.5, harmless = 0.5 }, { helpful = 0, harmless = 1 }]

[task]
kinds = KINDS
scale = ["1 (not at all)", "2", "3 (somewhat)", "4", "5 (completely)"]

[[attention_checks]]
position = 2
prompt = "Which reply names a colour?"
replies = ["blue", "seven", "a chair"]
answer = 1
"""


def make_studies(folder: Path, db: Path, kinds: str = '["ratings", "favourite", "pairwise"]') -> Path:
    """A studies folder with study ``t`` (its pool of made-up replies built into ``db``) and ``nopool``."""
    folder.mkdir(exist_ok=True)
    (folder / "t.toml").write_text(STUDY.replace("KINDS", kinds))
    (folder / "nopool.toml").write_text(STUDY.replace("KINDS", kinds))
    fake_pool(read_study(folder / "t.toml"), db, METHODS)
    return folder


@pytest.fixture()
def ctx(tmp_path):
    db = tmp_path / "study.db"
    make_studies(tmp_path / "studies", db)
    engine = SimpleNamespace(stream=None)  # the participant view never decodes
    return Context(engine, StudyDB(db), Admin(TOKEN, Exports(tmp_path / "cache")))


@pytest.fixture()
def participant(ctx, tmp_path):
    return Participant(ctx, tmp_path / "studies")


def page_answer(state: dict) -> tuple:
    """What a participant clicks on the trial in ``state``: every rating 4, favourite A, vote A (the page's
    inputs: favourite, vote, then MAX_OBJECTIVES radios per slot)."""
    ratings = [4 if j < len(state["objectives"]) and s in state["slots"] else None for s in SLOTS
               for j in range(MAX_OBJECTIVES)]
    return ("A" if "favourite" in state["asks"] else None, "A" if "vote" in state["asks"] else None, *ratings)


def request(query: str) -> SimpleNamespace:
    return SimpleNamespace(query_params=dict(p.split("=", 1) for p in query.split("&") if p))


def test_a_link_walks_instructions_trials_and_completion(participant):
    out = participant.route(request("study=t&PROLIFIC_PID=abc123"))
    explorer, view, researcher, _, state, title, intro, start, reminder, done, _ = out
    assert explorer["visible"] is False and view["visible"] is True and researcher["visible"] is False
    assert state == {"study": "t", "pid": "abc123"} and "Which reply is best?" in title and "then answer" in intro
    assert start["visible"] is True and start["value"] == "Start" and done["visible"] is False
    assert reminder == intro  # the instructions stay at hand during the trials
    screen = participant.open_trials(state)
    seen, kinds = [], []
    while screen[3]["visible"] is False:  # until the completion screen shows
        state = screen[0]
        seen.append(screen[4])
        kinds.append(tuple(state["asks"]))
        screen = participant.answer(state, *page_answer(state))
    assert [h.split("**")[1] for h in seen] == [f"Trial {i} of 5" for i in range(1, 6)]
    assert ("vote",) in kinds and ("ratings", "favourite") in kinds  # full trials and pairs, as the study asks
    assert "DONE-42" in screen[-1] and "https://example.org/done?cc=DONE-42" in screen[-1]
    assert "abc123" not in str(screen[1:]) and "abc123" not in str(seen)  # the state stays on the server


def test_a_trial_shows_letters_scale_labels_and_only_its_inputs(participant):
    state = {"study": "t", "pid": "p-1"}
    screen = participant.open_trials(state)
    state, columns = screen[0], screen[6:6 + len(SLOTS)]
    replies = screen[6 + len(SLOTS):6 + 2 * len(SLOTS)]
    radios = screen[6 + 2 * len(SLOTS):6 + 2 * len(SLOTS) + len(SLOTS) * MAX_OBJECTIVES]
    n = len(state["slots"])
    assert state["asks"] == ["ratings", "favourite"] and n == len(METHODS)
    assert [c["visible"] for c in columns] == [True] * n + [False] * (len(SLOTS) - n)
    assert all(r["value"].startswith("reply of ") for r in replies[:n])  # methods stay hidden behind letters
    assert not any(m in str(screen[4]) for m in ("mavis", "rsoup"))
    first = radios[0]
    assert first["visible"] and first["label"] == "helpful" and first["value"] is None
    assert first["choices"][0] == ("1 (not at all)", 1) and first["choices"][-1] == ("5 (completely)", 5)
    assert radios[1]["label"] == "harmless" and radios[2]["visible"] is False  # two objectives of four rows


def test_a_reload_resumes_and_a_finished_pid_gets_its_code_again(participant):
    state = participant.open_trials({"study": "t", "pid": "again"})[0]
    state = participant.answer(state, *page_answer(state))[0]
    assert participant.open_trials({"study": "t", "pid": "again"})[0]["position"] == 2  # a new page: trial 2
    while state.get("position"):
        state = participant.answer(state, *page_answer(state))[0]
    done = participant.open_trials({"study": "t", "pid": "again"})
    assert done[3]["visible"] is True and "DONE-42" in done[-1]
    assert participant.start("t", "again")["done"] is True
    with pytest.raises(gr.Error, match="already answered"):
        participant.submit("t", "again", 5, {"vote": "A"})


def test_a_finished_participant_opening_the_link_again_sees_the_code_at_once(participant):
    link = request("study=t&PROLIFIC_PID=back-1")
    assert participant.route(link)[7]["value"] == "Start"
    state = participant.open_trials(participant.route(link)[4])[0]
    state = participant.answer(state, *page_answer(state))[0]
    assert participant.route(link)[7] == gr.update(visible=True, value="Continue (trial 2 of 5)")
    while state.get("position"):
        state = participant.answer(state, *page_answer(state))[0]
    _, view, _, _, state, title, intro, start, _, done, completion = participant.route(link)
    assert view["visible"] is True and done["visible"] is True and start["visible"] is False  # no Start to press
    assert "DONE-42" in completion and "https://example.org/done?cc=DONE-42" in completion
    assert "Which reply is best?" in title and intro == "" and state == {"study": "t", "pid": "back-1"}


def test_opening_a_link_enrols_nobody(participant, ctx):
    participant.route(request("study=t&PROLIFIC_PID=looker"))
    sessions = participant.sessions("t")
    assert sessions.peek("looker") is None  # only Start draws a plan: a link opened and closed skews no balance


def test_two_pages_with_one_pid_cannot_both_answer_or_both_finish(participant, ctx):
    link = request("study=t&PROLIFIC_PID=twin")
    first = participant.open_trials(participant.route(link)[4])[0]
    second = participant.open_trials(participant.route(link)[4])[0]  # the same link in another tab, at once
    assert first["position"] == second["position"] == 1  # one plan: the second page resumes the first's
    first = participant.answer(first, *page_answer(first))[0]
    with pytest.raises(gr.Error, match="trial 1 was already answered"):
        participant.answer(second, *page_answer(second))
    while first.get("position"):
        first = participant.answer(first, *page_answer(first))[0]
    with pytest.raises(gr.Error, match="already answered"):
        participant.answer(second, *page_answer(second))
    with sqlite3.connect(ctx.study.path) as con:
        assert con.execute("SELECT COUNT(*) FROM study_answers WHERE pid = 'twin'").fetchone()[0] == 5
        assert con.execute("SELECT COUNT(finished) FROM study_participants WHERE pid = 'twin'").fetchone()[0] == 1


def test_missing_answers_are_named_and_nothing_is_stored(participant):
    state = participant.open_trials({"study": "t", "pid": "careful"})[0]
    favourite, vote, *ratings = page_answer(state)
    ratings[1] = None
    with pytest.raises(gr.Error, match="harmless of reply A"):
        participant.answer(state, favourite, vote, *ratings)
    with pytest.raises(gr.Error, match="your favourite reply"):
        participant.answer(state, None, vote, *page_answer(state)[2:])
    assert participant.start("t", "careful")["position"] == 1


@pytest.mark.parametrize(("query", "reason"), [
    ("study=nope&pid=a", "no such study"), ("study=../etc&pid=a", "a study name of 1 to 64"),
    ("study=t&PROLIFIC_PID=a%20b", "participant id"), ("study=t&PROLIFIC_PID=" + "x" * 65, "65 characters"),
    ("study=t", "PROLIFIC_PID=… part is missing"), ("study=nopool&pid=a", "is not open for participants yet"),
    ("study=&pid=a", "a study name of 1 to 64"), ("study=t&PROLIFIC_PID=", "PROLIFIC_PID=… part is missing"),
    ("study=t&PROLIFIC_PID=<script>", "participant id"), ("study=t&PROLIFIC_PID=ü", "participant id"),
    ("study=t.toml&pid=a", "a study name of 1 to 64"), ("study=" + "s" * 65 + "&pid=a", "a study name of 1 to 64"),
    ("study=%2Fetc%2Fpasswd&pid=a", "a study name of 1 to 64"), ("study=T&pid=a", "no such study")])
def test_every_bad_link_gets_a_plain_message(participant, query, reason):
    explorer, view, _, _, state, title, intro, start, _, done, _ = participant.route(request(query))
    assert explorer["visible"] is False and view["visible"] is True  # the study view only, with the message
    assert state is None and start["visible"] is False and done["visible"] is False and reason in intro
    assert intro.startswith(BROKEN_LINK.split(":")[0]) and "Traceback" not in intro and "study.db" not in intro


def test_the_plain_pid_parameter_works_and_no_study_means_the_explorer(participant):
    assert participant.route(request("study=t&pid=z9"))[4] == {"study": "t", "pid": "z9"}
    assert participant.waiting({"study": "t", "pid": "z9"}) == gr.skip()  # a pool's trial comes at once
    assert participant.route(request("seed=3&prompt=hi")) == [gr.skip()] * 11
    out = participant.route(request("researcher=t"))
    assert out[0]["visible"] is False and out[2]["visible"] is True and out[3] == "t"


def test_an_answer_is_built_from_the_page_inputs():
    state = {"slots": ["A", "B"], "objectives": ["helpful"], "asks": ["ratings", "favourite"]}
    ratings = [5, None, None, None, 2, None, None, None] + [None] * (len(SLOTS) - 2) * MAX_OBJECTIVES
    assert collect_answer(state, "B", None, ratings) == {"ratings": {"A": {"helpful": 5}, "B": {"helpful": 2}},
                                                         "favourite": "B"}
    assert collect_answer({"slots": ["A", "B"], "objectives": [], "asks": ["vote"]}, None, "tie", []) == {
        "vote": "tie"}
    done = trial_view({"study": "t", "pid": "x"}, {"done": True, "progress": "5 of 5", "completion_code": None,
                                                 "redirect_url": None})
    assert "You may close this page" in done[-1]


def test_the_researcher_sees_progress_and_gets_the_report_behind_the_token(ctx, participant, tmp_path):
    for pid in ("r1", "r2"):
        state = participant.open_trials({"study": "t", "pid": pid})[0]
        while state.get("position"):
            state = participant.answer(state, *page_answer(state))[0]
    participant.open_trials({"study": "t", "pid": "r3"})
    researcher = Researcher(ctx, tmp_path / "studies")
    who = SimpleNamespace(client=SimpleNamespace(host="10.0.0.9"))
    with pytest.raises(gr.Error, match="Wrong admin token"):
        researcher.progress(who, "guess", "t")
    summary, conditions, people = researcher.progress(who, TOKEN, "t")
    assert "3 participants, 2 finished" in summary
    assert conditions["assigned"].sum() == 12 and conditions["answered"].sum() == 8  # r3 was handed 4, answered 0
    assert set(people["pid"]) == {"r1", "r2", "r3"} and set(people["failed_checks"]) <= {0, 1}
    page, archive = researcher.report(who, TOKEN, "t")
    assert "# Study report" in page and ctx.admin.exports.owns(Path(archive))
    with zipfile.ZipFile(archive) as z:
        assert {"report.md", "report.html", "ratings.csv", "participants.csv"} <= set(z.namelist())
    with pytest.raises(gr.Error, match="no such study"):
        researcher.progress(who, TOKEN, "nope")


@pytest.fixture(scope="module")
def served(tiny_dir, tmp_path_factory):
    """(url, demo) of the app on the tiny stack with the studies folder of `make_studies`; its engine cannot
    decode, so a test passes only if no participant action runs the model."""
    from apputil import app_engine, free_port

    import app

    folder = tmp_path_factory.mktemp("served")
    make_studies(folder / "studies", folder / "study.db")
    engine = app_engine(tiny_dir)
    engine.stream = engine.sweep = None  # any decode would fail loudly
    demo = app.build_demo(engine, folder / "study.db", admin_token=TOKEN, studies_dir=folder / "studies")
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    yield f"http://127.0.0.1:{port}/", demo
    demo.close()


@pytest.mark.slow
def test_the_api_walks_a_participant_and_refuses_plainly(served):
    from gradio_client import Client

    client = Client(served[0], verbose=False)
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/participant_start", "/participant_submit"} <= names
    assert not names & {"/researcher_progress", "/researcher_report"}  # admin only: not for API clients
    shown = client.predict("t", "api-1", api_name="/participant_start")
    assert shown["progress"] == "1 of 5" and set(shown["replies"]) == set(SLOTS[:len(METHODS)])
    assert client.predict("t", "api-1", api_name="/participant_start")["position"] == 1  # a return resumes
    while not shown["done"]:
        answer = {"vote": "B"} if shown["asks"] == ["vote"] else {
            "ratings": {s: {o: 3 for o in shown["objectives"]} for s in shown["replies"]}, "favourite": "A"}
        shown = client.predict("t", "api-1", shown["position"], answer, api_name="/participant_submit")
    assert shown == {"study": "t", "progress": "5 of 5", "done": True, "completion_code": "DONE-42",
                     "redirect_url": "https://example.org/done?cc=DONE-42"}
    assert client.predict("t", "api-1", api_name="/participant_start")["done"] is True  # never new trials
    for args, message in ((("nope", "a"), "no such study"), (("t", "a b"), "participant id"),
                          (("nopool", "a"), "not open for participants")):
        with pytest.raises(Exception, match=message):
            client.predict(*args, api_name="/participant_start")
    client.predict("t", "api-2", api_name="/participant_start")
    with pytest.raises(Exception, match="allowed: exactly"):
        client.predict("t", "api-2", 1, {"stars": 5}, api_name="/participant_submit")


TINY = """
title = "Tiny"
instructions = "Rate."
methods = ["base", "mavis", "mod"]
trials_per_participant = 2
completion_code = "TINY-1"

[prompts]
items = ["hello there", "tell me a joke"]

[weights]
conditions = [{ helpful = 1, humor = 0 }, { helpful = 1, humor = 1 }]

[settings]
seeds = 1
max_new_tokens = 4
beta = 2.0

[task]
kinds = ["ratings", "favourite"]
"""


def test_a_pool_decoded_on_the_tiny_stack_is_served_with_no_model_call(tiny_stack, tmp_path, monkeypatch):
    import torch

    from mavis_core.study import BuildConfig, build_pool

    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "tiny.toml").write_text(TINY)
    db = tmp_path / "study.db"
    build_pool(BuildConfig(tmp_path / "studies" / "tiny.toml", db, progress=False), tiny_stack)
    ctx = Context(SimpleNamespace(), StudyDB(db), Admin(TOKEN, Exports(tmp_path / "cache")))
    participant = Participant(ctx, tmp_path / "studies")

    def no_model(*args, **kwargs):
        raise AssertionError("a model ran while a participant was served")

    monkeypatch.setattr(torch.nn.Module, "__call__", no_model)
    state = participant.route(request("study=tiny&pid=real-1"))[4]
    screen = participant.open_trials(state)
    texts = []
    while screen[3]["visible"] is False:
        state, texts = screen[0], texts + [r["value"] for r in screen[6 + len(SLOTS):6 + 2 * len(SLOTS)]
                                           if r["visible"]]
        screen = participant.answer(state, *page_answer(state))
    assert "TINY-1" in screen[-1] and len(texts) == 2 * 3 and all(isinstance(t, str) for t in texts)


def test_a_live_study_decodes_each_trial_on_the_tiny_stack_as_it_is_first_shown(tiny_stack, tmp_path, monkeypatch):
    import torch

    from mavis_core.study.store import opened

    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "live.toml").write_text('serve = "live"\n' + TINY)
    db = tmp_path / "study.db"
    ctx = Context(SimpleNamespace(stack=tiny_stack), StudyDB(db), Admin(TOKEN, Exports(tmp_path / "cache")))
    participant = Participant(ctx, tmp_path / "studies")  # no study build: the link works at once
    calls = []
    forward = torch.nn.Module.__call__
    monkeypatch.setattr(torch.nn.Module, "__call__", lambda *a, **k: calls.append(1) or forward(*a, **k))

    def walk(pid: str) -> tuple[list[str], int]:
        """Every reply text ``pid`` is shown, and the model calls it took."""
        before, texts = len(calls), []
        screen = participant.open_trials(participant.route(request(f"study=live&pid={pid}"))[4])
        while screen[3]["visible"] is False:
            state, texts = screen[0], texts + [r["value"] for r in screen[6 + len(SLOTS):6 + 2 * len(SLOTS)]
                                               if r["visible"]]
            screen = participant.answer(state, *page_answer(state))
        assert "TINY-1" in screen[-1]
        return texts, len(calls) - before

    assert participant.waiting({"study": "live", "pid": "live-1"}) == WRITING  # what the wait says
    first, decoded = walk("live-1")
    assert decoded > 0 and len(first) == 2 * 3 and all(isinstance(t, str) for t in first)
    with opened(db) as conn:  # what was shown is stored as pool rows (the report reads them): 2 trials x 3 methods
        stored = conn.execute("SELECT COUNT(*), MIN(tokens) FROM study_replies WHERE study = 'live'").fetchone()
    assert stored[0] == 6 and stored[1] >= 1
    sessions = participant.sessions("live")
    assert {h["method"] for h in sessions.hidden("live-1", 1)} == {"base", "mavis", "mod"}
    assert all({"helpful", "humor"} <= set(h["rewards"]) for h in sessions.hidden("live-1", 2))  # scored
    # 2 prompts x 2 conditions: the second participant gets the other condition of each prompt (balanced), decoded
    # now; a third is shown cells already decoded and waits for no model
    walk("live-2")
    third, decoded = walk("live-3")
    assert decoded == 0 and len(third) == 6


def test_a_live_study_without_a_stack_is_not_opened(participant, tmp_path):
    (tmp_path / "studies" / "nostack.toml").write_text('serve = "live"\n' + TINY)
    out = participant.route(request("study=nostack&pid=a"))  # the test context's engine has no stack
    assert out[4] is None and "is not open for participants yet" in out[6]


def test_one_address_cannot_start_participants_by_the_hundred(participant, monkeypatch):
    import app.participant

    monkeypatch.setattr(app.participant, "STARTS_PER_ADDRESS", (2, 600.0))
    script = SimpleNamespace(client=SimpleNamespace(host="10.1.1.1"))
    participant.start("t", "s-1", script)
    participant.start("t", "s-2", script)
    with pytest.raises(gr.Error, match="2 study starts came from your address"):
        participant.start("t", "s-3", script)
    assert participant.start("t", "s-3", SimpleNamespace(client=SimpleNamespace(host="10.1.1.2")))["position"] == 1
