"""The base's own replies to prompts, free or forced to open with a refusal: labels for the reward heads and
pairs for the reward audit.

The default base (SmolLM2-135M-Instruct) never refuses on its own, even when its system prompt tells it to,
but once a reply starts "I'm sorry, but" it goes on with a refusal in its own words. So a *free* reply is
sampled from the chat-formatted prompt as the app renders it, and a *forced* one from the same context with
one of `REFUSAL_OPENERS` appended (the opener stays part of the reply). Sampling is plain ancestral sampling
(transformers' ``generate``, top-k as the app's default), batched, one seed per batch, at most
``max_new_tokens`` tokens. Every batch is cached as JSON under ``work_dir``: a rerun resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..config import require_positive
from ..dialogue import PromptFormat
from ..prompts import Prompt, mixed_prompts
from ..sources import fetch
from ..stack import _contiguous_input, pick_device, pick_dtype
from ..stack_file import read_stack_spec

# Openers the base continues into refusals; several, so no reward head can key on one exact phrase.
REFUSAL_OPENERS = (
    "I'm sorry, but",
    "I'm sorry, but I can't help with that.",
    "I can't help with that.",
    "I'm sorry, I cannot",
    "I won't help with that, but",
    "Sorry, I can't assist with",
)


@dataclass(frozen=True)
class ReplySettings:
    """How base replies are sampled (``max_new_tokens`` counts the continuation, not a forced opener; a forced
    refusal gets ``refusal_tokens``: the opener already settles what it is)."""

    max_new_tokens: int = 32
    refusal_tokens: int = 16
    top_k: int = 50
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        require_positive(self, "max_new_tokens", "refusal_tokens", "top_k", "batch_size")


@dataclass
class Base:
    """The stack's base model, its tokenizer (left padding) and its prompt format."""

    model: torch.nn.Module
    tokenizer: object
    format: PromptFormat


def load_base(stack_path: str | Path, device: torch.device | None = None) -> Base:
    """The base of a stack file alone (no reward or value models), in the stack's dtype on ``device``."""
    spec = read_stack_spec(stack_path)
    device = device or pick_device()
    if spec.base_source is not None:
        fetch(spec.base_source)
    tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer, trust_remote_code=False)
    tokenizer.padding_side = "left"
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(spec.base_model, trust_remote_code=False, use_safetensors=True,
                                                 dtype=pick_dtype(spec.dtype, device))
    model.get_output_embeddings().register_forward_pre_hook(_contiguous_input)  # as the stack does: one matmul
    return Base(model.to(device).eval(), tokenizer, PromptFormat(spec.prompt_format, tokenizer, spec.system_prompt))


@torch.inference_mode()
def _sample_batch(base: Base, prompts: list[str], openers: list[str], cfg: ReplySettings, seed: int) -> list[str]:
    """One batch of replies: opener + the base's continuation, cut where the reply ends."""
    texts = [base.format.render(p) + o for p, o in zip(prompts, openers, strict=True)]
    batch = base.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    batch = batch.to(base.model.device)
    torch.manual_seed(seed)
    out = base.model.generate(**batch, do_sample=True, top_k=cfg.top_k, top_p=1.0, temperature=1.0,
                              max_new_tokens=cfg.max_new_tokens, pad_token_id=base.tokenizer.pad_token_id,
                              eos_token_id=sorted(base.format.stop_ids))  # (b, T + new)
    new = out[:, batch["input_ids"].shape[1]:].tolist()  # (b, new)
    return [(o + base.format.reply_text(ids)).strip() for o, ids in zip(openers, new, strict=True)]


def _key(prompts: list[str], openers: list[str], cfg: ReplySettings) -> str:
    return hashlib.sha256(json.dumps([prompts, openers, repr(cfg)]).encode()).hexdigest()[:16]


def sample_replies(base: Base, prompts: list[str], openers: list[str], cfg: ReplySettings, work_dir: Path,
                   name: str) -> list[str]:
    """One reply per prompt, starting with its opener ("" for a free reply); cached per batch in ``work_dir``.

    Args:
        prompts / openers: parallel lists; a reply is ``opener + continuation``.
        name: the cache files' stem (with a hash of prompts, openers and settings, so stale files never match).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    key, out = _key(prompts, openers, cfg), []
    for i, start in enumerate(tqdm(range(0, len(prompts), cfg.batch_size), desc=f"base replies {name}")):
        path = work_dir / f"{name}-{key}-{i:04d}.json"
        if not path.exists():
            end = start + cfg.batch_size
            replies = _sample_batch(base, prompts[start:end], openers[start:end], cfg, cfg.seed * 100_003 + i)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(replies, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, path)  # an interrupted run leaves no half-written batch
        out += json.loads(path.read_text(encoding="utf-8"))
    return out


def free_and_refusing(base: Base, prompts: list[str], cfg: ReplySettings, work_dir: Path,
                      name: str) -> tuple[list[str], list[str]]:
    """For each prompt a free reply and a forced refusal (openers in turn); returns (free, refusing)."""
    free = sample_replies(base, prompts, [""] * len(prompts), cfg, work_dir, f"{name}-free")
    openers = [REFUSAL_OPENERS[i % len(REFUSAL_OPENERS)] for i in range(len(prompts))]
    short = replace(cfg, max_new_tokens=cfg.refusal_tokens)
    return free, sample_replies(base, prompts, openers, short, work_dir, f"{name}-refusing")


# Prompts whose base replies label the helpful and harmless heads: a few hundred, spread over risk areas, so
# that sampling them stays a CPU job of minutes (the audit's held-out replies come on top).
LABEL_COUNTS = {"train": {"harmful": 256, "benign": 128}, "validation": {"harmful": 48, "benign": 32}}


def label_prompts(split: str, seed: int, counts: dict[str, dict[str, int]] | None = None) -> list[Prompt]:
    """The harmful and benign prompts of ``split`` whose base replies become reward labels (`LABEL_COUNTS`)."""
    return mixed_prompts((counts or LABEL_COUNTS)[split], split, seed)
