"""What a λ sweep runs and how its replies become points: one home for the app and `python -m mavis_core sweep`.

Pure functions, no model: the λ normalisation, the per-request cost cap, the prompt pool and seed schedule of
a point, a sweep's plan (its grid, rounds and the line that says what it varies and holds), and the mean ±
standard error of a point's replies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from .config import DecodeConfig, sweep_jobs, weight_grid

SEED_RANGE = (0, 2**31 - 1)  # the seeds a user may type; a schedule wraps round past the top
MAX_REQUEST_WORK = 32_768  # replies × samples (N or B) × tokens in one app request: about a minute on 2 CPU cores


def check_work(replies: int, cfg: DecodeConfig, cap: int | None = None) -> None:
    """ValueError when ``replies`` replies under ``cfg`` take more than ``cap`` token steps (replies × samples ×
    tokens; MAX_REQUEST_WORK unless given), saying what to lower."""
    cap, samples = MAX_REQUEST_WORK if cap is None else cap, cfg.search_size
    work = replies * samples * cfg.max_new_tokens
    if work > cap:
        raise ValueError(f"This request is too much work for a shared server: {replies} replies × {samples} "
                         f"samples × {cfg.max_new_tokens} tokens = {work:,} token steps; the limit is {cap:,}. Use "
                         f"fewer tokens, a smaller N or B, fewer methods, fewer prompts or seeds per λ point, or "
                         f"sweep over the chart axes instead of all objectives.")


def seed_schedule(first: int, count: int, search: str, num_candidates: int = 1) -> list[int]:
    """The seeds of a point's replies: ``first`` and the next ones; best-of-N spaced by N so no two share a
    candidate (a search draws its N candidates from seed … seed + N − 1); beam search draws nothing at random,
    so it runs one seed.

    >>> seed_schedule(5, 3, "sample"), seed_schedule(5, 3, "best_of_n", 4), seed_schedule(5, 3, "beam")
    ([5, 6, 7], [5, 9, 13], [5])
    """
    if search == "beam":
        return [first]
    step = num_candidates if search == "best_of_n" else 1
    return [(first + i * step) % (SEED_RANGE[1] + 1) for i in range(count)]


def prompt_pool(typed: str, examples: Sequence[str], count: int) -> list[str]:
    """``count`` prompts for a point: the typed one, then the example prompts other than it; ValueError when
    there are not that many.

    >>> prompt_pool("hi", ["hello", "hi", "hey"], 2)
    ['hi', 'hello']
    """
    prompts = [typed, *[p for p in examples if p != typed]]
    if count > len(prompts):
        raise ValueError(f"prompts per λ point is {count}, but this stack has only {len(prompts)} prompts to use "
                         f"(the one typed and {len(prompts) - 1} example prompts); use at most {len(prompts)}.")
    return prompts[:count]


def standard_error(values: np.ndarray) -> float:
    """The standard error of the mean of ``values`` (shape (n,)); NaN for fewer than two."""
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def mean_and_se(scores: dict[str, Sequence[float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Per objective: the mean of a point's replies' scores and its standard error (NaN for one reply).

    >>> mean_and_se({"humor": [1.0, 3.0]})
    ({'humor': 2.0}, {'humor': 1.0})
    """
    arrays = {k: np.asarray(v, dtype=float) for k, v in scores.items()}
    return {k: float(v.mean()) for k, v in arrays.items()}, {k: standard_error(v) for k, v in arrays.items()}


def _count(n: int, noun: str) -> str:
    """``n`` and its noun, plural unless one.

    >>> _count(1, "seed"), _count(3, "prompt")
    ('1 seed', '3 prompts')
    """
    return f"{n} {noun}{'' if n == 1 else 's'}"


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """A checked sweep: every (prompt, seed) round runs the methods over the λ grid; ``line`` says in words what
    it varies and holds."""

    settings: DecodeConfig
    methods: list[str]
    grid: list[list[float]]
    rounds: list[tuple[str, int]]  # prompt-major: prompt i with each seed in turn
    prompts: int
    seeds: int
    line: str
    morlhf: tuple[tuple[float, ...], ...] = ()  # λ points MORLHF was fine-tuned for (`Stack.morlhf_points`)

    @property
    def keys(self) -> list[tuple]:
        """(method, *λ) of every point, in the order a sweep runs them (the base once: it ignores λ; MORLHF only
        where it was trained)."""
        return [(m, *(self.grid[0] if lam is None else lam))
                for m, lam in sweep_jobs(self.methods, self.grid, self.morlhf)]


def sweep_line(objectives: list[str], cfg: DecodeConfig, grid: list, pair: tuple[int, int] | None,
               n_prompts: int, seeds: list[int], asked_seeds: int) -> str:
    """One line: what a sweep varies (λ over which grid) and what it holds (the decoding settings)."""
    if pair:
        others = [k for i, k in enumerate(objectives) if i not in pair]
        varies = (f"λ from {objectives[pair[1]]} only to {objectives[pair[0]]} only, {len(grid)} points"
                  + (f" ({', '.join(others)} at 0)" if others else ""))
    else:
        varies = f"λ over the simplex of {', '.join(objectives)}, {len(grid)} points"
    beam = " (beam search draws nothing at random: one seed)" if asked_seeds > len(seeds) else ""
    label = getattr(cfg, "search_label", cfg.search)
    return (f"**Varies** {varies} · **holds** β {cfg.beta:g}, top-k {cfg.top_k}, temperature {cfg.temperature:g}, "
            f"{cfg.max_new_tokens} tokens, {label} · **per point** {_count(n_prompts, 'prompt')} × "
            f"{_count(len(seeds), 'seed')} (seed {', '.join(map(str, seeds))}){beam}; the weight sliders are not "
            f"used.")


def plan_sweep(objectives: list[str], cfg: DecodeConfig, methods: list[str], prompts: list[str], n_seeds: int,
               pair: tuple[int, int] | None, morlhf: Sequence[tuple[float, ...]] = ()) -> SweepPlan:
    """The sweep of ``methods`` over the pair grid of ``pair`` (or the simplex grid), each point from ``prompts``
    × ``n_seeds`` seeds of `seed_schedule` from ``cfg.seed``; ValueError when it is too much work."""
    grid = weight_grid(len(objectives), axes=pair)
    seeds = seed_schedule(cfg.seed, n_seeds, cfg.search, cfg.num_candidates)
    line = sweep_line(objectives, cfg, grid, pair, len(prompts), seeds, n_seeds)
    trained = sum(m == "morlhf" for m, _ in sweep_jobs(methods, grid, tuple(morlhf)))
    if trained:
        line += (f" MORLHF: the policy fine-tuned for exactly that preference, at the {_count(trained, 'λ point')} it "
                 f"was trained for.")
    plan = SweepPlan(cfg, methods, grid, [(p, s) for p in prompts for s in seeds], len(prompts), len(seeds), line,
                     tuple(morlhf))
    check_work(len(plan.keys) * len(plan.rounds), cfg)
    return plan
