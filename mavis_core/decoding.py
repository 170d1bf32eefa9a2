"""The one generation loop behind every method: KV caches, top-k, temperature, seed, streaming events.

Per step each method produces the logits of its own distribution (base: π_ref; MOD: Σ λ_m log π_m; RSoup: the
policies' interpolated adapter; MORLHF: the policy fine-tuned for λ; Prompted: π_ref over the prompt with λ in its
system prompt; conditioned: the λ-conditioned policy over that same prompt; MAVIS: π_ref, tilted over its top-k by
the value models), samples from its top-k after temperature, and reports the chosen token's log-prob under that
distribution and under π_ref on the plain prompt (full vocabulary, temperature 1), so Σ (logprob − base_logprob)
estimates KL(π ‖ π_ref) for the reply.

Every reply of a request is a *lane*, and all lanes are rows of one batch (`LaneDecoder`): the methods side
by side, a sweep's λ points, several prompts and seeds, tree rollouts and beam search's beams cost about one
batched forward per step. `lanes.RowPlan` is the one planner of which rows serve a lane.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from .config import DecodeConfig
from .lanes import Lane, RowPlan, plan_lanes, width_groups
from .stack import Stack
from .tilts import mavis_contributions, mavis_tilt, mod_mix, sample_index, top_k_logits, value_bonus
from .values import ValueScorer, positions_from_mask


@dataclass
class TokenEvent:
    """One generated token.

    Attributes:
        token_id: the chosen token.
        text: the text it adds to the reply (tokens of a stop string are never emitted).
        base_logprob: log π_ref(token | context) over the full vocabulary.
        logprob: log-prob of the token under the method's sampling distribution (top-k, temperature).
        contributions: MAVIS only: objective -> β·λ_m·(Q_m(token) − mean of Q_m over the top-k).
        index: position of the token in the reply; row: which prompt of a batch.
        alternatives: the most likely tokens of the method's sampling distribution at this step, as
            (text, probability), most likely first (the chosen token is among them when it is that likely).
    """

    token_id: int
    text: str
    base_logprob: float
    logprob: float
    contributions: dict[str, float] | None = None
    index: int = 0
    row: int = 0
    alternatives: list[tuple[str, float]] | None = None


@dataclass
class Generation:
    """A finished reply and its per-token events."""

    prompt: str
    text: str
    events: list[TokenEvent] = field(default_factory=list)
    finish_reason: str = "length"  # "eos", "stop" (a new dialogue turn began) or "length"

    @property
    def token_ids(self) -> list[int]:
        return [e.token_id for e in self.events]

    @property
    def kl(self) -> float:
        """Sequence estimate of KL(π ‖ π_ref): Σ_t log π(a_t|s_t) − log π_ref(a_t|s_t)."""
        return sum(e.logprob - e.base_logprob for e in self.events)


ALTERNATIVES = 5  # top tokens of each step's sampling distribution reported with its event
# A lone row decodes beside a copy of itself: on a CPU a bfloat16 step of one row rounds otherwise than the same
# row among others, and a reply must not depend on which other rows share its batch (issue 33).
MIN_ROWS = 2


def padded(rows: list) -> list:
    """``rows`` (row indices, or the rows' inputs), a lone one repeated up to `MIN_ROWS` (the copy is never read).

    >>> padded([4]), padded([4, 7])
    ([4, 4], [4, 7])
    """
    return rows + rows[-1:] * (MIN_ROWS - len(rows))


@dataclass
class Proposal:
    """One lane's step before its choice: the top-k candidates of its distribution, each (k,).

    Attributes:
        ids: the candidates' token ids, best first (by the untilted logits).
        logits: the lane's sampling logits over them (after temperature; MAVIS: tilted).
        logprobs: log-softmax of ``logits``: the candidates' log-probs under the lane's distribution.
        base_logprobs: log π_ref of each candidate over the full vocabulary (temperature 1, the plain prompt).
        bonus: MAVIS only: β·Σ_m λ_m Q_m(s, a) per candidate, else None.
        contributions: MAVIS only: (M, k) each objective's push β·λ_m·(Q_m − mean over the top-k), else None.
    """

    ids: torch.Tensor
    logits: torch.Tensor
    logprobs: torch.Tensor
    base_logprobs: torch.Tensor
    bonus: torch.Tensor | None = None
    contributions: torch.Tensor | None = None


@dataclass
class LaneStep:
    """What one lane chose at one step: the token, log π_ref of it, its log-prob under the lane's own
    distribution, for MAVIS each objective's push on it (M,), else None, and that distribution's top tokens."""

    token: int
    base_logprob: float
    logprob: float
    contributions: torch.Tensor | None = None
    alternatives: list[tuple[int, float]] | None = None  # (token id, probability), most likely first


class LaneDecoder:
    """Every lane of a request as rows of ONE batch over the shared base: a step costs one batched forward
    (plus one value pass for the MAVIS lanes), whatever the mix of methods, λ points and seeds.

    Base, MAVIS and Prompted lanes are plain base rows; MOD's active policies, RSoup's interpolated weights and
    MORLHF's and the conditioned policy (over Prompted's context) are rows of the same forward with the policies'
    LoRA mixed in per row (`RowLoRA`). Every method of `NEEDS_REF_ROW` has a plain base row beside it on the plain
    prompt, for the π_ref log-probs.
    Finished lanes leave the batch. Sampling (and every caller that samples: sweeps, tree rollouts)::

        dec = LaneDecoder(stack, input_ids, attention_mask, lanes)
        while dec.alive:
            steps = dec.sample()      # lane -> LaneStep
            dec.advance(finished)     # drop finished lanes (and those at their length limit), one forward

    Beam search replaces ``sample`` by ``propose`` (lane -> its top-k `Proposal`) and `select` (which lanes go on,
    with which candidate) before ``advance``. Each lane draws from its own generator, so a lane's reply does not
    depend on the other lanes.
    """

    def __init__(self, stack: Stack, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 lanes: list[Lane]) -> None:
        for lane in lanes:
            if not stack.can_decode(lane.cfg.method):
                raise ValueError(f"method {lane.cfg.method!r} needs models this stack does not have; "
                                 f"available: {stack.methods}")
            if lane.cfg.method == "prompted" and lane.context is None:
                raise ValueError("a Prompted lane needs the input row of its prompted context (see plan_lanes)")
        self.stack, self.lanes = stack, list(lanes)
        self.plans: list[RowPlan] = []
        for lane in lanes:
            self.plans.append(RowPlan(stack, lane, sum(len(p.rows) for p in self.plans)))
        self.alive = list(range(len(lanes)))
        self.t = 0
        self.generators = [torch.Generator().manual_seed(int(lane.seed)) for lane in lanes]
        self.cache = DynamicCache()
        self.logits = self._prefill(input_ids, attention_mask)
        self.scorers = self._start_scorers(input_ids, attention_mask)
        self._pending: dict[int, tuple[int, int]] = {}  # lane -> (token, index of the chosen candidate)
        self._proposals: dict[int, Proposal] = {}

    def _prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The contexts' forward for every row, run once per distinct (input row, LoRA mix): the plain rows of
        base, MAVIS and the π_ref rows (and MOD's policy rows across λ points) share one, then the cache is
        copied out to every row. Side by side that is 5 prompt rows instead of 8."""
        keys = [(row, tuple(mix.tolist())) for plan in self.plans for row, mix in plan.inputs]
        distinct = {key: n for n, key in enumerate(dict.fromkeys(keys))}
        prompts = torch.tensor([row for row, _ in distinct], device=input_ids.device)
        self.attention_mask = attention_mask[prompts]
        logits = self._forward(input_ids[prompts], positions_from_mask(self.attention_mask),
                               torch.tensor([mix for _, mix in distinct]))
        index = torch.tensor(padded([distinct[key] for key in keys]), device=input_ids.device)
        if len(distinct) < len(index):
            self.cache.batch_select_indices(index)
        self.attention_mask = self.attention_mask[index]
        return logits[index]

    def _start_scorers(self, input_ids, attention_mask) -> dict[int, tuple[ValueScorer, list[int]]]:
        """One ValueScorer per top-k among the MAVIS lanes (its lanes score k candidates in one pass)."""
        groups: dict[int, list[int]] = {}
        for i, lane in enumerate(self.lanes):
            if lane.cfg.method == "mavis":
                groups.setdefault(lane.cfg.top_k, []).append(i)
        scorers = {}
        for k, members in groups.items():
            scorer = ValueScorer(self.stack.value_models, len(self.stack.objectives))
            rows = torch.tensor([self.lanes[i].prompt for i in members], device=input_ids.device)
            scorer.start(input_ids[rows], attention_mask[rows])
            scorers[k] = (scorer, members)
        return scorers

    @torch.inference_mode()
    def _forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                 scales: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits (R, V) of every row, one forward through the base (each row's LoRA mix if any;
        ``scales`` (R, M) instead of the alive rows' own)."""
        if scales is None:
            scales = torch.stack(padded([s for i in self.alive for s in self.plans[i].scales]))
        # logits of the last position only: a prompt's other positions would cost the LM head's matmul for nothing
        out = self.stack.forward(scales, input_ids=input_ids, attention_mask=self.attention_mask,
                                 position_ids=positions, past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].float()

    def distribution(self, i: int) -> torch.Tensor:
        """Lane i's next-token logits (V,) before top-k: π_ref (base, MAVIS; Prompted's over its own context),
        MOD's Σ λ_m log π_m, or RSoup's / MORLHF's / the conditioned policy's adapter."""
        plan = self.plans[i]
        if self.lanes[i].cfg.method == "mod":
            return mod_mix(self.logits[plan.own], plan.lam[plan.active], self.logits[plan.ref], plan.strength)
        return self.logits[plan.own[0]]

    @torch.inference_mode()
    def propose(self) -> dict[int, Proposal]:
        """One step of every alive lane's method up to its choice: top-k of its distribution and, for MAVIS,
        the tilt π(a|s) ∝ π_ref(a|s)·exp(β·Σ_m λ_m Q_m(s, a)) over those k (arXiv 2508.13415). Lane -> Proposal."""
        candidates = {i: top_k_logits(self.distribution(i), self.lanes[i].cfg.top_k, self.lanes[i].cfg.temperature)
                      for i in self.alive}  # lane -> ((k,) logits, (k,) ids)
        values = self._values(candidates)  # MAVIS lane -> (M, k): Q_m(s, a) of each candidate
        out = {}
        for i in self.alive:
            cfg, plan = self.lanes[i].cfg, self.plans[i]
            logits, ids = candidates[i]
            bonus = contributions = None
            if i in values:
                bonus = value_bonus(values[i], plan.lam, cfg.beta)  # β·Σ_m λ_m Q_m, (k,)
                contributions = mavis_contributions(values[i], plan.lam, cfg.beta)  # (M, k)
                logits = mavis_tilt(logits, values[i], plan.lam, cfg.beta)
            base_logprobs = torch.log_softmax(self.logits[plan.ref], -1)[ids]  # log π_ref, full vocabulary
            out[i] = Proposal(ids, logits, torch.log_softmax(logits, -1), base_logprobs, bonus, contributions)
        self._proposals = out
        return out

    @torch.inference_mode()
    def sample(self) -> dict[int, LaneStep]:
        """`propose`, then draw each alive lane's token from its own generator. Returns lane -> LaneStep."""
        out = {}
        for i, p in self.propose().items():
            chosen = int(sample_index(p.logits[None], [self.generators[i]])[0])
            top = torch.topk(p.logprobs, min(ALTERNATIVES, p.logprobs.numel()))
            alternatives = list(zip(p.ids[top.indices].tolist(), top.values.exp().tolist(), strict=True))
            pushed = None if p.contributions is None else p.contributions[:, chosen].cpu()
            out[i] = LaneStep(int(p.ids[chosen]), float(p.base_logprobs[chosen]), float(p.logprobs[chosen]),
                              pushed, alternatives)
            self._pending[i] = (int(p.ids[chosen]), chosen)
        return out

    def _values(self, candidates: dict) -> dict[int, torch.Tensor]:
        """Q_m(s, a) of every MAVIS lane's candidates: one pass per value model per top-k group."""
        out = {}
        for scorer, members in self.scorers.values():
            ids = torch.stack([candidates[i][1] for i in members])  # (B_k, k)
            for i, v in zip(members, scorer.q_values(ids), strict=True):  # (M, k) each
                out[i] = v
        return out

    def select(self, parents: list[int], chosen: list[int]) -> None:
        """Beam search's step after `propose`: new lane n continues alive lane ``parents[n]`` with its candidate
        ``chosen[n]`` (a lane may go on as several, or not at all); `advance` then appends those tokens.

        Every cache (the base's rows, the value models') keeps the parents' rows, so nothing re-runs.
        """
        rows = padded([r for p in parents for r in self.plans[p].rows])
        index = torch.tensor(rows, dtype=torch.long, device=self.attention_mask.device)
        self.cache.batch_select_indices(index)
        self.attention_mask, self.logits = self.attention_mask[index], self.logits[index]
        for k, (scorer, members) in list(self.scorers.items()):
            kept = [(n, members.index(p)) for n, p in enumerate(parents) if p in members]
            if kept:
                scorer.select(torch.tensor([j for _, j in kept], device=scorer.attention_mask.device))
                self.scorers[k] = (scorer, [n for n, _ in kept])
            else:
                del self.scorers[k]
        self._pending = {n: (int(self._proposals[p].ids[j]), j)
                         for n, (p, j) in enumerate(zip(parents, chosen, strict=True))}
        self.lanes = [self.lanes[p] for p in parents]
        self.generators = [self.generators[p] for p in parents]
        self.plans = [copy.copy(self.plans[p]) for p in parents]
        self.alive = list(range(len(parents)))
        self._renumber()

    def _renumber(self) -> None:
        """Place the alive lanes' rows one after another, in order."""
        first = 0
        for i in self.alive:
            self.plans[i].place(first)
            first += len(self.plans[i].rows)

    @torch.inference_mode()
    def advance(self, finished: set[int] = frozenset()) -> None:
        """Append every surviving lane's chosen token: drop the finished lanes (and any at its length limit)
        from every cache, then run one forward for the rest."""
        self.t += 1
        for scorer, members in self.scorers.values():
            scorer.keep(torch.tensor([self._pending[i][1] for i in members], device=scorer.attention_mask.device))
        done = {i for i in self.alive if i in finished or self.t >= self.lanes[i].cfg.max_new_tokens}
        if done:
            self._drop(done)
        if not self.alive:
            return
        tokens = torch.tensor(padded([[self._pending[i][0]] for i in self.alive for _ in self.plans[i].rows]),
                              device=self.attention_mask.device)  # (R, 1)
        positions = self.attention_mask.long().sum(-1, keepdim=True)  # (R, 1)
        self.attention_mask = torch.cat([self.attention_mask, torch.ones_like(positions)], dim=1)
        self.logits = self._forward(tokens, positions)
        self._pending = {}

    def _drop(self, done: set[int]) -> None:
        keep = padded([r for i in self.alive if i not in done for r in self.plans[i].rows])
        index = torch.tensor(keep, dtype=torch.long, device=self.attention_mask.device)
        self.cache.batch_select_indices(index)
        self.attention_mask, self.logits = self.attention_mask[index], self.logits[index]
        self.alive = [i for i in self.alive if i not in done]
        self._renumber()
        for k, (scorer, members) in list(self.scorers.items()):
            kept = [j for j, i in enumerate(members) if i not in done]
            if not kept:
                del self.scorers[k]
            elif len(kept) < len(members):
                scorer.select(torch.tensor(kept, dtype=torch.long, device=scorer.attention_mask.device))
                self.scorers[k] = (scorer, [members[j] for j in kept])


class _Row:
    """Per-prompt reply state: its text so far, events held back while they may start a stop string."""

    def __init__(self, stack: Stack, prompt: str) -> None:
        self.tokenizer = stack.tokenizer
        self.format = stack.format
        self.gen = Generation(prompt=prompt, text="")
        self.ids: list[int] = []
        self.full = ""  # decoded text of every token so far
        self.pending: list[TokenEvent] = []
        self.done = False

    def add(self, event: TokenEvent) -> list[TokenEvent]:
        """Take one token's event; return the events that can be shown now."""
        if self.format.ends(event.token_id):
            self.gen.finish_reason, self.done = "eos", True
            return self._flush(len(self.full))
        self.ids.append(event.token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        event.text, self.full = text[len(self.full):], text
        self.pending.append(event)
        kept, stopped = self.format.cut(self.full)
        if stopped:
            self.gen.finish_reason, self.done = "stop", True
            return self._flush(len(kept))
        # Hold back a tail that may still become a stop string, or half of a multi-byte character.
        hold = len(self.full) - len(self.full.rstrip("\ufffd")) or self.format.hold(self.full)
        return self._flush(len(self.full) - hold)

    def _flush(self, upto: int) -> list[TokenEvent]:
        """Release held events whose text starts before character ``upto``, cutting the last one there."""
        out, start = [], len(self.gen.text)
        while self.pending and (start < upto or not self.pending[0].text):
            event = self.pending.pop(0)
            event.text = event.text[: max(0, upto - start)]
            start += len(event.text)
            self.gen.text += event.text
            self.gen.events.append(event)
            out.append(event)
        if self.done:
            self.pending.clear()
        return out

    def finish(self) -> list[TokenEvent]:
        """End the reply here (it ran to its length limit): release every event still held back."""
        self.done = True
        return self._flush(len(self.full))


class Decode:
    """One decoding run over several lanes, each a (prompt, settings, seed): iterate for (lane, event) pairs;
    ``generations`` holds the replies. The lanes of prompts that pad to one width (`lanes.width_groups`: every
    lane of one prompt, so a side-by-side request is always one group) are rows of one batch (`LaneDecoder`):
    methods, λ points and seeds decode side by side at the cost of about one forward per step. Prompts of other
    widths decode as further batches, one after another, so each row is what it would be alone."""

    def __init__(self, stack: Stack, prompts: list[str], cfgs: list[DecodeConfig], seeds: list[int]) -> None:
        if not len(seeds) == len(prompts) == len(cfgs):
            raise ValueError(f"got {len(prompts)} prompts, {len(cfgs)} settings and {len(seeds)} seeds; "
                             "give one of each per reply")
        for cfg in cfgs:
            if cfg.search != "sample":  # silently sampling instead would look like a search result
                raise ValueError(f"search {cfg.search!r} is run by mavis_core.search.search; this loop only samples")
            cfg.normalised(stack.objectives)  # validate the weights before any work
        self.stack = stack
        self.groups = [(members, plan_lanes(stack, [prompts[i] for i in members], [cfgs[i] for i in members],
                                            [seeds[i] for i in members])) for members in width_groups(stack, prompts)]
        self.rows = [_Row(stack, p) for p in prompts]
        self.t = 0  # the step being decoded (events held back by a stop-string check arrive later than theirs)

    @property
    def generations(self) -> list[Generation]:
        return [row.gen for row in self.rows]

    def __iter__(self) -> Iterator[tuple[int, TokenEvent]]:
        for shown in self.steps():
            yield from shown

    def steps(self) -> Iterator[list[tuple[int, TokenEvent]]]:
        """Run to the end, yielding each step's shown (lane, event) pairs as soon as the step is sampled, before
        the next forward runs (so a caller can show them meanwhile); ``generations`` already hold them. The
        last list releases the text held back from replies that ran to max_new_tokens."""
        names = self.stack.objectives
        for members, (input_ids, attention_mask, lanes) in self.groups:
            dec = LaneDecoder(self.stack, input_ids, attention_mask, lanes)
            while dec.alive:
                finished, shown, self.t = set(), [], dec.t
                for j, step in dec.sample().items():
                    i = members[j]
                    contrib = None if step.contributions is None else dict(zip(names, step.contributions.tolist(),
                                                                               strict=True))
                    alternatives = [(self.stack.tokenizer.decode([t]), p) for t, p in step.alternatives]
                    event = TokenEvent(step.token, "", step.base_logprob, step.logprob, contrib, dec.t, i,
                                       alternatives)
                    shown.extend((i, e) for e in self.rows[i].add(event))
                    if self.rows[i].done:
                        finished.add(j)
                yield shown
                dec.advance(finished)
        yield [(i, e) for i, row in enumerate(self.rows) for e in row.finish()]


def generate(stack: Stack, prompt: str, cfg: DecodeConfig) -> Iterator[TokenEvent]:
    """Stream one reply to ``prompt`` token by token.

    Stops at EOS, at the start of a new dialogue turn, or after ``cfg.max_new_tokens`` tokens.
    The same seed, prompt and settings give the same text.
    """
    for _, event in Decode(stack, [prompt], [cfg], [cfg.seed]):
        yield event


def generate_reply(stack: Stack, prompt: str, cfg: DecodeConfig) -> Generation:
    """The whole reply to one prompt (``generate`` run to the end)."""
    return generate_batch(stack, [prompt], cfg)[0]


def generate_batch(stack: Stack, prompts: list[str], cfg: DecodeConfig,
                   seeds: list[int] | None = None) -> list[Generation]:
    """Replies to several prompts in one batch; row i equals ``generate`` with seed ``seeds[i]``.

    ``seeds`` defaults to ``cfg.seed`` for every prompt.
    """
    if not prompts:
        return []
    run = Decode(stack, prompts, [cfg] * len(prompts), seeds if seeds is not None else [cfg.seed] * len(prompts))
    for _ in run:
        pass
    return run.generations


def generate_side_by_side(stack: Stack, prompt: str, cfgs: list[DecodeConfig]) -> Iterator[tuple[int, TokenEvent]]:
    """Stream several methods' replies to one prompt as rows of one batch: yields (index into cfgs, event).

    Each reply equals what ``generate(stack, prompt, cfgs[i])`` gives alone (same seed, same settings).
    """
    yield from Decode(stack, [prompt] * len(cfgs), list(cfgs), [c.seed for c in cfgs])
