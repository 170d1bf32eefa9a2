"""Replies scored per second by each reward model of the embedded stack (target: >= 200 on 2 CPU cores).

    python benchmarks/reward_speed.py [--n 512] [--prompts 16] [--assets assets] [--repeats 3]

Replies are real short turns (3-30 words) of the chitchat test split; prompts are held-out eval prompts,
each shared by n / prompts replies, as in a λ sweep. The ranker is also timed with a distinct prompt per
reply (its worst case: twice the encoder work), and all three rewards together on the same replies, as
``Stack.score_all`` scores them (the embedding cache lets each reply through the encoder once). Prints the
median of ``--repeats`` timed runs after a warm-up run, each starting with an empty embedding cache. Other
load on the machine moves these numbers, so compare within one run (on a 2-core machine shared with a
training job, ``--threads 1`` keeps the two jobs' thread pools from fighting).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: mavis_core is at the repo root
from mavis_core.rewards import clear_embedding_cache, load_reward
from mavis_core.stack_file import RewardSpec
from mavis_core.training import data

SHORT_REPLY_WORDS = (3, 30)


def short_replies(n: int) -> list[str]:
    """The first n turns of the test split that are 3-30 words long."""
    lo, hi = SHORT_REPLY_WORDS
    turns = [t for conv in data.load_conversations("test") for t in conv if lo <= len(t.split()) <= hi]
    return turns[:n]


def replies_per_second(rewards: list, prompts: list[str], replies: list[str], repeats: int) -> float:
    """Median throughput of scoring the replies with every reward in ``rewards``, one after the other,
    over ``repeats`` runs after a warm-up run; the embedding cache starts empty each run."""
    for reward in rewards:
        reward.score(prompts[:32], replies[:32])
    times = []
    for _ in range(repeats):
        clear_embedding_cache()
        start = time.perf_counter()
        for reward in rewards:
            reward.score(prompts, replies)
        times.append(time.perf_counter() - start)
    return len(replies) / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="replies per timed run (default 512)")
    parser.add_argument("--prompts", type=int, default=16, help="distinct prompts the replies share (default 16)")
    parser.add_argument("--assets", type=Path, default=Path("assets"), help="embedded stack folder")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice); 1 can win on a machine busy with other jobs")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    replies = short_replies(args.n)
    shared = [p for p in data.eval_prompts(args.prompts) for _ in range(len(replies) // args.prompts + 1)]
    shared = shared[: len(replies)]
    distinct = short_replies(2 * len(replies))[len(replies) :]  # other turns serve as prompts
    device = torch.device("cpu")
    print(f"{len(replies)} replies, mean {statistics.mean(len(r.split()) for r in replies):.1f} words; "
          f"device cpu, {torch.get_num_threads()} torch threads")
    specs = {
        "helpful (minilm-ranker)": RewardSpec("minilm-ranker", str(args.assets / "rewards" / "helpful")),
        "harmless (profanity)": RewardSpec("profanity"),
        "humor (minilm-classifier)": RewardSpec("minilm-classifier", str(args.assets / "rewards" / "humor")),
    }
    rewards = {name: load_reward(spec, device) for name, spec in specs.items()}
    for name, reward in rewards.items():
        print(f"{name:34s} {replies_per_second([reward], shared, replies, args.repeats):8.0f} replies/s")
        if name.startswith("helpful"):
            rate = replies_per_second([reward], distinct, replies, args.repeats)
            print(f"{'  ... a distinct prompt per reply':34s} {rate:8.0f} replies/s")
    # As Stack.score_all runs them: the humor reward finds the replies' embeddings in the cache.
    rate = replies_per_second(list(rewards.values()), shared, replies, args.repeats)
    print(f"{'all three on the same replies':34s} {rate:8.0f} replies/s")


if __name__ == "__main__":
    main()
