"""The λ-conditioned policy (issue 30): its stack entry, its row of the one decoding core, and its training."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import PeftModel

from mavis_core import DecodeConfig, generate_reply, load_stack
from mavis_core.decoding import generate_side_by_side
from mavis_core.dialogue import weights_prompt
from mavis_core.stack_file import read_stack_spec
from mavis_core.testing import write_stack
from mavis_core.tilts import sample_index, top_k_logits

PROMPT = "tell me a joke about the weather today please"
WEIGHTS = {"helpful": 0.5, "harmless": 0.2, "humor": 0.3}


def cfg(method: str, **kw) -> DecodeConfig:
    return DecodeConfig(**{"method": method, "weights": WEIGHTS, "top_k": 8, "max_new_tokens": 10, "seed": 3, **kw})


@pytest.fixture(scope="module")
def cond_stack(tiny_dir):
    """stack-refs's models and a random λ-conditioned adapter (B ≠ 0, so it differs from the base)."""
    return load_stack(tiny_dir / "stack-cond.toml", device=torch.device("cpu"))


@pytest.fixture(scope="module")
def peft_conditioned(tiny_dir, cond_stack):
    """The conditioned adapter alone, loaded by peft on its own copy of the base: the reference to compare with."""
    return PeftModel.from_pretrained(copy.deepcopy(cond_stack.base), tiny_dir / "conditioned").eval()


def contexts(stack, lam: dict[str, float], max_new_tokens: int = 10) -> tuple[list[int], list[int]]:
    """Token ids of the conditioned prompt (λ in words in its system prompt) and of the plain prompt, cut from the
    left to the tiny base's context as decoding cuts them."""
    text = weights_prompt(dict(zip(stack.objectives, DecodeConfig(weights=lam).normalised(stack.objectives),
                                   strict=True)))
    return tuple(stack.encode([PROMPT], max_new_tokens, [extra])[0][0].tolist() for extra in (text, None))


@torch.inference_mode()
def test_the_conditioned_row_is_a_plain_peft_forward_of_its_adapter_on_the_conditioned_prompt(cond_stack,
                                                                                             peft_conditioned):
    conditioned, plain = contexts(cond_stack, WEIGHTS)
    ids = torch.tensor([conditioned])
    with cond_stack.lora_rows.rows(cond_stack.conditioned_mix()[None]) as model:
        row = model(input_ids=ids).logits
    torch.testing.assert_close(row, peft_conditioned(input_ids=ids).logits, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(row, cond_stack.base(input_ids=ids).logits, atol=1e-2)  # the adapter does act


@torch.inference_mode()
def test_the_conditioned_method_samples_peft_s_distribution_with_kl_to_the_plain_prompt_s_reference(
        cond_stack, peft_conditioned):
    """Same seed ⇒ the tokens of the peft adapter sampled by hand on the conditioned prompt, each with its top-k
    log-prob; log π_ref is the base's on the PLAIN prompt, and the reply's KL is Σ log π − log π_ref."""
    c = cfg("conditioned")
    gen = generate_reply(cond_stack, PROMPT, c)
    assert gen.events
    conditioned, plain = contexts(cond_stack, WEIGHTS)
    generator = torch.Generator().manual_seed(c.seed)
    for n, event in enumerate(gen.events):
        so_far = gen.token_ids[:n]
        logits = peft_conditioned(input_ids=torch.tensor([conditioned + so_far])).logits[0, -1].float()
        top, ids = top_k_logits(logits, c.top_k, c.temperature)
        assert int(ids[int(sample_index(top[None], [generator])[0])]) == event.token_id
        own = torch.log_softmax(top, -1)[ids.tolist().index(event.token_id)]
        ref = torch.log_softmax(cond_stack.base(input_ids=torch.tensor([plain + so_far])).logits[0, -1].float(), -1)
        assert event.logprob == pytest.approx(float(own), abs=1e-4)
        assert event.base_logprob == pytest.approx(float(ref[event.token_id]), abs=1e-4)
    assert gen.kl == pytest.approx(sum(e.logprob - e.base_logprob for e in gen.events))


@torch.inference_mode()
def test_conditioned_at_strength_zero_is_prompted_and_side_by_side_equals_alone(cond_stack):
    """α = 0 leaves the base reading the conditioned prompt: Prompted's reply; and a row's reply does not depend on
    the other methods sharing its batch."""
    zero = generate_reply(cond_stack, PROMPT, cfg("conditioned", strength=0.0))
    assert zero.token_ids == generate_reply(cond_stack, PROMPT, cfg("prompted")).token_ids
    methods = [*cond_stack.methods, "prompted"]
    assert "conditioned" in methods and cond_stack.can_decode("conditioned")
    alone = {m: generate_reply(cond_stack, PROMPT, cfg(m)).token_ids for m in methods}
    together = {m: [] for m in methods}
    for i, event in generate_side_by_side(cond_stack, PROMPT, [cfg(m) for m in methods]):
        together[methods[i]].append(event.token_id)
    assert together == alone


@torch.inference_mode()
def test_the_conditioned_row_decodes_beside_every_method_in_bfloat16(tiny_dir):
    """In a bfloat16 stack the conditioned adapter (peft keeps it in float32) follows the base's dtype, and its
    row decodes in one batch with every other method's, each with a finite KL."""
    from mavis_core.decoding import Decode

    stack = load_stack(tiny_dir / "stack-cond.toml", device=torch.device("cpu"), dtype=torch.bfloat16)
    methods = [*stack.methods, "prompted", "morlhf"]
    cfgs = [cfg(m, weights={"helpful": 0.2, "humor": 0.8}, max_new_tokens=4) for m in methods]
    run = Decode(stack, [PROMPT] * len(cfgs), cfgs, [c.seed for c in cfgs])
    list(run)
    for gen in run.generations:
        assert gen.events and torch.isfinite(torch.tensor(gen.kl))


@pytest.mark.parametrize("search", ["best_of_n", "beam"])
def test_test_time_search_runs_the_conditioned_policy(cond_stack, search):
    from mavis_core.search import search as run_search

    result = run_search(cond_stack, PROMPT, cfg("conditioned", search=search, num_candidates=2, num_beams=2,
                                                max_new_tokens=4))
    assert result.best.events and all(e.base_logprob <= 0 for e in result.best.events)


def test_a_stack_without_a_conditioned_policy_refuses_the_method_by_name(tiny_stack):
    assert not tiny_stack.can_decode("conditioned") and "conditioned" not in tiny_stack.methods
    with pytest.raises(ValueError, match="method 'conditioned' .*this stack has no conditioned policy"):
        generate_reply(tiny_stack, PROMPT, cfg("conditioned"))
    with pytest.raises(ValueError, match="no conditioned policy"):
        tiny_stack.conditioned_mix()


def test_a_stack_with_only_a_conditioned_policy_runs_it_without_mod_or_rsoup(tiny_dir):
    stack = load_stack(write_stack(tiny_dir, "stack-cond-only.toml", policies=False, conditioned="conditioned"),
                       device=torch.device("cpu"))
    assert stack.methods == ["base", "conditioned"] and not stack.can_decode("morlhf")
    assert generate_reply(stack, PROMPT, cfg("conditioned")).token_ids == \
        generate_reply(load_stack(tiny_dir / "stack-cond.toml", device=torch.device("cpu")), PROMPT,
                       cfg("conditioned")).token_ids


def test_sweeps_and_the_command_line_decode_the_conditioned_policy(cond_stack, tiny_dir, capsys):
    from mavis_core.cli import main
    from mavis_core.evaluation import sweep

    grid = [[1.0, 0.0, 0.0], [0.5, 0.0, 0.5]]
    df = sweep(cond_stack, [PROMPT], [0], ["conditioned"], grid, cfg("conditioned", max_new_tokens=4))
    assert len(df) == 2 and set(df.method) == {"conditioned"} and df.kl.notna().all()
    argv = ["generate", PROMPT, "--stack", str(tiny_dir / "stack-cond.toml"), "--method", "conditioned",
            "--max-new-tokens", "3", "--json"]
    assert main(argv) == 0 and json.loads(capsys.readouterr().out)["tokens"] >= 1
    assert main([*argv[:3], str(tiny_dir / "stack-sep.toml"), *argv[4:]]) == 2
    assert "this stack has no conditioned policy" in capsys.readouterr().err


def test_training_loads_a_stack_without_its_conditioned_table(tiny_dir):
    """train-conditioned may run on a stack file that already names the policy it trains (and it may not exist)."""
    from mavis_core.training.value_training import load_training_stack

    stack = load_training_stack(tiny_dir / "stack-cond.toml", torch.device("cpu"))
    assert stack.spec.conditioned is None and stack.policies is None and not stack.can_decode("conditioned")


def test_the_stack_entry_is_checked(tiny_dir):
    spec = read_stack_spec(tiny_dir / "stack-cond.toml")
    assert spec.conditioned == str((tiny_dir / "conditioned").resolve())
    assert read_stack_spec(tiny_dir / "stack-refs.toml").conditioned is None
    text = (tiny_dir / "stack-cond.toml").read_text()
    for bad, message in ((text.replace('policy = "conditioned"', 'policy = "nowhere"'), "conditioned policy not found"),
                         (text.replace('policy = "conditioned"', 'model = "conditioned"'), "needs exactly 'policy'")):
        (tiny_dir / "stack-cond-bad.toml").write_text(bad)
        with pytest.raises(ValueError, match=message):
            read_stack_spec(tiny_dir / "stack-cond-bad.toml")


def test_the_app_engine_shows_a_conditioned_column_only_where_the_stack_has_one(cond_stack, tiny_stack):
    from mavis_core.engine import Engine

    assert "conditioned" in Engine(cond_stack).methods
    assert "conditioned" not in Engine(tiny_stack).methods
    # and the app's start-up line of the policies says whether it loaded one
    assert "the λ-conditioned policy" in Engine(cond_stack).parts()[2]
    assert "conditioned" not in Engine(tiny_stack).parts()[2]


# ---- training: online DPO over sampled λ -----------------------------------------------------------------------

TRAIN_PROMPTS = ["hello there", "tell me a joke", "what did you eat", "how is the weather today"]


def test_weights_are_drawn_on_the_simplex_in_whole_percents_with_the_corners_and_a_seed():
    from mavis_core.training.conditioned import draw_weights

    lams = draw_weights(40, 3, seed=1, corner_share=0.25)
    assert all(sum(round(100 * w) for w in lam) == 100 and min(lam) >= 0 for lam in lams)
    assert all(abs(100 * w - round(100 * w)) < 1e-9 for lam in lams for w in lam)
    corners = {lam for lam in lams if max(lam) == 1.0}
    assert corners == {(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)}
    assert sum(max(lam) == 1.0 for lam in lams) >= 10
    assert draw_weights(40, 3, seed=1) == lams and draw_weights(40, 3, seed=2) != lams


def test_a_pair_prefers_by_its_own_weights_and_reads_them_in_its_system_prompt(tiny_stack):
    from mavis_core.training.conditioned import conditioned_pairs

    group = [{"prompt": "hello there", "text": "a b", "finish_reason": "length", "rewards": {"helpful": 1.0,
                                                                                              "humor": 0.0}},
             {"prompt": "hello there", "text": "c d", "finish_reason": "length", "rewards": {"helpful": 0.0,
                                                                                              "humor": 1.0}}]
    lams = [{"helpful": 0.8, "humor": 0.2}, {"helpful": 0.3, "humor": 0.7}, {"helpful": 0.5, "humor": 0.5}]
    pairs = conditioned_pairs(tiny_stack, [group] * 3, lams, 0.0)
    assert len(pairs) == 2  # equal weights tie: no pair
    ids = {s["text"]: tiny_stack.tokenizer(s["text"], add_special_tokens=False)["input_ids"] for s in group}
    assert (pairs[0].chosen_ids, pairs[1].chosen_ids) == (ids["a b"], ids["c d"])
    for pair, lam in zip(pairs, lams, strict=False):
        room = tiny_stack.context_length - max(len(pair.chosen_ids), len(pair.rejected_ids))
        assert pair.prompt_ids == tiny_stack.format.encode("hello there", weights_prompt(lam))[-room:]


def test_training_moves_the_adapter_resumes_and_its_folder_loads_as_the_stack_s_conditioned_policy(
        tiny_dir, tmp_path, monkeypatch):
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    from mavis_core.training import conditioned
    from mavis_core.training.conditioned import ConditionedTrainConfig, train_conditioned
    from mavis_core.training.policies import make_policy

    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps(TRAIN_PROMPTS))
    out = tiny_dir / "trained-conditioned"
    run = ConditionedTrainConfig(stack=tiny_dir / "stack-cond.toml", work=tmp_path / "work", out=out,
                                 prompts=prompts, quick=True, rounds=2)
    report = train_conditioned(run)
    assert len(report["rounds"]) == 2 and (tmp_path / "work" / out.name / "round1-samples.json").exists()
    assert {"base_kl", "equal_prompted_kl", "equal_conditioned_kl", "humor_conditioned_humor"} <= set(report["eval"])
    trained = load_file(out / "adapter_model.safetensors")
    stack = load_stack(write_stack(tiny_dir, "stack-trained-cond.toml", {n: f"values/{n}" for n in WEIGHTS},
                                   conditioned=out.name), device=torch.device("cpu"))
    fresh = get_peft_model_state_dict(make_policy(stack, "conditioned", run.dpo()), adapter_name="conditioned")
    assert trained.keys() == fresh.keys()
    assert any(not torch.equal(trained[k], fresh[k]) for k in trained if "lora_B" in k)  # B starts at zero
    assert stack.can_decode("conditioned") and "conditioned" in stack.methods
    assert generate_reply(stack, PROMPT, cfg("conditioned", max_new_tokens=4)).events

    def no_sampling(*args, **kw):
        raise AssertionError("a rerun must not sample again")

    monkeypatch.setattr(conditioned, "sample_conditioned", no_sampling)
    assert train_conditioned(run) == report
    (tmp_path / "work" / out.name / "report.json").unlink()  # interrupted after its rounds: only the evaluation runs
    assert train_conditioned(run)["rounds"] == report["rounds"]


# ---- the build step and the command line ---------------------------------------------------------------------


def parse_train_conditioned(command: str):
    """A recorded ``python -m mavis_core train-conditioned …`` line, parsed as the CLI parses it."""
    import argparse
    import shlex

    from mavis_core import cli
    from mavis_core.training.conditioned import ConditionedTrainConfig

    parser = argparse.ArgumentParser(argument_default=argparse.SUPPRESS)
    cli.add_train_conditioned_arguments(parser)
    return cli.config_from_args(ConditionedTrainConfig, parser.parse_args(shlex.split(command)[4:]))


def test_the_build_s_settings_are_the_policies_recipe_and_round_trip_through_the_command_line():
    from dataclasses import fields, replace
    from pathlib import Path

    from mavis_core.options import command_line
    from mavis_core.training import build, build_default
    from mavis_core.training.policies import PolicyTrainConfig

    assert "conditioned" in build.WHEEL_STEPS and "conditioned" in build.TINY_STEPS
    assert build.parse_steps("conditioned", build.WHEEL_STEPS) == ["conditioned"]
    recipe = {f.name for f in fields(PolicyTrainConfig)} - {"lora_r"}  # rank 4, as the references: assets' budget
    assert all(getattr(build_default.CONDITIONED, n) == getattr(build_default.POLICIES, n) for n in recipe)
    assert build_default.CONDITIONED.lora_r == build_default.REFERENCES.lora_r
    for cfg in (build_default.CONDITIONED, replace(build_default.TINY_CONDITIONED, quick=True, corner_share=0.5,
                                                     dirichlet_alpha=0.5, weights_per_prompt=3,
                                                     base_samples=Path("a b"), target_modules=())):
        assert parse_train_conditioned(command_line("train-conditioned", cfg)) == cfg


def test_the_quick_build_step_trains_records_and_cards_the_conditioned_policy(tiny_dir, tmp_path):
    from mavis_core.training import build
    from mavis_core.training.build_steps import BuildConfig
    from mavis_core.training.manifest import read_manifest

    out = tmp_path / "assets"
    out.mkdir()
    lines = ['prompts = ["hello there", "tell me a joke"]', "[base]", f'model = "{tiny_dir / "base"}"',
             f'tokenizer = "{tiny_dir / "tokenizer"}"']
    lines += [f'[objectives.{o}]\nreward = "{tiny_dir / "rewards" / o}"' for o in WEIGHTS]
    (out / "stack.toml").write_text("\n".join(lines))
    build.build_assets(BuildConfig(steps="conditioned", out=out, work=tmp_path / "work", quick=True))
    entry = read_manifest(out)["artifacts"]["conditioned"]
    assert "conditioned/adapter_model.safetensors" in entry["files"]
    assert {"equal_conditioned_kl", "helpful_prompted_helpful", "train_minutes_last_run"} <= set(entry["metrics"])
    run = parse_train_conditioned(entry["command"])
    assert run.quick and run.out == out / "conditioned" and run.stack == out / "stack.toml"
    assert "MOODPO" in (out / "MODEL_CARD.md").read_text()


@pytest.mark.slow
def test_the_app_streams_a_conditioned_column_with_its_kl(tiny_dir, tmp_path):
    """The app takes its columns from the stack: stack-cond's Generate tab has a Conditioned column."""
    from apputil import app_engine, launch
    from gradio_client import Client

    from app import controls

    engine = app_engine(tiny_dir, "stack-cond.toml")
    n, column = len(engine.methods), engine.methods.index("conditioned")
    demo, url = launch(engine, tmp_path / "study.db")
    try:
        client = Client(url, verbose=False, analytics_enabled=False)
        out = client.predict("hello there", 2.0, 8, 1.0, 6, 3, ["conditioned"], "helpful", "humor", controls.NO_Z,
                             0.5, 0.2, 0.3, api_name="/generate")
    finally:
        demo.close()
    texts, stats = out[:n], out[n : 2 * n]
    assert texts[column] and "KL" in stats[column]
    assert all(text == "" for m, text in zip(engine.methods, texts, strict=True) if m != "conditioned")
