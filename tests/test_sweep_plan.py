"""Sweep planning, the cost cap, λ normalisation and the mean ± standard error of a point: pure functions that the
app and `python -m mavis_core sweep` share, tested without a model or a server."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mavis_core import evaluation
from mavis_core.config import DecodeConfig, normalise_weights, weight_grid
from mavis_core.plots import chart_point
from mavis_core.sweep_plan import (
    SEED_RANGE,
    check_work,
    mean_and_se,
    plan_sweep,
    prompt_pool,
    seed_schedule,
)

OBJECTIVES = ["helpful", "harmless", "humor"]


def cfg(**kw) -> DecodeConfig:
    return DecodeConfig(weights=dict.fromkeys(OBJECTIVES, 1.0), **{"max_new_tokens": 8, "seed": 5, **kw})


def test_normalise_puts_weights_on_the_simplex_and_keeps_all_zeros():
    assert normalise_weights({"a": 1.0, "b": 1.0, "c": 2.0}) == {"a": 0.25, "b": 0.25, "c": 0.5}
    assert normalise_weights({"a": 0.0, "b": 0.0}) == {"a": 0.0, "b": 0.0}


@pytest.mark.parametrize("search, expected", [("sample", [7, 8, 9]), ("best_of_n", [7, 11, 15]), ("beam", [7])])
def test_seed_schedule_spaces_best_of_n_by_n_and_beam_runs_one_seed(search, expected):
    assert seed_schedule(7, 3, search, 4) == expected


def test_seed_schedule_wraps_round_past_the_largest_seed():
    assert seed_schedule(SEED_RANGE[1], 2, "sample") == [SEED_RANGE[1], 0]


def test_the_cli_sweep_and_the_app_draw_best_of_n_candidates_from_the_same_seeds(monkeypatch):
    """`evaluation.sweep` searches seed s of its list at `seed_schedule`'s seed, as the app's sweep rounds do."""
    seen = []

    def fake_search(stack, prompts, c):
        seen.append(c.seed)
        return [SimpleNamespace(best=SimpleNamespace(text="x", kl=0.0, events=[1])) for _ in prompts]

    monkeypatch.setattr(evaluation, "search_batch", fake_search)
    stack = SimpleNamespace(score=lambda p, t: {"helpful": torch.zeros(len(t))})
    evaluation._searched_point(stack, ["p"], [0, 1, 2], cfg(search="best_of_n", num_candidates=4))
    assert seen == seed_schedule(0, 3, "best_of_n", 4) == [0, 4, 8]


def test_check_work_counts_replies_times_samples_times_tokens():
    check_work(4, cfg(search="best_of_n", num_candidates=2), cap=64)  # 4 × 2 × 8 = 64: allowed
    with pytest.raises(ValueError, match=r"5 replies × 2 samples × 8 tokens = 80 token steps; the limit is 64"):
        check_work(5, cfg(search="best_of_n", num_candidates=2), cap=64)


def test_prompt_pool_is_the_typed_prompt_then_the_other_examples():
    assert prompt_pool("b", ["a", "b", "c"], 3) == ["b", "a", "c"]
    with pytest.raises(ValueError, match="prompts per λ point is 4, but this stack has only 3 prompts"):
        prompt_pool("b", ["a", "b", "c"], 4)


def test_mean_and_se_match_numpy():
    values = [0.5, 1.5, 4.0, -2.0]
    means, errors = mean_and_se({"humor": values})
    assert means["humor"] == pytest.approx(np.mean(values))
    assert errors["humor"] == pytest.approx(np.std(values, ddof=1) / math.sqrt(len(values)))
    assert math.isnan(mean_and_se({"humor": [1.0]})[1]["humor"])


def test_a_plan_runs_every_prompt_with_every_seed_and_says_what_it_holds():
    plan = plan_sweep(OBJECTIVES, cfg(), ["base", "mavis"], ["p1", "p2"], 2, pair=(0, 2))
    assert plan.grid == weight_grid(3, axes=(0, 2)) and len(plan.grid) == 11
    assert plan.rounds == [("p1", 5), ("p1", 6), ("p2", 5), ("p2", 6)]
    assert len(plan.keys) == 1 + 11 and plan.keys[0][0] == "base"  # the base once: it ignores λ
    assert "λ from humor only to helpful only, 11 points (harmless at 0)" in plan.line
    assert "2 prompts × 2 seeds (seed 5, 6)" in plan.line


def test_a_beam_plan_runs_one_seed_and_says_why():
    plan = plan_sweep(OBJECTIVES, cfg(search="beam"), ["mavis"], ["p"], 3, pair=None)
    assert plan.seeds == 1 and plan.rounds == [("p", 5)] and "one seed" in plan.line
    assert len(plan.grid) == 15  # the simplex grid of three objectives


def test_a_plan_over_the_cap_is_refused():
    with pytest.raises(ValueError, match="too much work"):
        plan_sweep(OBJECTIVES, cfg(max_new_tokens=256, search="best_of_n", num_candidates=16), ["mavis"], ["p"], 8,
                   pair=None)


def test_a_chart_point_of_several_replies_is_their_mean_with_standard_errors():
    replies = [SimpleNamespace(method="mavis", text=t, scores={"humor": s}, kl=k, search="sample")
               for t, s, k in [("a", 1.0, 0.5), ("b", 3.0, 1.5)]]
    point = chart_point(7, "sweep", "p", replies, {"humor": 1.0}, 4.0, 5)
    assert point["text"] == "a" and point["scores"] == {"humor": 2.0} and point["kl"] == 1.0
    assert point["n"] == 2 and point["se"] == {"humor": pytest.approx(1.0)}
    single = chart_point(1, "generate", "p", replies[:1], {"humor": 1.0}, 4.0, 5)
    assert single["scores"] == {"humor": 1.0} and "se" not in single and "n" not in single
