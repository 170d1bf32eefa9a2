"""The measurements docs/results.md reports, each a function that returns its table (one row per method and
setting, as `evaluation.sweep` makes them; tagged prompts add each kind's columns), and the pure comparisons
computed from those tables.

`results` writes the page from these; call them directly to reuse a measurement without writing a page.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import pareto
from .config import MAX_STRENGTH, METHODS, DecodeConfig, weight_grid
from .evaluation import REWARD_PREFIX, all_pairs_grid, hypervolumes, sweep
from .prompts import Prompt
from .stack import Stack

Prompts = list[str] | list[Prompt]  # tagged prompts (`Prompt`) add each kind's columns to every table
BETAS = (1.0, 2.0, 4.0)
TOP_KS = (5, 15)
SEARCH_GRID_POINTS = 5  # λ points of the search axis: (0, 1), (.25, .75), … on one pair
TREE_TOKENS = 48  # the value models' held-out trees: as long as value training grows them (values-fused card)
# MOD/RSoup/conditioned strengths α besides α = 0 (the base; Prompted for the conditioned policy) and the published
# methods (α = 1): 0.5 lies between, 1.5 beyond (past the policies, so the curves reach MAVIS's KL at a large β).
STRENGTHS = (0.5, 1.5)
STRENGTH_METHODS = ("mod", "rsoup", "conditioned")  # the methods with a strength α (Prompted has no such knob)
ZERO_STRENGTH = {"conditioned": "prompted"}  # a method's α = 0, where it is not the base: the prompt without adapter
BUDGET_BETAS = (1.0, 2.0, 4.0)  # MAVIS's β at which section 2 compares the fronts at matched KL: several budgets


@dataclass(frozen=True)
class ResultsConfig:
    """What `run_results` measures, sized for the default stack (SmolLM2-135M) on 2 CPU cores (docs/results.md
    names the command it was made with and its cost); pass more prompts and seeds on a GPU."""

    prompts: int = 12  # 0: every held-out prompt
    seeds: int = 2
    max_new_tokens: int = 24
    beta: float | None = None  # None: the stack's (`Stack.default_beta`), what the app starts with
    top_k: int = DecodeConfig.default("top_k")
    search_prompts: int = 4
    search_seeds: int = 1
    search_pair: tuple[str, str] | None = None  # default: the stack's first and last objectives
    num_candidates: int = 4
    num_beams: int = 4
    betas: tuple[float, ...] = BETAS
    top_ks: tuple[int, ...] = TOP_KS
    strengths: tuple[float, ...] = STRENGTHS
    budget_betas: tuple[float, ...] = BUDGET_BETAS
    tree_tokens: int = TREE_TOKENS
    next_iteration: str | None = None  # a value model folder: iteration k + 1 of the stack's, compared at matched KL
    images: bool = field(default=True, metadata={"option": "--no-images"})

    def __post_init__(self) -> None:
        if min(self.seeds, self.search_prompts, self.search_seeds, self.max_new_tokens, self.tree_tokens) < 1 \
                or self.prompts < 0:
            raise ValueError("--seeds, --search-prompts, --search-seeds, --max-new-tokens and --tree-tokens must be "
                             f">= 1, --prompts >= 0; got {self}")
        if not all(0 <= a <= MAX_STRENGTH for a in self.strengths) or not all(0 <= b for b in self.budget_betas):
            raise ValueError(f"--strengths must lie in [0, {MAX_STRENGTH:g}] and --budget-betas be >= 0, got "
                             f"{self.strengths} and {self.budget_betas}")

    def for_stack(self, stack: Stack) -> ResultsConfig:
        """These settings with β filled in from the stack where it was left to it."""
        return dataclasses.replace(self, beta=stack.beta_or_default(self.beta))

    def decode(self, stack: Stack, **changes) -> DecodeConfig:
        cfg = DecodeConfig(weights=dict.fromkeys(stack.objectives, 1.0), beta=stack.beta_or_default(self.beta),
                           top_k=self.top_k, max_new_tokens=self.max_new_tokens, num_candidates=self.num_candidates,
                           num_beams=self.num_beams)
        return dataclasses.replace(cfg, **changes)


def page_methods(stack: Stack) -> list[str]:
    """The methods the page sweeps on ``stack``: its own, and Prompted, which every stack can decode (MORLHF only
    at its references, section 8)."""
    return [m for m in METHODS if m != "morlhf" and (m in stack.methods or m == "prompted")]


def strength_methods(stack: Stack) -> list[str]:
    """The stack's methods with a strength α (`STRENGTH_METHODS`): their curves are read at MAVIS's KL."""
    return [m for m in STRENGTH_METHODS if m in stack.methods]


# ---- comparisons computed from the tables ----------------------------------------------------------------


def dominated_share(winner: pd.DataFrame, loser: pd.DataFrame, objectives: list[str]) -> float:
    """Share of ``loser``'s front points that some point of ``winner`` dominates (>= on all, > on one)."""
    cols = [f"{REWARD_PREFIX}{o}" for o in objectives]
    return pareto.dominated_share(winner[cols].to_numpy(dtype=float), loser[cols].to_numpy(dtype=float))


def on_pair(df: pd.DataFrame, objectives: list[str], x: str, y: str) -> pd.DataFrame:
    """The rows of a ``--pair all`` sweep that belong to the pair (x, y): every other objective at weight 0, and
    the base's row (it ignores λ)."""
    others = [f"w_{o}" for o in objectives if o not in (x, y)]
    if not others:
        return df
    return df[np.isclose(df[others].to_numpy(float), 0).all(axis=1) | (df.method == "base").to_numpy()]


def reward_at_kl(curve: pd.DataFrame, kl: float, objective: str) -> float:
    """The curve's reward linearly interpolated at ``kl`` (NaN outside the KL range the curve covers)."""
    c = curve.sort_values("kl")
    if not len(c) or kl < c.kl.min() or kl > c.kl.max():
        return float("nan")
    return float(np.interp(kl, c.kl.to_numpy(float), c[f"{REWARD_PREFIX}{objective}"].to_numpy(float)))


def at_lambda(df: pd.DataFrame, lam: dict[str, float]) -> np.ndarray:
    """(rows,) whether each row of a sweep table was decoded at the (normalised) weights ``lam``."""
    at = np.ones(len(df), dtype=bool)
    for o, w in lam.items():
        at &= np.isclose(df[f"w_{o}"].to_numpy(float), w)
    return at


def mavis_at_kl(df: pd.DataFrame, lam: dict[str, float], kl: float, objectives: list[str]) -> dict[str, float] | None:
    """MAVIS's mean rewards at ``kl``, read off its curve over β at one λ (the base is its β = 0 point: β = 0
    samples the base's top-k), linear in KL; None outside the KL range the curve covers: MAVIS is not read nearer
    the base than the base, nor beyond its largest β."""
    own = df[(df.method == "mavis") & (df.strength == 1.0) & at_lambda(df, lam)]
    curve = pd.concat([df[df.method == "base"].iloc[:1].assign(beta=0.0), own]).drop_duplicates("beta")
    rewards = {o: reward_at_kl(curve, kl, o) for o in objectives}
    return None if len(curve) < 2 or any(np.isnan(v) for v in rewards.values()) else rewards


def baseline_at_kl(df: pd.DataFrame, method: str, lam: dict[str, float], kl: float,
                   objectives: list[str]) -> dict[str, float] | None:
    """``method``'s mean rewards at ``kl``, read off its curve over the strength α at one λ (α = 0 is the base's
    own row, or `ZERO_STRENGTH`'s method's at that λ: Prompted's for the conditioned policy; α = 1 the published
    method), by linear interpolation in KL.

    Below the α = 0 row's KL its rewards are returned: no strength gets closer to it than itself, and it already
    spends more KL than asked, so the reading can only favour the baseline. Above the curve's largest KL there is
    no reading (None): the baseline cannot spend that much.
    """
    at = at_lambda(df, lam)
    zero = df[(df.method == ZERO_STRENGTH[method]) & at] if method in ZERO_STRENGTH else df[df.method == "base"]
    curve = pd.concat([zero.iloc[:1].assign(strength=0.0), df[(df.method == method) & at]])
    curve = curve.sort_values(["strength"]).drop_duplicates("strength")
    if len(curve) < 2:
        return None
    base = curve[curve.strength == 0.0]
    if len(base) and kl < float(base.kl.iloc[0]):
        return {o: float(base[f"{REWARD_PREFIX}{o}"].iloc[0]) for o in objectives}
    rewards = {o: reward_at_kl(curve, kl, o) for o in objectives}
    return None if any(np.isnan(v) for v in rewards.values()) else rewards


def matched_table(df: pd.DataFrame, objectives: list[str], baselines: list[str],
                  volumes: pd.DataFrame, beta: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per pair and method: hypervolume at matched KL and as published; and every baseline reading.

    ``df`` holds MAVIS's rows, the baselines' rows at every strength and the base's row; ``volumes`` section 1's
    hypervolumes (their reference points are reused). ``beta``: compare MAVIS's rows at that β (its KL is the
    budget the baselines are read at); None: every MAVIS row. A λ point enters a pair's matched fronts only when
    every baseline has a reading there, so all methods of a pair are compared on the same λ points.
    """
    rows, points = [], []
    own = (df.method == "mavis") & (df.strength == 1.0)
    if beta is not None:
        own &= np.isclose(df.beta.to_numpy(float), beta)
    for x, y in itertools.combinations(objectives, 2):
        mavis = on_pair(df[own], objectives, x, y)
        ref = volumes.query("x == @x and y == @y").iloc[0]
        fronts: dict[str, list[tuple[float, float]]] = {m: [] for m in ["mavis", *baselines]}
        for _, p in mavis.iterrows():
            lam = {o: float(p[f"w_{o}"]) for o in objectives}
            readings = {m: baseline_at_kl(df, m, lam, float(p.kl), objectives) for m in baselines}
            for m, r in readings.items():
                points.append({"x": x, "y": y, "method": m, **{f"w_{o}": w for o, w in lam.items()},
                               "kl": float(p.kl), **({f"{REWARD_PREFIX}{o}": v for o, v in r.items()} if r else {})})
            if all(r is not None for r in readings.values()):
                fronts["mavis"].append((float(p[f"{REWARD_PREFIX}{x}"]), float(p[f"{REWARD_PREFIX}{y}"])))
                for m, r in readings.items():
                    fronts[m].append((r[x], r[y]))
        for method, pts in fronts.items():
            at = own if method == "mavis" else (df.method == method) & (df.strength == 1.0)  # MAVIS at its β only
            published = on_pair(df[at], objectives, x, y)
            rows.append({"objective x": x, "objective y": y, "method": method,
                         "matched points": len(pts), "of": len(mavis),
                         "hypervolume at matched KL": pareto.hypervolume(pts, (ref.ref_x, ref.ref_y)),
                         "hypervolume unmatched": pareto.hypervolume(
                             published[[f"{REWARD_PREFIX}{x}", f"{REWARD_PREFIX}{y}"]].to_numpy(float),
                             (ref.ref_x, ref.ref_y))})
    return pd.DataFrame(rows), pd.DataFrame(points)


def _pair_volume(rows: pd.DataFrame | list[tuple[float, float]], x: str, y: str, ref: pd.Series) -> float:
    """The hypervolume of a table's rows (or of (x, y) reward points) on the pair, above ``ref``'s point."""
    if isinstance(rows, pd.DataFrame):
        rows = rows[[f"{REWARD_PREFIX}{x}", f"{REWARD_PREFIX}{y}"]].to_numpy(float)
    return pareto.hypervolume(rows, (ref.ref_x, ref.ref_y))


def own_kl_table(df: pd.DataFrame, objectives: list[str], volumes: pd.DataFrame, beta: float,
                 method: str = "prompted") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per pair: ``method``, which has no strength to spend more or less KL with (Prompted), at its own KL
    against MAVIS read off its β curve at that KL (`mavis_at_kl`); the same columns as `matched_table`'s, and
    every MAVIS reading. A λ point enters both matched fronts only where MAVIS has a reading; *as published*
    is MAVIS at ``beta``."""
    rows, points = [], []
    mavis = df[(df.method == "mavis") & (df.strength == 1.0) & np.isclose(df.beta.to_numpy(float), beta)]
    for x, y in itertools.combinations(objectives, 2):
        own, ref = on_pair(df[df.method == method], objectives, x, y), volumes.query("x == @x and y == @y").iloc[0]
        fronts: dict[str, list[tuple[float, float]]] = {"mavis": [], method: []}
        for _, p in own.iterrows():
            lam = {o: float(p[f"w_{o}"]) for o in objectives}
            r = mavis_at_kl(df, lam, float(p.kl), objectives)
            points.append({"x": x, "y": y, "method": "mavis", **{f"w_{o}": w for o, w in lam.items()},
                           "kl": float(p.kl), **({f"{REWARD_PREFIX}{o}": v for o, v in r.items()} if r else {})})
            if r is not None:
                fronts["mavis"].append((r[x], r[y]))
                fronts[method].append((float(p[f"{REWARD_PREFIX}{x}"]), float(p[f"{REWARD_PREFIX}{y}"])))
        published = {"mavis": on_pair(mavis, objectives, x, y), method: own}
        rows += [{"objective x": x, "objective y": y, "method": m, "matched points": len(pts), "of": len(own),
                  "hypervolume at matched KL": _pair_volume(pts, x, y, ref),
                  "hypervolume unmatched": _pair_volume(published[m], x, y, ref)} for m, pts in fronts.items()]
    return pd.DataFrame(rows), pd.DataFrame(points)


# ---- the experiments -------------------------------------------------------------------------------------


def run_pairs(stack: Stack, prompts: Prompts, rc: ResultsConfig) -> pd.DataFrame:
    """Every method at every λ point of every pair (`all_pairs_grid`); the base once."""
    return sweep(stack, prompts, list(range(rc.seeds)), page_methods(stack), all_pairs_grid(len(stack.objectives)),
                 rc.decode(stack))


def pair_volumes(df: pd.DataFrame, objectives: list[str]) -> pd.DataFrame:
    """Each pair's hypervolumes from its own λ points (`on_pair`), one reference point per pair."""
    return pd.concat([hypervolumes(on_pair(df, objectives, x, y), [x, y])
                      for x, y in itertools.combinations(objectives, 2)], ignore_index=True)


def run_strengths(stack: Stack, prompts: Prompts, rc: ResultsConfig, pairs: pd.DataFrame) -> pd.DataFrame:
    """MOD, RSoup and the conditioned policy (`strength_methods`) at every strength α of ``rc.strengths``, and
    MAVIS at every β of ``rc.budget_betas`` besides the page's, over the pairs' λ points, with ``pairs`` (α = 1,
    the page's β, Prompted and the base, α = 0): the baselines' curves `matched_table` reads at MAVIS's KL at each
    β, and MAVIS's β curves `own_kl_table` reads at Prompted's KL."""
    baselines = strength_methods(stack)
    seeds, grid = list(range(rc.seeds)), all_pairs_grid(len(stack.objectives))
    beta = stack.beta_or_default(rc.beta)
    runs = [sweep(stack, prompts, seeds, baselines, grid, rc.decode(stack, strength=a)) for a in rc.strengths]
    runs += [sweep(stack, prompts, seeds, ["mavis"], grid, rc.decode(stack, beta=b))
             for b in rc.budget_betas if not np.isclose(b, beta)]
    return pd.concat([pairs, *runs], ignore_index=True)


def reference_pair(stack: Stack) -> tuple[str, str] | None:
    """The pair of objectives most of the stack's exact-preference references lie on (None without any)."""
    counts: dict[tuple[str, str], int] = {}
    for ref in stack.spec.references:
        on = tuple(o for o, w in zip(stack.objectives, ref.lam, strict=True) if w > 0)
        if len(on) == 2:
            counts[on] = counts.get(on, 0) + 1
    return max(counts, key=counts.get) if counts else None


def reference_points(stack: Stack, x: str, y: str) -> list[list[float]]:
    """MORLHF's λ points on the pair (x, y): both ends (each objective's own policy) and the references there,
    ordered by x's weight."""
    others = [i for i, o in enumerate(stack.objectives) if o not in (x, y)]
    points = [list(p) for p in stack.morlhf_points if all(p[i] == 0 for i in others) and sum(p) > 0]
    return sorted(points, key=lambda p: p[stack.objectives.index(x)])


def run_references(stack: Stack, prompts: Prompts, rc: ResultsConfig, pairs: pd.DataFrame) -> pd.DataFrame:
    """MORLHF at its λ points on `reference_pair`, and every other method at the same λ: ``pairs``' rows where
    the pair grid has them (references on tenths), a sweep of its own where not; empty without references."""
    pair = reference_pair(stack)
    if pair is None:
        return pd.DataFrame()
    points = reference_points(stack, *pair)
    seeds, methods = list(range(rc.seeds)), [m for m in page_methods(stack) if m != "base"]
    w = pairs[[f"w_{o}" for o in stack.objectives]].to_numpy(float)
    found = [np.isclose(w, p, atol=1e-6).all(axis=1) & (pairs.method != "base").to_numpy() for p in points]
    missing = [p for p, at in zip(points, found, strict=True) if not at.any()]
    parts = [pairs[np.logical_or.reduce(found)], sweep(stack, prompts, seeds, ["morlhf"], points, rc.decode(stack))]
    if missing:
        parts.append(sweep(stack, prompts, seeds, methods, missing, rc.decode(stack)))
    return pd.concat(parts, ignore_index=True)


def run_simplex(stack: Stack, prompts: Prompts, rc: ResultsConfig) -> pd.DataFrame:
    """Every method over the 1/4 grid of the whole simplex."""
    return sweep(stack, prompts, list(range(rc.seeds)), page_methods(stack), weight_grid(len(stack.objectives)),
                 rc.decode(stack))


def run_betas(stack: Stack, prompts: Prompts, rc: ResultsConfig) -> pd.DataFrame:
    """Single-objective MAVIS at every β of ``rc.betas`` (column objective), the objective's fine-tuned policy
    (MOD with λ one-hot decodes it alone; method "policy") and the base (objective "all")."""
    seeds, rows = list(range(rc.seeds)), []
    steps = [(o, "mavis", b) for o in stack.objectives for b in rc.betas] + [(None, "base", 0.0)]
    steps += [(o, "mod", 0.0) for o in stack.objectives if "mod" in stack.methods]
    for objective, method, beta in tqdm(steps, desc="β curves", unit="point"):
        grid = [[1.0 if o == objective else 0.0 for o in stack.objectives]] if objective else \
            [[1.0] * len(stack.objectives)]
        part = sweep(stack, prompts, seeds, [method], grid, rc.decode(stack, beta=beta))
        rows.append(part.assign(objective=objective or "all", method="policy" if method == "mod" else method))
    return pd.concat(rows, ignore_index=True)


def run_next_iteration(stack: Stack, prompts: Prompts, rc: ResultsConfig) -> pd.DataFrame:
    """Single-objective MAVIS at every β of ``rc.betas`` guided by ``rc.next_iteration`` (the value model of the
    next iteration) instead of the stack's own: `run_betas`' MAVIS rows for that model. Empty without one."""
    from pathlib import Path

    from .training.value_training import guided_by, load_value_model

    if rc.next_iteration is None:
        return pd.DataFrame()
    seeds, rows = list(range(rc.seeds)), []
    with guided_by(stack, load_value_model(stack, Path(rc.next_iteration))):
        for objective, beta in tqdm([(o, b) for o in stack.objectives for b in rc.betas], desc="next iteration",
                                    unit="point"):
            grid = [[1.0 if o == objective else 0.0 for o in stack.objectives]]
            part = sweep(stack, prompts, seeds, ["mavis"], grid, rc.decode(stack, beta=beta))
            rows.append(part.assign(objective=objective))
    return pd.concat(rows, ignore_index=True)


def iteration_gains(current: pd.DataFrame, following: pd.DataFrame, objectives: list[str]) -> pd.DataFrame:
    """Per objective and β of ``current``: the next iteration's reward at the current one's KL, read off its β curve
    (linear in KL, the base as both curves' β = 0 point), minus the current one's, with a standard error.

    Args:
        current: `run_betas`' table (the stack's value model; its base row is the curves' common start).
        following: `run_next_iteration`'s table.
    Returns:
        columns objective, beta, kl, reward, next_reward (NaN where the next curve does not reach that KL), gain,
        gain_se.
    """
    base = current[current.method == "base"]
    rows = []
    for o in objectives:
        now = current[(current.method == "mavis") & (current.objective == o)]
        nxt = pd.concat([base, following[following.objective == o]]).sort_values("kl")
        for _, r in now.sort_values("beta").iterrows():
            reading = reward_at_kl(nxt, float(r.kl), o)
            se_next = float(np.interp(r.kl, nxt.kl.to_numpy(float), nxt[f"se_{o}"].to_numpy(float)))
            rows.append({"objective": o, "beta": float(r.beta), "kl": float(r.kl),
                         "reward": float(r[f"{REWARD_PREFIX}{o}"]), "next_reward": reading,
                         "gain": reading - float(r[f"{REWARD_PREFIX}{o}"]),
                         "gain_se": float(np.hypot(r[f"se_{o}"], se_next))})
    return pd.DataFrame(rows)


def run_top_ks(stack: Stack, prompts: Prompts, rc: ResultsConfig) -> pd.DataFrame:
    """The base and equal-weight MAVIS at every k of ``rc.top_ks``, with milliseconds per token."""
    seeds, parts = list(range(rc.seeds)), []
    equal = [[1.0] * len(stack.objectives)]
    for k in tqdm(rc.top_ks, desc="top-k", unit="k"):
        parts.append(sweep(stack, prompts, seeds, ["base", "mavis"], equal, rc.decode(stack, top_k=k)))
    df = pd.concat(parts, ignore_index=True)
    df["ms_per_token"] = 1000 / df.tokens_per_s
    return df


def search_pair(stack: Stack, rc: ResultsConfig) -> tuple[str, str]:
    """The pair the search axis runs on: ``rc.search_pair``, or the stack's first and last objectives."""
    return rc.search_pair or (stack.objectives[0], stack.objectives[-1])


def search_grid(stack: Stack, rc: ResultsConfig) -> list[list[float]]:
    """`SEARCH_GRID_POINTS` λ points evenly spread over the search pair's grid."""
    x, y = search_pair(stack, rc)
    full = weight_grid(len(stack.objectives), axes=(stack.objectives.index(x), stack.objectives.index(y)))
    return [full[i] for i in np.linspace(0, len(full) - 1, SEARCH_GRID_POINTS).round().astype(int)]


def run_searches(stack: Stack, prompts: Prompts, rc: ResultsConfig) -> pd.DataFrame:
    """Every method sampled, by best-of-N and by beam search, over `search_grid`. Sampling runs one λ point a
    batch, as each search does, so the section's time ratios compare like with like."""
    seeds = list(range(rc.search_seeds))
    return pd.concat([sweep(stack, prompts, seeds, page_methods(stack), search_grid(stack, rc),
                            rc.decode(stack, search=search), lanes_per_batch=1)
                      for search in ("sample", "best_of_n", "beam")], ignore_index=True)


def run_agreement(stack: Stack, prompts: Prompts, rc: ResultsConfig) -> pd.DataFrame:
    """The value models against the Monte-Carlo targets of held-out trees rolled out from the base, per
    objective (`training.value_agreement`); empty for a stack without value models."""
    from .training.value_agreement import TREE, agreement_table, held_out_trees

    if not stack.value_models:
        return pd.DataFrame()
    tree = dataclasses.replace(TREE, max_new_tokens=max(rc.tree_tokens, TREE.levels))
    texts = [p.text if isinstance(p, Prompt) else p for p in prompts]  # trees are grown per prompt text
    return agreement_table(stack, held_out_trees(stack, texts, tree))
