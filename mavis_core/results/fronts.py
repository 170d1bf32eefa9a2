"""Sections 1-3 of the results page: the Pareto fronts on every pair, the fronts at matched KL, the simplex."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from ..config import METHOD_NAMES, METHODS, weight_grid
from ..evaluation import (
    LANES_PER_BATCH,
    REWARD_PREFIX,
    WEIGHT_PREFIX,
    front_figure,
    pareto_front,
    series_of,
    weight_spearman,
)
from ..experiments import (
    ResultsConfig,
    dominated_share,
    matched_table,
    on_pair,
    pair_volumes,
)
from ..stack import Stack
from .kinds import kind_table
from .report import Report, rho_text, share


def pairs_section(report: Report, df: pd.DataFrame, stack: Stack, prompts: list[str], rc: ResultsConfig) -> None:
    """Section 1 from `run_pairs`' table."""
    df.to_csv(report.data / "pairs.csv", index=False)
    objectives = list(stack.objectives)
    volumes = pair_volumes(df, objectives)
    spearman = weight_spearman(df)
    volumes.to_csv(report.data / "pairs_hypervolume.csv", index=False)
    spearman.to_csv(report.data / "pairs_spearman.csv", index=False)
    methods = [m for m in METHODS if m in set(volumes.method)]  # the stack's, Prompted, as the run measured them

    report.add("## 1. Pareto fronts for every pair of objectives", "",
               f"Every method at 11 λ points per pair (`--pair all`, {len(df) - 1} rows besides the base, which "
               f"ignores λ and runs once); each point is the mean over {len(prompts)} prompts × {rc.seeds} seeds. "
               "Hypervolume: the area a method's points on the pair (its 11 λ points there, the third objective at "
               "weight 0) dominate above a reference point shared by the methods of a pair (each objective's "
               "minimum over those points minus 10 % of its range), so compare within a row only."
               + (" *Prompted* is the base with the weights in its system prompt; *Conditioned* one LoRA policy "
                  "that reads them there." if {"prompted", "conditioned"} & set(methods) else ""), "")
    hv = volumes.pivot_table(index=["x", "y"], columns="method", values="hypervolume", sort=False)
    hv = hv.reindex(columns=methods).reset_index().rename(columns={"x": "objective x", "y": "objective y"})
    report.table(hv, ".2f")

    kl = _kl_table(report, df, len(prompts) * rc.seeds)
    within = _spearman_tables(report, df, spearman, objectives)

    for x, y in itertools.combinations(stack.objectives, 2):
        row = volumes[(volumes.x == x) & (volumes.y == y)].iloc[0]
        fig = front_figure(on_pair(df, objectives, x, y), x, y, [row.ref_x, row.ref_y],
                           title=f"{x} vs {y}: λ points and Pareto fronts")
        report.figure(fig, f"front_{x}_{y}", f"Pareto fronts, {x} vs {y}")
    report.add(*reading_pairs(df, volumes, kl, stack.objectives), "")
    report.facts.update(pairs=df, pairs_volumes=volumes, pairs_kl=kl, pairs_spearman=spearman, pairs_within=within)


def _kl_table(report: Report, df: pd.DataFrame, replies: int) -> pd.DataFrame:
    """Section 1's KL, length and throughput table (``replies`` per λ point); returns it."""
    kl = df.groupby("method", sort=False).agg(mean_kl=("kl", "mean"), min_kl=("kl", "min"), max_kl=("kl", "max"),
                                              tokens=("tokens", "mean"), tokens_per_s=("tokens_per_s", "mean"))
    together = max(1, LANES_PER_BATCH // replies)
    report.add("Mean KL to the base over each method's λ points (Σ log π/π_ref per reply; the base's own value is "
               "the cost of sampling from its top-k), reply length and throughput (tokens/s of the batches the "
               f"method decoded in: the base's {replies} replies, every other method's λ points {together} at a "
               f"time, {together * replies} replies a batch, so compare the steered methods with each other):", "")
    report.table(kl.reset_index(), ".2f")
    return kl


def _spearman_tables(report: Report, df: pd.DataFrame, spearman: pd.DataFrame, objectives: list[str]) -> pd.DataFrame:
    """Section 1's weight-reward Spearman tables, pooled and within each pair; returns the within-pair one."""
    report.add("Does the weight do what it says? Spearman's ρ between an objective's weight and its mean reward "
               "over the λ points (–: the reward did not move with the weight at all):", "")
    rho = spearman.pivot_table(index="method", columns="objective", values="spearman", sort=False)
    report.table(rho.reindex(columns=objectives).reset_index(), ".2f")
    within = within_pair_spearman(df, objectives)
    report.add("The same within each pair (its 11 λ points, the third objective at weight 0), ρ of the pair's first "
               "objective / its second. The table above pools an objective's two pairs and also counts, at weight 0, "
               "the pair it is not in, where its reward moves with which other objective is steered.", "")
    report.table(_within_table(within), ".2f")
    kind_table(report, df, lambda view, _: _within_table(within_pair_spearman(view, objectives)), "Within each pair")
    return within


def _within_table(within: pd.DataFrame) -> pd.DataFrame:
    """`within_pair_spearman`'s table as the page shows it: a row per method, "ρ_x / ρ_y" per pair."""
    both = [f"{rho_text(a)} / {rho_text(b)}" for a, b in zip(within.rho_x, within.rho_y, strict=True)]
    return within.assign(rho=both).assign(pair=within.x + "–" + within.y) \
        .pivot_table(index="method", columns="pair", values="rho", aggfunc="first", sort=False).reset_index()


def within_pair_spearman(df: pd.DataFrame, objectives: list[str]) -> pd.DataFrame:
    """Per method and pair (x, y): Spearman's ρ of x's weight and reward and of y's over the pair's own λ points
    (`on_pair`), columns method, x, y, rho_x, rho_y."""
    rows = []
    for x, y in itertools.combinations(objectives, 2):
        rho = weight_spearman(on_pair(df, objectives, x, y)).set_index(["method", "objective"]).spearman
        for method in dict.fromkeys(m for m, _ in rho.index):
            rows.append({"method": method, "x": x, "y": y, "rho_x": rho.get((method, x), np.nan),
                         "rho_y": rho.get((method, y), np.nan)})
    return pd.DataFrame(rows, columns=["method", "x", "y", "rho_x", "rho_y"])


def steering_diagnosis(df: pd.DataFrame, within: pd.DataFrame, method: str, objective: str) -> str:
    """Why a pooled ρ is low: the objective's ρ within each pair it is in (``within``: `within_pair_spearman`),
    and the range of its reward over the points where its weight is 0 (the pair it is not in, and the far ends
    of its own pairs)."""
    parts = []
    for r in within[within.method == method].itertuples():
        if objective in (r.x, r.y):
            rho, other = (r.rho_x, r.y) if objective == r.x else (r.rho_y, r.x)
            parts.append(f"{rho_text(rho)} with {other}")
    rows = df[(series_of(df) == method).to_numpy()]
    zero = rows.loc[np.isclose(rows[f"{WEIGHT_PREFIX}{objective}"].astype(float), 0), f"{REWARD_PREFIX}{objective}"]
    span = f", its reward at weight 0 {zero.min():.2f} to {zero.max():.2f}" if len(zero) else ""
    return f"{METHOD_NAMES.get(method, method)}'s {objective}: within its pairs {', '.join(parts)}{span}"


def reading_pairs(df: pd.DataFrame, volumes: pd.DataFrame, kl: pd.DataFrame, objectives: list[str]) -> list[str]:
    """Sentences that compare the fronts, computed from the sweep: one bullet per pair, then noise and KL."""
    out = ["**Reading.**", ""]
    for x, y in itertools.combinations(objectives, 2):
        v = volumes[(volumes.x == x) & (volumes.y == y)].set_index("method").hypervolume
        best = v.idxmax()
        pair = on_pair(df, objectives, x, y)
        parts = [f"the largest hypervolume is {best}'s ({v[best]:.2f})"]
        if "mavis" in v and best != "mavis":
            parts.append(f"MAVIS has {v['mavis'] / v[best]:.0%} of it")
        for other in ("mod", "rsoup"):
            if "mavis" in v and other in v:
                a = dominated_share(pair[pair.method == "mavis"], pair[pair.method == other], [x, y])
                b = dominated_share(pair[pair.method == other], pair[pair.method == "mavis"], [x, y])
                name = METHOD_NAMES[other]
                parts.append(f"MAVIS's points dominate {a:.0%} of {name}'s front points, {name}'s dominate {b:.0%} "
                             "of MAVIS's")
        out.append(f"- *{x}–{y}*: " + "; ".join(parts) + ".")
    noise = ", ".join(f"{o} {df[f'se_{o}'].median():.2f}" for o in objectives if f"se_{o}" in df.columns)
    out += ["", f"Typical standard error of one point's mean reward (median over the rows): {noise}; gaps between "
            "methods smaller than about twice that are within seed noise."]
    if {"base", "mavis"} <= set(kl.index):
        others = [m for m in ("mod", "rsoup", "prompted", "conditioned") if m in kl.index]
        listed = ", ".join(f"{METHOD_NAMES[m]} {kl.loc[m, 'mean_kl']:.1f} over {kl.loc[m, 'tokens']:.0f} tokens "
                           f"({kl.loc[m, 'mean_kl'] / kl.loc[m, 'tokens']:.2f} per token)"
                           for m in ["base", "mavis", *others])
        out.append(f"Mean KL to the base per reply: {listed}. KL is summed over a reply, so shorter replies have "
                   "less of it. A front bought with a larger KL is made of replies the base would rarely write; "
                   "the paper compares methods at similar KL, which section 2 does per pair and section 4 per "
                   "objective.")
    return out


def matched_section(report: Report, df: pd.DataFrame, stack: Stack, rc: ResultsConfig) -> None:
    """Section 2 from `run_strengths`' table: every pair's fronts at matched KL, at the page's β and at every KL
    budget MAVIS's β of ``rc.budget_betas`` buys."""
    baselines = [m for m in ("mod", "rsoup") if m in set(df.method)]  # verdict 1's; Prompted's, conditioned's below
    objectives, volumes = list(stack.objectives), report.facts["pairs_volumes"]
    df.to_csv(report.data / "matched.csv", index=False)
    table, points = matched_table(df, objectives, baselines, volumes, beta=rc.beta)
    table.to_csv(report.data / "matched_hypervolume.csv", index=False)
    points.to_csv(report.data / "matched_points.csv", index=False)
    budgets = budget_table(df, objectives, baselines, volumes, sorted({*rc.budget_betas, rc.beta}))
    budgets.to_csv(report.data / "matched_budgets.csv", index=False)
    curves = df[df.method.isin([*baselines, "conditioned"])].groupby(["method", "strength"]).kl.mean() \
        .unstack("strength")
    report.add("## 2. The fronts at matched KL", "",
               "Section 1 compares each method as published, at whatever KL it lands. Here MOD and RSoup get a "
               f"strength α (MOD: (1 − α)·log π_ref + α·Σ λ_m log π_m; RSoup: θ_0 + α·Σ λ_m ΔW_m), run at α ∈ "
               f"{{{', '.join(f'{a:g}' for a in rc.strengths)}}} besides section 1's α = 1 and the base (α = 0); "
               "α above 1 extrapolates past the policies, so the baselines can spend more KL than as published. At "
               "every λ point of a pair each baseline's rewards are read off its α curve at MAVIS's KL there "
               "(linear in KL; where MAVIS's KL is below the base's own, the baseline is read as the base, which "
               "favours the baseline; a λ point where some baseline cannot reach MAVIS's KL is left out for every "
               "method of the pair, and counted). Hypervolumes use section 1's reference points.", "",
               f"At the page's β = {rc.beta:g}:", "")
    report.table(table, ".2f")
    report.add("Mean KL of the baselines at each strength (over all λ points):", "")
    report.table(curves.reset_index(), ".2f")
    report.facts["matched"], report.facts["budgets"] = table, budgets
    report.add(*reading_matched(table), "")
    report.add("**At several KL budgets.** MAVIS at β ∈ {" + ", ".join(f"{b:g}" for b in budgets["β"].unique())
               + "} over the same λ points; each β's KL is the budget the baselines are read at. *MAVIS ÷ best*: "
               "MAVIS's hypervolume at matched KL over the best baseline's there.", "")
    report.table(budgets.assign(**{"β": budgets["β"].map("{:g}".format)}), ".2f")
    report.add(*reading_budgets(budgets), "")


def pair_shares(table: pd.DataFrame) -> list[dict]:
    """Per pair of `matched_table`'s ``table``: MAVIS's hypervolume at matched KL and as published, the best
    baseline at matched KL (its method and hypervolume), the best baseline's as published, and the λ points
    compared."""
    out = []
    for (x, y), t in table.groupby(["objective x", "objective y"], sort=False):
        v = t.set_index("method")
        others = v.drop(index="mavis")
        best = others["hypervolume at matched KL"].idxmax()
        out.append({"x": x, "y": y, "mavis": v.loc["mavis", "hypervolume at matched KL"], "best": best,
                    "best hv": v.loc[best, "hypervolume at matched KL"],
                    "mavis unmatched": v.loc["mavis", "hypervolume unmatched"],
                    "best unmatched": others["hypervolume unmatched"].max(),
                    "matched points": int(v.loc["mavis", "matched points"]), "of": int(v.loc["mavis", "of"])})
    return out


def budget_table(df: pd.DataFrame, objectives: list[str], baselines: list[str], volumes: pd.DataFrame,
                 betas: list[float]) -> pd.DataFrame:
    """Per MAVIS β and pair: MAVIS's mean KL there, the λ points compared, MAVIS's and the best baseline's
    hypervolume at matched KL, and their ratio."""
    rows = []
    for beta in betas:
        table, _ = matched_table(df, objectives, baselines, volumes, beta=beta)
        own = df[(df.method == "mavis") & np.isclose(df.beta.to_numpy(float), beta)]
        for p in pair_shares(table):
            rows.append({"β": beta, "objective x": p["x"], "objective y": p["y"],
                         "MAVIS mean KL": on_pair(own, objectives, p["x"], p["y"]).kl.mean(),
                         "matched points": p["matched points"], "of": p["of"], "MAVIS": p["mavis"],
                         "best baseline": METHOD_NAMES[p["best"]], "its hypervolume": p["best hv"],
                         "MAVIS ÷ best": share(p["mavis"], p["best hv"])})
    return pd.DataFrame(rows)


def level_pairs(budgets: pd.DataFrame) -> int:
    """Rows of `budget_table` where MAVIS is at least level with the best baseline at matched KL; a pair with no λ
    point compared (both hypervolumes 0) is not."""
    return int(((budgets["MAVIS"] >= budgets["its hypervolume"]) & (budgets["matched points"] > 0)).sum())


def reading_budgets(budgets: pd.DataFrame) -> list[str]:
    """Per β: MAVIS's KL, its share of the best baseline on every pair, and the pairs where it is at least level."""
    out = ["**Reading.**", ""]
    for beta, t in budgets.groupby("β", sort=True):
        level = level_pairs(t)
        compared = f"{int(t['matched points'].sum())} of {int(t['of'].sum())} λ points compared"
        out.append(f"- β = {beta:g} (MAVIS's mean KL {t['MAVIS mean KL'].mean():.1f}): MAVIS ÷ best baseline "
                   + ", ".join(f"{r['MAVIS ÷ best']} ({r['objective x']}–{r['objective y']})" for _, r in t.iterrows())
                   + f"; at least level on {level} of {len(t)} pairs; {compared}.")
    return out


def reading_matched(table: pd.DataFrame) -> list[str]:
    """Per pair: who leads at matched KL, MAVIS's share of the best baseline, and the unmatched comparison."""
    out = ["**Reading.**", ""]
    for p in pair_shares(table):
        missing = (f"{p['matched points']} of {p['of']} λ points compared" if p["matched points"] < p["of"] else "")
        out.append(f"- *{p['x']}–{p['y']}*: at matched KL MAVIS {p['mavis']:.2f} against the best baseline's "
                   f"({METHOD_NAMES[p['best']]}) {p['best hv']:.2f} "
                   f"({share(p['mavis'], p['best hv'])}); unmatched {p['mavis unmatched']:.2f} against "
                   f"{p['best unmatched']:.2f}"
                   + (f"; {missing} (the others lie beyond a baseline's reach"
                      + (": no comparison, no win)" if not p["matched points"] else ")") if missing else "") + ".")
    return out


def _nearest_equal(df: pd.DataFrame, objectives: list[str]) -> pd.DataFrame:
    """Each method's rows at the simplex grid points nearest equal weights, and the base's: λ, rewards, KL, length."""
    w = [f"w_{o}" for o in objectives]
    distance = np.abs(df[w].to_numpy(float) - 1 / len(w)).sum(axis=1)  # NaN for the base, which has no λ
    nearest = df[np.isclose(distance, np.nanmin(distance)) | df.method.eq("base")].copy()
    lam = nearest[w].to_numpy(float)
    nearest.insert(1, "λ", ["–" if np.isnan(row).all() else " / ".join(f"{v:.2f}" for v in row) for row in lam])
    cols = ["method", "λ", *(f"{REWARD_PREFIX}{o}" for o in objectives), "kl", "tokens"]
    return nearest[cols].rename(columns=lambda c: c.removeprefix(REWARD_PREFIX))


def simplex_section(report: Report, df: pd.DataFrame, stack: Stack) -> None:
    """Section 3 from `run_simplex`' table."""
    df.to_csv(report.data / "simplex.csv", index=False)
    spearman = weight_spearman(df)
    spearman.to_csv(report.data / "simplex_spearman.csv", index=False)
    report.add(f"## 3. The simplex of all {len(stack.objectives)} objectives", "",
               f"The 1/4 grid over the simplex ({len(weight_grid(len(stack.objectives)))} λ points), same prompts "
               "and seeds. Spearman's ρ between each objective's weight and its mean reward:", "")
    rho = spearman.pivot_table(index="method", columns="objective", values="spearman", sort=False)
    report.table(rho.reindex(columns=stack.objectives).reset_index(), ".2f")
    kind_table(report, df, lambda view, _: weight_spearman(view).pivot_table(
        index="method", columns="objective", values="spearman", sort=False).reindex(columns=stack.objectives)
        .reset_index(), "Spearman's ρ")
    report.add(f"Mean rewards at the grid points nearest equal weights (λ as {' / '.join(stack.objectives)}) "
               "and the base:", "")
    report.table(_nearest_equal(df, stack.objectives), ".3f")
    kind_table(report, df, lambda view, _: _nearest_equal(view, stack.objectives), "The same", ".3f")
    counts = pareto_front(df[df.method != "base"], list(stack.objectives)).groupby("method").size()
    report.add(f"Points on each method's own {len(stack.objectives)}-objective Pareto front (of "
               f"{len(weight_grid(len(stack.objectives)))}): "
               + ", ".join(f"{m} {counts.get(m, 0)}" for m in METHODS if m in set(df.method) and m != "base")
               + ".", "")
