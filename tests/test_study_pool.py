"""`study build`: every cell decoded by the batched core, scored, stored, resumable; trials served from the pool
call no model. The demo study's pool is built on the tiny stack and reported from simulated answers (slow)."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest
import torch

from mavis_core import DecodeConfig, generate_reply
from mavis_core.cli import main
from mavis_core.study import BuildConfig, ShownTrial, StudySessions, build_pool, pool, read_study
from mavis_core.study.simulate import simulate

ROOT = Path(__file__).resolve().parents[1]
STUDY = """
title = "Tiny"
instructions = "Rate."
methods = ["base", "mavis", "mod"]
trials_per_participant = 2

[prompts]
items = ["hello there", "tell me a joke"]

[weights]
conditions = [{ helpful = 1, humor = 0 }, { helpful = 1, humor = 1 }]

[settings]
seeds = 2
max_new_tokens = 4
beta = 2.0

[task]
kinds = ["ratings", "favourite"]
"""


@pytest.fixture
def study(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(STUDY)
    return path


def stored(db: Path) -> dict[tuple, tuple]:
    with sqlite3.connect(db) as con:
        return {tuple(r[:4]): r[4:] for r in con.execute(
            "SELECT prompt, condition, method, seed, text, tokens, kl, rewards FROM study_replies")}


def test_every_cell_is_decoded_scored_and_stored_as_the_core_decodes_it(tiny_stack, study, tmp_path):
    db = tmp_path / "study.db"
    built = build_pool(BuildConfig(study, db, batch_rows=5, progress=False), tiny_stack)
    assert built.built and built.methods == ("base", "mavis", "mod") and built.beta == 2.0
    rows = stored(db)
    assert len(rows) == 2 * 2 * 3 * 2  # prompts x conditions x methods x seeds
    for (p, c, m, s), (text, tokens, kl, rewards) in rows.items():
        assert set(json.loads(rewards)) == {"helpful", "harmless", "humor"} and math.isfinite(kl) and tokens >= 1
        if m == "base":  # the base ignores λ: one reply under every condition
            assert text == rows[(p, 1 - c, m, s)][0]
    cfg = DecodeConfig(method="mavis", weights={"helpful": 0.5, "humor": 0.5}, beta=2.0, max_new_tokens=4, seed=1)
    assert rows[(1, 1, "mavis", 1)][0] == generate_reply(tiny_stack, "tell me a joke", cfg).text


def test_an_interrupted_build_resumes_where_it_stopped(tiny_stack, study, tmp_path, monkeypatch):
    db = tmp_path / "study.db"
    decode, calls = pool._decode, []

    def fail_second(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return decode(*args)

    monkeypatch.setattr(pool, "_decode", fail_second)
    with pytest.raises(KeyboardInterrupt):
        build_pool(BuildConfig(study, db, batch_rows=6, progress=False), tiny_stack)
    first = stored(db)
    assert 0 < len(first) < 24
    monkeypatch.setattr(pool, "_decode", decode)
    build_pool(BuildConfig(study, db, batch_rows=6, progress=False), tiny_stack)
    after = stored(db)
    assert len(after) == 24 and all(after[k] == v for k, v in first.items())


def test_a_pool_served_trial_makes_no_model_call(tiny_stack, study, tmp_path, monkeypatch):
    db = tmp_path / "study.db"
    build_pool(BuildConfig(study, db, progress=False), tiny_stack)

    def no_model(*args, **kwargs):
        raise AssertionError("a model was called")

    monkeypatch.setattr(torch.nn.Module, "__call__", no_model)
    monkeypatch.setattr(tiny_stack, "score", no_model)
    build_pool(BuildConfig(study, db, progress=False), tiny_stack)  # everything stored: nothing to decode
    sessions = StudySessions(study, db)
    shown = sessions.start("p1")
    while isinstance(shown, ShownTrial):
        assert len(shown.texts) == 3 and all(isinstance(t, str) for t in shown.texts)
        answer = {"ratings": {s: {o: 2 for o in shown.objectives} for s in shown.slots}, "favourite": "C"}
        shown = sessions.submit("p1", shown.position, answer)
    assert shown.progress == "2 of 2"


def test_a_changed_study_is_refused_on_the_same_database(tiny_stack, study, tmp_path):
    db = tmp_path / "study.db"
    build_pool(BuildConfig(study, db, progress=False), tiny_stack)
    study.write_text(STUDY.replace("beta = 2.0", "beta = 3.0"))
    with pytest.raises(ValueError, match="other prompts, conditions, methods, settings or stack"):
        build_pool(BuildConfig(study, db, progress=False), tiny_stack)


@pytest.mark.parametrize("old, new, message", [
    ('methods = ["base", "mavis", "mod"]', 'methods = ["base", "morlhf"]', "methods"),
    ("{ helpful = 1, humor = 0 }", "{ helpful = 1, wit = 1 }", "wit"),
])
def test_what_the_stack_lacks_is_named(tiny_stack, study, tmp_path, old, new, message):
    study.write_text(STUDY.replace(old, new))
    with pytest.raises(ValueError, match=message):
        build_pool(BuildConfig(study, tmp_path / "study.db", progress=False), tiny_stack)


def test_a_named_set_resolves_against_the_stack(tiny_stack, tiny_dir, study):
    study.write_text(STUDY.replace('items = ["hello there", "tell me a joke"]', 'set = "heldout"\ncount = 5'))
    laid = pool.layout(read_study(study), tiny_stack, tiny_dir / "stack-sep.toml")
    assert [p.text for p in laid.prompts] == ["hello there", "tell me a joke"]  # the stack's own, untagged
    study.write_text(STUDY.replace('items = ["hello there", "tell me a joke"]', 'set = "heldout"\ncount = 1'))
    with pytest.raises(ValueError, match="trials_per_participant: got 2; allowed: at most its 1 prompts"):
        pool.layout(read_study(study), tiny_stack, tiny_dir / "stack-sep.toml")


@pytest.mark.slow
def test_the_demo_study_builds_on_the_tiny_stack_and_reports_simulated_answers(tmp_path, capsys):
    db, out = tmp_path / "study.db", tmp_path / "report"
    demo = ROOT / "studies" / "demo.toml"
    assert main(["study", "build", str(demo), "--study-db", str(db), "--stack",
                 str(ROOT / "assets" / "tiny" / "stack.toml")]) == 0
    assert "pool built" in capsys.readouterr().out
    sessions = StudySessions(demo, db)
    assert {"base", "mavis", "mod", "rsoup"} <= set(sessions.pool.methods)
    simulate(sessions, 8)
    assert main(["study", "report", str(demo), "--study-db", str(db), "--out", str(out)]) == 0
    page = (out / "report.md").read_text()
    assert page.startswith("# Study report") and "(SIMULATED)" in page and "SIMULATED DATA" in page
    assert "SIMULATED DATA" in (out / "report.html").read_text()
    assert (out / "ratings.csv").read_text().splitlines()[1].endswith("True")  # the simulated column
