"""Test-time search on top of tilted decoding: best-of-N and value-guided beam search.

Both pick their winner by the λ-weighted reward Σ_m λ_m r_m(prompt, reply) of the stack's reward models.

- **best-of-N** (``cfg.search == "best_of_n"``): N tilted samples of the method, drawn as ONE batch with seeds
  ``cfg.seed + i``; sample i is exactly ``generate_reply`` with seed ``cfg.seed + i``.
- **beam** (``cfg.search == "beam"``): B beams run as one batch through the method's model(s) and the value
  models. Each step every beam is expanded by the top-k tokens of the method's distribution, and the B best
  expansions are kept, ranked by

      MAVIS:           Σ_t log π_ref(a_t|s_t) + β · Σ_m λ_m V_m(s ⊕ a)      (π_ref over the full vocabulary)
      base, MOD, RSoup: Σ_t log π(a_t|s_t)                                  (π: the method's top-k distribution)

  The value term is the value of the whole new prefix, not a sum over steps: V already estimates the reward
  of the finished reply. Every KV cache (the method's, each value model's) is reordered to the kept beams,
  so a step costs one incremental pass per model, as in sampling. Beams that end (EOS or a new dialogue
  turn) are set aside; the search stops when B beams have ended (then only those compete: the alive ones
  would be cut mid-sentence), or at max_new_tokens (then the ended and the alive beams compete). The best
  λ-weighted reward among them wins. No randomness is involved.

``search`` never streams: a UI shows the winner when the search is done. ``mavis_core.generate`` and
``generate_batch`` always sample (they refuse another ``cfg.search``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from .config import DecodeConfig
from .decoding import Generation, MethodRunner, TokenEvent, _Row, generate_batch
from .dialogue import PromptFormat
from .stack import Stack
from .tilts import mavis_contributions, top_k_logits, value_bonus
from .values import ValueScorer


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


def weighted_rewards(stack: Stack, prompt: str, replies: list[Generation],
                     weights: list[float]) -> tuple[list[dict[str, float]], list[float]]:
    """Every reply's reward per objective (one batch per reward model) and Σ_m λ_m r_m.

    Args:
        weights: λ in the stack's objective order (``cfg.normalised(stack.objectives)``).
    """
    raw = stack.score([prompt] * len(replies), [g.text for g in replies])
    scores = [{name: float(raw[name][i]) for name in stack.objectives} for i in range(len(replies))]
    weighted = [sum(w * s[name] for name, w in zip(stack.objectives, weights, strict=True)) for s in scores]
    return scores, weighted


def pick_best(stack: Stack, prompt: str, replies: list[Generation], cfg: DecodeConfig) -> SearchResult:
    """Score ``replies`` and keep the one with the highest λ-weighted reward (the first one on ties)."""
    scores, weighted = weighted_rewards(stack, prompt, replies, cfg.normalised(stack.objectives))
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
    base_logprob: torch.Tensor | None  # log π_ref over the full vocabulary, when the method samples from it
    contributions: torch.Tensor | None


def expand(logits: torch.Tensor, cumulative: torch.Tensor, scorer: ValueScorer | None, lam: torch.Tensor,
           cfg: DecodeConfig, from_base: bool) -> _Expansion:
    """Score the top-k expansions of every alive beam.

    Args:
        logits: (n, V) next-token logits of the method (of π_ref for base and MAVIS).
        cumulative: (n,) each beam's cumulative ranking log-prob so far.
        scorer: the value models (MAVIS), holding the n beams' prefixes in their caches; else None.
        lam: (M,) λ.
    """
    cand_logits, cand_ids = top_k_logits(logits, cfg.top_k, cfg.temperature)  # (n, k)
    base_lp = torch.log_softmax(logits.float(), -1).gather(1, cand_ids) if from_base else None  # (n, k)
    bonus, contributions = torch.zeros_like(cand_logits), None
    if scorer is not None:
        values = scorer.q_values(cand_ids)  # (n, M, k)
        contributions = mavis_contributions(values, lam, cfg.beta)
        bonus = value_bonus(values, lam, cfg.beta)  # β·Σ_m λ_m V_m
        cand_logits = cand_logits + bonus
    method_lp = torch.log_softmax(cand_logits, -1)  # (n, k)
    logprob = cumulative[:, None] + (base_lp if scorer is not None else method_lp)
    return _Expansion(cand_ids, logprob, logprob + bonus, method_lp, base_lp, contributions)


def _event(step: _Expansion, r: int, j: int, t: int, names: list[str]) -> TokenEvent:
    contrib = None
    if step.contributions is not None:
        contrib = dict(zip(names, step.contributions[r, :, j].tolist(), strict=True))
    base_lp = float("nan") if step.base_logprob is None else float(step.base_logprob[r, j])  # filled in later
    return TokenEvent(int(step.token_ids[r, j]), "", base_lp, float(step.method_logprob[r, j]), contrib, t)


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


def reorder_scorer(scorer: ValueScorer, rows: torch.Tensor, chosen: torch.Tensor) -> None:
    """After ``scorer.q_values``: new beam i continues beam ``rows[i]`` with its candidate ``chosen[i]``.

    The caches still hold prefix + k candidates per row; rows are selected first (with their candidates),
    then each row keeps its chosen candidate, so no value model re-runs anything.
    """
    rows = rows.to(scorer.attention_mask.device)
    scorer.select(rows)
    scorer.keep(chosen.to(rows.device))


@torch.inference_mode()
def fill_base_logprobs(stack: Stack, input_ids: torch.Tensor, beams: list[_Beam]) -> None:
    """log π_ref of every beam's tokens, for methods that do not decode with the base (MOD, RSoup).

    One base pass over all beams (prompt ⊕ reply, right-padded) instead of a base cache that would have to
    follow every reordering. Events shared by several beams share their context, so writing them twice is
    harmless.

    Args:
        input_ids: (1, T) the unpadded prompt.
    """
    beams = [b for b in beams if b.events]
    if not beams:
        return
    prompt, length = input_ids[0].tolist(), max(len(b.events) for b in beams)
    rows = [prompt + [e.token_id for e in b.events] + [0] * (length - len(b.events)) for b in beams]
    ids = torch.tensor(rows, device=input_ids.device)  # (n, T + L)
    mask = torch.tensor([[1] * (len(prompt) + len(b.events)) + [0] * (length - len(b.events)) for b in beams],
                        device=input_ids.device)
    logprobs = torch.log_softmax(stack.base(input_ids=ids, attention_mask=mask).logits.float(), -1)  # (n, T+L, V)
    taken = logprobs[:, :-1].gather(2, ids[:, 1:, None]).squeeze(2).cpu()  # (n, T+L-1): log π_ref of each next token
    start = len(prompt) - 1  # logits at position p predict token p + 1
    for i, beam in enumerate(beams):
        for t, event in enumerate(beam.events):
            event.base_logprob = float(taken[i, start + t])


def to_generation(stack: Stack, prompt: str, events: list[TokenEvent]) -> Generation:
    """A beam's events as a Generation, cut at EOS / a new turn exactly as sampled replies are."""
    row = _Row(stack, prompt)
    for event in events:
        row.add(dataclasses.replace(event))  # a copy: the row writes each event's text, beams share events
        if row.done:
            break
    row.finish()
    return row.gen


def run_beams(stack: Stack, input_ids: torch.Tensor, attention_mask: torch.Tensor, cfg: DecodeConfig) -> list[_Beam]:
    """The beam-search loop over one prompt (1, T).

    Returns the ended beams once B of them have ended; else (at max_new_tokens) the ended beams, then the
    alive ones, which ran to the length limit as a sampled reply would.
    """
    lam = cfg.normalised(stack.objectives)
    lam_vector = torch.tensor(lam)
    runner, scorer = MethodRunner(stack, cfg, lam), None
    if cfg.method == "mavis":
        scorer = ValueScorer(stack.value_models, len(stack.objectives))
        scorer.start(input_ids, attention_mask)
    logits = runner.prefill(input_ids, attention_mask)  # (1, V): the prompt runs once, beams share it
    alive, ended = [_Beam()], []
    for t in range(cfg.max_new_tokens):
        cumulative = torch.tensor([b.logprob for b in alive], device=logits.device)
        step = expand(logits, cumulative, scorer, lam_vector, cfg, runner.samples_from_base)
        kept = select_beams(step, alive, ended, cfg.num_beams, stack.format, t, stack.objectives)
        alive = [beam for _, _, beam in kept]
        if len(ended) >= cfg.num_beams:
            return ended  # the alive beams stop mid-sentence (often mid "\n\nAssistant"): not replies
        if not alive or t + 1 == cfg.max_new_tokens:
            break
        rows = torch.tensor([r for r, _, _ in kept])
        chosen = torch.tensor([j for _, j, _ in kept])
        runner.runner.select(rows)
        if scorer is not None:
            reorder_scorer(scorer, rows, chosen)
        logits = runner.step(torch.tensor([b.events[-1].token_id for b in alive], device=logits.device))
    return ended + alive


def beam_search(stack: Stack, prompt: str, cfg: DecodeConfig) -> SearchResult:
    """Value-guided beam search (see the module docstring) for one prompt; the best weighted reward wins."""
    input_ids, attention_mask, _ = stack.encode([prompt], cfg.max_new_tokens)
    beams = run_beams(stack, input_ids, attention_mask, cfg)
    if cfg.method in ("mod", "rsoup"):
        fill_base_logprobs(stack, input_ids, beams)
    replies = [to_generation(stack, prompt, b.events) for b in beams]
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
