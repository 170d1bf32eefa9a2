"""Prompt formats: HH text turns and ChatML through the tokenizer's chat template; where a reply ends."""

from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from mavis_core.dialogue import CHATML_MARKERS, PromptFormat, format_prompt, weights_prompt
from mavis_core.testing import CORPUS, build_tokenizer

# SmolLM2-135M-Instruct's template, as shipped in its tokenizer_config.json.
SMOL_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def build_chatml_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    """A byte-level BPE with the three ChatML markers as special tokens, eos <|im_end|> and the SmolLM2 template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", bos_token="<|im_start|>",
                                   pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>", "<|endoftext|>"])
    fast.chat_template = SMOL_TEMPLATE
    fast.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)  # as a stack loads it: the template must survive the round trip


@pytest.fixture(scope="module")
def hh_tokenizer(tmp_path_factory):
    return build_tokenizer(tmp_path_factory.mktemp("hh-tok"))


@pytest.fixture(scope="module")
def chatml_tokenizer(tmp_path_factory):
    return build_chatml_tokenizer(tmp_path_factory.mktemp("chatml-tok"))


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# --- rendering ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["hello there", "Human: hi Assistant: hello Human: a joke?", "\n\nHuman: hi"])
def test_hh_render_is_format_prompt(hh_tokenizer, prompt):
    fmt = PromptFormat("hh", hh_tokenizer)
    assert fmt.render(prompt) == format_prompt(prompt)
    assert fmt.encode(prompt) == ids(hh_tokenizer, format_prompt(prompt))


def test_chatml_render_uses_the_template_default_system_prompt(chatml_tokenizer):
    fmt = PromptFormat("chatml", chatml_tokenizer)
    assert fmt.render("  hello there ") == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nhello there<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chatml_render_uses_the_stack_system_prompt(chatml_tokenizer):
    fmt = PromptFormat("chatml", chatml_tokenizer, system="Be brief.")
    text = fmt.render("hello there")
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n"
    )
    assert DEFAULT_SYSTEM not in text


def test_prompted_instructions_join_the_system_prompt(hh_tokenizer, chatml_tokenizer):
    """Prompted's weights in words: after the stack's own system prompt, in place of the template's default; HH
    has no system turn, so they stand before the first one."""
    words = weights_prompt({"helpful": 0.7, "harmless": 0.3, "humor": 0.0})
    assert words.splitlines()[0] == "Weigh your reply: helpfulness 70 %, harmlessness 30 %, humor 0 %."
    assert len(words.splitlines()) == 4
    assert PromptFormat("hh", hh_tokenizer).render("hi", words) == words + format_prompt("hi")
    user = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    alone = PromptFormat("chatml", chatml_tokenizer).render("hi", words)
    assert alone == f"<|im_start|>system\n{words}<|im_end|>\n{user}"
    both = PromptFormat("chatml", chatml_tokenizer, system="Be brief.").render("hi", words)
    assert both == f"<|im_start|>system\nBe brief.\n\n{words}<|im_end|>\n{user}"
    assert weights_prompt({"speed": 1.0}).splitlines() == ["Weigh your reply: speed 100 %.",
                                                           "- Speed: make the reply score well on speed."]


def test_chatml_render_turns_an_hh_dialogue_into_chat_messages(chatml_tokenizer):
    fmt = PromptFormat("chatml", chatml_tokenizer, system="S")
    prompt = "\n\nHuman: hi\n\nAssistant: hello, friend\n\nHuman: a joke?\n\nAssistant:"
    assert fmt.render(prompt) == (
        "<|im_start|>system\nS<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\nhello, friend<|im_end|>\n"
        "<|im_start|>user\na joke?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chatml_encode_keeps_markers_as_single_special_tokens(chatml_tokenizer):
    fmt = PromptFormat("chatml", chatml_tokenizer)
    encoded = fmt.encode("hello")
    vocab = chatml_tokenizer.get_vocab()
    assert encoded[0] == vocab["<|im_start|>"]
    assert encoded.count(vocab["<|im_end|>"]) == 2  # the system turn and the user turn


# --- where a reply ends ---------------------------------------------------------------------------------------


def test_chatml_stop_ids_hold_every_marker(chatml_tokenizer):
    fmt = PromptFormat("chatml", chatml_tokenizer)
    vocab = chatml_tokenizer.get_vocab()
    assert fmt.stop_ids == frozenset(vocab[m] for m in CHATML_MARKERS)
    assert fmt.stops == ()
    assert all(fmt.ends(vocab[m]) for m in CHATML_MARKERS)
    assert not any(fmt.ends(t) for t in ids(chatml_tokenizer, "hello there"))


def test_chatml_reply_text_cuts_at_the_first_stop_token(chatml_tokenizer):
    fmt = PromptFormat("chatml", chatml_tokenizer)
    vocab = chatml_tokenizer.get_vocab()
    reply = ids(chatml_tokenizer, "fine thanks") + [vocab["<|im_end|>"], vocab["<|im_start|>"]] + ids(
        chatml_tokenizer, "user\nmore")
    text = fmt.reply_text(reply)
    assert text == "fine thanks"
    assert not any(m in text for m in CHATML_MARKERS)
    assert fmt.finished(reply)
    assert not fmt.finished(ids(chatml_tokenizer, "fine thanks"))


def test_chatml_has_no_text_stops(chatml_tokenizer):
    """HH turn headers are plain text under chatml: they neither end a reply nor are held back."""
    fmt = PromptFormat("chatml", chatml_tokenizer)
    text = "a\n\nHuman: b"
    assert fmt.cut(text) == (text, False)
    assert fmt.hold("a\n\nHum") == 0
    assert not fmt.finished(ids(chatml_tokenizer, text))


def test_hh_cuts_and_holds_at_turn_headers(hh_tokenizer):
    fmt = PromptFormat("hh", hh_tokenizer)
    assert fmt.stop_ids == frozenset({hh_tokenizer.eos_token_id})
    assert fmt.cut("fine thanks\n\nHuman: and you") == ("fine thanks", True)
    assert fmt.cut("fine thanks") == ("fine thanks", False)
    assert fmt.hold("fine thanks\n\nHum") == len("\n\nHum")
    assert fmt.hold("fine thanks") == 0


def test_hh_reply_text_and_finished(hh_tokenizer):
    fmt = PromptFormat("hh", hh_tokenizer)
    reply = ids(hh_tokenizer, "fine thanks\n\nHuman: and you")
    assert fmt.reply_text(reply) == "fine thanks"
    assert fmt.finished(reply)
    with_eos = ids(hh_tokenizer, "fine") + [hh_tokenizer.eos_token_id] + ids(hh_tokenizer, " thanks")
    assert fmt.reply_text(with_eos) == "fine"
    assert fmt.finished(with_eos)
    assert not fmt.finished(ids(hh_tokenizer, "fine thanks"))


# --- errors ---------------------------------------------------------------------------------------------------


def test_unknown_kind_names_the_allowed_ones(hh_tokenizer):
    with pytest.raises(ValueError, match=r"'llama3' is not known; allowed: hh, chatml"):
        PromptFormat("llama3", hh_tokenizer)


def test_chatml_needs_a_chat_template(hh_tokenizer):
    with pytest.raises(ValueError, match="'chatml' needs a tokenizer with a chat template"):
        PromptFormat("chatml", hh_tokenizer)
