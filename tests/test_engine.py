"""The app's engine: input checks, interleaved streaming equal to plain decoding, scoring, sweeps."""

import pytest

from mavis_core import DecodeConfig, generate_reply
from mavis_core.engine import MAX_PROMPT_CHARS, Engine, clean_prompt, weight_grid

WEIGHTS = {"helpful": 0.5, "harmless": 0.2, "humor": 0.3}


@pytest.fixture(scope="module")
def engine(tiny_stack):
    return Engine(tiny_stack)


def settings(engine, **kw):
    raw = {"weights": WEIGHTS, "beta": 2.0, "top_k": 8, "temperature": 1.0, "max_new_tokens": 8, "seed": 3, **kw}
    return engine.settings(**raw)


def test_stream_interleaves_and_equals_plain_decoding(engine, tiny_stack):
    rounds = list(engine.stream("hello there", engine.methods, settings(engine)))
    replies = rounds[-1]
    assert [r.method for r in replies] == ["base", "mavis", "mod", "rsoup", "prompted"]
    assert len(rounds) > 2 and all(r.events for r in rounds[0])  # every column has a token after round one
    for reply in replies:
        cfg = DecodeConfig(method=reply.method, weights=WEIGHTS, beta=2.0, top_k=8, max_new_tokens=8, seed=3)
        want = generate_reply(tiny_stack, "hello there", cfg)
        assert reply.text == want.text and reply.kl == pytest.approx(want.kl)
        assert set(reply.scores) == set(engine.objectives)
    assert replies[1].events[0].contributions is not None


def test_replies_match_stream(engine):
    streamed = list(engine.stream("tell me a joke", ["mavis", "mod"], settings(engine)))[-1]
    whole = engine.replies("tell me a joke", ["mavis", "mod"], settings(engine))
    assert [r.text for r in whole] == [r.text for r in streamed]
    for a, b in zip(whole, streamed, strict=True):
        assert a.scores == pytest.approx(b.scores, abs=1e-5)


@pytest.mark.parametrize("prompt, message", [
    ("", "empty"), ("   \n\t ", "empty"), (None, "empty"), ("hi\x00there", "U\\+0000"), ("a\x1b[31m", "U\\+001B"),
])
def test_bad_prompts(prompt, message):
    with pytest.raises(ValueError, match=message):
        clean_prompt(prompt)


def test_long_prompt_cut_from_left_with_warnings(engine):
    prompt, warnings = clean_prompt("x" * 10 + "y" * MAX_PROMPT_CHARS)
    assert prompt == "y" * MAX_PROMPT_CHARS and warnings
    assert clean_prompt("line one\nline\ttwo") == ("line one\nline\ttwo", [])
    assert engine.prompt_warnings("word " * 200, 8) and not engine.prompt_warnings("hello", 8)


@pytest.mark.parametrize("change, message", [
    ({"weights": {"helpful": 0, "harmless": 0, "humor": 0}}, "All objective weights are zero"),
    ({"weights": {"helpful": 2.0}}, "between 0 and 1"),
    ({"weights": {"helpful": -0.1}}, "between 0 and 1"),
    ({"weights": {"fun": 1.0}}, "unknown objective"),
    ({"beta": 1e9}, "beta must be between"),
    ({"beta": float("nan")}, "beta must be a number"),
    ({"top_k": 2.5}, "whole number"),
    ({"top_k": 0}, "top-k must be between"),
    ({"temperature": 0}, "temperature must be between"),
    ({"max_new_tokens": 10_000}, "max new tokens must be between 1 and 32"),
    ({"seed": -1}, "seed must be between"),
    ({"seed": "7"}, "seed must be a number"),
])
def test_out_of_range_settings(engine, change, message):
    with pytest.raises(ValueError, match=message):
        settings(engine, **change)


def test_methods_checked(engine):
    assert engine.check_methods(["rsoup", "base"]) == ["base", "rsoup"]
    with pytest.raises(ValueError, match="No method"):
        engine.check_methods([])
    with pytest.raises(ValueError, match="not available"):
        engine.check_methods(["beam"])


def test_weight_grids():
    pair = weight_grid(3, axes=(0, 1))
    assert len(pair) == 11 and all(lam[2] == 0 and sum(lam) == pytest.approx(1) for lam in pair)
    simplex = weight_grid(3)
    assert len(simplex) == 15 and all(sum(lam) == pytest.approx(1) for lam in simplex)
    with pytest.raises(ValueError, match="two different"):
        weight_grid(3, axes=(1, 1))


def test_sweep_runs_base_once_and_reports_progress(engine):
    steps = []
    grid = weight_grid(3, axes=(0, 2))
    out = engine.sweep("hello", ["base", "mavis"], settings(engine, max_new_tokens=4), grid,
                       on_step=lambda i, n, desc: steps.append((i, n)))
    assert len(out) == 1 + 11  # the 12 points decode side by side: progress counts the steps of that one batch
    assert steps[0] == (0, 4) and all(n == 4 for _, n in steps)
    assert [i for i, _ in steps] == sorted({i for i, _ in steps})
    assert all(reply.scores is not None for _, reply in out)
    assert [w for w, r in out if r.method == "mavis"][3] == {"helpful": 0.3, "harmless": 0.0, "humor": 0.7}


@pytest.mark.parametrize("search", ["sample", "best_of_n"])
def test_sweep_hands_over_each_scored_reply(engine, search):
    """``on_point`` gets every (weights, reply) the sweep returns, scored; a search's point by point, before the
    next point starts."""
    seen, events = [], []
    grid = weight_grid(3, axes=(0, 1))[:3]
    out = engine.sweep("hello", ["base", "mavis"], settings(engine, max_new_tokens=2, search=search, num_candidates=2),
                       grid, on_step=lambda i, n, desc: events.append("step"),
                       on_point=lambda w, r: seen.append((w, r)) or events.append("point"))
    assert [(w, r.text) for w, r in seen] == [(w, r.text) for w, r in out] and len(out) == 1 + 3
    assert all(r.scores is not None for _, r in seen)
    if search != "sample":
        assert events == ["step", "point"] * 4


def test_warm_up_runs_every_method(engine, monkeypatch):
    seen = []
    real = engine.stack.base.forward
    monkeypatch.setattr(engine.stack.base, "forward", lambda *a, **k: seen.append(1) or real(*a, **k))
    engine.warm_up()
    assert seen  # the first user's request does not pay the first forward


def test_examples_fall_back_to_eval_prompts_beside_the_stack(tiny_dir, tmp_path):
    import json

    import torch

    from mavis_core import load_stack
    from mavis_core.engine import example_prompts

    text = (tiny_dir / "stack-sep.toml").read_text().replace('prompts = ["hello there", "tell me a joke"]', "")
    text = text.replace('"base"', f'"{tiny_dir}/base"').replace('"tokenizer"', f'"{tiny_dir}/tokenizer"')
    text = text.replace('"rewards/', f'"{tiny_dir}/rewards/').replace('"values/', f'"{tiny_dir}/values/')
    text = text.replace('"policies/', f'"{tiny_dir}/policies/')
    (tmp_path / "stack.toml").write_text(text)
    stack = load_stack(tmp_path / "stack.toml", device=torch.device("cpu"))
    assert example_prompts(stack) == []
    (tmp_path / "eval_prompts.json").write_text(json.dumps(["what is true AI?", "hey there"]))
    assert example_prompts(stack) == ["what is true AI?", "hey there"]
    (tmp_path / "eval_prompts.json").write_text('{"not": "a list"}')
    with pytest.raises(ValueError, match="JSON list"):
        example_prompts(stack)


def test_stream_shows_a_steps_tokens_before_the_next_forward(engine, monkeypatch):
    """Each yield holds tokens of the steps decoded so far and no later one, and the first comes right after the
    prompt's forward: the columns show a token while the next forward has not started."""
    forwards, forward = [], engine.stack.forward

    def counting(scales, **inputs):
        forwards.append(inputs["input_ids"].shape[1])
        return forward(scales, **inputs)

    monkeypatch.setattr(engine.stack, "forward", counting)
    stream = engine.stream("hello", engine.methods, settings(engine, max_new_tokens=5))
    first = next(stream)
    assert len(forwards) == 1  # the prompt's forward only
    assert all(e.index == 0 for r in first for e in r.events) and any(r.events for r in first)
    for k, replies in enumerate(stream, start=1):
        assert all(e.index <= k for r in replies for e in r.events)
    assert all(r.scores is not None for r in replies)
