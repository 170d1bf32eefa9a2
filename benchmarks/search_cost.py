"""Time per reply of each test-time search ÷ plain sampling, per method, measured in one run (never asserted).

    python benchmarks/search_cost.py                         # random stack sized like the embedded one
    python benchmarks/search_cost.py --stack assets/stack.toml --n 4 --beams 4
    python benchmarks/search_cost.py --json

Every timing includes scoring the candidates with the reward models (a search needs them to pick its winner;
sampling scores its one reply, as the app does). Settings take turns in every round, so drift in the
machine's load hits all of them alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: mavis_core is at the repo root

from mavis_core import DecodeConfig, load_stack
from mavis_core.search import search
from mavis_core.testing import build_embedded_sized_stack

PROMPT = "hi! how was your weekend? did you do anything fun?"


def seconds_per_reply(stack, cfg: DecodeConfig) -> float:
    start = time.perf_counter()
    search(stack, PROMPT, cfg)
    return time.perf_counter() - start


def median_times(stack, configs: dict[str, DecodeConfig], repeats: int) -> dict[str, float]:
    for cfg in configs.values():  # warm-up: first-call costs, RSoup's merge for this λ
        seconds_per_reply(stack, cfg)
    times: dict[str, list[float]] = {name: [] for name in configs}
    for r in range(repeats):
        for name, cfg in configs.items():
            times[name].append(seconds_per_reply(stack, dataclasses.replace(cfg, seed=r)))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", help="stack TOML (default: a random embedded-sized stack in a temp folder)")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--n", type=int, default=4, help="N of best-of-N")
    parser.add_argument("--beams", type=int, default=4, help="B of beam search")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.stack
        if path is None:
            build_embedded_sized_stack(Path(tmp))
            path = Path(tmp) / "stack-sep.toml"
        stack = load_stack(path, device=torch.device("cpu"))
        weights = dict.fromkeys(stack.objectives, 1.0)
        configs = {}
        for method in stack.methods:
            base = DecodeConfig(method=method, weights=weights, max_new_tokens=args.tokens,
                                num_candidates=args.n, num_beams=args.beams)
            for kind in ("sample", "best_of_n", "beam"):
                configs[f"{method}/{kind}"] = dataclasses.replace(base, search=kind)
        times = median_times(stack, configs, args.repeats)
    ratios = {name: t / times[name.split("/")[0] + "/sample"] for name, t in times.items()}
    if args.json:
        print(json.dumps({"seconds": times, "ratio_to_sample": ratios, "n": args.n, "beams": args.beams}))
        return
    print(f"{args.tokens} new tokens, N = {args.n}, B = {args.beams}, {args.threads} thread(s); seconds per reply "
          f"(÷ the method's plain sampling)")
    for name, t in times.items():
        print(f"  {name:<18} {t:7.3f} s  ×{ratios[name]:.2f}")


if __name__ == "__main__":
    main()
