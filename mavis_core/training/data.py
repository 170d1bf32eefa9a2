"""Training data of the embedded stacks: the chitchat corpus, and the default stack's held-out prompt mix.

The chitchat corpus lives in `mavis_core.chitchat` (a leaf of the core, so that `mavis_core.prompts` can read
its openers without importing training code); its names are kept here for the training steps.
`build_prompt_data` writes the default stack's ``eval_prompts.json``: harmful, benign and chitchat prompts from
their test splits, each tagged with its kind (and risk area), recorded in the manifest as ``data``.
"""

from __future__ import annotations

import shlex
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .. import prompts
from ..chitchat import (
    DATA_SOURCE,
    HELD_OUT_FRACTION,
    PROMPT_MAX_WORDS,
    PROMPT_MIN_WORDS,
    SPLITS,
    dialogue_texts,
    eval_prompts,
    load_conversations,
)
from .manifest import record_artifact

__all__ = ["DATA_SOURCE", "HELD_OUT_FRACTION", "PROMPT_MAX_WORDS", "PROMPT_MIN_WORDS", "SPLITS", "dialogue_texts",
           "eval_prompts", "load_conversations", "PromptDataConfig", "build_prompt_data"]


@dataclass(frozen=True)
class PromptDataConfig:
    """The held-out prompt mix of a stack folder.

    Args:
        out_dir: the assets folder (holds manifest.json); ``eval_prompts.json`` is written there.
        seed: seeds the split of harmful/benign prompts, the chitchat split and the draw within each.
        counts: prompts of each kind (`mavis_core.prompts.EVAL_MIX` by default).
    """

    out_dir: Path
    seed: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict(prompts.EVAL_MIX))

    def __post_init__(self) -> None:
        if set(self.counts) - set(prompts.KINDS) or any(n < 0 for n in self.counts.values()):
            raise ValueError(f"counts must map kinds among {prompts.KINDS} to numbers >= 0, got {self.counts}")


def split_sizes(seed: int) -> dict[str, int]:
    """Prompts per kind and split, e.g. ``harmful_train``: what the model card reports."""
    return {f"{kind}_{split}": len(prompts.prompt_set(kind, split, seed))
            for kind in prompts.KINDS for split in prompts.SPLIT_FRACTIONS}


def build_prompt_data(cfg: PromptDataConfig) -> Path:
    """Write ``eval_prompts.json`` (tagged, interleaved by kind) and record it as the ``data`` artifact."""
    out = Path(cfg.out_dir)
    held_out = prompts.eval_prompt_set(cfg.seed, cfg.counts)
    path = out / prompts.EVAL_PROMPTS_FILE
    out.mkdir(parents=True, exist_ok=True)
    prompts.write_prompt_set(path, held_out)
    areas = Counter(p.risk_area for p in held_out if p.kind == "harmful")
    metrics = split_sizes(cfg.seed) | {f"heldout_{k}": n for k, n in Counter(p.kind for p in held_out).items()}
    card = (
        "Prompts come in three kinds (`mavis_core.prompts`), tagged in `eval_prompts.json` and wherever results are "
        f"averaged. **harmful**: {prompts.HARMFUL_SOURCES}; risk area = the Do-Not-Answer file, `harmbench` or "
        "`mild` (dishonest, unfair or unkind requests written for this project, the kind the app's examples show). "
        "**benign**: `mavis_core/data/benign_prompts.txt`, written for this project (MIT), some only looking risky "
        "(\"How do I kill a Python process?\"). The app's example requests are in neither file, so the demo shows "
        "requests no model trained on. **chitchat**: opening human turns of chitchat-dataset (MIT), split "
        "by conversation 90/5/5. Harmful and benign prompts are split 80/10/10 by a seeded hash of their text. "
        "Training steps draw from the train splits; `eval_prompts.json` from the test splits, interleaved so any "
        "first-N slice is mixed. Held-out harmful prompts per risk area: "
        + ", ".join(f"{a} {n}" for a, n in sorted(areas.items())) + "."
    )
    command = shlex.join(["python", "-m", "mavis_core", "build", "--steps", "data", "--out", str(out),
                          "--seed", str(cfg.seed)])
    record_artifact(out, "data", [path], source=f"{prompts.HARMFUL_SOURCES}; mavis_core/data/benign_prompts.txt; "
                    f"{DATA_SOURCE['name']}", licence=prompts.PROMPTS_LICENCE,
                    command=command, seed=cfg.seed, metrics=metrics, card=card)
    return path
