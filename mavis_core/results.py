"""`python -m mavis_core results`: run every measurement docs/results.md reports, and write it.

One command regenerates the page from nothing: the λ sweeps over every pair and over the simplex, the β curves
(single-objective MAVIS against the objective's fine-tuned policy), the top-k ablation and the search axis (the
measurements are `experiments`' functions; this module writes their sections). Each
experiment's table goes to ``--data`` as CSV (with plotly HTML charts); static PNG images (plotly through
kaleido, which drives a local Chrome/Chromium) and the markdown go to ``--out``. Numbers and the sentences that
compare them are computed from the tables, so the reading cannot drift from the data; the paragraphs that
explain *why* name the measurements they rest on.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import pareto
from .config import METHOD_NAMES, weight_grid
from .evaluation import (
    LANES_PER_BATCH,
    REWARD_PREFIX,
    WEIGHT_PREFIX,
    front_figure,
    pareto_front,
    series_of,
    summarise,
    weight_spearman,
)
from .experiments import (
    ResultsConfig,
    dominated_share,
    iteration_gains,
    matched_table,
    on_pair,
    pair_volumes,
    reference_pair,
    reward_at_kl,
    run_agreement,
    run_betas,
    run_next_iteration,
    run_pairs,
    run_references,
    run_searches,
    run_simplex,
    run_strengths,
    run_top_ks,
    search_grid,
    search_pair,
)
from .stack import Stack

STEERS = 0.5  # a weight–reward Spearman ρ below this does not count as steering
STEERS_WELL = 0.9  # the ρ a method should reach on every objective (the verdict counts the cells that do)


@dataclass
class Report:
    """The markdown being written and the figures it shows (written as PNG in one kaleido session)."""

    out: Path
    data: Path
    lines: list[str] = field(default_factory=list)
    figures: list[tuple[object, Path]] = field(default_factory=list)
    facts: dict[str, object] = field(default_factory=dict)  # tables the closing summary reads

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def table(self, df: pd.DataFrame, floatfmt: str = ".3f") -> None:
        """A markdown table (hand-written: pandas' to_markdown needs the extra 'tabulate' package)."""
        def cell(v) -> str:
            if isinstance(v, float):
                return "–" if np.isnan(v) else format(v, floatfmt)
            return str(v)
        cols = [str(c) for c in df.columns]
        self.add("| " + " | ".join(cols) + " |", "|" + "---|" * len(cols),
                 *("| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)), "")

    def figure(self, fig, name: str, alt: str) -> None:
        """Save ``fig`` as ``data/name.html`` now and as ``out/results/name.png`` later; link the PNG."""
        fig.write_html(self.data / f"{name}.html", include_plotlyjs="cdn")
        self.figures.append((fig, self.out.parent / "results" / f"{name}.png"))
        self.add(f"![{alt}](results/{name}.png)", "")

    def write(self, images: bool) -> None:
        if images and self.figures:
            import plotly.io as pio

            paths = [p for _, p in self.figures]
            paths[0].parent.mkdir(parents=True, exist_ok=True)
            try:
                pio.write_images([f for f, _ in self.figures], paths, width=760, height=520, scale=1)
            except Exception as err:  # kaleido raises its own types when no browser can be started
                raise ValueError(f"static images need kaleido and a Chrome/Chromium (apt-get install chromium), "
                                 f"or pass --no-images: {err}") from err
        self.out.write_text("\n".join(self.lines).rstrip() + "\n", encoding="utf-8")


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ---- the page's sections: tables, figures and the sentences computed from them -------------------------


def pairs_section(report: Report, df: pd.DataFrame, stack: Stack, prompts: list[str], rc: ResultsConfig) -> None:
    """Section 1 from `run_pairs`' table."""
    df.to_csv(report.data / "pairs.csv", index=False)
    objectives = list(stack.objectives)
    volumes = pair_volumes(df, objectives)
    spearman = weight_spearman(df)
    volumes.to_csv(report.data / "pairs_hypervolume.csv", index=False)
    spearman.to_csv(report.data / "pairs_spearman.csv", index=False)
    methods = [m for m in stack.methods if m in set(volumes.method)]

    report.add("## 1. Pareto fronts for every pair of objectives", "",
               f"Every method at 11 λ points per pair (`--pair all`, {len(df) - 1} rows besides the base, which "
               f"ignores λ and runs once); each point is the mean over {len(prompts)} prompts × {rc.seeds} seeds. "
               "Hypervolume: the area a method's points on the pair (its 11 λ points there, the third objective at "
               "weight 0) dominate above a reference point shared by the methods of a pair (each objective's "
               "minimum over those points minus 10 % of its range), so compare within a row only.", "")
    hv = volumes.pivot_table(index=["x", "y"], columns="method", values="hypervolume", sort=False)
    hv = hv.reindex(columns=methods).reset_index().rename(columns={"x": "objective x", "y": "objective y"})
    report.table(hv, ".2f")

    kl = df.groupby("method", sort=False).agg(mean_kl=("kl", "mean"), min_kl=("kl", "min"), max_kl=("kl", "max"),
                                              tokens=("tokens", "mean"), tokens_per_s=("tokens_per_s", "mean"))
    replies = len(prompts) * rc.seeds
    together = max(1, LANES_PER_BATCH // replies)
    report.add("Mean KL to the base over each method's λ points (Σ log π/π_ref per reply; the base's own value is "
               "the cost of sampling from its top-k), reply length and throughput (tokens/s of the batches the "
               f"method decoded in: the base's {replies} replies, every other method's λ points {together} at a "
               f"time, {together * replies} replies a batch, so compare the steered methods with each other):", "")
    report.table(kl.reset_index(), ".2f")

    report.add("Does the weight do what it says? Spearman's ρ between an objective's weight and its mean reward "
               "over the λ points:", "")
    rho = spearman.pivot_table(index="method", columns="objective", values="spearman", sort=False)
    report.table(rho.reindex(columns=stack.objectives).reset_index(), ".2f")
    within = within_pair_spearman(df, objectives)
    report.add("The same within each pair (its 11 λ points, the third objective at weight 0), ρ of the pair's first "
               "objective / its second. The table above pools an objective's two pairs and also counts, at weight 0, "
               "the pair it is not in, where its reward moves with which other objective is steered.", "")
    table = within.assign(rho=[f"{a:.2f} / {b:.2f}" for a, b in zip(within.rho_x, within.rho_y, strict=True)]) \
        .assign(pair=within.x + "–" + within.y) \
        .pivot_table(index="method", columns="pair", values="rho", aggfunc="first", sort=False)
    report.table(table.reset_index(), ".2f")

    for x, y in itertools.combinations(stack.objectives, 2):
        row = volumes[(volumes.x == x) & (volumes.y == y)].iloc[0]
        fig = front_figure(on_pair(df, objectives, x, y), x, y, [row.ref_x, row.ref_y],
                           title=f"{x} vs {y}: λ points and Pareto fronts")
        report.figure(fig, f"front_{x}_{y}", f"Pareto fronts, {x} vs {y}")
    report.add(*reading_pairs(df, volumes, kl, stack.objectives), "")
    report.facts.update(pairs=df, pairs_volumes=volumes, pairs_kl=kl, pairs_spearman=spearman, pairs_within=within)


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


def _steering_diagnosis(df: pd.DataFrame, within: pd.DataFrame, method: str, objective: str) -> str:
    """Why a pooled ρ is low: the objective's ρ within each pair it is in (``within``: `within_pair_spearman`),
    and the range of its reward over the points where its weight is 0 (the pair it is not in, and the far ends
    of its own pairs)."""
    parts = []
    for r in within[within.method == method].itertuples():
        if objective in (r.x, r.y):
            parts.append(f"{r.rho_x if objective == r.x else r.rho_y:.2f} with {r.y if objective == r.x else r.x}")
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
        others = [m for m in ("mod", "rsoup") if m in kl.index]
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
    baselines = [m for m in ("mod", "rsoup") if m in stack.methods]
    objectives, volumes = list(stack.objectives), report.facts["pairs_volumes"]
    df.to_csv(report.data / "matched.csv", index=False)
    table, points = matched_table(df, objectives, baselines, volumes, beta=rc.beta)
    table.to_csv(report.data / "matched_hypervolume.csv", index=False)
    points.to_csv(report.data / "matched_points.csv", index=False)
    budgets = budget_table(df, objectives, baselines, volumes, sorted({*rc.budget_betas, rc.beta}))
    budgets.to_csv(report.data / "matched_budgets.csv", index=False)
    curves = df[df.method.isin(baselines)].groupby(["method", "strength"]).kl.mean().unstack("strength")
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
                         "MAVIS ÷ best": _share(p["mavis"], p["best hv"])})
    return pd.DataFrame(rows)


def reading_budgets(budgets: pd.DataFrame) -> list[str]:
    """Per β: MAVIS's KL, its share of the best baseline on every pair, and the pairs where it is at least level."""
    out = ["**Reading.**", ""]
    for beta, t in budgets.groupby("β", sort=True):
        level = int((t["MAVIS"] >= t["its hypervolume"]).sum())
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
                   f"({_share(p['mavis'], p['best hv'])}); unmatched {p['mavis unmatched']:.2f} against "
                   f"{p['best unmatched']:.2f}"
                   + (f"; {missing} (the others lie beyond a baseline's reach)" if missing else "") + ".")
    return out


def _share(a: float, b: float) -> str:
    """``a`` as a percentage of ``b`` ("–" when ``b`` is not positive: nothing to be a share of)."""
    return f"{a / b:.0%}" if b > 0 and np.isfinite(a) else "–"


def verdicts(facts: dict) -> list[str]:
    """The page's first lines: the issue's two verdicts, one line each with their numbers (does MAVIS's front lie
    beyond MOD's and RSoup's at matched KL; how close does it come to the exact-preference policies), then what
    they rest on (KL budgets, how well the weights steer, the value models' accuracy)."""
    t = facts.get("matched")
    if t is None:
        return []
    pairs = pair_shares(t)
    total, wins = len(pairs), sum(bool(p["mavis"] >= p["best hv"]) for p in pairs)
    shares = [_share(p["mavis"], p["best hv"]) for p in pairs]
    unmatched = [_share(p["mavis unmatched"], p["best unmatched"]) for p in pairs]
    head = [f"**Verdict 1: MAVIS against MOD and RSoup.** At matched KL MAVIS's front has at least the best "
            f"baseline's hypervolume on {wins} of {total} pairs (MAVIS ÷ best baseline: {', '.join(shares)}; "
            f"as published, α = 1 at unmatched KL: {', '.join(unmatched)}; section 2)."]
    refs = facts.get("references")
    if refs is not None and len(refs):
        ref_table = refs.set_index("method")
        mavis = ref_table["÷ MORLHF"].get("MAVIS", "–")
        others = ", ".join(f"{m} {v}" for m, v in ref_table["÷ MORLHF"].items() if m not in ("MORLHF", "MAVIS"))
        head.append(f"**Verdict 2: MAVIS against policies fine-tuned for each exact preference.** On "
                    f"{ref_table.pair.iloc[0]} MAVIS's front has {mavis} of MORLHF's hypervolume ({others}; "
                    f"{int(ref_table.points.iloc[0])} λ points; section 8).")
    else:
        head.append("**Verdict 2: MAVIS against policies fine-tuned for each exact preference.** Not measured: "
                    "this stack ships no MORLHF references.")
    lines = []
    budgets = facts.get("budgets")
    if budgets is not None and len(budgets):
        per = [f"β = {b:g} (KL {t['MAVIS mean KL'].mean():.1f}): {int((t['MAVIS'] >= t['its hypervolume']).sum())} of "
               f"{len(t)}, " + "/".join(t["MAVIS ÷ best"]) for b, t in budgets.groupby("β", sort=True)]
        lines.append("- At each KL budget (MAVIS's β, its mean KL), pairs where MAVIS is at least level at matched KL "
                     "and its shares of the best baseline: " + "; ".join(per) + " (section 2).")
    if refs is not None and len(refs):
        lines.append("- Mean KL on the references' λ points: "
                     + ", ".join(f"{m} {v:.1f}" for m, v in ref_table["mean KL"].items()) + " (section 8).")
    rho = facts.get("pairs_spearman")
    if rho is not None and len(rho):
        r = rho.set_index(["method", "objective"]).spearman
        low = [f"{METHOD_NAMES.get(m, m)}'s {o} {v:.2f}" for (m, o), v in r.items() if not v >= STEERS_WELL]
        lines.append(f"- The weight steers its reward (Spearman ρ ≥ {STEERS_WELL:g} between an objective's weight "
                     f"and its mean reward over section 1's λ points) for {int((r >= STEERS_WELL).sum())} of "
                     f"{len(r)} (method, objective) cells" + (f"; below: {', '.join(low)}." if low else "."))
        pairs, within = facts.get("pairs"), facts.get("pairs_within")
        if low and pairs is not None and within is not None:
            lacking = [(m, o) for (m, o), v in r.items() if not v >= STEERS_WELL]
            lines.append("- Why those fall short (section 1): pooled over both pairs, an objective's reward at weight "
                         "0 moves with which other objective is steered; "
                         + "; ".join(_steering_diagnosis(pairs, within, m, o) for m, o in lacking) + ".")
    iterations = facts.get("iterations")
    if iterations is not None and len(iterations):
        per = iterations.groupby("objective", sort=False).gain.mean()  # NaN where no KL point could be read
        lines.append("- The next iteration's value model against the shipped one at matched KL, mean reward "
                     "difference per objective: " + ", ".join(f"{o} {'–' if np.isnan(v) else f'{v:+.2f}'}"
                                                              for o, v in per.items()) + " (section 9).")
    agreement = facts.get("agreement")
    if agreement is not None and len(agreement):
        a = agreement.set_index("objective")
        lines.append("- Why (section 7): on held-out trees the value models' sibling r (1 is perfect) is "
                     + ", ".join(f"{o} {r['sibling r']:.2f}" for o, r in a.iterrows())
                     + "; their predictions vary " + "/".join(f"{v:.2f}" for v in a["prediction sd"])
                     + " against the targets' " + "/".join(f"{v:.2f}" for v in a["target sd"]) + ".")
    return [head[0], "", head[1], "", *(["What they rest on:", "", *lines, ""] if lines else [])]


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
    w = [f"w_{o}" for o in stack.objectives]
    distance = np.abs(df[w].to_numpy(float) - 1 / len(w)).sum(axis=1)  # NaN for the base, which has no λ
    nearest = df[np.isclose(distance, np.nanmin(distance)) | df.method.eq("base")].copy()
    lam = nearest[w].to_numpy(float)
    nearest.insert(1, "λ", ["–" if np.isnan(row).all() else " / ".join(f"{v:.2f}" for v in row) for row in lam])
    cols = ["method", "λ", *(f"{REWARD_PREFIX}{o}" for o in stack.objectives), "kl", "tokens"]
    report.add(f"Mean rewards at the grid points nearest equal weights (λ as {' / '.join(stack.objectives)}) "
               "and the base:", "")
    report.table(nearest[cols].rename(columns=lambda c: c.removeprefix(REWARD_PREFIX)), ".3f")
    counts = pareto_front(df[df.method != "base"], list(stack.objectives)).groupby("method").size()
    report.add(f"Points on each method's own {len(stack.objectives)}-objective Pareto front (of "
               f"{len(weight_grid(len(stack.objectives)))}): "
               + ", ".join(f"{m} {counts.get(m, 0)}" for m in stack.methods if m != "base") + ".", "")


def beta_section(report: Report, df: pd.DataFrame, stack: Stack, rc: ResultsConfig) -> None:
    """Section 4 from `run_betas`' table: single-objective MAVIS over β against the objective's policy."""
    import plotly.graph_objects as go

    from .plots import METHOD_COLOURS

    df.to_csv(report.data / "beta.csv", index=False)

    report.add("## 4. Single objective: MAVIS over β against the fine-tuned policy", "",
               f"λ one-hot on one objective. MAVIS at β ∈ {{{', '.join(f'{b:g}' for b in rc.betas)}}}; "
               "*policy* is that objective's LoRA policy sampled alone (what MOD and RSoup mix); the base for "
               "reference. Reward of the objective and KL to the base, same prompts and seeds as above.", "")
    table, reading = [], ["**Reading.**"]
    base = df[df.method == "base"].iloc[0]
    for o in stack.objectives:
        curve = df[(df.method == "mavis") & (df.objective == o)]
        policy = df[(df.method == "policy") & (df.objective == o)]
        entry = {"objective": o, "base": f"{base[f'{REWARD_PREFIX}{o}']:.3f} ({base.kl:.1f})"}
        entry.update({f"MAVIS β={r.beta:g}": f"{r[f'{REWARD_PREFIX}{o}']:.3f} ({r.kl:.1f})"
                      for _, r in curve.iterrows()})
        if len(policy):
            p = policy.iloc[0]
            entry["policy"] = f"{p[f'{REWARD_PREFIX}{o}']:.3f} ({p.kl:.1f})"
            at = reward_at_kl(curve, p.kl, o)
            best = curve.loc[curve[f"{REWARD_PREFIX}{o}"].idxmax()]
            reading.append(
                f"*{o}*: the policy reaches {p[f'{REWARD_PREFIX}{o}']:.3f} at KL {p.kl:.1f}; "
                + (f"MAVIS at the same KL reaches {at:.3f}" if not np.isnan(at) else
                   f"MAVIS's curve does not reach KL {p.kl:.1f} (it spans {curve.kl.min():.1f}–{curve.kl.max():.1f})")
                + f"; MAVIS's best is {best[f'{REWARD_PREFIX}{o}']:.3f} at β = {best.beta:g} (KL {best.kl:.1f}), "
                f"against the base's {base[f'{REWARD_PREFIX}{o}']:.3f}.")
        table.append(entry)
        fig = go.Figure()
        fig.add_trace(go.Scatter(x=curve.kl, y=curve[f"{REWARD_PREFIX}{o}"], mode="lines+markers+text",
                                 text=[f"β={b:g}" for b in curve.beta], textposition="top center", name="MAVIS",
                                 line=dict(color=METHOD_COLOURS["mavis"])))
        fig.add_trace(go.Scatter(x=[base.kl], y=[base[f"{REWARD_PREFIX}{o}"]], mode="markers", name="base",
                                 marker=dict(color=METHOD_COLOURS["base"], size=11)))
        if len(policy):
            fig.add_trace(go.Scatter(x=policy.kl, y=policy[f"{REWARD_PREFIX}{o}"], mode="markers",
                                     name=f"{o} policy (fine-tuned)",
                                     marker=dict(color=METHOD_COLOURS["mod"], size=12, symbol="star")))
        fig.update_layout(title=f"{o}: reward vs KL to the base", xaxis_title="mean KL to the base (nats/reply)",
                          yaxis_title=f"mean {o} reward", template="plotly_white",
                          legend=dict(orientation="h", y=-0.2), margin=dict(l=50, r=20, t=40, b=50))
        report.figure(fig, f"beta_{o}", f"{o} reward against KL over β")
    report.add("Reward (KL) per setting:", "")
    report.table(pd.DataFrame(table).fillna("–"))
    report.add(" ".join(reading), "")
    report.facts["beta"] = df


def top_k_section(report: Report, df: pd.DataFrame, stack: Stack, prompts: list[str], rc: ResultsConfig) -> None:
    """Section 5 from `run_top_ks`' table."""
    df.to_csv(report.data / "top_k.csv", index=False)
    wide = df.pivot_table(index="top_k", columns="method", values="ms_per_token")
    table = df[df.method == "mavis"][["top_k", *(f"{REWARD_PREFIX}{o}" for o in stack.objectives), "kl",
                                      "ms_per_token"]].copy()
    table["base ms/token"] = table.top_k.map(wide["base"])
    table["MAVIS ÷ base"] = table.ms_per_token / table["base ms/token"]
    table["base KL"] = table.top_k.map(df[df.method == "base"].set_index("top_k").kl)
    table = table.rename(columns=lambda c: c.removeprefix(REWARD_PREFIX))
    table = table.rename(columns={"kl": "MAVIS KL", "ms_per_token": "MAVIS ms/token"})
    report.add("## 5. Top-k ablation", "",
               f"MAVIS with equal weights at β = {rc.beta:g}, k ∈ {{{', '.join(map(str, rc.top_ks))}}}: MAVIS scores "
               "every one of the k candidates with the value model, so k sets its cost. Time per token is a batch "
               f"of {len(prompts) * rc.seeds} replies' generation time over their tokens (throughput on this "
               "machine; the ratio to the base at the same k, taken in the same run, is what carries over).", "")
    report.table(table, ".3f")
    report.add(reading_top_k(table, df, stack.objectives), "")


def reading_top_k(table: pd.DataFrame, df: pd.DataFrame, objectives: list[str]) -> str:
    lo, hi = table.iloc[0], table.iloc[-1]
    mavis = df[df.method == "mavis"]
    moved = []
    for o in objectives:
        spread = mavis[f"{REWARD_PREFIX}{o}"].max() - mavis[f"{REWARD_PREFIX}{o}"].min()
        moved.append(f"{o} {spread:.2f} (standard error ≈ {mavis[f'se_{o}'].median():.2f})")
    return (f"**Reading.** From k = {lo.top_k:g} to k = {hi.top_k:g} MAVIS's time per token goes from "
            f"{lo['MAVIS ÷ base']:.2f}× to {hi['MAVIS ÷ base']:.2f}× the base's: every step scores k candidates "
            "for every row, and in a batch of many rows that value-model pass dominates (at batch 1, "
            "`benchmarks/decode_speed.py` measures a smaller ratio). KL falls as k grows for both (MAVIS "
            f"{lo['MAVIS KL']:.1f} → {hi['MAVIS KL']:.1f}, base {lo['base KL']:.1f} → {hi['base KL']:.1f}) because "
            "the truncation term −log(top-k mass) shrinks. Largest change of MAVIS's mean reward across k: "
            + ", ".join(moved) + ".")


def search_section(report: Report, df: pd.DataFrame, stack: Stack, prompts: list[str], rc: ResultsConfig) -> None:
    """Section 6 from `run_searches`' table."""
    x, y = search_pair(stack, rc)
    grid = search_grid(stack, rc)
    series = series_of(df)
    df.assign(series=series).to_csv(report.data / "search.csv", index=False)
    volumes, _ = summarise(df, [x, y])
    volumes.to_csv(report.data / "search_hypervolume.csv", index=False)

    report.add("## 6. Test-time search on top of each method", "",
               f"{x}–{y}, {len(grid)} λ points, {len(prompts)} prompts × {rc.search_seeds} seeds (beam search is "
               f"deterministic, so it runs once per prompt). best-of-{rc.num_candidates} keeps the sample with the "
               f"highest λ-weighted reward; beam-{rc.num_beams} is value-guided beam search for MAVIS and "
               "log-prob beam search for the others (docs/search.md). Hypervolume with one reference for all "
               "series; seconds per reply include the search's own scoring of its candidates.", "")
    vol = volumes.set_index("method").hypervolume
    cost = df.groupby(series, sort=False).agg(seconds_per_reply=("seconds_per_reply", "mean"), kl=("kl", "mean"))
    rows = []
    for method in stack.methods:
        names = [s for s in cost.index if s.split(" ")[0] == method]
        sampled = cost.loc[method, "seconds_per_reply"] if method in cost.index else float("nan")
        for name in names:
            rows.append({"series": name, "hypervolume": vol.get(name, float("nan")),
                         "hypervolume ÷ sampling": vol.get(name, float("nan")) / vol.get(method, float("nan")),
                         "s/reply": cost.loc[name, "seconds_per_reply"],
                         "time ÷ sampling": cost.loc[name, "seconds_per_reply"] / sampled,
                         "mean KL": cost.loc[name, "kl"]})
    table = pd.DataFrame(rows)
    report.table(table, ".2f")
    ref = volumes.iloc[0]
    report.figure(front_figure(df, x, y, [ref.ref_x, ref.ref_y],
                               title=f"{x} vs {y}: sampling, best-of-{rc.num_candidates}, beam-{rc.num_beams}"),
                  f"search_{x}_{y}", f"Fronts with and without search, {x} vs {y}")
    report.add(*reading_search(table, stack.methods, rc), "")


def reading_search(table: pd.DataFrame, methods: list[str], rc: ResultsConfig) -> list[str]:
    t = table.set_index("series")
    out = ["**Reading.**", ""]
    for label in (f"best-of-{rc.num_candidates}", f"beam-{rc.num_beams}"):
        cells = [f"{m} {t.loc[f'{m} {label}', 'hypervolume ÷ sampling']:.2f}× at "
                 f"{t.loc[f'{m} {label}', 'time ÷ sampling']:.1f}× the time"
                 for m in methods if f"{m} {label}" in t.index]
        out.append(f"- {label} multiplies the hypervolume by: " + "; ".join(cells) + ".")
    searched = f"mavis best-of-{rc.num_candidates}"
    if searched in t.index:
        beaten = [m for m in ("mod", "rsoup")
                  if m in t.index and t.loc[searched, "hypervolume"] > t.loc[m, "hypervolume"]]
        out.append(f"- MAVIS with best-of-{rc.num_candidates}: hypervolume {t.loc[searched, 'hypervolume']:.2f} at "
                   f"mean KL {t.loc[searched, 'mean KL']:.1f}"
                   + (f", above plain sampling of {' and '.join(METHOD_NAMES[m] for m in beaten)}"
                      if beaten else "")
                   + "; " + ", ".join(f"{m} {t.loc[m, 'hypervolume']:.2f} at KL {t.loc[m, 'mean KL']:.1f}"
                                      for m in ("mod", "rsoup") if m in t.index) + ".")
    return out


def agreement_section(report: Report, table: pd.DataFrame, prompts: list[str], rc: ResultsConfig) -> None:
    """Section 7 from `run_agreement`'s table: how well the value models rank what MAVIS chooses between."""
    report.add("## 7. Why: the value models on held-out trees", "",
               f"MAVIS tilts each of the k candidates by β·Σ λ_m V_m, so what counts is whether the value models order "
               f"sibling continuations as their rewards do. Trees of the first {len(prompts)} held-out prompts rolled "
               f"out from the base (4 root children, then 2, 3 levels, {rc.tree_tokens} tokens, as value training "
               "grows them); a node's target is the mean reward of the leaves below it. *value r*: prediction against "
               "target over all nodes; *sibling r*: the same within sibling groups (each group's mean taken out); "
               "*pair order*: sibling pairs ordered right (0.5 is a coin); *leaf sibling r*: finished replies only, "
               "whose targets are their rewards (no sampling noise); the spread of the predictions against the "
               "targets'. `python -m mavis_core value-agreement` measures the same on its own.", "")
    if not len(table):
        report.add("This stack has no value models.", "")
        return
    table.to_csv(report.data / "value_agreement.csv", index=False)
    report.table(table, ".2f")
    t = table.set_index("objective")
    report.add("**Reading.** " + "; ".join(
        f"*{o}*: sibling r {r['sibling r']:.2f}, pairs ordered right {r['pair order']:.0%}, predictions vary "
        f"{r['prediction sd']:.2f} against the targets' {r['target sd']:.2f}" for o, r in t.iterrows())
        + ". A value model whose predictions vary by s moves sibling candidates' logits apart by about β·s, "
        "whatever its ranking.", "")
    report.facts["agreement"] = table


def references_section(report: Report, df: pd.DataFrame, stack: Stack, rc: ResultsConfig) -> None:
    """Section 8 from `run_references`' table: every method against the policies fine-tuned for each exact
    preference (the paper's MORLHF), on the pair the references lie on."""
    report.add("## 8. Against policies fine-tuned for each exact preference (MORLHF)", "")
    pair = reference_pair(stack)
    if pair is None or not len(df):
        report.add("This stack names no exact-preference policies (`[references.NAME]` tables in its stack file; "
                   "`python -m mavis_core train-policies --preference helpful=0.4,humor=0.6` trains one).", "")
        return
    x, y = pair
    df.to_csv(report.data / "references.csv", index=False)
    ref = report.facts["pairs_volumes"].query("x == @x and y == @y").iloc[0]
    methods = [m for m in (*stack.methods, "morlhf") if m in set(df.method) and m != "base"]
    volumes, cells = {}, {}
    for m in methods:
        own = df[df.method == m].sort_values(f"w_{x}")
        volumes[m] = pareto.hypervolume(own[[f"{REWARD_PREFIX}{x}", f"{REWARD_PREFIX}{y}"]].to_numpy(float),
                                        (ref.ref_x, ref.ref_y))
        for _, r in own.iterrows():
            cells.setdefault(round(float(r[f"w_{x}"]), 6), {})[METHOD_NAMES[m]] = (
                f"{r[f'{REWARD_PREFIX}{x}']:.2f} / {r[f'{REWARD_PREFIX}{y}']:.2f} (KL {r.kl:.1f})")
    table = pd.DataFrame([{f"λ {x}": f"{lam:g}", **row} for lam, row in sorted(cells.items())])
    summary_rows = pd.DataFrame([{"method": METHOD_NAMES[m], "hypervolume": v,
                                  "÷ MORLHF": _share(v, volumes["morlhf"]),
                                  "mean KL": df[df.method == m].kl.mean()} for m, v in volumes.items()])
    n = int((df.method == "morlhf").sum())
    report.add(f"*MORLHF*: on the {x}–{y} pair, a LoRA policy trained by the same DPO recipe on the weighted "
               f"reward λ·r_{x} + (1 − λ)·r_{y} for each λ of the stack's `[references]` tables, and each "
               f"objective's own policy at the ends: {n} λ points. Every other method at the same λ points "
               "(section 1's rows where its grid has them), each at its own KL (not matched); hypervolume over "
               "those points with section 1's reference point for the pair.", "")
    report.table(summary_rows, ".2f")
    report.add(f"Mean rewards {x} / {y} (KL) at each λ point:", "")
    report.table(table)
    report.facts["references"] = summary_rows.assign(pair=f"{x}–{y}", points=n)
    mavis = volumes.get("mavis", float("nan"))
    behind = [f"{METHOD_NAMES[m]} {_share(v, volumes['morlhf'])}" for m, v in volumes.items() if m != "morlhf"]
    report.add(f"**Reading.** Hypervolume as a share of MORLHF's ({volumes['morlhf']:.2f}): " + ", ".join(behind)
               + f". MAVIS {'reaches' if mavis >= volumes['morlhf'] else 'does not reach'} the front of the "
               "policies fine-tuned for each preference; mean KL: "
               + ", ".join(f"{r['method']} {r['mean KL']:.1f}" for _, r in summary_rows.iterrows()) + ".", "")


def iteration_section(report: Report, df: pd.DataFrame, stack: Stack, rc: ResultsConfig) -> None:
    """Section 9 from `run_next_iteration`'s table: the next iteration's value model against the stack's own at
    matched KL, per objective (the paper's Theorem 1: iteration k + 1 is no worse than iteration k)."""
    report.add("## 9. The next iteration of the value model at matched KL", "")
    if not len(df):
        report.add("Not measured: `results --next-iteration FOLDER` names the value model of the next iteration "
                   "(for the default stack `assets/values/fused-iter1`, trained from the shipped one on MAVIS-guided "
                   "rollouts).", "")
        return
    df.to_csv(report.data / "next_iteration.csv", index=False)
    gains = iteration_gains(report.facts["beta"], df, stack.objectives)
    report.facts["iterations"] = gains
    report.add(f"Theorem 1 of the paper: the policy of iteration k + 1, guided by a value model trained on iteration "
               f"k's own rollouts, is no worse than iteration k's. Single-objective MAVIS guided by "
               f"`{rc.next_iteration}` at β ∈ {{{', '.join(f'{b:g}' for b in rc.betas)}}}, same prompts and seeds "
               "as section 4, which guides with the stack's own value model (iteration k). At each of section 4's "
               "points the next iteration's reward is read off its β curve at the same KL (linear in KL, the base "
               "as both curves' start); *difference* ± the standard error of the difference.", "")
    rows = []
    for _, g in gains.iterrows():
        own = df[(df.objective == g.objective) & np.isclose(df.beta, g.beta)]
        nxt = own.iloc[0] if len(own) else None
        rows.append({"objective": g.objective, "β": f"{g.beta:g}",
                     "iteration k": f"{g.reward:.3f} (KL {g.kl:.1f})",
                     "iteration k + 1 at the same β": "–" if nxt is None else
                     f"{nxt[f'{REWARD_PREFIX}{g.objective}']:.3f} (KL {nxt.kl:.1f})",
                     "iteration k + 1 at iteration k's KL": "–" if np.isnan(g.next_reward) else f"{g.next_reward:.3f}",
                     "difference": "–" if np.isnan(g.gain) else f"{g.gain:+.3f} ± {g.gain_se:.3f}"})
    report.table(pd.DataFrame(rows))
    reading = ["**Reading.**"]
    for o, g in gains.dropna(subset=["gain"]).groupby("objective", sort=False):
        worse = g[g.gain < -2 * g.gain_se]
        reading.append(f"*{o}*: mean difference {g.gain.mean():+.3f} over {len(g)} KL points; "
                       + ("below iteration k by more than two standard errors at β = "
                          + ", ".join(f"{b:g}" for b in worse.beta) if len(worse) else
                          "nowhere below iteration k by more than two standard errors") + ".")
    report.add(" ".join(reading), "")


def summary(facts: dict, objectives: list[str]) -> list[str]:
    """The closing section: the paper's claims checked against this page's tables (numbers computed here)."""
    volumes, kl, rho, beta = facts["pairs_volumes"], facts["pairs_kl"], facts["pairs_spearman"], facts["beta"]
    out = ["## 10. What this says", ""]
    r = rho.set_index(["method", "objective"]).spearman
    weakest = r.idxmin()
    weak = [f"{m}'s {o} ({v:.2f})" for (m, o), v in r.items() if not v >= STEERS]
    headline = "The weights steer every method." if not weak else "The weights do not steer everything."
    out.append(f"- **{headline}** Spearman's ρ between an objective's weight and its reward is {r.min():.2f}–"
               f"{r.max():.2f} over all methods and objectives (section 1); the weakest is {weakest[0]}'s "
               f"{weakest[1]} ({r.min():.2f})" + (f"; below {STEERS:g}: {', '.join(weak)}." if weak else "."))
    pairs = list(itertools.combinations(objectives, 2))
    top = [volumes[(volumes.x == x) & (volumes.y == y)].set_index("method").hypervolume for x, y in pairs]
    mavis_top = sum(v.idxmax() == "mavis" for v in top)
    verdict = ("does" if mavis_top == len(pairs) else "does not") + " dominate here"
    out.append(f"- **MAVIS's front {verdict}.** It has the largest hypervolume on {mavis_top} of {len(pairs)} "
               "pairs; the paper reports MAVIS ahead of MOD and RSoup. ")
    if {"mavis", "mod"} <= set(kl.index):
        ratio = kl.loc["mod", "mean_kl"] / kl.loc["mavis", "mean_kl"]
        where = ("further from the base than MAVIS" if ratio > 1.2 else
                 "closer to the base than MAVIS" if ratio < 1 / 1.2 else "about as far from the base as MAVIS")
        out[-1] += (f"MOD's replies are {where}: its mean KL is {ratio:.1f}× MAVIS's "
                    f"({kl.loc['mod', 'mean_kl']:.1f} against {kl.loc['mavis', 'mean_kl']:.1f}).")
    matched, unmatched = [], []
    for o in objectives:
        curve = beta[(beta.method == "mavis") & (beta.objective == o)]
        policy = beta[(beta.method == "policy") & (beta.objective == o)]
        if not len(policy):
            continue
        p = policy.iloc[0]
        at = reward_at_kl(curve, p.kl, o)
        if np.isnan(at):
            unmatched.append(f"{o} (policy KL {p.kl:.1f}, MAVIS {curve.kl.min():.1f}–{curve.kl.max():.1f})")
        else:
            who = "the policy" if p[f"{REWARD_PREFIX}{o}"] > at else "MAVIS"
            matched.append(f"{o}: policy {p[f'{REWARD_PREFIX}{o}']:.2f}, MAVIS {at:.2f} — {who} is ahead")
    if matched or unmatched:
        out.append("- **Single objective at matched KL** (section 4): "
                   + ("; ".join(matched) if matched else "no objective")
                   + (". Not comparable, because the policy's KL lies outside the range MAVIS's β curve covers: "
                      + ", ".join(unmatched)
                      if unmatched else "") + ".")
    base = beta[beta.method == "base"].iloc[0]
    gains, delivered = [], True
    for o in objectives:
        curve = beta[(beta.method == "mavis") & (beta.objective == o)]
        near = curve[curve.kl <= base.kl]  # settings no further from the base than the base's own sampling
        if not len(near):
            delivered = False
            gains.append(f"{o}: no β keeps the KL at or below the base's {base.kl:.1f}")
            continue
        best = near.loc[near[f"{REWARD_PREFIX}{o}"].idxmax()]
        # standard error of the difference of two independent means (unpaired: conservative here)
        se = float(np.hypot(best[f"se_{o}"], base[f"se_{o}"]))
        gain = best[f"{REWARD_PREFIX}{o}"] - base[f"{REWARD_PREFIX}{o}"]
        delivered &= bool(gain > 2 * se)
        gains.append(f"{o} {base[f'{REWARD_PREFIX}{o}']:.2f} → {best[f'{REWARD_PREFIX}{o}']:.2f} "
                     f"(β = {best.beta:g}, KL {best.kl:.1f}; gain {gain / se:.1f} standard errors of the difference)")
    out.append(f"- **Single-objective MAVIS, best β at no more KL than the base's {base.kl:.1f}:** "
               + "; ".join(gains) + ". "
               + ("With one small value model and no fine-tuning, it raises every reward by more than two standard "
                  "errors without moving further from the base." if delivered else
                  "It does not raise every reward by more than two standard errors at no more KL than the base."))
    return [*out, ""]


# ---- command ---------------------------------------------------------------------------------------------


RUN_RECORD = "run.json"  # beside the tables: what made them (command, commit, settings, timings), for --from-tables
RAW_TABLES = {"pairs": "pairs.csv", "matched KL": "matched.csv", "simplex": "simplex.csv", "beta": "beta.csv",
              "top-k": "top_k.csv", "search": "search.csv", "value models": "value_agreement.csv",
              "references": "references.csv", "next iteration": "next_iteration.csv"}  # as each section writes it
OPTIONAL_TABLES = {"references", "next iteration"}  # sections a stack or a run may not have: no table, no section


def _record_run(data: Path, record: dict) -> None:
    (data / RUN_RECORD).write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def read_run(data: Path) -> tuple[dict, ResultsConfig, dict[str, pd.DataFrame]]:
    """An earlier run's record, settings and measured tables, from ``data`` (what `run_results` wrote there)."""
    path = data / RUN_RECORD
    if not path.exists():
        raise ValueError(f"{path} not found: --from-tables re-renders the tables of an earlier run of `results` "
                         f"with this version (one that records {RUN_RECORD}); rerun `results` without it first")
    record = json.loads(path.read_text(encoding="utf-8"))
    known = {f.name for f in dataclasses.fields(ResultsConfig)}
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in record["settings"].items() if k in known}
    tables = {}
    for name, file in RAW_TABLES.items():
        if not (data / file).exists() and name in OPTIONAL_TABLES:
            tables[name] = pd.DataFrame()
            continue
        if not (data / file).exists():
            raise ValueError(f"{data / file} not found: the run recorded in {path} wrote every section's table there")
        tables[name] = pd.read_csv(data / file).drop(columns=["series"], errors="ignore")  # series: search's own
    return record, ResultsConfig(**settings), tables


def run_results(stack_path: str, out: Path, data: Path, rc: ResultsConfig, command: str,
                from_tables: bool = False) -> Path:
    """Run every experiment and write ``out`` (markdown), ``out.parent/results/*.png`` and ``data/*.csv``.

    ``from_tables``: decode nothing; re-render the page (every table, figure and sentence) from the tables and
    record an earlier run left in ``data``, with this version's text. Its stack and settings are the run's.
    """
    import torch

    from .prompts import heldout_prompts
    from .stack import load_stack

    start = time.perf_counter()
    record, tables = None, {}
    if rc.next_iteration and not from_tables and not Path(rc.next_iteration).is_dir():
        raise ValueError(f"--next-iteration {rc.next_iteration}: no such value model folder")
    if from_tables:
        record, recorded_rc, tables = read_run(data)
        stack_path, rc = record["stack"], dataclasses.replace(recorded_rc, images=rc.images)
    stack = load_stack(stack_path)
    rc = rc.for_stack(stack)
    prompts = heldout_prompts(stack_path, stack.spec.prompts)
    if not prompts:
        raise ValueError(f"stack {stack_path} has no held-out prompts (no 'prompts' and no eval_prompts.json)")
    missing = {"mavis", "mod"} - set(stack.methods)
    if missing:
        raise ValueError(f"results compare MAVIS with the fine-tuned policies; this stack lacks {sorted(missing)}")
    data.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = Report(out, data)
    main_prompts, search_prompts = prompts[:rc.prompts or None], prompts[:rc.search_prompts]
    embedded = stack.spec.name == "embedded"
    source = "`eval_prompts.json`, chitchat test split" if embedded else "the stack's held-out prompts"
    dtype = str(stack.dtype).removeprefix("torch.")
    machine = (f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} with "
               f"{torch.get_num_threads()} threads, device {stack.device}, {dtype} weights")
    run = record or {"command": command, "commit": _git_commit(), "date": time.strftime("%Y-%m-%d"),
                     "stack": str(stack_path), "machine": machine}
    report.add("# Results on the embedded stack" if embedded else f"# Results on the `{stack.spec.name}` stack", "",
               f"Generated by `{run['command']}` (commit {run['commit']}, {run['date']})"
               + (f"; text re-rendered from its tables by `{command}` (commit {_git_commit()}, "
                  f"{time.strftime('%Y-%m-%d')})" if record else "")
               + ". Do not edit by hand: rerun the command. Tables as CSV and interactive charts (HTML) are in "
               f"`{data.as_posix()}/`.", "",
               f"- Stack: `{stack_path}` (objectives {', '.join(stack.objectives)}; methods "
               f"{', '.join(stack.methods)}).",
               f"- Prompts: the first {len(main_prompts)} held-out prompts ({source}) × seeds 0–{rc.seeds - 1}; "
               f"search: the first {len(search_prompts)} × seeds "
               f"0–{rc.search_seeds - 1}.",
               f"- Decoding: top-k {rc.top_k}, temperature 1, at most {rc.max_new_tokens} new tokens, MAVIS β = "
               f"{rc.beta:g} unless a section varies it. Rewards are the stack's reward models' raw scores "
               "(scales differ between objectives). KL is Σ log π/π_ref over a reply, as the decoding core reports "
               "it.",
               f"- Machine: {run['machine']}.", "")
    timings, head = {}, len(report.lines)
    p, sp = main_prompts, search_prompts
    for name, measure, write in (
            ("pairs", lambda: run_pairs(stack, p, rc), lambda df: pairs_section(report, df, stack, p, rc)),
            ("matched KL", lambda: run_strengths(stack, p, rc, report.facts["pairs"]),
             lambda df: matched_section(report, df, stack, rc)),
            ("simplex", lambda: run_simplex(stack, p, rc), lambda df: simplex_section(report, df, stack)),
            ("beta", lambda: run_betas(stack, p, rc), lambda df: beta_section(report, df, stack, rc)),
            ("top-k", lambda: run_top_ks(stack, p, rc), lambda df: top_k_section(report, df, stack, p, rc)),
            ("search", lambda: run_searches(stack, sp, rc), lambda df: search_section(report, df, stack, sp, rc)),
            ("value models", lambda: run_agreement(stack, p, rc), lambda df: agreement_section(report, df, p, rc)),
            ("references", lambda: run_references(stack, p, rc, report.facts["pairs"]),
             lambda df: references_section(report, df, stack, rc)),
            ("next iteration", lambda: run_next_iteration(stack, p, rc),
             lambda df: iteration_section(report, df, stack, rc))):
        t0 = time.perf_counter()
        write(tables[name] if from_tables else measure())
        timings[name] = time.perf_counter() - t0
        print(f"[results] {name}: {timings[name]:.0f} s", flush=True)
    report.lines[head:head] = verdicts(report.facts)
    report.add(*summary(report.facts, stack.objectives))
    if record:
        timings, total = record["timings"], record["total_s"]
    else:
        total = time.perf_counter() - start
    report.add("## Cost of this page", "",
               "Wall time of each section on the machine above: "
               + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items())
               + f"; {total / 60:.1f} min in all.", "")
    report.write(rc.images)
    if not record:
        _record_run(data, {**run, "settings": dataclasses.asdict(rc), "timings": timings, "total_s": total})
    return out
