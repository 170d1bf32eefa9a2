"""The HH dialogue format both stacks use: ``\\n\\nHuman: …\\n\\nAssistant: …``."""

from __future__ import annotations

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
# A reply ends where the model starts a new dialogue turn.
STOP_STRINGS = (HUMAN, ASSISTANT)


def format_prompt(prompt: str) -> str:
    """Turn a user message (or a whole dialogue) into the context the assistant replies to.

    >>> format_prompt("hi there")
    '\\n\\nHuman: hi there\\n\\nAssistant:'
    """
    text = prompt.rstrip()
    if not text.lstrip().startswith(HUMAN.strip()):
        text = f"{HUMAN} {text.strip()}"
    elif not text.startswith("\n\n"):
        text = "\n\n" + text.lstrip()
    if not text.endswith(ASSISTANT):
        text += ASSISTANT
    return text


def format_dialogue(turns: list[str]) -> str:
    """Alternate Human / Assistant turns, starting with the human: the training-corpus format."""
    speakers = (HUMAN, ASSISTANT)
    return "".join(f"{speakers[i % 2]} {turn.strip()}" for i, turn in enumerate(turns))


def cut_at_stop(text: str) -> tuple[str, bool]:
    """Cut ``text`` at the first stop string; return (kept text, whether a stop string was found)."""
    cuts = [text.find(s) for s in STOP_STRINGS if s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


def stop_prefix_len(text: str) -> int:
    """Length of the longest tail of ``text`` that could still grow into a stop string.

    Streaming holds those characters back so a half-written ``\\n\\nHum`` never reaches the user.
    """
    for n in range(min(len(text), max(map(len, STOP_STRINGS)) - 1), 0, -1):
        tail = text[-n:]
        if any(s.startswith(tail) for s in STOP_STRINGS):
            return n
    return 0
