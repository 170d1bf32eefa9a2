"""The one Pareto module: dominance with ties, fronts, hypervolume and dominated share."""

import numpy as np
import pytest

from mavis_core.pareto import dominated_share, front, hypervolume, non_dominated


def test_ties_are_not_dominance_and_equal_points_both_stay():
    pts = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 0.5], [0.0, 2.0]])
    assert non_dominated(pts).tolist() == [True, True, False, True]
    assert front([tuple(p) for p in pts]) == [3, 0, 1]


def test_hypervolume_of_a_staircase_and_points_behind_the_reference():
    assert hypervolume([(3, 1), (2, 2), (1, 3)], (0, 0)) == pytest.approx(6.0)
    assert hypervolume([(-1, 5), (2, 2)], (0, 0)) == pytest.approx(4.0)  # a point left of the reference adds nothing
    assert hypervolume(np.empty((0, 2)), (0, 0)) == 0.0


def test_dominated_share_counts_only_the_losers_front():
    loser = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # (0, 0) is behind its own front: not counted
    assert dominated_share(np.array([[1.0, 0.5]]), loser) == pytest.approx(0.5)
    assert dominated_share(loser, loser) == 0.0
    assert np.isnan(dominated_share(loser, np.empty((0, 2))))
