"""Test-time search: best-of-N picks its best candidate, beam search against greedy and an uncached reference,
KV-cache reordering against fresh passes, batched against unbatched, settings checks."""

import pytest
import torch

from mavis_core import DecodeConfig, generate_batch, generate_reply
from mavis_core.decoding import LaneDecoder
from mavis_core.dialogue import cut_at_stop, format_prompt
from mavis_core.lanes import plan_lanes
from mavis_core.search import run_beams, search, search_batch
from mavis_core.testing import STACK_METHODS
from mavis_core.tilts import top_k_logits
from mavis_core.values import ValueScorer, values_uncached

PROMPTS = ["hello there", "tell me a joke about the weather today please"]
WEIGHTS = {"helpful": 0.5, "harmless": 0.2, "humor": 0.3}
METHODS = list(STACK_METHODS)


def cfg(method, **kw):
    return DecodeConfig(**{"method": method, "weights": WEIGHTS, "beta": 2.0, "top_k": 6, "max_new_tokens": 8,
                           "seed": 3, "num_candidates": 3, "num_beams": 3, **kw})


def ids_of(stack, prompt):
    return torch.tensor(stack.tokenizer(format_prompt(prompt))["input_ids"])


@pytest.mark.parametrize(("change", "message"), [
    ({"search": "greedy"}, "search 'greedy' is not known; allowed: sample, best_of_n, beam"),
    ({"num_candidates": 0}, "num_candidates must be an integer >= 1, got 0"),
    ({"num_beams": 2.5}, "num_beams must be an integer >= 1, got 2.5"),
    ({"num_beams": True}, "num_beams must be an integer >= 1, got True"),
])
def test_invalid_search_settings_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        cfg("mavis", **change)


def test_the_sampling_loop_refuses_a_search_it_would_not_run(tiny_stack):
    with pytest.raises(ValueError, match="search 'beam' is run by mavis_core.search.search"):
        generate_reply(tiny_stack, PROMPTS[0], cfg("base", search="beam"))


@pytest.mark.parametrize("method", METHODS)
def test_best_of_n_keeps_its_highest_scoring_sample(tiny_stack, method):
    result = search(tiny_stack, PROMPTS[0], cfg(method, search="best_of_n", num_candidates=4))
    assert len(result.candidates) == 4 and result.search == "best_of_n"
    for i, gen in enumerate(result.candidates):  # the batch equals N separate runs with seeds seed + i
        alone = generate_reply(tiny_stack, PROMPTS[0], cfg(method, seed=3 + i))
        assert gen.token_ids == alone.token_ids and gen.text == alone.text
    raw = tiny_stack.score([PROMPTS[0]] * 4, [g.text for g in result.candidates])
    lam = torch.tensor([WEIGHTS[k] for k in tiny_stack.objectives])
    weighted = sum(lam[m] * raw[name] for m, name in enumerate(tiny_stack.objectives))  # (4,)
    assert result.weighted == pytest.approx(weighted.tolist(), abs=1e-5)
    assert result.index == int(weighted.argmax()) and result.best is result.candidates[result.index]


@pytest.mark.parametrize("method", METHODS)
def test_one_beam_with_beta_zero_is_greedy_decoding(tiny_stack, method):
    beam = search(tiny_stack, PROMPTS[1], cfg(method, search="beam", num_beams=1, beta=0.0, max_new_tokens=12)).best
    greedy = generate_reply(tiny_stack, PROMPTS[1], cfg(method, top_k=1, beta=0.0, max_new_tokens=12))
    assert beam.token_ids == greedy.token_ids and beam.text == greedy.text
    assert beam.finish_reason == greedy.finish_reason
    assert [e.base_logprob for e in beam.events] == pytest.approx([e.base_logprob for e in greedy.events], abs=1e-4)


@torch.inference_mode()
def test_one_beam_base_equals_a_plain_greedy_loop(tiny_stack):
    beam = search(tiny_stack, PROMPTS[0], cfg("base", search="beam", num_beams=1, max_new_tokens=12)).best
    ids = ids_of(tiny_stack, PROMPTS[0])
    for _ in range(len(beam.token_ids)):
        ids = torch.cat([ids, tiny_stack.base(input_ids=ids[None]).logits[0, -1].argmax().view(1)])
    assert beam.token_ids == ids[-len(beam.token_ids):].tolist()


@torch.inference_mode()
def reference_mavis_beams(stack, prompt, c, ends=None):
    """Beam search for MAVIS with no caches at all: every score from a fresh pass over the whole prefix.
    ``ends(tokens)`` replaces the EOS / new-turn rule when given."""
    lam = torch.tensor(c.normalised(stack.objectives))
    prompt_ids = ids_of(stack, prompt)
    alive, ended = [([], 0.0)], []
    for _ in range(c.max_new_tokens):
        expansions = []
        for tokens, cum in alive:
            prefix = torch.cat([prompt_ids, torch.tensor(tokens, dtype=torch.long)])
            logits = stack.base(input_ids=prefix[None]).logits[0, -1]
            _, cands = top_k_logits(logits, c.top_k, c.temperature)
            seqs = torch.stack([torch.cat([prefix, a.view(1)]) for a in cands])
            values = sum(values_uncached(vm, seqs, len(stack.objectives)) for vm in stack.value_models)  # (k, M)
            base_lp = torch.log_softmax(logits, -1)[cands]
            expansions += [(cum + float(base_lp[j]) + c.beta * float(values[j] @ lam), tokens + [int(cands[j])],
                            cum + float(base_lp[j])) for j in range(len(cands))]
        kept = []
        for _, tokens, cum in sorted(expansions, key=lambda e: -e[0]):  # sorted() is stable, like the search
            text = stack.tokenizer.decode(tokens, skip_special_tokens=True)
            if ends(tokens) if ends else tokens[-1] == stack.tokenizer.eos_token_id or cut_at_stop(text)[1]:
                ended.append(tokens)
            elif len(kept) < c.num_beams:
                kept.append((tokens, cum))
            if len(kept) == c.num_beams:
                break
        alive = kept
        if len(ended) >= c.num_beams:
            return ended
        if not alive:
            break
    return ended + [tokens for tokens, _ in alive]


@pytest.mark.parametrize("stack_name", ["tiny_stack", "fused_stack"])
def test_cached_beam_search_equals_an_uncached_reference(stack_name, request):
    stack = request.getfixturevalue(stack_name)
    c = cfg("mavis", search="beam", num_beams=3, top_k=4, max_new_tokens=6, temperature=0.8)
    got = [[e.token_id for e in b.events] for b in run_beams(stack, PROMPTS[1], c)]
    assert got == reference_mavis_beams(stack, PROMPTS[1], c)


def test_beams_that_end_are_set_aside_and_only_they_compete_once_b_have_ended(tiny_stack, monkeypatch):
    """Random models seldom end a reply, so here every even token id ends it."""
    import mavis_core.search as search_module

    monkeypatch.setattr(search_module._Beam, "ended", lambda self, tokenizer: self.events[-1].token_id % 2 == 0)
    c = cfg("mavis", search="beam", num_beams=3, top_k=6, max_new_tokens=12)
    beams = [[e.token_id for e in b.events] for b in run_beams(tiny_stack, PROMPTS[0], c)]
    assert beams == reference_mavis_beams(tiny_stack, PROMPTS[0], c, ends=lambda tokens: tokens[-1] % 2 == 0)
    assert len(beams) >= 3 and all(b[-1] % 2 == 0 for b in beams)  # B ended: no half-finished beam competes
    assert all(t % 2 for b in beams for t in b[:-1])  # an ended beam was never grown further


@torch.inference_mode()
@pytest.mark.parametrize("stack_name", ["tiny_stack", "fused_stack"])
def test_value_caches_after_beam_reordering_equal_uncached(stack_name, request):
    stack = request.getfixturevalue(stack_name)
    input_ids, mask, _ = stack.encode(PROMPTS, 8)  # two left-padded rows
    scorer = ValueScorer(stack.value_models, 3)
    scorer.start(input_ids, mask)
    prefixes = [ids_of(stack, p) for p in PROMPTS]
    for rows, chosen in ([[1, 0, 1], [2, 0, 4]], [[2, 2, 0], [1, 3, 0]]):  # grow to three beams, then reshuffle
        cands = torch.randint(1, len(stack.tokenizer), (len(prefixes), 5))
        scorer.q_values(cands)
        scorer.select(torch.tensor(rows))  # the beams' rows with their candidates, then each keeps its own
        scorer.keep(torch.tensor(chosen))
        prefixes = [torch.cat([prefixes[r], cands[r, j].view(1)]) for r, j in zip(rows, chosen, strict=True)]
        probe = torch.randint(1, len(stack.tokenizer), (3, 4))
        got = scorer.q_values(probe)  # (3, M, 4): values over the reordered caches
        for b, prefix in enumerate(prefixes):
            seqs = torch.stack([torch.cat([prefix, a.view(1)]) for a in probe[b]])
            want = sum(values_uncached(vm, seqs, 3) for vm in stack.value_models)  # (4, M)
            torch.testing.assert_close(got[b].T, want, atol=1e-4, rtol=1e-4)
        scorer.keep(torch.zeros(3, dtype=torch.long))
        prefixes = [torch.cat([p, probe[b, :1]]) for b, p in enumerate(prefixes)]


@torch.inference_mode()
@pytest.mark.parametrize("method", [*METHODS, "prompted"])
def test_lane_caches_after_beam_reordering_equal_fresh_runs(tiny_stack, method):
    """`LaneDecoder.select` (beam search's reordering: a lane may go on as several, or not at all) leaves every
    row's cache as a fresh run over the same tokens would, π_ref's row included."""
    c = cfg(method)
    input_ids, mask, lanes = plan_lanes(tiny_stack, PROMPTS, [c, c], [0, 1])
    dec = LaneDecoder(tiny_stack, input_ids, mask, lanes)
    tokens = [[], []]
    for parents in ([1, 1, 0], [2, 0, 1, 1]):
        proposals = dec.propose()
        chosen = [n % 3 for n in range(len(parents))]
        tokens = [tokens[p] + [int(proposals[p].ids[j])] for p, j in zip(parents, chosen, strict=True)]
        dec.select(parents, chosen)
        dec.advance()
    for n, lane in enumerate(dec.lanes):
        fresh_ids, fresh_mask, fresh = plan_lanes(tiny_stack, [PROMPTS[lane.prompt]], [c], [0])
        grown = torch.cat([fresh_ids, torch.tensor([tokens[n]] * len(fresh_ids))], dim=1)
        grown_mask = torch.cat([fresh_mask, torch.ones(len(fresh_ids), len(tokens[n]), dtype=torch.long)], dim=1)
        again = LaneDecoder(tiny_stack, grown, grown_mask, fresh)
        torch.testing.assert_close(dec.distribution(n), again.distribution(0), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(dec.logits[dec.plans[n].ref], again.logits[again.plans[0].ref],
                                   atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("search_kind", ["sample", "best_of_n", "beam"])
def test_batched_search_equals_unbatched_and_repeats(tiny_stack, search_kind):
    c = cfg("mavis", search=search_kind)
    batch = search_batch(tiny_stack, PROMPTS, c)
    for prompt, got in zip(PROMPTS, batch, strict=True):
        alone = search(tiny_stack, prompt, c)
        assert [g.token_ids for g in got.candidates] == [g.token_ids for g in alone.candidates]
        assert got.index == alone.index and got.weighted == pytest.approx(alone.weighted, abs=1e-5)
    again = search_batch(tiny_stack, PROMPTS, c)
    assert [r.best.text for r in again] == [r.best.text for r in batch]


@pytest.mark.parametrize("method", [*METHODS, "prompted"])
def test_beam_kl_is_the_sum_of_log_pi_minus_log_pi_ref_of_a_full_base_pass(tiny_stack, method):
    """Every method's beams carry log π_ref of their tokens (the plain prompt, full vocabulary): a finite KL."""
    result = search(tiny_stack, PROMPTS[0], cfg(method, search="beam", max_new_tokens=10))
    for gen in result.candidates:
        ids = torch.cat([ids_of(tiny_stack, PROMPTS[0]), torch.tensor(gen.token_ids, dtype=torch.long)])
        with torch.inference_mode():
            logprobs = torch.log_softmax(tiny_stack.base(input_ids=ids[None]).logits[0], -1)
        start = len(ids) - len(gen.token_ids)
        want = [float(logprobs[start - 1 + i, tok]) for i, tok in enumerate(gen.token_ids)]
        assert [e.base_logprob for e in gen.events] == pytest.approx(want, abs=1e-4)
        assert gen.kl == pytest.approx(sum(e.logprob for e in gen.events) - sum(want), abs=1e-3)


def test_beam_search_keeps_its_best_weighted_candidate_and_beats_no_candidate(tiny_stack):
    result = search(tiny_stack, PROMPTS[1], cfg("mavis", search="beam", num_beams=4))
    assert 1 <= len(result.candidates) and result.search == "beam"
    assert result.weighted[result.index] == max(result.weighted)
    assert all(e.contributions is not None for e in result.best.events)
    assert generate_batch(tiny_stack, [], cfg("mavis")) == [] and search_batch(tiny_stack, [], cfg("mavis")) == []


# --- the app's engine and chart with search --------------------------------------------------------------------

@pytest.fixture(scope="module")
def engine(tiny_stack):
    from mavis_core.engine import Engine

    return Engine(tiny_stack)


def settings(engine, **kw):
    raw = {"weights": WEIGHTS, "beta": 2.0, "top_k": 6, "temperature": 1.0, "max_new_tokens": 8, "seed": 3, **kw}
    return engine.settings(**raw)


@pytest.mark.parametrize(("change", "message"), [
    ({"search": "greedy"}, "search must be one of \\['sample', 'best_of_n', 'beam'\\], got 'greedy'"),
    ({"search": "best_of_n", "num_candidates": 17}, "N \\(best-of-N samples\\) must be between 1 and 16, got 17"),
    ({"search": "beam", "num_beams": 0}, "B \\(beams\\) must be between 1 and 8, got 0"),
])
def test_engine_refuses_search_settings_outside_the_apps_limits(engine, change, message):
    with pytest.raises(ValueError, match=message):
        settings(engine, **change)


@pytest.mark.parametrize(("search_kind", "label"), [("best_of_n", "best-of-3"), ("beam", "beam-2")])
def test_engine_streams_each_methods_search_winner(engine, tiny_stack, search_kind, label):
    s = settings(engine, search=search_kind, num_candidates=3, num_beams=2)
    rounds = list(engine.stream("hello there", ["mavis", "mod"], s))
    assert len(rounds) == 2  # MAVIS's winner first, then MOD's with every score
    final = rounds[-1]
    for reply in final:
        want = search(tiny_stack, "hello there", s.config(reply.method))
        assert reply.text == want.best.text and reply.search == label
        assert reply.scores == pytest.approx(want.scores[want.index], abs=1e-6)
    whole = engine.replies("hello there", ["mavis", "mod"], s)
    assert [r.text for r in whole] == [r.text for r in final] and [r.search for r in whole] == [label] * 2


def test_sampled_replies_say_so_and_sweeps_honour_the_search(engine):
    assert [r.search for r in engine.replies("hi", ["base"], settings(engine))] == ["sample"]
    out = engine.sweep("hi", ["base", "mavis"], settings(engine, search="beam", num_beams=2, max_new_tokens=3),
                       [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert [r.search for _, r in out] == ["beam-2"] * 3 and all(r.scores for _, r in out)


def test_chart_marks_searched_samples_with_their_own_shape():
    from mavis_core.plots import pareto_figure

    def point(i, source, search_label):
        return {"id": i, "source": source, "method": "mavis", "prompt": "p", "text": "t", "search": search_label,
                "weights": {"helpful": 1.0}, "beta": 1.0, "seed": 0, "scores": {"helpful": 0.1 * i, "humor": 0.2},
                "kl": 0.1}

    samples = [point(1, "generate", "sample"), point(2, "generate", "best-of-4"), point(3, "generate", "beam-2")]
    fig = pareto_figure(samples, "helpful", "humor", ["mavis"])
    assert list(fig.data[0].marker.symbol) == ["circle", "diamond", "square"]
    assert [t.name for t in fig.data[1:]] == ["beam search", "best-of-N"]  # legend entries for the shapes
    assert "beam-2" in fig.data[0].hovertext[2]
    fig3d = pareto_figure(samples, "helpful", "humor", ["mavis"], z="humor")
    assert list(fig3d.data[0].marker.symbol) == ["circle", "diamond", "square"]


def test_cli_generate_runs_a_search(tiny_dir, capsys):
    import json

    from mavis_core.cli import main

    args = ["generate", "hello there", "--stack", str(tiny_dir / "stack-sep.toml"), "--method", "mod",
            "--max-new-tokens", "4", "--search", "best_of_n", "--num-candidates", "2", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["search"] == "best_of_n" and out["candidates"] == 2 and out["index"] in (0, 1)
    assert max(out["weighted"]) == out["weighted"][out["index"]]
    assert main([*args[:-2], "0", "--json"]) == 2  # N = 0: one plain error line
    assert "num_candidates must be an integer >= 1, got 0" in capsys.readouterr().err
