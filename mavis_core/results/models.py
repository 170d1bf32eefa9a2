"""Sections 7-9 of the results page: the value models' agreement with the rewards, MORLHF references, and
the next iteration's value model."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import pareto
from ..config import METHOD_NAMES, METHODS
from ..evaluation import (
    REWARD_PREFIX,
    kind_view,
)
from ..experiments import (
    ResultsConfig,
    iteration_gains,
    reference_pair,
)
from ..stack import Stack
from .kinds import kind_reference, kind_table
from .report import Report, share


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


def _reference_points(df: pd.DataFrame, methods: list[str], x: str, y: str,
                      ref_point: tuple[float, float]) -> tuple[dict[str, float], pd.DataFrame]:
    """Each method's hypervolume over the references' λ points on (x, y), and its rewards (KL) at each point."""
    volumes, cells = {}, {}
    for m in methods:
        own = df[df.method == m].sort_values(f"w_{x}")
        volumes[m] = pareto.hypervolume(own[[f"{REWARD_PREFIX}{x}", f"{REWARD_PREFIX}{y}"]].to_numpy(float),
                                        ref_point)
        for _, r in own.iterrows():
            cells.setdefault(round(float(r[f"w_{x}"]), 6), {})[METHOD_NAMES[m]] = (
                f"{r[f'{REWARD_PREFIX}{x}']:.2f} / {r[f'{REWARD_PREFIX}{y}']:.2f} (KL {r.kl:.1f})")
    return volumes, pd.DataFrame([{f"λ {x}": f"{lam:g}", **row} for lam, row in sorted(cells.items())])


def _kind_points(report: Report, df: pd.DataFrame, kind: str, methods: list[str],
                 pair: tuple[str, str]) -> tuple[dict[str, float], pd.DataFrame]:
    """`_reference_points` on ``kind``'s view of the table, above that kind's reference point for the pair."""
    return _reference_points(df, methods, *pair, kind_reference(report, kind, *pair))


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
    methods = [m for m in METHODS if m in set(df.method) and m != "base"]  # as the run measured them
    volumes, table = _reference_points(df, methods, x, y, (ref.ref_x, ref.ref_y))
    summary_rows = pd.DataFrame([{"method": METHOD_NAMES[m], "hypervolume": v,
                                  "÷ MORLHF": share(v, volumes["morlhf"]),
                                  "mean KL": df[df.method == m].kl.mean()} for m, v in volumes.items()])
    n = int((df.method == "morlhf").sum())
    report.add(f"*MORLHF*: on the {x}–{y} pair, a LoRA policy trained by the same DPO recipe on the weighted "
               f"reward λ·r_{x} + (1 − λ)·r_{y} for each λ of the stack's `[references]` tables, and each "
               f"objective's own policy at the ends: {n} λ points. Every other method at the same λ points "
               "(section 1's rows where its grid has them), each at its own KL (not matched); hypervolume over "
               "those points with section 1's reference point for the pair.", "")
    report.table(summary_rows, ".2f")
    kind_table(report, df, lambda view, kind: pd.DataFrame([{METHOD_NAMES[m]: v for m, v in _kind_points(
        report, view, kind, methods, (x, y))[0].items()}]), "Hypervolume over those λ points")
    report.add(f"Mean rewards {x} / {y} (KL) at each λ point:", "")
    report.table(table)
    kind_table(report, df, lambda view, kind: _kind_points(report, view, kind, methods, (x, y))[1],
               f"Mean rewards {x} / {y} (KL) at each λ point")
    report.facts["references"] = summary_rows.assign(pair=f"{x}–{y}", points=n)
    mavis = volumes.get("mavis", float("nan"))
    behind = [f"{METHOD_NAMES[m]} {share(v, volumes['morlhf'])}" for m, v in volumes.items() if m != "morlhf"]
    report.add(f"**Reading.** Hypervolume as a share of MORLHF's ({volumes['morlhf']:.2f}): " + ", ".join(behind)
               + f". MAVIS {'reaches' if mavis >= volumes['morlhf'] else 'does not reach'} the front of the "
               "policies fine-tuned for each preference; mean KL: "
               + ", ".join(f"{r['method']} {r['mean KL']:.1f}" for _, r in summary_rows.iterrows()) + ".", "")


def _kind_gains(current: pd.DataFrame, following: pd.DataFrame, kind: str, objectives: list[str]) -> pd.DataFrame:
    """`iteration_gains` over ``kind``'s prompts (``following`` is already that kind's view), as table cells."""
    g = iteration_gains(kind_view(current, kind), following, objectives)
    return pd.DataFrame({"objective": g.objective, "β": [f"{b:g}" for b in g.beta],
                         "difference": ["–" if np.isnan(v) else f"{v:+.3f} ± " + ("–" if np.isnan(e) else f"{e:.3f}")
                                        for v, e in zip(g.gain, g.gain_se, strict=True)]})  # no se from 1 reply


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
    kind_table(report, df, lambda view, kind: _kind_gains(report.facts["beta"], view, kind, stack.objectives),
               "The difference at iteration k's KL")
    reading = ["**Reading.**"]
    for o, g in gains.dropna(subset=["gain"]).groupby("objective", sort=False):
        worse = g[g.gain < -2 * g.gain_se]
        reading.append(f"*{o}*: mean difference {g.gain.mean():+.3f} over {len(g)} KL points; "
                       + ("below iteration k by more than two standard errors at β = "
                          + ", ".join(f"{b:g}" for b in worse.beta) if len(worse) else
                          "nowhere below iteration k by more than two standard errors") + ".")
    report.add(" ".join(reading), "")
