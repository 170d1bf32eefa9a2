"""Fitting the reward heads: embeddings cached on disk, an MLP head trained on BCE with early stopping,
temperature scaling, metrics, and the head folder's files. Used by `mavis_core.training.rewards`."""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file
from sklearn.cluster import KMeans
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm.auto import tqdm

from ..refusals import is_refusal
from ..rewards import MINILM_DIM, EmbeddingHead, GatedHead, PenalisedHead, PrototypeHead, embed, pair_features

CACHE_CHUNK = 2048
BATCH, MAX_EPOCHS, PATIENCE, LR, WEIGHT_DECAY = 512, 40, 4, 1e-3, 1e-2
# Weights of a `PenalisedHead`'s refusal penalty tried on validation (pair-logit units per refusal logit).
PENALTY_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
# A penalty may cost at most this much validation AUC: the pair MLP's other negatives (fragments, padding,
# another prompt's reply) must stay ranked.
PENALTY_MAX_AUC_LOSS = 0.01


def cached_embed(texts: list[str], cache_dir: Path, name: str, device: torch.device) -> torch.Tensor:
    """`embed` in chunks, each saved to ``cache_dir``; chunks already there are loaded, not recomputed.

    The file names carry a hash of the whole text list, so a changed data set never reuses stale chunks.

    Returns:
        float32 tensor of shape (len(texts), 384).
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    chunks = []
    for start in tqdm(range(0, len(texts), CACHE_CHUNK), desc=f"embed {name} ({len(texts)} texts)"):
        path = cache_dir / f"{name}-{key}-{start // CACHE_CHUNK:04d}.pt"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            torch.save(embed(texts[start : start + CACHE_CHUNK], device), tmp)
            os.replace(tmp, path)  # an interrupted run leaves no half-written chunk behind
        chunks.append(torch.load(path))
    return torch.cat(chunks) if chunks else torch.zeros(0, MINILM_DIM)


def embed_pairs(prompts: list[str], replies: list[str], cache_dir: Path, name: str,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of n prompts and n replies, each distinct text embedded once (and cached on disk).

    Returns:
        u (n, 384) and v (n, 384).
    """
    index: dict[str, int] = {}
    u_idx = [index.setdefault(t, len(index)) for t in prompts]
    v_idx = [index.setdefault(t, len(index)) for t in replies]
    e = cached_embed(list(index), cache_dir, name, device)  # (n_texts, 384)
    return e[torch.tensor(u_idx, dtype=torch.long)], e[torch.tensor(v_idx, dtype=torch.long)]


def fit_head(
    featurize: Callable[..., torch.Tensor],
    train: tuple[torch.Tensor, ...],
    y_train: torch.Tensor,
    val: tuple[torch.Tensor, ...],
    y_val: torch.Tensor,
    hidden: list[int],
    seed: int,
    pos_weight: float = 1.0,
) -> EmbeddingHead:
    """Train an `EmbeddingHead` with AdamW on binary cross-entropy, keeping the epoch of best validation loss.

    Args:
        featurize: maps a minibatch of the ``train`` tensors to features (b, in_dim).
        train, val: embedding tensors indexed along dim 0 together, e.g. (u (n, 384), v (n, 384)).
        y_train, y_val: (n,) float labels in {0, 1}.
        pos_weight: weight of a positive example in the loss; n_negative / n_positive balances the classes.
    """
    torch.manual_seed(seed)
    x_val = featurize(*val)  # (n_val, in_dim)
    head = EmbeddingHead(x_val.shape[-1], hidden)
    opt = torch.optim.AdamW(head.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight))
    order = torch.Generator().manual_seed(seed)
    best, best_state, stale = float("inf"), None, 0
    for _ in (bar := tqdm(range(MAX_EPOCHS), desc=f"train head {hidden}")):
        head.train()
        for idx in torch.randperm(len(y_train), generator=order).split(BATCH):
            loss = loss_fn(head(featurize(*(t[idx] for t in train))), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            bar.set_postfix(val_loss=f"{(val_loss := loss_fn(head.eval()(x_val), y_val).item()):.4f}")
        if val_loss < best - 1e-4:
            best, best_state, stale = val_loss, {k: t.clone() for k, t in head.state_dict().items()}, 0
        elif (stale := stale + 1) >= PATIENCE:
            break
    head.load_state_dict(best_state)
    return head.eval()


def calibrate(head: EmbeddingHead, x_val: torch.Tensor, y_val: torch.Tensor, pos_weight: float = 1.0) -> float:
    """Temperature scaling (Guo et al. 2017): pick T > 0 minimising validation BCE of logits / T, then fold
    1 / T into the last layer, so the saved head's logits are calibrated log-odds. Returns T.

    T is searched on a log grid over [0.05, 20]: one parameter, and unlike a gradient method it cannot
    diverge when the validation set is tiny or separable.
    """
    with torch.no_grad():
        logits = head(x_val)  # (n,)
        grid = torch.logspace(-1.3, 1.3, 261)  # (g,)
        scaled = logits[None, :] / grid[:, None]  # (g, n)
        losses = nn.functional.binary_cross_entropy_with_logits(
            scaled, y_val.expand_as(scaled), pos_weight=torch.tensor(pos_weight), reduction="none"
        ).mean(dim=1)  # (g,)
        t = grid[losses.argmin()].item()
        head.net[-1].weight /= t
        head.net[-1].bias /= t
    return t


def balance(y: torch.Tensor) -> float:
    """n_negative / n_positive of (n,) {0, 1} labels: the positive weight that weighs both classes equally."""
    return (y == 0).sum().item() / max((y == 1).sum().item(), 1)


def fit_gated_head(
    parts: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    hidden: dict[str, list[int]],
    seed: int,
) -> GatedHead:
    """Train a `GatedHead`: each of its three heads on its own labels, then its ``mix`` on the pair labels.

    Args:
        parts: ``harm``, ``refusal``, ``toxic`` -> (x_train (n, 384), y_train (n,), x_val (m, 384), y_val (m,)),
            prompt embeddings for ``harm``, reply embeddings for the other two.
        hidden: each head's hidden sizes; a dict (`PROTOTYPE_GRID`) makes that head a `PrototypeHead` chosen on
            its validation AUC (`fit_prototypes`). The chosen sizes are the returned head's ``hidden``.
        x_val, y_val: (k, 4 * 384) pair features and (k,) labels of the head's validation pairs: ``mix`` is
            fitted there (three numbers, a calibration like temperature scaling), with both classes weighed equally.
    """
    fitted = {name: fit_prototypes(*part, hidden[name], seed) if isinstance(hidden[name], dict)
              else fit_head(lambda e: e, part[:1], part[1], part[2:3], part[3], hidden[name], seed, balance(part[1]))
              for name, part in parts.items()}
    head = GatedHead(MINILM_DIM, {name: sub.hidden if isinstance(sub, PrototypeHead) else hidden[name]
                                  for name, sub in fitted.items()})
    for name, sub in fitted.items():
        setattr(head, name, sub)  # the fitted modules themselves (a prototype head keeps its validation AUC)
    with torch.no_grad():
        features = head.parts(x_val)  # (k, 3)
    mix = torch.tensor([1.0, 1.0, 0.0], requires_grad=True)
    opt = torch.optim.LBFGS([mix], max_iter=200)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(balance(y_val)))

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn(features @ mix, y_val)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        head.mix.copy_(torch.cat([mix[:2].clamp(min=0.1), mix[2:]]))  # the product and toxicity keep their sign
    return head.eval()


def fit_prototypes(x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
                   grid: dict[str, tuple[int, ...]], seed: int) -> PrototypeHead:
    """A `PrototypeHead`: k-means centroids of each class's unit-norm train embeddings (n, 384), ``grid``'s
    centroid counts and ``k`` tried, the one of best validation AUC kept (ties to fewer centroids)."""
    x_train = nn.functional.normalize(x_train, dim=-1)
    best: tuple[float, PrototypeHead] | None = None
    for prototypes in grid["prototypes"]:
        centroids = [class_centroids(x_train[y_train == label], prototypes, seed) for label in (1.0, 0.0)]
        for k in grid["k"]:
            head = PrototypeHead(x_train.shape[-1], prototypes, k)
            head.centroids.copy_(torch.cat(centroids))
            head.labels.copy_(torch.tensor([1.0] * prototypes + [0.0] * prototypes))
            with torch.no_grad():
                auc = binary_metrics(head(x_val), y_val)["auc"] or 0.0
            if best is None or auc > best[0] + 1e-9:
                best = (auc, head)
    best[1].validation_auc = round(best[0], 4)
    return best[1].eval()


def class_centroids(x: torch.Tensor, prototypes: int, seed: int) -> torch.Tensor:
    """(prototypes, dim) unit-norm k-means centroids of one class's (n, dim) embeddings (scikit-learn's KMeans);
    with fewer than ``prototypes`` texts (a quick build) the texts themselves, repeated."""
    if len(x) <= prototypes:
        return x[torch.arange(prototypes) % len(x)]
    km = KMeans(n_clusters=prototypes, n_init=3, random_state=seed).fit(x.numpy())
    return nn.functional.normalize(torch.tensor(km.cluster_centers_, dtype=torch.float32), dim=-1)


def fit_penalised_head(pair: EmbeddingHead, refusal: tuple[torch.Tensor, ...], base_pairs: tuple[list, ...],
                       x_val: torch.Tensor, y_val: torch.Tensor, hidden: dict[str, list[int]], seed: int,
                       cache_dir: Path) -> PenalisedHead:
    """A `PenalisedHead` from a trained pair MLP, a refusal head trained here, and the penalty's weight chosen
    on validation: of the `PENALTY_GRID` weights that cost at most `PENALTY_MAX_AUC_LOSS` AUC on the head's
    validation pairs, the one under which it prefers the base's free answer to its forced refusal on the most
    validation prompts (mean of the harmful and benign shares), ties broken by that AUC.

    Args:
        refusal: (x_train (n, 384), y_train (n,), x_val (m, 384), y_val (m,)) replies labelled refusal or not.
        base_pairs: (prompts, free replies, forced refusals, kinds) of the validation prompts the base answered.
        hidden: each head's hidden sizes; a dict (`PROTOTYPE_GRID`) makes that head a `PrototypeHead` chosen on
            its validation AUC (`fit_prototypes`). The chosen sizes are the returned head's ``hidden``.
        x_val, y_val: (k, 4 * 384) pair features and (k,) labels of the head's validation pairs.
    """
    head = PenalisedHead(MINILM_DIM, hidden)
    head.pair.load_state_dict(pair.state_dict())
    xt, yt, xv, yv = refusal
    head.refusal.load_state_dict(fit_head(lambda e: e, (xt,), yt, (xv,), yv, hidden["refusal"], seed,
                                          balance(yt)).state_dict())
    prompts, free, refusing, kinds = (list(t) for t in zip(*[row for row in zip(*base_pairs, strict=True)
                                                                 if not is_refusal(row[1])], strict=True))
    u, a, r = (cached_embed(t, cache_dir, f"penalty-{name}", torch.device("cpu"))
               for name, t in (("prompts", prompts), ("free", free), ("refusing", refusing)))
    harmful = torch.tensor([k == "harmful" for k in kinds])
    with torch.no_grad():
        d_pair = head.pair(pair_features(u, a)) - head.pair(pair_features(u, r))  # (p,)
        d_refusal = head.refusal(a) - head.refusal(r)  # (p,)
        s_pair, s_refusal = head.pair(x_val), head.refusal(x_val[:, MINILM_DIM : 2 * MINILM_DIM])  # (k,) each

        def key(w: float) -> tuple[float, float]:
            right = (d_pair - w * d_refusal) > 0
            share = (right[harmful].float().mean() + right[~harmful].float().mean()).item() / 2
            return round(share, 4), binary_metrics(s_pair - w * s_refusal, y_val)["auc"] or 0.0

        floor = key(0.0)[1] - PENALTY_MAX_AUC_LOSS
        head.weight.fill_(max((w for w in PENALTY_GRID if key(w)[1] >= floor), key=key))
    return head.eval()


def binary_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float | None]:
    """Accuracy at logit 0 and ROC AUC of (n,) logits against (n,) {0, 1} labels (None with one class only)."""
    accuracy = ((logits > 0).float() == labels).float().mean().item()
    auc = roc_auc_score(labels.numpy(), logits.numpy()) if 0 < labels.sum() < len(labels) else None
    return {"accuracy": round(accuracy, 4), "auc": None if auc is None else round(float(auc), 4)}


def balanced_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean of the accuracies on positives and on negatives, at logit 0: fair when classes are unequal."""
    hits = (logits > 0).float() == labels  # (n,)
    return round((hits[labels == 1].float().mean().item() + hits[labels == 0].float().mean().item()) / 2, 4)


def stratified_split(labels: list[int], rng: random.Random) -> dict[str, list[int]]:
    """70/15/15 train/validation/test indices, split within each class so every split stays balanced."""
    out = {"train": [], "validation": [], "test": []}
    for label in (0, 1):
        idx = [i for i, y in enumerate(labels) if y == label]
        rng.shuffle(idx)
        a, b = round(0.7 * len(idx)), round(0.85 * len(idx))
        out["train"] += idx[:a]
        out["validation"] += idx[a:b]
        out["test"] += idx[b:]
    return out


def save_head(head: EmbeddingHead, folder: Path, config: dict) -> list[Path]:
    """Write ``head.safetensors`` and ``config.json``; returns the two paths."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: t.contiguous() for k, t in head.state_dict().items()}, folder / "head.safetensors")
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return [folder / "head.safetensors", folder / "config.json"]


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def score_table(header: str, rows: list[tuple[str, ...]], scores: torch.Tensor) -> str:
    """A markdown table of example texts and their scores."""
    n_cols = len(rows[0]) + 1
    lines = [header, "|" + "---|" * n_cols]
    for row, s in zip(rows, scores.tolist(), strict=True):
        cells = [(c or "(empty)").replace("|", "\\|") for c in row]
        lines.append("| " + " | ".join(cells) + f" | {s:+.2f} |")
    return "\n".join(lines)


