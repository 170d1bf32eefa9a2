"""The page's verdicts (before section 1) and its closing summary (section 10), read from the facts the sections
leave in `Report.facts`."""

from __future__ import annotations

import itertools

import numpy as np

from ..config import METHOD_NAMES
from ..evaluation import (
    REWARD_PREFIX,
)
from ..experiments import (
    reward_at_kl,
)
from .fronts import level_pairs, pair_shares, steering_diagnosis
from .report import STEERS, STEERS_WELL, rho_text, share


def _headline_verdicts(facts: dict, pairs: list[dict]) -> list[str]:
    """The issue's two verdicts, one line each: MAVIS against MOD and RSoup at matched KL; against MORLHF."""
    total, wins = len(pairs), sum(bool(p["matched points"] and p["mavis"] >= p["best hv"]) for p in pairs)
    shares = [share(p["mavis"], p["best hv"]) for p in pairs]
    unmatched = [share(p["mavis unmatched"], p["best unmatched"]) for p in pairs]
    first = (f"**Verdict 1: MAVIS against MOD and RSoup.** At matched KL MAVIS's front has at least the best "
             f"baseline's hypervolume on {wins} of {total} pairs (MAVIS ÷ best baseline: {', '.join(shares)}"
             f"{_uncompared(pairs)}; as published, α = 1 at unmatched KL: {', '.join(unmatched)}; section 2).")
    refs = facts.get("references")
    if refs is None or not len(refs):
        return [first, "**Verdict 2: MAVIS against policies fine-tuned for each exact preference.** Not measured: "
                "this stack ships no MORLHF references."]
    ref_table = refs.set_index("method")
    mavis = ref_table["÷ MORLHF"].get("MAVIS", "–")
    others = ", ".join(f"{m} {v}" for m, v in ref_table["÷ MORLHF"].items() if m not in ("MORLHF", "MAVIS"))
    return [first, f"**Verdict 2: MAVIS against policies fine-tuned for each exact preference.** On "
            f"{ref_table.pair.iloc[0]} MAVIS's front has {mavis} of MORLHF's hypervolume ({others}; "
            f"{int(ref_table.points.iloc[0])} λ points; section 8)."]


def _uncompared(pairs: list[dict]) -> str:
    """"; PAIR not compared: ..." for the pairs with no λ point where a baseline reaches MAVIS's KL (no win)."""
    none = [f"{p['x']}–{p['y']}" for p in pairs if not p["matched points"]]
    return (f"; {', '.join(none)} not compared: at no λ point does a baseline reach MAVIS's KL, so it counts as "
            "no win" if none else "")


def _baseline_verdicts(facts: dict) -> list[str]:
    """Verdicts 3 and 4, one line each: MAVIS against Prompted at Prompted's own KL, and against the conditioned
    policy at matched KL (section 2); none for a table a run did not measure, the latter saying so."""
    lines = []
    asked, conditioned = facts.get("prompted"), facts.get("conditioned")
    if asked is not None:
        lines.append("**Verdict 3: does MAVIS beat just asking?** " + _against(
            pair_shares(asked), "Prompted", "at Prompted's own KL (it has no strength to trade KL for reward; MAVIS "
            "read off its β curve there)"))
    if conditioned is not None:
        lines.append("**Verdict 4: does MAVIS beat one policy conditioned on λ?** " + _against(
            pair_shares(conditioned), "the conditioned policy", "at matched KL (the policy read off its "
            "strength curve at MAVIS's KL)"))
    elif asked is not None:
        lines.append("**Verdict 4: does MAVIS beat one policy conditioned on λ?** Not measured: this stack has no "
                     "conditioned policy.")
    return lines


def _against(pairs: list[dict], name: str, how: str) -> str:
    """``how``, MAVIS's front has at least ``name``'s hypervolume on so many pairs, with every share and count."""
    wins = sum(bool(p["matched points"] and p["mavis"] >= p["best hv"]) for p in pairs)  # none compared: no win
    shares = ", ".join(f"{p['x']}–{p['y']} {share(p['mavis'], p['best hv'])} on {p['matched points']} of "
                       f"{p['of']} λ points" for p in pairs)
    published = ", ".join(share(p["mavis unmatched"], p["best unmatched"]) for p in pairs)
    return (f"{how[0].upper()}{how[1:]}, MAVIS's front has at least {name}'s hypervolume on {wins} of "
            f"{len(pairs)} pairs (MAVIS ÷ {name}: {shares}; as published: {published}; section 2).")


def _budget_lines(facts: dict) -> list[str]:
    """Section 2's KL budgets and section 8's mean KLs."""
    lines = []
    budgets, refs = facts.get("budgets"), facts.get("references")
    if budgets is not None and len(budgets):
        per = [f"β = {b:g} (KL {t['MAVIS mean KL'].mean():.1f}): {level_pairs(t)} of "
               f"{len(t)}, " + "/".join(t["MAVIS ÷ best"]) for b, t in budgets.groupby("β", sort=True)]
        lines.append("- At each KL budget (MAVIS's β, its mean KL), pairs where MAVIS is at least level at matched KL "
                     "(a pair with no λ point compared is not) and its shares of the best baseline: "
                     + "; ".join(per) + " (section 2).")
    if refs is not None and len(refs):
        lines.append("- Mean KL on the references' λ points: "
                     + ", ".join(f"{m} {v:.1f}" for m, v in refs.set_index("method")["mean KL"].items())
                     + " (section 8).")
    return lines


def _steering_lines(facts: dict) -> list[str]:
    """How many (method, objective) cells the weight steers well (section 1), and why the others fall short."""
    rho = facts.get("pairs_spearman")
    if rho is None or not len(rho):
        return []
    r = rho.set_index(["method", "objective"]).spearman
    low = [f"{METHOD_NAMES.get(m, m)}'s {o} {rho_text(v)}" for (m, o), v in r.items() if not v >= STEERS_WELL]
    lines = [f"- The weight steers its reward (Spearman ρ ≥ {STEERS_WELL:g} between an objective's weight "
             f"and its mean reward over section 1's λ points) for {int((r >= STEERS_WELL).sum())} of "
             f"{len(r)} (method, objective) cells" + (f"; below: {', '.join(low)}." if low else ".")]
    pairs, within = facts.get("pairs"), facts.get("pairs_within")
    if low and pairs is not None and within is not None:
        lacking = [(m, o) for (m, o), v in r.items() if not v >= STEERS_WELL]
        lines.append("- Why those fall short (section 1): pooled over both pairs, an objective's reward at weight "
                     "0 moves with which other objective is steered; "
                     + "; ".join(steering_diagnosis(pairs, within, m, o) for m, o in lacking) + ".")
    return lines


def _value_model_lines(facts: dict) -> list[str]:
    """The next iteration at matched KL (section 9) and the value models' agreement on held-out trees (7)."""
    lines = []
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
    return lines


def verdicts(facts: dict) -> list[str]:
    """The page's first lines: the verdicts, one line each with their numbers (does MAVIS's front lie beyond MOD's
    and RSoup's at matched KL; how close does it come to the exact-preference policies; does it beat just asking,
    and one policy conditioned on λ), then what they rest on (KL budgets, how well the weights steer, the value
    models' accuracy)."""
    t = facts.get("matched")
    if t is None:
        return []
    head = [*_headline_verdicts(facts, pair_shares(t)), *_baseline_verdicts(facts)]
    lines = [*_budget_lines(facts), *_steering_lines(facts), *_value_model_lines(facts)]
    return [*(part for line in head for part in (line, "")), *(["What they rest on:", "", *lines, ""] if lines else [])]


def _steering_claim(rho) -> str:
    r = rho.set_index(["method", "objective"]).spearman
    weakest = r.idxmin()
    weak = [f"{m}'s {o} ({rho_text(v)})" for (m, o), v in r.items() if not v >= STEERS]
    headline = "The weights steer every method." if not weak else "The weights do not steer everything."
    return (f"- **{headline}** Spearman's ρ between an objective's weight and its reward is {r.min():.2f}–"
            f"{r.max():.2f} over all methods and objectives (section 1); the weakest is {weakest[0]}'s "
            f"{weakest[1]} ({r.min():.2f})" + (f"; below {STEERS:g}: {', '.join(weak)}." if weak else "."))


def _front_claim(volumes, kl, objectives: list[str]) -> str:
    pairs = list(itertools.combinations(objectives, 2))
    top = [volumes[(volumes.x == x) & (volumes.y == y)].set_index("method").hypervolume for x, y in pairs]
    mavis_top = sum(v.idxmax() == "mavis" for v in top)
    verdict = ("does" if mavis_top == len(pairs) else "does not") + " dominate here"
    line = (f"- **MAVIS's front {verdict}.** It has the largest hypervolume on {mavis_top} of {len(pairs)} "
            "pairs; the paper reports MAVIS ahead of MOD and RSoup. ")
    if {"mavis", "mod"} <= set(kl.index):
        ratio = kl.loc["mod", "mean_kl"] / kl.loc["mavis", "mean_kl"]
        where = ("further from the base than MAVIS" if ratio > 1.2 else
                 "closer to the base than MAVIS" if ratio < 1 / 1.2 else "about as far from the base as MAVIS")
        line += (f"MOD's replies are {where}: its mean KL is {ratio:.1f}× MAVIS's "
                 f"({kl.loc['mod', 'mean_kl']:.1f} against {kl.loc['mavis', 'mean_kl']:.1f}).")
    return line


def _policy_claim(beta, objectives: list[str]) -> list[str]:
    """Single-objective MAVIS against the objective's policy, at the policy's KL (section 4)."""
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
    if not matched and not unmatched:
        return []
    return ["- **Single objective at matched KL** (section 4): "
            + ("; ".join(matched) if matched else "no objective")
            + (". Not comparable, because the policy's KL lies outside the range MAVIS's β curve covers: "
               + ", ".join(unmatched)
               if unmatched else "") + "."]


def _gain_claim(beta, objectives: list[str]) -> str:
    """Single-objective MAVIS's best reward at no more KL than the base's own sampling (section 4)."""
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
    return (f"- **Single-objective MAVIS, best β at no more KL than the base's {base.kl:.1f}:** "
            + "; ".join(gains) + ". "
            + ("With one small value model and no fine-tuning, it raises every reward by more than two standard "
               "errors without moving further from the base." if delivered else
               "It does not raise every reward by more than two standard errors at no more KL than the base."))


def summary(facts: dict, objectives: list[str]) -> list[str]:
    """The closing section: the paper's claims checked against this page's tables (numbers computed here)."""
    beta = facts["beta"]
    return ["## 10. What this says", "", _steering_claim(facts["pairs_spearman"]),
            _front_claim(facts["pairs_volumes"], facts["pairs_kl"], objectives), *_policy_claim(beta, objectives),
            _gain_claim(beta, objectives), ""]
