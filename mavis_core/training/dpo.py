"""DPO (Rafailov et al. 2023) as the policies, the MORLHF references and the λ-conditioned policy train it: the
loss, sequence log-probs of given replies, the update loop with the base (the adapter switched off) as the
reference, and resumable rounds of it saved as peft folders.

Why our own loop and not TRL: TRL is not a dependency of this project (adding it needs a pin in
requirements.txt), and the loss is a few lines; the loop below is the whole trainer.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .value_training import collate


class DPOSettings(Protocol):
    """What the loop reads of a recipe (`policies.PolicyTrainConfig` has these fields)."""

    dpo_beta: float
    lr: float
    epochs: int
    batch_size: int
    rounds: int
    seed: int


@dataclass
class Pair:
    """One preference pair of token ids: the prompt, the preferred and the dispreferred reply."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO: −log σ(β·[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))]), averaged.

    All inputs are (B,) sequence log-probabilities of the replies.

    >>> float(dpo_loss(*(torch.zeros(1),) * 4, beta=0.1))  # no preference yet: log 2
    0.6931471824645996
    """
    margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return -F.logsigmoid(margin).mean()


def sequence_logprobs(model, prompts: list[list[int]], replies: list[list[int]], pad_id: int) -> torch.Tensor:
    """Σ_t log π(reply_t | prompt, reply_<t) per row. Returns (B,) on the model's device.

    Rows are right-padded prompt ⊕ reply (`collate`); only reply tokens count.
    """
    device = next(model.parameters()).device
    ids, attn, _ = (t.to(device) for t in collate([p + r for p, r in zip(prompts, replies, strict=True)], pad_id))
    starts = torch.tensor([len(p) for p in prompts], device=device)[:, None]
    scored = (torch.arange(ids.shape[1], device=device)[None] >= starts) & attn.bool()  # (B, T): reply tokens
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()  # (B, T-1, V)
    token_lp = torch.log_softmax(logits, -1).gather(2, ids[:, 1:, None]).squeeze(2)  # (B, T-1)
    return (token_lp * scored[:, 1:]).sum(-1)


@torch.no_grad()
def reference_logprobs(model, pairs: list[Pair], pad_id: int, batch_size: int) -> torch.Tensor:
    """log π_ref of (chosen, rejected) for every pair, with the adapter switched off. Returns (N, 2)."""
    out = []
    with model.disable_adapter():
        for start in range(0, len(pairs), batch_size):
            batch = pairs[start : start + batch_size]
            lp = sequence_logprobs(model, [p.prompt_ids for p in batch] * 2,
                                   [p.chosen_ids for p in batch] + [p.rejected_ids for p in batch], pad_id)
            out.append(lp.view(2, -1).T)
    return torch.cat(out)


def dpo_step(model, optimizer, batch: list[Pair], ref: torch.Tensor, cfg: DPOSettings,
             pad_id: int) -> tuple[float, list[bool]]:
    """One DPO update; chosen and rejected replies go through one forward pass together.

    Args:
        ref: (b, 2) reference log-probs of the batch's (chosen, rejected) replies.
    Returns:
        the loss, and per pair whether its implicit reward margin is positive.
    """
    lp = sequence_logprobs(model, [p.prompt_ids for p in batch] * 2,
                           [p.chosen_ids for p in batch] + [p.rejected_ids for p in batch], pad_id)  # (2b,)
    chosen, rejected = lp[: len(batch)], lp[len(batch) :]
    loss = dpo_loss(chosen, rejected, ref[:, 0], ref[:, 1], cfg.dpo_beta)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item(), ((chosen - ref[:, 0]) > (rejected - ref[:, 1])).tolist()


def train_dpo(model, pairs: list[Pair], cfg: DPOSettings, pad_id: int, round_: int = 0) -> dict:
    """A few epochs of DPO on ``pairs`` with the base (the adapter switched off) as the reference.

    Returns {"pairs", "first_loss", "last_loss", "accuracy"} (accuracy: share of pairs of the last epoch whose
    implicit reward margin is positive).
    """
    ref = reference_logprobs(model, pairs, pad_id, cfg.batch_size).to(next(model.parameters()).device)  # (N, 2)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    order_rng = random.Random(cfg.seed * 7919 + round_)
    model.train()
    losses, wins = [], []
    for epoch in range(cfg.epochs):
        order = list(range(len(pairs)))
        order_rng.shuffle(order)
        wins = []
        for start in tqdm(range(0, len(order), cfg.batch_size), desc=f"dpo epoch {epoch + 1}/{cfg.epochs}"):
            index = order[start : start + cfg.batch_size]
            loss, won = dpo_step(model, optimizer, [pairs[i] for i in index], ref[index], cfg, pad_id)
            losses.append(loss)
            wins += won
    model.eval()
    return {"pairs": len(pairs), "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None, "accuracy": sum(wins) / max(1, len(wins))}


def save_adapter(model, objective: str, folder: Path, dtype: str = "float32") -> None:
    """Save adapter ``objective`` as a plain peft folder (peft nests non-"default" adapters in a subfolder),
    its weights in ``dtype`` (float16 halves what a shipped stack carries; peft casts them back on load)."""
    from safetensors.torch import load_file, save_file

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, selected_adapters=[objective])
    saved = tmp / objective if (tmp / objective).is_dir() else tmp
    if dtype != "float32":
        weights = saved / "adapter_model.safetensors"
        save_file({k: v.to(getattr(torch, dtype)) for k, v in load_file(weights).items()}, weights)
    shutil.rmtree(folder, ignore_errors=True)
    shutil.move(saved, folder)
    shutil.rmtree(tmp, ignore_errors=True)


def load_adapter_weights(model, objective: str, folder: Path) -> None:
    """Load a saved adapter's weights into adapter ``objective`` of ``model`` (resuming online rounds)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors"), adapter_name=objective)


def train_rounds(model, adapter: str, folder: Path, pairs_of: Callable[[int], list[Pair]], cfg: DPOSettings,
                 pad_id: int) -> list[dict]:
    """``cfg.rounds`` rounds of DPO on ``model``'s adapter, round r on ``pairs_of(r)``, resumable: a round finished
    before an interruption (``folder/round{r}/stats.json``) gives back its weights and stats instead. Returns each
    round's `train_dpo` stats."""
    rounds = []
    for r in range(cfg.rounds):
        done = folder / f"round{r}"
        if (done / "stats.json").exists():
            load_adapter_weights(model, adapter, done)
            rounds.append(json.loads((done / "stats.json").read_text()))
            continue
        rounds.append(train_dpo(model, pairs_of(r), cfg, pad_id, r))
        save_adapter(model, adapter, done)
        (done / "stats.json").write_text(json.dumps(rounds[-1]))
    return rounds
