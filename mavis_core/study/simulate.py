"""Simulated participants, for tests, benchmarks and a demo report: never mistaken for people (each is stored
with ``simulated = 1``, and every page and table made from them says SIMULATED).

A simulated rater's rating of a reply on an objective is its reward model score squashed onto the scale,
plus Gaussian noise: ``round(mid + half · tanh(reward) + noise · N(0, 1))``, clipped to the scale. Its
favourite is the reply with the highest λ-weighted rating; its vote the reply with the higher λ-weighted
reward. It gets attention checks right.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .pool import Pool, read_pool, register
from .sessions import ShownTrial, StudySessions
from .spec import StudySpec
from .store import opened


def simulated_answer(trial: ShownTrial, hidden: list[dict], rng: np.random.Generator, noise: float = 0.7) -> dict:
    """One simulated answer to ``trial``, from the hidden methods' reward scores (`StudySessions.hidden`)."""
    points = len(trial.scale) or 5
    mid, half = (1 + points) / 2, (points - 1) / 2

    def rate(cell: dict, objective: str) -> int:
        if cell["method"] == "check":
            return points if cell["correct"] else 1
        value = mid + half * np.tanh(cell["rewards"].get(objective, 0.0)) + noise * rng.standard_normal()
        return int(np.clip(round(value), 1, points))

    def weighted(cell: dict, scores: dict[str, float]) -> float:
        if cell["method"] == "check":
            return float(cell["correct"])
        return sum(w * scores.get(o, 0.0) for o, w in trial.weights.items())

    answer: dict = {}
    if "ratings" in trial.asks:
        answer["ratings"] = {s: {o: rate(c, o) for o in trial.objectives} for s, c in zip(trial.slots, hidden,
                                                                                         strict=True)}
    if "favourite" in trial.asks:
        scores = [answer["ratings"][s] if "ratings" in answer else c["rewards"] for s, c in zip(trial.slots, hidden,
                                                                                               strict=True)]
        answer["favourite"] = trial.slots[int(np.argmax([weighted(c, sc) for c, sc in zip(hidden, scores,
                                                                                           strict=True)]))]
    if "vote" in trial.asks:
        a, b = (weighted(c, c["rewards"]) for c in hidden)
        answer["vote"] = "A" if a > b else "B" if b > a else "tie"
    return answer


def simulate(sessions: StudySessions, participants: int, seed: int = 0, noise: float = 0.7,
             prefix: str = "sim") -> list[str]:
    """Run ``participants`` simulated participants (pids ``sim-000``, …) through every trial; returns the pids."""
    rng = np.random.default_rng(seed)
    pids = [f"{prefix}-{i:03d}" for i in range(participants)]
    for pid in pids:
        shown = sessions.start(pid, simulated=True)
        while isinstance(shown, ShownTrial):
            answer = simulated_answer(shown, sessions.hidden(pid, shown.position), rng, noise)
            shown = sessions.submit(pid, shown.position, answer)
    return pids


def fake_pool(spec: StudySpec, study_db: str | Path, methods: tuple[str, ...], seed: int = 0) -> Pool:
    """Store a pool of made-up replies ("reply of METHOD to prompt P …") with Gaussian reward scores, for tests
    and benchmarks of everything after decoding; no model is loaded."""
    rng = np.random.default_rng(seed)
    pool = Pool(spec.name, spec.prompts, spec.conditions, methods, 1.0, "fake")
    rows = [(spec.name, p, c, m, s, f"reply of {m} to prompt {p} at condition {c}, seed {s}", 8, 0.0, "length",
             json.dumps({o: float(rng.standard_normal()) for o in spec.task.objectives}))
            for p, c, m, s in pool.cells(spec.settings.seeds)]
    with opened(study_db) as db:
        register(db, pool, spec, str(study_db))
        db.executemany("INSERT OR IGNORE INTO study_replies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        db.execute("UPDATE study_pools SET built = ? WHERE study = ?", ("fake", spec.name))
        return read_pool(db, spec.name)
