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


def test_the_iteration_1_step_reruns_what_ships_and_records_its_report(tmp_path: Path, monkeypatch):
    """The default stack's values-iter1 step: the command it runs is the shipped model's recorded command (same
    train-values options), it goes on from values/fused, and it records metrics, then the report into its card."""
    from mavis_core.training import build_wheel
    from mavis_core.training.value_training import add_train_values_arguments

    out, work = tmp_path / "assets", tmp_path / "build"
    (out / "values" / "fused").mkdir(parents=True)
    (out / "values" / "fused" / "value_config.json").write_text("{}")
    (out / "stack-iter1.toml").write_text("")
    calls = []

    def fake_run(argv: list[str]) -> None:  # what train-values and value-report would leave behind
        calls.append(argv)
        if argv[0] == "train-values":
            run = Path(argv[argv.index("--work") + 1]) / "fused"
            (run / "iter1").mkdir(parents=True)
            (run / "report.json").write_text(json.dumps([{"iteration": 0, "start_from": "x"}, {
                "iteration": 1, "best_val_mse": 2.5,
                "eval": {"helpful": {"base_reward": 1.0, "mavis_reward": 1.5, "mavis_kl": 3.0}}}]))
            (run / "iter1" / "train.json").write_text(json.dumps({
                "best_epoch": 3, "train_examples": 90, "val_examples": 10,
                "history": [{"epoch": 0, "val_mse": 4.0}, {"epoch": 3, "train_mse": 1.0, "val_mse": 2.5}]}))
            dest = Path(argv[argv.index("--out") + 1])
            dest.mkdir(parents=True)
            (dest / "value_weights.safetensors").write_bytes(b"weights")

    monkeypatch.setattr(build_wheel, "_run", fake_run)
    build_wheel.build_wheel_values_iter1(argparse.Namespace(out=out, work=work, seed=0))
    train, report = calls
    parser = add_train_values_arguments(argparse.ArgumentParser())
    shipped = read_manifest(Path(__file__).parents[1] / "assets")["artifacts"]["values-fused-iter1"]["command"]
    ours = vars(parser.parse_args(train[1:]))
    theirs = vars(parser.parse_args(shipped.split()[4:]))  # after "python -m mavis_core train-values"
    paths = {"stack", "work", "out", "start_from"}
    assert {k: v for k, v in ours.items() if k not in paths} == {k: v for k, v in theirs.items() if k not in paths}
    assert ours["start_from"] == out / "values" / "fused" and ours["out"] == out / "values" / "fused-iter1"
    entry = read_manifest(out)["artifacts"]["values-fused-iter1"]
    assert entry["metrics"]["iter1_val_mse_of_iteration_0"] == 4.0 and entry["metrics"]["iter1_best_epoch"] == 3
    assert entry["metrics"]["iter1_helpful_reward_mavis"] == 1.5
    assert list(entry["files"]) == ["values/fused-iter1/value_weights.safetensors"]
    assert report[:4] == ["value-report", "--stack", str(out / "stack-iter1.toml"), "--compare"]
    assert report[report.index("--record") + 1] == "values-fused-iter1"


def test_a_missing_iteration_0_stops_the_iteration_1_step_before_any_work(tmp_path: Path):
    from mavis_core.training import build_wheel

    with pytest.raises(ValueError, match="run the values step first"):
        build_wheel.build_wheel_values_iter1(argparse.Namespace(out=tmp_path, work=tmp_path / "w", seed=0))
