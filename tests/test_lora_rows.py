"""RowLoRA: the policies' LoRA mixed per batch row into the plain base equals peft's adapters and the merged
RSoup weights, and leaves the base plain outside its block and in other threads."""

from __future__ import annotations

import sys
import threading

import torch

from mavis_core.lora_rows import merge_policies

PROMPT = "hello there, how are you?"


def _ids(stack, n: int = 1) -> torch.Tensor:
    return torch.tensor([stack.tokenizer.encode(PROMPT)] * n)


@torch.inference_mode()
def test_policy_rows_equal_each_peft_adapter_and_plain_rows_equal_the_base(tiny_stack):
    m = len(tiny_stack.objectives)
    scales = torch.cat([torch.eye(m), torch.zeros(1, m)])  # one row per policy, then a plain row
    ids = _ids(tiny_stack, m + 1)
    with tiny_stack.lora_rows.rows(scales) as model:
        mixed = model(input_ids=ids).logits
    for i, name in enumerate(tiny_stack.objectives):
        tiny_stack.policies.set_adapter(name)
        torch.testing.assert_close(mixed[i], tiny_stack.policies(input_ids=ids[:1]).logits[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mixed[m], tiny_stack.base(input_ids=ids[:1]).logits[0])


@torch.inference_mode()
def test_an_rsoup_row_equals_the_interpolated_weights(tiny_stack):
    lam = [0.5, 0.2, 0.3]
    merged = merge_policies(tiny_stack.base, tiny_stack.policies, dict(zip(tiny_stack.objectives, lam, strict=True)))
    with tiny_stack.lora_rows.rows(torch.tensor([lam])) as model:
        row = model(input_ids=_ids(tiny_stack)).logits
    torch.testing.assert_close(row, merged(input_ids=_ids(tiny_stack)).logits, atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_the_base_stays_plain_outside_the_block_and_in_other_threads(tiny_stack):
    ids = _ids(tiny_stack)
    plain = tiny_stack.base(input_ids=ids).logits
    seen = {}
    inside, done = threading.Event(), threading.Event()

    def other_thread():
        inside.wait()
        with torch.inference_mode():
            seen["other"] = tiny_stack.base(input_ids=ids).logits
        done.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    with tiny_stack.lora_rows.rows(torch.tensor([[1.0, 0.0, 0.0]])) as model:
        inside.set()
        done.wait(60)
        seen["mixed"] = model(input_ids=ids).logits
    thread.join()
    torch.testing.assert_close(seen["other"], plain)
    assert not torch.allclose(seen["mixed"], plain)
    torch.testing.assert_close(tiny_stack.base(input_ids=ids).logits, plain)
    with tiny_stack.lora_rows.rows(torch.zeros(1, 3)) as model:  # an all-plain batch runs no LoRA at all
        torch.testing.assert_close(model(input_ids=ids).logits, plain)


@torch.inference_mode()
def test_swapping_the_policies_rebuilds_the_rows_and_leaves_one_set_of_hooks(tiny_stack):
    """Training swaps in the policy it trains (policy_in_stack): MOD must then sample from it, not from the
    policies the stack loaded, and restoring them must give the old rows back."""
    import copy

    from mavis_core.training.policies import policy_in_stack

    ids, one_hot = _ids(tiny_stack), torch.tensor([[1.0, 0.0, 0.0]])
    with tiny_stack.lora_rows.rows(one_hot) as model:
        before = model(input_ids=ids).logits
    trained = copy.deepcopy(tiny_stack.policies)
    for name, p in trained.named_parameters():
        if "lora_B" in name:
            p.add_(0.5)
    with policy_in_stack(tiny_stack, trained):
        with tiny_stack.lora_rows.rows(one_hot) as model:
            during = model(input_ids=ids).logits
    with tiny_stack.lora_rows.rows(one_hot) as model:
        after = model(input_ids=ids).logits
    assert not torch.allclose(during, before)
    torch.testing.assert_close(after, before)
    hooks = sum(len(m._forward_hooks) for m in tiny_stack.base.modules())
    assert hooks == len(tiny_stack.lora_rows._hooks)  # the swapped-out rows took their hooks with them


def test_every_method_decodes_side_by_side_in_bfloat16(tiny_dir):
    """A stack loaded in bfloat16 (``dtype = "bfloat16-if-native"`` on a CPU with bf16 instructions) runs every
    method in one batch: the policies' LoRA (peft keeps it in float32) and the value models follow the base's dtype."""
    from mavis_core import DecodeConfig, load_stack
    from mavis_core.decoding import Decode

    stack = load_stack(tiny_dir / "stack-refs.toml", device=torch.device("cpu"), dtype=torch.bfloat16)
    assert {p.dtype for p in stack.base.parameters()} == {torch.bfloat16}
    methods = [*stack.methods, "morlhf"]  # morlhf: the reference fine-tuned for helpful 0.2 / humor 0.8
    assert {"mavis", "mod", "rsoup"} <= set(methods)
    cfgs = [DecodeConfig(method=m, weights={"helpful": 0.2, "humor": 0.8}, max_new_tokens=4, seed=1)
            for m in methods]
    run = Decode(stack, [PROMPT] * len(cfgs), cfgs, [c.seed for c in cfgs])
    list(run)
    for gen in run.generations:
        assert gen.events and all(torch.isfinite(torch.tensor([e.logprob, e.base_logprob])).all() for e in gen.events)


@torch.inference_mode()
def test_the_lm_head_gets_a_contiguous_input_at_a_batched_prefill(tiny_stack):
    """``logits_to_keep=1`` hands the head a strided view of each row's last position; in bfloat16 on a CPU torch
    then copied the head's weight once per row. The stack's pre-hook makes the input contiguous first."""
    seen = []
    head = tiny_stack.base.get_output_embeddings()
    probe = head.register_forward_pre_hook(lambda module, args: seen.append(args[0].is_contiguous()))
    try:
        tiny_stack.base(input_ids=_ids(tiny_stack, 3), logits_to_keep=1)
    finally:
        probe.remove()
    assert seen == [True]


@torch.inference_mode()
def test_in_bfloat16_an_rsoup_row_matches_the_merged_weights_at_a_step_and_at_a_prefill(tiny_dir):
    """A one-token step computes the low-rank delta in float32 (tiny bfloat16 GEMMs are slow on a CPU), a longer
    input in the base's bfloat16; both give the interpolated weights' next-token distribution."""
    from transformers import DynamicCache

    from mavis_core import load_stack

    stack = load_stack(tiny_dir / "stack-refs.toml", device=torch.device("cpu"), dtype=torch.bfloat16)
    lam = [0.5, 0.2, 0.3]
    merged = merge_policies(stack.base, stack.policies, dict(zip(stack.objectives, lam, strict=True)))
    ids = _ids(stack)
    prefix, last = ids[:, :-1], ids[:, -1:]
    cache = DynamicCache()
    with stack.lora_rows.rows(stack.objective_mix(torch.tensor(lam))[None]) as model:
        whole = model(input_ids=ids).logits[:, -1].float()  # bfloat16 path (several tokens)
        model(input_ids=prefix, past_key_values=cache, use_cache=True)
        step = model(input_ids=last, past_key_values=cache, use_cache=True).logits[:, -1].float()  # float32 path
    want = torch.log_softmax(merged(input_ids=ids).logits[:, -1].float(), -1)
    for got in (whole, step):
        kl = (want.exp() * (want - torch.log_softmax(got, -1))).sum()
        assert kl < 0.01, kl


def test_a_float32_policy_model_decodes_in_a_bfloat16_stack(tiny_dir):
    """Training keeps a float32 copy of the base under the adapter it trains (`make_policy`) and decodes with it
    swapped into the stack (`policy_in_stack`); on a bfloat16 stack every row, at a prefill and a step, is
    the base's dtype's (once: a KeyError at the held-out evaluation of the build's policies step)."""
    from mavis_core import DecodeConfig, generate_batch, load_stack
    from mavis_core.training.policies import PolicyTrainConfig, make_policy, policy_in_stack

    stack = load_stack(tiny_dir / "stack-sep.toml", device=torch.device("cpu"), dtype=torch.bfloat16)
    model = make_policy(stack, "humor", PolicyTrainConfig())
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    with policy_in_stack(stack, model):
        for method in ("base", "mod", "rsoup"):
            cfg = DecodeConfig(method=method, weights={"humor": 1.0}, max_new_tokens=3, seed=0)
            gens = generate_batch(stack, [PROMPT, "tell me a joke"], cfg, [0, 1])
            assert all(g.events for g in gens)


@torch.inference_mode()
def test_rows_that_weigh_only_some_adapters_skip_the_others_ranks_and_still_equal_peft(tiny_dir):
    """A batch computes only the ranks of the columns some row weighs (an RSoup row with a zero λ skips that
    policy, a MORLHF row skips every other adapter); its rows must still equal peft's adapters and the merged
    RSoup weights, and each layer keeps its sliced ranks for a few sets of columns only."""
    from mavis_core import load_stack
    from mavis_core.lora_rows import _PARTS_KEPT

    stack = load_stack(tiny_dir / "stack-refs.toml", device=torch.device("cpu"))
    columns = stack.lora_columns
    ids = _ids(stack)
    lam = [0.6, 0.0, 0.4]
    merged = merge_policies(stack.base, stack.policies, dict(zip(stack.objectives, lam, strict=True)))
    with stack.lora_rows.rows(torch.stack([stack.objective_mix(torch.tensor(lam)), stack.plain_mix()])) as model:
        rows = model(input_ids=_ids(stack, 2)).logits
    torch.testing.assert_close(rows[0], merged(input_ids=ids).logits[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(rows[1], stack.base(input_ids=ids).logits[0])
    for column, name in enumerate(columns):  # one adapter alone: a MOD policy row or a MORLHF reference row
        mix = stack.plain_mix()
        mix[column] = 1.0
        with stack.lora_rows.rows(mix[None]) as model:
            row = model(input_ids=ids).logits
        stack.policies.set_adapter(name)
        torch.testing.assert_close(row, stack.policies(input_ids=ids).logits, atol=1e-4, rtol=1e-4)
    for n in range(1, 2 ** len(columns)):  # every set of columns: each layer still keeps only a few
        mix = torch.tensor([float(n >> c & 1) for c in range(len(columns))])
        with stack.lora_rows.rows(mix[None]) as model:
            model(input_ids=ids)
    assert 2 ** len(columns) - 1 > _PARTS_KEPT
    assert {len(delta._parts) for delta in stack.lora_rows.deltas} == {_PARTS_KEPT}


def test_concurrent_decodes_can_ask_a_layer_for_new_sets_of_columns_at_once(tiny_stack):
    """Several decodes at once (the app's CONCURRENCY) each ask for their sets of columns; evicting the oldest
    set while another thread adds one must neither fail nor let a layer keep more than a few."""
    from mavis_core.lora_rows import _PARTS_KEPT

    delta = tiny_stack.lora_rows.deltas[0]
    sets = [frozenset(c for c in range(3) if n >> c & 1) for n in range(1, 8)]
    errors = []

    def ask(offset: int) -> None:
        try:
            for i in range(20_000):
                wanted = sets[(i + offset) % len(sets)]
                owner, by_dtype = delta.part(wanted)
                assert set(owner) <= wanted and by_dtype[torch.float32][0].shape[1] == len(owner)
        except Exception as e:  # noqa: BLE001 - reported below with the thread's failure
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(4)]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns every few bytecodes: without the lock this fails
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(switch)
    assert not errors and len(delta._parts) <= _PARTS_KEPT
