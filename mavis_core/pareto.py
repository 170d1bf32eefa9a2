"""Pareto dominance on points whose every column is maximised: the one home of dominance, fronts,
hypervolume and dominated share (the results page, evaluation tables and the app's chart all use these)."""

from __future__ import annotations

import numpy as np


def dominates(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether each row of ``a`` dominates point ``b``: >= on every column and > on at least one."""
    return np.all(a >= b, axis=-1) & np.any(a > b, axis=-1)


def non_dominated(points: np.ndarray) -> np.ndarray:
    """Mask of rows no other row dominates (ties all stay). Grids are small: O(n²).

    >>> non_dominated(np.array([[0, 1], [1, 0], [0.5, 0.5], [0.2, 0.2]])).tolist()
    [True, True, True, False]
    """
    points = np.asarray(points, dtype=float)
    return np.array([not dominates(points, p).any() for p in points], dtype=bool)


def front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points, sorted by x (for drawing a front as a line).

    >>> front([(0, 1), (1, 0), (0.5, 0.5), (0.2, 0.2)])
    [0, 2, 1]
    """
    if not len(points):
        return []
    keep = np.flatnonzero(non_dominated(np.asarray(points, dtype=float).reshape(len(points), -1)))
    return sorted(keep.tolist(), key=lambda i: (points[i][0], -points[i][1]))


def hypervolume(points: list[tuple[float, float]] | np.ndarray, reference: tuple[float, float]) -> float:
    """Area dominated by ``points`` and dominating ``reference``, both objectives maximised (exact sweep-line).

    >>> hypervolume([(2, 1), (1, 2)], (0, 0))
    3.0
    """
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    rx, ry = reference
    pts = pts[(pts[:, 0] > rx) & (pts[:, 1] > ry)]  # points not beyond the reference add nothing
    area, top = 0.0, ry
    for x, y in sorted(map(tuple, pts), key=lambda p: -p[0]):  # right to left: each higher point adds a slab
        if y > top:
            area += (x - rx) * (y - top)
            top = y
    return float(area)


def dominated_share(winner: np.ndarray, loser: np.ndarray) -> float:
    """Share of ``loser``'s front points (its non-dominated rows) that some row of ``winner`` dominates.

    >>> dominated_share(np.array([[1.0, 1.0]]), np.array([[0.5, 0.5], [2.0, 0.0]]))
    0.5
    """
    winner, loser = np.asarray(winner, dtype=float), np.asarray(loser, dtype=float)
    loser = loser[non_dominated(loser)] if len(loser) else loser
    if not len(loser):
        return float("nan")
    return float(np.mean([bool(dominates(winner, p).any()) for p in loser]))
