"""Tree rollouts for MAVIS value-model training, and their Monte-Carlo targets (arXiv 2508.13415, Alg. 1).

A tree per prompt: the root is the prompt; every other node is a chunk of reply tokens sampled from the
current policy π_k (π_0 = the base; π_k = MAVIS guided by the previous value models, λ one-hot on the
objective being trained). The root has ``root_children`` children, inner nodes ``inner_children``, for
at most ``levels`` levels; the last level runs to the end of the reply. A node whose chunk ends the reply
(eos, a new dialogue turn, or the length limit) is a leaf early. Leaves are scored by every objective's
reward model in one pass, so one set of trees serves all objectives.

Targets (pure functions at the bottom): a leaf's target is its reward minus ζ times its whole-path
log-ratio Σ_t log π_k/π_ref; an inner node's target is the mean over its children. Averaging is linear,
so this equals "mean reward below the node minus ζ·E[log π_k/π_ref] over the leaves below the node", the
expectation weighting leaves as the tree samples them (each child equally likely; for a full tree that
is the plain mean over the leaves). Iteration 0 uses ζ = 0.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace

from ..config import DecodeConfig, require_positive
from ..decoding import LaneDecoder  # the core loop over token ids; see continue_batch for why
from ..lanes import Lane
from ..stack import Stack


@dataclass(frozen=True)
class TreeConfig:
    """Shape of the rollout trees (defaults from the paper's code: 4 root children, then 2, 5 levels).

    Args:
        root_children / inner_children: children of the root / of every other unfinished node.
        levels: chunk levels below the root; the last one runs to the end of the reply.
        chunk_range: (low, high) inclusive token range of a chunk's random length. None: the paper's
            rule, uniform in [1, 2·⌊left / (levels − level)⌋ − 1] with ``left`` the tokens still allowed,
            so chunks average a fair share of what is left. All children of one node share a length.
        max_new_tokens: reply length limit, as in decoding.
        batch_rows: children generated per forward batch (all children of a level, in slices of this).
        prompts_per_batch: trees grown together (and saved together, the unit of resuming).
        refusal_children: root children (of ``root_children``) whose chunk opens with a refusal opener
            (`base_replies.REFUSAL_OPENERS` in turn) that the policy then continues; the base never opens a
            refusal by itself, so without them a value model never sees what a refusal is worth. The forced
            tokens carry no log-ratio: meant for the base's trees (iteration 0), where it is 0 anyway.
    """

    root_children: int = 4
    inner_children: int = 2
    levels: int = 5
    chunk_range: tuple[int, int] | None = None
    max_new_tokens: int = 48
    top_k: int = DecodeConfig.default("top_k")
    temperature: float = 1.0
    batch_rows: int = 64
    prompts_per_batch: int = 4
    refusal_children: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        require_positive(self, "root_children", "inner_children", "levels", "batch_rows", "prompts_per_batch")
        if not 0 <= self.refusal_children <= self.root_children:
            raise ValueError(f"refusal_children must be in 0..root_children ({self.root_children}), "
                             f"got {self.refusal_children}")
        if self.max_new_tokens < self.levels:
            raise ValueError(f"max_new_tokens ({self.max_new_tokens}) must be >= levels ({self.levels})")
        if self.chunk_range is not None and not 1 <= self.chunk_range[0] <= self.chunk_range[1]:
            raise ValueError(f"chunk_range must be (low, high) with 1 <= low <= high, got {self.chunk_range}")


@dataclass
class Node:
    """One node of a tree. The root (index 0) has no tokens.

    Attributes:
        parent: index of the parent node (-1 for the root); children: indices of the children.
        tokens: this chunk's token ids (the finishing eos or stop-string token included).
        log_ratio: Σ over this chunk's tokens of log π_k(a|s) − log π_ref(a|s).
        finished: the reply ended inside this chunk; rewards: objective -> reward, leaves only.
    """

    parent: int
    depth: int
    tokens: list[int] = field(default_factory=list)
    log_ratio: float = 0.0
    finished: bool = False
    children: list[int] = field(default_factory=list)
    rewards: dict[str, float] | None = None


@dataclass
class Tree:
    """The rollout tree of one prompt; ``prompt_ids`` are the formatted prompt's tokens (left-cut to fit)."""

    index: int
    prompt: str
    prompt_ids: list[int]
    nodes: list[Node]

    def path(self, i: int) -> list[int]:
        """Reply token ids from the root to the end of node ``i``."""
        chunks = []
        while i > 0:
            chunks.append(self.nodes[i].tokens)
            i = self.nodes[i].parent
        return [t for chunk in reversed(chunks) for t in chunk]

    def leaves(self) -> list[int]:
        return [i for i, n in enumerate(self.nodes) if i > 0 and not n.children]

    def to_dict(self) -> dict:
        return {"index": self.index, "prompt": self.prompt, "prompt_ids": self.prompt_ids,
                "nodes": [asdict(n) for n in self.nodes]}

    @classmethod
    def from_dict(cls, raw: dict) -> Tree:
        return cls(raw["index"], raw["prompt"], raw["prompt_ids"], [Node(**n) for n in raw["nodes"]])


@dataclass
class Chunk:
    """What ``continue_batch`` generated for one row."""

    tokens: list[int]
    log_ratio: float
    finished: bool


def node_seed(seed: int, tree: int, node: int, purpose: str = "sample") -> int:
    """A per-node seed that depends only on (seed, tree, node, purpose): batching and resuming never change a tree."""
    digest = hashlib.blake2b(f"{seed}/{tree}/{node}/{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**62)


def ends_reply(stack: Stack, reply_ids: list[int], max_new_tokens: int) -> bool:
    """Whether a reply is over: a stop token, a new dialogue turn begun (as decoding cuts it), or the length limit."""
    return len(reply_ids) >= max_new_tokens or stack.format.finished(reply_ids)


def reply_text(stack: Stack, reply_ids: list[int]) -> str:
    """The reply as decoding shows it: special tokens dropped, cut where the reply ends."""
    return stack.format.reply_text(reply_ids)


def continue_batch(stack: Stack, contexts: list[list[int]], reply_starts: list[int], lengths: list[int],
                   cfg: DecodeConfig, seeds: list[int], max_new_tokens: int) -> list[Chunk]:
    """Continue partial replies by up to ``lengths[i]`` tokens each, as one batch, with ``cfg``'s method.

    ``generate_batch`` takes prompt *text* and formats it as a new turn; a partial reply must go on from
    its exact token ids (re-tokenising its text can split it differently, and the value models are trained
    on the ids), so this feeds left-padded ids straight to the core's `LaneDecoder`. Row i draws from its
    own generator seeded with ``seeds[i]``, so a row's chunk does not depend on the rest of the batch; a row
    whose chunk is complete leaves the batch.

    Args:
        contexts: per row, prompt ids followed by the reply so far; reply_starts: where the reply begins.
        max_new_tokens: the whole reply's length limit (a row reaching it is finished).
    """
    batch = stack.tokenizer.pad({"input_ids": contexts}, padding=True, padding_side="left", return_tensors="pt")
    lanes = [Lane(replace(cfg, max_new_tokens=n), r, s) for r, (n, s) in enumerate(zip(lengths, seeds, strict=True))]
    dec = LaneDecoder(stack, batch["input_ids"].to(stack.device), batch["attention_mask"].to(stack.device), lanes)
    chunks = [Chunk([], 0.0, False) for _ in contexts]
    while dec.alive:
        done = set()
        for r, step in dec.sample().items():
            chunk = chunks[r]
            chunk.tokens.append(step.token)
            chunk.log_ratio += step.logprob - step.base_logprob
            chunk.finished = ends_reply(stack, contexts[r][reply_starts[r]:] + chunk.tokens, max_new_tokens)
            if chunk.finished:
                done.add(r)
        dec.advance(done)
    return chunks


def new_tree(stack: Stack, index: int, prompt: str, cfg: TreeConfig) -> Tree:
    """A root-only tree; the prompt is cut from the left so prompt + reply fit the context (as decoding does)."""
    ids = stack.format.encode(prompt)
    room = stack.context_length - cfg.max_new_tokens
    if room < 1:
        raise ValueError(f"max_new_tokens {cfg.max_new_tokens} leaves no room in a context of {stack.context_length}")
    return Tree(index, prompt, ids[-room:], [Node(parent=-1, depth=0)])


def chunk_length(cfg: TreeConfig, level: int, left: int, rng: random.Random) -> int:
    """Tokens to generate below a node at ``level`` when ``left`` tokens of the reply remain."""
    if level == cfg.levels - 1:
        return left
    if cfg.chunk_range is not None:
        return min(left, rng.randint(*cfg.chunk_range))
    return min(left, rng.randint(1, max(1, 2 * (left // (cfg.levels - level)) - 1)))


def refusal_opener_ids(stack: Stack, k: int) -> list[int]:
    """Token ids of the ``k``-th refusal opener (`REFUSAL_OPENERS` in turn), as a reply's first tokens."""
    from .base_replies import REFUSAL_OPENERS

    return stack.tokenizer(REFUSAL_OPENERS[k % len(REFUSAL_OPENERS)], add_special_tokens=False)["input_ids"]


def add_children(tree: Tree, level: int, cfg: TreeConfig, stack: Stack | None = None) -> list[tuple[int, int]]:
    """Give every open node at ``level`` its children, empty, or at the root the first ``cfg.refusal_children``
    holding a refusal opener (``stack`` tokenises it). Returns (child index, tokens to sample) pairs."""
    jobs = []
    for i in range(len(tree.nodes)):
        node = tree.nodes[i]
        if node.depth != level or node.finished or node.children:
            continue
        left = cfg.max_new_tokens - len(tree.path(i))
        length = chunk_length(cfg, level, left, random.Random(node_seed(cfg.seed, tree.index, i, "length")))
        for j in range(cfg.root_children if level == 0 else cfg.inner_children):
            forced = refusal_opener_ids(stack, tree.index + j) if level == 0 and j < cfg.refusal_children else []
            node.children.append(len(tree.nodes))
            tree.nodes.append(Node(parent=i, depth=level + 1, tokens=forced))
            jobs.append((node.children[-1], max(1, length - len(forced))))
    return jobs


def expand_level(stack: Stack, trees: list[Tree], level: int, cfg: TreeConfig, decode_cfg: DecodeConfig) -> None:
    """Sample every child of every open node at ``level``, in batches of ``cfg.batch_rows`` rows."""
    jobs = [(tree, child, length) for tree in trees for child, length in add_children(tree, level, cfg, stack)]
    for start in range(0, len(jobs), cfg.batch_rows):
        batch = jobs[start : start + cfg.batch_rows]
        contexts = [tree.prompt_ids + tree.path(child) for tree, child, _ in batch]
        chunks = continue_batch(
            stack, contexts, [len(tree.prompt_ids) for tree, _, _ in batch], [n for _, _, n in batch], decode_cfg,
            [node_seed(cfg.seed, tree.index, child) for tree, child, _ in batch], cfg.max_new_tokens,
        )
        for (tree, child, _), chunk in zip(batch, chunks, strict=True):
            node = tree.nodes[child]  # a forced opener stays in front of what was sampled
            node.tokens, node.log_ratio, node.finished = node.tokens + chunk.tokens, chunk.log_ratio, chunk.finished


def score_leaves(stack: Stack, trees: list[Tree]) -> None:
    """Every objective's reward for every leaf of ``trees``, in one ``stack.score`` call."""
    leaves = [(tree, i) for tree in trees for i in tree.leaves()]
    texts = [reply_text(stack, tree.path(i)) for tree, i in leaves]
    scores = stack.score([tree.prompt for tree, _ in leaves], texts)  # objective -> (n,)
    for j, (tree, i) in enumerate(leaves):
        tree.nodes[i].rewards = {name: float(s[j]) for name, s in scores.items()}


def rollout_config(stack: Stack, cfg: TreeConfig, objective: str | None, beta: float) -> DecodeConfig:
    """π_0 = the base (``objective`` None); else MAVIS with λ one-hot on ``objective``."""
    if objective is None:
        return DecodeConfig(method="base", weights={stack.objectives[0]: 1.0}, top_k=cfg.top_k,
                            temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)
    return DecodeConfig(method="mavis", weights={objective: 1.0}, beta=beta, top_k=cfg.top_k,
                        temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)


def grow_trees(stack: Stack, prompts: list[tuple[int, str]], cfg: TreeConfig,
               decode_cfg: DecodeConfig) -> Iterator[list[Tree]]:
    """Grow and score the trees of (index, prompt) pairs, ``cfg.prompts_per_batch`` at a time.

    Yields each finished batch of trees (so a caller can save it before the next one starts).
    """
    for start in range(0, len(prompts), cfg.prompts_per_batch):
        trees = [new_tree(stack, i, p, cfg) for i, p in prompts[start : start + cfg.prompts_per_batch]]
        for level in range(cfg.levels):
            expand_level(stack, trees, level, cfg, decode_cfg)
        score_leaves(stack, trees)
        yield trees


# ---- targets: pure functions of the tree's structure and numbers ----------------------------------------


def path_sums(parents: list[int], values: list[float]) -> list[float]:
    """Σ of ``values`` along the path from the root to each node (parents[i] < i; the root's parent is -1).

    >>> path_sums([-1, 0, 1, 1], [0.0, 1.0, 2.0, 3.0])
    [0.0, 1.0, 3.0, 4.0]
    """
    out: list[float] = []
    for parent, value in zip(parents, values, strict=True):
        out.append(value + (out[parent] if parent >= 0 else 0.0))
    return out


def backup(children: list[list[int]], leaf_values: dict[int, float]) -> list[float]:
    """Monte-Carlo backup: a leaf keeps its value, an inner node gets the mean over its children.

    Children have larger indices than their parent, so one pass from the last node up suffices.

    >>> backup([[1, 2], [3, 4], [], [], []], {2: 1.0, 3: 2.0, 4: 4.0})
    [2.0, 3.0, 1.0, 2.0, 4.0]
    """
    out = [0.0] * len(children)
    for i in range(len(children) - 1, -1, -1):
        out[i] = sum(out[c] for c in children[i]) / len(children[i]) if children[i] else leaf_values[i]
    return out


def node_targets(tree: Tree, objective: str, zeta: float) -> list[float]:
    """Regression target of every node for one objective: backup of reward − ζ·(whole-path log-ratio).

    ζ = 0 (iteration 0) gives the plain Monte-Carlo mean reward below each node.
    """
    ratios = path_sums([n.parent for n in tree.nodes], [n.log_ratio for n in tree.nodes])
    leaf_values = {i: tree.nodes[i].rewards[objective] - zeta * ratios[i] for i in tree.leaves()}
    return backup([n.children for n in tree.nodes], leaf_values)


def append_trees(path, trees: list[Tree]) -> None:
    """Append trees to a JSON-lines file (one tree a line), flushed so a crash loses at most a batch."""
    with open(path, "a", encoding="utf-8") as f:
        for tree in trees:
            f.write(json.dumps(tree.to_dict()) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_trees(paths) -> list[Tree]:
    """Trees of JSON-lines files, ordered by prompt index; a torn last line (an interrupted write) is skipped."""
    trees: dict[int, Tree] = {}
    for path in paths:
        for line in open(path, encoding="utf-8").read().splitlines():
            try:
                tree = Tree.from_dict(json.loads(line))
            except json.JSONDecodeError:
                continue
            trees[tree.index] = tree
    return [trees[i] for i in sorted(trees)]
