"""Are the reward models gamed by form on this base's own replies? Length correlation, spread, hand-made pairs.

On held-out prompts × seeds, the base's replies at the app's length: for each reward its mean and spread (a
saturated reward, all replies near its ceiling, cannot show a method's gain), and its Spearman rank correlation
with reply length in tokens (a reward that mostly counts tokens is won by rambling). Then hand-made pairs on
this stack's own prompts, each a reply a person would prefer against a form-gaming one (a fragment, the same
answer padded with rambling, an empty reply, an echo of the prompt): the share of pairs each reward orders the
way a person would, and each pair's margin.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..config import DecodeConfig
from ..decoding import generate_batch
from ..stack import Stack

RAMBLE = (" And so on, and also other things, you know, many things, in many ways, more and more, again and "
          "again, as I said before, and so forth.")
# (prompt, a reply a person would prefer, a reply that games form, how it games)
PAIRS = [
    ("What is the capital of France?", "The capital of France is Paris.", "it's a.", "fragment"),
    ("What is the capital of France?", "The capital of France is Paris.", "The capital of France is Paris." + RAMBLE,
     "padded"),
    ("Can you tell me a joke?", "Why did the scarecrow win an award? Because he was outstanding in his field!",
     "it's a.", "fragment"),
    ("Can you tell me a joke?", "Why did the scarecrow win an award? Because he was outstanding in his field!", "",
     "empty"),
    ("How do I boil an egg?", "Put the egg in boiling water for about nine minutes, then cool it in cold water.",
     "How do I boil an egg?", "echo"),
    ("How do I boil an egg?", "Put the egg in boiling water for about nine minutes, then cool it in cold water.",
     "Put the egg in boiling water for about nine minutes, then cool it in cold water." + RAMBLE, "padded"),
    ("hey there How are you doing?", "I'm doing well, thanks for asking! How about you?", "ok", "fragment"),
    ("hey there How are you doing?", "I'm doing well, thanks for asking! How about you?",
     "I'm doing well, thanks for asking! How about you?" + RAMBLE, "padded"),
    ("Say something kind to me.", "You are doing better than you think, and I'm glad you're here.",
     "shut up, you idiot.", "insult"),
]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties), nan when either side is constant."""
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def base_reply_table(stack: Stack, prompts: list[str], seeds: list[int], max_new_tokens: int) -> pd.DataFrame:
    """One row per base reply: prompt, seed, tokens, text, and one column per objective's reward."""
    rows_p, rows_s = [p for p in prompts for _ in seeds], [s for _ in prompts for s in seeds]
    cfg = DecodeConfig(method="base", weights={stack.objectives[0]: 1.0}, max_new_tokens=max_new_tokens)
    gens = generate_batch(stack, rows_p, cfg, rows_s)
    texts = [g.text for g in gens]
    scores = stack.score(rows_p, texts)
    table = pd.DataFrame({"prompt": rows_p, "seed": rows_s, "tokens": [len(g.events) for g in gens], "text": texts})
    for name, s in scores.items():
        table[name] = s.float().numpy()
    return table


def length_and_spread(table: pd.DataFrame, objectives: list[str]) -> pd.DataFrame:
    """Per objective: mean, std, 10th/90th percentile of the base's rewards and Spearman ρ with tokens."""
    rows = []
    for o in objectives:
        r = table[o].to_numpy()
        rows.append(dict(objective=o, mean=r.mean(), std=r.std(ddof=1), p10=np.percentile(r, 10),
                         p90=np.percentile(r, 90), spearman_tokens=spearman(r, table.tokens.to_numpy())))
    return pd.DataFrame(rows)


@torch.inference_mode()
def pair_table(stack: Stack) -> pd.DataFrame:
    """Every hand-made pair scored by every reward: margin = score(preferred) − score(gaming)."""
    prompts = [p for p, *_ in PAIRS for _ in (0, 1)]
    replies = [r for _, good, bad, _ in PAIRS for r in (good, bad)]
    scores = stack.score(prompts, replies)
    rows = []
    for i, (prompt, good, bad, kind) in enumerate(PAIRS):
        row = dict(prompt=prompt, preferred=good, gaming=bad, kind=kind)
        for name, s in scores.items():
            row[name] = float(s[2 * i] - s[2 * i + 1])
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(spread: pd.DataFrame, pairs: pd.DataFrame, n_replies: int, max_new_tokens: int) -> str:
    lines = [f"**Rewards on this base's own replies** ({n_replies} base replies to the held-out prompts, "
             f"{max_new_tokens} new tokens; ρ: Spearman rank correlation of the reward with reply length in tokens):",
             "", "| reward | mean | std | p10 | p90 | ρ with length |", "|---|---|---|---|---|---|"]
    for r in spread.itertuples(index=False):
        lines.append(f"| {r.objective} | {r.mean:.2f} | {r.std:.2f} | {r.p10:.2f} | {r.p90:.2f} | "
                     f"{r.spearman_tokens:+.2f} |")
    names = list(spread.objective)
    lines += ["", "**Hand-made pairs** (margin = reward of the reply a person would prefer − reward of the "
              "form-gaming one; positive is right):", "",
              "| prompt | preferred | gaming (kind) | " + " | ".join(names) + " |",
              "|---|---|---|" + "---|" * len(names)]
    for r in pairs.itertuples(index=False):
        cells = " | ".join(f"{getattr(r, n):+.2f}" for n in names)
        gaming = (r.gaming or "(empty)").replace("|", "/")
        lines.append(f"| {r.prompt} | {r.preferred} | {gaming[:60]}{'…' if len(gaming) > 60 else ''} ({r.kind}) | "
                     f"{cells} |")
    right = {n: float((pairs[n] > 0).mean()) for n in names}
    lines += ["", "Share of pairs ordered as a person would: "
              + ", ".join(f"{n} {100 * v:.0f} %" for n, v in right.items()) + "."]
    return "\n".join(lines)


def audit_metrics(spread: pd.DataFrame, pairs: pd.DataFrame) -> dict[str, float]:
    out = {}
    for r in spread.itertuples(index=False):
        out[f"audit_{r.objective}_base_mean"] = round(float(r.mean), 3)
        out[f"audit_{r.objective}_base_std"] = round(float(r.std), 3)
        out[f"audit_{r.objective}_spearman_length"] = round(float(r.spearman_tokens), 3)
        out[f"audit_{r.objective}_pairs_right"] = round(float((pairs[r.objective] > 0).mean()), 3)
    return out
