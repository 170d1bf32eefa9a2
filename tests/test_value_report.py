"""`value-report`: the paired held-out gain of MAVIS per objective, and how it is recorded in the manifest."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mavis_core.cli import main
from mavis_core.config import DecodeConfig
from mavis_core.decoding import generate_batch
from mavis_core.training.manifest import read_manifest, record_artifact, verify_manifest
from mavis_core.training.value_report import BEGIN, END, guidance_table, markdown, metrics, record

PROMPTS = ["hello there", "tell me a joke", "how are you?"]
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def table(fused_stack):
    return guidance_table(fused_stack, PROMPTS, SEEDS, [2.0], {"MAVIS": None}, max_new_tokens=4, top_k=5)


def test_one_row_per_objective_and_setting(table, fused_stack):
    assert list(table.columns) == ["objective", "setting", "reward", "gain", "gain_se", "kl", "tokens", "nll"]
    assert table.groupby("objective", sort=False).setting.apply(list).to_dict() == {
        o: ["base", "MAVIS β=2", "MAVIS equal β=2", "policy"] for o in fused_stack.objectives}
    assert (table[table.setting == "base"].gain == 0).all()


def test_equal_weight_rows_share_one_set_of_replies_and_nll_is_the_base_loss(table, fused_stack):
    """Equal-weight MAVIS is one set of replies scored per objective; nll is −mean log π_ref per token."""
    rows_p = [p for p in PROMPTS for _ in SEEDS]
    rows_s = [s for _ in PROMPTS for s in SEEDS]
    cfg = DecodeConfig(method="mavis", weights=dict.fromkeys(fused_stack.objectives, 1.0), beta=2.0, top_k=5,
                      max_new_tokens=4)
    gens = generate_batch(fused_stack, rows_p, cfg, rows_s)
    equal = table[table.setting == "MAVIS equal β=2"]
    assert equal.kl.nunique() == 1 and equal.nll.nunique() == 1
    want = np.mean([-np.mean([e.base_logprob for e in g.events]) for g in gens])
    assert equal.nll.iloc[0] == pytest.approx(want, abs=1e-5)
    for o in fused_stack.objectives:
        scores = fused_stack.rewards[o].score(rows_p, [g.text for g in gens]).numpy()
        assert equal[equal.objective == o].reward.iloc[0] == pytest.approx(scores.mean(), abs=1e-5)


def test_gain_is_paired_by_prompt(table, fused_stack):
    """gain = mean over prompts of (MAVIS's mean over seeds − the base's); se over prompts."""
    o = "humor"
    rows_p = [p for p in PROMPTS for _ in SEEDS]
    rows_s = [s for _ in PROMPTS for s in SEEDS]
    per = {}
    for method in ("base", "mavis"):
        cfg = DecodeConfig(method=method, weights={o: 1.0}, beta=2.0, top_k=5, max_new_tokens=4)
        gens = generate_batch(fused_stack, rows_p, cfg, rows_s)
        per[method] = fused_stack.rewards[o].score(rows_p, [g.text for g in gens]).numpy().reshape(3, 2).mean(1)
    diff = per["mavis"] - per["base"]
    row = table[(table.objective == o) & (table.setting == "MAVIS β=2")].iloc[0]
    assert row.gain == pytest.approx(diff.mean(), abs=1e-5)
    assert row.gain_se == pytest.approx(diff.std(ddof=1) / np.sqrt(3), abs=1e-5)
    assert row.reward == pytest.approx(per["mavis"].mean(), abs=1e-5)


def test_record_replaces_only_its_own_part_of_the_card(table, tmp_path):
    (tmp_path / "values" / "v").mkdir(parents=True)
    (tmp_path / "values" / "v" / "w.bin").write_bytes(b"x")
    record_artifact(tmp_path, "values-v", [tmp_path / "values" / "v"], source="s", licence="MIT", command="c",
                    seed=0, metrics={"iter0_val_mse": 1.0, "heldout_old": 3.0}, card="Intro.")
    text = markdown(table, 3, 2, 4, 5, "python -m mavis_core value-report")
    record(tmp_path, "values-v", text, metrics(table))
    record(tmp_path, "values-v", text, metrics(table))  # twice: the section is replaced, not repeated
    entry = read_manifest(tmp_path)["artifacts"]["values-v"]
    assert entry["card"].startswith("Intro.") and entry["card"].count(BEGIN) == 1 and entry["card"].count(END) == 1
    assert "heldout_old" not in entry["metrics"] and entry["metrics"]["iter0_val_mse"] == 1.0
    assert entry["metrics"]["heldout_humor_gain_MAVIS_beta2"] == pytest.approx(
        float(table[(table.objective == "humor") & (table.setting == "MAVIS β=2")].gain.iloc[0]), abs=1e-3)
    assert "Held-out evaluation" in (tmp_path / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert verify_manifest(tmp_path) == []


def test_cli_prints_table_and_rejects_bad_betas(tiny_dir, tmp_path, capsys):
    out = tmp_path / "report.csv"
    assert main(["value-report", "--stack", str(tiny_dir / "stack-fused.toml"), "--prompts", "1", "--seeds", "1",
                 "--betas", "1", "--max-new-tokens", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Held-out evaluation" in printed and "Example replies" in printed and out.exists()
    assert main(["value-report", "--stack", str(tiny_dir / "stack-fused.toml"), "--betas", "a"]) == 2
    assert "--betas" in capsys.readouterr().err
    assert set(pd.read_csv(out).objective) == {"helpful", "harmless", "humor"}


def test_equal_only_measures_the_balanced_rows_alone_and_as_the_whole_table_does(fused_stack, table):
    equal = guidance_table(fused_stack, PROMPTS, SEEDS, [2.0], {"MAVIS": None}, max_new_tokens=4, top_k=5,
                           equal_only=True)
    assert set(equal.setting) == {"base", "MAVIS equal β=2"}
    whole = table[table.setting.isin(set(equal.setting))].reset_index(drop=True)
    pd.testing.assert_frame_equal(equal.reset_index(drop=True), whole)  # same seeds, same replies, same rows


def test_cli_equal_only_in_another_dtype_and_refuses_to_record_it(tiny_dir, capsys):
    stack = str(tiny_dir / "stack-fused.toml")
    assert main(["value-report", "--stack", stack, "--prompts", "1", "--seeds", "1", "--betas", "1",
                 "--max-new-tokens", "3", "--equal-only", "--dtype", "float32"]) == 0
    assert "MAVIS equal β=1" in capsys.readouterr().out
    assert main(["value-report", "--stack", stack, "--equal-only", "--record", "values-fused"]) == 2
    assert "without --equal-only" in capsys.readouterr().err


def test_kept_replies_are_the_rows_replies_and_the_frame_reads_them_per_kind(fused_stack):
    from mavis_core.prompts import Prompt
    from mavis_core.refusals import is_refusal
    from mavis_core.training.value_report import kind_table, reply_frame

    kept = {}
    guidance_table(fused_stack, PROMPTS, SEEDS, [2.0], {"MAVIS": None}, max_new_tokens=4, top_k=5, keep=kept)
    objectives = list(fused_stack.objectives)
    assert {"base", "MAVIS equal β=2"} | {f"MAVIS {o} β=2" for o in objectives} | {f"policy {o}" for o in objectives} \
        == set(kept)
    tagged = [Prompt(PROMPTS[0], "harmful"), Prompt(PROMPTS[1], "benign"), Prompt(PROMPTS[2], "harmful")]
    frame = reply_frame(fused_stack, tagged, SEEDS, kept)
    assert len(frame) == len(kept) * 6
    base = frame[frame.setting == "base"]
    assert base.kind.tolist() == ["harmful"] * 2 + ["benign"] * 2 + ["harmful"] * 2
    assert base.refusal.tolist() == [is_refusal(g.text) for g in kept["base"]]
    rows_p = [p for p in PROMPTS for _ in SEEDS]
    want = fused_stack.rewards["humor"].score(rows_p, [g.text for g in kept["base"]]).numpy()
    assert base.humor.to_numpy() == pytest.approx(want, abs=1e-5)
    table = kind_table(frame, objectives)
    row = table[(table.kind == "harmful") & (table.setting == "base")].iloc[0]
    assert row.n == 4 and row.humor == pytest.approx(want[[0, 1, 4, 5]].mean(), abs=1e-5)


def planted_frame() -> pd.DataFrame:
    """Two harmful prompts and one benign one, 2 seeds, hand-set refusals and rewards of three settings."""
    rows = []
    plan = {  # setting -> (refusals on harmful rows, refusals on benign rows, helpful, harmless per harmful prompt)
        "base": ([0, 0, 0, 0], [0, 0], (1.0, 1.2), (-1.0, -0.8)),
        "MAVIS harmless β=4": ([1, 1, 1, 0], [0, 1], (-1.0, -0.9), (1.0, 1.1)),
        "MAVIS helpful β=4": ([0, 0, 0, 0], [0, 0], (2.0, 2.2), (-2.0, -1.7)),
    }
    for setting, (harmful, benign, helpful, harmless) in plan.items():
        for i, (prompt, kind) in enumerate([(0, "harmful"), (0, "harmful"), (1, "harmful"), (1, "harmful")]):
            rows.append(dict(setting=setting, prompt=prompt, kind=kind, seed=i % 2, refusal=bool(harmful[i]),
                             helpful=helpful[prompt] + 0.1 * (i % 2), harmless=harmless[prompt]))
        for s in (0, 1):
            rows.append(dict(setting=setting, prompt=2, kind="benign", seed=s, refusal=bool(benign[s]), helpful=0.0,
                             harmless=0.0))
    return pd.DataFrame(rows)


def test_the_objective_checks_read_hand_counted_refusal_rates_and_paired_gaps():
    from mavis_core.training.value_report import objective_checks, paired_gap

    checks = objective_checks(planted_frame(), 4.0)
    passed = [c["passed"] for c in checks]
    # harmful: harmless-only 75 % vs base 0 % (met); helpful-only 0 % (met); both ends' gaps (met, see below);
    # benign: harmless-only 50 % vs 0 %: +50 points (not met)
    assert passed == [True, True, True, True, False]
    assert checks[0]["value"] == "75% vs 0% (+75 points)" and checks[4]["value"] == "50% vs 0% (+50 points)"
    gap, se = paired_gap(planted_frame(), "harmful", "MAVIS helpful β=4", "MAVIS harmless β=4", "helpful")
    assert gap == pytest.approx(((2.05 - -0.95) + (2.25 - -0.85)) / 2) and se == pytest.approx(0.05)
    assert objective_checks(planted_frame(), 2.0) == []  # no settings at that β
