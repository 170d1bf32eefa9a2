"""`python -m mavis_core build --quick`: a smoke run writes loadable, manifest-checked artifacts and resumes."""

import argparse
import json
import shlex
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from mavis_core import cli
from mavis_core.dialogue import format_dialogue
from mavis_core.options import command_line
from mavis_core.training import base, build, build_default, build_steps
from mavis_core.training.build_steps import BuildConfig
from mavis_core.training.manifest import read_manifest, verify_manifest
from mavis_core.training.policies import TrainPoliciesConfig
from mavis_core.training.value_iterations import TrainValuesConfig
from mavis_core.training.value_report import ValueReportConfig

# Each quick build takes 5-30 s on 2 shared CPU cores.
slow = pytest.mark.slow


def _args(out: Path, work: Path, steps: str) -> BuildConfig:
    return BuildConfig(steps=steps, out=out, work=work, quick=True)


@pytest.fixture(scope="module")
def quick_assets(tmp_path_factory) -> Path:
    """data + tokenizer + base, built once for the module."""
    root = tmp_path_factory.mktemp("quick")
    build.build_assets(_args(root / "assets", root / "work", "data,tokenizer,base"))
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
    assert len(json.loads((quick_assets / build_steps.EVAL_PROMPTS).read_text())) == build_steps.N_EVAL_PROMPTS


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
    build.build_assets(_args(straight, tmp_path / "work_straight", "base"))
    # "Interrupt" after a checkpoint, then run the same command again.
    args = _args(resumed, tmp_path / "work_resumed", "base")
    tok = AutoTokenizer.from_pretrained(resumed / "tokenizer")
    cfg = build_steps._base_config(args)
    tokens = base.encode_texts(tok, build_steps._texts("train", args))
    base.train_base(tok, tokens, tokens, cfg, args.work / "base", stop_after=cfg.checkpoint_every)
    assert torch.load(args.work / "base" / base.CHECKPOINT, weights_only=False)["step"] == cfg.checkpoint_every
    build.build_assets(args)
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
    with pytest.raises(ValueError, match="allowed: data, tokenizer, base, rewards, conditioned or all"):
        build.parse_steps("data,values")


SHIPPED = read_manifest(Path(__file__).parents[1] / "assets")["artifacts"]
PATHS = ("stack", "work", "out", "start_from", "base_samples")  # where a build puts things, not how it trains


def parse_command(add_arguments, cls, command: str):
    """A recorded ``python -m mavis_core SUB …`` command line, parsed as the CLI parses it into ``cls``."""
    parser = argparse.ArgumentParser(argument_default=argparse.SUPPRESS)
    add_arguments(parser)
    return cli.config_from_args(cls, parser.parse_args(shlex.split(command)[4:]))


def without_paths(cfg):
    return replace(cfg, **{name: None for name in PATHS if hasattr(cfg, name)})


@pytest.mark.parametrize("artifact, setting", [("values-fused", "VALUES"), ("values-fused-iter1", "VALUES_ITER1"),
                                               ("policies", "POLICIES"), ("references", "REFERENCES")])
def test_the_default_stacks_settings_are_the_ones_its_artifacts_were_built_with(artifact: str, setting: str):
    """Each config constant of the default stack's build equals the command line recorded with what ships."""
    add, cls = ((cli.add_train_values_arguments, TrainValuesConfig) if setting.startswith("VALUES")
                else (cli.add_train_policies_arguments, TrainPoliciesConfig))
    shipped = parse_command(add, cls, SHIPPED[artifact]["command"])
    assert without_paths(shipped) == without_paths(getattr(build_default, setting))


def test_the_report_settings_are_the_ones_the_cards_were_made_with():
    """The value-report options of the report step (the card records the command line it ran)."""
    parse = lambda argv: parse_command(cli.add_value_report_arguments, ValueReportConfig,  # noqa: E731
                                       "python -m mavis_core value-report " + argv)
    assert parse("--seeds 4 --betas 6,8 --max-new-tokens 32") == build_default.REPORT
    assert parse("--seeds 4 --betas 4,6 --max-new-tokens 32") == build_default.VALUES_ITER1_REPORT


@pytest.mark.parametrize("cfg", [build_default.VALUES, build_default.REFERENCES, build_default.REPORT,
                                 replace(build_default.VALUES_ITER1, start_from=Path("a/b"), warm_start=False,
                                         chunk_range=(4, 12)),
                                 replace(build_default.POLICIES, batch_size=4, lora_alpha=8, min_margin=0.5,
                                         top_k=5, temperature=0.7, target_modules=()),
                                 BuildConfig(steps="data", out=Path("x y"), quick=True)])
def test_a_recorded_command_line_parses_back_into_its_config(cfg):
    add = {TrainValuesConfig: cli.add_train_values_arguments, TrainPoliciesConfig: cli.add_train_policies_arguments,
           ValueReportConfig: cli.add_value_report_arguments, BuildConfig: cli.add_build_arguments}[type(cfg)]
    command = command_line("sub", cfg)
    assert parse_command(add, type(cfg), command) == cfg


def fake_train_values(cfg: TrainValuesConfig) -> None:
    """What train-values leaves behind for the iteration-1 step to record."""
    run = cfg.work / "fused"
    (run / "iter1").mkdir(parents=True)
    (run / "report.json").write_text(json.dumps([{"iteration": 0, "start_from": "x"}, {
        "iteration": 1, "best_val_mse": 2.5,
        "eval": {"helpful": {"base_reward": 1.0, "mavis_reward": 1.5, "mavis_kl": 3.0}}}]))
    (run / "iter1" / "train.json").write_text(json.dumps({
        "best_epoch": 3, "train_examples": 90, "val_examples": 10,
        "history": [{"epoch": 0, "val_mse": 4.0}, {"epoch": 3, "train_mse": 1.0, "val_mse": 2.5}]}))
    cfg.out.mkdir(parents=True)
    (cfg.out / "value_weights.safetensors").write_bytes(b"weights")


def test_the_iteration_1_step_reruns_what_ships_and_records_its_report(tmp_path: Path, monkeypatch):
    """The default stack's values-iter1 step: it trains with the shipped model's settings, goes on from
    values/fused, records metrics and a command line that rebuilds it, then the report into its card."""
    out, work = tmp_path / "assets", tmp_path / "build"
    (out / "values" / "fused").mkdir(parents=True)
    (out / "values" / "fused" / "value_config.json").write_text("{}")
    (out / "stack-iter1.toml").write_text("")
    calls = []
    monkeypatch.setattr(build_default, "train_values", lambda cfg: calls.append(cfg) or fake_train_values(cfg))
    monkeypatch.setattr(build_default, "value_report", calls.append)
    build_default.build_wheel_values_iter1(BuildConfig(out=out, work=work))
    train, report = calls
    assert without_paths(train) == without_paths(build_default.VALUES_ITER1)
    assert train.start_from == out / "values" / "fused" and train.out == out / "values" / "fused-iter1"
    entry = read_manifest(out)["artifacts"]["values-fused-iter1"]
    assert parse_command(cli.add_train_values_arguments, TrainValuesConfig, entry["command"]) == train
    assert entry["metrics"]["iter1_val_mse_of_iteration_0"] == 4.0 and entry["metrics"]["iter1_best_epoch"] == 3
    assert entry["metrics"]["iter1_helpful_reward_mavis"] == 1.5
    assert list(entry["files"]) == ["values/fused-iter1/value_weights.safetensors"]
    assert report.stack == out / "stack-iter1.toml" and report.compare == (out / "values" / "fused",)
    assert report.record == "values-fused-iter1" and report.betas == (4.0, 6.0)


def test_a_missing_iteration_0_stops_the_iteration_1_step_before_any_work(tmp_path: Path):
    with pytest.raises(ValueError, match="run the values step first"):
        build_default.build_wheel_values_iter1(BuildConfig(out=tmp_path, work=tmp_path / "w"))


def test_the_default_stacks_data_step_writes_the_tagged_prompt_mix_it_ships(tmp_path: Path, monkeypatch):
    """A wheel-shipped base's data step is `build_prompt_data` (what made the shipped eval_prompts.json and its
    manifest entry), not the tiny stack's chitchat split."""
    calls = []
    monkeypatch.setattr(build_steps, "wheel_stack", lambda out: object())
    monkeypatch.setattr(build_steps.data, "build_prompt_data", calls.append)
    build_steps.build_data(BuildConfig(out=tmp_path, seed=3))
    assert calls == [build_steps.data.PromptDataConfig(out_dir=tmp_path, seed=3)]
    assert SHIPPED["data"]["command"] == "python -m mavis_core build --steps data --out assets --seed 0"


@pytest.mark.parametrize("quick, has_stack, expected", [(True, False, "tiny"), (False, False, "default"),
                                                        (True, True, "own"), (False, True, "own")])
def test_the_reward_step_samples_labels_from_the_stack_being_built(tmp_path, monkeypatch, quick, has_stack, expected):
    from mavis_core.training import rewards

    seen = []
    monkeypatch.setattr(rewards, "build_rewards", seen.append)
    if has_stack:
        (tmp_path / "stack.toml").write_text("")
    build_steps.build_rewards_step(BuildConfig(steps="rewards", out=tmp_path, work=tmp_path / "w", quick=quick))
    stacks = {"tiny": build_steps.TINY_STACK, "default": rewards.RewardTrainConfig.stack,
              "own": tmp_path / "stack.toml"}
    assert [(c.stack, c.out_dir, c.quick) for c in seen] == [(stacks[expected], tmp_path, quick)]


def test_the_sample_replies_take_the_first_held_out_prompt_of_each_kind(tmp_path: Path):
    from mavis_core.prompts import Prompt, write_prompt_set

    write_prompt_set(tmp_path / "p.json", [Prompt("a", "chitchat"), Prompt("b", "harmful", "x"),
                                           Prompt("c", "harmful", "y"), Prompt("d", "benign")])
    assert build_default.sample_prompts(tmp_path / "p.json") == [("harmful", "b"), ("benign", "d"), ("chitchat", "a")]
    write_prompt_set(tmp_path / "q.json", [Prompt(t) for t in "uvwxyz"])
    assert [p for _, p in build_default.sample_prompts(tmp_path / "q.json")] == list("uvwx")
