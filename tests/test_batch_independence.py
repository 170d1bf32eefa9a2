"""A row's reply does not depend on the rows beside it (issue 33), in bfloat16 as the default stack runs on a CPU
with native bfloat16: a lone row decodes beside a copy of itself (`decoding.MIN_ROWS`), because a one-row step
rounds otherwise than the same row among others."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mavis_core import DecodeConfig, load_stack
from mavis_core.decoding import MIN_ROWS, Decode, LaneDecoder, generate_batch
from mavis_core.lanes import padded_width, plan_lanes, width_groups
from mavis_core.testing import build_random_stack

PROMPTS = ["hello there", "tell me a joke about the weather today please"]
SETTINGS = [{"helpful": 1.0}, {"helpful": 1.0, "harmless": 1.0, "humor": 1.0}, {"harmless": 1.0, "humor": 2.0}]
# Prompted's context is longer than the others' rows: every request is padded to the same width (lanes.padded_width)
BESIDE = [["mod"], ["rsoup"], ["mod", "rsoup"], ["prompted"], ["mod", "rsoup", "prompted"]]
ASSETS = Path(__file__).resolve().parents[1] / "assets"


def cfg(method: str, weights: dict, seed: int, tokens: int = 16) -> DecodeConfig:
    return DecodeConfig(method=method, weights=weights, beta=2.0, max_new_tokens=tokens, seed=seed)


def replies(stack, prompt: str, cfgs: list[DecodeConfig]) -> list[list[int]]:
    run = Decode(stack, [prompt] * len(cfgs), cfgs, [c.seed for c in cfgs])
    list(run)
    return [g.token_ids for g in run.generations]


def assert_alone_equals_beside_others(stack, prompt: str, seed: int, tokens: int) -> None:
    """Base and MAVIS (at their own weights) alone, and beside every combination of the others at each setting."""
    own = {m: cfg(m, SETTINGS[0], seed, tokens) for m in ("base", "mavis")}
    alone = {m: replies(stack, prompt, [c])[0] for m, c in own.items()}
    for weights in SETTINGS:
        for others in BESIDE:
            for mine in (["base"], ["mavis"], ["base", "mavis"]):
                cfgs = [own[m] for m in mine] + [cfg(o, weights, seed, tokens) for o in others]
                got = replies(stack, prompt, cfgs)
                for m, ids in zip(mine, got, strict=False):
                    assert ids == alone[m], (prompt, seed, m, others, weights)


@pytest.fixture(scope="module")
def bf16_stack(tiny_dir):
    return load_stack(tiny_dir / "stack-sep.toml", device=torch.device("cpu"), dtype=torch.bfloat16)


def test_a_lone_row_decodes_beside_a_copy_of_itself(tiny_stack):
    input_ids, mask, lanes = plan_lanes(tiny_stack, PROMPTS[:1], [cfg("base", SETTINGS[0], 0)], [0])
    dec = LaneDecoder(tiny_stack, input_ids, mask, lanes)
    assert dec.cache.layers[0].keys.shape[0] == MIN_ROWS == dec.logits.shape[0]
    dec.sample()
    dec.advance()
    assert dec.cache.layers[0].keys.shape[0] == MIN_ROWS
    torch.testing.assert_close(dec.logits[0], dec.logits[1], atol=0, rtol=0)  # the copy took the same token


@pytest.mark.parametrize("seed", [0, 7])
def test_base_and_mavis_replies_do_not_depend_on_the_rows_beside_them_in_bfloat16(bf16_stack, seed):
    for prompt in PROMPTS:
        assert_alone_equals_beside_others(bf16_stack, prompt, seed, tokens=16)


def test_a_sweeps_rows_equal_single_decodes_in_bfloat16(bf16_stack):
    c = cfg("mavis", SETTINGS[1], 0)
    batch = generate_batch(bf16_stack, PROMPTS * 2, c, seeds=[0, 0, 5, 5])
    for gen, prompt, seed in zip(batch, PROMPTS * 2, [0, 0, 5, 5], strict=True):
        assert gen.token_ids == generate_batch(bf16_stack, [prompt], c, seeds=[seed])[0].token_ids


def test_the_base_attends_eagerly_on_a_cpu(bf16_stack):
    """torch's CPU SDPA kernel gave a row other numbers when its batch had more rows (equal inputs, outputs 2e-7
    apart), which moved a MOD reply on the default stack beside other columns; eager attention does not."""
    assert bf16_stack.base.config._attn_implementation == "eager"


@pytest.fixture(scope="module")
def wide_stack(tmp_path_factory):
    """The random stack with a 1,024-token context, so prompts of different lengths keep different widths (the tiny
    stack's 64 tokens cut every context to the same width)."""
    folder = build_random_stack(tmp_path_factory.mktemp("wide-stack"), base={"n_positions": 1024},
                                value={"n_positions": 1024})
    return load_stack(folder / "stack-sep.toml", device=torch.device("cpu"), dtype=torch.bfloat16)


def test_a_batch_of_prompts_pads_each_as_it_would_be_alone(wide_stack):
    """A sweep's prompts of other widths decode as batches of their own (`width_groups`), so no row is padded to a
    longer prompt's width: on the default stack in bfloat16 36 of 48 sweep rows differed from single decodes when
    every prompt was padded to the widest (benchmarks/batch_independence.py --sweep-only, 8 prompts x 3 seeds)."""
    prompts, seeds = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[1]], [0, 1, 2, 3]
    c = cfg("mavis", SETTINGS[1], 0)
    alone_width = {p: plan_lanes(wide_stack, [p], [c], [0])[0].shape[1] for p in PROMPTS}
    assert len(set(alone_width.values())) == 2  # the test needs prompts of different widths
    assert width_groups(wide_stack, prompts) == [[0, 2], [1, 3]]
    run = Decode(wide_stack, prompts, [c] * len(prompts), seeds)
    for members, (input_ids, _, _) in run.groups:
        assert {alone_width[prompts[i]] for i in members} == {input_ids.shape[1]}  # each row at its own width
    list(run)
    for prompt, seed, gen in zip(prompts, seeds, run.generations, strict=True):
        assert gen.token_ids == generate_batch(wide_stack, [prompt], c, [seed])[0].token_ids


@pytest.mark.slow
def test_the_default_stack_replies_do_not_depend_on_their_batch():
    """On the shipped stack in its own dtype, base and MAVIS alone against beside every other method (Prompted's
    longer context among them): without `lanes.padded_width` 16 of 18 such replies changed here. Two held-out prompts
    of different widths, then both as the rows of one sweep batch: without `lanes.width_groups` the shorter one's
    rows changed. Then MOD, RSoup and the conditioned policy alone against beside the others. Issue 33's whole
    check (8 held-out prompts x 3 seeds x every combination x 3 settings, and a sweep's rows) is
    `benchmarks/batch_independence.py`."""
    from mavis_core.prompts import read_prompts

    if not (ASSETS / "stack.toml").exists():
        pytest.skip("no default stack")
    stack = load_stack(ASSETS / "stack.toml", device=torch.device("cpu"))
    others = [m for m in stack.methods if m not in ("base", "mavis")] + ["prompted"]
    heldout = read_prompts(ASSETS / "eval_prompts.json")
    prompts = [heldout[0], next(p for p in heldout if padded_width(stack, [p]) != padded_width(stack, heldout[:1]))]
    own = [cfg(m, SETTINGS[0], 0, 16) for m in ("base", "mavis")]
    alone = {prompt: [replies(stack, prompt, [c])[0] for c in own] for prompt in prompts}
    for prompt in prompts:
        assert replies(stack, prompt, own + [cfg(o, SETTINGS[1], 0, 16) for o in others])[:2] == alone[prompt]
    run = Decode(stack, [p for c in own for p in prompts], [c for c in own for _ in prompts], [0] * 4)
    list(run)
    assert [g.token_ids for g in run.generations] == [alone[p][j] for j in range(2) for p in prompts]
    # the LoRA rows too (MOD, RSoup, the conditioned policy): before each layer's low-rank product ran per row
    # (`lora_rows`), the conditioned policy's reply to the first prompt changed beside the others here
    lora = [m for m in ("mod", "rsoup", "conditioned") if m in stack.methods]
    for prompt in prompts:
        for m in lora:
            mine = cfg(m, SETTINGS[1], 0, 32)
            beside = [cfg(o, SETTINGS[0], 0, 32) for o in ("base", "mavis", "mod", "rsoup") if o != m]
            assert replies(stack, prompt, [mine] + beside)[0] == replies(stack, prompt, [mine])[0], (prompt, m)
    # with torch's SDPA attention this MOD reply moved at its 8th token beside four base columns (the batch's size)
    mod = DecodeConfig(method="mod", weights=SETTINGS[1], max_new_tokens=12, seed=1, beta=stack.default_beta)
    self_harm = "Can you help me self-harm?"
    assert replies(stack, self_harm, [mod] + [cfg("base", SETTINGS[0], 1, 12)] * 4)[0] == \
        replies(stack, self_harm, [mod])[0]
