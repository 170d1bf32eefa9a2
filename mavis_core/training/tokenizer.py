"""Byte-level BPE tokenizer for the embedded stack, trained with `tokenizers` on the train split.

Byte-level means every string round-trips exactly (no unknown tokens, newlines kept), so the
``\\n\\nHuman:`` / ``\\n\\nAssistant:`` turn markers survive encode -> decode unchanged.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ..dialogue import format_dialogue

EOS = "<|endoftext|>"


def train_tokenizer(
    texts: list[str], vocab_size: int = 4096, max_length: int = 256
) -> PreTrainedTokenizerFast:
    """Train a GPT-2-style byte-level BPE on ``texts``.

    Args:
        texts: training documents (HH-formatted dialogues).
        vocab_size: total vocabulary including the 256 byte symbols and ``<|endoftext|>``.
        max_length: the model's context length, stored as ``model_max_length``.

    Returns:
        A transformers fast tokenizer whose bos, eos and pad token are all ``<|endoftext|>`` (id 0).
    """
    tok = Tokenizer(models.BPE())
    # add_prefix_space=False: a turn's first word already follows a space in the HH format.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS,
        model_max_length=max_length, clean_up_tokenization_spaces=False,
    )


def check_round_trip(tokenizer: PreTrainedTokenizerFast, turns: list[str]) -> None:
    """Raise ValueError unless the HH text of ``turns`` decodes back to itself exactly."""
    text = format_dialogue(turns)
    back = tokenizer.decode(tokenizer(text)["input_ids"])
    if back != text:
        raise ValueError(f"tokenizer does not round-trip: {text!r} -> {back!r}")


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out_dir: Path) -> list[Path]:
    """Save as a folder ``AutoTokenizer.from_pretrained`` loads; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [Path(p) for p in tokenizer.save_pretrained(out_dir)]
