"""Section 2's last parts: MAVIS against "just asking" (Prompted, at Prompted's own KL) and against one policy
conditioned on λ (read off its strength curve at MAVIS's KL), per pair; the tables verdicts 3 and 4 read."""

from __future__ import annotations

import pandas as pd

from ..evaluation import kind_view
from ..experiments import matched_table, own_kl_table
from .fronts import pair_shares
from .kinds import kinds_of
from .report import Report, share


def _reading(table: pd.DataFrame, name: str) -> list[str]:
    """Per pair: MAVIS's hypervolume against ``name``'s on the λ points compared, and as published."""
    out = ["**Reading.**", ""]
    for p in pair_shares(table):
        out.append(f"- *{p['x']}–{p['y']}*: on {p['matched points']} of {p['of']} λ points compared, MAVIS "
                   f"{p['mavis']:.2f} against {name}'s {p['best hv']:.2f} ({share(p['mavis'], p['best hv'])}); "
                   f"as published {p['mavis unmatched']:.2f} against {p['best unmatched']:.2f} "
                   f"({share(p['mavis unmatched'], p['best unmatched'])}).")
    return out


def prompted_part(report: Report, df: pd.DataFrame, objectives: list[str], beta: float) -> None:
    """MAVIS against Prompted at Prompted's own KL (`own_kl_table`); ``facts["prompted"]`` is its table (None
    for tables from before Prompted was measured)."""
    report.facts["prompted"] = None
    if "prompted" not in set(df.method):
        return
    table, points = own_kl_table(df, objectives, report.facts["pairs_volumes"], beta)
    report.add("### MAVIS against just asking (Prompted)", "")
    _publish(report, "prompted", table, points, "Prompted",
             "*Prompted* is the base with the weights written into its system prompt; its KL is measured against "
             "the base on the plain prompt, so it counts what the instruction changed. It has no strength to "
             "trade KL for reward, so it is compared at its own KL: at each of its λ points MAVIS is read off "
             "its β curve at that λ (the base as β = 0, the page's β and every KL budget's β; linear in KL) at "
             "Prompted's KL. A λ point where Prompted's KL lies outside MAVIS's curve is left out of both "
             "fronts, and counted.")


def conditioned_part(report: Report, df: pd.DataFrame, objectives: list[str], beta: float, has_policy: bool) -> None:
    """MAVIS against the λ-conditioned policy at MAVIS's KL (`matched_table` over the policy's strength α);
    ``facts["conditioned"]`` is its table (None where the tables have no such rows). ``has_policy``: whether the
    stack has one (tables from before it was measured say so rather than that it has none)."""
    report.facts["conditioned"] = None
    report.add("### MAVIS against one policy conditioned on λ", "")
    if "conditioned" not in set(df.method):
        report.add("Not measured: this run's tables predate the conditioned policy." if has_policy else
                   "This stack has no conditioned policy (a `[conditioned]` entry in its stack file, "
                   "docs/stacks.md), so there is no such comparison.", "")
        return
    table, points = matched_table(df, objectives, ["conditioned"], report.facts["pairs_volumes"], beta=beta)
    _publish(report, "conditioned", table, points, "the conditioned policy",
             "*Conditioned*: one LoRA policy that reads the weights in its system prompt (Prompted's), trained "
               "once for every λ. Its strength α scales its adapter as RSoup's does (θ_0 + α·ΔW); α = 0 is "
               "Prompted, so its curve at each λ runs from Prompted's point through α = 1 and the page's other "
               "strengths, and it is read at MAVIS's KL as MOD and RSoup are above.")


def _publish(report: Report, method: str, table: pd.DataFrame, points: pd.DataFrame, label: str,
             description: str) -> None:
    """A baseline's comparison with MAVIS: its tables as CSV, what it measures, the table, its reading, and
    ``facts[method]``."""
    table.to_csv(report.data / f"matched_{method}.csv", index=False)
    points.to_csv(report.data / f"matched_{method}_points.csv", index=False)
    report.add(description, "")
    report.table(table, ".2f")
    report.add(*_reading(table, label), "")
    report.facts[method] = table


def _kind_comparisons(df: pd.DataFrame, objectives: list[str], volumes: pd.DataFrame, beta: float) -> dict:
    """Section 2's comparisons on one kind's view of the table (``volumes``: that kind's reference points)."""
    methods = set(df.method)
    tables = {"best of MOD and RSoup": matched_table(df, objectives, [m for m in ("mod", "rsoup") if m in methods],
                                                     volumes, beta=beta)[0]}
    if "prompted" in methods:
        tables["Prompted"] = own_kl_table(df, objectives, volumes, beta)[0]
    if "conditioned" in methods:
        tables["Conditioned"] = matched_table(df, objectives, ["conditioned"], volumes, beta=beta)[0]
    return tables


def kinds_part(report: Report, df: pd.DataFrame, objectives: list[str], beta: float) -> None:
    """Section 2's comparisons over each prompt kind's replies (nothing where the prompts carry no kinds)."""
    kinds, rows = kinds_of(df), []
    for kind in kinds:
        volumes = report.facts["kinds"][report.facts["kinds"].kind == kind]
        cells: dict[tuple[str, str], dict[str, str]] = {}
        for name, table in _kind_comparisons(kind_view(df, kind), objectives, volumes, beta).items():
            for p in pair_shares(table):
                cells.setdefault((p["x"], p["y"]), {})[f"MAVIS ÷ {name}"] = \
                    f"{share(p['mavis'], p['best hv'])} ({p['matched points']} of {p['of']})"
        rows += [{"kind": kind, "pair": f"{x}–{y}", **c} for (x, y), c in cells.items()]
    if rows:
        report.add("### Per prompt kind", "",
                   "The same comparisons over each kind's replies (their own rewards and KL; the per-kind section's "
                   "reference points): MAVIS's hypervolume as a share of each baseline's at the page's β, with the λ "
                   "points compared.", "")
        report.table(pd.DataFrame(rows))
