"""Arena leaderboard: the Bradley–Terry fit against closed forms, ties, "both bad", bootstrap intervals."""

import numpy as np
import pandas as pd
import pytest

from mavis_core.arena import COLUMNS, VOTES, bradley_terry, leaderboard

TRUE = {"base": 1.0, "mod": 2.0, "rsoup": 4.0, "mavis": 8.0}  # P(i beats j) = s_i / (s_i + s_j)


def votes(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["method_a", "method_b", "vote"])


def simulated(n=600, seed=1) -> pd.DataFrame:
    """Votes drawn from TRUE: a random pair, A and B in a random order; 10 % ties, 5 % both bad."""
    rng, methods, rows = np.random.default_rng(seed), list(TRUE), []
    for _ in range(n):
        a, b = rng.choice(methods, size=2, replace=False)
        u = rng.random()
        vote = ("both bad" if u < 0.05 else "tie" if u < 0.15 else
                "A" if rng.random() < TRUE[a] / (TRUE[a] + TRUE[b]) else "B")
        rows.append((a, b, vote))
    return votes(rows)


def test_two_methods_closed_form():
    wins = np.array([[0.0, 7.0], [3.0, 0.0]])
    assert bradley_terry(wins, prior=0) == pytest.approx([0.7, 0.3])
    # one virtual tie: half a win more to each side, one game more
    assert bradley_terry(wins, prior=1) == pytest.approx([7.5 / 11, 3.5 / 11])


def test_fit_is_the_maximum_likelihood_point():
    """At the MLE every method's wins equal its expected wins: W_i = Σ_j n_ij s_i / (s_i + s_j)."""
    wins = np.array([[0, 5, 2], [3, 0, 4], [1, 2, 0]], dtype=float)
    s = bradley_terry(wins, prior=0)
    games = wins + wins.T
    expected = (games * s[:, None] / (s[:, None] + s[None, :])).sum(axis=1)
    assert expected == pytest.approx(wins.sum(axis=1), rel=1e-6) and s.sum() == pytest.approx(1.0)


def test_a_method_that_never_won_stays_finite_under_the_prior():
    s = bradley_terry(np.array([[0.0, 4.0], [0.0, 0.0]]))
    assert np.all(s > 0) and s[0] > s[1]


def test_ties_count_half_to_each_side():
    table = leaderboard(votes([("x", "y", "A"), ("x", "y", "tie"), ("y", "x", "tie")]), prior=0).set_index("method")
    # x: 1 win + 2 halves = 2, y: 2 halves = 1, in 3 games
    assert table.loc["x", "strength"] == pytest.approx(2 / 3) and table.loc["y", "strength"] == pytest.approx(1 / 3)
    assert table.loc["x", "ties"] == 2 and table.loc["x", "wins"] == 1 and table.loc["y", "losses"] == 1
    only_ties = leaderboard(votes([("x", "y", "tie")] * 5)).set_index("method")
    assert only_ties.loc["x", "strength"] == pytest.approx(only_ties.loc["y", "strength"])


def test_both_bad_is_counted_not_fitted():
    base = simulated(200)
    more = pd.concat([base, votes([("base", "mavis", "both bad")] * 30)], ignore_index=True)
    a, b = leaderboard(base).set_index("method"), leaderboard(more).set_index("method")
    assert np.allclose(a["strength"], b.loc[a.index, "strength"])
    assert b.loc["base", "votes"] == a.loc["base", "votes"] + 30 and b.loc["mavis", "both bad"] == \
        a.loc["mavis", "both bad"] + 30


def test_simulated_votes_recover_the_order_with_intervals_around_the_estimates():
    data = simulated()
    table = leaderboard(data)
    assert list(table.columns) == COLUMNS
    assert list(table["method"]) == sorted(TRUE, key=TRUE.get, reverse=True)  # strongest first, as simulated
    assert (table["low"] <= table["strength"]).all() and (table["strength"] <= table["high"]).all()
    assert (table["low"] < table["high"]).all()
    # n per method: every vote it was in, both bad included; each vote counts for two methods
    assert table["votes"].sum() == 2 * len(data)
    assert (table["votes"] == table[["wins", "losses", "ties", "both bad"]].sum(axis=1)).all()
    assert table.set_index("method")["votes"].to_dict() == pd.concat([data["method_a"], data["method_b"]]) \
        .value_counts().to_dict()


def test_bootstrap_is_seeded_and_wider_with_fewer_votes():
    few, many = simulated(60, seed=2), simulated(600, seed=2)
    assert leaderboard(few).equals(leaderboard(few))  # a fixed seed: the same table every time
    width = {len(d): (t := leaderboard(d))["high"] - t["low"] for d in (few, many)}
    assert width[60].mean() > width[600].mean()
    assert not leaderboard(few, seed=1).equals(leaderboard(few, seed=2))


def test_no_votes_and_unknown_votes():
    assert leaderboard(votes([])).empty and list(leaderboard(votes([])).columns) == COLUMNS
    only_bad = leaderboard(votes([("x", "y", "both bad")]))
    assert list(only_bad["strength"]) == [0.5, 0.5] and list(only_bad["votes"]) == [1, 1]
    with pytest.raises(ValueError, match=r"votes must be one of \['A', 'B', 'tie', 'both bad'\], got \['C'\]"):
        leaderboard(votes([("x", "y", "C")]))
    assert VOTES == ("A", "B", "tie", "both bad")
