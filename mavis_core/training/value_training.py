"""Fitting a MAVIS value model (arXiv 2508.13415) on rollout trees, and using one inside a stack.

A value model is regressed with MSE on (prompt ⊕ reply up to a node's end) -> the node's target, read exactly as
decoding reads it: the per-position score head at the last token (`mavis_core.values.values_uncached`). With
``dense`` every position of the node's chunk is trained on the node's target, not only its last: each of those
prefixes has the leaves below the node as its Monte-Carlo continuations, so one forward gives a target per token
instead of one per node. Training is resumable per epoch and data-parallel under ``accelerate``; the best
checkpoint by validation MSE is kept. The iterations around it (rollouts, targets, evaluation) and the
``train-values`` command are `mavis_core.training.value_iterations`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from ..config import DecodeConfig, require_positive
from ..decoding import generate_batch
from ..stack import Stack, load_stack
from ..value_models import (
    TRUNK_CONFIG,
    TRUNK_WEIGHTS,
    ValueModel,
    is_trunk,
    load_trunk,
    lower_layers_model,
    read_trunk_config,
    save_trunk,
    trunk_model,
)
from ..values import backbone_and_head
from .trees import Tree, node_targets

TRAIN_STATE = "train_state.pt"
BEST = "best"
_VALUE_OR_POLICY = re.compile(r"\s*(value|policy)\s*=")  # a stack file's value / policy lines
_TABLE = re.compile(r"\s*\[")  # a TOML table header
_REFERENCES_TABLE = re.compile(r"""\s*\[\s*(references\s*[.\]]|conditioned\s*\])""")  # and [conditioned]
VALUE_KINDS = ("copy", "trunk")


@dataclass(frozen=True)
class ValueTrainConfig:
    """Settings of the value-model iterations.

    Args:
        kind: "copy" (the base's lower blocks copied and trained in full) or "trunk" (the base's lower blocks
            frozen, LoRA of rank ``lora_r`` on them and the heads trained; only those are stored).
        layers: transformer blocks of the base (its lower layers) the value model is made of.
        guided_prompts: trees per objective from the guided policies of iterations >= 1 (the first this many
            prompts; None: all). Guided rollouts cost a value pass per step, so on a CPU they are the budget.
        warm_start: iteration k >= 1 starts from V_{k-1} (False: from the base, with a zero head, as iteration
            0 does). A fresh start on the few guided trees a CPU affords came out near-untrained (docs/training.md).
        start_from: a saved value model (the one a stack ships, say) taken as iteration 0: its rollouts and
            training are skipped, and iteration 1 rolls out guided by it and goes on from its weights.
        zeta: ζ, weight of E[log π_k/π_ref] subtracted from targets from iteration 1 on.
        beta: β of the MAVIS guidance in rollouts (k >= 1) and in the evaluation.
        dense: train every position of a node's chunk on the node's target (see the module docstring), not
            only the chunk's last token.
        val_fraction: share of trees (whole prompts, not nodes: siblings share a prefix) held out.
        eval_prompts / eval_max_new_tokens: size of the held-out reward/KL evaluation.
    """

    iterations: int = 2
    kind: str = "copy"
    layers: int = 2
    lora_r: int = 16
    guided_prompts: int | None = None
    warm_start: bool = True
    start_from: str | None = None
    epochs: int = 2
    batch_size: int = 32
    lr: float = 3e-4
    dense: bool = False
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    val_fraction: float = 0.1
    zeta: float = 0.05
    beta: float = 1.0
    eval_max_new_tokens: int = 48
    seed: int = 0

    def __post_init__(self) -> None:
        require_positive(self, "iterations", "layers", "epochs", "batch_size")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.kind not in VALUE_KINDS:
            raise ValueError(f"kind {self.kind!r} is not known; allowed: {', '.join(VALUE_KINDS)}")
        if self.start_from is not None and self.iterations < 2:
            raise ValueError(f"start_from {self.start_from} stands for iteration 0; with iterations="
                             f"{self.iterations} nothing is left to train (use iterations >= 2)")
        if self.zeta < 0 or self.beta < 0:
            raise ValueError(f"zeta and beta must be >= 0, got zeta={self.zeta}, beta={self.beta}")


@dataclass
class Examples:
    """Regression examples: token ids of (prompt ⊕ reply prefix), targets and which heads they train.

    Attributes:
        ids: N lists of token ids; targets: (N, H) float32; mask: (N, H) bool, False where a head has no target.
        starts: N positions: example n trains the values read at positions starts[n] .. len(ids[n]) − 1 (its
            last token alone unless dense).
    """

    ids: list[list[int]]
    targets: torch.Tensor
    mask: torch.Tensor
    starts: list[int]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: list[int]) -> Examples:
        return Examples([self.ids[i] for i in index], self.targets[index], self.mask[index],
                        [self.starts[i] for i in index])


def tree_examples(trees: list[Tree], heads: list[str], trained: list[str], zeta: float,
                  dense: bool = False) -> Examples:
    """One example per non-root node of every tree; head h gets a target only if ``heads[h]`` is in ``trained``.
    ``dense``: the example trains every position of the node's chunk, else only its last token."""
    ids, rows, starts = [], [], []
    for tree in trees:
        targets = {h: node_targets(tree, h, zeta) if h in trained else None for h in heads}
        for i in range(1, len(tree.nodes)):
            ids.append(tree.prompt_ids + tree.path(i))
            rows.append([targets[h][i] if targets[h] is not None else 0.0 for h in heads])
            starts.append(len(ids[-1]) - len(tree.nodes[i].tokens) if dense else len(ids[-1]) - 1)
    mask = torch.tensor([[h in trained for h in heads]] * len(ids), dtype=torch.bool).view(len(ids), len(heads))
    return Examples(ids, torch.tensor(rows, dtype=torch.float32).view(len(ids), len(heads)), mask, starts)


def concat_examples(parts: list[Examples]) -> Examples:
    return Examples([i for p in parts for i in p.ids], torch.cat([p.targets for p in parts]),
                    torch.cat([p.mask for p in parts]), [s for p in parts for s in p.starts])


def split_trees(trees: list[Tree], val_fraction: float, seed: int) -> tuple[list[Tree], list[Tree]]:
    """Seeded split by prompt (train, validation); at least one validation tree when there are two or more."""
    order = sorted(trees, key=lambda t: t.index)
    random.Random(seed).shuffle(order)
    n_val = min(len(order) - 1, max(1, round(val_fraction * len(order)))) if len(order) > 1 else 0
    return order[n_val:], order[:n_val]


def collate(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad a batch. Returns input_ids (B, T), attention_mask (B, T) and last-token positions (B,)."""
    width = max(map(len, ids))
    input_ids = torch.tensor([x + [pad_id] * (width - len(x)) for x in ids], dtype=torch.long)
    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], dtype=torch.long)
    return input_ids, mask, torch.tensor([len(x) - 1 for x in ids])


def spans(first: torch.Tensor, last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, positions) of every position from first[b] to last[b] of each row b, row by row.

    >>> spans(torch.tensor([2, 0]), torch.tensor([3, 0]))
    (tensor([0, 0, 1]), tensor([2, 3, 0]))
    """
    lengths = last - first + 1  # (B,)
    rows = torch.repeat_interleave(torch.arange(len(first), device=first.device), lengths)  # (N,)
    offset = torch.arange(len(rows), device=first.device) - (lengths.cumsum(0) - lengths)[rows]
    return rows, first[rows] + offset


class ValuesAt(nn.Module):
    """V at chosen positions of right-padded rows: the value model's score head applied per position, read at
    (rows[n], positions[n]) — each row's last real token for a node's value, a whole chunk when dense.

    Not the model's own pooled output: that picks the last non-pad token, and replies ending in eos (which is
    also the pad token) would be read one token early. Wrapping the model keeps DDP's gradient hooks in play.
    """

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: torch.Tensor,
                positions: torch.Tensor) -> torch.Tensor:
        """(B, T), (B, T), (N,), (N,) -> (N, H) float32 values."""
        body, head = backbone_and_head(self.model)
        hidden = body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, E)
        return head(hidden[rows, positions]).float()  # (N, H)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (pred − target)² over the entries where ``mask`` is True. All (B, H)."""
    err = (pred - target).pow(2) * mask
    return err.sum() / mask.sum().clamp(min=1)


def init_value_model(base: PreTrainedModel, cfg: ValueTrainConfig, labels: list[str]) -> PreTrainedModel:
    """A fresh value model for ``labels``: a trunk (the base's blocks + LoRA, see `mavis_core.value_models`) or a
    full copy of the base's lower blocks; either way its score head starts at zero (no tilt until trained)."""
    if cfg.kind == "trunk":
        return trunk_model(base, cfg.layers, labels, cfg.lora_r)
    return lower_layers_model(base, cfg.layers, labels)


def warm_value_model(base: PreTrainedModel, folder: Path, labels: list[str]) -> PreTrainedModel:
    """A trainable float32 copy of the value model saved in ``folder`` (the previous iteration's best), to go on
    training from. Its heads must be ``labels``, in that order."""
    if is_trunk(folder):
        model = load_trunk(base, folder, trainable=True)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=False, dtype=torch.float32)
    found = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if found != list(labels):
        raise ValueError(f"{folder} has heads {found}, not {list(labels)}: it is not this run's previous iteration")
    return model


def stored_offsets(folder: Path) -> torch.Tensor:
    """The per-head offsets a saved value model predicts with (V + offset is in reward units)."""
    if is_trunk(folder):
        return torch.tensor(read_trunk_config(folder)["value_offsets"], dtype=torch.float32)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return torch.tensor(config["value_offsets"], dtype=torch.float32)


def target_offsets(examples: Examples) -> torch.Tensor:
    """Per-head mean target (H,). The model learns targets minus it: a score head has no bias, and a
    constant per head never changes which candidate MAVIS prefers (its softmax is shift-invariant)."""
    return (examples.targets * examples.mask).sum(0) / examples.mask.sum(0).clamp(min=1)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int, world: int) -> list[list[int]]:
    """This process's batches of one epoch: a seeded shuffle, cut into batches, dealt round-robin.

    Every process gets the same number of batches (DDP needs equal step counts), so a few trailing batches
    are dropped when the count is not a multiple of ``world``.
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    usable = max(world, len(batches) - len(batches) % world)
    batches = (batches * world)[:usable]  # fewer batches than processes: repeat rather than hang
    return batches[rank::world]


@torch.no_grad()
def validation_mse(module: nn.Module, examples: Examples, offsets: torch.Tensor, batch_size: int, pad_id: int,
                   accelerator) -> float:
    """Masked MSE of V + offset against the raw targets over ``examples``, summed over all processes."""
    device = accelerator.device
    total = torch.zeros(2, device=device)  # (sum of squared errors, count)
    for start in range(accelerator.process_index * batch_size, len(examples), batch_size * accelerator.num_processes):
        part = examples.subset(list(range(start, min(start + batch_size, len(examples)))))
        ids, mask, last = (t.to(device) for t in collate(part.ids, pad_id))
        pred = module(ids, mask, torch.arange(len(last), device=device), last) + offsets.to(device)
        err = (pred - part.targets.to(device)).pow(2) * part.mask.to(device)
        total += torch.stack([err.sum(), part.mask.sum().to(err)])
    total = accelerator.reduce(total, reduction="sum")
    return float(total[0] / total[1].clamp(min=1))


def _save_state(path: Path, model, optimizer, epoch: int, best: float, history: list, cfg: ValueTrainConfig) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "best": best,
             "history": history, "config": asdict(cfg)}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # an interruption mid-save leaves the previous state intact


def _load_state(path: Path, model, optimizer, cfg: ValueTrainConfig) -> tuple[int, float, list]:
    """Resume from ``path`` if it exists: returns (next epoch, best validation MSE, history)."""
    if not path.exists():
        return 0, float("inf"), []
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state["config"] != asdict(cfg):
        raise ValueError(f"{path} was made with {state['config']}, not {asdict(cfg)}; delete it or use another --work")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state["epoch"], state["best"], state["history"]


def _save_best(model: PreTrainedModel, offsets: torch.Tensor, folder: Path) -> None:
    model.config.value_offsets = offsets.tolist()  # V + offset is in reward units; decoding needs no offset
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if hasattr(model, "trunk_settings"):
        save_trunk(model, tmp, offsets.tolist())
    else:
        model.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def train_epoch(module: nn.Module, optimizer, train: Examples, offsets: torch.Tensor, batches: list[list[int]],
                cfg: ValueTrainConfig, pad_id: int, accelerator, desc: str) -> float:
    """One pass over this process's ``batches`` of ``train``. Returns the mean batch MSE."""
    module.train()
    device = accelerator.device
    losses = []
    bar = tqdm(batches, desc=desc, disable=not accelerator.is_main_process, dynamic_ncols=True)
    for index in bar:
        part = train.subset(index)
        ids, mask, last = (t.to(device) for t in collate(part.ids, pad_id))
        rows, positions = spans(torch.tensor(part.starts, device=device), last)  # one row per trained position
        loss = masked_mse(module(ids, mask, rows, positions), (part.targets - offsets).to(device)[rows],
                          part.mask.to(device)[rows])
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(module.parameters(), cfg.grad_clip)
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(mse=f"{loss.item():.4f}")
    module.eval()
    return sum(losses) / max(1, len(losses))


def _best_epoch(history: list[dict]) -> int:
    """The epoch of lowest validation MSE (the last one when none was validated)."""
    scored = [h for h in history if h["val_mse"] is not None and not math.isnan(h["val_mse"])]
    return min(scored, key=lambda h: h["val_mse"])["epoch"] if scored else len(history)


def _keep_epoch(accelerator, module: nn.Module, optimizer, work: Path, cfg: ValueTrainConfig, epoch: int, best: float,
                history: list, best_offsets: torch.Tensor | None, message: str) -> None:
    """After ``epoch``: the main process saves the model as the best (when ``best_offsets`` is given: it is, with
    those offsets) and the resumable state; every process waits for it."""
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(module).model
        if best_offsets is not None:
            _save_best(unwrapped, best_offsets, work / BEST)
        _save_state(work / TRAIN_STATE, unwrapped, optimizer, epoch, best, history, cfg)
        tqdm.write(message)
    accelerator.wait_for_everyone()


def train_value_model(model: PreTrainedModel, train: Examples, val: Examples, cfg: ValueTrainConfig, work: Path,
                      pad_id: int, accelerator, stop_after_epochs: int | None = None,
                      start_offsets: torch.Tensor | None = None) -> dict:
    """Regress ``model`` on ``train``; keep the best epoch by validation MSE in ``work/best``.

    ``start_offsets``: ``model`` starts trained (a warm start), with these offsets. It is then validated before
    the first epoch (history's epoch 0) and kept as the best unless an epoch beats it, so training on a small
    new set never leaves a worse model than it started from (by validation MSE). State is saved after every
    epoch to ``work/train_state.pt``: calling again with the same arguments resumes and ends with the same
    weights. ``stop_after_epochs`` returns early as if interrupted (tests).

    Returns:
        {"best_val_mse", "best_epoch", "history": [{"epoch", "train_mse", "val_mse"}...], "offsets": the
        offsets the best model predicts with}
    """
    work.mkdir(parents=True, exist_ok=True)
    offsets = target_offsets(train)  # (H,)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, best, history = _load_state(work / TRAIN_STATE, model, optimizer, cfg)
    module, optimizer = accelerator.prepare(ValuesAt(model), optimizer)
    keep = partial(_keep_epoch, accelerator, module, optimizer, work, cfg)
    if start_offsets is not None and not history and len(val):
        best = validation_mse(module, val, start_offsets, cfg.batch_size, pad_id, accelerator)
        history.append({"epoch": 0, "train_mse": None, "val_mse": best})
        keep(0, best, history, start_offsets, f"epoch 0 (the starting model): val mse {best:.4f}")
    end = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, stop_after_epochs)
    for epoch in range(start, end):
        batches = epoch_batches(len(train), cfg.batch_size, cfg.seed, epoch, accelerator.process_index,
                                accelerator.num_processes)
        train_mse = train_epoch(module, optimizer, train, offsets, batches, cfg, pad_id, accelerator,
                                f"value epoch {epoch + 1}/{cfg.epochs}")
        val_mse = validation_mse(module, val, offsets, cfg.batch_size, pad_id, accelerator) if len(val) else math.nan
        history.append({"epoch": epoch + 1, "train_mse": train_mse, "val_mse": val_mse})
        improved = not len(val) or val_mse < best
        best = val_mse if improved else best
        keep(epoch + 1, best, history, offsets if improved else None,
             f"epoch {epoch + 1}: train mse {train_mse:.4f}, val mse {val_mse:.4f}")
    best_epoch = _best_epoch(history)
    kept = start_offsets if best_epoch == 0 else offsets
    return {"best_val_mse": best, "best_epoch": best_epoch, "history": history, "offsets": kept.tolist()}


@contextlib.contextmanager
def guided_by(stack: Stack, value_model: ValueModel | None) -> Iterator[Stack]:
    """Temporarily make ``value_model`` the stack's only value model (MAVIS then uses it), then restore."""
    saved = stack.value_models
    stack.value_models = [value_model] if value_model is not None else saved
    try:
        yield stack
    finally:
        stack.value_models = saved


def load_value_model(stack: Stack, folder: Path) -> ValueModel:
    """A trained value model, its heads mapped to the stack's objectives by ``config.id2label``."""
    if is_trunk(folder):
        model = load_trunk(stack.base, folder, stack.dtype)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=False, dtype=stack.dtype)
    heads = [stack.objectives.index(model.config.id2label[i]) for i in range(model.config.num_labels)]
    return ValueModel(str(folder), model.to(stack.device).eval(), heads)


def evaluate_guidance(stack: Stack, objective: str, prompts: list[str], value_model: ValueModel | None,
                      beta: float, max_new_tokens: int,
                      top_k: int = DecodeConfig.default("top_k"), seed: int = 0) -> dict[str, float]:
    """Mean reward (of ``objective``) and mean sequence KL to the base, of the base and of one-hot MAVIS.

    Same prompts and per-prompt seeds for both, so the comparison is paired. Without a value model only the
    base is measured.
    """
    seeds = [seed + i for i in range(len(prompts))]
    out = {}
    methods = ["base"] + (["mavis"] if value_model is not None else [])
    with guided_by(stack, value_model):
        for method in methods:
            cfg = DecodeConfig(method=method, weights={objective: 1.0}, beta=beta, top_k=top_k,
                               max_new_tokens=max_new_tokens)
            gens = generate_batch(stack, prompts, cfg, seeds)
            rewards = stack.rewards[objective].score(prompts, [g.text for g in gens])
            out[f"{method}_reward"] = float(rewards.mean())
            out[f"{method}_kl"] = sum(g.kl for g in gens) / len(gens)
    return out


def load_training_stack(path: Path, device: torch.device, dtype: torch.dtype | None = None) -> Stack:
    """The stack without its value models, policies and references: training needs only the base, tokenizer
    and rewards.

    The stack file may already name the value models and policies being trained (and they may not exist yet),
    so their ``value = …`` / ``policy = …`` lines and its ``[references.*]`` and ``[conditioned]`` tables are left
    out of a temporary copy beside the file (relative paths keep their meaning), which is loaded and removed.
    """
    kept, references = [], False
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if _TABLE.match(line):
            references = bool(_REFERENCES_TABLE.match(line))
        if not references and not _VALUE_OR_POLICY.match(line):
            kept.append(line)
    text = "".join(kept)
    copy_path = path.with_name(f".{path.stem}.training-{os.getpid()}.toml")
    copy_path.write_text(text, encoding="utf-8")
    try:
        return load_stack(copy_path, device=device, dtype=dtype)
    finally:
        copy_path.unlink()


def save_value_model(best: Path, out: Path, dtype: str) -> None:
    """Copy the best checkpoint to ``out`` in ``dtype`` (float16 halves what a shipped stack carries)."""
    if is_trunk(best):
        out.mkdir(parents=True, exist_ok=True)
        weights = {k: v.to(getattr(torch, dtype)) for k, v in load_file(best / TRUNK_WEIGHTS).items()}
        save_file(weights, out / TRUNK_WEIGHTS)
        config = json.loads((best / TRUNK_CONFIG).read_text(encoding="utf-8"))
        (out / TRUNK_CONFIG).write_text(json.dumps({**config, "dtype": dtype}, indent=1), encoding="utf-8")
        return
    model = AutoModelForSequenceClassification.from_pretrained(best, trust_remote_code=False, dtype=torch.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    model.to(getattr(torch, dtype)).save_pretrained(out)
