"""One home for prompts: held-out prompts (file beside the stack first), examples (the stack's own first)."""

import json

import pytest

from mavis_core.prompts import EVAL_PROMPTS_FILE, example_prompts, heldout_prompts, read_prompts


def test_heldout_prompts_prefer_the_file_beside_the_stack(tmp_path):
    stack = tmp_path / "stack.toml"
    assert heldout_prompts(stack, ("a", "b")) == ["a", "b"]
    (tmp_path / EVAL_PROMPTS_FILE).write_text(json.dumps(["x", " ", "y"]))
    assert heldout_prompts(stack, ("a", "b")) == ["x", "y"]  # blank prompts dropped


def test_examples_prefer_the_stacks_own_list(tmp_path):
    stack = tmp_path / "stack.toml"
    (tmp_path / EVAL_PROMPTS_FILE).write_text(json.dumps(["x"]))
    assert example_prompts(stack, ("a",)) == ["a"]
    assert example_prompts(stack, ()) == ["x"]
    assert example_prompts(tmp_path / "elsewhere" / "stack.toml", ()) == []


def test_read_prompts_text_and_bad_files(tmp_path):
    (tmp_path / "p.txt").write_text("one\n\n two \n")
    assert read_prompts(tmp_path / "p.txt") == ["one", "two"]
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON list of strings"):
        read_prompts(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("[")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_prompts(tmp_path / "broken.json")
