"""The combination rules of every method, as small pure functions (none modifies its inputs).

Notation: k candidates (the top-k tokens), M objectives, λ (``lam``) the objective weights normalised onto the
simplex, β the tilt strength. ``weights`` elsewhere are a user's raw weights, before that normalisation.
"""

from __future__ import annotations

import torch


def top_k_logits(logits: torch.Tensor, top_k: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of ``logits / temperature``.

    Args:
        logits: (..., V) unnormalised scores of the method's distribution.
    Returns:
        (values, indices), each (..., k) with k = min(top_k, V), best first.
    """
    k = min(top_k, logits.shape[-1])
    return torch.topk(logits.float() / temperature, k, dim=-1)


def mavis_tilt(topk_logits: torch.Tensor, values: torch.Tensor, lam: torch.Tensor, beta: float) -> torch.Tensor:
    """MAVIS (arXiv 2508.13415, eq. for π_MAVIS): log π_ref(a|s) + β · Σ_m λ_m Q_m(s, a), per candidate.

    Softmax of the result over the k candidates is the tilted sampling distribution.

    Args:
        topk_logits: (..., k) base logits (after temperature) of the k candidates.
        values: (..., M, k) Q_m(s, a) of each candidate for each objective.
        lam: (M,) λ, non-negative, summing to 1.
        beta: tilt strength; β = 0 gives the base distribution over the top-k.
    Returns:
        (..., k) tilted logits.
    """
    return topk_logits + value_bonus(values, lam, beta)


def value_bonus(values: torch.Tensor, lam: torch.Tensor, beta: float) -> torch.Tensor:
    """The MAVIS tilt alone: β · Σ_m λ_m Q_m(s, a) per candidate, (..., M, k) -> (..., k).

    ``mavis_tilt(logits, values, lam, beta) == logits + value_bonus(values, lam, beta)``.
    """
    return beta * torch.einsum("...mk,m->...k", values, lam.to(values))


def mavis_contributions(values: torch.Tensor, lam: torch.Tensor, beta: float) -> torch.Tensor:
    """β · λ_m · (Q_m(s, a) − mean over the k candidates of Q_m): how much each objective pushed each candidate.

    Args:
        values: (..., M, k); lam: (M,).
    Returns:
        (..., M, k)
    """
    centred = values - values.mean(dim=-1, keepdim=True)
    return beta * lam.to(values)[:, None] * centred


def mod_mix(policy_logits: torch.Tensor, lam: torch.Tensor, ref_logits: torch.Tensor | None = None,
            strength: float = 1.0) -> torch.Tensor:
    """MOD (Shi et al. 2024): Σ_m λ_m log π_m(a|s) over the whole vocabulary; with ``strength`` α ≠ 1,
    (1 − α)·log π_ref + α·Σ_m λ_m log π_m (α = 0 is the base; α > 1 extrapolates past the policies).

    Args:
        policy_logits: (M, ..., V) logits of each objective's policy.
        lam: (M,) λ.
        ref_logits: (..., V) the base's logits; needed only when α ≠ 1.
    Returns:
        (..., V) mixed log-scores (softmax of them is the MOD distribution).
    """
    if lam.shape != policy_logits.shape[:1]:
        raise ValueError(f"MOD needs one weight per policy: got {tuple(lam.shape)} weights for "
                         f"{policy_logits.shape[0]} policies")
    logprobs = torch.log_softmax(policy_logits.float(), dim=-1)
    mixed = torch.einsum("m...v,m->...v", logprobs, lam.to(logprobs))
    if strength == 1:
        return mixed
    if ref_logits is None:
        raise ValueError("MOD at a strength other than 1 needs the base's logits")
    return (1 - strength) * torch.log_softmax(ref_logits.float(), dim=-1) + strength * mixed


def rsoup_delta(deltas: list[torch.Tensor], lam: list[float]) -> torch.Tensor:
    """RSoup (Ramé et al. 2023) for LoRA policies: the exact weight change Σ_m λ_m B_m A_m (scaled).

    Mixing A's and B's separately would give Σλ_m B_m · Σλ_m A_m, which is not an interpolation of the
    policies; the per-policy products are summed instead.
    """
    return sum(w * d for w, d in zip(lam, deltas, strict=True))


def weighted_reward(rewards: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """The scalarised reward Σ_m λ_m r_m that best-of-N and beam search pick by (objectives left out weigh 0).

    Args:
        rewards: objective -> (n,) each reply's reward; weights: objective -> λ_m.
    Returns:
        (n,)

    >>> weighted_reward({"helpful": torch.tensor([1.0, 0.0]), "humor": torch.tensor([0.5, 1.0])},
    ...                 {"helpful": 0.5, "humor": 0.5})
    tensor([0.7500, 0.5000])
    """
    return sum(w * rewards[name] for name, w in weights.items())


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
