"""The one generation loop behind every method: KV caches, top-k, temperature, seed, streaming events.

Per step each method produces the logits of its own distribution (base: π_ref; MOD: Σ λ_m log π_m; RSoup:
the merged model; MAVIS: π_ref, tilted over its top-k by the value models), samples from its top-k after
temperature, and reports the chosen token's log-prob under that distribution and under π_ref (full
vocabulary, temperature 1), so Σ (logprob − base_logprob) estimates KL(π ‖ π_ref) for the reply.
"""

from __future__ import annotations

import threading
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
    """

    token_id: int
    text: str
    base_logprob: float
    logprob: float
    contributions: dict[str, float] | None = None
    index: int = 0
    row: int = 0


@dataclass
class Generation:
    """A finished reply and its per-token events."""

    prompt: str
    text: str
    events: list[TokenEvent] = field(default_factory=list)
    finish_reason: str = "length"  # "eos", "stop" (a new dialogue turn began) or "length"
    prompt_truncated: bool = False

    @property
    def token_ids(self) -> list[int]:
        return [e.token_id for e in self.events]

    @property
    def kl(self) -> float:
        """Sequence estimate of KL(π ‖ π_ref): Σ_t log π(a_t|s_t) − log π_ref(a_t|s_t)."""
        return sum(e.logprob - e.base_logprob for e in self.events)


_PEFT_MIXED_BATCH_LOCK = threading.Lock()


class CausalRunner:
    """A causal LM with its own KV cache, fed new tokens for every row.

    ``adapter_names`` (peft mixed-adapter batches) runs several adapters of one peft model as one batch:
    row r of the request is replicated once per adapter name, so MOD costs one forward per step.
    """

    def __init__(self, model: torch.nn.Module, adapter_names: list[str] | None = None) -> None:
        self.model = model
        self.adapter_names = adapter_names
        self.copies = len(adapter_names) if adapter_names else 1
        self.cache = DynamicCache()

    def _forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        kwargs = dict(input_ids=input_ids, attention_mask=self.attention_mask, position_ids=positions,
                      past_key_values=self.cache, use_cache=True)
        if self.adapter_names:
            # peft passes adapter_names to its layers through hooks it adds to the shared model for the
            # duration of the call, so two such calls at once (two app users) would see each other's names.
            with _PEFT_MIXED_BATCH_LOCK:
                out = self.model(**kwargs, adapter_names=self.adapter_names * (input_ids.shape[0] // self.copies))
        else:
            out = self.model(**kwargs)
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


class LazyBase:
    """log π_ref of chosen tokens for methods that do not sample from the base (MOD, RSoup).

    Instead of one base forward per step, the base catches up over the tokens chosen since its last call,
    in chunks that double up to ``MAX_CHUNK``: the first token is reported at once, and a 64-token reply
    costs about 7 base passes instead of 64. The price is that such a method's events arrive in small
    bursts (hand-written: no library computes reference log-probs lazily during sampling).
    """

    MAX_CHUNK = 16

    def __init__(self, base: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        self.runner = CausalRunner(base)
        self.next_logits = self.runner.prefill(input_ids, attention_mask)[:, 0]  # (B, V)
        self.chunk = 1

    def due(self, pending: int) -> bool:
        return pending >= self.chunk

    def logprobs(self, tokens: torch.Tensor) -> torch.Tensor:
        """log π_ref of n tokens (B, n) chosen in a row since the last call. Returns (B, n)."""
        after = self.runner.extend(tokens)[:, 0]  # (B, n, V): logits after each token
        logits = torch.cat([self.next_logits[:, None], after[:, :-1]], dim=1)  # (B, n, V): logits before each
        self.next_logits = after[:, -1]
        self.chunk = min(2 * self.chunk, self.MAX_CHUNK)
        return torch.log_softmax(logits, -1).gather(2, tokens[..., None]).squeeze(2)


class MethodRunner:
    """Produces the logits of one decoding method's distribution, (B, V), and π_ref's when it has them."""

    def __init__(self, stack: Stack, cfg: DecodeConfig, weights: list[float]) -> None:
        if cfg.method not in stack.methods:
            raise ValueError(
                f"method {cfg.method!r} needs models this stack does not have; available: {stack.methods}"
            )
        self.method = cfg.method
        self.weights = torch.tensor(weights)
        self.runner = CausalRunner(stack.base)
        if cfg.method == "rsoup":
            self.runner = CausalRunner(stack.rsoup_model(weights))
        if cfg.method == "mod":
            # Only objectives with λ > 0 contribute; skipping the rest keeps one-hot MOD as cheap as one policy.
            self.active = [i for i, w in enumerate(weights) if w > 0]
            self.runner = CausalRunner(stack.policies, adapter_names=[stack.objectives[i] for i in self.active])

    @property
    def samples_from_base(self) -> bool:
        """Base and MAVIS sample from π_ref's own logits; MOD and RSoup need π_ref on the side (LazyBase)."""
        return self.method in ("base", "mavis")

    def _logits(self, out: torch.Tensor) -> torch.Tensor:
        if self.method == "mod":  # out: (B, active, V), one row per policy
            return mod_mix(out.transpose(0, 1), self.weights[self.active])
        return out[:, 0]

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self._logits(self.runner.prefill(input_ids, attention_mask))

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._logits(self.runner.step(tokens))


def decode_steps(stack: Stack, input_ids: torch.Tensor, attention_mask: torch.Tensor, cfg: DecodeConfig,
           seeds: list[int]) -> Iterator[tuple]:
    """The decoding loop. Yields per step, each over the batch (B,): tokens, base log-probs, log-probs,
    and for MAVIS the chosen tokens' contributions (B, M), else None."""
    weights = cfg.normalised(stack.objectives)
    lam = torch.tensor(weights)
    runner = MethodRunner(stack, cfg, weights)
    scorer, lazy_base, pending = None, None, []
    if cfg.method == "mavis":
        scorer = ValueScorer(stack.value_models, len(stack.objectives))
        scorer.start(input_ids, attention_mask)
    if not runner.samples_from_base:
        lazy_base = LazyBase(stack.base, input_ids, attention_mask)
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    logits = runner.prefill(input_ids, attention_mask)
    for t in range(cfg.max_new_tokens):
        cand_logits, cand_ids = top_k_logits(logits, cfg.top_k, cfg.temperature)  # (B, k)
        contributions = None
        if scorer is not None:
            values = scorer.score(cand_ids)  # (B, M, k)
            contributions = mavis_contributions(values, lam, cfg.beta)  # (B, M, k)
            cand_logits = mavis_tilt(cand_logits, values, lam, cfg.beta)
        chosen = sample_index(cand_logits, generators)  # (B,)
        tokens = cand_ids.gather(1, chosen[:, None]).squeeze(1)  # (B,)
        logprob = torch.log_softmax(cand_logits, -1).gather(1, chosen[:, None]).squeeze(1)
        if lazy_base is None:
            base_lp = torch.log_softmax(logits.float(), -1).gather(1, tokens[:, None]).squeeze(1)
            if contributions is not None:
                m = contributions.shape[1]
                contributions = contributions.gather(2, chosen.view(-1, 1, 1).expand(-1, m, 1)).squeeze(2).cpu()
            yield tokens.cpu(), base_lp.cpu(), logprob.cpu(), contributions
        else:
            pending.append((tokens, logprob))
            if lazy_base.due(len(pending)) or t + 1 == cfg.max_new_tokens:
                base_lps = lazy_base.logprobs(torch.stack([tok for tok, _ in pending], dim=1))  # (B, n)
                for j, (tok, lp) in enumerate(pending):
                    yield tok.cpu(), base_lps[:, j].cpu(), lp.cpu(), None
                pending = []
        if t + 1 < cfg.max_new_tokens:
            if scorer is not None:
                scorer.keep(chosen)
            logits = runner.step(tokens)


class _Row:
    """Per-prompt reply state: its text so far, events held back while they may start a stop string."""

    def __init__(self, stack: Stack, prompt: str, truncated: bool) -> None:
        self.tokenizer = stack.tokenizer
        self.format = stack.format
        self.gen = Generation(prompt=prompt, text="", prompt_truncated=truncated)
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


class Decode:
    """One decoding run over a batch of prompts: iterate for (row, event) pairs; ``rows`` holds the replies."""

    def __init__(self, stack: Stack, prompts: list[str], cfg: DecodeConfig, seeds: list[int]) -> None:
        if len(seeds) != len(prompts):
            raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts; give one seed per prompt")
        if cfg.search != "sample":  # silently sampling instead would look like a search result
            raise ValueError(f"search {cfg.search!r} is run by mavis_core.search.search; this loop only samples")
        cfg.normalised(stack.objectives)  # validate the weights before any work
        self.stack, self.cfg, self.seeds = stack, cfg, seeds
        self.input_ids, self.attention_mask, truncated = stack.encode(prompts, cfg.max_new_tokens)
        self.rows = [_Row(stack, p, tr) for p, tr in zip(prompts, truncated, strict=True)]

    @property
    def generations(self) -> list[Generation]:
        return [row.gen for row in self.rows]

    def __iter__(self) -> Iterator[tuple[int, TokenEvent]]:
        names = self.stack.objectives
        steps = decode_steps(self.stack, self.input_ids, self.attention_mask, self.cfg, self.seeds)
        for t, (tokens, base_lp, logprob, contributions) in enumerate(steps):
            for r, row in enumerate(self.rows):
                if row.done:
                    continue
                contrib = None if contributions is None else dict(zip(names, contributions[r].tolist(), strict=True))
                event = TokenEvent(int(tokens[r]), "", float(base_lp[r]), float(logprob[r]), contrib, t, r)
                for shown in row.add(event):
                    yield r, shown
            if all(row.done for row in self.rows):
                break
        for r, row in enumerate(self.rows):  # replies that ran to max_new_tokens: release what was held back
            row.done = True
            for shown in row._flush(len(row.full)):
                yield r, shown


def generate(stack: Stack, prompt: str, cfg: DecodeConfig) -> Iterator[TokenEvent]:
    """Stream one reply to ``prompt`` token by token.

    Stops at EOS, at the start of a new dialogue turn, or after ``cfg.max_new_tokens`` tokens.
    The same seed, prompt and settings give the same text.
    """
    for _, event in Decode(stack, [prompt], cfg, [cfg.seed]):
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
    run = Decode(stack, prompts, cfg, seeds if seeds is not None else [cfg.seed] * len(prompts))
    for _ in run:
        pass
    return run.generations
