"""`python -m mavis_core results` on the tiny stack: every section, its tables and figures, and bad input."""

from __future__ import annotations

import re
import shutil

import pandas as pd
import pytest

from mavis_core.cli import main
from mavis_core.results import dominated_share, reward_at_kl

CHROMIUM = "/usr/bin/chromium"
QUICK = ["--prompts", "2", "--seeds", "1", "--max-new-tokens", "3", "--betas", "1,4", "--top-ks", "3,5",
         "--search-prompts", "1", "--search-seeds", "1"]


@pytest.fixture(scope="module")
def page(tiny_dir, tmp_path_factory):
    """One quick run; PNG images only where Chromium is there for kaleido (CI installs it)."""
    root = tmp_path_factory.mktemp("results")
    images = [] if shutil.which(CHROMIUM) else ["--no-images"]
    code = main(["results", "--stack", str(tiny_dir / "stack-sep.toml"), "--out", str(root / "docs" / "results.md"),
                 "--data", str(root / "data"), *QUICK, *images])
    assert code == 0
    return root, not images


def test_every_section_is_written(page):
    root, _ = page
    text = (root / "docs" / "results.md").read_text(encoding="utf-8")
    for heading in ("## 1. Pareto fronts", "## 2. The simplex", "## 3. Single objective", "## 4. Top-k ablation",
                    "## 5. Test-time search", "## Cost of this page"):
        assert heading in text
    assert text.count("**Reading.**") == 4
    assert not re.search(r"\bnan\b", text, flags=re.IGNORECASE)  # missing numbers show as "–", never as nan


def test_tables_hold_what_the_page_reports(page, tiny_stack):
    data = page[0] / "data"
    pairs = pd.read_csv(data / "pairs.csv")
    assert set(pairs.method) == set(tiny_stack.methods)
    assert len(pd.read_csv(data / "pairs_hypervolume.csv")) == 3 * len(tiny_stack.methods)
    beta = pd.read_csv(data / "beta.csv")
    assert sorted(beta[beta.method == "mavis"].beta.unique()) == [1.0, 4.0]
    assert set(beta.method) == {"mavis", "base", "policy"}
    top_k = pd.read_csv(data / "top_k.csv")
    assert sorted(top_k.top_k.unique()) == [3, 5] and (top_k.ms_per_token > 0).all()
    search = pd.read_csv(data / "search.csv")
    assert set(search.search) == {"sample", "best_of_n", "beam"}
    assert {"mavis beam-4", "mod best-of-4"} <= set(search.series)


def test_figures_are_saved(page):
    root, images = page
    names = {"front_helpful_harmless", "front_helpful_humor", "front_harmless_humor", "beta_helpful", "beta_harmless",
             "beta_humor", "search_helpful_humor"}
    assert {p.stem for p in (root / "data").glob("*.html")} == names
    if images:
        pngs = list((root / "docs" / "results").glob("*.png"))
        assert {p.stem for p in pngs} == names
        assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_bad_arguments_get_one_line(tiny_dir, tmp_path, capsys):
    assert main(["results", "--stack", str(tiny_dir / "stack-sep.toml"), "--betas", "1,x",
                 "--out", str(tmp_path / "r.md")]) == 2
    assert "--betas" in capsys.readouterr().err
    assert main(["results", "--stack", str(tiny_dir / "stack-sep.toml"), "--prompts", "-1"]) == 2


def test_dominated_share_and_reward_at_kl():
    a = pd.DataFrame({"r_x": [2.0, 0.0], "r_y": [2.0, 3.0]})
    b = pd.DataFrame({"r_x": [1.0, 3.0], "r_y": [1.0, 0.0]})
    # b's front is both of its points; a's (2, 2) dominates (1, 1) but nothing of a's dominates (3, 0)
    assert dominated_share(a, b, ["x", "y"]) == 0.5
    assert dominated_share(b, a, ["x", "y"]) == 0.0
    curve = pd.DataFrame({"kl": [2.0, 4.0], "r_x": [1.0, 3.0]})
    assert reward_at_kl(curve, 3.0, "x") == pytest.approx(2.0)
    assert pd.isna(reward_at_kl(curve, 5.0, "x"))
