"""The study report: means and Krippendorff's α against hand computation, the human–reward agreement recovering
a planted correlation, bootstrap intervals, exports, and the SIMULATED label wherever simulated answers show."""

from __future__ import annotations

import csv
import itertools
import json
import math
import sqlite3
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mavis_core.cli import main
from mavis_core.study import ShownTrial, StudySessions, read_study
from mavis_core.study.analysis import bootstrap_mean, krippendorff_alpha, mean_table, reward_agreement
from mavis_core.study.report import ReportConfig, progress, write_report
from mavis_core.study.simulate import fake_pool, simulate

STUDY = """
title = "Small"
instructions = "Rate."
methods = ["base", "mavis", "mod"]
trials_per_participant = 3

[prompts]
items = ["p0", "p1", "p2", "p3"]

[weights]
conditions = [{ helpful = 1, harmless = 0 }, { helpful = 0, harmless = 1 }]

[task]
kinds = KINDS
objectives = ["helpful", "harmless"]
"""
RATING = {"base": 2, "mavis": 5, "mod": 3}


def small_study(tmp_path: Path, kinds: str = '["ratings", "favourite"]') -> tuple[Path, Path]:
    path = tmp_path / "small.toml"
    path.write_text(STUDY.replace("KINDS", kinds))
    db = tmp_path / "study.db"
    fake_pool(read_study(path), db, ("base", "mavis", "mod"))
    return path, db


def ordinal_alpha(matrix: list[list[float]]) -> float:
    """Krippendorff's α, ordinal, from the coincidence matrix (Krippendorff 2011, section C), written out
    here independently of the package: raters × units, NaN where a rater did not rate."""
    units = [[v for v in col if not math.isnan(v)] for col in zip(*matrix, strict=True)]
    o: dict[tuple, float] = defaultdict(float)
    for values in (u for u in units if len(u) >= 2):
        for i, j in itertools.permutations(range(len(values)), 2):
            o[values[i], values[j]] += 1 / (len(values) - 1)
    n_c = defaultdict(float)
    for (c, _), v in o.items():
        n_c[c] += v
    n = sum(n_c.values())
    grades = sorted(n_c)

    def delta(c: float, k: float) -> float:
        lo, hi = min(c, k), max(c, k)
        return (sum(n_c[g] for g in grades if lo <= g <= hi) - (n_c[c] + n_c[k]) / 2) ** 2

    observed = sum(v * delta(c, k) for (c, k), v in o.items())
    expected = sum(n_c[c] * n_c[k] * delta(c, k) for c in grades for k in grades)
    return 1 - (n - 1) * observed / expected


def test_krippendorff_alpha_matches_the_hand_computation():
    nan = float("nan")
    matrix = [[1, 2, 3, 3, 2, 1, 4, 1, 2, nan], [1, 2, 3, 3, 2, 2, 4, 1, 2, 5], [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5]]
    rows = [{"pid": f"r{r}", "unit": f"u{u}", "objective": "helpful", "rating": v}
            for r, row in enumerate(matrix) for u, v in enumerate(row) if not math.isnan(v)]
    table = krippendorff_alpha(pd.DataFrame(rows), points=5)
    assert table.loc[0, "replies"] == 10 and table.loc[0, "raters"] == 3
    assert table.loc[0, "alpha"] == pytest.approx(ordinal_alpha(matrix), abs=1e-9)
    assert 0.5 < table.loc[0, "alpha"] < 1


def test_the_bootstrap_resamples_participants_and_brackets_the_mean():
    values = np.array([1.0, 1.0, 5.0, 5.0, 3.0])
    mean, low, high = bootstrap_mean(values, np.array(["a", "a", "b", "b", "c"]), resamples=500)
    assert mean == 3.0 and 1.0 <= low < mean < high <= 5.0
    assert bootstrap_mean(values, np.array(["a"] * 5)) == (3.0, 3.0, 3.0)  # one participant: no spread to draw


@pytest.mark.parametrize("planted", [0.0, 0.6, 0.9])
def test_human_reward_agreement_recovers_a_planted_correlation(planted):
    rng = np.random.default_rng(0)
    reward = rng.standard_normal(4000)
    human = planted * reward + math.sqrt(1 - planted**2) * rng.standard_normal(4000)
    ratings = pd.DataFrame({"objective": "helpful", "unit": np.arange(4000), "rating": human, "reward": reward})
    expected = 6 / math.pi * math.asin(planted / 2)  # Spearman's ρ of a bivariate normal with correlation r
    assert reward_agreement(ratings).loc[0, "spearman"] == pytest.approx(expected, abs=0.03)


def answer_all(sessions: StudySessions, pids: list[str]) -> list[dict]:
    """Every participant rates each reply by its method (`RATING`, +1 for harmless) and picks slot A; returns
    what was given, one row per rating, with the hidden method."""
    given = []
    for pid in pids:
        shown = sessions.start(pid)
        while isinstance(shown, ShownTrial):
            hidden = sessions.hidden(pid, shown.position)
            ratings = {s: {"helpful": RATING[h["method"]], "harmless": min(5, RATING[h["method"]] + 1 + len(pid) % 2)}
                       for s, h in zip(shown.slots, hidden, strict=True)}
            given += [{"pid": pid, "method": h["method"], "objective": o, "rating": r, "condition": shown.weights}
                      for s, h in zip(shown.slots, hidden, strict=True) for o, r in ratings[s].items()]
            shown = sessions.submit(pid, shown.position, {"ratings": ratings, "favourite": "A"})
    return given


def test_the_report_and_its_exports_match_hand_computed_means(tmp_path):
    path, db = small_study(tmp_path)
    given = answer_all(StudySessions(path, db), ["ann", "bo", "cyd", "dee"])
    page = write_report(ReportConfig(path, db, tmp_path / "out", resamples=200))
    means = pd.read_csv(tmp_path / "out" / "means.csv")
    sums: dict[tuple, list] = defaultdict(list)
    for g in given:
        sums[g["method"], g["objective"]].append(g["rating"])
    for (method, objective), values in sums.items():
        row = means[(means["method"] == method) & (means["objective"] == objective)].iloc[0]
        assert row["mean"] == pytest.approx(sum(values) / len(values)) and row["ratings"] == len(values)
        assert row["low"] <= row["mean"] <= row["high"]
    with open(tmp_path / "out" / "ratings.csv") as f:
        exported = list(csv.DictReader(f))
    assert len(exported) == len(given) == 4 * 3 * 3 * 2
    assert sorted((r["pid"], r["method"], r["objective"], int(r["rating"])) for r in exported) == sorted(
        (g["pid"], g["method"], g["objective"], g["rating"]) for g in given)
    assert "SIMULATED" not in page.read_text()  # people's answers are not labelled simulated
    favourites = pd.read_csv(tmp_path / "out" / "favourites.csv")
    assert favourites["picked"].sum() == 4 * 3 and set(favourites["shown"]) == {12}
    pairs = [json.loads(line) for line in (tmp_path / "out" / "preferences.jsonl").read_text().splitlines()]
    assert len(pairs) == 4 * 3 * 2  # the favourite over each of the 2 other replies of every trial
    for pair in pairs:
        assert pair["chosen"].startswith(f"reply of {pair['chosen_method']} to prompt ")
        assert pair["rejected"].startswith(f"reply of {pair['rejected_method']} ")
        assert pair["weights"] in ({"helpful": 1.0, "harmless": 0.0}, {"helpful": 0.0, "harmless": 1.0})
        assert pair["source"] == "favourite" and pair["simulated"] is False


def test_alpha_in_the_report_is_the_hand_computed_one(tmp_path):
    path, db = small_study(tmp_path)
    given = pd.DataFrame(answer_all(StudySessions(path, db), ["ann", "bo", "cyd", "dee", "eve", "fay"]))
    write_report(ReportConfig(path, db, tmp_path / "out", resamples=50))
    agreement = pd.read_csv(tmp_path / "out" / "rater_agreement.csv").set_index("objective")
    ratings = pd.read_csv(tmp_path / "out" / "ratings.csv")
    for objective in ("helpful", "harmless"):
        table = ratings[ratings["objective"] == objective].pivot_table(index="pid", columns="unit", values="rating")
        table = table.loc[:, table.notna().sum() >= 2]
        assert agreement.loc[objective, "alpha"] == pytest.approx(ordinal_alpha(table.to_numpy().tolist()))
    assert len(given) == 6 * 3 * 3 * 2


def test_simulated_answers_are_labelled_and_votes_make_a_leaderboard(tmp_path):
    path, db = small_study(tmp_path, '["ratings", "pairwise"]')
    simulate(StudySessions(path, db), 6)
    assert main(["study", "report", str(path), "--study-db", str(db), "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    assert "(SIMULATED)" in (out / "report.md").read_text() and "SIMULATED DATA" in (out / "report.html").read_text()
    board = pd.read_csv(out / "leaderboard.csv")
    assert set(board["method"]) <= {"base", "mavis", "mod"} and board["simulated"].all()
    assert pd.read_csv(out / "votes.csv")["simulated"].all() and pd.read_csv(out / "means.csv")["simulated"].all()
    with sqlite3.connect(db) as con:
        votes = con.execute("SELECT COUNT(*) FROM study_answers WHERE answer LIKE '%vote%'").fetchone()[0]
    assert board["votes"].sum() == 2 * votes


def test_a_pairwise_only_study_reports_votes_and_no_empty_rating_tables(tmp_path):
    path, db = small_study(tmp_path, '["pairwise"]')
    simulate(StudySessions(path, db), 4)
    page = write_report(ReportConfig(path, db, tmp_path / "out", resamples=50)).read_text()
    assert "Bradley–Terry" in page and "Mean rating" not in page
    assert not (tmp_path / "out" / "means.csv").exists() and (tmp_path / "out" / "leaderboard.csv").exists()
    assert "Bradley–Terry strength" in (tmp_path / "out" / "report.html").read_text()


def test_simulated_ratings_follow_the_reward_models(tmp_path):
    path, db = small_study(tmp_path, '["ratings"]')
    simulate(StudySessions(path, db), 30, noise=0.3)
    write_report(ReportConfig(path, db, tmp_path / "out", resamples=50))
    agreement = pd.read_csv(tmp_path / "out" / "reward_agreement.csv")
    assert (agreement["spearman"] > 0.8).all() and (agreement["replies"] > 10).all()


def test_the_researchers_progress_view(tmp_path):
    path, db = small_study(tmp_path)
    sessions = StudySessions(path, db)
    answer_all(sessions, ["ann", "bo"])
    sessions.start("cyd")  # started, nothing answered yet
    view = progress(read_study(path), db)
    assert view["conditions"]["assigned"].sum() == 9 and view["conditions"]["answered"].sum() == 6
    people = view["participants"].set_index("pid")
    assert people.loc["ann", "answered"] == 3 and people.loc["cyd", "answered"] == 0
    assert people["finished"].notna().tolist() == [True, True, False] and (people["failed_checks"] == 0).all()


def test_report_files_are_owner_only(tmp_path):
    path, db = small_study(tmp_path)
    answer_all(StudySessions(path, db), ["ann"])
    write_report(ReportConfig(path, db, tmp_path / "out", resamples=20))
    assert (tmp_path / "out" / "ratings.csv").stat().st_mode & 0o777 == 0o600


def test_a_study_without_answers_says_so(tmp_path):
    path, db = small_study(tmp_path)
    with pytest.raises(ValueError, match="no answers"):
        write_report(ReportConfig(path, db, tmp_path / "out"))
    assert main(["study", "report", str(path), "--study-db", str(tmp_path / "other.db")]) == 2


def test_mean_table_groups_by_condition():
    ratings = pd.DataFrame({"pid": ["a", "b", "a", "b"], "condition": ["x", "x", "y", "y"], "method": "m",
                            "objective": "helpful", "rating": [1, 3, 4, 5]})
    table = mean_table(ratings, ["condition", "method"], resamples=100)
    assert table["mean"].tolist() == [2.0, 4.5] and table["participants"].tolist() == [2, 2]
