"""Time per token of each column of the app's Generate tab ÷ base, and of all of them side by side ÷ base,
measured in one run (printed, never asserted).

    python benchmarks/decode_speed.py                       # the default stack (SmolLM2-135M-Instruct)
    python benchmarks/decode_speed.py --stack assets/tiny/stack.toml
    python benchmarks/decode_speed.py --random              # random weights shaped like the tiny stack
    python benchmarks/decode_speed.py --dtype float32       # the base in another dtype than the stack's
    python benchmarks/decode_speed.py --columns base,mavis,mod,rsoup    # only some columns (and all of those)
    python benchmarks/decode_speed.py --json                # one JSON object: a ratio per column, all, columns,
                                                            # base_ms, all_first_step_ms, ...

Batch 1, 64 new tokens (every reply runs to 64: `NoEnd`), equal weights over all 3 objectives, k = 15. The columns
are the stack's (`engine.columns`, as Generate shows them): base, MAVIS, MOD, RSoup, Prompted (the base reading λ
in its system prompt, beside a π_ref row on the plain prompt) and, where the stack has a ``[conditioned]`` policy,
the λ-conditioned policy. A column's time per token is its time per decoding step after its first tokens, decoded
alone. ``all``: every column side by side (one batched forward per step, as the app's Generate does with all of
them ticked), seconds per step ÷ the base's seconds per token: what the whole tab costs against one base column.
``all_first_step_ms``: how long those columns wait for their first tokens (every row's prefill, then the first
step). Every round decodes one reply of each column and the side-by-side run, taking turns step by step (`turns`).
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

from mavis_core import DecodeConfig, load_stack
from mavis_core.decoding import Decode
from mavis_core.engine import columns
from mavis_core.stack import pick_device, pick_dtype
from mavis_core.stack_file import DTYPES
from mavis_core.testing import build_embedded_sized_stack

PROMPT = "hi! how was your weekend? did you do anything fun?"


class NoEnd:
    """The stack's prompt format, except that no reply ends before its length limit (no end token, no stop
    string): every method decodes the same number of steps, so their times per token compare like for like
    (a tiny-stack base reply can end after 3 tokens)."""

    def __init__(self, fmt) -> None:
        self.fmt = fmt

    def __getattr__(self, name: str):
        return getattr(self.fmt, name)

    def ends(self, token_id: int) -> bool:
        return False

    def cut(self, text: str) -> tuple[str, bool]:
        return text, False


def turns(stack, configs: dict[str, DecodeConfig], together: list[str]) -> dict[str, float]:
    """One reply of each method and one of all of them side by side ("all"), the runs taking turns STEP BY
    STEP: seconds per decoding step of each after its first tokens (the prefill is a cost of the prompt, not of
    a token), and "all_first_step": from the start to the side-by-side run's first tokens (every row's prefill,
    the value model's, and the first sample: what the app's first token waits for besides gradio). Taking turns
    at every step puts this shared machine's drift, which moves a run's speed by a third within a minute, on
    every method alike; one whole reply after another did not (MOD 1.13x and 1.46x in two runs an hour apart)."""
    runs = {m: Decode(stack, [PROMPT], [cfg], [cfg.seed]) for m, cfg in configs.items()}
    side = [configs[m] for m in together]  # "all": these methods as rows of one batch
    runs["all"] = Decode(stack, [PROMPT] * len(side), side, [c.seed for c in side])
    steps = {m: run.steps() for m, run in runs.items()}
    spent, first = dict.fromkeys(runs, 0.0), {}
    while steps:
        for m in list(steps):
            start = time.perf_counter()
            try:
                next(steps[m])
            except StopIteration:
                del steps[m]
            if m in first:
                spent[m] += time.perf_counter() - start
            else:  # the prefill and the first sample: timed apart
                first[m] = time.perf_counter() - start
    out = {m: spent[m] / max(1, max(len(g.events) for g in run.generations) - 1) for m, run in runs.items()}
    return {**out, "all_first_step": first["all"]}


def median_times(stack, configs: dict[str, DecodeConfig], repeats: int) -> dict[str, float]:
    """Median over ``repeats`` rounds (seed = round) of `turns`, every column of ``configs`` also side by side."""
    together = list(configs)
    turns(stack, configs, together)  # warm-up: first-call costs, RSoup's and MOD's sliced ranks
    rounds = [turns(stack, {m: DecodeConfig(**{**cfg.__dict__, "seed": r}) for m, cfg in configs.items()},
                    together) for r in range(repeats)]
    return {m: statistics.median(t[m] for t in rounds) for m in rounds[0]}


def chosen_columns(stack, text: str | None) -> list[str]:
    """The stack's Generate columns, or those named in ``text`` (base first, always): an unknown name is an error."""
    available = columns(stack)
    if not text:
        return available
    named = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in named if m not in available]
    if unknown:
        raise SystemExit(f"--columns: {', '.join(unknown)} not among this stack's columns ({', '.join(available)})")
    return ["base"] + [m for m in available if m in named and m != "base"]


def random_stack(folder: Path, fused: bool) -> Path:
    build_embedded_sized_stack(folder)
    return folder / ("stack-fused.toml" if fused else "stack-sep.toml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="assets/stack.toml", help="stack TOML (default assets/stack.toml)")
    parser.add_argument("--random", action="store_true", help="a random stack shaped like the tiny one instead")
    parser.add_argument("--fused", action="store_true", help="random stack: one fused value model for all 3")
    parser.add_argument("--tokens", type=int, default=DecodeConfig.default("max_new_tokens"))
    parser.add_argument("--top-k", type=int, default=DecodeConfig.default("top_k"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--dtype", choices=DTYPES, help="the base's dtype instead of the stack's [base] dtype")
    parser.add_argument("--columns", help="comma-separated columns to time (default: all of the stack's); base is "
                        "always timed, as every ratio's denominator")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = random_stack(Path(tmp), args.fused) if args.random else args.stack
        stack = load_stack(path, dtype=pick_dtype(args.dtype, pick_device()) if args.dtype else None)
        stack.format = NoEnd(stack.format)
        weights = {name: 1.0 for name in stack.objectives}
        configs = {m: DecodeConfig(method=m, weights=weights, beta=1.0, top_k=args.top_k,
                                   max_new_tokens=args.tokens, seed=0) for m in chosen_columns(stack, args.columns)}
        times = median_times(stack, configs, args.repeats)
    first_step = times.pop("all_first_step")
    ratios = {m: t / times["base"] for m, t in times.items() if m != "base"}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    dtype = str(stack.dtype).removeprefix("torch.")
    if args.json:
        print(json.dumps({**ratios, "columns": list(configs), "base_ms": 1000 * times["base"],
                          "all_first_step_ms": 1000 * first_step,
                          "ms_per_token": {m: 1000 * t for m, t in times.items()}, "peak_rss_mb": peak_mb,
                          "device": str(stack.device), "dtype": dtype, "threads": torch.get_num_threads()}))
        return
    print(f"device {stack.device}, {dtype}, batch 1, {args.tokens} new tokens, k = {args.top_k}, torch threads "
          f"{torch.get_num_threads()}")
    for method, t in times.items():
        ratio = "" if method == "base" else f"   {ratios[method]:.2f}x base"
        unit = f"ms/step ({len(configs)} columns side by side)" if method == "all" else "ms/token"
        print(f"{method:11s} {1000 * t:7.2f} {unit}{ratio}")
    print(f"all {len(configs)} columns side by side ({', '.join(configs)}): first step's tokens after "
          f"{1000 * first_step:.0f} ms (prefill included)")
    print(f"peak memory (RSS) {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
