"""What the app writes: the Markdown of stats lines, sample details, sweep progress and trial headers, from
mavis_core's results. Pure functions of their arguments."""

from __future__ import annotations

import re

from mavis_core.engine import Reply
from mavis_core.plots import same_point
from mavis_core.sweep_plan import SweepPlan, _count

# A running column's stats line (see `stats`), which Stop turns into a stopped one.
GENERATING = re.compile(r"^\*(?P<search>[^:*]+): (?:generating|done, scoring)… (?P<tokens>\d+) tokens "
                        r"· seed (?P<seed>\d+)\*$")


def literal(text: str) -> str:
    """``text`` for a Markdown component to show as it is: every ASCII punctuation mark backslash-escaped (a
    reply's backslash or "*" would otherwise be read as Markdown).

    >>> print(literal("2*3 is 6_"))
    2\\*3 is 6\\_
    """
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", text)


def stats(reply: Reply | None, objectives: list[str], seed: int) -> str:
    """A column's line under its reply: the search and seed that made it, then its scores and KL."""
    if reply is None:
        return "*not selected*"
    if reply.scores is None:
        return (f"*{reply.search}: {'done, scoring' if reply.done else 'generating'}… {len(reply.events)} tokens "
                f"· seed {seed}*")
    cells = " · ".join(f"{k} **{reply.scores[k]:+.3f}**" for k in objectives)
    return f"*{reply.search}* · seed {seed} · {cells} · KL **{reply.kl:.2f}** · {len(reply.events)} tokens"


def running_tokens(line: object) -> int | None:
    """How many tokens a running column's stats line counts; None for any other line.

    >>> running_tokens("*sample: generating… 13 tokens · seed 7*"), running_tokens("*not selected*")
    (13, None)
    """
    match = GENERATING.match(line) if isinstance(line, str) else None
    return int(match["tokens"]) if match else None


def stopped_after(tokens: int) -> str:
    return f"stopped after {_count(tokens, 'token')}"


def stopped(line: object) -> object:
    """A column's stats line once Stop was pressed: a running column says it stopped and after how many tokens
    (its text stays as it was); a finished or empty column's line is returned as it is.

    >>> stopped("*sample: generating… 13 tokens · seed 7*")
    '*sample: stopped after 13 tokens · seed 7*'
    """
    match = GENERATING.match(line) if isinstance(line, str) else None
    if not match:
        return line
    return f"*{match['search']}: {stopped_after(int(match['tokens']))} · seed {match['seed']}*"


def same_by_construction(methods: list[str], lam: dict[str, float], strength: float = 1.0) -> str:
    """A note for the columns when MOD and RSoup are ticked under one objective's weight alone: both then decode
    that objective's own policy (softmax of one log π; θ_0 + B_m A_m), so their replies are the same.

    >>> same_by_construction(["mod", "rsoup"], {"helpful": 0.0, "humor": 1.0})[:40]
    '*MOD and RSoup are the same here by cons'
    """
    alone = [k for k, v in lam.items() if v == 1.0]
    if not ({"mod", "rsoup"} <= set(methods) and alone and strength == 1.0):
        return ""
    return (f"*MOD and RSoup are the same here by construction: with {alone[0]} weighted alone, both decode "
            f"{alone[0]}'s own policy.*")


def lambda_line(lam: dict[str, float]) -> str:
    """The normalised λ under the sliders."""
    if not any(lam.values()):
        return "**λ = all zero** — raise at least one slider"
    return "**normalised λ:** " + " · ".join(f"{k} {v:.2f}" for k, v in lam.items())


def sample_choices(history: list[dict]) -> list[tuple[str, int]]:
    """The "Show sample" list: newest first."""
    return [(f"#{s['id']} {s['method']} ({s['source']}, {s.get('search', 'sample')}) λ "
             + ", ".join(f"{v:.2f}" for v in s["weights"].values()), s["id"]) for s in reversed(history)]


def next_id(history: list[dict]) -> int:
    return history[-1]["id"] + 1 if history else 1


def _shared(sample: dict, history: list[dict]) -> str:
    others = same_point(sample, history)
    if not others:
        return ""
    return ("\n\n*Same point on the chart:* " + ", ".join(f"#{o['id']} {o['method']}" for o in others[:12])
            + (" …" if len(others) > 12 else "") + " (pick them in the list)")


def sample_details(s: dict, history: list[dict]) -> str:
    """A chart sample's text, weights and scores (± standard errors for a sweep mean), and which other samples
    share its point on the chart (a click reaches only the top one of them)."""
    se = s.get("se")
    scores = " · ".join(f"{k} **{v:+.3f}**" + (f" ± {se[k]:.3f}" if se else "") for k, v in s["scores"].items())
    if se:
        scores += (f" · mean of {s['n']} replies (prompts × seeds) ± standard error; the reply shown is the "
                   f"first of them")
    weights = " · ".join(f"{k} {v:.2f}" for k, v in s["weights"].items())
    quoted = "\n".join("> " + literal(line) for line in (s["text"] or "(empty reply)").splitlines())
    return (f"**#{s['id']} {s['method']}** ({s['source']}, {s.get('search', 'sample')}) · λ: {weights} · "
            f"β {s['beta']} · seed {s['seed']}"
            f"\n\n{scores} · KL **{s['kl']:.2f}**{_shared(s, history)}\n\n**Prompt:** {s['prompt']}\n\n{quoted}")


def sweep_progress(plan: SweepPlan, done: int, where: tuple[int, int, int]) -> str:
    """The status beside the chart while a sweep runs: a bar, the round and step it is on, replies so far."""
    r, i, n = where
    share = min(1.0, (r + max(i, 0) / n) / len(plan.rounds))
    bar = "▰" * round(share * 20) + "▱" * (20 - round(share * 20))
    seed = plan.rounds[r][1]
    step = f"{'token' if plan.settings.search == 'sample' else 'point'} {max(i, 0) + 1} of {n}"
    rounds = (f" · round {r + 1} of {len(plan.rounds)} (prompt {r // plan.seeds + 1}, seed {seed})"
              if len(plan.rounds) > 1 else "")
    return (f"**Sweeping… {share:.0%}** `{bar}`{rounds} · {step} · {done} of "
            f"{len(plan.keys) * len(plan.rounds)} replies in\n\n{plan.line}")


def sweep_done(plan: SweepPlan, replies: int, seconds: float) -> str:
    """The status beside the chart once a sweep is done."""
    per = "" if len(plan.rounds) == 1 else (f" × {_count(plan.prompts, 'prompt')} × "
                                            f"{_count(plan.seeds, 'seed')}, drawn at their means ± se")
    how = "" if plan.settings.search == "sample" else f", each by {plan.settings.search_label}"
    return f"Swept {replies} replies ({len(plan.grid)} λ points{per}){how} in {seconds:.1f} s.\n\n{plan.line}"


def sweep_stopped(status: object) -> object:
    """The sweep status once Stop was pressed: where a running sweep stopped; anything else as it is."""
    if not (isinstance(status, str) and status.startswith(("**Sweeping", "**Sweep queued"))):
        return None
    return status.replace("**Sweeping…", "**Stopped at", 1).replace("**Sweep queued…**", "**Stopped.**", 1)


def trial_header(prompt: str, lam: dict[str, float], task: str) -> str:
    """A study trial's or arena pair's header: the prompt, its weights, what the weights mean, and what to do."""
    weights = " · ".join(f"{k} {v:.2f}" for k, v in lam.items())
    return (f"**Prompt:** {prompt}\n\n**Weights:** {weights} — how much each objective counts in this trial "
            f"(they add up to 1; 0 means it does not count). {task}")
