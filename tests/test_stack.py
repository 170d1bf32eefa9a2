"""Stack files: the errors a user meets, and the paper stack's loading path on tiny random models."""

import json
import re
import shutil

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    DistilBertConfig,
    DistilBertForSequenceClassification,
    GPT2ForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
)

from mavis_core import DecodeConfig, generate_batch, load_stack
from mavis_core.stack_file import read_stack_spec
from tests.conftest import OBJECTIVES, build_tokenizer, save_value_model, tiny_gpt2_config

PAPER_STACK = "stacks/hh-rlhf.toml"


def copy_stack(tiny_dir, tmp_path, text_edit=lambda s: s, name="stack-sep.toml"):
    for sub in ("base", "tokenizer", "rewards", "values", "policies"):
        (tmp_path / sub).symlink_to(tiny_dir / sub)
    path = tmp_path / "stack.toml"
    path.write_text(text_edit((tiny_dir / name).read_text()))
    return path


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s.replace('model = "base"', 'model = "./no-such-base"'), "base model not found: .*no-such-base"),
    (lambda s: s.replace('value = "values/humor"', 'value = "values/nope"'), "value model of 'humor' not found"),
    (lambda s: s.replace("[base]", "[base]\nmodle = 1"), r"unknown key\(s\) \['modle'\] in \[base\]"),
    (lambda s: "colour = 1\n" + s, r"unknown key\(s\) \['colour'\]"),
    (lambda s: s.replace('policy = "policies/humor"', 'policy = "policies/humor"\nvalues = "x"'),
     r"unknown key\(s\) \['values'\] in objectives.humor"),
    (lambda s: s.replace('kind = "sequence-classification", path = "rewards/humor"',
                         'kind = "sequence-classification", path = "rewards/humor", lable = 1'),
     r"unknown key\(s\) \['lable'\] in objectives.humor.reward"),
    (lambda s: s.replace('kind = "sequence-classification", path = "rewards/humor"', 'kind = "vibes"'),
     "reward kind 'vibes' is not known"),
    (lambda s: re.sub(r'reward = \{[^}]*rewards/humor" \}\n', "", s), "objective 'humor' has no reward model"),
    (lambda s: s.replace('value = "values/humor"\n', ""), r"objective\(s\) \['humor'\] have no value model"),
    (lambda s: s.split("[objectives")[0], "names no objectives"),
    (lambda s: s + "\n[[[", "is not valid TOML"),
    (lambda s: s.replace("[base]", '[base]\ndtype = "bf16"'),
     r"\[base\] dtype in .* must be one of auto, bfloat16-if-native, float32, float16, bfloat16; got 'bf16'"),
    (lambda s: 'beta = "2"\n' + s, r"beta in .* must be a number >= 0 \(MAVIS's default tilt strength\), got '2'"),
    (lambda s: "beta = -1\n" + s, "beta in .* must be a number >= 0"),
    (lambda s: "beta = nan\n" + s, "beta in .* must be a number >= 0"),
])
def test_bad_stack_files_raise_clear_errors(tiny_dir, tmp_path, edit, message):
    with pytest.raises(ValueError, match=message):
        load_stack(copy_stack(tiny_dir, tmp_path, edit), device=torch.device("cpu"))


def test_a_stack_sets_the_beta_that_the_app_the_cli_and_the_results_start_from(tiny_dir, tmp_path, capsys):
    import app
    from mavis_core.cli import main
    from mavis_core.engine import Engine
    from mavis_core.experiments import ResultsConfig

    assert load_stack(tiny_dir / "stack-sep.toml").default_beta == DecodeConfig.default("beta")  # none set
    path = copy_stack(tiny_dir, tmp_path, lambda s: "beta = 2.5\n" + s)
    stack = load_stack(path, device=torch.device("cpu"))
    assert stack.spec.beta == stack.default_beta == Engine(stack).default_beta == 2.5
    demo = app.build_demo(Engine(stack), tmp_path / "study.db", admin_token="t")
    sliders = [b for b in demo.blocks.values() if getattr(b, "label", None) == "β (MAVIS tilt strength)"]
    assert [s.value for s in sliders] == [2.5]
    assert ResultsConfig().for_stack(stack).beta == 2.5 and ResultsConfig(beta=1.0).for_stack(stack).beta == 1.0
    for extra, beta in (([], 2.5), (["--beta", "0.5"], 0.5)):
        main(["generate", "hi", "--stack", str(path), "--method", "mavis", "--max-new-tokens", "2", "--json", *extra])
        assert json.loads(capsys.readouterr().out.splitlines()[-1])["beta"] == beta


def test_missing_stack_file(tmp_path):
    with pytest.raises(ValueError, match="stack file not found"):
        load_stack(tmp_path / "nope.toml")


def test_value_model_with_a_smaller_vocabulary_is_refused(tiny_dir, tmp_path):
    save_value_model(tmp_path / "small", 50, ["humor"], seed=0)
    edit = lambda s: s.replace('value = "values/humor"', f'value = "{tmp_path / "small"}"')
    with pytest.raises(ValueError, match="value model at .* has a vocabulary of 50 tokens"):
        (tmp_path / "x").mkdir()
        load_stack(copy_stack(tiny_dir, tmp_path / "x", edit))


def test_policy_with_another_tokenizer_is_refused(tiny_dir, tmp_path):
    other = tmp_path / "other-policy"
    shutil.copytree(tiny_dir / "policies" / "humor", other)
    tok = build_tokenizer(tmp_path / "other-tok")
    tok.add_tokens(["zebra-crossing"])
    tok.save_pretrained(other)
    edit = lambda s: s.replace('policy = "policies/humor"', f'policy = "{other}"')
    (tmp_path / "x").mkdir()
    with pytest.raises(ValueError, match="policy of 'humor' at .* ships a tokenizer that differs from the base's"):
        load_stack(copy_stack(tiny_dir, tmp_path / "x", edit))


def test_fused_value_model_needs_labels_naming_objectives(tiny_dir, tmp_path):
    save_value_model(tmp_path / "unlabelled", 320, ["a", "b", "c"], seed=0)
    edit = lambda s: s.replace('"values/fused"', f'"{tmp_path / "unlabelled"}"')
    (tmp_path / "x").mkdir()
    with pytest.raises(ValueError, match="needs config.id2label naming each objective"):
        load_stack(copy_stack(tiny_dir, tmp_path / "x", edit, name="stack-fused.toml"))


@pytest.mark.parametrize(("weights", "message"), [
    ({}, "weights must be a non-empty dict"),
    ({"helpful": 0, "humor": 0}, "weights must not all be zero"),
    ({"helpful": -1}, "weight of 'helpful' must be a finite number >= 0, got -1"),
    ({"helpful": float("nan")}, "weight of 'helpful' must be a finite number >= 0, got nan"),
])
def test_bad_weights_raise(weights, message):
    with pytest.raises(ValueError, match=message):
        DecodeConfig(weights=weights)


@pytest.mark.parametrize(("kw", "message"), [
    ({"method": "greedy"}, "method 'greedy' is not known; allowed: base, mavis, mod, rsoup"),
    ({"beta": -1.0}, "beta must be a finite number >= 0"),
    ({"top_k": 0}, "top_k must be an integer >= 1"),
    ({"temperature": 0.0}, "temperature must be a finite number > 0"),
    ({"max_new_tokens": 0}, "max_new_tokens must be an integer >= 1"),
])
def test_bad_settings_raise(kw, message):
    with pytest.raises(ValueError, match=message):
        DecodeConfig(weights={"helpful": 1.0}, **kw)


def test_unknown_objective_in_weights_raises(tiny_stack):
    with pytest.raises(ValueError, match=r"unknown objective\(s\) \['wit'\] in weights"):
        generate_batch(tiny_stack, ["hi"], DecodeConfig(weights={"wit": 1.0}))


def test_weights_are_normalised_in_stack_order():
    assert DecodeConfig(weights={"humor": 3, "helpful": 1}).normalised(list(OBJECTIVES)) == [0.25, 0.0, 0.75]


def test_prompt_too_long_is_cut_from_the_left(tiny_stack):
    ids, _, truncated = tiny_stack.encode(["word " * 500, "hi"], max_new_tokens=10)
    assert ids.shape[1] == tiny_stack.context_length - 10 and truncated == [True, False]
    with pytest.raises(ValueError, match="max_new_tokens 64 leaves no room"):
        tiny_stack.encode(["hi"], max_new_tokens=64)


def build_paper_stack(root, tok):
    """Tiny random models of the paper stack's classes, saved where the TOML's ids are redirected."""
    llama = dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                 num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                 bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**llama)).save_pretrained(root / "llama")
    tok.save_pretrained(root / "llama")
    for name in ("helpful", "harmless"):
        GPT2ForSequenceClassification(tiny_gpt2_config(len(tok), num_labels=1)).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    distil = DistilBertConfig(vocab_size=len(tok), dim=16, hidden_dim=32, n_layers=1, n_heads=2, num_labels=2,
                              pad_token_id=0)
    DistilBertForSequenceClassification(distil).save_pretrained(root / "humor")
    tok.save_pretrained(root / "humor")
    for name in OBJECTIVES:
        LlamaForSequenceClassification(LlamaConfig(**llama, num_labels=1)).save_pretrained(
            root / "hh-rlhf" / "values" / name)
        lora = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        get_peft_model(LlamaForCausalLM.from_pretrained(root / "llama"), lora).save_pretrained(
            root / "hh-rlhf" / "policies" / name)


def test_paper_stack_loads_through_the_real_code_path(tmp_path):
    text = open(PAPER_STACK).read()
    ids = {"meta-llama/Llama-2-7b-hf": "llama", "Ray2333/gpt2-large-helpful-reward_model": "helpful",
           "Ray2333/gpt2-large-harmless-reward_model": "harmless", "mohameddhiab/humor-no-humor": "humor"}
    assert all(f'"hf:{hf_id}"' in text for hf_id in ids)  # the config names the real models, as hub ids
    build_paper_stack(tmp_path, build_tokenizer(tmp_path / "tok"))
    for hf_id, folder in ids.items():
        text = text.replace(f'"hf:{hf_id}"', f'"{tmp_path / folder}"')
    (tmp_path / "hh-rlhf.toml").write_text(text)
    stack = load_stack(tmp_path / "hh-rlhf.toml", device=torch.device("cpu"))
    assert stack.objectives == list(OBJECTIVES) and stack.methods == ["base", "mavis", "mod", "rsoup"]
    assert stack.rewards["humor"].spec.label == 1
    scores = stack.score(["hi", "how are you"], ["hello", "fine"])
    assert all(s.shape == (2,) and torch.isfinite(s).all() for s in scores.values())
    for method in stack.methods:
        gens = generate_batch(stack, ["hi", "how are you"], DecodeConfig(method=method, weights={"humor": 1},
                                                                         max_new_tokens=4), seeds=[0, 1])
        assert all(len(g.events) >= 1 for g in gens)


def test_paper_stack_names_real_ids_and_fails_clearly_without_trained_values():
    spec_text = open(PAPER_STACK).read()
    assert "trust_remote_code" not in spec_text
    with pytest.raises(ValueError, match="value model of 'helpful' not found: .*hh-rlhf/values/helpful"):
        read_stack_spec(PAPER_STACK)


def test_sequence_classification_rewards_take_replies_longer_than_their_context(tiny_stack):
    """The tiny GPT-2 reward models hold 64 positions; a long reply is cut from the left, not an error."""
    scores = tiny_stack.score(["hi"], ["word " * 300])
    assert all(torch.isfinite(s).all() for s in scores.values())
    assert tiny_stack.rewards["helpful"].max_length == 64


def test_bfloat16_if_native_follows_the_cpus_instructions(monkeypatch):
    """``bfloat16-if-native`` picks bfloat16 only where the CPU has bf16 instructions (emulated bf16 is several
    times slower than float32), always on CUDA; ``auto`` keeps float32 on any CPU."""
    from mavis_core.stack import pick_dtype

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for avx512_bf16, amx, expected in ((True, False, torch.bfloat16), (False, True, torch.bfloat16),
                                       (False, False, torch.float32)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert pick_dtype("bfloat16-if-native", cpu) == expected
        assert pick_dtype("auto", cpu) == torch.float32
    assert pick_dtype("bfloat16-if-native", cuda) == pick_dtype("auto", cuda) == torch.bfloat16
