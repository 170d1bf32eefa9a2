"""`python -m mavis_core build --quick`: a smoke run writes loadable, manifest-checked artifacts and resumes."""

import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from mavis_core.dialogue import format_dialogue
from mavis_core.training import base, build
from mavis_core.training.manifest import read_manifest, verify_manifest

# Each quick build takes 5-30 s on 2 shared CPU cores.
slow = pytest.mark.slow


def _args(out: Path, work: Path, steps: str) -> argparse.Namespace:
    parser = build.add_build_arguments(argparse.ArgumentParser())
    return parser.parse_args(["--steps", steps, "--out", str(out), "--work", str(work), "--quick"])


@pytest.fixture(scope="module")
def quick_assets(tmp_path_factory) -> Path:
    """data + tokenizer + base, built once for the module."""
    root = tmp_path_factory.mktemp("quick")
    build.run_build(_args(root / "assets", root / "work", "data,tokenizer,base"))
    return root / "assets"


@slow
def test_quick_build_writes_loadable_artifacts(quick_assets: Path):
    assert verify_manifest(quick_assets) == []
    assert sorted(read_manifest(quick_assets)["artifacts"]) == ["base", "data", "tokenizer"]
    tok = AutoTokenizer.from_pretrained(quick_assets / "tokenizer")
    text = format_dialogue(["hi, how are you?", "good, you?"])
    assert tok.decode(tok(text).input_ids) == text
    assert tok.eos_token == tok.bos_token == tok.pad_token == "<|endoftext|>"
    model = AutoModelForCausalLM.from_pretrained(quick_assets / "base", dtype=torch.float32)
    assert model.config.vocab_size == len(tok)
    with safe_open(quick_assets / "base" / "model.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    logits = model(**tok(text, return_tensors="pt")).logits  # (1, t, vocab)
    assert torch.isfinite(logits).all()
    assert len(json.loads((quick_assets / build.EVAL_PROMPTS).read_text())) == build.N_EVAL_PROMPTS


@slow
def test_model_card_and_commands_are_recorded(quick_assets: Path):
    artifacts = read_manifest(quick_assets)["artifacts"]
    assert artifacts["base"]["command"].startswith("python -m mavis_core build --steps base --out ")
    assert artifacts["base"]["command"].endswith("--quick")
    assert "validation_perplexity" in artifacts["base"]["metrics"]
    card = (quick_assets / "MODEL_CARD.md").read_text()
    assert "## base" in card and "| held-out prompt | sampled reply |" in card


@slow
def test_interrupted_training_resumes_to_the_same_weights(quick_assets: Path, tmp_path: Path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    for out in (straight, resumed):
        (out / "tokenizer").mkdir(parents=True)
        for f in (quick_assets / "tokenizer").iterdir():
            (out / "tokenizer" / f.name).write_bytes(f.read_bytes())
    build.run_build(_args(straight, tmp_path / "work_straight", "base"))
    # "Interrupt" after a checkpoint, then run the same command again.
    args = _args(resumed, tmp_path / "work_resumed", "base")
    tok = AutoTokenizer.from_pretrained(resumed / "tokenizer")
    cfg = build._base_config(args)
    tokens = base.encode_texts(tok, build._texts("train", args))
    base.train_base(tok, tokens, tokens, cfg, args.work / "base", stop_after=cfg.checkpoint_every)
    assert torch.load(args.work / "base" / base.CHECKPOINT, weights_only=False)["step"] == cfg.checkpoint_every
    build.run_build(args)
    files = [read_manifest(out)["artifacts"]["base"]["files"]["base/model.safetensors"] for out in (straight, resumed)]
    assert files[0] == files[1]


@slow
def test_a_checkpoint_from_other_settings_is_refused(quick_assets: Path, tmp_path: Path):
    tok = AutoTokenizer.from_pretrained(quick_assets / "tokenizer")
    tokens = torch.arange(len(tok)).repeat(20)
    base.train_base(tok, tokens, tokens, base.QUICK_CONFIG, tmp_path, stop_after=base.QUICK_CONFIG.checkpoint_every)
    other = base.BaseTrainConfig(**{**base.asdict(base.QUICK_CONFIG), "lr": 0.5})
    with pytest.raises(ValueError, match="delete it"):
        base.train_base(tok, tokens, tokens, other, tmp_path)


@pytest.mark.parametrize("steps, expected", [("all", list(build.STEPS)), ("base, data", ["data", "base"])])
def test_steps_run_in_pipeline_order(steps: str, expected: list[str]):
    assert build.parse_steps(steps) == expected


def test_unknown_steps_are_rejected():
    with pytest.raises(ValueError, match="allowed: data, tokenizer, base, rewards or all"):
        build.parse_steps("data,values")
