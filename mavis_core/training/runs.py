"""What the commands' config dataclasses share: a training run's stack, prompts, folders, seed and quick size
(`TrainRunConfig`: ``train-values``, ``train-policies``), and the rollout trees' options (`TreeOptions`:
``train-values``, ``value-agreement``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..prompts import heldout_prompts, read_prompts, training_prompts
from ..stack import Stack
from .trees import TreeConfig

QUICK_PROMPTS, QUICK_EVAL_PROMPTS = 6, 3  # quick: a smoke test in seconds


@dataclass(frozen=True)
class TrainRunConfig:
    """Args:
    stack: stack TOML naming the base, tokenizer and reward models.
    work: resumable scratch folder. out: where the trained models go (None: a folder beside the stack).
    prompts / eval_prompts: prompt files (None: chitchat train-split openers / the stack's held-out prompts), of
        which the first ``num_prompts`` / ``num_eval_prompts`` are used.
    out_dtype: dtype of the saved models. seed: seeds sampling and training. quick: tiny sizes, a smoke test.
    """

    stack: Path = Path("assets/stack.toml")
    work: Path = Path("build")
    out: Path | None = None
    prompts: Path | None = None
    num_prompts: int = 128
    eval_prompts: Path | None = None
    num_eval_prompts: int = 32
    out_dtype: str = "float16"
    seed: int = 0
    quick: bool = False

    def prompt_sets(self, stack: Stack) -> tuple[list[str], list[str]]:
        """The training and the held-out prompts of this run, cut to their sizes."""
        n, n_eval = (QUICK_PROMPTS, QUICK_EVAL_PROMPTS) if self.quick else (self.num_prompts, self.num_eval_prompts)
        prompts = read_prompts(self.prompts) if self.prompts else training_prompts(n, self.seed)
        eval_prompts = (read_prompts(self.eval_prompts) if self.eval_prompts
                        else heldout_prompts(self.stack, stack.spec.prompts))
        if not prompts or not eval_prompts:
            raise ValueError("no training or evaluation prompts: pass --prompts / --eval-prompts, or list prompts "
                             "in the stack file")
        return prompts[:n], eval_prompts[:n_eval]


_TREE = TreeConfig()


@dataclass(frozen=True)
class TreeOptions:
    """The rollout trees' options of a command, as flat fields (its command-line options); `trees` makes the
    `TreeConfig`."""

    root_children: int = _TREE.root_children
    inner_children: int = _TREE.inner_children
    levels: int = _TREE.levels
    max_new_tokens: int = _TREE.max_new_tokens
    prompts_per_batch: int = _TREE.prompts_per_batch
    chunk_range: tuple[int, int] | None = None
    refusal_children: int = _TREE.refusal_children
    seed: int = _TREE.seed

    def __post_init__(self) -> None:
        if self.chunk_range is not None and len(self.chunk_range) != 2:
            raise ValueError(f"chunk_range (--chunk-range) must be two token counts like 4,12; got {self.chunk_range}")

    def trees(self) -> TreeConfig:
        return TreeConfig(root_children=self.root_children, inner_children=self.inner_children, levels=self.levels,
                          prompts_per_batch=self.prompts_per_batch, chunk_range=self.chunk_range,
                          refusal_children=self.refusal_children,
                          max_new_tokens=self.max_new_tokens, seed=self.seed)
