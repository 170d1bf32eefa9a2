"""The one generation loop behind every method: KV caches, top-k, temperature, seed, streaming events.

Per step each method produces the logits of its own distribution (base: π_ref; MOD: Σ λ_m log π_m; RSoup:
the policies' interpolated adapter; MAVIS: π_ref, tilted over its top-k by the value models), samples from
its top-k after temperature, and reports the chosen token's log-prob under that distribution and under π_ref
(full vocabulary, temperature 1), so Σ (logprob − base_logprob) estimates KL(π ‖ π_ref) for the reply.

Every reply of a request is a *lane*, and all lanes are rows of one batch (`LaneDecoder`): the methods side
by side, a sweep's λ points, several prompts and seeds cost about one batched forward per step.
`CausalRunner` / `MethodRunner` serve beam search, which reorders its rows every step; both run MOD's and
RSoup's rows through `Stack.forward` (the policies' LoRA mixed per row, `RowLoRA`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from .config import DecodeConfig
from .stack import Stack
from .tilts import mavis_contributions, mavis_tilt, mod_mix, sample_index, top_k_logits
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


class CausalRunner:
    """The base with its own KV cache, fed new tokens for every row.

    ``scales`` (copies, M) replicates every request row ``copies`` times, copy c with the policies' LoRA mixed
    in by ``scales[c]`` (`RowLoRA`): MOD's active policies (one-hot rows, mixed afterwards) or RSoup's λ.
    """

    def __init__(self, stack: Stack, scales: torch.Tensor | None = None) -> None:
        self.stack = stack
        self.scales = scales
        self.copies = 1 if scales is None else scales.shape[0]
        self.cache = DynamicCache()

    def _forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        scales = None if self.scales is None else self.scales.repeat(input_ids.shape[0] // self.copies, 1)
        out = self.stack.forward(scales, input_ids=input_ids, attention_mask=self.attention_mask,
                                 position_ids=positions, past_key_values=self.cache, use_cache=True)
        b, n, v = out.logits.shape
        return out.logits.float().view(b // self.copies, self.copies, n, v)  # (B, copies, n, V)

    @torch.inference_mode()
    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Run the prompts (B, T). Returns next-token logits (B, copies, V)."""
        self.attention_mask = attention_mask.repeat_interleave(self.copies, dim=0)
        ids = input_ids.repeat_interleave(self.copies, dim=0)
        return self._forward(ids, positions_from_mask(self.attention_mask))[:, :, -1]

    @torch.inference_mode()
    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append n tokens per row (B, n). Returns the logits after each of them (B, copies, n, V)."""
        n = tokens.shape[1]
        start = self.attention_mask.long().sum(-1, keepdim=True)  # (B*copies, 1)
        positions = start + torch.arange(n, device=start.device)  # (B*copies, n)
        self.attention_mask = torch.cat([self.attention_mask, torch.ones_like(positions)], dim=1)
        return self._forward(tokens.repeat_interleave(self.copies, dim=0), positions)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append one token per row (B,). Returns next-token logits (B, copies, V)."""
        return self.extend(tokens[:, None])[:, :, -1]

    def select(self, rows: torch.Tensor) -> None:
        """Keep request rows ``rows`` (n,) of the cache (rows may repeat: beams grown from one parent each get
        a copy); each request row holds ``copies`` cache rows."""
        rows = rows.to(self.attention_mask.device)
        flat = (rows[:, None] * self.copies + torch.arange(self.copies, device=rows.device)).flatten()
        self.cache.batch_select_indices(flat)
        self.attention_mask = self.attention_mask[flat]


class MethodRunner:
    """Produces the logits of one decoding method's distribution, (B, V), for beam search."""

    def __init__(self, stack: Stack, cfg: DecodeConfig, lam: list[float]) -> None:
        if not stack.can_decode(cfg.method):
            raise ValueError(
                f"method {cfg.method!r} needs models this stack does not have; available: {stack.methods}"
            )
        self.method, self.strength = cfg.method, cfg.strength
        self.lam = torch.tensor(lam)
        # Only objectives with λ > 0 contribute to MOD; skipping the rest keeps one-hot MOD as cheap as one policy.
        self.active = [i for i, w in enumerate(lam) if w > 0]
        if cfg.method == "rsoup":
            self.runner = CausalRunner(stack, stack.objective_mix(cfg.strength * self.lam)[None])
        elif cfg.method == "morlhf":
            self.runner = CausalRunner(stack, stack.morlhf_mix(list(lam))[None])
        elif cfg.method == "mod":  # the active policies, then (strength ≠ 1) a plain row for π_ref
            rows = [stack.objective_mix(torch.eye(len(lam))[i]) for i in self.active]
            if cfg.strength != 1:
                rows.append(stack.plain_mix())
            self.runner = CausalRunner(stack, torch.stack(rows))
        else:
            self.runner = CausalRunner(stack)

    @property
    def samples_from_base(self) -> bool:
        """Base and MAVIS sample from π_ref's own logits; MOD and RSoup need π_ref on the side."""
        return self.method in ("base", "mavis")

    def _logits(self, out: torch.Tensor) -> torch.Tensor:
        if self.method == "mod":  # out: (B, active [+ 1 plain], V), one row per policy
            mixed = out.transpose(0, 1)
            n = len(self.active)
            return mod_mix(mixed[:n], self.lam[self.active], mixed[n] if n < len(mixed) else None, self.strength)
        return out[:, 0]

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self._logits(self.runner.prefill(input_ids, attention_mask))

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._logits(self.runner.step(tokens))


ALTERNATIVES = 5  # top tokens of each step's sampling distribution reported with its event

@dataclass(frozen=True)
class Lane:
    """One reply to decode: its method's settings, the row of its prompt in the batch's inputs, its seed."""

    cfg: DecodeConfig
    prompt: int
    seed: int


@dataclass
class LaneStep:
    """What one lane chose at one step: the token, log π_ref of it, its log-prob under the lane's own
    distribution, for MAVIS each objective's push on it (M,), else None, and that distribution's top tokens."""

    token: int
    base_logprob: float
    logprob: float
    contributions: torch.Tensor | None = None
    alternatives: list[tuple[int, float]] | None = None  # (token id, probability), most likely first


class _Rows:
    """Which rows of the one batched forward serve a lane, each with its mix of the policies (M,) (see
    `RowLoRA`): ``own`` gives the lane's distribution (MOD: one row per active policy, mixed), ``ref`` gives
    π_ref (the own row itself for base and MAVIS, whose own row is the plain base)."""

    def __init__(self, stack: Stack, lane: Lane, first: int) -> None:
        cfg = lane.cfg
        self.lam = torch.tensor(cfg.normalised(stack.objectives))
        self.active = [i for i, w in enumerate(self.lam.tolist()) if w > 0]
        plain = stack.plain_mix()
        self.strength = cfg.strength
        if cfg.method == "mod":  # only objectives with λ > 0 contribute: one-hot MOD costs one policy row
            self.scales = [stack.objective_mix(torch.eye(len(self.lam))[i]) for i in self.active] + [plain]
        elif cfg.method == "rsoup":  # θ_0 + α Σ λ_m ΔW_m, exactly the interpolated weights
            self.scales = [stack.objective_mix(cfg.strength * self.lam), plain]
        elif cfg.method == "morlhf":  # the policy fine-tuned for exactly this λ
            self.scales = [stack.morlhf_mix(self.lam.tolist()), plain]
        else:
            self.scales = [plain]
        self.rows = list(range(first, first + len(self.scales)))

    @property
    def own(self) -> list[int]:
        return self.rows[:-1] if len(self.rows) > 1 else self.rows

    @property
    def ref(self) -> int:
        return self.rows[-1]


class LaneDecoder:
    """Every lane of a request as rows of ONE batch over the shared base: a step costs one batched forward
    (plus one value pass for the MAVIS lanes), whatever the mix of methods, λ points and seeds.

    Base and MAVIS lanes are plain base rows; MOD's active policies and RSoup's interpolated weights are rows
    of the same forward with the policies' LoRA mixed in per row (`RowLoRA`), each beside a plain base row on
    the same sequence for the π_ref log-probs. Finished lanes leave the batch. Usage::

        dec = LaneDecoder(stack, input_ids, attention_mask, lanes)
        while dec.alive:
            steps = dec.sample()      # lane -> LaneStep
            dec.advance(finished)     # drop finished lanes (and those at their length limit), one forward

    Each lane draws from its own generator, so a lane's reply does not depend on the other lanes.
    """

    def __init__(self, stack: Stack, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 lanes: list[Lane]) -> None:
        for lane in lanes:
            if not stack.can_decode(lane.cfg.method):
                raise ValueError(f"method {lane.cfg.method!r} needs models this stack does not have; "
                                 f"available: {stack.methods}")
        self.stack, self.lanes = stack, lanes
        self.plans: list[_Rows] = []
        for lane in lanes:
            self.plans.append(_Rows(stack, lane, sum(len(p.rows) for p in self.plans)))
        self.alive = list(range(len(lanes)))
        self.t = 0
        self.generators = [torch.Generator().manual_seed(int(lane.seed)) for lane in lanes]
        self.cache = DynamicCache()
        self.logits = self._prefill(input_ids, attention_mask)
        self.scorers = self._start_scorers(input_ids, attention_mask)
        self._pending: dict[int, tuple[int, int]] = {}  # lane -> (token, index of the chosen candidate)

    def _prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The prompts' forward for every row, run once per distinct (prompt, LoRA mix): the plain rows of
        base, MAVIS and the π_ref rows (and MOD's policy rows across λ points) share one, then the cache is
        copied out to every row. Side by side that is 5 prompt rows instead of 8."""
        keys = [(lane.prompt, tuple(s.tolist())) for lane, plan in zip(self.lanes, self.plans, strict=True)
                for s in plan.scales]
        distinct = {key: n for n, key in enumerate(dict.fromkeys(keys))}
        prompts = torch.tensor([prompt for prompt, _ in distinct], device=input_ids.device)
        self.attention_mask = attention_mask[prompts]
        logits = self._forward(input_ids[prompts], positions_from_mask(self.attention_mask),
                               torch.tensor([mix for _, mix in distinct]))
        index = torch.tensor([distinct[key] for key in keys], device=input_ids.device)
        if len(distinct) < len(keys):
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
            scales = torch.stack([s for i in self.alive for s in self.plans[i].scales])
        # logits of the last position only: a prompt's other positions would cost the LM head's matmul for nothing
        out = self.stack.forward(scales, input_ids=input_ids, attention_mask=self.attention_mask,
                                 position_ids=positions, past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].float()

    def _distribution(self, i: int) -> torch.Tensor:
        """Lane i's next-token logits (V,) before top-k: π_ref, MOD's Σ λ_m log π_m, or RSoup's adapter."""
        plan = self.plans[i]
        if self.lanes[i].cfg.method == "mod":
            return mod_mix(self.logits[plan.own], plan.lam[plan.active], self.logits[plan.ref], plan.strength)
        return self.logits[plan.own[0]]

    @torch.inference_mode()
    def sample(self) -> dict[int, LaneStep]:
        """Top-k → (MAVIS: values, tilt) → sample, for every alive lane. Returns lane -> LaneStep."""
        candidates = {i: top_k_logits(self._distribution(i), self.lanes[i].cfg.top_k, self.lanes[i].cfg.temperature)
                      for i in self.alive}  # lane -> ((k,) logits, (k,) ids)
        values = self._values(candidates)  # MAVIS lane -> (M, k)
        out = {}
        for i in self.alive:
            cfg, plan = self.lanes[i].cfg, self.plans[i]
            cand_logits, cand_ids = candidates[i]
            contributions = None
            if i in values:
                contributions = mavis_contributions(values[i], plan.lam, cfg.beta)  # (M, k)
                cand_logits = mavis_tilt(cand_logits, values[i], plan.lam, cfg.beta)
            chosen = int(sample_index(cand_logits[None], [self.generators[i]])[0])
            token = int(cand_ids[chosen])
            logprobs = torch.log_softmax(cand_logits, -1)
            base_logprob = float(torch.log_softmax(self.logits[plan.ref], -1)[token])
            pushed = None if contributions is None else contributions[:, chosen].cpu()
            top = torch.topk(logprobs, min(ALTERNATIVES, logprobs.numel()))
            alternatives = list(zip(cand_ids[top.indices].tolist(), top.values.exp().tolist(), strict=True))
            out[i] = LaneStep(token, base_logprob, float(logprobs[chosen]), pushed, alternatives)
            self._pending[i] = (token, chosen)
        return out

    def _values(self, candidates: dict) -> dict[int, torch.Tensor]:
        """Q_m(s, a) of every MAVIS lane's candidates: one pass per value model per top-k group."""
        out = {}
        for scorer, members in self.scorers.values():
            ids = torch.stack([candidates[i][1] for i in members])  # (B_k, k)
            for i, v in zip(members, scorer.q_values(ids), strict=True):  # (M, k) each
                out[i] = v
        return out

    @torch.inference_mode()
    def advance(self, finished: set[int] = frozenset()) -> None:
        """Append every surviving lane's sampled token: drop the finished lanes (and any at its length limit)
        from every cache, then run one forward for the rest."""
        self.t += 1
        for scorer, members in self.scorers.values():
            scorer.keep(torch.tensor([self._pending[i][1] for i in members], device=scorer.attention_mask.device))
        done = {i for i in self.alive if i in finished or self.t >= self.lanes[i].cfg.max_new_tokens}
        if done:
            self._drop(done)
        if not self.alive:
            return
        tokens = torch.tensor([[self._pending[i][0]] for i in self.alive for _ in self.plans[i].rows],
                              device=self.attention_mask.device)  # (R, 1)
        positions = self.attention_mask.long().sum(-1, keepdim=True)  # (R, 1)
        self.attention_mask = torch.cat([self.attention_mask, torch.ones_like(positions)], dim=1)
        self.logits = self._forward(tokens, positions)
        self._pending = {}

    def _drop(self, done: set[int]) -> None:
        keep = [r for i in self.alive if i not in done for r in self.plans[i].rows]
        index = torch.tensor(keep, dtype=torch.long, device=self.attention_mask.device)
        self.cache.batch_select_indices(index)
        self.attention_mask, self.logits = self.attention_mask[index], self.logits[index]
        self.alive = [i for i in self.alive if i not in done]
        first = 0
        for i in self.alive:  # renumber the surviving rows
            n = len(self.plans[i].rows)
            self.plans[i].rows = list(range(first, first + n))
            first += n
        for k, (scorer, members) in list(self.scorers.items()):
            kept = [j for j, i in enumerate(members) if i not in done]
            if not kept:
                del self.scorers[k]
            elif len(kept) < len(members):
                scorer.select(torch.tensor(kept, dtype=torch.long, device=scorer.attention_mask.device))
                self.scorers[k] = (scorer, [members[j] for j in kept])


def decode_steps(stack: Stack, input_ids: torch.Tensor, attention_mask: torch.Tensor, cfg: DecodeConfig,
                 seeds: list[int]) -> Iterator[tuple]:
    """One method over B prompt rows (B, T), all kept to ``cfg.max_new_tokens``: per step (tokens (B,),
    base log-probs (B,), log-probs (B,), MAVIS contributions (B, M) or None). For callers that work on ids."""
    lanes = [Lane(cfg, r, s) for r, s in enumerate(seeds)]
    dec = LaneDecoder(stack, input_ids, attention_mask, lanes)
    while dec.alive:
        sampled = dec.sample()
        steps = [sampled[i] for i in range(len(lanes))]
        contributions = torch.stack([s.contributions for s in steps]) if cfg.method == "mavis" else None
        yield (torch.tensor([s.token for s in steps]), torch.tensor([s.base_logprob for s in steps]),
               torch.tensor([s.logprob for s in steps]), contributions)
        dec.advance()


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
    ``generations`` holds the replies. Every lane is a row of one batch (`LaneDecoder`), so methods, λ points
    and prompts decode side by side at the cost of about one forward per step."""

    def __init__(self, stack: Stack, prompts: list[str], cfgs: list[DecodeConfig], seeds: list[int]) -> None:
        if not len(seeds) == len(prompts) == len(cfgs):
            raise ValueError(f"got {len(prompts)} prompts, {len(cfgs)} settings and {len(seeds)} seeds; "
                             "give one of each per reply")
        for cfg in cfgs:
            if cfg.search != "sample":  # silently sampling instead would look like a search result
                raise ValueError(f"search {cfg.search!r} is run by mavis_core.search.search; this loop only samples")
            cfg.normalised(stack.objectives)  # validate the weights before any work
        unique = list(dict.fromkeys(prompts))
        self.stack = stack
        self.input_ids, self.attention_mask, _ = stack.encode(unique, max(c.max_new_tokens for c in cfgs))
        where = {p: i for i, p in enumerate(unique)}
        self.lanes = [Lane(cfg, where[p], seed) for p, cfg, seed in zip(prompts, cfgs, seeds, strict=True)]
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
        dec = LaneDecoder(self.stack, self.input_ids, self.attention_mask, self.lanes)
        while dec.alive:
            finished, shown, self.t = set(), [], dec.t
            for i, step in dec.sample().items():
                contrib = None if step.contributions is None else dict(zip(names, step.contributions.tolist(),
                                                                           strict=True))
                alternatives = [(self.stack.tokenizer.decode([t]), p) for t, p in step.alternatives]
                event = TokenEvent(step.token, "", step.base_logprob, step.logprob, contrib, dec.t, i, alternatives)
                shown.extend((i, e) for e in self.rows[i].add(event))
                if self.rows[i].done:
                    finished.add(i)
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
