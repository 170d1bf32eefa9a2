"""Balanced assignment and participant sessions on a pool of made-up replies (no model anywhere): balance within
±1, no prompt twice, resume after a reload, no restart after completion, one answer per trial even from two
tabs at once, pid and answer checks, and no acknowledged answer lost when the writer is killed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from mavis_core.study import Completion, ShownTrial, StudySessions, read_study
from mavis_core.study.assign import count, plan
from mavis_core.study.simulate import fake_pool, simulate
from mavis_core.testing import STACK_METHODS

ROOT = Path(__file__).resolve().parents[1]
METHODS = STACK_METHODS
STUDY = """
title = "T"
instructions = "Rate."
trials_per_participant = 5
completion_code = "DONE-42"
methods = ["base", "mavis", "mod", "rsoup"]

[prompts]
items = ["p0", "p1", "p2", "p3", "p4", "p5", "p6"]

[weights]
conditions = [{ helpful = 1, harmless = 0 }, { helpful = 2, harmless = 1 }, { helpful = 1, harmless = 2 }]

[settings]
seeds = 2

[task]
kinds = KINDS

[[attention_checks]]
position = 3
prompt = "Which reply names a colour?"
replies = ["blue", "seven", "a chair"]
answer = 1
"""


def make_study(tmp_path: Path, kinds: str = '["ratings", "favourite"]', checks: bool = True) -> tuple[Path, Path]:
    """A study file and its database with a made-up pool."""
    text = STUDY.replace("KINDS", kinds)
    if not checks:
        text = text[: text.index("[[attention_checks]]")]
    if kinds == '["pairwise"]':
        text = text.replace('replies = ["blue", "seven", "a chair"]', 'replies = ["blue", "seven"]')
    path = tmp_path / "t.toml"
    path.write_text(text)
    db = tmp_path / "study.db"
    fake_pool(read_study(path), db, METHODS)
    return path, db


def answer(trial: ShownTrial, favourite: str = "A", rating: int = 3) -> dict:
    out = {}
    if "ratings" in trial.asks:
        out["ratings"] = {s: {o: rating for o in trial.objectives} for s in trial.slots}
    if "favourite" in trial.asks:
        out["favourite"] = favourite
    if "vote" in trial.asks:
        out["vote"] = "A"
    return out


@pytest.mark.parametrize("trials, kinds", [(5, ("ratings",)), (4, ("ratings", "pairwise")), (7, ("pairwise",))])
def test_conditions_stay_within_one_over_and_inside_participants(tmp_path, trials, kinds):
    spec = read_study(make_study(tmp_path, checks=False)[0])
    spec = type(spec)(**{**spec.__dict__, "trials_per_participant": trials,
                         "task": type(spec.task)(kinds, spec.task.objectives)})
    handed, seen = [], Counter()
    for i in range(23):
        mine = plan(spec, f"p{i}", len(spec.prompts), METHODS, seen)
        handed += mine
        overall = Counter(a.condition for a in handed)
        assert max(overall.values()) - min(overall.values()) <= 1
        inside = Counter(a.condition for a in mine)
        assert max(inside.values()) - min(inside[c] for c in range(3)) <= 1
        assert len({a.prompt for a in mine}) == trials  # never the same prompt twice
        for a in mine:
            assert len(a.methods) == (2 if a.kind == "pair" else 4) and len(set(a.methods)) == len(a.methods)
    assert count(handed, METHODS) == seen  # the stored assignments give back the counts plan balanced
    assert len({a.methods for a in handed}) > 5  # slots are shuffled per trial
    for c in range(3):  # and a pairwise trial's pair is the least seen at its condition
        pairs = Counter(frozenset(a.methods) for a in handed if a.kind == "pair" and a.condition == c)
        if pairs:
            assert len(pairs) == 6 or sum(pairs.values()) < 6
            assert max(pairs.values()) - min(pairs.values()) <= 1


def test_a_plan_is_a_function_of_the_pid_and_what_came_before(tmp_path):
    spec = read_study(make_study(tmp_path)[0])
    first = plan(spec, "same", 7, METHODS, Counter())
    assert first == plan(spec, "same", 7, METHODS, Counter())
    assert first != plan(spec, "other", 7, METHODS, Counter())
    assert [a.check for a in first] == [-1, -1, 0, -1, -1, -1]  # the attention check at its position


def test_resume_after_reload_and_no_restart_after_completion(tmp_path):
    path, db = make_study(tmp_path)
    sessions = StudySessions(path, db)
    first = sessions.start("abc")
    assert isinstance(first, ShownTrial) and first.progress == "1 of 6" and first.slots == list("ABCD")
    second = sessions.submit("abc", 1, answer(first))
    assert second.progress == "2 of 6"
    again = StudySessions(path, db).start("abc")  # a reload: a new page, a new object
    assert (again.position, again.prompt, again.texts) == (2, second.prompt, second.texts)
    prompts = {first.prompt}
    shown = again
    while isinstance(shown, ShownTrial):
        prompts.add(shown.prompt)
        shown = sessions.submit("abc", shown.position, answer(shown))
    assert isinstance(shown, Completion) and shown.code == "DONE-42" and shown.progress == "6 of 6"
    assert len(prompts) == 6  # 5 pool prompts, never one twice, and the check's
    assert isinstance(sessions.start("abc"), Completion)  # returning after the end: the code again, no new trials
    with pytest.raises(ValueError, match="already answered"):
        sessions.submit("abc", 6, answer(first))


def test_the_attention_check_is_scored(tmp_path):
    path, db = make_study(tmp_path)
    sessions = StudySessions(path, db)
    for pid, right in (("good", True), ("bad", False)):
        shown = sessions.start(pid)
        while isinstance(shown, ShownTrial):
            favourite = "A"
            if shown.position == 3:
                blue = shown.slots[shown.texts.index("blue")]
                favourite = blue if right else next(s for s in shown.slots if s != blue)
            shown = sessions.submit(pid, shown.position, answer(shown, favourite))
    with sqlite3.connect(db) as con:
        passed = dict(con.execute("SELECT pid, passed FROM study_answers WHERE passed IS NOT NULL"))
    assert passed == {"good": 1, "bad": 0}


@pytest.mark.parametrize("pid", ["", "a" * 65, "a b", "ü", "a/b", "x\x00", None, 7, "<script>"])
def test_a_bad_pid_gets_a_plain_message(tmp_path, pid):
    path, db = make_study(tmp_path)
    with pytest.raises(ValueError, match="participant id: got .*allowed: 1 to 64 letters"):
        StudySessions(path, db).start(pid)


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("favourite"), "exactly"),
    (lambda a: a.update(extra=1), "exactly"),
    (lambda a: a.update(favourite="Z"), "favourite: got 'Z'"),
    (lambda a: a["ratings"].pop("B"), "every reply"),
    (lambda a: a["ratings"]["A"].update(helpful=6), "from 1 to 5"),
    (lambda a: a["ratings"]["A"].update(helpful=True), "from 1 to 5"),
    (lambda a: a["ratings"]["A"].update(helpful="4"), "from 1 to 5"),
    (lambda a: a["ratings"]["A"].pop("harmless"), "every objective"),
])
def test_a_bad_answer_is_refused_and_nothing_stored(tmp_path, change, message):
    path, db = make_study(tmp_path)
    sessions = StudySessions(path, db)
    trial = sessions.start("p1")
    bad = answer(trial)
    change(bad)
    with pytest.raises(ValueError, match=message):
        sessions.submit("p1", 1, bad)
    with pytest.raises(ValueError, match="allowed: your current trial, 1"):
        sessions.submit("p1", 2, answer(trial))
    with pytest.raises(ValueError, match="allowed: a trial number"):
        sessions.submit("p1", "1", answer(trial))
    with pytest.raises(ValueError, match="has not started"):
        sessions.submit("nobody", 1, answer(trial))
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM study_answers").fetchone()[0] == 0
    assert sessions.start("p1").position == 1


def test_two_tabs_with_one_pid_cannot_both_finish(tmp_path):
    path, db = make_study(tmp_path)
    tabs = [StudySessions(path, db), StudySessions(path, db)]
    outcomes: list[list[str]] = [[], []]

    def work(i: int) -> None:
        shown = tabs[i].start("twin")
        while isinstance(shown, ShownTrial):
            try:
                shown = tabs[i].submit("twin", shown.position, answer(shown))
                outcomes[i].append("saved" if isinstance(shown, ShownTrial) else "finished")
            except ValueError as err:
                assert "already answered" in str(err)
                outcomes[i].append("refused")
                shown = tabs[i].start("twin")  # a reload shows the trial the other tab left

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sum(o.count("finished") for o in outcomes) == 1
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM study_answers").fetchone()[0] == 6
        assert con.execute("SELECT COUNT(*) FROM study_participants WHERE finished IS NOT NULL").fetchone()[0] == 1


# A participant process: prints "pid position" only after submit returned, i.e. once the answer was acknowledged.
WRITER = """
import sys
from mavis_core.study import ShownTrial, StudySessions
sessions = StudySessions(sys.argv[1], sys.argv[2])
for i in range(10_000):
    pid = f"{sys.argv[3]}-{i}"
    shown = sessions.start(pid)
    while isinstance(shown, ShownTrial):
        answer = {"ratings": {s: {o: 4 for o in shown.objectives} for s in shown.slots}, "favourite": "B"}
        position = shown.position
        shown = sessions.submit(pid, position, answer)
        print(pid, position, flush=True)
"""


def test_a_killed_writer_loses_no_acknowledged_answer(tmp_path):
    path, db = make_study(tmp_path)
    acknowledged: list[tuple[str, int]] = []
    for round_ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(db), f"k{round_}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        for _ in range(4 + 5 * round_):
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            pid, position = line.split()
            acknowledged.append((pid, int(position)))
        os.kill(proc.pid, signal.SIGKILL)  # mid-way through a submit, or between two
        proc.wait(timeout=30)
        acknowledged += [(p, int(n)) for p, n in (line.split() for line in proc.stdout.read().splitlines())]
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = set(con.execute("SELECT pid, position FROM study_answers"))
    assert set(acknowledged) <= stored
    assert isinstance(StudySessions(path, db).start("k0-0"), ShownTrial | Completion)  # the file works after


def test_a_study_without_a_pool_says_how_to_build_it(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(STUDY.replace("KINDS", '["ratings"]'))
    with pytest.raises(ValueError, match="study build"):
        StudySessions(path, tmp_path / "empty.db")


def test_a_study_file_changed_after_its_build_is_refused(tmp_path):
    path, db = make_study(tmp_path)
    path.write_text(path.read_text().replace('"p6"]', '"p6", "p7"]'))
    with pytest.raises(ValueError, match="changed its prompts or conditions"):
        StudySessions(path, db)


def test_simulated_participants_finish_a_pairwise_study(tmp_path):
    path, db = make_study(tmp_path, '["pairwise"]')
    sessions = StudySessions(path, db)
    pids = simulate(sessions, 4)
    assert all(isinstance(sessions.start(p), Completion) for p in pids)
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM study_answers").fetchone()[0] == 4 * 6
        assert con.execute("SELECT SUM(simulated) FROM study_participants").fetchone()[0] == 4
