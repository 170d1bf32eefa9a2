"""A sampling sweep's wall time with λ points decoded together against one point per batch, in one run.

    python benchmarks/sweep_speed.py [--stack assets/stack.toml] [--prompts 6] [--seeds 2] [--points 4]
                                     [--tokens 24] [--lanes 48,96] [--json]

`evaluation.sweep` decodes up to ``lanes_per_batch`` replies (λ points × prompts × seeds) of one method as one batch;
this times the same sweep (every method of the stack at ``--points`` λ points of the first pair) with one λ point
per batch and with each ``--lanes`` setting, and checks that the tables agree (same rewards, KL and lengths).
Printed: seconds per setting and its ratio to one point per batch (the results page's sweeps are made of these).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: mavis_core is at the repo root

from report import print_rows

from mavis_core import DecodeConfig, load_stack
from mavis_core.evaluation import sweep
from mavis_core.prompts import read_prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", type=Path, default=Path("assets/stack.toml"))
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--lanes", default="48,96", help="lanes_per_batch settings to time, comma-separated")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    stack = load_stack(args.stack)
    prompts = read_prompts(args.stack.parent / "eval_prompts.json")[: args.prompts]
    seeds = list(range(args.seeds))
    m = len(stack.objectives)
    grid = [[1 - t, t, *[0.0] * (m - 2)] for t in np.linspace(0, 1, args.points)]
    cfg = DecodeConfig(weights={stack.objectives[0]: 1.0}, max_new_tokens=args.tokens)
    methods = [x for x in stack.methods if x != "base"]
    one = len(prompts) * len(seeds)
    sweep(stack, prompts[:1], [0], methods, grid[:1], DecodeConfig(weights=cfg.weights, max_new_tokens=4))  # warm-up
    settings = [one, *(int(x) for x in args.lanes.split(","))]
    tables, seconds = {}, {}
    for lanes in settings:
        start = time.perf_counter()
        tables[lanes] = sweep(stack, prompts, seeds, methods, grid, cfg, lanes_per_batch=lanes)
        seconds[lanes] = time.perf_counter() - start
    cols = [c for c in tables[one].columns if c.startswith("r_")] + ["kl", "tokens"]
    agree = {lanes: bool(np.allclose(tables[lanes][cols].to_numpy(float), tables[one][cols].to_numpy(float),
                                     rtol=1e-4)) for lanes in settings}
    rows = {str(lanes): {"seconds": seconds[lanes], "ratio": seconds[lanes] / seconds[one],
                         "points_per_batch": max(1, lanes // one), "same_table": agree[lanes]} for lanes in settings}
    header = f"{len(methods)} methods × {args.points} λ points × {one} replies, {args.tokens} tokens"
    print_rows(rows, args.json, header,
               lambda lanes, r: f"lanes_per_batch {lanes:>4s} ({r['points_per_batch']} points a batch): "
                                f"{r['seconds']:6.1f} s ({r['ratio']:.2f}x one point per batch), "
                                f"same table: {r['same_table']}")


if __name__ == "__main__":
    main()
