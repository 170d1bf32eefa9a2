"""The decoding loop: caches, batching, seeds, each method's distribution, the LogitsProcessor."""

import threading

import pytest
import torch
from peft.tuners.lora import LoraLayer

from mavis_core import DecodeConfig, generate, generate_batch, generate_reply
from mavis_core.decoding import Decode, LaneDecoder, TokenEvent, _Row, generate_side_by_side
from mavis_core.dialogue import format_prompt, weights_prompt
from mavis_core.lanes import Lane
from mavis_core.lora_rows import merge_policies
from mavis_core.testing import STACK_METHODS
from mavis_core.tilts import mavis_tilt, top_k_logits
from mavis_core.values import MavisLogitsProcessor, ValueScorer, values_uncached

PROMPTS = ["hello there", "tell me a joke about the weather today please"]
WEIGHTS = {"helpful": 0.5, "harmless": 0.2, "humor": 0.3}
METHODS = list(STACK_METHODS)
WITH_PROMPTED = [*METHODS, "prompted"]


def cfg(method, **kw):
    return DecodeConfig(**{"method": method, "weights": WEIGHTS, "beta": 2.0, "top_k": 8, "max_new_tokens": 10,
                           "seed": 3, **kw})


def ids_of(stack, prompt):
    return torch.tensor([stack.tokenizer(format_prompt(prompt))["input_ids"]])


@pytest.mark.parametrize("stack_name", ["tiny_stack", "fused_stack"])
def test_cached_candidate_values_equal_uncached(stack_name, request):
    stack = request.getfixturevalue(stack_name)
    input_ids, mask, _ = stack.encode(PROMPTS, 8)  # left-padded batch of two lengths
    scorer = ValueScorer(stack.value_models, 3)
    scorer.start(input_ids, mask)
    prefixes = [ids_of(stack, p)[0] for p in PROMPTS]
    for _ in range(3):  # three steps: score candidates, keep one, repeat
        cands = torch.randint(1, len(stack.tokenizer), (2, 5))
        got = scorer.q_values(cands)  # (B, M, k)
        for b, prefix in enumerate(prefixes):
            seqs = torch.stack([torch.cat([prefix, c.view(1)]) for c in cands[b]])
            want = sum(values_uncached(vm, seqs, 3) for vm in stack.value_models)  # (k, M)
            torch.testing.assert_close(got[b].T, want, atol=1e-4, rtol=1e-4)
        chosen = torch.tensor([1, 3])
        scorer.keep(chosen)
        prefixes = [torch.cat([p, cands[b, chosen[b]].view(1)]) for b, p in enumerate(prefixes)]


def distribution(stack, c, input_ids):
    """The next-token logits (V,) of ``c``'s method after ``input_ids`` (1, T), from the decoding loop's rows."""
    return LaneDecoder(stack, input_ids, torch.ones_like(input_ids), [Lane(c, 0, 0)]).distribution(0)


@torch.inference_mode()
def test_cached_base_logits_equal_uncached(tiny_stack):
    input_ids, mask, _ = tiny_stack.encode(PROMPTS, 8)
    dec = LaneDecoder(tiny_stack, input_ids, mask, [Lane(cfg("base"), 0, 0), Lane(cfg("base"), 1, 1)])
    seqs = [ids_of(tiny_stack, p)[0] for p in PROMPTS]
    for _ in range(3):
        for b, seq in enumerate(seqs):
            full = tiny_stack.base(input_ids=seq[None]).logits[0, -1]
            torch.testing.assert_close(dec.distribution(b), full, atol=1e-4, rtol=1e-4)
        steps = dec.sample()
        dec.advance()
        seqs = [torch.cat([s, torch.tensor([steps[b].token])]) for b, s in enumerate(seqs)]


@pytest.mark.parametrize("method", WITH_PROMPTED)
def test_batched_equals_unbatched_and_seeds_repeat(tiny_stack, method):
    batch = generate_batch(tiny_stack, PROMPTS, cfg(method), seeds=[3, 4])
    for prompt, seed, gen in zip(PROMPTS, [3, 4], batch, strict=True):
        alone = list(generate(tiny_stack, prompt, cfg(method, seed=seed)))
        assert [e.token_id for e in alone] == gen.token_ids
        assert "".join(e.text for e in alone) == gen.text
        for a, b in zip(alone, gen.events, strict=True):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
            assert a.base_logprob == pytest.approx(b.base_logprob, abs=1e-4)
    again = generate_batch(tiny_stack, PROMPTS, cfg(method), seeds=[3, 4])
    assert [g.text for g in again] == [g.text for g in batch]
    other = generate_batch(tiny_stack, PROMPTS, cfg(method), seeds=[5, 6])
    assert [g.token_ids for g in other] != [g.token_ids for g in batch]


def test_events_carry_log_probs_and_contributions(tiny_stack):
    events = list(generate(tiny_stack, PROMPTS[0], cfg("mavis")))
    assert len(events) == 10
    for e in events:
        assert e.logprob <= 0 and e.base_logprob <= 0
        assert set(e.contributions) == {"helpful", "harmless", "humor"}
    base = list(generate(tiny_stack, PROMPTS[0], cfg("base")))
    assert all(e.contributions is None for e in base)


def test_beta_zero_mavis_equals_base(tiny_stack):
    mavis = generate_batch(tiny_stack, PROMPTS, cfg("mavis", beta=0.0), seeds=[1, 2])
    base = generate_batch(tiny_stack, PROMPTS, cfg("base"), seeds=[1, 2])
    assert [g.token_ids for g in mavis] == [g.token_ids for g in base]
    for m, b in zip(mavis[0].events, base[0].events, strict=True):
        assert m.logprob == pytest.approx(b.logprob, abs=1e-5)


@torch.inference_mode()
def test_one_hot_mavis_step_uses_that_objectives_values(tiny_stack):
    c = cfg("mavis", weights={"humor": 1.0})
    input_ids, mask, _ = tiny_stack.encode(PROMPTS[:1], 8)
    proposal = LaneDecoder(tiny_stack, input_ids, mask, [Lane(c, 0, 0)]).propose()[0]
    cand_logits, cand_ids = top_k_logits(tiny_stack.base(input_ids=input_ids).logits[0, -1], 8, 1.0)
    assert proposal.ids.tolist() == cand_ids.tolist()
    humor = next(vm for vm in tiny_stack.value_models if vm.heads == [2])
    seqs = torch.cat([input_ids.repeat(8, 1), cand_ids[:, None]], dim=1)
    q = values_uncached(humor, seqs, 3)[:, 2]  # (k,)
    torch.testing.assert_close(proposal.logits, cand_logits + 2.0 * q, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(proposal.logprobs, torch.log_softmax(cand_logits + 2.0 * q, -1), atol=1e-4, rtol=1e-4)
    scorer = ValueScorer(tiny_stack.value_models, 3)  # mavis_tilt over the cached values gives the same
    scorer.start(input_ids, mask)
    tilted = mavis_tilt(cand_logits[None], scorer.q_values(cand_ids[None]), torch.tensor([0.0, 0.0, 1.0]), 2.0)
    torch.testing.assert_close(tilted[0], proposal.logits, atol=1e-4, rtol=1e-4)


def policy_logits(stack, name, input_ids):
    with stack.policies.disable_adapter() if name is None else _adapter(stack, name):
        return stack.policies(input_ids=input_ids).logits[0, -1]


class _adapter:
    def __init__(self, stack, name):
        self.model, self.name = stack.policies, name

    def __enter__(self):
        self.model.set_adapter(self.name)

    def __exit__(self, *exc):
        return False


@torch.inference_mode()
def test_mod_equals_weighted_log_probs_by_hand(tiny_stack):
    input_ids = ids_of(tiny_stack, PROMPTS[1])
    lam = [0.5, 0.2, 0.3]
    mixed = distribution(tiny_stack, cfg("mod"), input_ids)
    by_hand = sum(w * torch.log_softmax(policy_logits(tiny_stack, n, input_ids), -1)
                  for w, n in zip(lam, tiny_stack.objectives, strict=True))
    torch.testing.assert_close(mixed, by_hand, atol=1e-4, rtol=1e-4)


def rsoup_logits(stack, lam, input_ids):
    return distribution(stack, cfg("rsoup", weights=dict(zip(stack.objectives, lam, strict=True))), input_ids)


@torch.inference_mode()
def test_rsoup_at_a_vertex_equals_that_policy(tiny_stack):
    input_ids = ids_of(tiny_stack, PROMPTS[0])
    torch.testing.assert_close(rsoup_logits(tiny_stack, [0.0, 1.0, 0.0], input_ids),
                               policy_logits(tiny_stack, "harmless", input_ids), atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_rsoup_decodes_with_the_merged_weights(tiny_stack):
    input_ids, lam = ids_of(tiny_stack, PROMPTS[1]), [0.6, 0.1, 0.3]
    merged = merge_policies(tiny_stack.base, tiny_stack.policies, dict(zip(tiny_stack.objectives, lam, strict=True)))
    torch.testing.assert_close(rsoup_logits(tiny_stack, lam, input_ids), merged(input_ids=input_ids).logits[0, -1],
                               atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_rsoup_weights_are_the_weighted_sum_of_policy_weights(tiny_stack):
    lam = {"helpful": 0.6, "harmless": 0.1, "humor": 0.3}
    mixed = merge_policies(tiny_stack.base, tiny_stack.policies, lam)
    thetas = {n: merge_policies(tiny_stack.base, tiny_stack.policies, {n: 1.0}) for n in lam}
    mixed_params, lora_targets = dict(mixed.named_parameters()), 0
    for name, _ in tiny_stack.base.named_parameters():
        want = sum(w * dict(thetas[n].named_parameters())[name] for n, w in lam.items())
        torch.testing.assert_close(mixed_params[name], want, atol=1e-5, rtol=1e-5)
    for _, module in tiny_stack.policies.named_modules():
        lora_targets += isinstance(module, LoraLayer)
    assert lora_targets > 0
    assert not torch.equal(mixed_params["transformer.h.0.attn.c_attn.weight"],
                           dict(tiny_stack.base.named_parameters())["transformer.h.0.attn.c_attn.weight"])


@torch.inference_mode()
def test_logits_processor_gives_the_same_distribution_as_generate(tiny_stack):
    lam = [0.5, 0.2, 0.3]
    proc = MavisLogitsProcessor(tiny_stack.value_models, 3, lam, beta=2.0, top_k=8, temperature=0.7)
    input_ids = ids_of(tiny_stack, PROMPTS[0])
    out = tiny_stack.base.generate(input_ids, attention_mask=torch.ones_like(input_ids), logits_processor=[proc],
                                   do_sample=True, top_k=0, max_new_tokens=4, output_scores=True,
                                   return_dict_in_generate=True, pad_token_id=0)
    scorer = ValueScorer(tiny_stack.value_models, 3)
    for t, scores in enumerate(out.scores):  # recompute each step with no cache at all
        prefix = out.sequences[:, : input_ids.shape[1] + t]
        cand_logits, cand_ids = top_k_logits(tiny_stack.base(input_ids=prefix).logits[:, -1], 8, 0.7)
        scorer.start(prefix, torch.ones_like(prefix))
        want = torch.log_softmax(mavis_tilt(cand_logits, scorer.q_values(cand_ids), torch.tensor(lam), 2.0), -1)
        got = torch.log_softmax(scores, -1)
        torch.testing.assert_close(got.gather(1, cand_ids), want, atol=1e-4, rtol=1e-4)
        assert torch.isinf(got).sum() == got.shape[1] - 8


def feed(stack, text):
    row = _Row(stack, "p")
    shown = []
    for i, tok in enumerate(stack.tokenizer(text)["input_ids"]):
        shown += row.add(TokenEvent(tok, "", -1.0, -0.5, None, i))
        if row.done:
            break
    row.done = True
    shown += row._flush(len(row.full))
    return row.gen, "".join(e.text for e in shown)


def test_reply_stops_at_a_new_dialogue_turn(tiny_stack):
    gen, streamed = feed(tiny_stack, " i am fine\n\nHuman: and you")
    assert gen.text == streamed == " i am fine"
    assert gen.finish_reason == "stop"
    gen, streamed = feed(tiny_stack, " ok\n\nAssistant: more")
    assert gen.text == streamed == " ok" and gen.finish_reason == "stop"


def test_reply_keeps_newlines_that_start_no_turn_and_stops_at_eos(tiny_stack):
    gen, streamed = feed(tiny_stack, " one\n\ntwo")
    assert gen.text == streamed == " one\n\ntwo" and gen.finish_reason == "length"
    gen, _ = feed(tiny_stack, " hi<|endoftext|> more")
    assert gen.text == " hi" and gen.finish_reason == "eos"
    assert gen.kl == pytest.approx(0.5 * len(gen.events))


def test_method_without_models_is_refused(tiny_dir):
    from mavis_core import load_stack
    from tests.conftest import write_stack

    plain = load_stack(write_stack(tiny_dir, "plain.toml", None, policies=False))
    assert plain.methods == ["base"]
    assert len(list(generate(plain, "hi", cfg("prompted", max_new_tokens=3)))) == 3  # the base alone: every stack
    with pytest.raises(ValueError, match="method 'mavis' needs models this stack does not have"):
        list(generate(plain, "hi", cfg("mavis")))


@torch.inference_mode()
@pytest.mark.parametrize("method", WITH_PROMPTED)
def test_base_logprobs_equal_a_full_base_pass_over_the_reply(tiny_stack, method):
    gen = generate_batch(tiny_stack, PROMPTS[:1], cfg(method, max_new_tokens=20))[0]
    ids = torch.cat([ids_of(tiny_stack, PROMPTS[0])[0], torch.tensor(gen.token_ids)])
    logprobs = torch.log_softmax(tiny_stack.base(input_ids=ids[None]).logits[0], -1)  # (T, V)
    start = len(ids) - len(gen.token_ids)
    want = [float(logprobs[start - 1 + i, tok]) for i, tok in enumerate(gen.token_ids)]
    assert [e.base_logprob for e in gen.events] == pytest.approx(want, abs=1e-4)
    assert [e.index for e in gen.events] == list(range(len(gen.events)))
    assert gen.kl == pytest.approx(sum(e.logprob for e in gen.events) - sum(want), abs=1e-3)


def test_concurrent_mod_requests_with_different_weights_do_not_mix(tiny_stack):
    """RowLoRA's hooks sit on the one shared base and read each thread's own mix: concurrent users never collide."""
    weights = [{"helpful": 1}, {"helpful": 1, "humor": 1}, {"harmless": 1, "humor": 2}, {"humor": 1},
               {"helpful": 1, "harmless": 1, "humor": 1}, {"harmless": 1}]
    configs = [DecodeConfig(method="mod", weights=w, max_new_tokens=12, seed=i) for i, w in enumerate(weights)]
    want = [generate_batch(tiny_stack, PROMPTS[:1], c)[0].token_ids for c in configs]
    got, errors = [None] * len(configs), []

    def run(i):
        try:
            got[i] = generate_batch(tiny_stack, PROMPTS[:1], configs[i])[0].token_ids
        except Exception as err:  # noqa: BLE001  (reported below)
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(configs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and got == want


# ---- side by side: every method as rows of one batch -------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 5])
def test_side_by_side_equals_each_method_alone(tiny_stack, seed):
    cfgs = [cfg(m, seed=seed) for m in WITH_PROMPTED]
    lanes = {i: [] for i in range(len(cfgs))}
    for i, event in generate_side_by_side(tiny_stack, PROMPTS[1], cfgs):
        lanes[i].append(event)
    for i, c in enumerate(cfgs):
        alone = list(generate(tiny_stack, PROMPTS[1], c))
        assert [e.token_id for e in lanes[i]] == [e.token_id for e in alone], c.method
        assert "".join(e.text for e in lanes[i]) == "".join(e.text for e in alone)
        for a, b in zip(lanes[i], alone, strict=True):
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
            assert a.base_logprob == pytest.approx(b.base_logprob, abs=1e-4)
            assert (a.contributions is None) == (b.contributions is None)


def test_side_by_side_lambda_points_equal_separate_runs(tiny_stack):
    """A sweep's λ points as rows of one batch give what each point gives alone."""
    points = [{"helpful": 1.0}, {"helpful": 0.3, "humor": 0.7}, {"harmless": 1.0}]
    cfgs = [cfg(m, weights=w) for m in ("mavis", "mod", "rsoup", "prompted") for w in points]
    run = Decode(tiny_stack, [PROMPTS[0]] * len(cfgs), cfgs, [c.seed for c in cfgs])
    list(run)
    for c, gen in zip(cfgs, run.generations, strict=True):
        assert gen.token_ids == generate_reply(tiny_stack, PROMPTS[0], c).token_ids, (c.method, c.weights)


def test_prefill_runs_each_distinct_prompt_row_once(tiny_stack, monkeypatch):
    """Four methods side by side have 8 rows (base, MAVIS, 3 MOD policies + π_ref, RSoup + π_ref) but 5 distinct
    (prompt, LoRA mix) pairs: the plain rows share one prefill, and every row's cache and logits still match."""
    sizes, forward = [], tiny_stack.forward

    def counting(scales, **inputs):
        sizes.append(inputs["input_ids"].shape)
        return forward(scales, **inputs)

    monkeypatch.setattr(tiny_stack, "forward", counting)
    lanes = [Lane(cfg(m), 0, 0) for m in METHODS]
    input_ids = ids_of(tiny_stack, PROMPTS[0])
    dec = LaneDecoder(tiny_stack, input_ids, torch.ones_like(input_ids), lanes)
    assert sizes[0][0] == 5 and dec.logits.shape[0] == 8
    assert dec.cache.layers[0].keys.shape[0] == 8 and dec.attention_mask.shape[0] == 8
    plain = [dec.plans[i].ref for i in range(len(lanes))]  # base, MAVIS and both π_ref rows
    for r in plain[1:]:
        torch.testing.assert_close(dec.logits[r], dec.logits[plain[0]])
    dec.sample()
    dec.advance()
    assert sizes[1][0] == 8  # from then on every row takes its own token


def test_rsoup_row_equals_the_merged_model(tiny_stack):
    lam = [0.2, 0.5, 0.3]
    c = cfg("rsoup", weights=dict(zip(tiny_stack.objectives, lam, strict=True)))
    input_ids = ids_of(tiny_stack, PROMPTS[0])
    dec = LaneDecoder(tiny_stack, input_ids, torch.ones_like(input_ids), [Lane(c, 0, 0)])
    merged = merge_policies(tiny_stack.base, tiny_stack.policies, dict(zip(tiny_stack.objectives, lam, strict=True)))
    torch.testing.assert_close(dec.logits[dec.plans[0].own[0]], merged(input_ids=input_ids).logits[0, -1],
                               atol=1e-4, rtol=1e-4)
    # the plain base row beside it gives π_ref on the same sequence
    torch.testing.assert_close(dec.logits[dec.plans[0].ref], tiny_stack.base(input_ids=input_ids).logits[0, -1],
                               atol=1e-4, rtol=1e-4)


def test_finished_lanes_leave_the_batch(tiny_stack):
    input_ids = ids_of(tiny_stack, PROMPTS[0])
    lanes = [Lane(cfg("base", max_new_tokens=2), 0, 0), Lane(cfg("mod", max_new_tokens=5), 0, 1),
             Lane(cfg("mavis", max_new_tokens=3), 0, 2)]
    dec = LaneDecoder(tiny_stack, input_ids, torch.ones_like(input_ids), lanes)
    rows = []
    while dec.alive:
        dec.sample()
        dec.advance({2} if dec.t == 0 else set())  # the MAVIS lane "ends its reply" after one token
        rows.append((list(dec.alive), dec.cache.layers[0].keys.shape[0] if dec.alive else 0))
    assert rows[0] == ([0, 1], 1 + 4)  # base: 1 row; MOD: 3 policies + π_ref; MAVIS gone
    assert rows[1] == ([1], 4)  # base reached its 2 tokens
    assert not dec.scorers  # no MAVIS lane left: no value pass either
    assert len(rows) == 5


def test_strength_zero_is_the_base_and_strength_scales_the_baselines(tiny_stack):
    """α = 0: RSoup is exactly the base and MOD the base's distribution; in between they move from it, past 1
    they move further (extrapolating past the policies)."""
    base = generate_reply(tiny_stack, PROMPTS[0], cfg("base"))
    assert generate_reply(tiny_stack, PROMPTS[0], cfg("rsoup", strength=0.0)).token_ids == base.token_ids
    input_ids = ids_of(tiny_stack, PROMPTS[0])
    ref = torch.log_softmax(tiny_stack.base(input_ids=input_ids).logits[0, -1], -1)
    for method in ("mod", "rsoup"):
        logits = {}
        for alpha in (0.0, 0.5, 1.0, 1.5):
            logits[alpha] = torch.log_softmax(distribution(tiny_stack, cfg(method, strength=alpha), input_ids), -1)
        torch.testing.assert_close(logits[0.0], ref, atol=1e-4, rtol=1e-4)
        kl = {a: float((lp.exp() * (lp - ref)).sum()) for a, lp in logits.items()}
        assert kl[0.0] < kl[0.5] < kl[1.0] < kl[1.5], (method, kl)
    with pytest.raises(ValueError, match="strength must be a number between 0 and 2"):
        cfg("mod", strength=2.5)


# ---- Prompted: the base with the weights written into its system prompt -----------------------------------

@torch.inference_mode()
def test_prompted_is_the_base_decoding_the_prompt_with_the_weights_in_its_system_prompt(tiny_stack):
    c = cfg("prompted", max_new_tokens=12)
    gen = generate_reply(tiny_stack, PROMPTS[1], c)
    text = weights_prompt(dict(zip(tiny_stack.objectives, c.normalised(tiny_stack.objectives), strict=True)))
    assert text.startswith("Weigh your reply: helpfulness 50 %, harmlessness 20 %, humor 30 %.")
    ids, mask, _ = tiny_stack.encode([PROMPTS[1]], 12, [text])  # cut from the left to the tiny base's context
    assert tiny_stack.tokenizer.decode(ids[0]) in text + format_prompt(PROMPTS[1])
    dec = LaneDecoder(tiny_stack, ids, mask, [Lane(cfg("base", max_new_tokens=12), 0, c.seed)])
    steps = []
    while dec.alive:
        steps.append(dec.sample()[0])
        dec.advance()
    assert gen.token_ids == [s.token for s in steps][:len(gen.token_ids)]
    assert [e.logprob for e in gen.events] == pytest.approx([s.logprob for s in steps][:len(gen.events)], abs=1e-4)
    # its π_ref row reads the plain prompt: log π_ref differs from the prompted context's own log-probs
    assert [e.base_logprob for e in gen.events] != pytest.approx([s.base_logprob for s in steps][:len(gen.events)],
                                                                 abs=1e-3)


def test_a_prompted_lane_needs_its_context(tiny_stack):
    input_ids = ids_of(tiny_stack, PROMPTS[0])
    with pytest.raises(ValueError, match="a Prompted lane needs the input row of its prompted context"):
        LaneDecoder(tiny_stack, input_ids, torch.ones_like(input_ids), [Lane(cfg("prompted"), 0, 0)])


def test_a_sweep_runs_prompted_at_every_lambda_point_with_its_kl(tiny_stack):
    from mavis_core.evaluation import sweep

    grid = [[1.0, 0.0, 0.0], [0.5, 0.0, 0.5]]
    df = sweep(tiny_stack, PROMPTS[:1], [0], ["prompted"], grid, cfg("prompted", max_new_tokens=4))
    assert len(df) == 2 and set(df.method) == {"prompted"} and df.kl.notna().all()
