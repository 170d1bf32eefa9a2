"""Trunk value models: the base's lower Llama blocks + LoRA + heads, stored as adapter + heads only."""

import json
import os

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mavis_core.value_models import (
    TRUNK_CONFIG,
    TRUNK_WEIGHTS,
    ValueModel,
    is_trunk,
    load_trunk,
    save_trunk,
    trained_weights,
    trunk_model,
)
from mavis_core.values import ValueScorer, values_uncached

LABELS = ["helpful", "humor"]
SEQS = torch.tensor([[3, 9, 27, 4, 11], [8, 8, 1, 50, 2]])  # (2, 5)


def tiny_llama(layers: int = 3, seed: int = 0, **kw) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(**{"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": layers,
                            "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 64,
                            "pad_token_id": 0, **kw})
    return LlamaForCausalLM(config).eval()


def values(model, seqs=SEQS) -> torch.Tensor:
    """V at the last token of each sequence, one column per head. (N, T) -> (N, heads)."""
    return values_uncached(ValueModel("trunk", model, list(range(len(LABELS)))), seqs, len(LABELS))


def trained(base, layers: int = 2, seed: int = 1):
    """A trunk whose LoRA B matrices and head hold random values, as after training."""
    model = trunk_model(base, layers, LABELS, lora_r=4)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or name == "score.weight":
                p.normal_(0.0, 0.5)
    return model.eval()


@pytest.fixture
def base():
    return tiny_llama()


def test_trunk_starts_with_a_zero_head_and_trains_only_lora_and_score(base):
    model = trunk_model(base, 2, LABELS, lora_r=4)
    assert model.config.num_hidden_layers == 2 and model.config.id2label == dict(enumerate(LABELS))
    assert torch.equal(values(model), torch.zeros(2, 2))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n == "score.weight" for n in trainable)
    assert "score.weight" in trainable


def test_trunk_embedding_is_the_base_tensor(base):
    model = trunk_model(base, 2, LABELS)
    assert model.base_model.embed_tokens.weight is base.model.embed_tokens.weight


def test_trunk_blocks_are_the_base_lower_blocks(base):
    """With LoRA B at zero, the trunk's hidden states equal the base's after its first ``layers`` blocks + norm."""
    model = trunk_model(base, 2, LABELS)
    with torch.no_grad():
        want = base.model.norm(base.model(SEQS, output_hidden_states=True).hidden_states[2])
        got = model.base_model(SEQS).last_hidden_state
    torch.testing.assert_close(got, want)


def test_save_holds_only_config_and_weights(base, tmp_path):
    save_trunk(trained(base), tmp_path / "v", offsets=[0.5, -1.0])
    assert sorted(os.listdir(tmp_path / "v")) == [TRUNK_CONFIG, TRUNK_WEIGHTS]
    assert is_trunk(tmp_path / "v")
    config = json.loads((tmp_path / "v" / TRUNK_CONFIG).read_text())
    assert config["kind"] == "trunk" and config["layers"] == 2 and config["labels"] == LABELS
    assert config["value_offsets"] == [0.5, -1.0] and config["dtype"] == "float32"


def test_merged_load_equals_the_unmerged_trained_model(base, tmp_path):
    model = trained(base)
    save_trunk(model, tmp_path / "v", offsets=[0.0, 0.0])
    loaded = load_trunk(base, tmp_path / "v")
    assert not any("lora_" in n for n, _ in loaded.named_parameters())  # merged into plain blocks
    assert not hasattr(loaded, "trunk_settings")
    want = values(model)
    assert want.abs().min() > 0  # the trained head really scores
    torch.testing.assert_close(values(loaded), want, atol=1e-5, rtol=1e-5)


def test_trainable_load_gives_identical_trained_weights(base, tmp_path):
    model = trained(base)
    save_trunk(model, tmp_path / "v", offsets=[0.0, 0.0])
    resumed = load_trunk(base, tmp_path / "v", trainable=True)
    want, got = trained_weights(model), trained_weights(resumed)
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert resumed.trunk_settings == model.trunk_settings
    assert any(p.requires_grad for p in resumed.parameters())


def test_float16_save_loads(base, tmp_path):
    model = trained(base)
    save_trunk(model, tmp_path / "v", offsets=[0.0, 0.0], dtype=torch.float16)
    assert json.loads((tmp_path / "v" / TRUNK_CONFIG).read_text())["dtype"] == "float16"
    loaded = load_trunk(base, tmp_path / "v")
    assert loaded.dtype == torch.float32
    torch.testing.assert_close(values(loaded), values(model), atol=2e-2, rtol=2e-2)  # float16 rounding only


def test_load_onto_a_base_with_fewer_layers_names_the_folder(tmp_path):
    save_trunk(trained(tiny_llama(layers=3), layers=3), tmp_path / "v3", offsets=[0.0, 0.0])
    with pytest.raises(ValueError, match=rf"value model {tmp_path / 'v3'} needs 3 base blocks; the base has 2"):
        load_trunk(tiny_llama(layers=2), tmp_path / "v3")


def test_load_weights_of_another_shape_names_the_folder(base, tmp_path):
    save_trunk(trained(base), tmp_path / "v", offsets=[0.0, 0.0])
    wider = tiny_llama(intermediate_size=48)
    with pytest.raises(ValueError, match=rf"value model {tmp_path / 'v'}: its weights do not fit"):
        load_trunk(wider, tmp_path / "v")


def test_load_rejects_a_folder_of_another_kind(base, tmp_path):
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / TRUNK_CONFIG).write_text(json.dumps({"kind": "full"}))
    with pytest.raises(ValueError, match="is not a trunk value model"):
        load_trunk(base, tmp_path / "v")


def test_merged_trunk_cached_scores_equal_uncached(base, tmp_path):
    """ValueScorer over a left-padded cached prefix, three steps with ``keep``, equals the uncached reference."""
    save_trunk(trained(base), tmp_path / "v", offsets=[0.0, 0.0])
    vm = ValueModel("v", load_trunk(base, tmp_path / "v"), [2, 0])  # head 0 -> objective 2, head 1 -> objective 0
    prefixes = [torch.tensor([5, 6, 7, 8, 9]), torch.tensor([12, 13, 14])]
    input_ids = torch.tensor([[5, 6, 7, 8, 9], [0, 0, 12, 13, 14]])  # left-padded (B, T)
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    scorer = ValueScorer([vm], 3)
    scorer.start(input_ids, mask)
    torch.manual_seed(2)
    for _ in range(3):
        cands = torch.randint(1, 64, (2, 4))  # (B, k)
        got = scorer.q_values(cands)  # (B, M, k)
        for b, prefix in enumerate(prefixes):
            seqs = torch.stack([torch.cat([prefix, c.view(1)]) for c in cands[b]])  # (k, T_b + 1)
            torch.testing.assert_close(got[b].T, values_uncached(vm, seqs, 3), atol=1e-4, rtol=1e-4)
        assert torch.equal(got[:, 1], torch.zeros(2, 4))  # no head serves objective 1
        chosen = torch.tensor([1, 3])
        scorer.keep(chosen)
        prefixes = [torch.cat([p, cands[b, chosen[b]].view(1)]) for b, p in enumerate(prefixes)]


def test_loading_in_another_dtype_leaves_the_base_unchanged(base, tmp_path):
    save_trunk(trained(base), tmp_path / "v", offsets=[0.0, 0.0])
    load_trunk(base, tmp_path / "v", dtype=torch.float16)
    assert base.model.embed_tokens.weight.dtype == torch.float32
