"""Value models: Q_m(s, a) = V_m(s ⊕ a) for the k candidates of each step, reusing the prefix's KV cache.

All k candidates are scored in ONE forward pass per value model per step: they are appended after the cached
prefix with a "tree" attention mask (each candidate sees the prefix and itself, not the other candidates) and
the same position. The chosen candidate's keys/values from that pass are then kept in the cache, so the
prefix is never re-run and no second pass is needed to extend the cache (hand-written because no library
offers candidate scoring over a shared cache; transformers accepts the custom 4D mask as-is).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, LogitsProcessor

from .config import DecodeConfig
from .tilts import mavis_tilt, top_k_logits
from .value_models import ValueModel


def backbone_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The transformer body and the per-position head of an AutoModelForSequenceClassification."""
    return model.base_model, model.score


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids for left-padded rows: 0 at each row's first real token. (B, T) -> (B, T)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def tree_mask(attention_mask: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive 4D mask for k candidates after a cached prefix.

    Args:
        attention_mask: (B, T) 1 for real prefix tokens, 0 for padding.
    Returns:
        (B, 1, k, T + k): candidate i attends to the real prefix tokens and to itself only.
    """
    b, t = attention_mask.shape
    allowed = torch.cat(
        [attention_mask.bool()[:, None, :].expand(b, k, t),
         torch.eye(k, dtype=torch.bool, device=attention_mask.device)[None].expand(b, k, k)],
        dim=-1,
    )  # (B, k, T + k)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=attention_mask.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def keep_candidate(cache: DynamicCache, prefix_len: int, chosen: torch.Tensor) -> None:
    """Shrink a cache holding prefix + k candidates to prefix + the chosen candidate, in place.

    Args:
        chosen: (B,) index of the kept candidate per row.
    """
    for layer in cache.layers:
        for attr in ("keys", "values"):
            kv = getattr(layer, attr)  # (B, H, T + k, D)
            b, h, _, d = kv.shape
            picked = kv[:, :, prefix_len:].gather(2, chosen.view(b, 1, 1, 1).expand(b, h, 1, d))
            setattr(layer, attr, torch.cat([kv[:, :, :prefix_len], picked], dim=2))


class ValueScorer:
    """Per-request state of every value model of a stack: caches, masks, positions.

    Usage: ``start(input_ids, mask)``, then per step ``q = q_values(candidates)`` and ``keep(chosen)``.
    """

    def __init__(self, value_models: list[ValueModel], num_objectives: int) -> None:
        self.value_models = value_models
        self.num_objectives = num_objectives
        self.caches: list[DynamicCache] = []
        self.attention_mask: torch.Tensor | None = None

    @torch.inference_mode()
    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        """Run the prompt (B, T) through every value model once, filling its cache."""
        self.attention_mask = attention_mask
        self.caches = []
        for vm in self.value_models:
            body, _ = backbone_and_head(vm.model)
            cache = DynamicCache()
            body(input_ids=input_ids, attention_mask=attention_mask,
                 position_ids=positions_from_mask(attention_mask), past_key_values=cache, use_cache=True)
            self.caches.append(cache)

    @torch.inference_mode()
    def q_values(self, candidates: torch.Tensor) -> torch.Tensor:
        """Q_m(s, a) for each candidate a: one forward pass per value model over the cached prefix.

        Args:
            candidates: (B, k) token ids.
        Returns:
            (B, M, k) float32 values in the stack's objective order (0 for objectives with no head).
        """
        b, k = candidates.shape
        out = torch.zeros(b, self.num_objectives, k, device=candidates.device)
        position = self.attention_mask.long().sum(-1, keepdim=True).expand(b, k)  # (B, k)
        for vm, cache in zip(self.value_models, self.caches, strict=True):
            body, head = backbone_and_head(vm.model)
            mask = tree_mask(self.attention_mask, k, vm.model.dtype)
            hidden = body(input_ids=candidates, attention_mask=mask, position_ids=position,
                          past_key_values=cache, use_cache=True).last_hidden_state  # (B, k, H)
            values = head(hidden).float().transpose(1, 2)  # (B, heads, k)
            for j, m in enumerate(vm.heads):
                if m >= 0:
                    out[:, m] = values[:, j]
        return out

    def select(self, rows: torch.Tensor) -> None:
        """Keep only batch rows ``rows`` (n,) of every cache (rows may repeat: beams that share a parent)."""
        for cache in self.caches:
            cache.batch_select_indices(rows)
        self.attention_mask = self.attention_mask[rows]

    def keep(self, chosen: torch.Tensor) -> None:
        """Keep the chosen candidate (B,) of the last ``score`` call in every cache."""
        prefix_len = self.attention_mask.shape[1]
        for cache in self.caches:
            keep_candidate(cache, prefix_len, chosen)
        ones = torch.ones_like(self.attention_mask[:, :1])
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=1)


@torch.inference_mode()
def values_uncached(vm: ValueModel, input_ids: torch.Tensor, num_objectives: int) -> torch.Tensor:
    """V(s) of whole unpadded sequences with no cache: the reference the cached path must equal.

    Args:
        input_ids: (N, T).
    Returns:
        (N, M) values at the last token, in the stack's objective order.
    """
    body, head = backbone_and_head(vm.model)
    values = head(body(input_ids=input_ids).last_hidden_state[:, -1]).float()  # (N, heads)
    out = torch.zeros(input_ids.shape[0], num_objectives)
    for j, m in enumerate(vm.heads):
        if m >= 0:
            out[:, m] = values[:, j].cpu()
    return out


class MavisLogitsProcessor(LogitsProcessor):
    """MAVIS as a transformers ``LogitsProcessor``: ``model.generate(..., logits_processor=[proc], do_sample=True)``.

    Keeps every value model's KV cache between calls (one candidate pass per step, as in ``generate``).
    Scores outside the base's top-k become −inf, so transformers' sampler draws from the tilted top-k.
    Prompts in a batch must have equal length (no padding), and transformers' own temperature should stay 1:
    temperature is applied here, before the tilt, exactly as ``mavis_core.generate`` does.

    Args:
        value_models: ``stack.value_models``; num_objectives: ``len(stack.objectives)``.
        lam: (M,) λ on the simplex, in the stack's objective order.
    """

    def __init__(self, value_models: list, num_objectives: int, lam: list[float], beta: float,
                 top_k: int = DecodeConfig.default("top_k"), temperature: float = 1.0) -> None:
        if len(lam) != num_objectives or min(lam) < 0 or abs(sum(lam) - 1) > 1e-6:
            raise ValueError(f"λ must be {num_objectives} non-negative numbers summing to 1, got {lam}")
        if beta < 0 or top_k < 1 or temperature <= 0:
            raise ValueError(f"need beta >= 0, top_k >= 1, temperature > 0; got {beta}, {top_k}, {temperature}")
        self.scorer = ValueScorer(value_models, num_objectives)
        self.lam, self.beta, self.top_k, self.temperature = torch.tensor(lam), beta, top_k, temperature
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
        values = self.scorer.q_values(cand_ids)  # (B, M, k)
        tilted = mavis_tilt(cand_logits, values, self.lam, self.beta)
        self._candidates, self._length = cand_ids, input_ids.shape[1]
        out = torch.full_like(scores, float("-inf"), dtype=torch.float32)
        return out.scatter(1, cand_ids, tilted).to(scores.dtype)
