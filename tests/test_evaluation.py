"""Sweeps over λ on the tiny stack, and the Pareto, hypervolume and Spearman helpers on hand-made tables."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from mavis_core import DecodeConfig, generate_batch
from mavis_core.cli import main
from mavis_core.evaluation import (
    all_pairs_grid,
    front_figure,
    hypervolumes,
    pareto_front,
    reference_point,
    series_of,
    sweep,
    weight_spearman,
)
from mavis_core.pareto import hypervolume
from mavis_core.search import search_batch

PROMPTS = ["hello there", "tell me a joke"]
SEEDS = [5]
GRID = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 1.0, 0.0]]
BASE_CFG = DecodeConfig(weights={"helpful": 1.0}, beta=2.0, top_k=8, max_new_tokens=8)


@pytest.fixture(scope="module")
def table(tiny_stack):
    return sweep(tiny_stack, PROMPTS, SEEDS, tiny_stack.methods, GRID, BASE_CFG)


def test_sweep_table_is_tidy(table, tiny_stack):
    assert len(table) == 1 + 3 * len(GRID)  # the base once (it ignores λ), every other method at each λ
    objectives = tiny_stack.objectives
    expected = ["method", *(f"w_{o}" for o in objectives), *(f"r_{o}" for o in objectives),
                *(f"se_{o}" for o in objectives),
                "kl", "tokens", "tokens_per_s", "seconds", "seconds_per_reply", "n", "refusal", "beta", "strength",
                "top_k", "temperature", "max_new_tokens", "search", "search_size"]
    assert list(table.columns) == expected
    assert table.groupby("method").size().to_dict() == {"base": 1, "mavis": 3, "mod": 3, "rsoup": 3}
    assert table.loc[table.method == "base", "w_helpful"].isna().all()
    steered = table[table.method != "base"]
    assert np.allclose(steered[[f"w_{o}" for o in objectives]].sum(axis=1), 1.0)
    assert (table.n == len(PROMPTS) * len(SEEDS)).all()
    assert (table.beta == 2.0).all() and (table.top_k == 8).all() and (table.max_new_tokens == 8).all()
    assert (table.tokens > 0).all() and (table.tokens <= 8).all() and (table.tokens_per_s > 0).all()


def test_sweep_values_equal_direct_generation(table, tiny_stack):
    weights = dict(zip(tiny_stack.objectives, GRID[1], strict=True))
    cfg = DecodeConfig(method="mavis", weights=weights, beta=2.0, top_k=8, max_new_tokens=8)
    gens = generate_batch(tiny_stack, PROMPTS, cfg, SEEDS * len(PROMPTS))
    scores = tiny_stack.score(PROMPTS, [g.text for g in gens])
    row = table[(table.method == "mavis") & (table.w_helpful == 0.5)].iloc[0]
    for name, values in scores.items():
        assert row[f"r_{name}"] == pytest.approx(float(values.mean()), rel=1e-5)
        assert row[f"se_{name}"] == pytest.approx(float(values.std() / math.sqrt(len(values))), rel=1e-4)
    assert row.kl == pytest.approx(np.mean([g.kl for g in gens]), rel=1e-5)
    assert row.tokens == pytest.approx(np.mean([len(g.events) for g in gens]))


def test_batched_lambda_points_equal_one_point_per_batch(table, tiny_stack):
    # the fixture decodes every method's 3 λ points (2 replies each) as one batch; here each point runs alone
    alone = sweep(tiny_stack, PROMPTS, SEEDS, tiny_stack.methods, GRID, BASE_CFG, lanes_per_batch=1)
    same = [c for c in table.columns if c.startswith(("w_", "r_", "se_")) or c in ("method", "kl", "tokens", "n")]
    pd.testing.assert_frame_equal(table[same], alone[same], rtol=1e-5)
    batched = table[table.method == "mod"]
    assert batched.tokens_per_s.nunique() == 1  # one batch: its throughput, shared by its points
    assert batched.seconds_per_reply.tolist() == pytest.approx((batched.seconds / batched.n).tolist())


def test_sweep_rejects_methods_the_stack_lacks(tiny_stack):
    with pytest.raises(ValueError, match="can't run"):
        sweep(tiny_stack, PROMPTS, SEEDS, ["nope"], GRID, BASE_CFG)
    with pytest.raises(ValueError, match="at least one prompt"):
        sweep(tiny_stack, [], SEEDS, ["base"], GRID, BASE_CFG)


def test_best_of_n_sweep_keeps_each_searches_winner(tiny_stack):
    """A best-of-N row averages the winners `search_batch` picks at the seeds of `seed_schedule` (0, N, 2N, …)."""
    cfg = dataclasses.replace(BASE_CFG, search="best_of_n", num_candidates=3)
    df = sweep(tiny_stack, PROMPTS, [0, 1], ["mavis"], GRID[1:2], cfg)
    row = df.iloc[0]
    assert row.search == "best_of_n" and row.search_size == 3 and row.n == len(PROMPTS) * 2
    weights = dict(zip(tiny_stack.objectives, GRID[1], strict=True))
    direct = dataclasses.replace(cfg, method="mavis", weights=weights)
    winners = {(p, s): r.best.text for s in (0, 1)
               for p, r in zip(PROMPTS, search_batch(tiny_stack, PROMPTS, dataclasses.replace(direct, seed=3 * s)),
                               strict=True)}
    texts = [winners[(p, s)] for p in PROMPTS for s in (0, 1)]
    scores = tiny_stack.score([p for p in PROMPTS for _ in (0, 1)], texts)
    for name, values in scores.items():
        assert row[f"r_{name}"] == pytest.approx(float(values.mean()), rel=1e-5)
    assert series_of(df).tolist() == ["mavis best-of-3"]


def test_beam_sweep_searches_each_prompt_once(tiny_stack):
    cfg = dataclasses.replace(BASE_CFG, search="beam", num_beams=2)
    df = sweep(tiny_stack, PROMPTS, [0, 1, 2], ["base", "mavis"], GRID[:1], cfg)
    assert (df.n == len(PROMPTS)).all()  # deterministic: more seeds would repeat the same replies
    assert series_of(df).tolist() == ["base beam-2", "mavis beam-2"]
    assert (df.seconds_per_reply > 0).all()


def test_searches_are_separate_series_on_fronts_and_hypervolumes():
    df = pd.concat([hand_table().assign(search="sample", search_size=1),
                    hand_table().assign(search="beam", search_size=4, r_x=lambda d: d.r_x + 1)], ignore_index=True)
    vols = hypervolumes(df, ["x", "y"]).set_index("method")
    assert set(vols.index) == {"a", "b", "a beam-4", "b beam-4"}
    assert vols.loc["a beam-4", "hypervolume"] > vols.loc["a", "hypervolume"]
    assert len(pareto_front(df, ["x", "y"])) == 2 * 4
    names = {trace.name for trace in front_figure(df.assign(kl=0.0), "x", "y").data}
    assert {"a front", "a beam-4 front", "b beam-4 λ points"} <= names


def hand_table() -> pd.DataFrame:
    return pd.DataFrame({
        "method": ["a", "a", "a", "a", "b", "b"],
        "r_x": [0.0, 1.0, 0.5, 0.2, 2.0, 2.0],
        "r_y": [1.0, 0.0, 0.5, 0.2, 2.0, 1.0],
    })


def test_pareto_front_per_method():
    front = pareto_front(hand_table(), ["x", "y"])
    # method a: (0.2, 0.2) is beaten by (0.5, 0.5); method b: (2, 1) by (2, 2); methods never compete
    assert sorted(front.index) == [0, 1, 2, 4]
    assert list(pareto_front(hand_table(), ["x"]).index) == [1, 4, 5]  # ties on one objective both stay


def test_hypervolume_matches_rectangles():
    # union of [0,2]x[0,1] and [0,1]x[0,2]: 2 + 2 - 1
    assert hypervolume([(2, 1), (1, 2)], (0, 0)) == pytest.approx(3.0)
    # three steps above (-1, -1): widths 4, 3, 1 times heights 1, 1, 2
    assert hypervolume([(3, 0), (2, 1), (0, 3), (1, 0.5)], (-1, -1)) == pytest.approx(4 + 3 + 2)
    assert hypervolume([(1, 1)], (1, 0)) == 0.0  # on the reference: no area
    assert hypervolume([], (0, 0)) == 0.0


def test_hypervolumes_state_a_shared_reference():
    df = hand_table()
    ref = reference_point(df, ["x", "y"])
    assert ref == pytest.approx([0.0 - 0.2, 0.0 - 0.2])  # min minus 10 % of the range (2)
    vols = hypervolumes(df, ["x", "y"]).set_index("method")
    assert vols.loc["b", "hypervolume"] == pytest.approx(2.2 * 2.2)
    assert vols.loc["a", "ref_x"] == pytest.approx(-0.2) and vols.loc["a", "ref_y"] == pytest.approx(-0.2)
    assert (vols.x == "x").all() and (vols.y == "y").all()
    with pytest.raises(ValueError, match="two objectives"):
        hypervolumes(df, ["x"])


def test_weight_spearman_on_hand_table():
    df = pd.DataFrame({
        "method": ["m"] * 4 + ["base"],
        "w_x": [0.0, 0.3, 0.6, 1.0, math.nan], "w_y": [1.0, 0.7, 0.4, 0.0, math.nan], "w_z": [0.0] * 4 + [math.nan],
        "r_x": [1.0, 2.0, 3.0, 10.0, 0.0], "r_y": [4.0, 1.0, 2.0, 3.0, 0.0], "r_z": [1.0, 2.0, 3.0, 4.0, 0.0],
    })
    got = weight_spearman(df).set_index("objective")
    assert list(got.method) == ["m", "m"]  # z never varies and the base has no λ: no correlation to report
    assert got.loc["x", "spearman"] == pytest.approx(1.0)
    # y's weight ranks 4, 3, 2, 1 against reward ranks 4, 1, 2, 3: 1 - 6·(0 + 4 + 0 + 4) / (4·15) = 0.2
    assert got.loc["y", "spearman"] == pytest.approx(0.2)


def test_cli_writes_csv(tiny_dir, tmp_path, capsys):
    out = tmp_path / "sweep.csv"
    code = main(["sweep", "--stack", str(tiny_dir / "stack-sep.toml"), "--pair", "helpful,humor", "--methods",
                 "base,mod", "--prompts", "1", "--max-new-tokens", "4", "--top-k", "5", "--out", str(out)])
    assert code == 0
    df = pd.read_csv(out)
    assert len(df) == 1 + 11 and set(df.method) == {"base", "mod"}
    assert (df.loc[df.method == "mod", "w_harmless"] == 0).all()
    printed = capsys.readouterr().out
    assert "hypervolume" in printed and "Spearman" in printed
    assert set(pd.read_csv(tmp_path / "sweep_hypervolume.csv").method) == {"base", "mod"}
    assert set(pd.read_csv(tmp_path / "sweep_spearman.csv").objective) == {"helpful", "humor"}
    assert "plotly" in (tmp_path / "sweep_helpful_humor.html").read_text(encoding="utf-8")


def test_cli_sweeps_search_as_an_axis(tiny_dir, tmp_path):
    out = tmp_path / "search.csv"
    assert main(["sweep", "--stack", str(tiny_dir / "stack-sep.toml"), "--pair", "helpful,humor", "--methods",
                 "mavis", "--prompts", "1", "--max-new-tokens", "3", "--top-k", "4", "--search", "sample,beam",
                 "--num-beams", "2", "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert df.groupby("search").size().to_dict() == {"beam": 11, "sample": 11}
    assert set(pd.read_csv(tmp_path / "search_hypervolume.csv").method) == {"mavis", "mavis beam-2"}
    # beside a search, every sampled point is its own batch (timed as a search's point is), not a share of one
    assert df[df.search == "sample"].tokens_per_s.nunique() > 1


def test_cli_rejects_bad_search(tiny_dir, capsys):
    assert main(["sweep", "--stack", str(tiny_dir / "stack-sep.toml"), "--search", "sample,greedy"]) == 2
    assert "--search" in capsys.readouterr().err


def test_cli_rejects_bad_pair(tiny_dir, capsys):
    assert main(["sweep", "--stack", str(tiny_dir / "stack-sep.toml"), "--pair", "helpful,nope"]) == 2
    assert "--pair" in capsys.readouterr().err


def testall_pairs_grid_grid_shares_corners():
    grid = all_pairs_grid(3)
    assert len(grid) == 3 * 11 - 3  # each corner (one objective alone) lies on two pairs' edges
    assert len({tuple(lam) for lam in grid}) == len(grid)
    assert all(sum(lam) == pytest.approx(1.0) and sum(w > 0 for w in lam) <= 2 for lam in grid)


def test_cli_simplex_reports_every_pair(tiny_dir, tmp_path):
    out = tmp_path / "simplex.csv"
    assert main(["sweep", "--stack", str(tiny_dir / "stack-sep.toml"), "--simplex", "--methods", "mavis",
                 "--prompts", "1", "--max-new-tokens", "2", "--out", str(out)]) == 0
    assert len(pd.read_csv(out)) == 15
    volumes = pd.read_csv(tmp_path / "simplex_hypervolume.csv")
    pairs = set(zip(volumes.x, volumes.y, strict=True))
    assert pairs == {("helpful", "harmless"), ("helpful", "humor"), ("harmless", "humor")}


def test_front_figure_draws_points_fronts_and_reference():
    df = hand_table().assign(kl=1.0, w_x=[0.0, 1.0, 0.5, 0.2, math.nan, math.nan],
                             w_y=[1.0, 0.0, 0.5, 0.8, math.nan, math.nan])
    fig = front_figure(df, "x", "y", [-0.2, -0.2])
    names = [t.name for t in fig.data]
    assert names == ["a λ points", "a front", "b λ points", "b front", "hypervolume reference"]
    assert list(fig.data[1].x) == [0.0, 0.5, 1.0]  # a's front, left to right, without the dominated (0.2, 0.2)
    assert "λ: none (base)" in fig.data[2].hovertext[0]
