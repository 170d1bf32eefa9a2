"""Test-time search on top of tilted decoding: best-of-N and value-guided beam search.

Both pick their winner by the λ-weighted reward Σ_m λ_m r_m(prompt, reply) of the stack's reward models.

- **best-of-N** (``cfg.search == "best_of_n"``): N tilted samples of the method, drawn as ONE batch with seeds
  ``cfg.seed + i``; sample i is exactly ``generate_reply`` with seed ``cfg.seed + i``.
- **beam** (``cfg.search == "beam"``): B beams are B lanes of the sampling loop's `LaneDecoder` (the same rows
  per method, π_ref's row included, so every method's events carry log π_ref and a finite KL). Each step every
  beam is expanded by the top-k tokens of the method's distribution (`LaneDecoder.propose`), and the B best
  expansions are kept, ranked by

      MAVIS:        Σ_t log π_ref(a_t|s_t) + β · Σ_m λ_m V_m(s ⊕ a)      (π_ref over the full vocabulary)
      every other:  Σ_t log π(a_t|s_t)                                  (π: the method's top-k distribution)

  The value term is the value of the whole new prefix, not a sum over steps: V already estimates the reward
  of the finished reply. Every KV cache (the base's rows, each value model's) is reordered to the kept beams
  (`LaneDecoder.select`), so a step costs one incremental pass per model, as in sampling. Beams that end (EOS
  or a new dialogue turn) are set aside; the search stops when B beams have ended (then only those compete:
  the alive ones would be cut mid-sentence), or at max_new_tokens (then the ended and the alive beams compete). The best
  λ-weighted reward among them wins. No randomness is involved.

``search`` never streams: a UI shows the winner when the search is done. ``mavis_core.generate`` and
``generate_batch`` always sample (they refuse another ``cfg.search``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from .config import DecodeConfig
from .decoding import Generation, LaneDecoder, Proposal, TokenEvent, _Row, generate_batch
from .dialogue import PromptFormat
from .lanes import plan_lanes
from .stack import Stack
from .tilts import weighted_reward


@dataclass
class SearchResult:
    """The winning reply of a search and every candidate it weighed.

    Attributes:
        best: the winner, ``candidates[index]``.
        candidates: best-of-N: the N samples in seed order; beam: the ended beams, then (if the search ran to
            max_new_tokens) the alive ones.
        scores: per candidate, objective -> reward.
        weighted: per candidate, Σ_m λ_m · reward_m (the quantity the winner maximises).
        search: the search that produced it ("sample", "best_of_n" or "beam").
    """

    best: Generation
    index: int
    candidates: list[Generation]
    scores: list[dict[str, float]]
    weighted: list[float]
    search: str


def score_replies(stack: Stack, prompt: str, replies: list[Generation],
                  weights: list[float]) -> tuple[list[dict[str, float]], list[float]]:
    """Every reply's reward per objective (one batch per reward model) and Σ_m λ_m r_m (`weighted_reward`).

    Args:
        weights: λ in the stack's objective order (``cfg.normalised(stack.objectives)``).
    """
    raw = {name: r.double() for name, r in stack.score([prompt] * len(replies), [g.text for g in replies]).items()}
    scores = [{name: float(raw[name][i]) for name in stack.objectives} for i in range(len(replies))]
    weighted = weighted_reward(raw, dict(zip(stack.objectives, weights, strict=True)))  # (n,)
    return scores, weighted.tolist()


def pick_best(stack: Stack, prompt: str, replies: list[Generation], cfg: DecodeConfig) -> SearchResult:
    """Score ``replies`` and keep the one with the highest λ-weighted reward (the first one on ties)."""
    scores, weighted = score_replies(stack, prompt, replies, cfg.normalised(stack.objectives))
    index = max(range(len(replies)), key=lambda i: (weighted[i], -i))
    return SearchResult(replies[index], index, replies, scores, weighted, cfg.search)


def best_of_n(stack: Stack, prompts: list[str], cfg: DecodeConfig) -> list[SearchResult]:
    """N = ``cfg.num_candidates`` samples per prompt, every prompt's samples in one batch; keep each prompt's best.

    Sample i of a prompt uses seed ``cfg.seed + i``, so it equals ``generate_reply`` with that seed.
    """
    n = cfg.num_candidates
    sampling = dataclasses.replace(cfg, search="sample")
    replies = generate_batch(stack, [p for p in prompts for _ in range(n)], sampling,
                             seeds=[cfg.seed + i for _ in prompts for i in range(n)])
    return [pick_best(stack, p, replies[j * n:(j + 1) * n], cfg) for j, p in enumerate(prompts)]


@dataclass
class _Beam:
    """One hypothesis: its token events so far and its cumulative log-prob (without the value term)."""

    events: list[TokenEvent] = field(default_factory=list)
    logprob: float = 0.0

    def grown(self, event: TokenEvent, logprob: float) -> _Beam:
        return _Beam(self.events + [event], logprob)

    def ended(self, prompt_format: PromptFormat) -> bool:
        """A stop token, or the text now starts a new dialogue turn (the reply would be cut there)."""
        return prompt_format.finished([e.token_id for e in self.events])


@dataclass
class _Expansion:
    """Every beam's top-k expansions of one step, each tensor (n, k) for n alive beams (contributions (n, M, k))."""

    token_ids: torch.Tensor
    logprob: torch.Tensor  # cumulative ranking log-prob after the token (base for MAVIS, the method's otherwise)
    rank: torch.Tensor  # logprob + β·Σ_m λ_m V_m(prefix ⊕ token) for MAVIS; logprob otherwise
    method_logprob: torch.Tensor  # log-prob of the token under the method's top-k distribution
    base_logprob: torch.Tensor  # log π_ref over the full vocabulary, on the plain prompt
    contributions: torch.Tensor | None


def expand(proposals: list[Proposal], cumulative: torch.Tensor) -> _Expansion:
    """Rank the top-k expansions of every alive beam.

    Args:
        proposals: each alive beam's `Proposal` (from `LaneDecoder.propose`), in beam order.
        cumulative: (n,) each beam's cumulative ranking log-prob so far.
    """
    def stacked(name: str) -> torch.Tensor | None:
        parts = [getattr(p, name) for p in proposals]
        return None if parts[0] is None else torch.stack(parts)

    method_lp, base_lp, bonus = stacked("logprobs"), stacked("base_logprobs"), stacked("bonus")  # (n, k) each
    logprob = cumulative[:, None] + (method_lp if bonus is None else base_lp)
    rank = logprob if bonus is None else logprob + bonus
    return _Expansion(stacked("ids"), logprob, rank, method_lp, base_lp, stacked("contributions"))


def _event(step: _Expansion, r: int, j: int, t: int, names: list[str]) -> TokenEvent:
    contrib = None
    if step.contributions is not None:
        contrib = dict(zip(names, step.contributions[r, :, j].tolist(), strict=True))
    return TokenEvent(int(step.token_ids[r, j]), "", float(step.base_logprob[r, j]), float(step.method_logprob[r, j]),
                      contrib, t)


def select_beams(step: _Expansion, alive: list[_Beam], ended: list[_Beam], num_beams: int,
                 prompt_format: PromptFormat, t: int, names: list[str]) -> list[tuple[int, int, _Beam]]:
    """Walk the expansions best first: set aside those that end, keep the first ``num_beams`` that go on.

    Returns (source beam, candidate index, new beam) per kept beam; ``ended`` grows in place. Ties keep the
    lower flat index (stable sort), so the search is deterministic.
    """
    # One copy to the CPU per step: reading the tensors element by element on a GPU would sync each time.
    step = _Expansion(**{f.name: None if (x := getattr(step, f.name)) is None else x.cpu()
                         for f in dataclasses.fields(step)})
    k = step.token_ids.shape[1]
    order = torch.sort(step.rank.flatten(), descending=True, stable=True).indices
    kept = []
    for flat in order.tolist():
        r, j = divmod(flat, k)
        beam = alive[r].grown(_event(step, r, j, t, names), float(step.logprob[r, j]))
        if beam.ended(prompt_format):
            ended.append(beam)
        else:
            kept.append((r, j, beam))
            if len(kept) == num_beams:
                break
    return kept


def to_generation(stack: Stack, prompt: str, events: list[TokenEvent]) -> Generation:
    """A beam's events as a Generation, cut at EOS / a new turn exactly as sampled replies are."""
    row = _Row(stack, prompt)
    for event in events:
        row.add(dataclasses.replace(event))  # a copy: the row writes each event's text, beams share events
        if row.done:
            break
    row.finish()
    return row.gen


def run_beams(stack: Stack, prompt: str, cfg: DecodeConfig) -> list[_Beam]:
    """The beam-search loop over one prompt: B lanes of one `LaneDecoder`, reordered every step.

    Returns the ended beams once B of them have ended; else (at max_new_tokens) the ended beams, then the
    alive ones, which ran to the length limit as a sampled reply would.
    """
    input_ids, attention_mask, lanes = plan_lanes(stack, [prompt], [cfg], [cfg.seed])
    dec = LaneDecoder(stack, input_ids, attention_mask, lanes)  # one beam: the prompt runs once, beams share it
    alive, ended = [_Beam()], []
    for t in range(cfg.max_new_tokens):
        cumulative = torch.tensor([b.logprob for b in alive], device=stack.device)
        step = expand([p for _, p in sorted(dec.propose().items())], cumulative)
        kept = select_beams(step, alive, ended, cfg.num_beams, stack.format, t, stack.objectives)
        alive = [beam for _, _, beam in kept]
        if len(ended) >= cfg.num_beams:
            return ended  # the alive beams stop mid-sentence (often mid "\n\nAssistant"): not replies
        if not alive or t + 1 == cfg.max_new_tokens:
            break
        dec.select([r for r, _, _ in kept], [j for _, j, _ in kept])
        dec.advance()
    return ended + alive


def beam_search(stack: Stack, prompt: str, cfg: DecodeConfig) -> SearchResult:
    """Value-guided beam search (see the module docstring) for one prompt; the best weighted reward wins."""
    replies = [to_generation(stack, prompt, b.events) for b in run_beams(stack, prompt, cfg)]
    return pick_best(stack, prompt, replies, cfg)


def search_batch(stack: Stack, prompts: list[str], cfg: DecodeConfig) -> list[SearchResult]:
    """``search`` for several prompts: best-of-N and sampling batch all prompts together; beams run per prompt."""
    if not prompts:
        return []
    if cfg.search == "best_of_n":
        return best_of_n(stack, prompts, cfg)
    if cfg.search == "beam":
        return [beam_search(stack, p, cfg) for p in prompts]
    replies = generate_batch(stack, prompts, cfg)
    return [pick_best(stack, p, [g], cfg) for p, g in zip(prompts, replies, strict=True)]


def search(stack: Stack, prompt: str, cfg: DecodeConfig) -> SearchResult:
    """Reply to ``prompt`` with ``cfg.search``: "sample" (one sample, scored), "best_of_n" or "beam".

    >>> result = search(stack, "tell me a joke", DecodeConfig(weights={"humor": 1}, search="beam"))  # doctest: +SKIP
    >>> result.best.text, result.weighted[result.index]  # doctest: +SKIP
    """
    return search_batch(stack, [prompt], cfg)[0]
