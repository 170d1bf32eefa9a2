"""The embedded stack's base model: a small GPT-2 trained on HH-formatted chitchat dialogues.

Every conversation becomes ``format_dialogue(turns) + <|endoftext|>``; the token streams are packed
end to end and the model is trained on random windows of ``n_positions`` tokens (nanoGPT-style).
Training checkpoints model, optimizer, step and RNG states, so an interrupted run resumes where it
stopped and ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from ..config import require_positive
from ..dialogue import cut_at_stop, format_prompt

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class BaseTrainConfig:
    """Model size and optimisation settings of the base model.

    Args:
        steps: optimizer steps; each sees ``batch_size * n_positions`` tokens.
        lr: peak AdamW learning rate, reached after ``warmup`` steps, cosine-decayed to ``lr / 10``.
        checkpoint_every: steps between checkpoints (and progress-bar validation losses).

    The defaults (3.0 M parameters, 900 x 16 x 256 = 3.7 M tokens, about 1.2 epochs) are sized for a build on
    2 CPU cores (docs/training.md has its time). With compute that scarce a smaller model seeing more tokens is the
    better trade (Hoffmann et al. 2022); fp16 weights plus tokenizer stay well under 9 MB.
    """

    n_embd: int = 192
    n_layer: int = 5
    n_head: int = 4
    n_positions: int = 256
    batch_size: int = 16
    steps: int = 900
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    checkpoint_every: int = 100
    eval_blocks: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        require_positive(self, "steps", "batch_size", "checkpoint_every")


QUICK_CONFIG = BaseTrainConfig(
    n_embd=32, n_layer=2, n_head=2, n_positions=64, batch_size=4, steps=12, warmup=2,
    checkpoint_every=5, eval_blocks=4,
)


def encode_texts(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> torch.Tensor:
    """Token ids of all ``texts``, each followed by eos, concatenated. Returns a (n_tokens,) int64 tensor."""
    # The backend tokenizer encodes in parallel and does not warn about texts longer than the context.
    encodings = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    ids = [i for enc in encodings for i in (*enc.ids, tokenizer.eos_token_id)]
    return torch.tensor(ids, dtype=torch.long)


def sample_batch(tokens: torch.Tensor, batch_size: int, block: int, generator: torch.Generator) -> torch.Tensor:
    """Random windows of the packed corpus. Returns (batch_size, block) ids; labels are the ids themselves."""
    starts = torch.randint(0, len(tokens) - block, (batch_size,), generator=generator)  # (b,)
    return torch.stack([tokens[s : s + block] for s in starts.tolist()])  # (b, block)


def make_model(cfg: BaseTrainConfig, tokenizer: PreTrainedTokenizerFast) -> GPT2LMHeadModel:
    """A GPT-2 with tied input/output embeddings and no dropout (we train for less than one epoch)."""
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=cfg.n_positions, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)


def learning_rate(cfg: BaseTrainConfig, step: int) -> float:
    """Linear warmup to ``cfg.lr``, then cosine decay to ``cfg.lr / 10`` at ``cfg.steps``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def make_optimizer(model: GPT2LMHeadModel, cfg: BaseTrainConfig) -> torch.optim.AdamW:
    # Decay matrices only: biases, LayerNorm gains and embeddings are not regularised (as in GPT-2).
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2 and p is not model.transformer.wte.weight]
    rest = [p for p in params if not any(p is d for d in decay)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


@torch.no_grad()
def evaluate(model: GPT2LMHeadModel, tokens: torch.Tensor, block: int, max_blocks: int | None = None,
             batch_size: int = 32) -> float:
    """Mean next-token loss over consecutive non-overlapping windows of ``tokens`` (deterministic)."""
    model.eval()
    n_blocks = len(tokens) // block if max_blocks is None else min(max_blocks, len(tokens) // block)
    blocks = tokens[: n_blocks * block].view(n_blocks, block).to(model.device)  # (n_blocks, block)
    losses = [
        model(input_ids=blocks[i : i + batch_size], labels=blocks[i : i + batch_size]).loss.item()
        * len(blocks[i : i + batch_size])
        for i in range(0, n_blocks, batch_size)
    ]
    model.train()
    return sum(losses) / n_blocks


def _save_checkpoint(path: Path, model, optimizer, step: int, generator: torch.Generator,
                     cfg: BaseTrainConfig) -> None:
    state = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
        "generator": generator.get_state(), "torch_rng": torch.get_rng_state(), "config": asdict(cfg),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # an interruption mid-save leaves the previous checkpoint intact


def _resume(path: Path, model, optimizer, generator: torch.Generator, cfg: BaseTrainConfig) -> int:
    """Load the checkpoint at ``path`` if it exists and was made with ``cfg``; returns the step to start at."""
    if not path.exists():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state["config"] != asdict(cfg):
        raise ValueError(f"checkpoint {path} was made with {state['config']}, not {asdict(cfg)}; delete it")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    return state["step"]


def _train_step(model: GPT2LMHeadModel, optimizer: torch.optim.Optimizer, batch: torch.Tensor, lr: float,
                grad_clip: float) -> torch.Tensor:
    """One AdamW step at learning rate ``lr`` on ``batch`` (b, t) of packed ids; returns its loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = model(input_ids=batch, labels=batch).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss


def train_base(
    tokenizer: PreTrainedTokenizerFast,
    train_tokens: torch.Tensor,
    val_tokens: torch.Tensor,
    cfg: BaseTrainConfig,
    work_dir: Path,
    stop_after: int | None = None,
) -> GPT2LMHeadModel:
    """Train (or resume training) the base model; checkpoints go to ``work_dir/checkpoint.pt``.

    Args:
        train_tokens: (n_train,) packed token ids from `encode_texts`.
        val_tokens: (n_val,) packed validation ids; a loss on a slice of them is shown at each checkpoint.
        stop_after: return after this many steps as if interrupted (used to test resuming).

    Returns:
        The model (on the training device, in train mode) after ``cfg.steps`` steps or ``stop_after``.
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    model = make_model(cfg, tokenizer).to(device)
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(cfg.seed)  # batch sampling stays on the CPU: same batches anywhere
    work_dir.mkdir(parents=True, exist_ok=True)
    ckpt = work_dir / CHECKPOINT
    start = _resume(ckpt, model, optimizer, generator, cfg)
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    bar = tqdm(range(start, end), initial=start, total=cfg.steps, desc="base", dynamic_ncols=True)
    model.train()
    for step in bar:
        batch = sample_batch(train_tokens, cfg.batch_size, cfg.n_positions, generator).to(device)  # (b, t)
        loss = _train_step(model, optimizer, batch, learning_rate(cfg, step), cfg.grad_clip)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == end:
            _save_checkpoint(ckpt, model, optimizer, step + 1, generator, cfg)
            val = evaluate(model, val_tokens, cfg.n_positions, cfg.eval_blocks)
            bar.write(f"step {step + 1}: train loss {loss.item():.3f}, val loss {val:.3f}")
    return model


def save_base(model: GPT2LMHeadModel, out_dir: Path) -> list[Path]:
    """Save as fp16 safetensors (half the bytes; loads fine with ``dtype=torch.float32``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(out_dir, safe_serialization=True)
    model.to(torch.float32)
    return sorted(p for p in out_dir.iterdir() if p.is_file())


@torch.no_grad()
def sample_replies(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast, prompts: list[str],
                   seed: int = 0, top_k: int = 15, max_new_tokens: int = 48) -> list[str]:
    """One sampled reply per prompt (top-k sampling), cut at the first new dialogue turn or eos."""
    model.eval()
    replies = []
    for i, prompt in enumerate(prompts):
        torch.manual_seed(seed + i)
        ids = tokenizer(format_prompt(prompt), return_tensors="pt").input_ids.to(model.device)  # (1, t)
        # Keep the prompt's end: prompt plus reply must fit the context.
        ids = ids[:, -(model.config.n_positions - max_new_tokens) :]
        out = model.generate(
            ids, do_sample=True, top_k=top_k, max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )  # (1, t + new)
        text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        replies.append(cut_at_stop(text)[0].strip())
    return replies
