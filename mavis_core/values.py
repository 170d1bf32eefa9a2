"""Value models: Q_m(s, a) = V_m(s ⊕ a) for the k candidates of each step, reusing the prefix's KV cache.

All k candidates are scored in ONE forward pass per value model per step: they are appended after the cached
prefix with a "tree" attention mask (each candidate sees the prefix and itself, not the other candidates) and
the same position. The chosen candidate's keys/values from that pass are then kept in the cache, so the
prefix is never re-run and no second pass is needed to extend the cache (hand-written because no library
offers candidate scoring over a shared cache; transformers accepts the custom 4D mask as-is).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from .stack import ValueModel


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

    Usage: ``start(input_ids, mask)``, then per step ``q = score(candidates)`` and ``keep(chosen)``.
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
    def score(self, candidates: torch.Tensor) -> torch.Tensor:
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
