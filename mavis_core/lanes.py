"""Lanes and their rows: the one planner of which rows of the batched forward serve each reply.

A *lane* is one reply to decode (its settings, prompt and seed). `RowPlan` says which rows of `LaneDecoder`'s one
batched forward serve it, each an (input row, LoRA mix) pair, for every method alike; sampling, sweeps, tree
rollouts and beam search all decode through it. `plan_lanes` tokenizes a request's distinct contexts once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import NEEDS_REF_ROW, WEIGHTS_IN_PROMPT, DecodeConfig
from .dialogue import weights_prompt
from .stack import NO_CONDITIONED_POLICY, Stack


@dataclass(frozen=True)
class Lane:
    """One reply to decode: its method's settings, the row of its prompt in the batch's inputs, its seed, and
    (Prompted, conditioned) the row of the context its own distribution reads, the prompt with λ in its system
    prompt; π_ref always reads ``prompt``, so KL measures what the method changed."""

    cfg: DecodeConfig
    prompt: int
    seed: int
    context: int | None = None


class RowPlan:
    """The one planner of a lane's rows in the batched forward, each an (input row, LoRA mix (M,)) pair (see
    `RowLoRA`): ``own`` rows give the lane's distribution (MOD: one row per active policy, mixed), and for the
    methods of `NEEDS_REF_ROW` a last plain row over the plain prompt gives π_ref (base and MAVIS read π_ref
    from their own row)."""

    def __init__(self, stack: Stack, lane: Lane, first: int) -> None:
        cfg = lane.cfg
        if cfg.method in WEIGHTS_IN_PROMPT and lane.context is None:  # it would silently read the plain prompt
            raise ValueError(f"a {cfg.method!r} lane needs the input row of its context with λ in words (plan_lanes)")
        self.lam = torch.tensor(cfg.normalised(stack.objectives))
        self.active = [i for i, w in enumerate(self.lam.tolist()) if w > 0]
        self.strength = cfg.strength
        plain = stack.plain_mix()
        if cfg.method == "mod":  # only objectives with λ > 0 contribute: one-hot MOD costs one policy row
            own = [stack.objective_mix(torch.eye(len(self.lam))[i]) for i in self.active]
        elif cfg.method == "rsoup":  # θ_0 + α Σ λ_m ΔW_m, exactly the interpolated weights
            own = [stack.objective_mix(cfg.strength * self.lam)]
        elif cfg.method == "morlhf":  # the policy fine-tuned for exactly this λ
            own = [stack.morlhf_mix(self.lam.tolist())]
        elif cfg.method == "conditioned":  # the one policy conditioned on λ, reading λ from its context
            own = [stack.conditioned_mix(cfg.strength)]
        else:  # base, MAVIS, and Prompted (the plain base over its own context)
            own = [plain]
        context = lane.prompt if lane.context is None else lane.context
        self.inputs = [(context, mix) for mix in own]
        if cfg.method in NEEDS_REF_ROW:
            self.inputs.append((lane.prompt, plain))
        self.n_own = len(own)
        self.place(first)

    def place(self, first: int) -> None:
        """Put the lane's rows at ``first``, ``first + 1``, … of the batch."""
        self.rows = list(range(first, first + len(self.inputs)))

    @property
    def scales(self) -> list[torch.Tensor]:
        return [mix for _, mix in self.inputs]

    @property
    def own(self) -> list[int]:
        return self.rows[:self.n_own]

    @property
    def ref(self) -> int:
        return self.rows[-1]


PAD_MULTIPLE = 8


def padded_width(stack: Stack, prompts: list[str]) -> int:
    """The width every context of a request is left-padded to, whichever methods it holds: the longest the prompts'
    contexts can be with λ in words (every weight written as 100 %), rounded up to a multiple of `PAD_MULTIPLE`. In
    bfloat16 a row's numbers change with the width it is padded to, so a base reply would otherwise change when a
    Prompted or conditioned row joins its batch (issue 33)."""
    longest = weights_prompt(dict.fromkeys(stack.objectives, 1.0))
    width = max(len(stack.format.encode(p, longest)) for p in prompts)
    return -(-width // PAD_MULTIPLE) * PAD_MULTIPLE


def width_groups(stack: Stack, prompts: list[str]) -> list[list[int]]:
    """Indices of ``prompts`` grouped by each prompt's own `padded_width`, groups in first-seen order: the rows one
    batch may hold so that each is padded as it would be alone. A sweep's prompts pad to different widths, and in
    bfloat16 a row padded to its batch's widest prompt gave other replies than the same row alone (issue 33)."""
    width = {p: padded_width(stack, [p]) for p in dict.fromkeys(prompts)}
    return [[i for i, p in enumerate(prompts) if width[p] == w] for w in dict.fromkeys(width[p] for p in prompts)]


def plan_lanes(stack: Stack, prompts: list[str], cfgs: list[DecodeConfig],
               seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor, list[Lane]]:
    """The inputs of a batch of replies, each distinct context tokenized once, and one lane per reply.

    A Prompted or conditioned reply reads its prompt rendered with λ in words in its system prompt
    (`weights_prompt`) and the plain prompt for π_ref; every other method reads the plain prompt only.

    Returns:
        input_ids (C, T), attention_mask (C, T) (left-padded, one row per distinct context), and the lanes.
    """
    def instructions(cfg: DecodeConfig) -> str | None:
        if cfg.method not in WEIGHTS_IN_PROMPT:
            return None
        return weights_prompt(dict(zip(stack.objectives, cfg.normalised(stack.objectives), strict=True)))

    if any(cfg.method == "conditioned" for cfg in cfgs) and not stack.can_decode("conditioned"):
        raise ValueError(NO_CONDITIONED_POLICY)
    extra = [instructions(cfg) for cfg in cfgs]
    contexts = list(dict.fromkeys([(p, None) for p in prompts] + list(zip(prompts, extra, strict=True))))
    where = {c: i for i, c in enumerate(contexts)}
    input_ids, attention_mask, _ = stack.encode([p for p, _ in contexts], max(c.max_new_tokens for c in cfgs),
                                                [e for _, e in contexts], padded_width(stack, prompts))
    lanes = [Lane(cfg, where[(p, None)], seed, None if e is None else where[(p, e)])
             for p, cfg, seed, e in zip(prompts, cfgs, seeds, extra, strict=True)]
    return input_ids, attention_mask, lanes
