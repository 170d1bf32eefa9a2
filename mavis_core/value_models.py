"""Value models as a stack holds them, and the *trunk* kind built on the base's own lower layers.

A value model is a sequence-classification model whose ``score`` head is read at every position:
V(s) = head(body(s))[-1] and Q(s, a) = V(s ⊕ a) (see `mavis_core.values`). Two kinds of folder:

- a full ``AutoModelForSequenceClassification`` folder (the tiny stack, the paper stack);
- a *trunk* folder (``value_config.json``): the base's embeddings, its first ``layers`` blocks and its final
  norm, plus a LoRA adapter on those blocks and one linear head per objective. Only the adapter and the
  heads are stored (about 2 MB for SmolLM2-135M), and the model is rebuilt from the base at load time with
  the adapter merged, so it runs at the speed of ``layers`` plain blocks. The embedding matrix is the
  base's own tensor (shared, never trained), so the value model adds only its blocks to memory.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForSequenceClassification, PreTrainedModel

TRUNK_CONFIG = "value_config.json"
TRUNK_WEIGHTS = "value_weights.safetensors"
# Every linear map of a Llama block; LoRA on all of them is what a few MB of adapter buys most accuracy with.
LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DROPOUT_KEYS = ("resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout", "hidden_dropout", "dropout")


@dataclass
class ValueModel:
    """One value model and the objectives its heads serve (indices into the stack's objectives)."""

    path: str
    model: torch.nn.Module  # an AutoModelForSequenceClassification (body ``base_model``, head ``score``)
    heads: list[int]  # head j of the model scores objective heads[j]


def is_trunk(folder: str | Path) -> bool:
    return (Path(folder) / TRUNK_CONFIG).exists()


def lower_layers_model(base: PreTrainedModel, layers: int, labels: list[str]) -> PreTrainedModel:
    """A float32 sequence-classification model of the base's architecture holding its lower ``layers`` blocks.

    Embeddings, the first ``layers`` blocks and the final norm are copied from the base (a causal LM's body
    and a sequence-classification model's body share parameter names); the score head starts at zero, so an
    untrained value model does not tilt decoding. ``config.id2label`` names the objective of each head.
    """
    config = copy.deepcopy(base.config)
    config.num_hidden_layers = min(layers, base.config.num_hidden_layers)
    config.num_labels = len(labels)
    config.id2label, config.label2id = dict(enumerate(labels)), {name: i for i, name in enumerate(labels)}
    config.architectures = None
    for key in DROPOUT_KEYS:  # no noise: resumed runs end bit-identical without saving RNG states
        if key in config.to_dict():
            setattr(config, key, 0.0)
    model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    wanted = model.base_model.state_dict()
    weights = {k: v.float() for k, v in base.base_model.state_dict().items() if k in wanted}
    missing = sorted(set(wanted) - set(weights))
    if missing:
        raise ValueError(f"the base has no weights for value-model parameters {missing[:5]}; is it a causal LM?")
    model.base_model.load_state_dict(weights, strict=False)
    nn.init.zeros_(model.score.weight)
    return model


def _lora_config(settings: dict):
    from peft import LoraConfig

    return LoraConfig(r=settings["lora_r"], lora_alpha=settings["lora_alpha"], lora_dropout=0.0,
                      target_modules=list(settings["targets"]))


def trunk_model(base: PreTrainedModel, layers: int, labels: list[str], lora_r: int = 16) -> PreTrainedModel:
    """A trainable trunk value model: the base's lower blocks (frozen) + LoRA on them + a zero score head.

    The model carries its trunk settings in ``model.trunk_settings`` (what `save_trunk` records). peft freezes
    every other parameter, the shared embedding included (the base is only ever run for inference).
    """
    from peft import get_peft_model

    model = lower_layers_model(base, layers, labels)
    model.base_model.embed_tokens = base.base_model.embed_tokens  # the base's own tensor, never trained
    settings = {"kind": "trunk", "layers": model.config.num_hidden_layers, "labels": list(labels),
                "lora_r": lora_r, "lora_alpha": 2 * lora_r, "targets": list(LLAMA_TARGETS)}
    get_peft_model(model, _lora_config(settings))  # injects LoRA layers into ``model`` in place, freezes the rest
    model.score.weight.requires_grad_(True)
    model.trunk_settings = settings
    return model


def trained_weights(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """What a trunk value model learned: its LoRA matrices and its score head."""
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if "lora_" in k or k == "score.weight"}


def save_trunk(model: PreTrainedModel, folder: Path, offsets: list[float], dtype: torch.dtype = torch.float32) -> None:
    """Write a trunk value model: ``value_config.json`` (settings, labels, offsets) and its trained weights."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(dtype) for k, v in trained_weights(model).items()}, folder / TRUNK_WEIGHTS)
    config = {**model.trunk_settings, "value_offsets": list(offsets), "dtype": str(dtype).removeprefix("torch.")}
    (folder / TRUNK_CONFIG).write_text(json.dumps(config, indent=1), encoding="utf-8")


def read_trunk_config(folder: Path) -> dict:
    config = json.loads((Path(folder) / TRUNK_CONFIG).read_text(encoding="utf-8"))
    if config.get("kind") != "trunk":
        raise ValueError(f"{folder / TRUNK_CONFIG} is not a trunk value model (kind {config.get('kind')!r})")
    return config


def load_trunk(base: PreTrainedModel, folder: str | Path, dtype: torch.dtype = torch.float32,
               trainable: bool = False) -> PreTrainedModel:
    """Rebuild a trunk value model from ``base`` and the stored adapter + heads.

    ``trainable`` keeps LoRA unmerged (to resume training); otherwise the adapter is merged into the blocks
    and the model runs as plain blocks in ``dtype``.
    """
    folder = Path(folder)
    config = read_trunk_config(folder)
    if config["layers"] > base.config.num_hidden_layers:
        raise ValueError(f"value model {folder} needs {config['layers']} base blocks; the base has "
                         f"{base.config.num_hidden_layers}: it was trained for another base")
    model = trunk_model(base, config["layers"], config["labels"], config["lora_r"])
    stored = load_file(folder / TRUNK_WEIGHTS)
    expected = trained_weights(model)
    if set(stored) != set(expected) or any(stored[k].shape != expected[k].shape for k in expected):
        raise ValueError(f"value model {folder}: its weights do not fit a trunk of {config['layers']} blocks of "
                         "this base; it was trained for another base")
    model.load_state_dict({k: v.float() for k, v in stored.items()}, strict=False)
    if trainable:
        return model
    from peft.tuners.lora import LoraLayer

    with torch.no_grad():
        for name, module in list(model.named_modules()):
            if isinstance(module, LoraLayer):
                module.merge()
                parent, child = name.rsplit(".", 1)
                setattr(model.get_submodule(parent), child, module.get_base_layer())
    del model.trunk_settings
    embed = model.base_model.embed_tokens  # the base's own: casting it with the rest would change the base
    model.base_model.embed_tokens = nn.Identity()
    model = model.to(dtype).eval()
    model.base_model.embed_tokens = embed if embed.weight.dtype == dtype else copy.deepcopy(embed).to(dtype)
    return model
