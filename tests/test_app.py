"""The app through gradio_client, launched in-process on the tiny stack: every endpoint, bad inputs, the CLI."""

import csv
import json
import re
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
from apputil import CHART, METHODS, RATINGS, SAMPLES, TOKEN, TOKENS, N

import app
from app import controls, server, threads
from app.context import Context
from app.page import share_js
from app.replies import new_seed, pick_point, replay_seed
from app.trials import decode_trial
from mavis_core.config import METHOD_NAMES
from mavis_core.sweep_plan import SEED_RANGE

AXES = ("helpful", "humor", controls.NO_Z)


def generate_args(prompt="hello there", methods=METHODS, weights=(0.5, 0.2, 0.3), **kw):
    s = {"beta": 2.0, "top_k": 8, "temperature": 1.0, "max_new_tokens": 12, "seed": 3, **kw}
    return (prompt, s["beta"], s["top_k"], s["temperature"], s["max_new_tokens"], s["seed"], methods, *AXES, *weights)


@pytest.mark.slow
def test_every_endpoint_is_named(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/generate", "/sweep", "/normalise", "/redraw", "/clear", "/show_sample", "/study_new", "/study_submit",
            "/study_results", "/study_export"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("methods", [[m] for m in METHODS] + [METHODS])
def test_generate_streams_each_method(client, methods):
    job = client.submit(*generate_args(methods=methods), api_name="/generate")
    out = job.result()
    texts, stats = out[:N], out[N:TOKENS]
    for m, text, stat in zip(METHODS, texts, stats, strict=True):
        assert (text != "") == (m in methods), m
        assert ("KL" in stat) == (m in methods) and ("not selected" in stat) == (m not in methods)
    assert len(job.outputs()) >= 2  # a first round of tokens went out before the scored replies
    assert "mavis-explain" in out[TOKENS] and out[SAMPLES]["choices"]


@pytest.mark.slow
def test_same_seed_same_text_and_sample_details(client):
    first = client.predict(*generate_args(), api_name="/generate")
    again = client.predict(*generate_args(), api_name="/generate")
    assert first[:N] == again[:N]
    assert all("seed 3" in stat for stat in again[N:TOKENS])  # each column names the seed that replays it
    newest = again[SAMPLES]["value"]  # the dropdown points at the newest MAVIS sample
    details = client.predict(newest, api_name="/show_sample")
    assert f"#{newest} mavis" in details and "KL" in details and "helpful 0.50" in details
    # The replay lands on the first one's point: drawn once, and the details name the sample underneath.
    assert f"#{newest - N} mavis" in details.split("Same point on the chart:")[1]
    mavis = next(t for t in json.loads(again[CHART]["plot"])["data"] if t.get("name") == "mavis")
    assert len(mavis["x"]) == 1 and re.search(r"×\d+ the same point: #", mavis["hovertext"][0])


@pytest.mark.slow
def test_sweep_fills_the_chart(client):
    client.predict(api_name="/clear")
    plot, sample, status = client.predict("hello", 1.0, 8, 1.0, 4, 0, ["base", "mavis"], controls.SWEEP_MODES[0],
                                          *AXES, api_name="/sweep")
    assert status.startswith("Swept 12 replies (11 λ points)") and len(sample["choices"]) == 12
    # It says what it varied and what it held: the chart pair's grid, the settings as sent (not the sliders).
    assert "**Varies** λ from humor only to helpful only, 11 points (harmless at 0)" in status
    assert "**holds** β 1, top-k 8, temperature 1, 4 tokens, sample" in status
    assert "1 prompt × 1 seed (seed 0)" in status
    plot, sample, status = client.predict("hello", 1.0, 8, 1.0, 4, 0, ["mod"], controls.SWEEP_MODES[1], *AXES,
                                          api_name="/sweep")
    assert "(15 λ points)" in status and len(sample["choices"]) == 12 + 15
    assert client.predict("humor", "harmless", controls.NO_Z, api_name="/redraw") is not None
    assert client.predict("humor", "harmless", "helpful", api_name="/redraw") is not None  # the 3-D view
    with pytest.raises(Exception, match="not in the list of choices"):
        client.predict("humor", "harmless", "fun", api_name="/redraw")


@pytest.mark.slow
def test_study_flow_and_admin_gate(client, tmp_path):
    shown = client.predict("p1", "", api_name="/study_new")
    header, texts = shown[0], shown[1:1 + N]
    assert "**Prompt:**" in header and "**Weights:**" in header and all(isinstance(t, str) for t in texts)
    assert not any(m in header for m in ("mavis", "rsoup"))  # blinded
    ratings = [3] * RATINGS
    with pytest.raises(Exception, match="no harmless rating"):
        client.predict("B", *ratings[:1], None, *ratings[2:], api_name="/study_submit")
    status = client.predict("B", *ratings, api_name="/study_submit")  # the trial id lives in gr.State
    assert "saved" in status
    with pytest.raises(Exception, match="New trial"):  # the trial was consumed: no double submission
        client.predict("B", *ratings, api_name="/study_submit")
    for endpoint in ("/study_results", "/study_export"):
        with pytest.raises(Exception, match="Wrong admin token"):
            client.predict("guess", api_name=endpoint)
    table = client.predict(TOKEN, api_name="/study_results")
    assert sorted(row[0] for row in table["data"]) == sorted(METHODS)
    path = client.predict(TOKEN, api_name="/study_export")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == RATINGS and {r["method"] for r in rows} == set(METHODS) and rows[0]["participant"] == "p1"


@pytest.mark.slow
@pytest.mark.parametrize("change, message", [
    ({"prompt": ""}, "prompt is empty"),
    ({"prompt": " \n\t "}, "prompt is empty"),
    ({"prompt": "hi\x07there"}, "control characters"),
    ({"weights": (0, 0, 0)}, "weights are zero"),
    ({"weights": (5, 0, 0)}, "greater than maximum"),
    ({"top_k": 0}, "less than minimum"),
    ({"temperature": 50}, "greater than maximum"),
    ({"max_new_tokens": 1000}, "greater than maximum"),
    ({"seed": -1}, "less than minimum"),
    ({"methods": []}, "No method selected"),
    ({"methods": ["beam"]}, "beam"),
    ({"max_new_tokens": 2.5}, "whole number"),
])
def test_bad_inputs_get_plain_errors_and_app_keeps_serving(client, change, message):
    with pytest.raises(Exception, match=message) as err:
        client.predict(*generate_args(**change), api_name="/generate")
    assert "Traceback" not in str(err.value)
    assert client.predict(*generate_args(methods=["base"]), api_name="/generate")[0]


@pytest.mark.slow
def test_overlong_prompt_is_cut_not_refused(client):
    out = client.predict(*generate_args(prompt="tell me a joke " * 2000, methods=["mavis"]), api_name="/generate")
    assert out[1] and "KL" in out[N + 1]


def test_cli_missing_or_broken_stack_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit, match="cannot load stack .*not found"):
        app.main(["--stack", str(tmp_path / "nope.toml")])
    bad = tmp_path / "bad.toml"
    bad.write_text("[base\n")
    with pytest.raises(SystemExit, match="not valid TOML"):
        app.main(["--stack", str(bad)])


def test_cli_default_stack_missing_says_how_to_pick(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAVIS_STACK", raising=False)
    with pytest.raises(SystemExit, match="--stack PATH or MAVIS_STACK"):
        app.main([])


@pytest.mark.parametrize("values, policies, methods", [(True, False, ["base", "mavis", "prompted"]),
                                                       (False, True, ["base", "mod", "rsoup", "prompted"])])
def test_layout_follows_the_stack(tiny_dir, tmp_path, values, policies, methods):
    import torch

    from mavis_core import load_stack
    from mavis_core.engine import Engine
    from mavis_core.testing import OBJECTIVES, write_stack

    path = write_stack(tiny_dir, f"stack-{values}-{policies}.toml",
                       {n: f"values/{n}" for n in OBJECTIVES} if values else None, policies=policies)
    engine = Engine(load_stack(path, device=torch.device("cpu")))
    assert engine.methods == methods
    demo = app.build_demo(engine, tmp_path / "study.db")
    ids = {c.get("props", {}).get("elem_id") for c in demo.config["components"]}
    assert {f"reply-{m}" for m in methods} <= ids
    assert not {f"reply-{m}" for m in set(METHOD_NAMES) - set(methods)} & ids


@pytest.mark.slow
def test_concurrent_users_with_different_weights(client):
    from gradio_client import Client

    other = Client(client.src, verbose=False, analytics_enabled=False)
    jobs = [c.submit(*generate_args(weights=w, seed=i), api_name="/generate")
            for i, (c, w) in enumerate([(client, (1, 0, 0)), (other, (0, 1, 0)), (other, (0.2, 0.3, 0.5))])]
    for job in jobs:  # all served by the one shared engine, none failing
        out = job.result(timeout=300)
        assert all(out[:N]) and all("KL" in s for s in out[N:TOKENS])


STUB = SimpleNamespace(objectives=["helpful", "harmless", "humor"], methods=METHODS, max_new_tokens=32)


def test_share_link_values_are_clipped_and_junk_is_ignored():
    query = {"prompt": "why not?", "w_helpful": "0", "w_harmless": "1e9", "w_humor": "nan", "beta": "-3",
             "k": "7.4", "temp": "inf", "len": "99999", "seed": "42", "methods": "rsoup,base,beam,base",
             "search": "beam", "n": "x", "b": "3", "__theme": "dark", "junk": "1"}
    assert controls.settings_from_query(query, STUB) == {
        "w_helpful": 0.0, "w_harmless": 1.0, "beta": 0.0, "k": 7, "len": 32, "seed": 42, "b": 3,
        "new_seed": False, "methods": ["base", "rsoup"], "search": "beam", "prompt": "why not?"}


@pytest.mark.parametrize("query", [
    {"prompt": "hi\x07there"}, {"prompt": "   "}, {"prompt": "\udcff"}, {"search": "greedy"}, {"methods": ""},
    {"methods": "beam,nope"}, {"seed": "-"}, {"k": "1" * 400}, {"w_helpful": "0", "w_harmless": "0", "w_humor": "0"},
    {"w_helpful": ["1"]}, {"len": "0x10"},
])
def test_a_bad_share_link_sets_nothing(query):
    assert controls.settings_from_query(query, STUB) == {}


def test_share_keys_follow_the_controls_the_page_restores(tiny_dir, tmp_path):
    from apputil import app_engine

    engine = app_engine(tiny_dir)
    demo = app.build_demo(engine, tmp_path / "study.db")
    keys = controls.share_keys(engine.objectives)
    restore = next(fn for fn in demo.fns.values() if fn.name == "restore")
    assert len(restore.outputs) == len(keys) + 1  # every shared control, then "new seed each time"
    assert "history.replaceState" in share_js(keys) and '"w_humor"' in share_js(keys)
    labels = [str(getattr(c, "label", "")) for c in restore.outputs]
    assert labels[0] == "Prompt" and labels[-1] == "new seed each time" and "seed" in labels


def test_clicked_points_and_new_seeds():
    history = [{"id": 3}, {"id": 4}]
    assert pick_point("4:1700000000000", history)["value"] == 4
    for junk in ("9:1", "x", "", None, "4.5", "-4", "<b>"):
        assert isinstance(pick_point(junk, history), type(gr.skip()))
    seeds = {new_seed(True) for _ in range(5)}
    assert len(seeds) > 1 and all(SEED_RANGE[0] <= s <= SEED_RANGE[1] for s in seeds)
    assert isinstance(new_seed(False), type(gr.skip()))  # unticked: the seed box is left as it is


def test_spaces_front_matter_pins_the_gradio_of_requirements():
    root = Path(app.__file__).parent.parent
    front = root.joinpath("README.md").read_text().split("---")[1]
    sdk = re.search(r"^sdk_version:\s*(\S+)", front, re.M).group(1)
    pinned = re.search(r"^gradio==(\S+)", root.joinpath("requirements.txt").read_text(), re.M).group(1)
    assert re.search(r"^sdk:\s*gradio$", front, re.M) and re.search(r"^app_file:\s*app.py$", front, re.M)
    assert sdk == pinned


@pytest.mark.parametrize("env, host, port", [({}, "127.0.0.1", 7860),
                                             ({"GRADIO_SERVER_NAME": "0.0.0.0"}, "0.0.0.0", 7860),
                                             ({"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "7861"},
                                              "0.0.0.0", 7861),
                                             ({"SPACE_ID": "me/mavis"}, "0.0.0.0", 7860)])
def test_the_app_binds_where_spaces_looks(monkeypatch, env, host, port):
    """Spaces runs `python app.py` with GRADIO_SERVER_NAME=0.0.0.0 and GRADIO_SERVER_PORT=7860 (SPACE_ID set);
    the app must listen there, with its CSS and page script."""
    for name in ("GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "SPACE_ID", "MAVIS_STACK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    launched = {}

    class Built:
        def launch(self, **kwargs):
            launched.update(kwargs)

    monkeypatch.setattr(server, "check_study_db", lambda path: None)
    monkeypatch.setattr(threads.THREADS, "apply", lambda: None)
    monkeypatch.setattr(server, "load_engine", lambda path: SimpleNamespace(warm_up=lambda: None, parts=lambda: []))
    monkeypatch.setattr(server, "build_demo", lambda engine, db, **options: Built())
    app.main([])
    assert launched == {"server_name": host, "server_port": port}
    assert server.Demo.launch is not gr.Blocks.launch  # Demo.launch adds CSS, PAGE_JS and the Guard


def sweep_args(methods=("base", "mavis"), mode=0, axes=AXES, prompts=1, seeds=1, tokens=4, search=("sample", 4, 4)):
    return ("hello there", 1.0, 8, 1.0, tokens, 5, list(methods), controls.SWEEP_MODES[mode], *axes, *search, prompts,
            seeds)


@pytest.mark.slow
def test_sweep_points_are_means_over_prompts_and_seeds_with_error_bars(client):
    client.predict(api_name="/clear")
    plot, sample, status = client.predict(*sweep_args(prompts=2, seeds=3), api_name="/sweep")
    assert status.startswith("Swept 72 replies (11 λ points × 2 prompts × 3 seeds, drawn at their means ± se)")
    assert "2 prompts × 3 seeds (seed 5, 6, 7)" in status
    assert len(sample["choices"]) == 12  # one point per (method, λ): the base once, MAVIS at 11 λ
    traces = {t["name"]: t for t in json.loads(plot["plot"])["data"]}
    swept = traces["mavis sweep"]
    assert len(swept["x"]) == 11 and len(swept["error_y"]["array"]) == 11 and len(swept["error_x"]["array"]) == 11
    assert any(se > 0 for se in swept["error_y"]["array"])
    assert "mean of 6 replies" in swept["hovertext"][0]
    details = client.predict(sample["choices"][0][1], api_name="/show_sample")
    assert "mean of 6 replies (prompts × seeds) ± standard error" in details and " ± " in details
    # One prompt and one seed: single replies, no error bars (and callers that leave both out get that).
    plot, _, status = client.predict(*sweep_args(methods=["mod"])[:-2], api_name="/sweep")
    assert "1 prompt × 1 seed" in status
    assert "error_y" not in next(t for t in json.loads(plot["plot"])["data"] if t["name"] == "mod sweep")


@pytest.mark.slow
@pytest.mark.parametrize("args, words", [
    (sweep_args(methods=METHODS, mode=1, prompts=2, seeds=8, tokens=32, search=("best_of_n", 2, 4)),
     ["976 replies × 2 samples × 32 tokens = 62,464 token steps; the limit is 32,768",
      "fewer prompts or seeds per λ point"]),
    (sweep_args(prompts=3), ["prompts per λ point is 3, but this stack has only 2 prompts", "use at most 2"]),
    (sweep_args(seeds=9), ["seeds_per_point ('seeds per λ point')"]),
    (sweep_args(axes=("humor", "humor", controls.NO_Z)), ["y ('y axis') is 'humor', the same as x ('x axis')",
                                                     "two different objectives"]),
    (sweep_args(mode=1, axes=("helpful", "humor", "humor")), ["z ('z axis (3-D view)') is 'humor'"]),
])
def test_a_sweep_too_big_or_with_the_same_axes_is_refused(client, args, words):
    with pytest.raises(Exception) as err:  # noqa: PT011 - gradio_client's error carries the message
        client.predict(*args, api_name="/sweep")
    for w in words:
        assert w in str(err.value)


@pytest.mark.slow
def test_the_same_chart_axes_are_refused_by_name(client):
    with pytest.raises(Exception, match=re.escape("y ('y axis') is 'helpful', the same as x ('x axis')")):
        client.predict("helpful", "helpful", controls.NO_Z, api_name="/redraw")
    with pytest.raises(Exception, match=re.escape("z ('z axis (3-D view)') is 'helpful', already on the x axis")):
        client.predict("helpful", "humor", "helpful", api_name="/redraw")
    args = list(generate_args())
    args[8] = "helpful"  # y = x
    with pytest.raises(Exception, match="pick two different objectives"):
        client.predict(*args, api_name="/generate")


@pytest.mark.slow
def test_generate_clears_the_last_per_token_view_first(client):
    client.predict(*generate_args(methods=["mavis"]), api_name="/generate")
    job = client.submit(*generate_args(methods=["mavis"], seed=4), api_name="/generate")
    job.result()
    first = job.outputs()[0]
    # not the last reply's tokens
    assert first[1] == "" and "Generating" in first[TOKENS] and "tv-cell" not in first[TOKENS]
    assert "tv-cell" in job.outputs()[-1][TOKENS]


def test_two_decodes_on_their_own_threads_each_drop_to_their_share(monkeypatch):
    """torch's thread count belongs to the thread that sets it: the first decode's thread must set its own share
    when a second decode, on another thread, starts and ends."""
    import torch

    monkeypatch.delenv("MAVIS_THREADS", raising=False)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    share, before, seen = threads.ThreadShare(), torch.get_num_threads(), []
    second_running, second_done, first_looked = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with share.decoding():
            steps = share.follow(iter(range(3)))
            next(steps)
            seen.append(torch.get_num_threads())  # alone: every core
            second_running.wait(10)
            next(steps)
            seen.append(torch.get_num_threads())  # beside the second: its share
            first_looked.set()
            second_done.wait(10)
            next(steps)
            seen.append(torch.get_num_threads())  # alone again

    def second() -> None:
        with share.decoding():
            seen.append(("second", torch.get_num_threads()))
            second_running.set()
            first_looked.wait(10)
        second_done.set()

    try:
        a = threading.Thread(target=first)
        a.start()
        while not seen:
            time.sleep(0.01)
        b = threading.Thread(target=second)
        b.start()
        a.join(20)
        b.join(20)
        assert seen == [2, ("second", 1), 1, 2]
    finally:
        torch.set_num_threads(before)


def test_torch_threads_follow_the_running_decodes(monkeypatch):
    """A user alone decodes with every core; a second request drops both to their share at their next step, and
    the first gets every core back once the second has ended."""
    import torch

    monkeypatch.delenv("MAVIS_THREADS", raising=False)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    share, before = threads.ThreadShare(), torch.get_num_threads()
    try:
        with share.decoding():
            first = share.follow(iter(["step 1", "step 2"]))
            assert next(first) == "step 1" and torch.get_num_threads() == 2
            with share.decoding():
                assert torch.get_num_threads() == 1 and share.running == 2
            assert next(first) == "step 2" and torch.get_num_threads() == 2
            assert list(first) == []
        assert share.running == 0
        with pytest.raises(RuntimeError), share.decoding():
            raise RuntimeError("a decode that fails still leaves the count")
        assert share.running == 0
        monkeypatch.setenv("MAVIS_THREADS", "1")
        share.apply()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_loading_and_study_decodes_leave_no_thread_behind_that_ran_torch(monkeypatch, tmp_path):
    """torch's OpenMP keeps a worker pool for each thread that ran parallel work while it lives, and decodes on
    other threads then ran about 1.4x slower: the stack loads on a thread that ends with it (the main thread runs
    no torch work), and a study or arena trial decodes on a thread of its own, never on gradio's worker thread."""
    import mavis_core

    seen = []

    def fake_load(path):
        seen.append(("load", threading.current_thread()))
        return SimpleNamespace(objectives=["helpful"], methods=["base"], spec=SimpleNamespace(references=()),
                               context_length=64)

    monkeypatch.setattr(mavis_core, "load_stack", fake_load)
    monkeypatch.setattr(server, "Engine", lambda stack: ("engine", stack))
    assert app.load_engine(str(tmp_path / "stack.toml"))[0] == "engine"
    assert seen[0][1] is not threading.main_thread() and not seen[0][1].is_alive()

    def stream(prompt, methods, settings):
        seen.append(("decode", threading.current_thread()))
        reply = SimpleNamespace(method="base", text="hi", events=[1])
        yield [reply]

    ctx = Context(SimpleNamespace(stream=stream), study=None, admin=None)
    got = decode_trial(ctx, None, "p", ["base"], SimpleNamespace(max_new_tokens=4), lambda *a, **k: None, "study")
    assert got == {"base": "hi"}
    assert seen[1][1] is not threading.current_thread()


@pytest.mark.slow
def test_a_note_says_when_mod_and_rsoup_are_the_same_by_construction_and_the_seed_replays(client):
    one_hot = client.predict(*generate_args(methods=["mod", "rsoup"], weights=(0, 1, 0), seed=11), api_name="/generate")
    assert one_hot[2] and one_hot[2] == one_hot[3]  # MOD's and RSoup's texts: one policy, the same seed
    assert "MOD and RSoup are the same here by construction" in one_hot[-1] and "harmless" in one_hot[-1]
    mixed = client.predict(*generate_args(methods=["mod", "rsoup"]), api_name="/generate")
    assert mixed[-1] == ""


def test_the_replay_button_sets_the_seed_and_unticks_new_seeds():
    assert replay_seed(42) == (42, False)
    assert all(isinstance(v, type(gr.skip())) for v in replay_seed(None))


def test_stop_shows_each_stopped_column_s_tokens_in_the_per_token_view(tiny_dir, monkeypatch):
    """Stop mid-generation: the per-token view shows every running column's tokens, as many as its stats line
    says it stopped after (the decode may have run a step further), and says it stopped."""
    from apputil import app_engine

    from app import replies as replies_module
    from app.replies import GENERATING_NOTE, Replies

    monkeypatch.setattr(replies_module, "STREAM_INTERVAL_S", 0.0)  # every step goes out, as on a slow machine
    handlers = Replies(Context(app_engine(tiny_dir), study=None, admin=None))
    request = SimpleNamespace(session_hash="s", query_params={})
    args = generate_args(methods=["base", "mavis"], max_new_tokens=24)
    run = handlers.generate(request, *args[:10], [], *args[10:])  # the history goes before the weights
    first = next(run)
    assert GENERATING_NOTE in first[TOKENS] and first[-1] is None  # no tokens yet
    shown = [next(run) for _ in range(3)][-1]  # three steps in: what the page shows when Stop is pressed
    run.close()  # what gradio's cancel does
    while any(t.name == "mavis-generate" for t in threading.enumerate()):  # its thread ends at its next step
        time.sleep(0.05)
    stats, partial = shown[N:TOKENS], shown[-1]
    out = handlers.stopped(request, "", first[TOKENS], partial, *stats)
    view, lines = out[1], out[2:]
    assert view.startswith('<div class="tv-stopped"><b>Stopped</b>') and "Generating" not in view
    for m, text, line in zip(METHODS, shown[:N], lines, strict=True):
        cell = re.search(rf'<div class="tv-cell" data-method="{m}">(.*?)</div></div>', view)
        if m not in ("base", "mavis"):
            assert cell is None and line == "*not selected*"
            continue
        tokens = int(re.search(r"stopped after (\d+) tokens?", line)[1])
        assert 0 < tokens < 24 and f"stopped after {tokens} token" in cell[1]
        assert cell[1].count('class="tok"') == tokens and text  # the column kept its text
    # Stopped before any token came: the view says so instead.
    none = handlers.stopped(request, "", first[TOKENS], None, *first[N:TOKENS])[1]
    assert "Stopped before the first token" in none and "tv-cell" not in none
    # After a finished generation Stop leaves the view as it is.
    assert isinstance(handlers.stopped(request, "", "<div>done</div>", None, *stats)[1], type(gr.skip()))
