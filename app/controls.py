"""The Generate tab's settings: their choices and defaults, presets, and the share link that carries them (the
page's query string follows the controls, see static/share.js; `settings_from_query` reads it back)."""

from __future__ import annotations

import math

from mavis_core.engine import (
    BEAMS_RANGE,
    BETA_RANGE,
    CANDIDATES_RANGE,
    MAX_PROMPT_CHARS,
    SEED_RANGE,
    TEMPERATURE_RANGE,
    TOP_K_RANGE,
    WEIGHT_RANGE,
    Engine,
    clean_prompt,
)

NO_Z = "none (2-D)"
SEARCH_CHOICES = [("sample", "sample"), ("best-of-N", "best_of_n"), ("beam search", "beam")]
SEARCH_DEFAULTS = ("sample", 4, 4)  # search, N, B: what API callers that leave them out get
SWEEP_MODES = ("chart axes (11 λ points)", "all objectives (simplex grid)")
SWEEP_PROMPTS_RANGE = (1, 8)  # prompts per λ point: the typed one, then the stack's first example prompts
SWEEP_SEEDS_RANGE = (1, 8)  # seeds per λ point: the seed box's, then the next ones
SHARE_PROMPT_BYTES = 6000  # a prompt longer than this (URL-encoded) is left out of the share link (static/share.js)


def share_keys(objectives: list[str]) -> list[str]:
    """The share link's query keys, in the order of the controls they follow (see `generate.wire_share_link`)."""
    return ["prompt", *[f"w_{k}" for k in objectives], "beta", "k", "temp", "len", "seed", "methods", "search", "n",
            "b"]


def _query_number(text: str, low: float, high: float, integer: bool = False) -> float | int | None:
    """``text`` as a number clipped to [low, high] (rounded if ``integer``); None for anything else."""
    try:
        value = float(text) if len(text) <= 40 else math.nan
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    value = min(max(value, low), high)
    return int(round(value)) if integer else value


def settings_from_query(params: dict[str, str], engine: Engine) -> dict[str, object]:
    """The settings a share link carries (query key -> value), each checked: numbers clipped to their control's
    range, only known methods and searches, a prompt that `clean_prompt` accepts; anything else is left out, so a
    bad link opens the page with its defaults. A link with a seed also turns "new seed each time" off ("new_seed":
    False), so Generate replays it.

    >>> from types import SimpleNamespace
    >>> stub = SimpleNamespace(objectives=["helpful"], methods=["base", "mavis"], max_new_tokens=64)
    >>> settings_from_query({"w_helpful": "7", "k": "x", "methods": "mavis,nope", "seed": "3.6"}, stub)
    {'w_helpful': 1.0, 'seed': 4, 'new_seed': False, 'methods': ['mavis']}
    """
    params = {k: v for k, v in params.items() if isinstance(v, str)}
    ranges = {**{f"w_{k}": (*WEIGHT_RANGE, False) for k in engine.objectives}, "beta": (*BETA_RANGE, False),
              "k": (*TOP_K_RANGE, True), "temp": (*TEMPERATURE_RANGE, False), "len": (1, engine.max_new_tokens, True),
              "seed": (*SEED_RANGE, True), "n": (*CANDIDATES_RANGE, True), "b": (*BEAMS_RANGE, True)}
    out = {}
    for key, (low, high, integer) in ranges.items():
        value = _query_number(params[key], low, high, integer) if key in params else None
        if value is not None:
            out[key] = value
    if not any(out.get(f"w_{k}", 0.5) for k in engine.objectives):  # sliders left at 0.5 stay so
        out = {k: v for k, v in out.items() if not k.startswith("w_")}
    if "seed" in out:
        out["new_seed"] = False
    methods = [m for m in engine.methods if m in params.get("methods", "").split(",")]
    if methods:
        out["methods"] = methods
    if params.get("search") in [value for _, value in SEARCH_CHOICES]:
        out["search"] = params["search"]
    try:
        out["prompt"] = clean_prompt(params["prompt"][:MAX_PROMPT_CHARS])[0]
    except (KeyError, ValueError):
        pass
    return out


def presets(objectives: list[str]) -> dict[str, list[float]]:
    """Slider presets: each objective alone, and all balanced."""
    out = {f"{o} only": [1.0 if k == o else 0.0 for k in objectives] for o in objectives}
    return {**out, "balanced": [0.5] * len(objectives)}


def check_axes(objectives: list[str], x: str, y: str, z: str = NO_Z) -> None:
    """ValueError naming the field unless x, y (and z, when not "none") are different objectives."""
    if not {x, y} <= set(objectives) or z not in (NO_Z, *objectives):
        raise ValueError(f"chart axes must be objectives of this stack: {objectives}")
    if x == y:
        raise ValueError(f"y ('y axis') is {y!r}, the same as x ('x axis'): pick two different objectives for the "
                         f"chart")
    if z in (x, y):
        raise ValueError(f"z ('z axis (3-D view)') is {z!r}, already on the {'x' if z == x else 'y'} axis: pick a "
                         f"third objective, or {NO_Z!r}")


def split_search(values: tuple, n_objectives: int) -> tuple[tuple, tuple]:
    """The trailing inputs of generate: one weight per objective, then search, N and B (optional, so API callers
    from before search existed keep working)."""
    weights, search = values[:n_objectives], values[n_objectives:]
    if len(search) > len(SEARCH_DEFAULTS):
        raise ValueError(f"expected {n_objectives} weights then search, N and B; got {len(values)} values")
    return weights, tuple(search) + SEARCH_DEFAULTS[len(search):]
