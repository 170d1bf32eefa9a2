"""Every policy's LoRA applied to the plain base per batch row, so one forward serves any mix of methods.

Row r of a forward through ``RowLoRA``'s base changes each LoRA-targeted layer by Σ_m s[r, m] · ΔW_m x, with
ΔW_m = scale_m · B_m A_m (peft's own adapter weights): a MOD policy row has s = e_m, an RSoup row s = λ (exactly
θ_0 + Σ λ_m ΔW_m, the interpolated weights), a base or MAVIS row s = 0. No merged copy and no adapter per λ.

Written here rather than using peft's mixed-adapter batches because those cost about 24 ms of a 61 ms base
step on 2 CPU cores (hooks registered on every call, a sub-batch per adapter per layer), even for base-only rows.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .tilts import rsoup_delta

# sets of active columns whose sliced ranks each layer keeps (about 20 MB a set over the default stack's layers)
_PARTS_KEPT = 4
_PARTS_LOCK = threading.Lock()


class _Delta:
    """One LoRA-targeted layer: every policy's A stacked (R, d_in), B·scale stacked (d_out, R), and which
    objective owns each of the R ranks."""

    def __init__(self, layer, objectives: list[str], dtype: torch.dtype) -> None:
        names = [o for o in objectives if o in layer.lora_A]
        for name in names:
            if name in getattr(layer, "lora_variant", {}) or layer.lora_B[name].bias is not None:
                raise ValueError(f"policy of {name!r} is not a plain LoRA (DoRA or LoRA bias); RSoup and "
                                 "MOD rows need plain LoRA adapters")
        # float32 (peft's own precision) for decoding steps, the base's dtype for longer inputs: on a CPU a
        # one-token bfloat16 GEMM this small costs about 25 us against 7 us in float32, while at a 48-token
        # prefill bfloat16 is the faster (`_hook`)
        a32 = torch.cat([layer.lora_A[n].weight for n in names]).detach().T.float().contiguous()  # (d_in, R)
        b32 = torch.cat([layer.lora_B[n].weight * layer.scaling[n] for n in names], dim=1).detach().T \
            .float().contiguous()  # (R, d_out)
        # ``dtype``: the hooked base layer's, which may differ from the policies' own base (training keeps a
        # float32 copy of a bfloat16 stack's base under the adapter it trains, `make_policy`)
        self.by_dtype = {torch.float32: (a32, b32), dtype: (a32.to(dtype), b32.to(dtype))}
        # objective of each rank; layers whose policies agree on it share one per-row scale tensor per forward
        self.owner = tuple(objectives.index(n) for n in names for _ in range(layer.lora_A[n].weight.shape[0]))
        self._parts: dict[frozenset[int], tuple[tuple[int, ...], dict]] = {}

    def part(self, active: frozenset[int]) -> tuple[tuple[int, ...], dict]:
        """Only the ranks of the columns in ``active`` (those some row of the forward weighs): their owners and
        dtype -> (A, B). A batch of the objectives' policies then skips the references' ranks, which it would
        multiply by zero (16 of the default stack's 40 ranks). Kept for the last few sets."""
        part = self._parts.get(active)
        if part is None:
            keep = [j for j, o in enumerate(self.owner) if o in active]
            by_dtype = self.by_dtype if len(keep) == len(self.owner) else {
                d: (a[:, keep].contiguous(), b[keep].contiguous()) for d, (a, b) in self.by_dtype.items()}
            part = (tuple(self.owner[j] for j in keep), by_dtype)
            with _PARTS_LOCK:  # concurrent decodes: evicting iterates the dict another thread may be filling
                while len(self._parts) >= _PARTS_KEPT:
                    self._parts.pop(next(iter(self._parts)))
                self._parts[active] = part
        return part


class RowLoRA:
    """The base model with forward hooks on its LoRA-targeted layers; ``with lora.rows(scales):`` makes the
    forwards of this thread apply row r's mix ``scales[r]`` (M,) of the policies. Outside the block (or for
    an all-zero ``scales``) the base runs plain. Thread-local, so concurrent requests never see each other's."""

    def __init__(self, base: torch.nn.Module, policies, objectives: list[str]) -> None:
        from peft.tuners.lora import LoraLayer

        self.base = base
        self._local = threading.local()
        self._hooks, self._owners, self.deltas = [], set(), []
        for name, layer in policies.base_model.model.named_modules():
            if isinstance(layer, LoraLayer):
                delta = _Delta(layer, objectives, base.get_submodule(name).weight.dtype)
                self._owners.add(delta.owner)
                self.deltas.append(delta)
                self._hooks.append(base.get_submodule(name).register_forward_hook(self._hook(delta)))

    def _hook(self, delta: _Delta):
        local = self._local

        def add_delta(module, inputs, output):
            per_rank = getattr(local, "per_rank", None)
            if per_rank is None:
                return None
            owner, by_dtype = delta.part(local.active)
            if not owner:  # none of this layer's adapters is weighed by any row
                return None
            x = inputs[0]
            # one token per row (a decoding step): the low-rank product in float32, the faster there
            dtype = torch.float32 if x.shape[-2] == 1 else x.dtype
            a_t, b_t = by_dtype[dtype]
            # a product per row (bmm), not one over all B·T rows: the latter's numbers changed with the number of
            # rows, so a MOD, RSoup or conditioned reply changed with the rows beside it (issue 33)
            rows = x.shape[0]
            low = torch.bmm(x.to(dtype), a_t.expand(rows, -1, -1)).mul_(per_rank[dtype][owner])
            # the layer's output is its own fresh tensor; decoding has no autograd
            return output.add_(torch.bmm(low, b_t.expand(rows, -1, -1)))

        return add_delta

    @contextmanager
    def rows(self, scales: torch.Tensor) -> Iterator[torch.nn.Module]:
        """Forwards inside the block give row r the policies' mix ``scales[r]``; yields the base to call."""
        before = getattr(self._local, "per_rank", None), getattr(self._local, "active", None)
        dtype = next(self.base.parameters()).dtype
        active = frozenset(torch.nonzero(scales.any(0)).flatten().tolist())
        # dtype -> the active part of an owner -> (B, 1, R'): row r's scale of every rank some row weighs,
        # computed once per forward, not per layer
        parts = {tuple(o for o in owner if o in active) for owner in self._owners}
        self._local.per_rank = {d: {part: scales[:, list(part)].to(d)[:, None, :] for part in parts}
                                for d in {dtype, torch.float32}} if active else None
        self._local.active = active
        try:
            yield self.base
        finally:
            self._local.per_rank, self._local.active = before

    def remove(self) -> None:
        """Take the hooks off the base."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []


@torch.no_grad()
def merge_policies(base: torch.nn.Module, policies, weights: dict[str, float]) -> torch.nn.Module:
    """A copy of ``base`` whose LoRA-targeted weights are W_0 + Σ_m λ_m ΔW_m (peft's own ΔW = scale·B·A): the
    RSoup model as a standalone copy, to save or to check `RowLoRA`'s RSoup rows against."""
    from peft.tuners.lora import LoraLayer

    merged = copy.deepcopy(base)
    for name, module in policies.base_model.model.named_modules():
        if isinstance(module, LoraLayer):
            deltas = [module.get_delta_weight(a) for a in weights if a in module.lora_A]
            lams = [w for a, w in weights.items() if a in module.lora_A]
            target = merged.get_submodule(name)
            target.weight += rsoup_delta(deltas, lams).to(target.weight.dtype)
    return merged.eval()
