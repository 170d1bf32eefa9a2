"""`python -m mavis_core value-agreement`: how well do the stack's value models rank what MAVIS chooses between?

MAVIS picks among the continuations of one prefix, so what matters is not a value model's error but whether it
orders *siblings* the way their rewards do. On held-out prompts this grows rollout trees from the base (the
shape value training uses), takes each node's Monte-Carlo target (the mean reward of the leaves below it,
`node_targets` with ζ = 0: on the base's own trees the log-ratio is 0) and the value model's prediction, and
reports per objective:

- *value r*: Pearson correlation of prediction and target over all nodes (levels included, so depth helps);
- *sibling r*: the same after subtracting each sibling group's mean from both: agreement on the differences
  MAVIS acts on;
- *pair order*: the share of sibling pairs with distinct targets that the prediction orders the same way
  (0.5 is a coin);
- *leaf sibling r*: sibling r over the groups of finished replies only. A leaf's target is its reward itself,
  while an inner node's is a mean over a few sampled leaves (noisy), so this part is free of sampling noise;
- *prediction sd* and *target sd*: how much the predictions and the targets vary over the nodes. A model whose
  predictions barely vary tilts decoding little at any β.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..options import command_line
from ..prompts import heldout_prompts
from ..stack import Stack
from ..values import values_uncached
from .runs import TreeOptions
from .trees import Tree, TreeConfig, grow_trees, node_targets, rollout_config
from .value_training import guided_by, load_value_model

DEFAULT_PROMPTS = 8
# The shape value training grows (assets' values-fused card: 4 root children, then 2, 3 levels, 48 tokens).
TREE = TreeConfig(root_children=4, inner_children=2, levels=3, max_new_tokens=48)


def sibling_agreement(pred: list[float], target: list[float], groups: list[list[int]]) -> dict[str, float]:
    """Agreement of ``pred`` with ``target`` (one value per node) overall and within sibling ``groups`` (lists
    of node indices sharing a parent, each of 2 or more).

    Here each group's differences are predicted exactly, but the second group sits 10 higher than predicted:
    sibling r is perfect, value r is not.

    >>> r = sibling_agreement([1.0, 2.0, 3.0, 0.0], [0.0, 2.0, 13.0, 7.0], [[0, 1], [2, 3]])
    >>> round(r["value_r"], 2), r["sibling_r"], r["pair_order"], r["pairs"]
    (0.44, 1.0, 1.0, 2)
    """
    p, t = np.asarray(pred, float), np.asarray(target, float)
    dp, dt, agree, pairs = [], [], 0, 0
    for g in groups:
        dp.extend(p[g] - p[g].mean())
        dt.extend(t[g] - t[g].mean())
        for a in range(len(g)):
            for b in range(a + 1, len(g)):
                diff = t[g[a]] - t[g[b]]
                if diff != 0:
                    pairs += 1
                    agree += bool(np.sign(p[g[a]] - p[g[b]]) == np.sign(diff))
    return {"value_r": _pearson(p, t), "sibling_r": _pearson(np.array(dp), np.array(dt)),
            "pair_order": agree / pairs if pairs else float("nan"), "pairs": pairs}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's r, NaN where either side does not vary (a correlation with a constant is undefined)."""
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def node_values(stack: Stack, trees: list[Tree]) -> np.ndarray:
    """(nodes, objectives): every value model's prediction at the end of every non-root node, in tree order;
    NaN for an objective no value model serves."""
    rows = [(tree, i) for tree in trees for i in range(1, len(tree.nodes))]
    out = np.full((len(rows), len(stack.objectives)), np.nan)
    served = sorted({m for vm in stack.value_models for m in vm.heads if m >= 0})
    for n, (tree, i) in enumerate(tqdm(rows, desc="values", unit="node")):
        ids = torch.tensor([tree.prompt_ids + tree.path(i)], device=stack.device)
        values = torch.zeros(len(stack.objectives))
        for vm in stack.value_models:
            values += values_uncached(vm, ids, len(stack.objectives))[0]
        out[n, served] = values[served].numpy()
    return out


def agreement_table(stack: Stack, trees: list[Tree]) -> pd.DataFrame:
    """One row per objective served by a value model: nodes, sibling pairs, value r, sibling r, pair order,
    leaf sibling r, prediction sd and target sd (see the module docstring)."""
    preds = node_values(stack, trees)
    groups, leaf_groups, offset = [], [], 0
    for tree in trees:  # node i of a tree is row offset + i - 1 of preds
        for node in tree.nodes:
            if len(node.children) >= 2:
                groups.append([offset + c - 1 for c in node.children])
                if not any(tree.nodes[c].children for c in node.children):
                    leaf_groups.append(groups[-1])
        offset += len(tree.nodes) - 1
    rows = []
    for m, objective in enumerate(stack.objectives):
        if np.isnan(preds[:, m]).all():
            continue
        target = [v for tree in trees for v in node_targets(tree, objective, 0.0)[1:]]
        r = sibling_agreement(list(preds[:, m]), target, groups)
        leaves = sibling_agreement(list(preds[:, m]), target, leaf_groups)
        rows.append({"objective": objective, "nodes": len(target), "sibling pairs": r["pairs"],
                     "value r": r["value_r"], "sibling r": r["sibling_r"], "pair order": r["pair_order"],
                     "leaf sibling r": leaves["sibling_r"], "prediction sd": float(np.std(preds[:, m])),
                     "target sd": float(np.std(target))})
    return pd.DataFrame(rows)


def held_out_trees(stack: Stack, prompts: list[str], cfg: TreeConfig) -> list[Tree]:
    """Trees of ``prompts`` rolled out from the base, with a progress bar."""
    batches = grow_trees(stack, list(enumerate(prompts)), cfg, rollout_config(stack, cfg, None, 0.0))
    return [t for batch in tqdm(batches, desc="trees", total=-(-len(prompts) // cfg.prompts_per_batch))
            for t in batch]


def markdown(table: pd.DataFrame, prompts: int, cfg: TreeConfig, command: str) -> str:
    lines = [f"**Value-model agreement on held-out trees** (`{command}`): {prompts} held-out prompts, trees from "
             f"the base ({cfg.root_children} root children, then {cfg.inner_children}, {cfg.levels} levels, "
             f"{cfg.max_new_tokens} tokens, top-k {cfg.top_k}, seed {cfg.seed}). Targets: the mean reward of the "
             "leaves below a node (a finished reply's: its reward). *sibling r* and *pair order* (0.5: a coin) are "
             "what MAVIS acts on; *leaf sibling r* uses finished replies only, whose targets carry no sampling "
             "noise.", "",
             "| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


@dataclass(frozen=True)
class ValueAgreementConfig(TreeOptions):
    """One ``value-agreement`` run, field for field its command-line options (`config_argv`).

    Args:
        stack: the stack whose value models are measured. prompts: the first N held-out prompts.
        compare: other value model folders measured on the same trees (e.g. iteration 0's).
        out: also write the table as CSV here.
        The others are `TreeOptions`' (the held-out trees; by default TREE, the shape value training grows).
    """

    root_children: int = TREE.root_children
    inner_children: int = TREE.inner_children
    levels: int = TREE.levels
    max_new_tokens: int = TREE.max_new_tokens
    stack: Path = Path("assets/stack.toml")
    prompts: int = DEFAULT_PROMPTS
    compare: tuple[Path, ...] = field(default=(), metadata={"repeat": True})
    out: Path | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.prompts < 1:
            raise ValueError(f"--prompts must be >= 1, got {self.prompts}")


def value_agreement(cfg: ValueAgreementConfig) -> pd.DataFrame:
    """Measure and print the table (one row per objective, and per compared model); returns it."""
    from ..stack import load_stack

    stack = load_stack(cfg.stack, device=torch.device("cpu") if not torch.cuda.is_available() else None)
    if not stack.value_models:
        raise ValueError(f"stack {cfg.stack} names no value models: nothing to measure")
    prompts = heldout_prompts(cfg.stack, stack.spec.prompts)[:cfg.prompts]
    if not prompts:
        raise ValueError(f"no held-out prompts: put eval_prompts.json beside {cfg.stack} or list prompts in it")
    trees = held_out_trees(stack, prompts, cfg.trees())
    parts = [agreement_table(stack, trees).assign(model="stack")]
    for folder in cfg.compare:
        with guided_by(stack, load_value_model(stack, folder)):
            name = folder.parent.name if folder.name == "best" else folder.name
            parts.append(agreement_table(stack, trees).assign(model=name))
    table = pd.concat(parts, ignore_index=True)
    if not cfg.compare:
        table = table.drop(columns="model")
    else:
        table = table[["model", *[c for c in table.columns if c != "model"]]]
    print(markdown(table, len(prompts), cfg.trees(), command_line("value-agreement", cfg)))
    if cfg.out:
        cfg.out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(cfg.out, index=False)
    return table
