"""The chitchat corpus (mavis_core.chitchat): splits by conversation, deterministic, HH format, openers."""

import pytest

from mavis_core import chitchat as data
from mavis_core.dialogue import ASSISTANT, HUMAN


def _keys(convs: list[list[str]]) -> set[tuple[str, ...]]:
    return {tuple(c) for c in convs}


def test_splits_are_disjoint_by_conversation_and_cover_the_corpus():
    ids = data._split_ids(0)
    train, val, test = (set(ids[s]) for s in data.SPLITS)
    assert not (train & val or train & test or val & test)
    assert len(train) + len(val) + len(test) == len(data._all_conversations())
    assert len(val) == len(test) == round(0.05 * len(data._all_conversations()))


def test_splits_are_deterministic_and_depend_on_the_seed():
    assert data.load_conversations("validation", seed=0) == data.load_conversations("validation", seed=0)
    seed0, seed1 = (_keys(data.load_conversations("validation", seed=s)) for s in (0, 1))
    assert seed0 != seed1


def test_turns_are_clean_non_empty_strings():
    for conv in data.load_conversations("test"):
        assert conv and all(t and t == " ".join(t.split()) for t in conv)


def test_dialogue_texts_use_the_hh_format():
    convs = data.load_conversations("validation")
    texts = data.dialogue_texts("validation")
    assert len(texts) == len(convs)
    assert texts[0].startswith(HUMAN + " " + convs[0][0])
    two_turns = next(t for t, c in zip(texts, convs, strict=True) if len(c) >= 2)
    assert ASSISTANT + " " in two_turns


def test_eval_prompts_are_distinct_opening_turns_of_the_test_split():
    prompts = data.eval_prompts(50)
    assert len(prompts) == len(set(prompts)) == 50
    openers = {c[0] for c in data.load_conversations("test")}
    train_openers = {c[0] for c in data.load_conversations("train")}
    assert set(prompts) <= openers
    assert prompts == data.eval_prompts(50)
    assert all(len(p.split()) >= data.PROMPT_MIN_WORDS for p in prompts)
    # an opener may repeat across conversations ("hi, how are you?"), but most must be unseen in train
    assert len(set(prompts) - train_openers) >= 40


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="allowed: train, validation, test"):
        data.load_conversations("dev")


def test_openers_are_distinct_prompt_like_first_turns_of_their_split():
    openers = data.openers("test")
    firsts = {c[0] for c in data.load_conversations("test")}
    assert openers and set(openers) <= firsts
    assert all(data.PROMPT_MIN_WORDS <= len(t.split()) <= data.PROMPT_MAX_WORDS for t in openers)
    assert len({t.lower() for t in openers}) == len(openers)
    assert set(data.eval_prompts(50)) <= set(openers)
