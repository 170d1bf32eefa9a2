"""Issue 33's check on a stack as it runs (bfloat16 where native): are the base's and MAVIS's replies byte-identical
alone and beside every combination of the other methods, at three weight settings, for held-out prompts x seeds?

    python benchmarks/batch_independence.py [--stack assets/stack.toml] [--prompts 8] [--seeds 3] [--tokens 32]

Prints the number of replies compared and how many differed (0 is the promise). Slow on 2 cores (minutes per prompt):
the test suite runs a small slice of it (tests/test_batch_independence.py).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mavis_core import DecodeConfig, load_stack  # noqa: E402
from mavis_core.decoding import Decode  # noqa: E402
from mavis_core.prompts import heldout_prompts  # noqa: E402

SETTINGS = [{"helpful": 1.0}, {"helpful": 1.0, "harmless": 1.0, "humor": 1.0}, {"harmless": 1.0, "humor": 2.0}]


def token_ids(stack, prompt: str, cfgs: list[DecodeConfig]) -> list[list[int]]:
    run = Decode(stack, [prompt] * len(cfgs), cfgs, [c.seed for c in cfgs])
    list(run)
    return [g.token_ids for g in run.generations]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="assets/stack.toml")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args(argv)
    stack = load_stack(args.stack)
    others = [m for m in stack.methods if m not in ("base", "mavis")] + ["prompted"]
    combos = [list(c) for n in range(1, len(others) + 1) for c in itertools.combinations(others, n)]
    compared = differed = 0
    for prompt in heldout_prompts(args.stack, stack.spec.prompts)[: args.prompts]:
        for seed in range(args.seeds):
            own = [DecodeConfig(method=m, weights=SETTINGS[0], max_new_tokens=args.tokens, seed=seed,
                                beta=stack.default_beta) for m in ("base", "mavis")]
            alone = [token_ids(stack, prompt, [c])[0] for c in own]
            for weights, combo in itertools.product(SETTINGS, combos):
                cfgs = own + [DecodeConfig(method=o, weights=weights, max_new_tokens=args.tokens, seed=seed,
                                           beta=stack.default_beta) for o in combo]
                got = token_ids(stack, prompt, cfgs)[:2]
                compared += 2
                differed += sum(a != b for a, b in zip(alone, got, strict=True))
        print(f"{compared} replies compared, {differed} differed ({prompt[:40]!r})", flush=True)
    print(f"dtype {stack.dtype}: {compared} replies compared beside other methods, {differed} differed from alone")


if __name__ == "__main__":
    main()
