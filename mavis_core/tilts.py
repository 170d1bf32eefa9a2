"""The combination rules of every method, as small pure functions (none modifies its inputs).

Notation: k candidates (the top-k tokens), M objectives, λ the weights on the simplex, β the tilt strength.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor


def top_k_logits(logits: torch.Tensor, top_k: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of ``logits / temperature``.

    Args:
        logits: (..., V) unnormalised scores of the method's distribution.
    Returns:
        (values, indices), each (..., k) with k = min(top_k, V), best first.
    """
    k = min(top_k, logits.shape[-1])
    return torch.topk(logits.float() / temperature, k, dim=-1)


def mavis_tilt(topk_logits: torch.Tensor, values: torch.Tensor, weights: torch.Tensor, beta: float) -> torch.Tensor:
    """MAVIS (arXiv 2508.13415, eq. for π_MAVIS): log π_ref(a|s) + β · Σ_m λ_m Q_m(s, a), per candidate.

    Softmax of the result over the k candidates is the tilted sampling distribution.

    Args:
        topk_logits: (..., k) base logits (after temperature) of the k candidates.
        values: (..., M, k) Q_m(s, a) of each candidate for each objective.
        weights: (M,) λ, non-negative, summing to 1.
        beta: tilt strength; β = 0 gives the base distribution over the top-k.
    Returns:
        (..., k) tilted logits.
    """
    weights = weights.to(values)
    return topk_logits + beta * torch.einsum("...mk,m->...k", values, weights)


def mavis_contributions(values: torch.Tensor, weights: torch.Tensor, beta: float) -> torch.Tensor:
    """β · λ_m · (Q_m(s, a) − mean over the k candidates of Q_m): how much each objective pushed each candidate.

    Args:
        values: (..., M, k); weights: (M,).
    Returns:
        (..., M, k)
    """
    centred = values - values.mean(dim=-1, keepdim=True)
    return beta * weights.to(values)[:, None] * centred


def mod_mix(policy_logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """MOD (Shi et al. 2024): Σ_m λ_m log π_m(a|s) over the whole vocabulary.

    Args:
        policy_logits: (M, ..., V) logits of each objective's policy.
        weights: (M,) λ.
    Returns:
        (..., V) mixed log-scores (softmax of them is the MOD distribution).
    """
    logprobs = torch.log_softmax(policy_logits.float(), dim=-1)
    return torch.einsum("m...v,m->...v", logprobs, weights.to(logprobs))


def rsoup_delta(deltas: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """RSoup (Ramé et al. 2023) for LoRA policies: the exact weight change Σ_m λ_m B_m A_m (scaled).

    Mixing A's and B's separately would give Σλ_m B_m · Σλ_m A_m, which is not an interpolation of the
    policies; the per-policy products are summed instead.
    """
    return sum(w * d for w, d in zip(weights, deltas, strict=True))


def sample_index(logits: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """Sample one index per row from softmax(logits), row i drawing from ``generators[i]``.

    One generator per row makes a batched run draw exactly what the unbatched runs draw.
    Args:
        logits: (B, k).
    Returns:
        (B,) long indices into the last dimension.
    """
    probs = torch.softmax(logits.float(), dim=-1).cpu()  # (B, k)
    draws = torch.stack([torch.rand((), generator=g) for g in generators])  # (B,)
    cdf = probs.cumsum(dim=-1)
    idx = torch.searchsorted(cdf, (draws * cdf[:, -1]).unsqueeze(-1)).squeeze(-1)
    return idx.clamp(max=logits.shape[-1] - 1).to(logits.device)


class MavisLogitsProcessor(LogitsProcessor):
    """MAVIS as a transformers ``LogitsProcessor``: ``model.generate(..., logits_processor=[proc], do_sample=True)``.

    Keeps every value model's KV cache between calls (one candidate pass per step, as in ``generate``).
    Scores outside the base's top-k become −inf, so transformers' sampler draws from the tilted top-k.
    Prompts in a batch must have equal length (no padding), and transformers' own temperature should stay 1:
    temperature is applied here, before the tilt, exactly as ``mavis_core.generate`` does.

    Args:
        value_models: ``stack.value_models``; num_objectives: ``len(stack.objectives)``.
        weights: (M,) λ on the simplex, in the stack's objective order.
    """

    def __init__(self, value_models: list, num_objectives: int, weights: list[float], beta: float,
                 top_k: int = 15, temperature: float = 1.0) -> None:
        from .values import ValueScorer  # values imports the stack, which imports this module

        if len(weights) != num_objectives or min(weights) < 0 or abs(sum(weights) - 1) > 1e-6:
            raise ValueError(f"weights must be {num_objectives} non-negative numbers summing to 1, got {weights}")
        if beta < 0 or top_k < 1 or temperature <= 0:
            raise ValueError(f"need beta >= 0, top_k >= 1, temperature > 0; got {beta}, {top_k}, {temperature}")
        self.scorer = ValueScorer(value_models, num_objectives)
        self.weights, self.beta, self.top_k, self.temperature = torch.tensor(weights), beta, top_k, temperature
        self._candidates: torch.Tensor | None = None  # (B, k) of the previous call
        self._length = -1

    def _follow(self, input_ids: torch.Tensor) -> None:
        """Bring the value caches up to ``input_ids``: keep last step's chosen candidate, or start afresh."""
        if self._candidates is not None and input_ids.shape[1] == self._length + 1:
            hits = self._candidates == input_ids[:, -1:]  # (B, k)
            if bool(hits.any(-1).all()):
                self.scorer.keep(hits.float().argmax(-1))
                return
        self.scorer.start(input_ids, torch.ones_like(input_ids))

    @torch.inference_mode()
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._follow(input_ids)
        cand_logits, cand_ids = top_k_logits(scores, self.top_k, self.temperature)  # (B, k)
        values = self.scorer.score(cand_ids)  # (B, M, k)
        tilted = mavis_tilt(cand_logits, values, self.weights, self.beta)
        self._candidates, self._length = cand_ids, input_ids.shape[1]
        out = torch.full_like(scores, float("-inf"), dtype=torch.float32)
        return out.scatter(1, cand_ids, tilted).to(scores.dtype)
