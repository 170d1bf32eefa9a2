"""Where prompts come from: one home, one rule.

- **Held-out prompts** (every evaluation: ``sweep``, ``results``, ``value-report``, the reward audit, the
  evaluation stages of ``train-values`` / ``train-policies``): ``eval_prompts.json`` beside the stack file when
  it exists (the embedded builds write 50 there), else the stack's own ``prompts``.
- **Examples** (the app's example list): the same held-out prompts, the stack's own ``prompts`` first (a
  stack lists the ones it shows best), so a stack without a ``prompts`` list shows its held-out file.
- **Training prompts**: distinct opening human turns of the chitchat *train* split (held-out prompts come from
  its test split), or a file given on the command line.
"""

from __future__ import annotations

import json
from pathlib import Path

EVAL_PROMPTS_FILE = "eval_prompts.json"


def read_prompts(path: str | Path) -> list[str]:
    """Prompts from a JSON list of strings, or from a text file with one prompt a line; blank ones dropped."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        prompts = json.loads(text) if path.suffix == ".json" else [line.strip() for line in text.splitlines()]
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"{path} must hold a JSON list of strings (or one prompt a line)")
    return [p for p in prompts if p.strip()]


def heldout_prompts(stack_path: str | Path, stack_prompts: tuple[str, ...] | list[str] = ()) -> list[str]:
    """``eval_prompts.json`` beside the stack file, else the stack's own ``prompts`` (possibly none)."""
    beside = Path(stack_path).parent / EVAL_PROMPTS_FILE
    return read_prompts(beside) if beside.is_file() else list(stack_prompts)


def example_prompts(stack_path: str | Path, stack_prompts: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The app's examples: the stack's own ``prompts``, else its held-out prompts."""
    return list(stack_prompts) or heldout_prompts(stack_path)


def training_prompts(n: int, seed: int) -> list[str]:
    """The first ``n`` distinct opening human turns (4-30 words) of the chitchat *train* split."""
    from .training import data  # chitchat-dataset is only needed for the embedded stacks' default prompts

    seen, out = set(), []
    for turns in data.load_conversations("train", seed):
        text = turns[0]
        if data.PROMPT_MIN_WORDS <= len(text.split()) <= data.PROMPT_MAX_WORDS and text.lower() not in seen:
            seen.add(text.lower())
            out.append(text)
    return out[:n]
