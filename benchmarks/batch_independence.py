"""Issue 33's check on a stack as it runs (bfloat16 where native): are the base's and MAVIS's replies byte-identical
alone and beside every combination of the other methods, at three weight settings, for held-out prompts x seeds?
And is each base and MAVIS row of a sweep (every prompt x seed x method as rows of one batch, as
`evaluation.sweep` decodes a cell) byte-identical to the same reply decoded alone? And are MOD's, RSoup's and the
conditioned policy's replies (the LoRA rows) the same alone and beside base, MAVIS and the other policies?

    python benchmarks/batch_independence.py [--stack assets/stack.toml] [--prompts 8] [--seeds 3] [--tokens 32]
                                            [--sweep-only | --lora-only]

Prints the number of replies compared and how many differed (0 is the promise). Slow on 2 cores (minutes per prompt):
the test suite runs a small slice of it (tests/test_batch_independence.py).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
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
    parser.add_argument("--sweep-only", action="store_true", help="only the sweep's rows against single decodes "
                        "(skips the minutes per prompt of every combination beside them)")
    parser.add_argument("--lora-only", action="store_true", help="only MOD, RSoup and the conditioned policy alone "
                        "against beside the others")
    args = parser.parse_args(argv)
    stack = load_stack(args.stack)
    others = [m for m in stack.methods if m not in ("base", "mavis")] + ["prompted"]
    combos = [list(c) for n in range(1, len(others) + 1) for c in itertools.combinations(others, n)]
    compared = differed = 0
    prompts = heldout_prompts(args.stack, stack.spec.prompts)[: args.prompts]
    if not args.sweep_only:
        lora_compared, lora_differed = lora_rows_against_alone(stack, prompts, range(args.seeds), args.tokens)
        print(f"dtype {stack.dtype}: {lora_compared} MOD, RSoup and conditioned replies compared beside the others, "
              f"{lora_differed} differed from alone", flush=True)
        if args.lora_only:
            return
    alone_of: dict[tuple[str, int], list[list[int]]] = {}
    start = time.perf_counter()
    for prompt in prompts:
        for seed in range(args.seeds):
            own = [DecodeConfig(method=m, weights=SETTINGS[0], max_new_tokens=args.tokens, seed=seed,
                                beta=stack.default_beta) for m in ("base", "mavis")]
            alone = alone_of[prompt, seed] = [token_ids(stack, prompt, [c])[0] for c in own]
            for weights, combo in itertools.product(SETTINGS, [] if args.sweep_only else combos):
                cfgs = own + [DecodeConfig(method=o, weights=weights, max_new_tokens=args.tokens, seed=seed,
                                           beta=stack.default_beta) for o in combo]
                got = token_ids(stack, prompt, cfgs)[:2]
                compared += 2
                differed += sum(a != b for a, b in zip(alone, got, strict=True))
        print(f"{compared} replies compared, {differed} differed ({prompt[:40]!r}, "
              f"{time.perf_counter() - start:.0f} s)", flush=True)
    print(f"dtype {stack.dtype}: {compared} replies compared beside other methods, {differed} differed from alone")
    sweep_compared, sweep_differed = sweep_rows_against_alone(stack, alone_of, others, args.tokens)
    print(f"dtype {stack.dtype}: {sweep_compared} sweep rows compared with single decodes, {sweep_differed} differed "
          f"({time.perf_counter() - start:.0f} s in all)")


def lora_rows_against_alone(stack, prompts: list[str], seeds, tokens: int) -> tuple[int, int]:
    """Each LoRA method of the stack at equal weights, alone and beside base, MAVIS and the other LoRA methods
    (helpful alone): how many of its replies differ."""
    equal = dict.fromkeys(stack.objectives, 1.0)
    lora = [m for m in ("mod", "rsoup", "conditioned") if m in stack.methods]
    compared = differed = 0
    for prompt, seed, m in itertools.product(prompts, seeds, lora):
        mine = DecodeConfig(method=m, weights=equal, max_new_tokens=tokens, seed=seed, beta=stack.default_beta)
        beside = [DecodeConfig(method=o, weights=SETTINGS[0], max_new_tokens=tokens, seed=seed,
                               beta=stack.default_beta) for o in ("base", "mavis", *lora) if o != m]
        compared += 1
        differed += token_ids(stack, prompt, [mine])[0] != token_ids(stack, prompt, [mine, *beside])[0]
    return compared, differed


def sweep_rows_against_alone(stack, alone_of: dict[tuple[str, int], list[list[int]]], others: list[str],
                             tokens: int) -> tuple[int, int]:
    """Every (prompt, seed) of the check as the rows of one sweep batch, base and MAVIS at their own weights beside
    every other method at equal weights, prompt-major as `evaluation._sampled_points` lays out a sweep's cells."""
    keys = list(alone_of)
    methods = [("base", SETTINGS[0]), ("mavis", SETTINGS[0])] + [(o, SETTINGS[1]) for o in others]
    cfgs = [DecodeConfig(method=m, weights=w, max_new_tokens=tokens, seed=seed, beta=stack.default_beta)
            for m, w in methods for _, seed in keys]
    run = Decode(stack, [p for _ in methods for p, _ in keys], cfgs, [c.seed for c in cfgs])
    list(run)
    got = [g.token_ids for g in run.generations]
    differed = sum(got[j * len(keys) + i] != alone_of[key][j] for j in range(2) for i, key in enumerate(keys))
    return 2 * len(keys), differed


if __name__ == "__main__":
    main()
