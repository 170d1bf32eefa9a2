"""Exact-preference policies (the paper's MORLHF references): the stack format, decoding them, and sweeps."""

from __future__ import annotations

import pytest
import torch

from mavis_core import DecodeConfig, load_stack
from mavis_core.decoding import Decode, LaneDecoder, generate_batch
from mavis_core.evaluation import sweep
from mavis_core.lanes import Lane
from mavis_core.lora_rows import merge_policies
from mavis_core.search import search
from mavis_core.stack_file import read_stack_spec
from mavis_core.testing import OBJECTIVES, REFERENCES, write_stack

PROMPT = "hello there"


@pytest.fixture(scope="module")
def refs_stack(tiny_dir):
    return load_stack(tiny_dir / "stack-refs.toml", device=torch.device("cpu"))


def test_references_are_read_with_their_normalised_lambda(tiny_dir):
    spec = read_stack_spec(tiny_dir / "stack-refs.toml")
    assert [r.name for r in spec.references] == list(REFERENCES)
    assert spec.references[0].lam == (0.2, 0.0, 0.8)  # helpful / harmless / humor, in the stack's order
    assert read_stack_spec(tiny_dir / "stack-sep.toml").references == ()


@pytest.mark.parametrize("table, message", [
    ('policy = "references/helpful0.2-humor0.8"\nweights = { funny = 1.0 }', "must map objectives"),
    ('policy = "references/helpful0.2-humor0.8"\nweights = { helpful = 0.0 }', "not all 0"),
    ('policy = "references/helpful0.2-humor0.8"\nweights = { helpful = -1.0, humor = 2.0 }', "weights >= 0"),
    ('policy = "references/helpful0.2-humor0.8"\nweights = { humor = 3.0 }', "is one-hot"),
    ('weights = { helpful = 0.5, humor = 0.5 }', "needs exactly 'policy' and 'weights'"),
    ('policy = "references/nowhere"\nweights = { helpful = 0.5, humor = 0.5 }', "not found"),
])
def test_a_bad_reference_table_is_refused_with_its_name(tiny_dir, tmp_path, table, message):
    for folder in ("base", "tokenizer", "rewards", "policies", "references"):
        (tmp_path / folder).symlink_to(tiny_dir / folder)
    path = write_stack(tmp_path, "bad.toml")
    path.write_text(path.read_text() + f"\n[references.bad]\n{table}\n")
    with pytest.raises(ValueError, match=message):
        read_stack_spec(path)


def test_references_need_the_objectives_own_policies_and_differ_from_each_other(tiny_dir, tmp_path):
    for folder in ("base", "tokenizer", "rewards", "policies", "references"):
        (tmp_path / folder).symlink_to(tiny_dir / folder)
    with pytest.raises(ValueError, match="need the objectives' own policies"):
        read_stack_spec(write_stack(tmp_path, "a.toml", policies=False, references=REFERENCES))
    twice = {"one": {"helpful": 1, "humor": 4}, "two": {"helpful": 0.2, "humor": 0.8}}
    path = write_stack(tmp_path, "b.toml", references=twice)
    path.write_text(path.read_text().replace("references/one", "references/helpful0.2-humor0.8")
                    .replace("references/two", "references/helpful0.2-humor0.8"))
    with pytest.raises(ValueError, match="same weights as references.one"):
        read_stack_spec(path)


def test_morlhf_decodes_the_reference_fine_tuned_for_exactly_that_lambda(refs_stack):
    """At a reference's λ MORLHF's distribution is that adapter's alone (a merged copy of it agrees); at an
    objective alone it is that objective's own policy, the same reply as MOD one-hot."""
    ids, mask, _ = refs_stack.encode([PROMPT], 8)
    cfg = DecodeConfig(method="morlhf", weights={"helpful": 1, "humor": 4}, max_new_tokens=8)
    dec = LaneDecoder(refs_stack, ids, mask, [Lane(cfg, 0, 0)])
    merged = merge_policies(refs_stack.base, refs_stack.policies, {"reference0": 1.0})
    want = merged(input_ids=ids, attention_mask=mask).logits[0, -1]
    torch.testing.assert_close(dec.distribution(0), want, atol=1e-4, rtol=1e-4)
    plain = refs_stack.base(input_ids=ids, attention_mask=mask).logits[0, -1]
    assert not torch.allclose(dec.distribution(0), plain, atol=1e-3)  # the adapter changes the base
    one_hot = [DecodeConfig(method=m, weights={"humor": 1.0}, max_new_tokens=8, seed=3) for m in ("morlhf", "mod")]
    morlhf, mod = (generate_batch(refs_stack, [PROMPT], c)[0] for c in one_hot)
    assert morlhf.token_ids == mod.token_ids and morlhf.kl == pytest.approx(mod.kl)


def test_morlhf_side_by_side_equals_its_own_run_and_refuses_an_untrained_lambda(refs_stack):
    cfgs = [DecodeConfig(method=m, weights={"helpful": 3, "humor": 1}, max_new_tokens=6, seed=s)
            for m in ("base", "mavis", "morlhf", "rsoup") for s in (0, 1)]
    run = Decode(refs_stack, [PROMPT] * len(cfgs), cfgs, [c.seed for c in cfgs])
    list(run)
    for cfg, gen in zip(cfgs, run.generations, strict=True):
        alone = generate_batch(refs_stack, [PROMPT], cfg, [cfg.seed])[0]
        assert gen.token_ids == alone.token_ids, cfg.method
    with pytest.raises(ValueError, match=r"no policy fine-tuned for λ 0.5/0/0.5 .*this stack has them at: 1/0/0; "
                                         r"0/1/0; 0/0/1; 0.2/0/0.8; 0.75/0/0.25"):
        generate_batch(refs_stack, [PROMPT], DecodeConfig(method="morlhf", weights={"helpful": 1, "humor": 1},
                                                          max_new_tokens=4))


@pytest.mark.parametrize("method", ["base", "mavis", "mod", "rsoup", "morlhf", "prompted"])
def test_every_method_under_beam_search_reports_the_kl_of_a_full_base_pass(refs_stack, method):
    """Beam search drives the sampling loop's rows, π_ref's included: each beam's KL is finite and equals
    Σ_t log π(a_t) − log π_ref(a_t) with π_ref from one uncached base pass over the plain prompt ⊕ reply."""
    cfg = DecodeConfig(method=method, weights={"helpful": 1, "humor": 4}, beta=2.0, top_k=6, max_new_tokens=8,
                       search="beam", num_beams=3)
    result = search(refs_stack, PROMPT, cfg)
    prompt_ids = refs_stack.format.encode(PROMPT)
    for gen in result.candidates:
        ids = torch.tensor([prompt_ids + gen.token_ids])
        with torch.inference_mode():
            logprobs = torch.log_softmax(refs_stack.base(input_ids=ids).logits[0].float(), -1)  # (T, V)
        ref = sum(float(logprobs[len(prompt_ids) - 1 + t, tok]) for t, tok in enumerate(gen.token_ids))
        assert gen.events and torch.isfinite(torch.tensor(gen.kl))
        assert gen.kl == pytest.approx(sum(e.logprob for e in gen.events) - ref, abs=1e-3)


def test_a_sweep_runs_morlhf_only_where_it_was_fine_tuned(refs_stack, tiny_stack):
    grid = [[1 - i / 4, 0.0, i / 4] for i in range(5)]  # helpful–humor at 0, 0.25, … 1
    df = sweep(refs_stack, [PROMPT], [0], ["morlhf", "mavis"], grid,
               DecodeConfig(weights={"helpful": 1.0}, max_new_tokens=4))
    assert sorted(df[df.method == "morlhf"].w_humor) == [0.0, 0.25, 1.0]  # both ends and the reference on the grid
    assert sorted(df[df.method == "mavis"].w_humor) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert tiny_stack.morlhf_points == [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]  # no [references]
    assert "morlhf" not in refs_stack.methods  # a reference, not a steering method: not a column of the app


def test_a_stack_without_policies_cannot_decode_morlhf(tiny_dir, tmp_path):
    for folder in ("base", "tokenizer", "rewards", "values"):
        (tmp_path / folder).symlink_to(tiny_dir / folder)
    values = {n: f"values/{n}" for n in OBJECTIVES}
    stack = load_stack(write_stack(tmp_path, "values-only.toml", values, policies=False), device=torch.device("cpu"))
    assert stack.methods == ["base", "mavis"] and not stack.can_decode("morlhf")
    with pytest.raises(ValueError, match=r"\['morlhf'\] can't run on this stack"):
        sweep(stack, [PROMPT], [0], ["morlhf"], [[1.0, 0.0, 0.0]], DecodeConfig(weights={"helpful": 1.0}))


def test_training_loads_a_stack_with_references_without_them(tiny_dir):
    """Training needs only the base and rewards: a stack file naming references (not trained yet, or being
    trained) still loads for it."""
    from mavis_core.training.value_training import load_training_stack

    stack = load_training_stack(tiny_dir / "stack-refs.toml", torch.device("cpu"))
    assert stack.spec.references == () and stack.policies is None and stack.objectives == ["helpful", "harmless",
                                                                                            "humor"]
