"""The app under load: N concurrent clients generating through its API on loopback (printed, never asserted).

    python benchmarks/load.py                                   # the embedded stack, assets/stack.toml
    python benchmarks/load.py --random                          # a random stack sized like the embedded one
    python benchmarks/load.py --clients 20 --requests-per-client 2 --tokens 32 --timeout 120

Starts `python app.py` as a separate process on a free 127.0.0.1 port (so its memory is measured alone), then
each client (a thread with its own gradio_client session, random weights, its own seeds) sends its requests
one after another to /generate. Everything stops at --timeout seconds: requests still running then count as
timed out. Prints completed requests, errors (by message), latency p50 / p95 / max from submit to the scored
reply, throughput, and the server's resident memory after warm-up and at its peak (Linux /proc).
The app decodes CONCURRENCY requests at once and queues the rest, so latency grows with the queue: the
figures say how long the n-th user of a busy Space waits, not how fast one reply is (see app_latency.py).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere: app.py and benchmarks/ are at the repo root

from app_latency import PROMPT, random_stack  # noqa: E402

import app  # noqa: E402

HOST = "127.0.0.1"  # loopback only: a load test must never aim at another machine
START_TIMEOUT_S = 600  # loading the stack and the warm-up on 2 busy cores can take minutes
MEMORY_POLL_S = 0.25


@dataclass
class Results:
    """What every client saw; appended to from the client threads under ``lock``."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    timed_out: int = 0
    methods: list[str] = field(default_factory=list)  # as the running app lists them
    lock: threading.Lock = field(default_factory=threading.Lock)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def proc_memory_mb(pid: int) -> dict[str, float]:
    """Resident memory now (VmRSS) and at its peak so far (VmHWM) of process ``pid``, in MB; {} off Linux."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in lines if line.startswith(("VmRSS", "VmHWM")))
    return {k: int(v.split()[0]) / 1024 for k, v in fields.items()}


def start_server(stack: Path, folder: Path) -> tuple[subprocess.Popen, str]:
    """`python app.py` on a free loopback port; returns (process, url) once its API answers."""
    import httpx

    port = free_port()
    log = (folder / "server.log").open("w")
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    cmd = [sys.executable, str(ROOT / "app.py"), "--stack", str(stack), "--host", HOST, "--port", str(port),
           "--study-db", str(folder / "study.db")]
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url, deadline = f"http://{HOST}:{port}/", time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"{url}config", timeout=5).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(1)
    server.kill()
    tail = (folder / "server.log").read_text().splitlines()[-15:]
    raise SystemExit("error: the app did not start:\n" + "\n".join(tail))


def app_layout(client) -> tuple[list[str], list[str]]:
    """(objectives, methods) as the running app shows them: its weight sliders and method checkboxes."""
    components = client.config["components"]
    props = [c.get("props", {}) for c in components]
    objectives = [p["elem_id"][len("weight-"):] for p in props if str(p.get("elem_id", "")).startswith("weight-")]
    methods = next(p["choices"] for p in props if p.get("elem_id") == "methods")
    return objectives, [c[1] if isinstance(c, (list, tuple)) else c for c in methods]


def one_client(url: str, index: int, args: argparse.Namespace, deadline: float, results: Results) -> None:
    """One user: its own session, its own random λ per request, requests one after another until done."""
    from gradio_client import Client

    try:
        client = Client(url, verbose=False, analytics_enabled=False)
        objectives, methods = app_layout(client)
    except Exception as err:  # noqa: BLE001 - a client that cannot connect is an error to count, not a crash
        with results.lock:
            results.errors[f"connect: {str(err).splitlines()[0][:120]}"] += args.requests_per_client
        return
    results.methods = methods
    rng = random.Random(index)
    for r in range(args.requests_per_client):
        weights = [rng.random() + 0.01 for _ in objectives]  # raw slider values: only their ratios matter
        axes = (objectives[0], objectives[-1], app.NO_Z)
        start = time.monotonic()
        job = client.submit(PROMPT, 1.0, 15, 1.0, args.tokens, index * 1000 + r, methods, *axes, *weights,
                            api_name="/generate")
        outcome = wait(job, deadline)
        with results.lock:
            if outcome is None:
                results.latencies.append(time.monotonic() - start)
            elif outcome == "timeout":
                results.timed_out += 1
            else:
                results.errors[outcome] += 1
        if outcome == "timeout":
            return


def wait(job, deadline: float) -> str | None:
    """None when the job finished well; "timeout" past the deadline (the job is cancelled); else the error."""
    while not job.done():
        if time.monotonic() > deadline:
            job.cancel()
            return "timeout"
        time.sleep(0.05)
    try:
        job.result()
    except Exception as err:  # noqa: BLE001 - every failure is reported by its first line
        return (str(err).splitlines() or [type(err).__name__])[0][:160]
    return None


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0–100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def watch_memory(pid: int, stop: threading.Event, peak: dict[str, float]) -> None:
    """Sample the server's RSS while the load runs (VmHWM also counts the loading at start-up)."""
    while not stop.is_set():
        peak["load"] = max(peak.get("load", 0.0), proc_memory_mb(pid).get("VmRSS", 0.0))
        stop.wait(MEMORY_POLL_S)


def run_load(url: str, server: subprocess.Popen, args: argparse.Namespace) -> tuple[Results, float, dict]:
    """Every client at once; returns the results, the wall time and the server's memory figures."""
    results, peak, stop = Results(), {"idle": proc_memory_mb(server.pid).get("VmRSS", math.nan)}, threading.Event()
    watcher = threading.Thread(target=watch_memory, args=(server.pid, stop, peak), daemon=True)
    watcher.start()
    start = time.monotonic()
    deadline = start + args.timeout
    clients = [threading.Thread(target=one_client, args=(url, i, args, deadline, results), daemon=True)
               for i in range(args.clients)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(timeout=max(1.0, deadline + 30 - time.monotonic()))  # a hung client cannot hold the run
    wall = time.monotonic() - start
    stop.set()
    peak["hwm"] = proc_memory_mb(server.pid).get("VmHWM", math.nan)
    return results, wall, peak


def report(results: Results, wall: float, memory: dict, args: argparse.Namespace) -> None:
    lat, asked = results.latencies, args.clients * args.requests_per_client
    print(f"{args.clients} clients × {args.requests_per_client} requests ({asked} asked), {args.tokens} new tokens "
          f"max, methods {', '.join(results.methods)}, limit {args.timeout:.0f} s; wall {wall:.1f} s")
    print(f"completed {len(lat)}   errors {sum(results.errors.values())}   timed out {results.timed_out}   "
          f"not sent {asked - len(lat) - sum(results.errors.values()) - results.timed_out}")
    print(f"latency (submit to scored reply): p50 {percentile(lat, 50):.2f} s   p95 {percentile(lat, 95):.2f} s   "
          f"max {max(lat, default=math.nan):.2f} s   throughput {len(lat) / wall:.2f} replies/s")
    print(f"server memory (RSS): after warm-up {memory['idle']:.0f} MB   peak under load "
          f"{memory.get('load', math.nan):.0f} MB   peak since start {memory['hwm']:.0f} MB")
    for message, count in results.errors.most_common():
        print(f"  error ×{count}: {message}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default=app.DEFAULT_STACK)
    parser.add_argument("--random", action="store_true", help="a random embedded-sized stack in a temp folder")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=32, help="max new tokens per reply")
    parser.add_argument("--timeout", type=float, default=120, help="seconds for the whole load, after start-up")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        stack = random_stack(folder) if args.random else Path(args.stack).resolve()
        server, url = start_server(stack, folder)
        try:
            report(*run_load(url, server, args), args)
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
