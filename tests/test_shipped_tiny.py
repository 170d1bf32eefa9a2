"""The shipped tiny stack (assets/tiny/stack.toml, the 3 M-parameter GPT-2 fallback) with its trained MAVIS
value model and LoRA policies.

- It loads offline and every method (base, MAVIS, MOD, RSoup) produces a reply.
- With β > 0 and λ one-hot, MAVIS raises that objective's mean reward over the base on a fixed set of
  held-out prompts and seeds, for every objective: the setting of `python -m mavis_core value-report`, whose
  numbers are in assets/tiny/MODEL_CARD.md (values-fused).
- The manifest verifies: every recorded file is there with its size and sha256, and nothing is unrecorded.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mavis_core import load_stack
from mavis_core.config import DecodeConfig
from mavis_core.decoding import generate_batch
from mavis_core.training.manifest import verify_manifest

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "tiny"
# Held-out: every opening turn of chitchat *test* conversations in eval_prompts.json (value training used
# train-split openers) × 4 seeds: 200 replies per setting. Fewer are too noisy for the helpful reward (per-reply
# standard deviation ≈ 1.4): an earlier 32-reply version of this test could not tell a gain from noise.
PROMPTS = json.loads((ASSETS / "eval_prompts.json").read_text(encoding="utf-8"))
SEEDS = (0, 1, 2, 3)
TOKENS = 32
BETA = 2.0
RAISED = ("helpful", "harmless", "humor")


@pytest.fixture(scope="module")
def stack():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield load_stack(ASSETS / "stack.toml", device=torch.device("cpu"))


def _rows() -> tuple[list[str], list[int]]:
    return [p for p in PROMPTS for _ in SEEDS], [s for _ in PROMPTS for s in SEEDS]


def _replies(stack, method: str, objective: str):
    prompts, seeds = _rows()
    cfg = DecodeConfig(method=method, weights={objective: 1.0}, beta=BETA, max_new_tokens=TOKENS)
    return generate_batch(stack, prompts, cfg, seeds)


def _mean_reward(stack, gens, objective: str) -> float:
    return float(stack.rewards[objective].score(_rows()[0], [g.text for g in gens]).mean())


@pytest.fixture(scope="module")
def base_replies(stack):
    """The base ignores λ, so its replies are decoded once and scored for every objective."""
    return _replies(stack, "base", RAISED[0])


def test_shipped_stack_loads_with_every_method(stack):
    assert stack.objectives == ["helpful", "harmless", "humor"]
    assert stack.methods == ["base", "mavis", "mod", "rsoup"]
    weights = {"helpful": 0.5, "harmless": 0.2, "humor": 0.3}
    for method in stack.methods:
        cfg = DecodeConfig(method=method, weights=weights, beta=BETA, max_new_tokens=12)
        gens = generate_batch(stack, PROMPTS[:2], cfg, [0, 1])
        assert len(gens) == 2
        assert all(g.text.strip() for g in gens), (method, [g.text for g in gens])
        assert all(math.isfinite(g.kl) for g in gens)


@pytest.mark.parametrize("objective", RAISED)
def test_mavis_raises_the_objectives_reward_over_the_base(stack, base_replies, objective):
    mavis = _replies(stack, "mavis", objective)
    base_reward, mavis_reward = _mean_reward(stack, base_replies, objective), _mean_reward(stack, mavis, objective)
    assert all(math.isfinite(g.kl) for g in mavis)
    assert mavis_reward > base_reward, (objective, base_reward, mavis_reward)


def test_manifest_verifies():
    assert verify_manifest(ASSETS) == []
