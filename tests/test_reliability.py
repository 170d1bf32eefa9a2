"""Reliability: the study database under concurrent and killed writers, bad input through the app's API,
broken stack files at start-up, and stacks that would run custom model code.

Each test checks what a user (or an operator) sees: every rating whose submit returned is kept, every bad
request gets a plain message naming the problem, and a refused stack says why in one line.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from apputil import RATINGS

from mavis_core.study import StudyDB

ROOT = Path(__file__).resolve().parents[1]


def first_stats(out: list) -> str:
    """The first column's stats in /generate's outputs (after every column's text)."""
    from apputil import N  # imported late: apputil starts gradio

    return out[N]

REPLIES = {"base": "one", "mavis": "two", "mod": "three"}
WEIGHTS = {"helpful": 0.5, "harmless": 0.5}
# A writer process: submits trial + ratings in a loop and prints each trial id only after add_ratings returned,
# so every id on its stdout is a submit the "user" was told succeeded.
WRITER = """
import sys
from mavis_core.study import StudyDB
db = StudyDB(sys.argv[1])
for i in range(int(sys.argv[2])):
    trial = db.add_trial(sys.argv[3], "p", {"helpful": 0.5, "harmless": 0.5}, i, {},
                         {"base": "one", "mavis": "two", "mod": "three"})
    db.add_ratings(trial.id, {s: {"helpful": 3, "harmless": 4} for s in trial.slots}, favourite="A")
    print(trial.id, flush=True)
"""


def _submit(db: StudyDB, who: str, seed: int) -> str:
    """One participant's whole submit (trial shown, then rated); returns the trial id once it returned."""
    trial = db.add_trial(who, "p", WEIGHTS, seed, {}, REPLIES)
    db.add_ratings(trial.id, {s: {"helpful": 3, "harmless": 4} for s in trial.slots}, favourite="A")
    return trial.id


def _writer(path: Path, count: int, who: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(count), who], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _assert_complete(path: Path, trial_ids: list[str]) -> None:
    """Every returned submit has all its ratings and its favourite, and SQLite finds the file sound."""
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ratings = dict(db.execute("SELECT trial_id, COUNT(*) FROM ratings GROUP BY trial_id").fetchall())
        favourites = {row[0] for row in db.execute("SELECT trial_id FROM favourites")}
    per_trial = len(REPLIES) * len(WEIGHTS)
    missing = [t for t in trial_ids if ratings.get(t) != per_trial or t not in favourites]
    assert not missing, f"{len(missing)} of {len(trial_ids)} returned submits are not (fully) stored"
    assert all(n == per_trial for n in ratings.values())  # no half-written submit either
    assert favourites == set(ratings)  # ratings and favourite land together or not at all


def test_many_concurrent_writers_threads_and_processes(tmp_path):
    path = tmp_path / "study.db"
    shared = StudyDB(path)
    procs = [_writer(path, 8, f"proc{i}") for i in range(3)]
    done: list[str] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        # Half the threads share one StudyDB (its lock), half open their own (only SQLite's locking).
        db = shared if i % 2 else StudyDB(path)
        try:
            done.extend(_submit(db, f"thread{i}", j) for j in range(6))
        except BaseException as err:  # noqa: BLE001 - reported by the assert below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        done += out.split()
    assert not errors, errors
    assert len(done) == 8 * 6 + 3 * 8 and len(set(done)) == len(done)
    _assert_complete(path, done)


def test_writer_killed_mid_submit_loses_no_returned_rating(tmp_path):
    path = tmp_path / "study.db"
    StudyDB(path)
    returned: list[str] = []
    for round_ in range(3):  # several kills at different points of the loop
        proc = _writer(path, 10_000, f"killed{round_}")
        for _ in range(5 + 7 * round_):
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            returned.append(line.strip())
        os.kill(proc.pid, signal.SIGKILL)  # it is mid-way through its next submit, or between two
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        returned += proc.stdout.read().split()  # ids printed between our last read and the kill
    _assert_complete(path, returned)
    db = StudyDB(path)  # the file opens again and takes new ratings after the crash
    _assert_complete(path, [*returned, _submit(db, "after", 0)])


def test_racing_double_submit_from_two_databases_says_already_rated(tmp_path):
    """Two StudyDB objects on one file (as two app processes): one submit of a trial wins, the other gets the
    plain "already rated" message; before BEGIN IMMEDIATE it could get a raw sqlite3.IntegrityError."""
    path = tmp_path / "study.db"
    dbs = [StudyDB(path), StudyDB(path)]
    for seed in range(15):
        trial = dbs[0].add_trial("p", "x", WEIGHTS, seed, {}, REPLIES)
        outcomes: list[str] = []

        def rate(db: StudyDB, trial=trial, outcomes=outcomes) -> None:
            try:
                db.add_ratings(trial.id, {s: {"helpful": 3, "harmless": 4} for s in trial.slots}, favourite="A")
                outcomes.append("saved")
            except Exception as err:  # noqa: BLE001 - its type and text are what is checked
                outcomes.append(f"{type(err).__name__}: {err}")

        threads = [threading.Thread(target=rate, args=(db,)) for db in dbs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert sorted(outcomes)[1] == "saved" and "ValueError: This trial was already rated" in sorted(outcomes)[0]


def test_participant_id_that_is_not_text_is_refused_plainly(tmp_path):
    with pytest.raises(ValueError, match="participant id is not valid text"):
        StudyDB(tmp_path / "study.db").add_trial("p\udcff", "x", WEIGHTS, 0, {}, REPLIES)


# ---------------------------------------------------------------------------------------------- the app's API

AXES = ("helpful", "humor", "none (2-D)")
GOOD = {"prompt": "hello there", "beta": 1.0, "top_k": 8, "temperature": 1.0, "max_new_tokens": 4, "seed": 1,
        "methods": ["base"], "weights": (0.5, 0.2, 0.3)}
NAN = float("nan")
BAD_INPUTS = [  # (change to a valid request, words the error must contain)
    ({"prompt": ""}, "prompt is empty"),
    ({"prompt": "   \n "}, "prompt is empty"),
    ({"prompt": "a\x00b"}, "control characters (U+0000)"),
    ({"prompt": "bin\x01\x02\x7f\x1b[31m"}, "control characters"),
    ({"prompt": "tell me a joke " * 35_000, "methods": ["nope"]}, "not in the list of choices"),  # ~0.5 MB
    ({"prompt": None}, "prompt is empty"),
    ({"weights": (-0.5, 0.5, 0.5)}, "less than minimum"),
    ({"weights": (0, 0, 0)}, "weights are zero"),
    ({"methods": ["mavis2"]}, "not in the list of choices"),
    ({"methods": []}, "No method selected"),
    ({"top_k": 0}, "less than minimum"),
    ({"top_k": 10_000}, "greater than maximum"),
    ({"top_k": 2.5}, "top-k must be a whole number"),
    ({"temperature": 0}, "less than minimum"),
    ({"temperature": -1}, "less than minimum"),
    ({"beta": -1}, "less than minimum"),
    ({"max_new_tokens": 0}, "less than minimum"),
    ({"max_new_tokens": 10**9}, "greater than maximum"),
    ({"seed": -1}, "less than minimum"),
    ({"seed": "abc"}, "seed must be a number between 0 and 2147483647, got 'abc'"),  # gradio's preprocess never sees it
    ({"beta": "1"}, "beta ('β (MAVIS tilt strength)') must be a number between 0 and 10, got '1'"),
    ({"methods": None}, "methods must be a list of choices"),
    ({"weights": (None, 0.5, 0.5)}, "'weight: helpful' must be a number between 0 and 1, got None"),
    ({"top_k": [8]}, "top_k ('top-k') must be a number between 1 and 100, got [8]"),
    ({"prompt": 5}, "prompt must be text, got int"),
]
# NaN, infinity and lone surrogates are not valid JSON text: gradio_client refuses to send them, but a
# hand-written client can (Python's json reads NaN and "\udcff"), so these go over raw HTTP to the same endpoint.
RAW_ONLY = [
    # Half a character: the tokenizer raised a TypeError, shown as a generic failure, before clean_prompt caught it.
    ({"prompt": "half a character \udcff"}, "not valid text"),
    ({"weights": (NAN, 0.5, 0.5)}, "'weight: helpful' must be a number between 0 and 1, got nan"),
    ({"beta": NAN}, "beta ('β (MAVIS tilt strength)') must be a number"),
    ({"temperature": NAN}, "temperature must be a number between 0.1 and 2"),
    ({"seed": NAN}, "seed must be a number between 0 and 2147483647, got nan"),
    ({"top_k": float("inf")}, "top_k ('top-k') must be a number between 1 and 100, got inf"),
    ({"max_new_tokens": -float("inf")}, "max_new_tokens must be a number between 1 and 32, got -inf"),
]


def _args(change: dict) -> tuple:
    s = {**GOOD, **change}
    return (s["prompt"], s["beta"], s["top_k"], s["temperature"], s["max_new_tokens"], s["seed"], s["methods"],
            *AXES, *s["weights"])


@pytest.fixture(scope="module")
def served(tiny_dir, tmp_path_factory):
    """(demo, url) of the app on the tiny stack, in this process."""
    from apputil import app_engine, launch

    demo, url = launch(app_engine(tiny_dir), tmp_path_factory.mktemp("study") / "study.db")
    yield demo, url
    demo.close()


@pytest.fixture(scope="module")
def client(served):
    from gradio_client import Client

    return Client(served[1], verbose=False, analytics_enabled=False)


def _raw_generate(demo, url: str, values: tuple) -> str:
    """POST ``values`` (gradio_client's order) to /generate as hand-written JSON; the text of the event stream.

    The raw API wants every input of the event, gr.State included (null), and trailing optional ones filled.
    """
    import gradio as gr
    import httpx

    fn = next(f for f in demo.fns.values() if f.api_name == "generate")
    it = iter(values)
    data = [None if isinstance(c, gr.State) else next(it, c.value) for c in fn.inputs]
    posted = httpx.post(f"{url}gradio_api/call/generate", content=json.dumps({"data": data}),
                        headers={"Content-Type": "application/json"}, timeout=30)
    event_id = posted.json()["event_id"]
    return httpx.get(f"{url}gradio_api/call/generate/{event_id}", timeout=120).text


def _plain(message: str, words: str) -> None:
    """A message a person can act on: it names the problem, and is no stack trace or generic failure."""
    assert words.lower() in message.lower(), message
    assert "Traceback" not in message and 'File "' not in message and "verbose error" not in message
    assert len(message) < 300, message


@pytest.mark.slow
@pytest.mark.parametrize("change, words", BAD_INPUTS, ids=[str(i) for i in range(len(BAD_INPUTS))])
def test_bad_generate_input_gets_a_clear_error_then_the_app_serves(client, change, words):
    with pytest.raises(Exception) as err:  # noqa: PT011 - gradio_client's AppError; the text is what matters
        client.predict(*_args(change), api_name="/generate")
    _plain(str(err.value), words)
    assert "KL" in first_stats(client.predict(*_args({}), api_name="/generate"))


@pytest.mark.slow
@pytest.mark.parametrize("change, words", RAW_ONLY, ids=[str(i) for i in range(len(RAW_ONLY))])
def test_non_json_values_over_raw_http_get_a_clear_error(served, client, change, words):
    stream = _raw_generate(*served, _args(change))
    errors = [json.loads(line[len("data: "):]) for line in stream.splitlines()
              if line.startswith("data: ") and '"error"' in line]
    assert "event: error" in stream and errors, stream[-500:]
    _plain(errors[-1]["error"] or "", words)
    assert "KL" in first_stats(client.predict(*_args({}), api_name="/generate"))


def test_unpaired_surrogate_is_refused_plainly():
    from mavis_core.engine import clean_prompt

    with pytest.raises(ValueError, match="not valid text"):
        clean_prompt("ok \ud83d then")  # the first half of an emoji, alone
    assert clean_prompt("ok \U0001F600 fine")[0] == "ok \U0001F600 fine"  # whole emoji are fine


@pytest.mark.slow
def test_huge_prompt_is_cut_with_a_warning_not_a_failure(client):
    out = client.predict(*_args({"prompt": "tell me a joke " * 35_000}), api_name="/generate")  # ~0.5 MB
    assert "KL" in first_stats(out)  # (a body over MAX_REQUEST_BYTES is refused: tests/test_hardening.py)


@pytest.mark.slow
@pytest.mark.parametrize("endpoint, args, words", [
    ("/redraw", ("helpful", "fun", "none (2-D)"), "not in the list of choices"),
    ("/study_submit", ("A", *[3] * RATINGS), "New trial"),
    ("/study_results", ("",), "admin token"),
    ("/sweep", ("hello", 1.0, 8, 1.0, 4, 0, ["base"], "chart axes (11 λ points)", "helpful", "helpful", AXES[2]),
     "two different objectives"),
    ("/sweep", ("", 1.0, 8, 1.0, 4, 0, ["base"], "chart axes (11 λ points)", *AXES), "prompt is empty"),
    ("/sweep", ("hello", 1.0, 0, 1.0, 4, 0, ["base"], "chart axes (11 λ points)", *AXES), "less than minimum"),
    ("/study_new", ("p", "a\x00b"), "control characters"),
])
def test_bad_input_to_other_endpoints(client, endpoint, args, words):
    with pytest.raises(Exception) as err:  # noqa: PT011 - as above
        client.predict(*args, api_name=endpoint)
    _plain(str(err.value), words)
    assert "KL" in first_stats(client.predict(*_args({}), api_name="/generate"))


# ------------------------------------------------------------------------------------------- stack files

def _run_app(stack: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "MAVIS_STACK": ""}
    return subprocess.run([sys.executable, "app.py", "--stack", str(stack), "--port", "0"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)


def _assert_one_line_exit(done: subprocess.CompletedProcess, words: str) -> None:
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], done.stderr
    assert "Traceback" not in done.stderr


# Starting `python app.py` costs about 14 s of imports, so the bad start-ups below share one process: each runs
# the app's main() as `python app.py --stack S` would, and reports what it raised and what else it wrote. One
# start-up (the custom-code stack, further down) still runs as its own `python app.py`.
STARTUPS = """
import contextlib, io, json, sys
import app
for stack in sys.argv[1:]:
    other = io.StringIO()
    try:
        with contextlib.redirect_stderr(other), contextlib.redirect_stdout(other):
            app.main(["--stack", stack, "--port", "0"])
        code = None
    except SystemExit as err:
        code = err.code
    print(json.dumps({"stack": stack, "code": code, "other": other.getvalue()}), flush=True)
"""


def _bad_stack(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.toml"
    content = {"malformed": "[base\nmodel = ", "binary": "\x00\xff",
               "no-objectives": '[base]\nmodel = "/nonexistent-model-dir"\n'}
    if kind != "missing":
        path.write_bytes(content[kind].encode("latin-1"))
    return path


def _broken_model_stack(tmp_path: Path, tiny_dir: Path, kind: str) -> Path:
    """A copy of the tiny stack whose base model folder is damaged: bad config.json, bad weights, or empty."""
    import shutil

    root = tmp_path / f"stack-{kind}"
    shutil.copytree(tiny_dir, root)
    base = root / "base"
    if kind == "config":
        (base / "config.json").write_text("{")
    elif kind == "weights":
        (base / "model.safetensors").write_bytes(b"\x00" * 100)
    else:
        shutil.rmtree(base)
        base.mkdir()
    return root / "stack-sep.toml"


BAD_STACKS = [("missing", "stack file not found"), ("malformed", "not valid TOML"), ("binary", "not valid TOML"),
              ("no-objectives", "names no objectives")]
BROKEN_MODELS = [
    ("config", "config.json' is not a valid JSON file"),
    # safetensors does not name the file; stack loading adds which model folder it was.
    ("weights", "/base: Error while deserializing header"),
    ("empty", "Unrecognized model in"),
]


@pytest.fixture(scope="module")
def startups(tiny_dir, tmp_path_factory) -> dict[str, dict]:
    """Every bad start-up of this section, run in one app process: kind -> {code, other}."""
    root = tmp_path_factory.mktemp("startups")
    stacks = {kind: _bad_stack(root, kind) for kind, _ in BAD_STACKS}
    stacks |= {kind: _broken_model_stack(root, tiny_dir, kind) for kind, _ in BROKEN_MODELS}
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "MAVIS_STACK": ""}
    done = subprocess.run([sys.executable, "-c", STARTUPS, *map(str, stacks.values())], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    reports = {r["stack"]: r for r in map(json.loads, done.stdout.splitlines())}
    return {kind: reports[str(path)] for kind, path in stacks.items()}


def _assert_one_line_error(report: dict, words: str) -> None:
    """What `python app.py` would show: it exits with one "error: ..." line and writes nothing else."""
    code = report["code"]
    assert isinstance(code, str), f"main() did not exit with a message: {report}"
    assert len(code.strip().splitlines()) == 1 and code.startswith("error:") and words in code, code
    assert not report["other"].strip(), report["other"]


@pytest.mark.slow
@pytest.mark.parametrize("kind, words", BAD_STACKS)
def test_app_with_a_bad_stack_file_exits_with_one_line(startups, kind, words):
    _assert_one_line_error(startups[kind], words)


@pytest.mark.slow
@pytest.mark.parametrize("kind, words", BROKEN_MODELS)
def test_app_with_a_broken_model_folder_exits_with_one_line(startups, kind, words):
    _assert_one_line_error(startups[kind], words)


def _custom_code_model(folder: Path, marker: Path) -> Path:
    """A model (and tokenizer) folder whose config asks for its own code (auto_map); importing that code writes
    ``marker``."""
    folder.mkdir(parents=True)
    config = {"model_type": "evil_gpt", "vocab_size": 320,
              "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel",
                           "AutoModelForSequenceClassification": "evil.EvilModel",
                           "AutoTokenizer": ["evil.EvilTokenizer", None]}}
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer = {"tokenizer_class": "EvilTokenizer", "auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", None]}}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    (folder / "evil.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('code ran')\n"
                                    "from transformers import PretrainedConfig\n"
                                    "class EvilConfig(PretrainedConfig):\n    model_type = 'evil_gpt'\n")
    return folder


def _custom_code_stack(tmp_path: Path, tiny_dir: Path, role: str) -> tuple[Path, Path]:
    """The tiny stack with its base model, tokenizer, or one value or reward model replaced by a custom-code
    folder."""
    marker = tmp_path / "MARKER"
    evil = _custom_code_model(tmp_path / "evil", marker)
    text = (tiny_dir / "stack-sep.toml").read_text().replace('"rewards/', f'"{tiny_dir}/rewards/')
    text = text.replace('"tokenizer"', f'"{tiny_dir}/tokenizer"').replace('"policies/', f'"{tiny_dir}/policies/')
    text = text.replace('"values/', f'"{tiny_dir}/values/')
    text = text.replace('model = "base"', f'model = "{evil if role == "base" else tiny_dir / "base"}"')
    if role in ("value", "reward"):
        text = text.replace(f'"{tiny_dir}/{role}s/helpful"', f'"{evil}"')
    if role == "tokenizer":
        text = text.replace(f'"{tiny_dir}/tokenizer"', f'"{evil}"')
    path = tmp_path / "custom.toml"
    path.write_text(text)
    return path, marker


@pytest.mark.parametrize("role", ["base", "tokenizer", "value", "reward"])
def test_custom_code_model_is_refused_and_not_run(tmp_path, tiny_dir, role):
    import torch

    from mavis_core import load_stack

    path, marker = _custom_code_stack(tmp_path, tiny_dir, role)
    with pytest.raises(ValueError, match=r"contains custom code") as err:
        load_stack(path, device=torch.device("cpu"))
    assert str(tmp_path / "evil") in str(err.value)  # names the folder to inspect
    assert not marker.exists(), "the model's own code was executed"


@pytest.mark.slow
def test_app_refuses_custom_code_stack_in_one_line(tmp_path, tiny_dir):
    path, marker = _custom_code_stack(tmp_path, tiny_dir, "base")
    _assert_one_line_exit(_run_app(path), "contains custom code")
    assert not marker.exists()
