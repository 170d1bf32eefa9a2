"""What decoding a sweep's prompts in batches of one padded width each (`lanes.width_groups`, issue 33) costs
against padding them all to the widest in one batch, as the code did before: seconds of each, taking turns, and
their ratio, in one run (printed, never asserted).

    python benchmarks/width_groups_cost.py [--stack assets/stack.toml] [--prompts 24] [--seeds 2] [--tokens 24]
                                           [--method mavis] [--repeats 2]

The default is one λ point of the results page's sweeps (24 held-out prompts × 2 seeds, 24 tokens).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: mavis_core is at the repo root

from mavis_core import DecodeConfig, decoding, load_stack
from mavis_core.lanes import width_groups
from mavis_core.prompts import heldout_prompts


def one_batch(stack, prompts: list[str]) -> list[list[int]]:
    """Every prompt in one group: the batch pads all of them to the widest, as before width groups."""
    return [list(range(len(prompts)))]


def seconds(stack, prompts: list[str], cfg: DecodeConfig, seeds: list[int]) -> float:
    start = time.perf_counter()
    decoding.generate_batch(stack, prompts, cfg, seeds)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="assets/stack.toml")
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--method", default="mavis")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    stack = load_stack(args.stack)
    prompts = heldout_prompts(args.stack, stack.spec.prompts)[: args.prompts]
    rows = [p for p in prompts for _ in range(args.seeds)]
    seeds = [s for _ in prompts for s in range(args.seeds)]
    cfg = DecodeConfig(method=args.method, weights=dict.fromkeys(stack.objectives, 1.0), max_new_tokens=args.tokens,
                       beta=stack.default_beta)
    groups = width_groups(stack, rows)
    seconds(stack, rows[:2], cfg, seeds[:2])  # warm-up
    grouped, single = [], []
    for _ in range(args.repeats):
        grouped.append(seconds(stack, rows, cfg, seeds))
        with mock.patch.object(decoding, "width_groups", one_batch):
            single.append(seconds(stack, rows, cfg, seeds))
    g, s = statistics.median(grouped), statistics.median(single)
    print(f"{len(rows)} {args.method} replies ({len(prompts)} prompts x {args.seeds} seeds, {args.tokens} tokens) in "
          f"{len(groups)} width groups of {', '.join(str(len(x)) for x in groups)} rows")
    print(f"width groups {g:.1f} s, one batch at the widest width {s:.1f} s: {g / s:.2f}x (median of {args.repeats})")


if __name__ == "__main__":
    main()
