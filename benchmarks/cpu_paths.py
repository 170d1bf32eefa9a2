"""Faster CPU paths for the base step, each against float32 in one run: speed ratio and accuracy (printed only).

    python benchmarks/cpu_paths.py [--stack assets/stack.toml] [--prompts 8] [--steps 24]

For every path: ms per cached decoding step at batch 1 and batch 6 (over each held-out prompt's own prefix),
and the mean KL(p_float32 ‖ p_path) of the next-token distribution over every position of the base's replies
to held-out prompts (nats per token). A path is worth keeping only if it is faster here and its KL stays
below 0.01. Paths: float32 (the reference), bfloat16 weights (oneDNN/AMX kernels where the CPU has them),
float32 under bfloat16 autocast, float16 weights, and float32 with one torch thread instead of two.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import DynamicCache

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: mavis_core is at the repo root

from mavis_core import DecodeConfig, generate_batch
from mavis_core.training.value_training import load_training_stack


@torch.inference_mode()
def step_ms(model, prefix: torch.Tensor, steps: int, autocast: bool = False) -> float:
    """Median ms of one cached decoding step after ``prefix`` (B, T)."""
    cache = DynamicCache()
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)
    with ctx:
        model(input_ids=prefix, past_key_values=cache, use_cache=True)
        token = prefix[:, -1:]
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            model(input_ids=token, past_key_values=cache, use_cache=True)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[2:])


@torch.inference_mode()
def kl_to_float32(reference, model, sequences: list[torch.Tensor], autocast: bool = False) -> float:
    """Mean over positions of KL(p_ref ‖ p_model), nats per token."""
    total, count = 0.0, 0
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)
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
    args = parser.parse_args()
    stack = load_training_stack(args.stack, torch.device("cpu"))
    prompts = json.loads((args.stack.parent / "eval_prompts.json").read_text())[: args.prompts]
    gens = generate_batch(stack, prompts, DecodeConfig(method="base", weights={stack.objectives[0]: 1.0},
                                                       max_new_tokens=48), list(range(len(prompts))))
    sequences = [torch.tensor(stack.format.encode(p) + g.token_ids) for p, g in zip(prompts, gens, strict=True)]
    prefix1 = sequences[0][None, :60]
    prefix6 = torch.stack([s[:40] for s in sequences[:6]])
    base = stack.base
    paths = {"float32": (base, False), "bfloat16 weights": (copy.deepcopy(base).to(torch.bfloat16), False),
             "bfloat16 autocast": (base, True), "float16 weights": (copy.deepcopy(base).to(torch.float16), False)}
    threads = torch.get_num_threads()
    rows = {}
    for name, (model, autocast) in paths.items():
        rows[name] = {"batch1_ms": step_ms(model, prefix1, args.steps, autocast),
                      "batch6_ms": step_ms(model, prefix6, args.steps, autocast),
                      "kl": 0.0 if name == "float32" else kl_to_float32(base, model, sequences, autocast)}
    torch.set_num_threads(1)
    rows["float32, 1 thread"] = {"batch1_ms": step_ms(base, prefix1, args.steps),
                                 "batch6_ms": step_ms(base, prefix6, args.steps), "kl": 0.0}
    torch.set_num_threads(threads)
    ref = rows["float32"]
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{threads} torch threads, {len(sequences)} held-out replies for the KL; ratios are path ÷ float32")
    for name, r in rows.items():
        print(f"{name:20s} batch 1 {r['batch1_ms']:6.1f} ms ({r['batch1_ms'] / ref['batch1_ms']:.2f}x)   "
              f"batch 6 {r['batch6_ms']:6.1f} ms ({r['batch6_ms'] / ref['batch6_ms']:.2f}x)   KL {r['kl']:.4f}")


if __name__ == "__main__":
    main()
