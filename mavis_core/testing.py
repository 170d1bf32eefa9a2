"""Random-weight stacks of any size, built in a folder: for tests (tiny) and benchmarks (embedded-sized).

Weights are random, so the text is gibberish; the shapes, file formats and code paths are the real ones.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel, PreTrainedTokenizerFast

from .dialogue import format_dialogue

OBJECTIVES = ("helpful", "harmless", "humor")
# The methods of a random stack with value models and per-objective policies (no references, no conditioned policy).
STACK_METHODS = ("base", "mavis", "mod", "rsoup")
CORPUS = [
    "hello how are you doing today", "i am fine thanks and you", "what did you eat for lunch",
    "a joke walks into a bar", "that is not nice to say", "tell me about your weekend",
    "i like to play football with friends", "the weather is nice and sunny", "why did the chicken cross",
]


def build_tokenizer(folder: Path, vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a handful of dialogue lines (about ``vocab_size`` tokens)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
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


def save_value_model(folder: Path, vocab_size: int, labels: list[str], seed: int, **config) -> None:
    """A random GPT-2 value model with one head per label (id2label names the objectives)."""
    torch.manual_seed(seed)
    cfg = tiny_gpt2_config(vocab_size, num_labels=len(labels), id2label=dict(enumerate(labels)),
                           label2id={name: i for i, name in enumerate(labels)}, **config)
    model = GPT2ForSequenceClassification(cfg)
    with torch.no_grad():
        model.score.weight.mul_(20)  # visible tilts from random weights
    model.save_pretrained(folder)


def save_policy(folder: Path, base_dir: Path, seed: int) -> None:
    """A random LoRA adapter on the base (B is not zero, so the policy differs from the base)."""
    torch.manual_seed(seed)
    base = GPT2LMHeadModel.from_pretrained(base_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True,
                        init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(folder)


# stack-refs.toml's MORLHF policies: one on the pair grid's tenths, one off it
REFERENCES = {"helpful0.2-humor0.8": {"helpful": 0.2, "humor": 0.8},
              "helpful0.75-humor0.25": {"helpful": 0.75, "humor": 0.25}}


def write_stack(root: Path, name: str, value_paths: dict[str, str] | None = None, policies: bool = True,
                references: dict[str, dict[str, float]] | None = None, conditioned: str | None = None) -> Path:
    """A stack TOML over the folders ``build_random_stack`` writes (``references``: name -> weights, each a
    policy in ``references/NAME``; ``conditioned``: the λ-conditioned policy's folder)."""
    lines = ['name = "random"', 'prompts = ["hello there", "tell me a joke"]', "",
             "[base]", 'model = "base"', 'tokenizer = "tokenizer"', ""]
    for obj in OBJECTIVES:
        lines += [f"[objectives.{obj}]", f'reward = {{ kind = "sequence-classification", path = "rewards/{obj}" }}']
        if value_paths:
            lines.append(f'value = "{value_paths[obj]}"')
        if policies:
            lines.append(f'policy = "policies/{obj}"')
        lines.append("")
    for ref, weights in (references or {}).items():
        table = ", ".join(f"{o} = {w}" for o, w in weights.items())
        lines += [f'[references."{ref}"]', f'policy = "references/{ref}"', f"weights = {{ {table} }}", ""]
    if conditioned:
        lines += ["[conditioned]", f'policy = "{conditioned}"', ""]
    path = root / name
    path.write_text("\n".join(lines))
    return path


def build_random_stack(root: Path, base: dict | None = None, value: dict | None = None,
                       vocab_size: int = 320) -> Path:
    """Write base, tokenizer, rewards, per-objective and fused value models and LoRA policies under ``root``.

    Writes ``stack-sep.toml`` (one value model per objective), ``stack-fused.toml`` (one fused model) and
    ``stack-refs.toml`` (stack-sep's models and two exact-preference policies, `REFERENCES`) and
    ``stack-cond.toml`` (stack-refs's models and a λ-conditioned policy, ``conditioned/``); returns ``root``.
    ``base`` / ``value`` override GPT2Config fields (default: tiny, for tests).
    """
    tok = build_tokenizer(root / "tokenizer", vocab_size)
    torch.manual_seed(0)
    GPT2LMHeadModel(tiny_gpt2_config(len(tok), **(base or {}))).save_pretrained(root / "base")
    for i, name in enumerate(OBJECTIVES):
        torch.manual_seed(10 + i)
        GPT2ForSequenceClassification(tiny_gpt2_config(len(tok), num_labels=1)).save_pretrained(root / "rewards" / name)
        tok.save_pretrained(root / "rewards" / name)
        save_value_model(root / "values" / name, len(tok), [name], seed=20 + i, **(value or {}))
        save_policy(root / "policies" / name, root / "base", seed=30 + i)
    save_value_model(root / "values" / "fused", len(tok), list(OBJECTIVES), seed=40, **(value or {}))
    for i, name in enumerate(REFERENCES):
        save_policy(root / "references" / name, root / "base", seed=50 + i)
    write_stack(root, "stack-sep.toml", {n: f"values/{n}" for n in OBJECTIVES})
    write_stack(root, "stack-fused.toml", {n: "values/fused" for n in OBJECTIVES})
    write_stack(root, "stack-refs.toml", {n: f"values/{n}" for n in OBJECTIVES}, references=REFERENCES)
    save_policy(root / "conditioned", root / "base", seed=60)
    write_stack(root, "stack-cond.toml", {n: f"values/{n}" for n in OBJECTIVES}, references=REFERENCES,
                conditioned="conditioned")
    return root


def build_embedded_sized_stack(root: Path) -> Path:
    """`build_random_stack` with a base shaped like the embedded stack's (4 blocks of 256, a 4,096-token
    vocabulary) and one-block value models: what the benchmarks time when no trained stack is named."""
    sizes = dict(n_embd=256, n_layer=4, n_head=4, n_positions=256)
    return build_random_stack(root, base=sizes, value={**sizes, "n_layer": 1}, vocab_size=4096)
