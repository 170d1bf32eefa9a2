"""`python -m mavis_core value-agreement`: value models against the Monte-Carlo targets of held-out trees."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mavis_core.cli import main
from mavis_core.training.trees import Node, Tree
from mavis_core.training.value_agreement import agreement_table, sibling_agreement


def test_sibling_agreement_reads_only_differences_within_a_group():
    # Both groups are ordered right, though the second sits far below the first: sibling r ignores the offset.
    r = sibling_agreement([10.0, 11.0, -5.0, -4.0, -6.0], [0.0, 1.0, 0.0, 2.0, -1.0], [[0, 1], [2, 3, 4]])
    assert r["sibling_r"] == pytest.approx(np.corrcoef([-0.5, 0.5, 0, 1, -1], [-0.5, 0.5, -1 / 3, 5 / 3, -4 / 3])[0, 1])
    assert r["pair_order"] == 1.0 and r["pairs"] == 4
    reversed_ = sibling_agreement([1.0, 0.0], [0.0, 1.0], [[0, 1]])
    assert reversed_["sibling_r"] == pytest.approx(-1.0) and reversed_["pair_order"] == 0.0
    tied = sibling_agreement([1.0, 0.0], [2.0, 2.0], [[0, 1]])  # equal targets: no pair to order, no r
    assert tied["pairs"] == 0 and math.isnan(tied["pair_order"]) and math.isnan(tied["sibling_r"])


def _tree(index: int, leaf_rewards: list[float]) -> Tree:
    """A root with two children of two leaves each; leaf rewards in order."""
    nodes = [Node(parent=-1, depth=0, children=[1, 2]), Node(0, 1, [5], children=[3, 4]),
             Node(0, 1, [6], children=[5, 6])]
    nodes += [Node(1 if i < 2 else 2, 2, [7 + i], finished=True, rewards={"humor": r, "helpful": 0.0,
                                                                         "harmless": 0.0})
              for i, r in enumerate(leaf_rewards)]
    return Tree(index, "p", [1, 2], nodes)


def test_table_groups_siblings_across_trees(monkeypatch):
    """Predictions equal to the targets agree perfectly; the rows follow the stack's objectives it serves."""
    import mavis_core.training.value_agreement as va

    trees = [_tree(0, [1.0, 3.0, 0.0, 4.0]), _tree(1, [2.0, 0.0, 5.0, 1.0])]
    targets = [v for t in trees for v in va.node_targets(t, "humor", 0.0)[1:]]
    stack = type("S", (), {"objectives": ["helpful", "harmless", "humor"]})()
    monkeypatch.setattr(va, "node_values", lambda s, ts: np.array([[np.nan, np.nan, v] for v in targets]))
    table = agreement_table(stack, trees)
    assert list(table.objective) == ["humor"]
    row = table.iloc[0]
    assert row["nodes"] == 12 and row["sibling pairs"] == 5  # a root pair and two leaf pairs a tree; one root ties
    assert row["sibling r"] == pytest.approx(1.0) and row["leaf sibling r"] == pytest.approx(1.0)
    assert row["pair order"] == 1.0


def test_cli_on_the_tiny_stack(tiny_dir, tmp_path, capsys):
    out = tmp_path / "agreement.csv"
    assert main(["value-agreement", "--stack", str(tiny_dir / "stack-fused.toml"), "--prompts", "2",
                 "--levels", "2", "--max-new-tokens", "6", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert ("| objective | nodes | sibling pairs | value r | sibling r | pair order | leaf sibling r | prediction sd "
            "| target sd |") in printed
    table = pd.read_csv(out)
    assert set(table.objective) == {"helpful", "harmless", "humor"}
    assert (table["nodes"] == 2 * (4 + 4 * 2)).all()  # 4 root children, 2 children each, per prompt
    assert table["pair order"].between(0, 1).all()
    compared = tmp_path / "compared.csv"
    assert main(["value-agreement", "--stack", str(tiny_dir / "stack-fused.toml"), "--prompts", "1", "--levels", "2",
                 "--max-new-tokens", "4", "--compare", str(tiny_dir / "values" / "fused"), "--out", str(compared)]) == 0
    both = pd.read_csv(compared)  # the same model twice, on the same trees: the same numbers
    assert list(both.model.unique()) == ["stack", "fused"]
    pd.testing.assert_frame_equal(both[both.model == "stack"].drop(columns="model").reset_index(drop=True),
                                  both[both.model == "fused"].drop(columns="model").reset_index(drop=True))
    assert main(["value-agreement", "--stack", str(tiny_dir / "stack-fused.toml"), "--prompts", "0"]) == 2
    assert "--prompts must be >= 1" in capsys.readouterr().err
