"""What a study's answers say, as pure functions of data frames (`report.answers` reads them from the database).

``ratings`` has one row per (participant, trial, reply, objective): ``pid``, ``condition`` (a label),
``method``, ``objective``, ``rating``, ``weight`` (the weight of that objective in the trial's λ), ``reward``
(the reward model's score of that reply for that objective) and ``unit`` (the reply: prompt, λ, method, seed).

Intervals are percentile bootstraps that resample *participants* (their ratings move together), with a fixed
seed. Agreement between raters is Krippendorff's α at the ordinal level (the `krippendorff` package); agreement
with the reward models is Spearman's ρ between each reply's mean human rating and its reward score.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0


def bootstrap_mean(values: np.ndarray, clusters: np.ndarray, resamples: int = RESAMPLES, level: float = LEVEL,
                   seed: int = SEED) -> tuple[float, float, float]:
    """Mean of ``values`` (n,) and its percentile interval over resamples of whole ``clusters`` (n,) labels.

    >>> bootstrap_mean(np.array([1.0, 3.0]), np.array(["a", "a"]))
    (2.0, 2.0, 2.0)
    """
    _, inverse = np.unique(clusters, return_inverse=True)
    sums = np.bincount(inverse, weights=values)  # (c,)
    counts = np.bincount(inverse).astype(float)  # (c,)
    draws = np.random.default_rng(seed).integers(0, len(sums), size=(resamples, len(sums)))  # (resamples, c)
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)  # (resamples,)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(values.mean()), float(low), float(high)


def mean_table(ratings: pd.DataFrame, by: list[str], resamples: int = RESAMPLES, seed: int = SEED) -> pd.DataFrame:
    """Per group of ``by`` columns (with ``objective``): ratings, participants, mean and its 95 % interval."""
    rows = []
    for key, group in ratings.groupby([*by, "objective"], sort=True):
        mean, low, high = bootstrap_mean(group["rating"].to_numpy(float), group["pid"].to_numpy(), resamples,
                                         seed=seed)
        rows.append((*key, len(group), group["pid"].nunique(), mean, low, high))
    return pd.DataFrame(rows, columns=[*by, "objective", "ratings", "participants", "mean", "low", "high"])


def weight_response(ratings: pd.DataFrame) -> pd.DataFrame:
    """Does a rating rise with the weight of its own objective? Per method and objective: Spearman's ρ of
    rating with weight (and its p-value), the least-squares slope (rating points per unit of weight), and n."""
    rows = []
    for (method, objective), group in ratings.groupby(["method", "objective"], sort=True):
        varied = group["weight"].nunique() > 1 and group["rating"].nunique() > 1
        rho, p = spearmanr(group["weight"], group["rating"]) if varied else (np.nan, np.nan)
        slope = np.polyfit(group["weight"], group["rating"], 1)[0] if group["weight"].nunique() > 1 else np.nan
        rows.append((method, objective, len(group), float(rho), float(p), float(slope)))
    return pd.DataFrame(rows, columns=["method", "objective", "ratings", "spearman", "p", "slope"])


def reward_agreement(ratings: pd.DataFrame) -> pd.DataFrame:
    """Per objective: Spearman's ρ between each reply's mean human rating and its reward model score."""
    rows = []
    for objective, group in ratings.dropna(subset=["reward"]).groupby("objective", sort=True):
        per_reply = group.groupby("unit").agg(rating=("rating", "mean"), reward=("reward", "first"))
        ok = len(per_reply) > 2 and per_reply["rating"].nunique() > 1 and per_reply["reward"].nunique() > 1
        rho, p = spearmanr(per_reply["rating"], per_reply["reward"]) if ok else (np.nan, np.nan)
        rows.append((objective, len(per_reply), float(rho), float(p)))
    return pd.DataFrame(rows, columns=["objective", "replies", "spearman", "p"])


def krippendorff_alpha(ratings: pd.DataFrame, points: int) -> pd.DataFrame:
    """Per objective: Krippendorff's α (ordinal, values 1 … ``points``) over replies rated by two or more
    participants; NaN where no reply was."""
    import krippendorff

    rows = []
    for objective, group in ratings.groupby("objective", sort=True):
        table = group.pivot_table(index="pid", columns="unit", values="rating", aggfunc="first")  # (raters, units)
        table = table.loc[:, table.notna().sum() >= 2]
        alpha = np.nan
        if table.shape[1] and np.unique(table.to_numpy()[~np.isnan(table.to_numpy())]).size > 1:
            alpha = krippendorff.alpha(reliability_data=table.to_numpy(float), level_of_measurement="ordinal",
                                       value_domain=list(range(1, points + 1)))
        rows.append((objective, table.shape[1], int(table.notna().any(axis=1).sum()), float(alpha)))
    return pd.DataFrame(rows, columns=["objective", "replies", "raters", "alpha"])


def favourite_shares(favourites: pd.DataFrame) -> pd.DataFrame:
    """Per method: trials it was shown in, how often it was picked, and that share (picked ÷ shown)."""
    if favourites.empty:
        return pd.DataFrame(columns=["method", "shown", "picked", "share"])
    shown = favourites["shown"].explode().value_counts().rename("shown")
    picked = favourites["method"].value_counts().rename("picked")
    table = pd.concat([shown, picked], axis=1).fillna(0).astype(int)
    table["share"] = table["picked"] / table["shown"]
    return table.rename_axis("method").reset_index().sort_values("share", ascending=False, ignore_index=True)
