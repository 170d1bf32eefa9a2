"""The app under load through its API on loopback (printed, never asserted): many users, one client's burst, and
clients that disconnect mid-request.

    python benchmarks/load.py                                   # the embedded stack, assets/stack.toml
    python benchmarks/load.py --random                          # a random stack sized like the embedded one
    python benchmarks/load.py --clients 20 --requests-per-client 2 --tokens 32 --timeout 120
    python benchmarks/load.py --scenario burst --burst 90               # one script firing 90 generates at once
    python benchmarks/load.py --scenario burst --burst 40 --burst-sessions 40   # 40 sessions from one address
    python benchmarks/load.py --scenario disconnect --clients 8 --tokens 128    # 8 clients that leave after 2 s
    python benchmarks/load.py --stack assets/tiny/stack.toml --study demo --clients 50   # participants of a study

Starts `python app.py` as a separate process on a free 127.0.0.1 port (so its memory is measured alone). Each
simulated user has its own gradio_client session and its own address (sent as X-Forwarded-For, which uvicorn
takes from loopback peers), so the app's per-address limit sees separate machines.

- steady (default): each client sends its requests one after another to /generate (random λ, own seeds).
- burst: one client address submits --burst generates at once from --burst-sessions sessions (1: one script,
  one session); meanwhile a bystander on another address sends --requests-per-client requests.
- disconnect: --clients clients each start a request (--endpoint generate or sweep) over raw HTTP, read its
  event stream for --disconnect-after seconds and drop the connection; then a bystander sends one request.
  Its latency, against the same request on the idle server first, and the server's CPU seconds in the
  --settle seconds after the drop say whether the abandoned work stopped.
- study (--study NAME): --clients participants at once each walk every trial of studies/NAME.toml through the
  participant API (/participant_start, then /participant_submit with random answers), served from a pool of
  made-up replies of the study's shape (`simulate.fake_pool`) in the run's own database: no model runs, so the
  stack only has to load (the tiny one will do). Latency is per trial, from the call to the next trial shown.

Everything stops at --timeout seconds: requests still running then count as timed out. Prints completed
requests, refusals (by message: "queued or running" ones are the app's fair-share limits), other errors,
latency p50 / p95 / max from submit to the scored reply, throughput, and the server's resident memory after
warm-up, at its peak and at the end (Linux /proc). The app decodes CONCURRENCY requests at once and queues the
rest, so latency grows with the queue: the figures say how long the n-th user of a busy Space waits, not how
fast one reply is (see app_latency.py).
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
from app import controls  # noqa: E402
from app.server import DEFAULT_STUDIES_DIR  # noqa: E402

HOST = "127.0.0.1"  # loopback only: a load test must never aim at another machine
START_TIMEOUT_S = 600  # loading the stack and the warm-up on 2 busy cores can take minutes
MEMORY_POLL_S = 0.25


STUDY_METHODS = ("base", "mavis", "mod", "rsoup")  # a study file's methods = "all": its pool's columns here
REFUSED = "queued or running"  # in the app's message for a request over its session's or address's share


@dataclass
class Results:
    """What every client saw; appended to from the client threads under ``lock``."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    timed_out: int = 0
    methods: list[str] = field(default_factory=list)  # as the running app lists them
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, outcome: str | None, seconds: float) -> None:
        with self.lock:
            if outcome is None:
                self.latencies.append(seconds)
            elif outcome == "timeout":
                self.timed_out += 1
            else:
                self.errors[outcome] += 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def address(index: int) -> str:
    """A simulated client's own address (sent as X-Forwarded-For)."""
    return f"10.{77 + index // 65536}.{index // 256 % 256}.{index % 256}"


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far; NaN off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_memory_mb(pid: int) -> dict[str, float]:
    """Resident memory now (VmRSS) and at its peak so far (VmHWM) of process ``pid``, in MB; {} off Linux."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in lines if line.startswith(("VmRSS", "VmHWM")))
    return {k: int(v.split()[0]) / 1024 for k, v in fields.items()}


def start_server(stack: Path, folder: Path, studies_dir: str = DEFAULT_STUDIES_DIR) -> tuple[subprocess.Popen, str]:
    """`python app.py` on a free loopback port; returns (process, url) once its API answers."""
    import httpx

    port = free_port()
    log = (folder / "server.log").open("w")
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    cmd = [sys.executable, str(ROOT / "app.py"), "--stack", str(stack), "--host", HOST, "--port", str(port),
           "--study-db", str(folder / "study.db"), "--studies-dir", str(Path(studies_dir).resolve())]
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


def generate_args(objectives: list[str], methods: list[str], tokens: int, seed: int, rng: random.Random) -> tuple:
    weights = [rng.random() + 0.01 for _ in objectives]  # raw slider values: only their ratios matter
    return (PROMPT, 1.0, 15, 1.0, tokens, seed, methods, objectives[0], objectives[-1], controls.NO_Z, *weights)


def connect(url: str, where: str):
    """A gradio_client session from address ``where``, with the app's (objectives, methods)."""
    from gradio_client import Client

    client = Client(url, verbose=False, analytics_enabled=False, headers={"X-Forwarded-For": where})
    return client, *app_layout(client)


def one_client(url: str, index: int, args: argparse.Namespace, deadline: float, results: Results) -> None:
    """One user: its own session and address, its own random λ per request, requests one after another."""
    try:
        client, objectives, methods = connect(url, address(index))
    except Exception as err:  # noqa: BLE001 - a client that cannot connect is an error to count, not a crash
        with results.lock:
            results.errors[f"connect: {str(err).splitlines()[0][:120]}"] += args.requests_per_client
        return
    results.methods = methods
    rng = random.Random(index)
    for r in range(args.requests_per_client):
        start = time.monotonic()
        job = client.submit(*generate_args(objectives, methods, args.tokens, index * 1000 + r, rng),
                            api_name="/generate")
        outcome = wait(job, deadline)
        results.record(outcome, time.monotonic() - start)
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
    except Exception as err:  # noqa: BLE001 - every failure is reported by its message
        # gradio_client puts a refusal under "1 parameter(s) failed validation:\n- queue: ..."
        lines = [line.removeprefix("- queue: ") for line in str(err).splitlines() if "failed validation" not in line]
        return (lines or [type(err).__name__])[0][:160]
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
    peak["end"] = proc_memory_mb(server.pid).get("VmRSS", math.nan)
    return results, wall, peak


def run_burst(url: str, server: subprocess.Popen, args: argparse.Namespace) -> tuple[Results, Results, float, dict]:
    """--burst generates at once from one address (over --burst-sessions sessions), a bystander meanwhile;
    returns the burst's results, the bystander's, the wall time and the memory figures."""
    burst, bystander = Results(), Results()
    peak, stop = {"idle": proc_memory_mb(server.pid).get("VmRSS", math.nan)}, threading.Event()
    threading.Thread(target=watch_memory, args=(server.pid, stop, peak), daemon=True).start()
    sessions = [connect(url, address(0)) for _ in range(args.burst_sessions)]
    burst.methods, rng = sessions[0][2], random.Random(0)
    start = time.monotonic()
    deadline = start + args.timeout
    submitted = []
    for i in range(args.burst):
        client, objectives, methods = sessions[i % len(sessions)]
        job = client.submit(*generate_args(objectives, methods, args.tokens, i, rng), api_name="/generate")
        submitted.append((time.monotonic(), job))
    fired = time.monotonic() - start
    other = threading.Thread(target=one_client, args=(url, 1, args, deadline, bystander), daemon=True)
    other.start()
    for sent, job in submitted:
        burst.record(wait(job, deadline), time.monotonic() - sent)
    other.join(timeout=max(1.0, deadline + 30 - time.monotonic()))
    wall = time.monotonic() - start
    stop.set()
    peak |= {"fired": fired, "hwm": proc_memory_mb(server.pid).get("VmHWM", math.nan),
             "end": proc_memory_mb(server.pid).get("VmRSS", math.nan)}
    return burst, bystander, wall, peak


def raw_call(url: str, endpoint: str, data: list, where: str, read_s: float | None) -> float | str:
    """POST a call over raw HTTP from ``where`` and read its event stream: to the end (returns the seconds, or
    the error), or for ``read_s`` seconds and then drop the connection, as a closed tab or a killed script."""
    import httpx

    start = time.monotonic()
    posted = httpx.post(f"{url}gradio_api/call/{endpoint}", json={"data": data},
                        headers={"X-Forwarded-For": where}, timeout=60)
    if posted.status_code != 200:
        return posted.json().get("error") or posted.text[:160]
    events = []
    try:
        with httpx.stream("GET", f"{url}gradio_api/call/{endpoint}/{posted.json()['event_id']}",
                          timeout=httpx.Timeout(60, read=read_s or 600)) as stream:
            for line in stream.iter_lines():
                events += [line] if line.startswith("event: ") else []
                if read_s is not None and time.monotonic() - start > read_s:
                    break  # leaving: closing the stream is all a vanished client does
    except httpx.ReadTimeout:  # a quiet stream (a sweep sends no progress here) past read_s
        pass
    if read_s is not None or (events and events[-1] == "event: complete"):
        return time.monotonic() - start
    return f"error: {events[-1:]}"


def run_disconnect(url: str, server: subprocess.Popen, args: argparse.Namespace) -> dict:
    """--clients requests dropped after --disconnect-after s, then a bystander; the figures to print."""
    _, objectives, methods = connect(url, address(0))
    rng = random.Random(0)
    weights = [1.0] * len(objectives)
    data = {"generate": [PROMPT, 1.0, 15, 1.0, args.tokens, 0, methods, objectives[0], objectives[-1], controls.NO_Z,
                         *weights, "sample", 4, 4],
            "sweep": [PROMPT, 1.0, 15, 1.0, args.tokens, 0, methods, controls.SWEEP_MODES[0], objectives[0],
                      objectives[-1], controls.NO_Z, "sample", 4, 4]}[args.endpoint]
    bystander = [PROMPT, 1.0, 15, 1.0, args.tokens, 1, methods, *(objectives[0], objectives[-1], controls.NO_Z),
                 *[rng.random() + 0.01 for _ in objectives], "sample", 4, 4]
    out = {"baseline": raw_call(url, "generate", bystander, address(1), None),
           "idle MB": proc_memory_mb(server.pid).get("VmRSS", math.nan)}
    leavers = [threading.Thread(target=raw_call, args=(url, args.endpoint, data, address(10 + i),
                                                       args.disconnect_after), daemon=True)
               for i in range(args.clients)]
    for t in leavers:
        t.start()
    for t in leavers:
        t.join()
    cpu = proc_cpu_s(server.pid)
    out["bystander"] = raw_call(url, "generate", bystander, address(1), None)
    time.sleep(max(0.0, args.settle - (out["bystander"] if isinstance(out["bystander"], float) else 0.0)))
    out["cpu after"] = proc_cpu_s(server.pid) - cpu
    out["end MB"] = proc_memory_mb(server.pid).get("VmRSS", math.nan)
    return out


def study_pool(name: str, studies_dir: str, folder: Path) -> int:
    """A pool of made-up replies for study ``name`` in the run's database; returns the trials per participant."""
    from mavis_core.study import read_study, study_path
    from mavis_core.study.simulate import fake_pool

    spec = read_study(study_path(name, studies_dir))
    fake_pool(spec, folder / "study.db", spec.methods or STUDY_METHODS)
    return spec.total_trials


def random_answer(shown: dict, rng: random.Random) -> dict:
    """An answer to every question the trial asks, at random (the benchmark times serving, not judgement)."""
    slots, answer = list(shown["replies"]), {}
    if "ratings" in shown["asks"]:
        answer["ratings"] = {s: {o: rng.randint(1, len(shown["scale"])) for o in shown["objectives"]} for s in slots}
    if "favourite" in shown["asks"]:
        answer["favourite"] = rng.choice(slots)
    if "vote" in shown["asks"]:
        answer["vote"] = rng.choice(["A", "B", "tie", "both bad"])
    return answer


def one_participant(url: str, index: int, name: str, deadline: float, results: Results) -> None:
    """One participant: their own session and address, every trial answered as soon as it shows."""
    from gradio_client import Client

    args_timeout = max(1.0, deadline - time.monotonic())  # httpx's default 5 s is less than a busy queue's wait
    rng, pid = random.Random(index), f"load-{index:03d}"
    try:
        client = Client(url, verbose=False, analytics_enabled=False, headers={"X-Forwarded-For": address(index)},
                        httpx_kwargs={"timeout": args_timeout})
        start = time.monotonic()
        shown = client.predict(name, pid, api_name="/participant_start")
        results.record(None, time.monotonic() - start)
        while not shown["done"] and time.monotonic() < deadline:
            start = time.monotonic()
            shown = client.predict(name, pid, shown["position"], random_answer(shown, rng),
                                   api_name="/participant_submit")
            results.record(None, time.monotonic() - start)
    except Exception as err:  # noqa: BLE001 - every failure is reported by its message
        results.record(f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:160]}", 0.0)
        return
    if not shown["done"]:
        results.record("timeout", 0.0)
        return
    with results.lock:
        results.methods.append(pid)


def run_study(url: str, args: argparse.Namespace) -> tuple[Results, float]:
    """--clients participants at once; returns the results (``methods``: the pids that finished) and the wall."""
    results, start = Results(), time.monotonic()
    deadline = start + args.timeout
    people = [threading.Thread(target=one_participant, args=(url, i, args.study, deadline, results), daemon=True)
              for i in range(args.clients)]
    for t in people:
        t.start()
    for t in people:
        t.join(timeout=max(1.0, deadline + 30 - time.monotonic()))
    return results, time.monotonic() - start


def report_study(results: Results, wall: float, trials: int, args: argparse.Namespace) -> None:
    lat = results.latencies
    print(f"study {args.study}: {args.clients} participants at once, {trials} trials each (pool of made-up "
          f"replies); wall {wall:.1f} s")
    print(f"finished {len(results.methods)}   errors {sum(results.errors.values())}   timed out {results.timed_out}")
    print(f"latency per trial shown (start or submit): p50 {percentile(lat, 50) * 1000:.0f} ms   p95 "
          f"{percentile(lat, 95) * 1000:.0f} ms   max {max(lat, default=math.nan) * 1000:.0f} ms   throughput "
          f"{len(lat) / wall:.1f} trials/s")
    for message, count in results.errors.most_common():
        print(f"  error ×{count}: {message}")


def report(results: Results, wall: float, memory: dict, args: argparse.Namespace, asked: int | None = None) -> None:
    lat = results.latencies
    asked = asked if asked is not None else args.clients * args.requests_per_client
    refused = {m: n for m, n in results.errors.items() if REFUSED in m}
    print(f"{asked} asked, {args.tokens} new tokens max, methods {', '.join(results.methods)}, limit "
          f"{args.timeout:.0f} s; wall {wall:.1f} s")
    print(f"completed {len(lat)}   refused (fair share) {sum(refused.values())}   other errors "
          f"{sum(results.errors.values()) - sum(refused.values())}   timed out {results.timed_out}   "
          f"not sent {asked - len(lat) - sum(results.errors.values()) - results.timed_out}")
    print(f"latency (submit to scored reply): p50 {percentile(lat, 50):.2f} s   p95 {percentile(lat, 95):.2f} s   "
          f"max {max(lat, default=math.nan):.2f} s   throughput {len(lat) / wall:.2f} replies/s")
    print(f"server memory (RSS): after warm-up {memory['idle']:.0f} MB   peak under load "
          f"{memory.get('load', math.nan):.0f} MB   at the end {memory.get('end', math.nan):.0f} MB   "
          f"peak since start {memory['hwm']:.0f} MB")
    for message, count in results.errors.most_common():
        print(f"  {'refused' if REFUSED in message else 'error'} ×{count}: {message}")


def report_disconnect(out: dict, args: argparse.Namespace) -> None:
    def seconds(value: float | str) -> str:
        return f"{value:.2f} s" if isinstance(value, float) else f"failed: {value}"

    print(f"{args.clients} clients started /{args.endpoint} ({args.tokens} tokens max) and left after "
          f"{args.disconnect_after:g} s; then one bystander generate")
    print(f"bystander latency: on the idle server {seconds(out['baseline'])}   right after the clients left "
          f"{seconds(out['bystander'])}")
    print(f"server CPU in the {args.settle:g} s after they left (bystander included): {out['cpu after']:.1f} s   "
          f"memory (RSS) before {out['idle MB']:.0f} MB, at the end {out['end MB']:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default=app.DEFAULT_STACK)
    parser.add_argument("--random", action="store_true", help="a random embedded-sized stack in a temp folder")
    parser.add_argument("--scenario", choices=("steady", "burst", "disconnect"), default="steady")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=32, help="max new tokens per reply")
    parser.add_argument("--timeout", type=float, default=120, help="seconds for the whole load, after start-up")
    parser.add_argument("--burst", type=int, default=90, help="burst: generates submitted at once")
    parser.add_argument("--burst-sessions", type=int, default=1, help="burst: sessions they come from")
    parser.add_argument("--endpoint", choices=("generate", "sweep"), default="generate",
                        help="disconnect: what the leaving clients ask for")
    parser.add_argument("--disconnect-after", type=float, default=2.0, help="disconnect: seconds before leaving")
    parser.add_argument("--settle", type=float, default=10.0, help="disconnect: seconds of server CPU to count")
    parser.add_argument("--study", help="study: participants of studies/NAME.toml instead of a --scenario")
    parser.add_argument("--studies-dir", default=DEFAULT_STUDIES_DIR, help="study: the folder of study files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        stack = random_stack(folder) if args.random else Path(args.stack).resolve()
        trials = study_pool(args.study, args.studies_dir, folder) if args.study else 0
        server, url = start_server(stack, folder, args.studies_dir)
        try:
            if args.study:
                report_study(*run_study(url, args), trials, args)
            elif args.scenario == "steady":
                report(*run_load(url, server, args), args)
            elif args.scenario == "burst":
                burst, bystander, wall, memory = run_burst(url, server, args)
                print(f"burst: {args.burst} generates from {args.burst_sessions} session(s) of one address, "
                      f"submitted in {memory['fired']:.2f} s")
                report(burst, wall, memory, args, asked=args.burst)
                print(f"bystander (another address, {args.requests_per_client} request(s) one after another):")
                bystander.methods = burst.methods
                report(bystander, wall, memory, args, asked=args.requests_per_client)
            else:
                report_disconnect(run_disconnect(url, server, args), args)
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
