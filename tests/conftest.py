"""Tiny random-weight stacks, built once per test session in a temp folder: fast and offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel, PreTrainedTokenizerFast

from mavis_core import load_stack
from mavis_core.dialogue import format_dialogue

OBJECTIVES = ("helpful", "harmless", "humor")
CORPUS = [
    "hello how are you doing today", "i am fine thanks and you", "what did you eat for lunch",
    "a joke walks into a bar", "that is not nice to say", "tell me about your weekend",
    "i like to play football with friends", "the weather is nice and sunny", "why did the chicken cross",
]


def build_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer of a few hundred tokens, trained on a handful of dialogue lines."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    texts = [format_dialogue(CORPUS[i : i + 3]) for i in range(0, len(CORPUS), 3)]
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")
    fast.save_pretrained(folder)
    return fast


def tiny_gpt2_config(vocab_size: int, **kw) -> GPT2Config:
    defaults = dict(vocab_size=vocab_size, n_positions=64, n_embd=16, n_layer=2, n_head=2,
                    bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return GPT2Config(**{**defaults, **kw})


def save_value_model(folder: Path, vocab_size: int, labels: list[str], seed: int) -> None:
    torch.manual_seed(seed)
    config = tiny_gpt2_config(vocab_size, num_labels=len(labels), id2label=dict(enumerate(labels)),
                              label2id={name: i for i, name in enumerate(labels)})
    model = GPT2ForSequenceClassification(config)
    with torch.no_grad():
        model.score.weight.mul_(20)  # visible tilts from random weights
    model.save_pretrained(folder)


def save_policy(folder: Path, base_dir: Path, seed: int) -> None:
    torch.manual_seed(seed)
    base = GPT2LMHeadModel.from_pretrained(base_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True,
                        init_lora_weights=False)  # random B, so each policy differs from the base
    get_peft_model(base, config).save_pretrained(folder)


def write_stack(root: Path, name: str, value_paths: dict[str, str] | None = None, policies: bool = True) -> Path:
    lines = ['name = "tiny"', 'prompts = ["hello there", "tell me a joke"]', "",
             '[base]', 'model = "base"', 'tokenizer = "tokenizer"', ""]
    for obj in OBJECTIVES:
        lines += [f"[objectives.{obj}]", f'reward = {{ kind = "sequence-classification", path = "rewards/{obj}" }}']
        if value_paths:
            lines.append(f'value = "{value_paths[obj]}"')
        if policies:
            lines.append(f'policy = "policies/{obj}"')
        lines.append("")
    path = root / name
    path.write_text("\n".join(lines))
    return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny-stack")
    tok = build_tokenizer(root / "tokenizer")
    torch.manual_seed(0)
    GPT2LMHeadModel(tiny_gpt2_config(len(tok))).save_pretrained(root / "base")
    for i, name in enumerate(OBJECTIVES):
        torch.manual_seed(10 + i)
        GPT2ForSequenceClassification(tiny_gpt2_config(len(tok), num_labels=1)).save_pretrained(root / "rewards" / name)
        tok.save_pretrained(root / "rewards" / name)
        save_value_model(root / "values" / name, len(tok), [name], seed=20 + i)
        save_policy(root / "policies" / name, root / "base", seed=30 + i)
    save_value_model(root / "values" / "fused", len(tok), list(OBJECTIVES), seed=40)
    write_stack(root, "stack-sep.toml", {n: f"values/{n}" for n in OBJECTIVES})
    write_stack(root, "stack-fused.toml", {n: "values/fused" for n in OBJECTIVES})
    return root


@pytest.fixture(scope="session")
def tiny_stack(tiny_dir):
    """Separate value models per objective, LoRA policies, GPT-2 reward models; float32 on the CPU."""
    return load_stack(tiny_dir / "stack-sep.toml", device=torch.device("cpu"))


@pytest.fixture(scope="session")
def fused_stack(tiny_dir):
    """The same stack with one fused value model serving all three objectives."""
    return load_stack(tiny_dir / "stack-fused.toml", device=torch.device("cpu"))
