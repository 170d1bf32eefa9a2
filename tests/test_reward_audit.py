"""The reward audit: held-out refusal/answer pairs of the base's own replies, length correlation, hand-made pairs
per objective, and issue 29's bars; with stub judges whose orderings are known."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from mavis_core.refusals import is_refusal
from mavis_core.training import reward_audit
from mavis_core.training.reward_audit import (
    PAIRS,
    bars_met,
    judgement_metrics,
    pair_table,
    pairs_right,
    refusal_pair_table,
    spearman,
)


class Stub:
    """harmless: +1 for a refusal, -1 otherwise; helpful: the opposite; humor: the reply's length in words."""

    def score(self, prompts: list[str], replies: list[str]) -> dict[str, torch.Tensor]:
        refusal = torch.tensor([1.0 if is_refusal(r) else -1.0 for r in replies])
        return {"helpful": -refusal, "harmless": refusal, "humor": torch.tensor([float(len(r.split()))
                                                                                 for r in replies])}


KINDS = ["harmful", "harmful", "benign", "benign"]
PROMPTS = ["fake note?", "cheat?", "boil an egg?", "kill a python process?"]
FREE = ["Sure, take a letterhead.", "I'm sorry, but no.", "Boil it nine minutes.", "Run kill with its id."]
REFUSING = ["I'm sorry, but I can't help.", "I can't help with that.", "I'm sorry, but I can't.",
            "Sorry, I can't assist"]


def test_pairs_whose_free_reply_refuses_are_left_out():
    table = refusal_pair_table(Stub().score, KINDS, PROMPTS, FREE, REFUSING)
    assert list(table.prompt) == ["fake note?", "boil an egg?", "kill a python process?"]
    assert list(table.harmless_margin) == [2.0, 2.0, 2.0] and list(table.helpful_margin) == [-2.0, -2.0, -2.0]
    assert list(table.words) == [4, 4, 5]


def test_judgement_metrics_and_bars():
    table = refusal_pair_table(Stub().score, KINDS, PROMPTS, FREE, REFUSING)
    pairs = pair_table(Stub())
    metrics = judgement_metrics(table, pairs, ["helpful", "harmless", "humor"])
    assert metrics["harmless"]["heldout_harmless_prefers_refusal_harmful"] == 1.0
    assert metrics["harmless"]["heldout_harmless_prefers_refusal_benign"] == 1.0  # the stub over-refuses
    assert metrics["helpful"]["heldout_helpful_prefers_answer_benign"] == 1.0
    assert metrics["helpful"]["heldout_pairs"] == 3
    met = bars_met(metrics)
    assert met["harmless_prefers_refusal_harmful"] and not met["harmless_prefers_refusal_benign"]
    assert met["helpful_prefers_answer_harmful"] and met["helpful_prefers_answer_benign"]
    assert not met["humor_hand_made_pairs"]  # length is not humor: the long non-joke wins under the stub


def test_every_objective_has_fragment_and_length_pairs():
    kinds = {(o, k) for o, _, _, _, k in PAIRS}
    for objective in ("helpful", "harmless", "humor"):
        assert (objective, "fragment") in kinds
        assert (objective, "length") in kinds or (objective, "padded") in kinds


def test_pairs_right_counts_only_an_objectives_own_pairs():
    pairs = pd.DataFrame({"objective": ["helpful", "helpful", "humor"], "helpful": [1.0, -1.0, -5.0],
                          "humor": [-1.0, -1.0, 2.0]})
    assert pairs_right(pairs, ["helpful", "humor"]) == {"helpful": 0.5, "humor": 1.0}


def test_spearman():
    x = np.arange(10.0)
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert math.isnan(spearman(x, np.ones(10)))


def test_markdown_marks_each_pairs_own_objective():
    pairs = pair_table(Stub())
    spread = pd.DataFrame([dict(objective=o, mean=0.0, std=1.0, p10=-1.0, p90=1.0, spearman_tokens=0.1)
                           for o in ("helpful", "harmless", "humor")])
    text = reward_audit.markdown(spread, pairs, 10, 32)
    assert "(harmless: compliance)" in text and "Share of each objective's own pairs" in text
