"""Arena leaderboard: Bradley–Terry strengths from pairwise votes, with bootstrap intervals.

Under Bradley–Terry, method i beats method j with probability s_i / (s_i + s_j). The strengths are fitted by the
MM iteration of Hunter (2004), s_i ← W_i / Σ_j n_ij / (s_i + s_j), with W_i the wins of i (a tie is half a win
to each side) and n_ij the comparisons of i and j. "Both bad" votes say nothing about the order of the two, so
they are left out of the fit and only counted. A weak prior (one virtual tie between every pair of methods)
keeps the strengths finite when a method never won, or never lost, as happens in small studies.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .dialogue import weights_prompt

VOTES = ("A", "B", "tie", "both bad")  # A better, B better, as good as each other, neither is any good
SCORE_OF_A = {"A": 1.0, "B": 0.0, "tie": 0.5}  # what a vote gives the reply shown as A; "both bad" is not scored
PRIOR_TIES = 1.0  # virtual ties per pair of methods
RESAMPLES = 200
LEVEL = 0.95
SEED = 0
COLUMNS = ["method", "strength", "low", "high", "votes", "wins", "losses", "ties", "both bad"]


def bradley_terry(wins: np.ndarray, prior: float = PRIOR_TIES, tol: float = 1e-10,
                  max_iter: int = 10_000) -> np.ndarray:
    """Bradley–Terry strengths by MM updates.

    Args:
        wins: (m, m) ``wins[i, j]`` = how often i beat j (a tie adds 0.5 to both ``[i, j]`` and ``[j, i]``).
        prior: virtual ties added between every pair; 0 gives the plain maximum-likelihood fit, which exists
            only when every method has won and lost at least once against a connected set of opponents.
    Returns:
        (m,) strengths summing to 1: P(i beats j) = s_i / (s_i + s_j).

    >>> bradley_terry(np.array([[0.0, 3.0], [1.0, 0.0]]), prior=0).round(3).tolist()
    [0.75, 0.25]
    """
    m = len(wins)
    w = np.asarray(wins, dtype=float) + prior / 2 * (1 - np.eye(m))  # (m, m)
    games = w + w.T  # (m, m) comparisons per pair
    won = w.sum(axis=1)  # (m,)
    s = np.full(m, 1 / m)
    for _ in range(max_iter):
        pairs = np.divide(games, s[:, None] + s[None, :], out=np.zeros_like(games), where=games > 0)  # (m, m)
        new = won / pairs.sum(axis=1)  # (m,) Hunter's MM step
        new /= new.sum()
        done = np.max(np.abs(new - s)) < tol
        s = new
        if done:
            break
    return s


def _win_matrix(a: np.ndarray, b: np.ndarray, score: np.ndarray, m: int) -> np.ndarray:
    """(m, m) wins from votes: method index of A, of B, and A's score (1, 0.5 or 0) per vote, each (n,)."""
    wins = np.zeros((m, m))
    np.add.at(wins, (a, b), score)
    np.add.at(wins, (b, a), 1 - score)
    return wins


def leaderboard(votes: pd.DataFrame, resamples: int = RESAMPLES, level: float = LEVEL,
                seed: int = SEED, prior: float = PRIOR_TIES) -> pd.DataFrame:
    """Per method: Bradley–Terry strength, its bootstrap interval, and vote counts; strongest first.

    Args:
        votes: one row per vote with columns ``method_a``, ``method_b`` and ``vote`` (one of VOTES).
        resamples: bootstrap resamples of the scored votes (drawn with replacement, with a fixed ``seed``);
            ``low``/``high`` are their ``level`` percentile interval.
    Returns:
        columns COLUMNS; ``votes`` counts every vote a method was in, "both bad" included.
    """
    unknown = sorted(set(votes["vote"]) - set(VOTES))
    if unknown:
        raise ValueError(f"votes must be one of {list(VOTES)}, got {unknown}")
    if votes.empty:
        return pd.DataFrame(columns=COLUMNS)
    methods = sorted(set(votes["method_a"]) | set(votes["method_b"]))
    index = {m: i for i, m in enumerate(methods)}
    scored = votes[votes["vote"] != "both bad"]
    a = scored["method_a"].map(index).to_numpy(dtype=int)  # (n,)
    b = scored["method_b"].map(index).to_numpy(dtype=int)  # (n,)
    score = scored["vote"].map(SCORE_OF_A).to_numpy(dtype=float)  # (n,)
    strength = bradley_terry(_win_matrix(a, b, score, len(methods)), prior)
    low, high = _interval(a, b, score, len(methods), resamples, level, seed, prior) if len(a) else (strength,) * 2
    table = pd.DataFrame({"method": methods, "strength": strength, "low": low, "high": high})
    return table.merge(_counts(votes), on="method").sort_values("strength", ascending=False, ignore_index=True)


def _interval(a: np.ndarray, b: np.ndarray, score: np.ndarray, m: int, resamples: int, level: float, seed: int,
              prior: float) -> tuple[np.ndarray, np.ndarray]:
    """(m,) lower and upper percentile bounds of the strengths over bootstrap resamples of the votes."""
    rng = np.random.default_rng(seed)
    draws = np.array([bradley_terry(_win_matrix(a[i], b[i], score[i], m), prior)
                      for i in rng.integers(0, len(a), size=(resamples, len(a)))])  # (resamples, m)
    tail = (1 - level) / 2 * 100
    return np.percentile(draws, tail, axis=0), np.percentile(draws, 100 - tail, axis=0)


def _counts(votes: pd.DataFrame) -> pd.DataFrame:
    """Per method: votes it was in, its wins, losses, ties and "both bad" verdicts."""
    sides = pd.concat([
        pd.DataFrame({"method": votes["method_a"], "outcome": votes["vote"].map(
            {"A": "wins", "B": "losses", "tie": "ties", "both bad": "both bad"})}),
        pd.DataFrame({"method": votes["method_b"], "outcome": votes["vote"].map(
            {"A": "losses", "B": "wins", "tie": "ties", "both bad": "both bad"})}),
    ])
    counts = pd.crosstab(sides["method"], sides["outcome"])
    counts = counts.reindex(columns=["wins", "losses", "ties", "both bad"], fill_value=0)
    counts.insert(0, "votes", counts.sum(axis=1))
    return counts.rename_axis(None, axis=1).reset_index()


def preference_record(prompt: str, chosen: str, rejected: str, weights: dict[str, float]) -> dict:
    """One DPO pair with the weights λ it was judged under, so "chosen" under humor alone is not mistaken for
    "chosen" under helpful alone: as fields (``weights``) and as the system prompt a λ-conditioned policy is
    trained with (``system``, `dialogue.weights_prompt`). TRL's DPOTrainer reads prompt / chosen / rejected as
    they are; to condition on λ, put ``system`` before the prompt (docs/app.md).

    >>> record = preference_record("hi", "a", "b", {"helpful": 1.0, "humor": 0.0})
    >>> record["weights"], record["system"].splitlines()[0]
    ({'helpful': 1.0, 'humor': 0.0}, 'Weigh your reply: helpfulness 100 %, humor 0 %.')
    """
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "weights": dict(weights),
            "system": weights_prompt(weights)}
