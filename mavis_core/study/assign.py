"""Balanced assignment of pool cells to a participant: least-seen-first, decided once when they arrive.

Each regular trial takes, in turn: the λ condition this participant has seen least, among those the least seen
over every participant so far; a prompt this participant has not seen, the least seen at that condition; the
seed least seen for that (prompt, condition); for a pairwise trial, the pair of methods least seen at that
condition. Ties fall to a generator seeded by (study, pid), so a participant's plan is a function of their pid
and of what was handed out before them. Conditions then stay within ±1 over all participants after every
assignment, and within ±1 inside each participant's trials. The methods of every trial (and the replies of
an attention check) are put in a shuffled slot order.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import dataclass

from .spec import StudySpec


@dataclass(frozen=True)
class Assignment:
    """One trial of a participant's plan: the pool cell (prompt, condition, seed) and its methods in slot order,
    or (``check`` >= 0) attention check ``check`` with its reply indices in slot order (``order``)."""

    position: int
    kind: str  # "full": every method, rated / a favourite picked; "pair": two methods and a vote
    prompt: int = -1
    condition: int = -1
    seed: int = -1
    methods: tuple[str, ...] = ()
    check: int = -1
    order: tuple[int, ...] = ()


def trial_kinds(kinds: tuple[str, ...], n: int) -> list[str]:
    """Kind of each regular trial: "pair" for a pairwise-only task, "full" without pairwise votes, and both in
    turn when a task asks for both.

    >>> trial_kinds(("ratings", "pairwise"), 4), trial_kinds(("pairwise",), 2), trial_kinds(("favourite",), 2)
    (['full', 'pair', 'full', 'pair'], ['pair', 'pair'], ['full', 'full'])
    """
    if "pairwise" not in kinds:
        return ["full"] * n
    if kinds == ("pairwise",):
        return ["pair"] * n
    return ["full" if j % 2 == 0 else "pair" for j in range(n)]


def _least(options: list, key, rng: random.Random):
    """The option with the smallest ``key``, ties broken by ``rng``."""
    return min(options, key=lambda o: (key(o), rng.random()))


def _pick(kind: str, seen: Counter, mine: Counter, n_prompts: int, n_conditions: int, n_seeds: int,
          methods: tuple[str, ...], rng: random.Random) -> tuple[int, int, int, tuple[str, ...]]:
    """One regular trial's (prompt, condition, seed, methods in slot order); updates the counts."""
    c = _least(list(range(n_conditions)), lambda c: (mine["c", c], seen["c", c]), rng)
    fresh = [p for p in range(n_prompts) if not mine["p", p]]
    p = _least(fresh, lambda p: (seen["pc", p, c], seen["p", p]), rng)
    s = _least(list(range(n_seeds)), lambda s: seen["s", p, c, s], rng)
    shown = list(methods)
    if kind == "pair":
        shown = list(_least(list(itertools.combinations(methods, 2)), lambda m: seen["pair", c, m], rng))
        seen["pair", c, tuple(shown)] += 1
    rng.shuffle(shown)
    for key in (("c", c), ("pc", p, c), ("p", p), ("s", p, c, s)):
        seen[key] += 1
    mine["c", c] += 1
    mine["p", p] += 1
    return p, c, s, tuple(shown)


def plan(spec: StudySpec, pid: str, n_prompts: int, methods: tuple[str, ...], seen: Counter) -> list[Assignment]:
    """Every trial of participant ``pid`` (positions 1 … spec.total_trials, attention checks where the study
    puts them). ``seen`` counts what earlier participants were given (`count`) and is updated in place."""
    if spec.trials_per_participant > n_prompts:
        raise ValueError(f"study {spec.name!r} gives {spec.trials_per_participant} trials per participant but has "
                         f"{n_prompts} prompts; allowed: at most one trial per prompt")
    rng = random.Random(f"{spec.name}/{pid}")
    checks = {c.position: i for i, c in enumerate(spec.attention_checks)}
    kinds = iter(trial_kinds(spec.task.kinds, spec.trials_per_participant))
    mine: Counter = Counter()
    out = []
    for position in range(1, spec.total_trials + 1):
        if position in checks:
            check = spec.attention_checks[checks[position]]
            order = rng.sample(range(len(check.replies)), len(check.replies))
            kind = "pair" if spec.task.kinds == ("pairwise",) else "full"
            out.append(Assignment(position, kind, check=checks[position], order=tuple(order)))
            continue
        kind = next(kinds)
        p, c, s, shown = _pick(kind, seen, mine, n_prompts, len(spec.conditions), spec.settings.seeds, methods, rng)
        out.append(Assignment(position, kind, p, c, s, shown))
    return out


def count(assignments: list[Assignment], methods: tuple[str, ...]) -> Counter:
    """The counts `plan` balances, from the assignments handed out so far (``methods`` in the study's order)."""
    seen: Counter = Counter()
    for a in assignments:
        if a.check >= 0:
            continue
        for key in (("c", a.condition), ("pc", a.prompt, a.condition), ("p", a.prompt),
                    ("s", a.prompt, a.condition, a.seed)):
            seen[key] += 1
        if a.kind == "pair":
            seen["pair", a.condition, tuple(m for m in methods if m in a.methods)] += 1
    return seen
