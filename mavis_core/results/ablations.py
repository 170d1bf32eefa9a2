"""Sections 4-6 of the results page: single-objective β curves, the top-k ablation, test-time search."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import METHOD_NAMES, METHODS
from ..evaluation import (
    REWARD_PREFIX,
    front_figure,
    series_of,
    summarise,
)
from ..experiments import (
    ResultsConfig,
    reward_at_kl,
    search_grid,
    search_pair,
)
from ..stack import Stack
from .kinds import kind_table
from .report import Report


def _beta_figure(curve: pd.DataFrame, base: pd.Series, policy: pd.DataFrame, o: str):
    """Objective ``o``'s reward against KL: MAVIS over β, the base, and the objective's policy where there is one."""
    import plotly.graph_objects as go

    from ..plots import METHOD_COLOURS

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
    return fig


def _beta_entry(df: pd.DataFrame, o: str) -> dict[str, str]:
    """Objective ``o``'s row of section 4's table: its reward (KL) for the base, MAVIS at each β and its policy."""
    base = df[df.method == "base"].iloc[0]
    entry = {"objective": o, "base": f"{base[f'{REWARD_PREFIX}{o}']:.3f} ({base.kl:.1f})"}
    entry.update({f"MAVIS β={r.beta:g}": f"{r[f'{REWARD_PREFIX}{o}']:.3f} ({r.kl:.1f})"
                  for _, r in df[(df.method == "mavis") & (df.objective == o)].iterrows()})
    for _, p in df[(df.method == "policy") & (df.objective == o)].iterrows():
        entry["policy"] = f"{p[f'{REWARD_PREFIX}{o}']:.3f} ({p.kl:.1f})"
    return entry


def beta_section(report: Report, df: pd.DataFrame, stack: Stack, rc: ResultsConfig) -> None:
    """Section 4 from `run_betas`' table: single-objective MAVIS over β against the objective's policy."""
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
        if len(policy):
            p = policy.iloc[0]
            at = reward_at_kl(curve, p.kl, o)
            best = curve.loc[curve[f"{REWARD_PREFIX}{o}"].idxmax()]
            reading.append(
                f"*{o}*: the policy reaches {p[f'{REWARD_PREFIX}{o}']:.3f} at KL {p.kl:.1f}; "
                + (f"MAVIS at the same KL reaches {at:.3f}" if not np.isnan(at) else
                   f"MAVIS's curve does not reach KL {p.kl:.1f} (it spans {curve.kl.min():.1f}–{curve.kl.max():.1f})")
                + f"; MAVIS's best is {best[f'{REWARD_PREFIX}{o}']:.3f} at β = {best.beta:g} (KL {best.kl:.1f}), "
                f"against the base's {base[f'{REWARD_PREFIX}{o}']:.3f}.")
        table.append(_beta_entry(df, o))
        report.figure(_beta_figure(curve, base, policy, o), f"beta_{o}", f"{o} reward against KL over β")
    report.add("Reward (KL) per setting:", "")
    report.table(pd.DataFrame(table).fillna("–"))
    kind_table(report, df, lambda view, _: pd.DataFrame([_beta_entry(view, o) for o in stack.objectives]).fillna("–"),
               "Reward (KL) per setting")
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
    rewards = ["method", "top_k", *(f"{REWARD_PREFIX}{o}" for o in stack.objectives), "kl"]
    kind_table(report, df, lambda view, _: view[rewards].rename(columns=lambda c: c.removeprefix(REWARD_PREFIX)),
               "Mean rewards and KL of the base and MAVIS at each k", ".3f")
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
    methods = [m for m in METHODS if m in set(df.method)]  # the stack's and Prompted, as the run measured them
    for method in methods:
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
    kind_table(report, df, lambda view, _: summarise(view, [x, y])[0].set_index("method").hypervolume.to_frame().T,
               "Hypervolume of each series (a reference point per kind)")
    ref = volumes.iloc[0]
    report.figure(front_figure(df, x, y, [ref.ref_x, ref.ref_y],
                               title=f"{x} vs {y}: sampling, best-of-{rc.num_candidates}, beam-{rc.num_beams}"),
                  f"search_{x}_{y}", f"Fronts with and without search, {x} vs {y}")
    report.add(*reading_search(table, methods, rc), "")


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
