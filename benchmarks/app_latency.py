"""Latency of the app as a user feels it, measured through gradio_client (printed, never asserted).

    python benchmarks/app_latency.py                          # the embedded stack, assets/stack.toml
    python benchmarks/app_latency.py --stack stacks/other.toml
    python benchmarks/app_latency.py --random                 # a random stack sized like the embedded one

Launches the app in this process on a free port, then for each method alone and for all methods together
measures, from the submit: the first token shown in each column, and the whole reply (scored, on the chart).
Medians over --repeats runs with different seeds, after one warm-up run. Targets for the default stack on 2 CPU
cores (#12): the first token of every column within 0.5 s, all four columns of a 64-token reply within about 7 s.
"""

from __future__ import annotations

import argparse
import re
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: app.py is at the repo root

import app  # noqa: E402
from app import controls  # noqa: E402
from mavis_core.engine import Engine  # noqa: E402

PROMPT = "hi! how was your weekend? did you do anything fun?"
POLL_S = 0.002


def random_stack(folder: Path) -> Path:
    """An embedded-sized random stack (as benchmarks/decode_speed.py), its tiny reward models capped at
    their 64-position context."""
    from mavis_core.testing import build_embedded_sized_stack

    build_embedded_sized_stack(folder)
    text = re.sub(r'(path = "rewards/\w+")', r"\1, max_length = 64", (folder / "stack-sep.toml").read_text())
    (folder / "stack-bench.toml").write_text(text)
    return folder / "stack-bench.toml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_run(client, engine: Engine, methods: list[str], tokens: int, seed: int) -> dict[str, float]:
    """Seconds from submit to each column's first text ("first <method>") and to the finished reply ("all")."""
    weights = [1.0] * len(engine.objectives)
    axes = (engine.objectives[0], engine.objectives[-1], controls.NO_Z)
    start = time.perf_counter()
    job = client.submit(PROMPT, 1.0, 15, 1.0, tokens, seed, methods, *axes, *weights, api_name="/generate")
    first: dict[str, float] = {}
    while not job.done():
        outputs = job.outputs()
        if outputs:
            for i, m in enumerate(engine.methods):
                if m in methods and m not in first and outputs[-1][i]:
                    first[m] = time.perf_counter() - start
        time.sleep(POLL_S)
    final = job.result()
    total = time.perf_counter() - start
    stats = " ".join(final[len(engine.methods):2 * len(engine.methods)])
    counts = [int(n) for n in re.findall(r"(\d+) tokens", stats)]
    return {**{f"first {m}": first.get(m, total) for m in methods}, "all": total, "tokens": max(counts, default=0)}


def median_runs(client, engine: Engine, methods: list[str], tokens: int, repeats: int) -> dict[str, float]:
    one_run(client, engine, methods, tokens, seed=10_000)  # warm-up: RSoup merges its λ, first-call costs
    runs = [one_run(client, engine, methods, tokens, seed) for seed in range(repeats)]
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default=app.DEFAULT_STACK)
    parser.add_argument("--random", action="store_true", help="a random embedded-sized stack in a temp folder")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from gradio_client import Client

    with tempfile.TemporaryDirectory() as tmp:
        engine = app.load_engine(str(random_stack(Path(tmp)) if args.random else args.stack))
        tokens = min(args.tokens, engine.max_new_tokens)
        demo = app.build_demo(engine, Path(tmp) / "study.db")
        port = free_port()
        demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, analytics_enabled=False)
        print(f"stack {engine.name}, device {engine.stack.device}, {tokens} new tokens max, top-k 15, "
              f"medians of {args.repeats} runs (seconds from submit, through gradio_client)")
        for methods in [[m] for m in engine.methods] + [engine.methods]:
            r = median_runs(client, engine, methods, tokens, args.repeats)
            firsts = "  ".join(f"{m} {r[f'first {m}']:.3f}" for m in methods)
            label = "all together" if len(methods) > 1 else f"{methods[0]} alone"
            print(f"{label:13s} first token: {firsts}   whole reply {r['all']:.3f}   "
                  f"(longest {r['tokens']:.0f} tokens)")
        demo.close()


if __name__ == "__main__":
    main()
