"""Trials served per second from a study's pre-built pool: simulated participants answer every trial of a study,
one after another or from several threads at once (each with its own `StudySessions`, as separate app workers).

    python benchmarks/study_pool.py [--study studies/demo.toml] [--participants 50] [--threads 1,4,16]
                                    [--db PATH] [--pool fake|STACK]

A *served trial* is one ``submit`` (the answer checked and committed to disk, synchronous=FULL) and the next
trial read back from the pool; each participant's ``start`` (their plan drawn and stored) is counted in the
wall time too. ``--pool fake`` (the default) fills the pool with short made-up replies (serving does not
depend on their text); ``--pool assets/tiny/stack.toml`` decodes the real pool first (not timed). Prints, per
thread count: trials per second over the wall time and the p50 / p95 latency of a submit. No model is called
while serving; the disk's fsync speed and other load on the machine move these numbers, so compare within one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: mavis_core is at the repo root
import numpy as np

from mavis_core.study import BuildConfig, ShownTrial, StudySessions, build_pool, read_study
from mavis_core.study.simulate import fake_pool, simulated_answer


def participant(sessions: StudySessions, pid: str, rng: np.random.Generator, latencies: list[float]) -> int:
    """Run one simulated participant through the study; returns the trials served."""
    shown, served = sessions.start(pid, simulated=True), 0
    while isinstance(shown, ShownTrial):
        answer = simulated_answer(shown, sessions.hidden(pid, shown.position), rng)
        start = time.perf_counter()
        shown = sessions.submit(pid, shown.position, answer)
        latencies.append(time.perf_counter() - start)
        served += 1
    return served


def run(study: Path, db: Path, participants: int, threads: int, tag: str) -> tuple[float, float, float]:
    """Trials per second and p50 / p95 submit latency (ms) of ``participants`` spread over ``threads``."""
    latencies: list[float] = []
    counts = [0] * threads

    def work(t: int) -> None:
        sessions, rng = StudySessions(study, db), np.random.default_rng(t)
        for i in range(t, participants, threads):
            counts[t] += participant(sessions, f"{tag}-{i:04d}", rng, latencies)

    start = time.perf_counter()
    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - start
    cuts = statistics.quantiles(latencies, n=20)
    return sum(counts) / wall, statistics.median(latencies) * 1000, cuts[18] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", type=Path, default=Path("studies/demo.toml"))
    parser.add_argument("--participants", type=int, default=50)
    parser.add_argument("--threads", default="1,4,16", help="comma-separated thread counts, each a separate run")
    parser.add_argument("--db", type=Path, help="study database (default: a new temporary file)")
    parser.add_argument("--pool", default="fake", help="fake (made-up replies) or a stack file to decode with")
    args = parser.parse_args()
    spec = read_study(args.study)
    db = args.db or Path(tempfile.mkdtemp(prefix="study-pool-")) / "study.db"
    if args.pool == "fake":
        fake_pool(spec, db, ("base", "mavis", "mod", "rsoup", "prompted"))
    else:
        build_pool(BuildConfig(args.study, db, args.pool))
    print(f"study {spec.name}: {spec.total_trials} trials per participant, {args.participants} participants per run, "
          f"database {db}")
    for threads in (int(t) for t in args.threads.split(",")):
        rate, p50, p95 = run(args.study, db, args.participants, threads, f"t{threads}")
        print(f"threads {threads:3d}: {rate:7.1f} trials/s served, submit p50 {p50:6.1f} ms, p95 {p95:6.1f} ms")


if __name__ == "__main__":
    main()
