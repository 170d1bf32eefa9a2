"""Baseline policies: the DPO loss by hand, sequence log-probs, pairs, training steps, saved adapters in a stack."""

import json
import math

import pytest
import torch

from mavis_core import DecodeConfig, generate_batch, load_stack
from mavis_core.dialogue import HUMAN
from mavis_core.training import policies
from mavis_core.training.dpo import Pair, dpo_loss, sequence_logprobs, train_dpo
from mavis_core.training.policies import (
    QUICK,
    PolicyTrainConfig,
    TrainPoliciesConfig,
    make_pairs,
    make_policy,
    parse_preference,
    policy_targets,
    reply_ids,
    train_policies,
)

PROMPTS = ["hello there", "tell me a joke", "what did you eat", "how is the weather today"]


def test_dpo_loss_by_hand():
    # margin = β·((−1 − −2) − (−3 − −2)) = 0.5 · 2 = 1  ->  loss = log(1 + e^−1)
    got = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.5)
    assert float(got) == pytest.approx(math.log1p(math.exp(-1)))
    assert float(dpo_loss(*(torch.zeros(3),) * 4, beta=0.1)) == pytest.approx(math.log(2))


def test_sequence_logprobs_sum_the_reply_tokens_only(tiny_stack):
    prompts, replies = [[5, 6, 7], [8]], [[9, 10], [11, 12, 13]]
    with torch.no_grad():
        got = sequence_logprobs(tiny_stack.base, prompts, replies, pad_id=0)
    for row, (p, r) in enumerate(zip(prompts, replies, strict=True)):
        ids = torch.tensor([p + r])
        with torch.no_grad():
            lp = torch.log_softmax(tiny_stack.base(input_ids=ids).logits[0].float(), -1)  # (T, V)
        want = sum(lp[len(p) - 1 + t, tok] for t, tok in enumerate(r))
        assert float(got[row]) == pytest.approx(float(want), abs=1e-4)


def test_reply_ids_keep_how_the_reply_ended(tiny_stack):
    tok = tiny_stack.tokenizer
    text_ids = tok(" hello", add_special_tokens=False)["input_ids"]
    assert reply_ids(tok, " hello", "length") == text_ids
    assert reply_ids(tok, " hello", "eos") == text_ids + [tok.eos_token_id]
    assert reply_ids(tok, " hello", "stop") == text_ids + tok(HUMAN, add_special_tokens=False)["input_ids"]


def test_pairs_are_best_against_worst_and_ties_are_dropped(tiny_stack):
    samples = [{"prompt": "hi", "text": t, "finish_reason": "length", "reward": r}
               for t, r in [(" a", 0.1), (" b", 0.9), (" c", -0.5), (" d", 0.2), (" e", 0.3), (" f", 0.25)]]
    tok = tiny_stack.tokenizer
    pairs = make_pairs(tiny_stack, samples, k=3, min_margin=0.0)
    assert [(p.chosen_ids, p.rejected_ids) for p in pairs] == [
        (tok(" b")["input_ids"], tok(" c")["input_ids"]), (tok(" e")["input_ids"], tok(" d")["input_ids"])]
    assert len(make_pairs(tiny_stack, samples, k=3, min_margin=0.15)) == 1  # 0.3 vs 0.2 is within the margin
    ties = samples[:3] + [samples[4]] * 3  # the second prompt's replies all score 0.3
    assert len(make_pairs(tiny_stack, ties, k=3, min_margin=0.0)) == 1


def test_a_few_dpo_steps_change_the_adapter_and_lower_the_loss(tiny_stack):
    cfg = PolicyTrainConfig(epochs=3, batch_size=2, lr=1e-2)
    model = make_policy(tiny_stack, "humor", cfg)
    pairs = [Pair([5, 6, 7], [9, 10], [11, 12]), Pair([8, 9], [13], [14, 15, 16]), Pair([4], [20, 21], [22])]
    before = {k: v.clone() for k, v in model.state_dict().items() if "lora" in k}
    stats = train_dpo(model, pairs, cfg, pad_id=0)
    after = {k: v for k, v in model.state_dict().items() if "lora" in k}
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert stats["last_loss"] < stats["first_loss"] and stats["pairs"] == 3
    assert all("lora_" in name for name, p in model.named_parameters() if p.requires_grad)  # the base is frozen


def policy_config(tiny_dir, tmp_path, **fields) -> TrainPoliciesConfig:
    """A quick train-policies run on the tiny stack's PROMPTS."""
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps(PROMPTS))
    return TrainPoliciesConfig(**{"stack": tiny_dir / "stack-sep.toml", "work": tmp_path / "work",
                                  "out": tiny_dir / "trained-policies", "prompts": prompts, "quick": True, **fields})


def test_trained_adapters_load_in_a_stack_and_a_rerun_resumes(tiny_dir, tmp_path, monkeypatch):
    reports = train_policies(policy_config(tiny_dir, tmp_path, rounds=2))
    assert set(reports) == {"helpful", "harmless", "humor"}
    assert len(reports["humor"]["rounds"]) == 2 and (tmp_path / "work" / "humor" / "round1-samples.json").exists()
    lines = ['prompts = ["hello there"]', "[base]", 'model = "base"', 'tokenizer = "tokenizer"']
    for name in reports:
        lines += [f"[objectives.{name}]", f'reward = "rewards/{name}"', f'policy = "trained-policies/{name}"']
    (tiny_dir / "stack-trained-policies.toml").write_text("\n".join(lines))
    stack = load_stack(tiny_dir / "stack-trained-policies.toml", device=torch.device("cpu"))
    for method in ("mod", "rsoup"):
        cfg = DecodeConfig(method=method, weights={"humor": 0.5, "helpful": 0.5}, max_new_tokens=5)
        assert generate_batch(stack, ["hello there"], cfg)[0].events

    def no_sampling(*args, **kw):
        raise AssertionError("a rerun must not sample again")

    monkeypatch.setattr(policies, "sample_replies", no_sampling)
    assert train_policies(policy_config(tiny_dir, tmp_path, rounds=2)) == reports


def test_quick_settings_and_unknown_objectives(tiny_dir, tmp_path):
    assert policy_config(tiny_dir, tmp_path).dpo().samples_per_prompt == QUICK["samples_per_prompt"]
    with pytest.raises(ValueError, match="not in this stack"):
        train_policies(policy_config(tiny_dir, tmp_path, objectives=("wit",)))


def test_preferences_parse_and_normalise():
    names = ["helpful", "harmless", "humor"]
    assert parse_preference("helpful=2, humor=2", names) == {"helpful": 0.5, "humor": 0.5}
    assert parse_preference("helpful=1,humor=0", names) == {"helpful": 1.0}
    for bad in ("wit=1", "helpful", "helpful=x", "helpful=-1,humor=2", "helpful=0"):
        with pytest.raises(ValueError, match="preference"):
            parse_preference(bad, names)


def test_policy_targets_are_objectives_and_preferences(tiny_dir, tmp_path):
    names = ["helpful", "harmless", "humor"]
    assert list(policy_targets(policy_config(tiny_dir, tmp_path), names)) == names
    only = policy_targets(policy_config(tiny_dir, tmp_path, preference=("helpful=0.4,humor=0.6",)), names)
    assert only == {"helpful0.4-humor0.6": {"helpful": 0.4, "humor": 0.6}}
    both = policy_targets(policy_config(tiny_dir, tmp_path, objectives=("humor",), preference=("helpful=1,humor=3",)),
                          names)
    assert both == {"humor": {"humor": 1.0}, "helpful0.25-humor0.75": {"helpful": 0.25, "humor": 0.75}}


def test_an_exact_preference_policy_trains_and_reports_each_objective(tiny_dir, tmp_path):
    reports = train_policies(policy_config(tiny_dir, tmp_path, preference=("helpful=0.4,humor=0.6",)))
    e = reports["helpful0.4-humor0.6"]["eval"]
    assert e["policy_reward"] == pytest.approx(0.4 * e["policy_helpful"] + 0.6 * e["policy_humor"], abs=1e-5)
    assert (tiny_dir / "trained-policies" / "helpful0.4-humor0.6" / "adapter_config.json").exists()


def test_the_policies_of_a_run_share_one_sampling_of_the_base(tiny_dir, tmp_path, monkeypatch):
    """Round 0's base replies do not depend on the weights: 3 objectives and a preference sample them once, and
    each policy's samples are those replies with its own weighted reward, as sampling for it alone gives."""
    calls = []
    sample = policies._sample
    monkeypatch.setattr(policies, "_sample", lambda *a, **kw: calls.append(a[4]) or sample(*a, **kw))
    reports = train_policies(policy_config(tiny_dir, tmp_path, objectives=("helpful", "harmless", "humor"),
                                           preference=("helpful=0.4,humor=0.6",)))
    assert len(reports) == 4 and calls == [0]  # one round 0 for all four
    work = tmp_path / "work"
    assert len(list(work.glob("base-samples-*.json"))) == 1
    stack = load_stack(tiny_dir / "stack-sep.toml", device=torch.device("cpu"))
    cfg = policy_config(tiny_dir, tmp_path).dpo()
    for name, weights in [("humor", {"humor": 1.0}), ("helpful0.4-humor0.6", {"helpful": 0.4, "humor": 0.6})]:
        alone = policies.sample_replies(stack, weights, PROMPTS[: cfg.num_prompts], cfg, 0)
        shared = json.loads((work / name / "round0-samples.json").read_text())
        assert [s["text"] for s in shared] == [s["text"] for s in alone]
        assert [s["reward"] for s in shared] == pytest.approx([s["reward"] for s in alone], abs=1e-6)


def test_base_samples_are_shared_between_runs_through_one_folder(tiny_dir, tmp_path, monkeypatch):
    """The build's policies and references steps have work folders of their own and one --base-samples."""
    calls = []
    sample = policies._sample
    monkeypatch.setattr(policies, "_sample", lambda *a, **kw: calls.append(a[4]) or sample(*a, **kw))
    shared = tmp_path / "shared"
    for work, extra in [("w1", {"objectives": ("humor",)}), ("w2", {"preference": ("helpful=0.4,humor=0.6",)})]:
        train_policies(policy_config(tiny_dir, tmp_path, **extra, base_samples=shared, work=tmp_path / work))
    assert calls == [0] and len(list(shared.glob("base-samples-*.json"))) == 1
    assert not list((tmp_path / "w1").glob("base-samples-*.json"))


def test_base_samples_of_another_stack_are_kept_apart(tiny_dir, tmp_path):
    """One folder, other stacks (another dtype, another base named in the file): each gets its own sampling."""
    import dataclasses

    cfg = PolicyTrainConfig(**{**QUICK, "num_prompts": 2})
    for dtype in (torch.float32, torch.bfloat16):
        stack = load_stack(tiny_dir / "stack-sep.toml", device=torch.device("cpu"), dtype=dtype)
        policies.base_samples(stack, {"humor": 1.0}, PROMPTS[:2], cfg, tmp_path)
    stack.spec = dataclasses.replace(stack.spec, base_model=stack.spec.base_model + "-other")
    policies.base_samples(stack, {"humor": 1.0}, PROMPTS[:2], cfg, tmp_path)
    assert len(list(tmp_path.glob("base-samples-*.json"))) == 3


def test_refusal_samples_open_the_last_base_samples_of_each_prompt_with_a_refusal(tiny_stack):
    from mavis_core.training.base_replies import REFUSAL_OPENERS

    cfg = PolicyTrainConfig(samples_per_prompt=3, refusal_samples=1, max_new_tokens=16)
    rows, gens = policies._sample(tiny_stack, {"humor": 1.0}, PROMPTS[:2], cfg, 0)
    assert rows == [p for p in PROMPTS[:2] for _ in range(3)]
    opened = [any(g.text.startswith(o) for o in REFUSAL_OPENERS) for g in gens]
    assert opened == [False, False, True, False, False, True]
    assert all(g.finish_reason in ("eos", "stop", "length") for g in gens)
    free = policies._sample(tiny_stack, {"humor": 1.0}, PROMPTS[:2], PolicyTrainConfig(samples_per_prompt=3,
                                                                                      max_new_tokens=16), 0)[1]
    assert [g.text for i, g in enumerate(gens) if i % 3 < 2] == [g.text for i, g in enumerate(free) if i % 3 < 2]
    with pytest.raises(ValueError, match="refusal_samples"):
        PolicyTrainConfig(samples_per_prompt=2, refusal_samples=2)
