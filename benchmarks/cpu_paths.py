"""Faster CPU paths for the base step, each against float32 in one run: speed ratio and accuracy (printed only).

    python benchmarks/cpu_paths.py [--stack assets/stack.toml] [--prompts 8] [--steps 24]

For every path: ms per cached decoding step at batch 1 and batch 6 (over each held-out prompt's own prefix),
and the mean KL(p_float32 ‖ p_path) of the next-token distribution over every position of the base's replies
to held-out prompts (nats per token). A path is worth keeping only if it is faster here and its KL stays
below 0.01. Paths: float32 (the reference), bfloat16 weights (oneDNN/AMX kernels where the CPU has them),
bfloat16 weights pre-packed for oneDNN (reordered once, not at every call), float32
under bfloat16 autocast, float16 weights, bfloat16 with fused projections (q, k, v as one matmul and gate, up as
another), float32 with one torch thread instead of two, and with ``--compile`` bfloat16 under
``torch.compile(dynamic=True)`` (each new shape class compiles for minutes on 2 cores, so it is opt-in).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import DynamicCache

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: mavis_core is at the repo root

from report import print_rows

from mavis_core import DecodeConfig, generate_batch
from mavis_core.prompts import read_prompts
from mavis_core.training.value_training import load_training_stack


class _Fused(torch.nn.Module):
    """One matmul for several projections of the same input; each projection's module reads its slice."""

    def __init__(self, linears: list[torch.nn.Linear]):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.cat([lin.weight for lin in linears]), requires_grad=False)
        self.sizes = [lin.weight.shape[0] for lin in linears]
        self.input, self.parts = None, ()

    def part(self, x: torch.Tensor, index: int) -> torch.Tensor:
        if index == 0 or self.input is not x:  # the first projection of an input computes all of them
            self.input, self.parts = x, F.linear(x, self.weight).split(self.sizes, -1)
        return self.parts[index]


class _Part(torch.nn.Module):
    def __init__(self, fused: _Fused, index: int):
        super().__init__()
        self.fused, self.index = [fused], index  # a list, so the shared module is not registered three times

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused[0].part(x, self.index)


def fuse_projections(model):
    """q/k/v and gate/up of every Llama block as one matmul each (the attention and MLP call them in that order)."""
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        attn.qkv = _Fused([attn.q_proj, attn.k_proj, attn.v_proj])
        attn.q_proj, attn.k_proj, attn.v_proj = (_Part(attn.qkv, i) for i in range(3))
        mlp.gate_up = _Fused([mlp.gate_proj, mlp.up_proj])
        mlp.gate_proj, mlp.up_proj = (_Part(mlp.gate_up, i) for i in range(2))
    return model


def pack_linears(model):
    """Every nn.Linear of a bfloat16 model on oneDNN's pre-packed weight (inference only)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            packed = torch.ops.mkldnn._reorder_linear_weight(m.weight.detach(), 1)
            m.forward = lambda x, w=packed, b=m.bias: torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")
    return model


def _context(autocast: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)


@torch.inference_mode()
def step_ms(paths: dict[str, tuple], prefix: torch.Tensor, steps: int) -> dict[str, float]:
    """Median ms of one cached decoding step after ``prefix`` (B, T) for every path (name -> (model, autocast)).

    The paths take turns step by step (the order turning each round), so this machine's drift between seconds
    falls on all of them alike; each path's first two steps (a compiled path compiles there) are not counted.
    """
    caches, times = {}, {name: [] for name in paths}
    token = prefix[:, -1:]
    for name, (model, autocast) in paths.items():
        with _context(autocast):
            caches[name] = DynamicCache()
            model(input_ids=prefix, past_key_values=caches[name], use_cache=True)
            for _ in range(2):
                model(input_ids=token, past_key_values=caches[name], use_cache=True, logits_to_keep=1)
    names = list(paths)
    for i in range(steps):
        for name in names[i % len(names):] + names[: i % len(names)]:
            model, autocast = paths[name]
            with _context(autocast):
                start = time.perf_counter()
                model(input_ids=token, past_key_values=caches[name], use_cache=True, logits_to_keep=1)
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


@torch.inference_mode()
def kl_to_float32(reference, model, sequences: list[torch.Tensor], autocast: bool = False) -> float:
    """Mean over positions of KL(p_ref ‖ p_model), nats per token."""
    total, count = 0.0, 0
    ctx = _context(autocast)
    for ids in sequences:
        p = torch.log_softmax(reference(input_ids=ids[None]).logits[0].float(), -1)
        with ctx:
            q = torch.log_softmax(model(input_ids=ids[None]).logits[0].float(), -1)
        total += float((p.exp() * (p - q)).sum(-1).sum())
        count += ids.shape[0]
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", type=Path, default=Path("assets/stack.toml"))
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--compile", action="store_true",
                        help="also time bfloat16 under torch.compile (several minutes of compiling on 2 cores)")
    args = parser.parse_args()
    # float32, whatever the stack's [base] dtype: it is the reference every path is compared with
    stack = load_training_stack(args.stack, torch.device("cpu"), torch.float32)
    prompts = read_prompts(args.stack.parent / "eval_prompts.json")[: args.prompts]
    gens = generate_batch(stack, prompts, DecodeConfig(method="base", weights={stack.objectives[0]: 1.0},
                                                       max_new_tokens=48), list(range(len(prompts))))
    sequences = [torch.tensor(stack.format.encode(p) + g.token_ids) for p, g in zip(prompts, gens, strict=True)]
    prefix1 = sequences[0][None, :60]
    prefix6 = torch.stack([s[:40] for s in sequences[:6]])
    base = stack.base
    packed = pack_linears(copy.deepcopy(base).to(torch.bfloat16))
    paths = {"float32": (base, False), "bfloat16 weights": (copy.deepcopy(base).to(torch.bfloat16), False),
             "bfloat16 pre-packed": (packed, False), "bfloat16 autocast": (base, True),
             "float16 weights": (copy.deepcopy(base).to(torch.float16), False),
             "bfloat16 fused proj": (fuse_projections(copy.deepcopy(base).to(torch.bfloat16)), False)}
    if args.compile:
        compiled = copy.deepcopy(base).to(torch.bfloat16)
        compiled.forward = torch.compile(compiled.forward, dynamic=True)
        paths["bfloat16 compiled"] = (compiled, False)
    threads = torch.get_num_threads()
    start = time.perf_counter()
    batch1, batch6 = step_ms(paths, prefix1, args.steps), step_ms(paths, prefix6, args.steps)
    rows = {name: {"batch1_ms": batch1[name], "batch6_ms": batch6[name],
                   "kl": 0.0 if name == "float32" else kl_to_float32(base, model, sequences, autocast)}
            for name, (model, autocast) in paths.items()}
    timing_seconds = time.perf_counter() - start  # compiling included
    torch.set_num_threads(1)
    one = step_ms({"float32": paths["float32"]}, prefix1, args.steps)["float32"]
    six = step_ms({"float32": paths["float32"]}, prefix6, args.steps)["float32"]
    rows["float32, 1 thread"] = {"batch1_ms": one, "batch6_ms": six, "kl": 0.0}
    torch.set_num_threads(threads)
    ref = rows["float32"]
    print_rows(rows, args.json, f"{threads} torch threads, {len(sequences)} held-out replies for the KL; ratios are "
               "path ÷ float32",
               lambda name, r: f"{name:20s} batch 1 {r['batch1_ms']:6.1f} ms ({r['batch1_ms'] / ref['batch1_ms']:.2f}x)"
                               f"   batch 6 {r['batch6_ms']:6.1f} ms ({r['batch6_ms'] / ref['batch6_ms']:.2f}x)   "
                               f"KL {r['kl']:.4f}")
    if not args.json:
        print(f"({timing_seconds:.0f} s for the paths' timings and KLs, compiling included)")


if __name__ == "__main__":
    main()
