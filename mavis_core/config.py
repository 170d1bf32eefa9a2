"""Methods, λ and decoding settings: the names every layer shares, and `DecodeConfig`, validated on construction.

Words used alike across the package: ``weights`` are a user's raw objective weights (any non-negative scale,
as the sliders give them); ``lam`` (λ) is the same normalised onto the simplex (`DecodeConfig.normalised`);
a value model's ``heads`` map its outputs to objective indices; a ``score`` is a reward model's judgement of a
whole reply, and ``q_values`` are a value model's estimates for next-token candidates.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

PAIR_GRID_POINTS = 11  # λ = (i/10, 1 - i/10) for a sweep over two objectives
SIMPLEX_GRID_STEPS = 4  # λ on a 1/4 grid of the simplex for three or more: 15 points for three objectives

METHODS = ("base", "mavis", "mod", "rsoup", "morlhf", "prompted", "conditioned")
# MORLHF: the stack's policies fine-tuned for one exact preference λ ([references] tables; an objective's own
# policy at λ one-hot). It is a reference, not a steering method: it decodes only at the λ it was trained for.
# Prompted: the base with λ written into its system prompt in words (`dialogue.weights_prompt`), no training.
# Conditioned: one LoRA policy trained over sampled λ (MOODPO-style online DPO), reading Prompted's context.
# The methods whose own rows are not π_ref on the plain prompt: each also gets a plain base row over the plain
# prompt, for the π_ref log-probs of its tokens (base and MAVIS read those from their own row).
NEEDS_REF_ROW = frozenset({"mod", "rsoup", "morlhf", "prompted", "conditioned"})
# The methods whose own rows read the prompt with λ in words in its system prompt (`lanes.plan_lanes`).
WEIGHTS_IN_PROMPT = frozenset({"prompted", "conditioned"})
SEARCHES = ("sample", "best_of_n", "beam")
# How every page names a method: the app's column titles, the chart's legend and the results page's prose.
METHOD_NAMES = {"base": "Base", "mavis": "MAVIS", "mod": "MOD", "rsoup": "RSoup", "morlhf": "MORLHF",
                "prompted": "Prompted", "conditioned": "Conditioned"}
MAX_STRENGTH = 2.0  # MOD/RSoup strength α: 1 is as published, above it extrapolates past the policies


def normalise_weights(weights: dict[str, float]) -> dict[str, float]:
    """λ: a user's raw weights (non-negative) divided by their sum, so they lie on the simplex; all zeros stay
    zeros (a caller says that is a problem, not this).

    >>> normalise_weights({"helpful": 3, "humor": 1}), normalise_weights({"helpful": 0})
    ({'helpful': 0.75, 'humor': 0.25}, {'helpful': 0.0})
    """
    total = sum(weights.values())
    return {name: (w / total if total > 0 else 0.0) for name, w in weights.items()}


def require_positive(settings: object, *names: str) -> None:
    """Raise a ValueError naming each of ``names`` whose value on ``settings`` (a config dataclass) is below 1."""
    bad = [f"{name} must be >= 1, got {getattr(settings, name)!r}" for name in names if getattr(settings, name) < 1]
    if bad:
        raise ValueError(f"{type(settings).__name__}: {'; '.join(bad)}")


def lambda_index(lam: list[float] | tuple[float, ...], points: list[tuple[float, ...]]) -> int | None:
    """Which of ``points`` (normalised λ, one order) the weights ``lam`` (same order, any scale) equal, or None:
    where a policy was fine-tuned for exactly that preference (MORLHF), up to the rounding of a stack file.

    >>> lambda_index([1, 0, 4], [(1.0, 0.0, 0.0), (0.2, 0.0, 0.8)]), lambda_index([1, 1, 0], [(1.0, 0.0, 0.0)])
    (1, None)
    """
    total = sum(lam)
    if total <= 0:
        return None
    return next((i for i, point in enumerate(points)
                 if all(abs(w / total - p) < 1e-4 for w, p in zip(lam, point, strict=True))), None)


def search_label(search: str, size: int) -> str:
    """The one name of a search of ``size`` candidates (best-of-N) or beams, for a column, a chart point and a
    table series alike.

    >>> search_label("sample", 1), search_label("best_of_n", 4), search_label("beam", 2)
    ('sample', 'best-of-4', 'beam-2')
    """
    return {"sample": "sample", "best_of_n": f"best-of-{size}", "beam": f"beam-{size}"}[search]


def search_kind(label: str) -> str:
    """The search a `search_label` names, without its size: "best-of-4" -> "best-of", "beam-2" -> "beam".

    >>> search_kind("best-of-4"), search_kind("beam-2"), search_kind("sample")
    ('best-of', 'beam', 'sample')
    """
    head, _, size = label.rpartition("-")
    return head if head and size.isdigit() else label
@dataclass(frozen=True)
class DecodeConfig:
    """Decoding settings shared by every method.

    Args:
        method: one of `METHODS`: "base", "mavis", "mod", "rsoup", "morlhf" (at a λ with a policy fine-tuned for
            it), "prompted" (the base, λ written into its system prompt) or "conditioned" (the stack's one LoRA
            policy conditioned on λ, reading the same prompt as Prompted).
        weights: objective -> non-negative weight λ; normalised to sum to 1 (see `normalised`).
        beta: strength of the MAVIS tilt, β >= 0.
        top_k: every method samples from the top-k of its own distribution.
        temperature: > 0, applied to the method's logits before top-k.
        max_new_tokens: reply length limit, >= 1.
        seed: same seed + prompt + settings => same text.
        search: "sample" (one tilted sample), "best_of_n" (``num_candidates`` samples, the best λ-weighted
            reward wins) or "beam" (value-guided beam search with ``num_beams`` beams); see mavis_core.search.
            Every method supports every search: RSoup is just another model, so beam search ranks its beams by
            its own log-prob, as for base and MOD.
        num_candidates: N >= 1, samples drawn by best-of-N (seeds seed, seed + 1, …, seed + N − 1).
        num_beams: B >= 1, beams kept by beam search.
        strength: α in [0, 2], how far MOD and RSoup move from the base: MOD samples from
            (1 − α)·log π_ref + α·Σ λ_m log π_m, RSoup from θ_0 + α·Σ λ_m ΔW_m. 1 is the methods as published;
            lower values trade reward for KL, higher ones extrapolate past the policies (more reward and KL, until
            the replies break), so their curves can be compared with MAVIS's at a matched KL. The conditioned
            policy takes it as RSoup does: θ_0 + α·ΔW_conditioned.
    """

    method: str = "mavis"
    weights: dict[str, float] = field(default_factory=dict)
    beta: float = 1.0
    top_k: int = 15
    temperature: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0
    search: str = "sample"
    num_candidates: int = 4
    num_beams: int = 4
    strength: float = 1.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r} is not known; allowed: {', '.join(METHODS)}")
        if self.search not in SEARCHES:
            raise ValueError(f"search {self.search!r} is not known; allowed: {', '.join(SEARCHES)}")
        if not isinstance(self.weights, dict) or not self.weights:
            raise ValueError(f"weights must be a non-empty dict objective -> weight, got {self.weights!r}")
        for name, w in self.weights.items():
            if not isinstance(w, (int, float)) or math.isnan(w) or math.isinf(w) or w < 0:
                raise ValueError(f"weight of {name!r} must be a finite number >= 0, got {w!r}")
        if sum(self.weights.values()) <= 0:
            raise ValueError(f"weights must not all be zero, got {self.weights!r}")
        if not math.isfinite(self.beta) or self.beta < 0:
            raise ValueError(f"beta must be a finite number >= 0, got {self.beta!r}")
        if not isinstance(self.top_k, int) or self.top_k < 1:
            raise ValueError(f"top_k must be an integer >= 1, got {self.top_k!r}")
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if isinstance(self.strength, bool) or not isinstance(self.strength, (int, float)) \
                or not 0 <= self.strength <= MAX_STRENGTH:
            raise ValueError(f"strength must be a number between 0 and {MAX_STRENGTH:g}, got {self.strength!r}")
        for name in ("num_candidates", "num_beams"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")

    @classmethod
    def default(cls, name: str):
        """The default of one setting (one home for every default: CLIs and helpers read it here).

        >>> DecodeConfig.default("top_k")
        15
        """
        return cls.__dataclass_fields__[name].default

    def normalised(self, objectives: list[str]) -> list[float]:
        """λ in the stack's objective order, summing to 1; unknown names raise ValueError."""
        unknown = sorted(set(self.weights) - set(objectives))
        if unknown:
            raise ValueError(f"unknown objective(s) {unknown} in weights; this stack has {objectives}")
        lam = normalise_weights(self.weights)
        return [lam.get(name, 0.0) for name in objectives]

    @property
    def search_size(self) -> int:
        """How many replies the search weighs: 1 for sampling, N for best-of-N, B for beam search."""
        return {"sample": 1, "best_of_n": self.num_candidates, "beam": self.num_beams}[self.search]


def weight_grid(n_objectives: int, axes: tuple[int, int] | None = None) -> list[list[float]]:
    """λ points for a sweep: 11 points between two objectives (``axes``), else a simplex grid over all.

    >>> weight_grid(3, axes=(0, 2))[:2]
    [[0.0, 0.0, 1.0], [0.1, 0.0, 0.9]]
    >>> len(weight_grid(3))
    15
    """
    if axes is not None:
        i, j = axes
        if i == j:
            raise ValueError("a sweep over a pair needs two different objectives; pick different chart axes")
        points = []
        for s in range(PAIR_GRID_POINTS):
            lam = [0.0] * n_objectives
            lam[i] = round(s / (PAIR_GRID_POINTS - 1), 6)
            lam[j] = round(1 - lam[i], 6)
            points.append(lam)
        return points
    n = SIMPLEX_GRID_STEPS
    combos = itertools.product(range(n + 1), repeat=n_objectives)
    return [[c / n for c in combo] for combo in combos if sum(combo) == n]


def sweep_jobs(methods: list[str], grid: list[list[float]],
               morlhf: list[tuple[float, ...]] = ()) -> list[tuple[str, list[float] | None]]:
    """(method, λ) pairs to run. The base ignores λ, so it runs once, with no λ (its weights are NaN); MORLHF
    runs only at the λ points of ``morlhf`` (where a policy was fine-tuned for exactly that preference)."""
    return [(m, None) if m == "base" else (m, lam) for m in methods for lam in (grid[:1] if m == "base" else grid)
            if m != "morlhf" or lambda_index(lam, list(morlhf)) is not None]
