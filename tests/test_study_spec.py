"""Study files: the demo study reads, and every bad field is named with what it got and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from mavis_core.study import StudyError, read_study, study_path

ROOT = Path(__file__).resolve().parents[1]
GOOD = """
title = "T"
instructions = "Rate the replies."
methods = ["base", "mavis"]
trials_per_participant = 2
completion_code = "DONE-1"

[prompts]
items = ["one", { text = "two", kind = "harmful" }, "three"]

[weights]
conditions = [{ helpful = 1, harmless = 0 }, { helpful = 1, harmless = 1 }]

[settings]
seeds = 2
max_new_tokens = 8

[task]
kinds = ["ratings", "favourite"]
"""


def write(tmp_path: Path, text: str, name: str = "s") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_the_demo_study_reads():
    spec = read_study(ROOT / "studies" / "demo.toml")
    assert spec.name == "demo" and spec.objectives == ["helpful", "harmless"]
    assert len(spec.conditions) == 4 and spec.methods is None  # "all": every method the stack decodes
    assert spec.total_trials == spec.trials_per_participant + 1 == 10
    assert {p.kind for p in spec.prompts} == {"harmful", "benign"}
    assert spec.participant_param == "PROLIFIC_PID" and spec.completion_code


def test_a_good_file_is_read_with_its_defaults(tmp_path):
    spec = read_study(write(tmp_path, GOOD))
    assert spec.conditions == ({"helpful": 1.0, "harmless": 0.0}, {"helpful": 0.5, "harmless": 0.5})
    assert spec.task.objectives == ("helpful", "harmless") and len(spec.task.scale) == 5
    assert [p.kind for p in spec.prompts] == ["untagged", "harmful", "untagged"]
    assert spec.settings.seeds == 2 and spec.settings.beta is None and spec.participant_param == "pid"
    assert spec.serve == "pool"  # replies decoded before the study starts unless the file asks for live decoding
    assert read_study(write(tmp_path, 'serve = "live"\n' + GOOD)).serve == "live"


def test_a_simplex_grid_and_a_prompt_file(tmp_path):
    (tmp_path / "p.txt").write_text("a\nb\n\nc\n")
    text = GOOD.replace('items = ["one", { text = "two", kind = "harmful" }, "three"]', 'file = "p.txt"')
    text = text.replace("conditions = [{ helpful = 1, harmless = 0 }, { helpful = 1, harmless = 1 }]",
                        'objectives = ["helpful", "harmless", "humor"]\ngrid_step = 0.5')
    spec = read_study(write(tmp_path, text))
    assert [p.text for p in spec.prompts] == ["a", "b", "c"]
    assert len(spec.conditions) == 6 and {"helpful": 0.5, "harmless": 0.0, "humor": 0.5} in spec.conditions


@pytest.mark.parametrize("old, new, field", [
    ('title = "T"', "", "title"),
    ('title = "T"', 'title = "T"\ncolour = "red"', "colour"),
    ("trials_per_participant = 2", "trials_per_participant = 0", "trials_per_participant"),
    ("trials_per_participant = 2", "trials_per_participant = 4", "trials_per_participant"),  # 3 prompts
    ('methods = ["base", "mavis"]', 'methods = ["base", "magic"]', "methods"),
    ('kinds = ["ratings", "favourite"]', 'kinds = ["stars"]', "task.kinds"),
    ('kinds = ["ratings", "favourite"]', 'kinds = ["ratings"]\nscale = ["only one"]', "task.scale"),
    ("seeds = 2", "seeds = 0", "seeds"),
    ("max_new_tokens = 8", "max_new_tokens = 0", "max_new_tokens"),
    ("max_new_tokens = 8", "top_k = -1", "top_k"),
    ("{ helpful = 1, harmless = 1 }", "{ helpful = -1, harmless = 1 }", "weights.conditions"),
    ("{ helpful = 1, harmless = 1 }", "{ helpful = 2, harmless = 0 }", "weights.conditions"),  # a duplicate
    ('completion_code = "DONE-1"', 'redirect_url = "ftp://x"', "redirect_url"),
    ('completion_code = "DONE-1"', 'completion_code = "a b"', "completion_code"),
    ('completion_code = "DONE-1"', 'participant_param = "p id"', "participant_param"),
    ('completion_code = "DONE-1"', 'serve = "stream"', "serve"),
    ('completion_code = "DONE-1"', "serve = true", "serve"),
    ('items = ["one"', 'file = "x.txt"\nitems = ["one"', "prompts"),
    ('items = ["one"', 'items = [3, "one"', "prompts.items"),
    ('items = ["one"', 'items = [{ text = "x", kind = "spicy" }, "one"', "prompts.items"),
    ('items = ["one"', 'kind = "spicy"\nitems = ["one"', "prompts.kind"),
    ('items = ["one"', 'count = 2\nitems = ["one"', "prompts.count"),
    ("[task]", '[[attention_checks]]\nposition = 1\nprompt = "q"\nreplies = ["a", "b"]\nanswer = 3\n\n[task]',
     "answer"),
    ("[task]", '[[attention_checks]]\nposition = 9\nprompt = "q"\nreplies = ["a", "b"]\nanswer = 1\n\n[task]',
     "position"),
])
def test_a_bad_field_is_named(tmp_path, old, new, field):
    assert old in GOOD
    with pytest.raises(StudyError, match="allowed|must be") as err:
        read_study(write(tmp_path, GOOD.replace(old, new, 1)))
    assert field in str(err.value) and "s.toml" in str(err.value)


def test_a_named_prompt_set(tmp_path):
    text = GOOD.replace('items = ["one", { text = "two", kind = "harmful" }, "three"]', 'set = "benign"\ncount = 3')
    spec = read_study(write(tmp_path, text))
    assert (spec.prompts, spec.prompt_set, spec.prompt_count) == ((), "benign", 3)
    with pytest.raises(StudyError, match="prompts.set: got 'weapons'"):
        read_study(write(tmp_path, text.replace('set = "benign"', 'set = "weapons"')))


def test_a_bad_file_name_and_bad_toml(tmp_path):
    with pytest.raises(StudyError, match="file name"):
        read_study(write(tmp_path, GOOD, name="has space"))
    with pytest.raises(StudyError, match="cannot be read as TOML"):
        read_study(write(tmp_path, "title = ", name="broken"))


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b", "", "x" * 65, None, "demo.toml", "nosuch"])
def test_a_link_naming_a_bad_or_unknown_study_gets_a_plain_message(name):
    with pytest.raises(ValueError, match="study: got"):
        study_path(name, ROOT / "studies")
    assert study_path("demo", ROOT / "studies") == ROOT / "studies" / "demo.toml"
