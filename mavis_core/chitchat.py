"""The embedded stack's dialogue corpus: chitchat-dataset conversations, split by conversation.

A leaf of the core (it imports only `mavis_core.dialogue`): `mavis_core.prompts` takes its chitchat openers from
here, and the training steps their conversations.

A conversation is a list of turns (strings), alternating speakers; the first turn is read as the
human's and the reply as the assistant's, which gives the HH format both stacks share::

    >>> format_dialogue(["hi, how are you?", "good thanks, you?"])
    '\\n\\nHuman: hi, how are you?\\n\\nAssistant: good thanks, you?'
"""

from __future__ import annotations

import random
import re
from functools import lru_cache

import chitchat_dataset

from .dialogue import format_dialogue

DATA_SOURCE = {"name": "chitchat-dataset 0.9.0 (PyPI)", "licence": "MIT"}
SPLITS = ("train", "validation", "test")
# Fractions of conversations held out; the rest is train.
HELD_OUT_FRACTION = 0.05
# Opening turns used as eval prompts must say something: "hi" tells a reward model nothing.
PROMPT_MIN_WORDS, PROMPT_MAX_WORDS = 4, 30
# Openers about the chat platform itself ("anyone there?") are not prompts a user of the demo would write.
_META_CHAT = re.compile(
    r"anyone|anybody|someone|somebody|you there|still here|is it working|glitch|chat score|chit ?chat"
    r"|hello\?",
    re.IGNORECASE,
)
# "how are you?" openers are a third of the questions; a few are enough to show small talk.
_HOW_ARE_YOU = re.compile(r"\bhow('?s| is| are| have)\b", re.IGNORECASE)
MAX_HOW_ARE_YOU = 3
_SPACE = re.compile(r"\s+")
_NOT_LETTER = re.compile(r"[^a-z]+")


def _turn_text(messages: list[dict]) -> str:
    """One turn = the consecutive messages of one sender, joined, whitespace collapsed."""
    return _SPACE.sub(" ", " ".join(m["text"] for m in messages)).strip()


@lru_cache(maxsize=1)
def _all_conversations() -> dict[str, tuple[str, ...]]:
    """Conversation id -> turns, for every conversation with at least one non-empty turn."""
    out = {}
    for conv_id, conv in chitchat_dataset.Dataset().items():
        turns = tuple(t for t in (_turn_text(m) for m in conv["messages"]) if t)
        if turns:
            out[conv_id] = turns
    return out


@lru_cache(maxsize=4)
def _split_ids(seed: int) -> dict[str, tuple[str, ...]]:
    """Seeded 90/5/5 split of conversation ids; sorting first makes it independent of dict order."""
    ids = sorted(_all_conversations())
    random.Random(seed).shuffle(ids)
    n_held = round(HELD_OUT_FRACTION * len(ids))
    return {
        "validation": tuple(ids[:n_held]),
        "test": tuple(ids[n_held : 2 * n_held]),
        "train": tuple(ids[2 * n_held :]),
    }


def load_conversations(split: str, seed: int = 0) -> list[list[str]]:
    """Conversations of one split, each a list of turn strings (speakers alternate, human first).

    Args:
        split: "train" (90% of conversations), "validation" (5%) or "test" (5%).
        seed: seeds the shuffle of conversation ids; the same seed gives the same split.
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not known; allowed: {', '.join(SPLITS)}")
    convs = _all_conversations()
    return [list(convs[i]) for i in _split_ids(seed)[split]]


def dialogue_texts(split: str, seed: int = 0) -> list[str]:
    """Conversations of one split in the HH format (``\\n\\nHuman: …\\n\\nAssistant: …``)."""
    return [format_dialogue(turns) for turns in load_conversations(split, seed)]


def _is_eval_prompt(text: str) -> bool:
    return PROMPT_MIN_WORDS <= len(text.split()) <= PROMPT_MAX_WORDS and not _META_CHAT.search(text)


def openers(split: str, seed: int = 0) -> list[str]:
    """Distinct opening human turns of one split that make prompts (4-30 words, not about the chat platform)."""
    seen, out = set(), []
    for turns in load_conversations(split, seed):
        key = _NOT_LETTER.sub("", turns[0].lower())
        if _is_eval_prompt(turns[0]) and key not in seen:
            seen.add(key)
            out.append(turns[0])
    return out


def eval_prompts(n: int = 50, seed: int = 0) -> list[str]:
    """Held-out prompts: distinct opening human turns of test conversations.

    Kept: 4-30 words, not about the chat platform itself. Order: seeded shuffle, then questions first
    (a question gives a reward model more to judge), so any first-n slice is varied and stable.
    """
    seen, prompts, small_talk = set(), [], 0
    for turns in load_conversations("test", seed):
        key = _NOT_LETTER.sub("", turns[0].lower())
        if not _is_eval_prompt(turns[0]) or key in seen:
            continue
        is_small_talk = bool(_HOW_ARE_YOU.search(turns[0]))
        if is_small_talk and small_talk >= MAX_HOW_ARE_YOU:
            continue
        small_talk += is_small_talk
        seen.add(key)
        prompts.append(turns[0])
    if n > len(prompts):
        raise ValueError(f"asked for {n} eval prompts; the test split has {len(prompts)}")
    random.Random(seed).shuffle(prompts)
    prompts.sort(key=lambda p: "?" not in p)  # stable: keeps the shuffled order within each group
    return prompts[:n]
