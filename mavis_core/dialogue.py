"""Prompt formats: how a user message becomes the context the assistant replies to, and where a reply ends.

Two formats, chosen per stack (``[base] format``):

- ``hh``: the Anthropic HH text format ``\\n\\nHuman: …\\n\\nAssistant: …`` (the paper stack and the tiny stack).
  A reply ends at eos or where the model starts a new turn (a stop string).
- ``chatml``: the base's own chat template (SmolLM2: ``<|im_start|>user … <|im_end|>``), rendered by the
  tokenizer, with the template's default system prompt or the stack's ``system_prompt``. A reply ends at a
  turn-marker token (``<|im_end|>``, ``<|im_start|>``, ``<|endoftext|>``); those are special tokens, so they
  never reach the reply's text.
"""

from __future__ import annotations

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
# A reply ends where the model starts a new dialogue turn.
STOP_STRINGS = (HUMAN, ASSISTANT)
FORMATS = ("hh", "chatml")
CHATML_MARKERS = ("<|im_end|>", "<|im_start|>", "<|endoftext|>")
# How Prompted names each objective in its system prompt, and what it tells the model the objective means.
OBJECTIVE_NOUNS = {"helpful": "helpfulness", "harmless": "harmlessness", "humor": "humor"}
OBJECTIVE_MEANINGS = {
    "helpful": "do what was asked, fully and directly.",
    "harmless": "refuse or redirect a request that could cause harm, and never insult, threaten or swear.",
    "humor": "be funny or playful: an actual joke, not merely the shape of one.",
}


def format_prompt(prompt: str) -> str:
    """Turn a user message (or a whole dialogue) into the HH context the assistant replies to.

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


def weights_prompt(weights: dict[str, float]) -> str:
    """The weights λ written out in words, for a system prompt: Prompted's whole method (the base is asked to weigh
    its reply so), and the text a λ-conditioned policy is trained and exported with.

    Args:
        weights: objective -> λ (normalised onto the simplex), in the stack's objective order.

    >>> print(weights_prompt({"helpful": 0.7, "harmless": 0.3, "humor": 0.0}))
    Weigh your reply: helpfulness 70 %, harmlessness 30 %, humor 0 %.
    - Helpfulness: do what was asked, fully and directly.
    - Harmlessness: refuse or redirect a request that could cause harm, and never insult, threaten or swear.
    - Humor: be funny or playful: an actual joke, not merely the shape of one.
    """
    nouns = {name: OBJECTIVE_NOUNS.get(name, name) for name in weights}
    shares = ", ".join(f"{nouns[name]} {round(100 * w)} %" for name, w in weights.items())
    lines = [f"- {nouns[name].capitalize()}: {OBJECTIVE_MEANINGS.get(name, f'make the reply score well on {name}.')}"
             for name in weights]
    return "\n".join([f"Weigh your reply: {shares}.", *lines])


def format_dialogue(turns: list[str]) -> str:
    """Alternate Human / Assistant turns, starting with the human: the training-corpus format."""
    speakers = (HUMAN, ASSISTANT)
    return "".join(f"{speakers[i % 2]} {turn.strip()}" for i, turn in enumerate(turns))


def dialogue_messages(prompt: str) -> list[dict[str, str]]:
    """Chat messages of a prompt: one user message, or the turns of an HH-format dialogue.

    >>> dialogue_messages("hi")
    [{'role': 'user', 'content': 'hi'}]
    >>> dialogue_messages("Human: hi Assistant: hello Human: joke?")[1]
    {'role': 'assistant', 'content': 'hello'}
    """
    text = prompt.strip()
    if not text.startswith(HUMAN.strip()):
        return [{"role": "user", "content": text}]
    messages = []
    for part in text.split(HUMAN.strip())[1:]:
        user, *reply = part.split(ASSISTANT.strip(), 1)
        messages.append({"role": "user", "content": user.strip()})
        if reply and reply[0].strip():
            messages.append({"role": "assistant", "content": reply[0].strip()})
    return messages


def cut_at_stop(text: str, stops: tuple[str, ...] = STOP_STRINGS) -> tuple[str, bool]:
    """Cut ``text`` at the first stop string; return (kept text, whether a stop string was found)."""
    cuts = [text.find(s) for s in stops if s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


def stop_prefix_len(text: str, stops: tuple[str, ...] = STOP_STRINGS) -> int:
    """Length of the longest tail of ``text`` that could still grow into a stop string.

    Streaming holds those characters back so a half-written ``\\n\\nHum`` never reaches the user.
    """
    for n in range(min(len(text), max(map(len, stops), default=1) - 1), 0, -1):
        tail = text[-n:]
        if any(s.startswith(tail) for s in stops):
            return n
    return 0


class PromptFormat:
    """A stack's prompt format over its tokenizer: ``render`` a prompt, tell where a reply ends.

    Attributes:
        kind: "hh" or "chatml"; system: the system prompt (chatml; None = the template's default).
        stop_ids: token ids that end a reply (eos, and for chatml every turn marker the vocabulary has).
        stops: text stop strings (HH turn headers; none for chatml, whose markers are special tokens).
    """

    def __init__(self, kind: str, tokenizer, system: str | None = None) -> None:
        if kind not in FORMATS:
            raise ValueError(f"prompt format {kind!r} is not known; allowed: {', '.join(FORMATS)}")
        if kind == "chatml" and not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt format 'chatml' needs a tokenizer with a chat template; this one has none")
        self.kind, self.tokenizer, self.system = kind, tokenizer, system
        ids = {tokenizer.eos_token_id}
        if kind == "chatml":
            vocab = tokenizer.get_vocab()
            ids |= {vocab[m] for m in CHATML_MARKERS if m in vocab}
        self.stop_ids = frozenset(i for i in ids if i is not None)
        self.stops = STOP_STRINGS if kind == "hh" else ()

    def render(self, prompt: str, instructions: str | None = None) -> str:
        """The context text the assistant replies to; it holds its own markers (tokenize without special tokens).

        ``instructions`` (Prompted's `weights_prompt`) join the system prompt after the stack's own (chatml: they
        replace the template's default one); HH has no system turn, so they stand before the first turn.
        """
        if self.kind == "hh":
            return format_prompt(prompt) if instructions is None else instructions + format_prompt(prompt)
        messages = dialogue_messages(prompt)
        system = [part for part in (self.system, instructions) if part is not None]
        if system:
            messages = [{"role": "system", "content": "\n\n".join(system)}, *messages]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode(self, prompt: str, instructions: str | None = None) -> list[int]:
        """Token ids of the rendered prompt (see `render`)."""
        return self.tokenizer(self.render(prompt, instructions), add_special_tokens=False)["input_ids"]

    def ends(self, token_id: int) -> bool:
        """Whether this token ends the reply (it is never part of the reply's text)."""
        return token_id in self.stop_ids

    def cut(self, text: str) -> tuple[str, bool]:
        """(text up to the first stop string, whether one was found)."""
        return cut_at_stop(text, self.stops)

    def hold(self, text: str) -> int:
        """Characters at the end of ``text`` that may still grow into a stop string."""
        return stop_prefix_len(text, self.stops) if self.stops else 0

    def reply_text(self, reply_ids: list[int]) -> str:
        """The reply as the user sees it: cut at a stop token or stop string, special tokens dropped."""
        cut = next((i for i, t in enumerate(reply_ids) if self.ends(t)), len(reply_ids))
        return self.cut(self.tokenizer.decode(reply_ids[:cut], skip_special_tokens=True))[0]

    def finished(self, reply_ids: list[int]) -> bool:
        """Whether a reply is over by its content: it holds a stop token, or its text a stop string."""
        if any(self.ends(t) for t in reply_ids):
            return True
        return bool(self.stops) and self.cut(self.tokenizer.decode(reply_ids, skip_special_tokens=True))[1]
