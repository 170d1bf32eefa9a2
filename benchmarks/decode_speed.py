"""Time per token of each method ÷ base, and of all four side by side ÷ base, measured in one run (printed,
never asserted).

    python benchmarks/decode_speed.py                       # the default stack (SmolLM2-135M-Instruct)
    python benchmarks/decode_speed.py --stack assets/tiny/stack.toml
    python benchmarks/decode_speed.py --random              # random weights shaped like the tiny stack
    python benchmarks/decode_speed.py --dtype float32       # the base in another dtype than the stack's
    python benchmarks/decode_speed.py --json                # one JSON object: mavis, mod, rsoup, all, base_ms,
                                                            # all_first_step_ms

Batch 1, 64 new tokens, equal weights over all 3 objectives, k = 15. ``all``: the four methods decoded side by
side (one batched forward per step, as the app's Generate does), seconds per step ÷ the base's seconds per token.
``all_first_step_ms``: how long those four wait for their first tokens (every row's prefill, then the first step).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: mavis_core is at the repo root

from mavis_core import DecodeConfig, generate, load_stack
from mavis_core.config import DTYPES
from mavis_core.decoding import Decode
from mavis_core.stack import pick_device, pick_dtype
from mavis_core.testing import build_random_stack

PROMPT = "hi! how was your weekend? did you do anything fun?"


def seconds_per_token(stack, cfg: DecodeConfig) -> float:
    start = time.perf_counter()
    n = sum(1 for _ in generate(stack, PROMPT, cfg))
    return (time.perf_counter() - start) / max(n, 1)


def side_by_side(stack, configs: list[DecodeConfig]) -> tuple[float, float]:
    """Every method as rows of one batch: (wall time ÷ the steps decoded (the longest reply's tokens), seconds
    from the start to the first step's tokens: the prompt's prefill for every row, the value model's, and the
    first sample, which is what the app's first token waits for besides gradio)."""
    start = time.perf_counter()
    run = Decode(stack, [PROMPT] * len(configs), configs, [c.seed for c in configs])
    first = None
    for _ in run.steps():
        first = first if first is not None else time.perf_counter() - start
    return (time.perf_counter() - start) / max(1, max(len(g.events) for g in run.generations)), first


def median_times(stack, configs: dict[str, DecodeConfig], repeats: int) -> dict[str, float]:
    """Median seconds per token of each method, and per step of all of them side by side ("all"); they take
    turns in every round, so drift in the machine's load hits all of them alike (the ratios are the point)."""
    for cfg in configs.values():  # warm-up: first-call costs, RSoup's adapter for this λ
        seconds_per_token(stack, cfg)
    times: dict[str, list[float]] = {m: [] for m in [*configs, "all", "all_first_step"]}
    for r in range(repeats):
        seeded = {m: DecodeConfig(**{**cfg.__dict__, "seed": r}) for m, cfg in configs.items()}
        for method, cfg in seeded.items():
            times[method].append(seconds_per_token(stack, cfg))
        per_step, first = side_by_side(stack, list(seeded.values()))
        times["all"].append(per_step)
        times["all_first_step"].append(first)
    return {m: statistics.median(t) for m, t in times.items()}


def random_stack(folder: Path, fused: bool) -> Path:
    sizes = dict(n_embd=256, n_layer=4, n_head=4, n_positions=256)
    build_random_stack(folder, base=sizes, value={**sizes, "n_layer": 1}, vocab_size=4096)
    return folder / ("stack-fused.toml" if fused else "stack-sep.toml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="assets/stack.toml", help="stack TOML (default assets/stack.toml)")
    parser.add_argument("--random", action="store_true", help="a random stack shaped like the tiny one instead")
    parser.add_argument("--fused", action="store_true", help="random stack: one fused value model for all 3")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=DecodeConfig.default("top_k"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--dtype", choices=DTYPES, help="the base's dtype instead of the stack's [base] dtype")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = random_stack(Path(tmp), args.fused) if args.random else args.stack
        stack = load_stack(path, dtype=pick_dtype(args.dtype, pick_device()) if args.dtype else None)
        weights = {name: 1.0 for name in stack.objectives}
        configs = {m: DecodeConfig(method=m, weights=weights, beta=1.0, top_k=args.top_k,
                                   max_new_tokens=args.tokens, seed=0) for m in stack.methods}
        times = median_times(stack, configs, args.repeats)
    first_step = times.pop("all_first_step")
    ratios = {m: t / times["base"] for m, t in times.items() if m != "base"}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    dtype = str(stack.dtype).removeprefix("torch.")
    if args.json:
        print(json.dumps({**ratios, "base_ms": 1000 * times["base"], "all_first_step_ms": 1000 * first_step,
                          "ms_per_token": {m: 1000 * t for m, t in times.items()}, "peak_rss_mb": peak_mb,
                          "device": str(stack.device), "dtype": dtype, "threads": torch.get_num_threads()}))
        return
    print(f"device {stack.device}, {dtype}, batch 1, {args.tokens} new tokens, k = {args.top_k}, torch threads "
          f"{torch.get_num_threads()}")
    for method, t in times.items():
        ratio = "" if method == "base" else f"   {ratios[method]:.2f}x base"
        unit = "ms/step (all methods side by side)" if method == "all" else "ms/token"
        print(f"{method:6s} {1000 * t:7.2f} {unit}{ratio}")
    print(f"all methods side by side: first step's tokens after {1000 * first_step:.0f} ms (prefill included)")
    print(f"peak memory (RSS) {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
