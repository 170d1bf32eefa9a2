"""MAVIS value-model training: tree rollouts, Monte-Carlo/KL targets, training, resuming, the CLI path."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from transformers import AutoModelForSequenceClassification

from mavis_core import DecodeConfig, generate_batch, load_stack
from mavis_core.options import config_argv
from mavis_core.testing import write_stack
from mavis_core.training import trees as trees_module
from mavis_core.training import value_iterations, value_training
from mavis_core.training.trees import (
    Node,
    Tree,
    TreeConfig,
    backup,
    continue_batch,
    grow_trees,
    new_tree,
    node_targets,
    path_sums,
    rollout_config,
)
from mavis_core.training.value_iterations import Run, TrainValuesConfig, rollout_stage, run_iterations, train_values
from mavis_core.training.value_training import (
    ValuesAt,
    ValueTrainConfig,
    collate,
    init_value_model,
    load_value_model,
    masked_mse,
    spans,
    target_offsets,
    train_value_model,
    tree_examples,
)
from mavis_core.value_models import ValueModel
from mavis_core.values import values_uncached

SMALL_TREES = TreeConfig(root_children=2, inner_children=2, levels=3, max_new_tokens=10, prompts_per_batch=2,
                         batch_rows=5)
PROMPTS = ["hello there", "tell me a joke", "what did you eat", "how is the weather today"]


def hand_tree() -> Tree:
    """root -> 1, 2; 1 -> 3, 4; node 2 ended the reply early. Chunk log-ratios 0.5, 1.0, 0.25, 0.75."""
    nodes = [
        Node(parent=-1, depth=0, children=[1, 2]),
        Node(parent=0, depth=1, tokens=[5], log_ratio=0.5, children=[3, 4]),
        Node(parent=0, depth=1, tokens=[6], log_ratio=1.0, finished=True, rewards={"helpful": 1.0}),
        Node(parent=1, depth=2, tokens=[7], log_ratio=0.25, finished=True, rewards={"helpful": 2.0}),
        Node(parent=1, depth=2, tokens=[8, 9], log_ratio=0.75, finished=True, rewards={"helpful": 4.0}),
    ]
    return Tree(0, "hi", [1, 2], nodes)


def test_backup_is_the_mean_over_children_by_hand():
    tree = hand_tree()
    assert path_sums([n.parent for n in tree.nodes], [n.log_ratio for n in tree.nodes]) == [0, 0.5, 1.0, 0.75, 1.25]
    # leaves keep their reward; node 1 = (2 + 4) / 2; the root = (3 + 1) / 2 (its children, not its leaves)
    assert node_targets(tree, "helpful", 0.0) == pytest.approx([2.0, 3.0, 1.0, 2.0, 4.0])


def test_kl_targets_subtract_zeta_times_the_expected_path_log_ratio_by_hand():
    zeta = 0.4
    got = node_targets(hand_tree(), "helpful", zeta)
    # node 1: mean reward 3, E[log π/π_ref] over its leaves = (0.75 + 1.25) / 2 = 1
    # root: mean over children of (reward − ζ·ratio): ((3 − 0.4) + (1 − 0.4)) / 2
    want = [((3 - zeta * 1.0) + (1 - zeta * 1.0)) / 2, 3 - zeta * 1.0, 1 - zeta * 1.0, 2 - zeta * 0.75,
            4 - zeta * 1.25]
    assert got == pytest.approx(want)


def test_backup_of_a_full_tree_is_the_plain_mean_over_its_leaves():
    children = [[1, 2], [3, 4], [5, 6], [], [], [], []]
    leaves = {3: 1.0, 4: 2.0, 5: 3.0, 6: 10.0}
    assert backup(children, leaves)[0] == pytest.approx(sum(leaves.values()) / 4)


def grow(stack, prompts=PROMPTS, cfg=SMALL_TREES, guide=None):
    pairs = list(enumerate(prompts))
    return [t for batch in grow_trees(stack, pairs, cfg, rollout_config(stack, cfg, guide, 2.0)) for t in batch]


def test_trees_have_the_configured_shape_and_scored_leaves(tiny_stack):
    cfg = TreeConfig(root_children=4, inner_children=2, levels=3, max_new_tokens=12, chunk_range=(2, 3))
    for tree in grow(tiny_stack, PROMPTS[:2], cfg):
        assert len(tree.nodes[0].children) == 4
        for i, node in enumerate(tree.nodes[1:], start=1):
            assert node.depth <= 3 and (node.finished or len(node.children) == 2)
            if node.depth < 3 and not node.finished:
                assert 2 <= len(node.tokens) <= 3
            assert len(tree.path(i)) <= 12
        for leaf in tree.leaves():
            assert tree.nodes[leaf].finished and set(tree.nodes[leaf].rewards) == set(tiny_stack.objectives)


def test_trees_do_not_depend_on_batching(tiny_stack):
    one = grow(tiny_stack, cfg=TreeConfig(**{**SMALL_TREES.__dict__, "prompts_per_batch": 1, "batch_rows": 64}))
    two = grow(tiny_stack)
    assert_same_trees(one, two)


def assert_same_trees(one: list[Tree], two: list[Tree]) -> None:
    """Same tokens and structure; log-ratios and rewards equal up to float rounding (padding differs)."""
    assert [t.index for t in one] == [t.index for t in two]
    for a, b in zip(one, two, strict=True):
        assert [(n.parent, n.tokens, n.finished, n.children) for n in a.nodes] == \
            [(n.parent, n.tokens, n.finished, n.children) for n in b.nodes]
        assert [n.log_ratio for n in a.nodes] == pytest.approx([n.log_ratio for n in b.nodes], abs=1e-4)
        for x, y in zip(a.nodes, b.nodes, strict=True):
            assert (x.rewards is None) == (y.rewards is None)
            if x.rewards:
                assert x.rewards == pytest.approx(y.rewards, abs=1e-4)


@pytest.mark.parametrize("method", ["base", "mavis"])
def test_continuing_from_the_prompt_equals_the_decoding_core(tiny_stack, method):
    cfg = DecodeConfig(method=method, weights={"humor": 1.0}, beta=2.0, top_k=8, max_new_tokens=10)
    trees = [new_tree(tiny_stack, i, p, SMALL_TREES) for i, p in enumerate(PROMPTS)]
    seeds = [11, 12, 13, 14]
    chunks = continue_batch(tiny_stack, [t.prompt_ids for t in trees], [len(t.prompt_ids) for t in trees],
                            [10] * 4, cfg, seeds, max_new_tokens=10)
    gens = generate_batch(tiny_stack, PROMPTS, cfg, seeds)
    for chunk, gen in zip(chunks, gens, strict=True):
        # The core's events leave out an eos and the tail of a stop string; the rest is token for token.
        assert chunk.tokens[: len(gen.token_ids)] == gen.token_ids
        assert chunk.finished == (gen.finish_reason != "length") or len(chunk.tokens) == 10
        if gen.finish_reason == "length":
            assert chunk.log_ratio == pytest.approx(gen.kl, abs=1e-4)


def _truncation_ratio(stack, tree, i: int, top_k: int) -> float:
    """What node i's log-ratio is when its tokens were sampled from the base's top-k alone: Σ over its tokens
    of −log(the top-k's probability mass)."""
    start = len(tree.prompt_ids) + len(tree.path(i)) - len(tree.nodes[i].tokens)
    ids = torch.tensor([tree.prompt_ids + tree.path(i)])
    with torch.no_grad():
        logprobs = torch.log_softmax(stack.base(input_ids=ids).logits[0].float(), -1)
    return sum(-float(torch.logsumexp(logprobs[t - 1].topk(top_k).values, -1)) for t in range(start, ids.shape[1]))


def test_guided_trees_record_the_mavis_log_ratio(tiny_stack):
    """Base trees' log-ratios are only top-k's truncation; MAVIS-guided trees' carry the tilt on top of it."""
    base, guided = grow(tiny_stack, PROMPTS[:1])[0], grow(tiny_stack, PROMPTS[:1], guide="humor")[0]
    for i in range(1, len(base.nodes)):
        assert base.nodes[i].log_ratio == pytest.approx(_truncation_ratio(tiny_stack, base, i, SMALL_TREES.top_k),
                                                        abs=1e-3)
    tilted = [abs(guided.nodes[i].log_ratio - _truncation_ratio(tiny_stack, guided, i, SMALL_TREES.top_k)) > 1e-3
              for i in range(1, len(guided.nodes))]
    assert all(tilted), tilted


def test_value_model_starts_from_the_bases_lower_layers_and_reads_values_like_decoding(tiny_stack):
    model = init_value_model(tiny_stack.base, ValueTrainConfig(layers=1), ["helpful", "humor"])
    assert model.config.num_hidden_layers == 1 and model.config.id2label == {0: "helpful", 1: "humor"}
    assert torch.equal(model.transformer.h[0].attn.c_attn.weight, tiny_stack.base.transformer.h[0].attn.c_attn.weight)
    assert torch.equal(model.transformer.wte.weight, tiny_stack.base.transformer.wte.weight)
    torch.nn.init.normal_(model.score.weight)
    seqs = [[3, 4, 5, 0], [6, 7]]  # a reply ending in eos (= pad) must be read at the eos itself
    ids, mask, last = collate(seqs, pad_id=0)
    got = ValuesAt(model)(ids, mask, torch.arange(2), last)  # (2, 2)

    vm = ValueModel("x", model.eval(), [0, 2])
    for row, seq in enumerate(seqs):
        want = values_uncached(vm, torch.tensor([seq]), 3)[0]
        assert torch.allclose(got[row], want[[0, 2]], atol=1e-5)


def examples_of(stack, trees, heads=("helpful",)):
    return tree_examples(trees, list(heads), list(heads), 0.0)


def test_a_few_training_steps_reduce_the_loss_and_change_the_parameters(tiny_stack, tmp_path):
    ex = examples_of(tiny_stack, grow(tiny_stack))
    torch.manual_seed(0)
    model = init_value_model(tiny_stack.base, ValueTrainConfig(layers=1), ["helpful"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    offsets = target_offsets(ex)

    def loss() -> float:
        with torch.no_grad():
            ids, mask, last = collate(ex.ids, 0)
            pred = ValuesAt(model)(ids, mask, torch.arange(len(last)), last)
            return float(masked_mse(pred, ex.targets - offsets, ex.mask))

    start = loss()
    cfg = ValueTrainConfig(epochs=3, batch_size=8, lr=3e-3)
    report = train_value_model(model, ex, ex.subset([0, 1, 2]), cfg, tmp_path, 0, Accelerator(cpu=True))
    assert loss() < start
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert len(report["history"]) == 3 and (tmp_path / "best" / "config.json").exists()


def test_dense_examples_train_every_position_of_a_nodes_chunk_on_its_target(tiny_stack):
    trees = grow(tiny_stack)
    sparse = tree_examples(trees, ["helpful"], ["helpful"], 0.0)
    dense = tree_examples(trees, ["helpful"], ["helpful"], 0.0, dense=True)
    assert sparse.ids == dense.ids and torch.equal(sparse.targets, dense.targets)
    assert sparse.starts == [len(i) - 1 for i in sparse.ids]
    n = 0
    for tree in trees:
        for i in range(1, len(tree.nodes)):  # a node's chunk: the positions after its parent's path
            assert dense.starts[n] == len(tree.prompt_ids) + len(tree.path(tree.nodes[i].parent))
            n += 1
    assert any(len(i) - s > 1 for i, s in zip(dense.ids, dense.starts, strict=True))


def test_values_at_every_position_equal_the_uncached_values_of_each_prefix(tiny_stack):
    model = init_value_model(tiny_stack.base, ValueTrainConfig(layers=1), ["helpful"])
    torch.nn.init.normal_(model.score.weight)
    seqs = [[3, 4, 5, 6], [7, 8]]
    ids, mask, last = collate(seqs, pad_id=0)
    rows, positions = spans(torch.tensor([1, 0]), last)
    assert rows.tolist() == [0, 0, 0, 1, 1] and positions.tolist() == [1, 2, 3, 0, 1]
    got = ValuesAt(model.eval())(ids, mask, rows, positions)[:, 0]  # (5,)
    vm = ValueModel("x", model, [0])
    want = [values_uncached(vm, torch.tensor([seqs[r][: p + 1]]), 1)[0, 0]
            for r, p in zip(rows.tolist(), positions.tolist(), strict=True)]
    assert torch.allclose(got, torch.stack(want), atol=1e-5)


def test_dense_training_reduces_the_loss_on_every_position(tiny_stack, tmp_path):
    ex = tree_examples(grow(tiny_stack), ["helpful"], ["helpful"], 0.0, dense=True)
    torch.manual_seed(0)
    model = init_value_model(tiny_stack.base, ValueTrainConfig(layers=1), ["helpful"])
    offsets = target_offsets(ex)

    def loss() -> float:
        with torch.no_grad():
            ids, mask, last = collate(ex.ids, 0)
            rows, positions = spans(torch.tensor(ex.starts), last)
            pred = ValuesAt(model)(ids, mask, rows, positions)
            return float(masked_mse(pred, (ex.targets - offsets)[rows], ex.mask[rows]))

    start = loss()
    cfg = ValueTrainConfig(epochs=3, batch_size=8, lr=3e-3, dense=True)
    train_value_model(model, ex, ex.subset([0, 1, 2]), cfg, tmp_path, 0, Accelerator(cpu=True))
    assert loss() < start


def test_training_resumed_after_an_interruption_ends_with_the_same_weights(tiny_stack, tmp_path):
    ex = examples_of(tiny_stack, grow(tiny_stack))
    train, val = ex.subset(list(range(8, len(ex)))), ex.subset(list(range(8)))
    cfg = ValueTrainConfig(epochs=3, batch_size=8, lr=3e-3)

    def fresh():
        torch.manual_seed(0)
        return init_value_model(tiny_stack.base, ValueTrainConfig(layers=1), ["helpful"])

    straight = fresh()
    full = train_value_model(straight, train, val, cfg, tmp_path / "a", 0, Accelerator(cpu=True))
    train_value_model(fresh(), train, val, cfg, tmp_path / "b", 0, Accelerator(cpu=True), stop_after_epochs=1)
    resumed = fresh()
    again = train_value_model(resumed, train, val, cfg, tmp_path / "b", 0, Accelerator(cpu=True))
    assert again["history"] == full["history"]
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_a_warm_start_keeps_the_starting_model_when_no_epoch_beats_it(tiny_stack, tmp_path):
    ex = examples_of(tiny_stack, grow(tiny_stack))
    train, val = ex.subset(list(range(8, len(ex)))), ex.subset(list(range(8)))
    torch.manual_seed(0)
    model = init_value_model(tiny_stack.base, ValueTrainConfig(layers=1), ["helpful"])
    first = train_value_model(model, train, val, ValueTrainConfig(epochs=2, batch_size=8, lr=3e-3),
                              tmp_path / "iter0", 0, Accelerator(cpu=True))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    offsets = torch.tensor(first["offsets"])
    # A step size that wrecks the model: every epoch validates worse than the model it started from.
    wreck = ValueTrainConfig(epochs=2, batch_size=8, lr=10.0, grad_clip=1e6)
    report = train_value_model(model, train, val, wreck, tmp_path / "iter1", 0, Accelerator(cpu=True),
                               start_offsets=offsets)
    assert [h["epoch"] for h in report["history"]] == [0, 1, 2] and report["history"][0]["train_mse"] is None
    assert report["best_epoch"] == 0 and report["best_val_mse"] == report["history"][0]["val_mse"]
    assert all(h["val_mse"] > report["best_val_mse"] for h in report["history"][1:])
    assert report["offsets"] == pytest.approx(first["offsets"])
    kept = AutoModelForSequenceClassification.from_pretrained(tmp_path / "iter1" / "best")
    assert kept.config.value_offsets == pytest.approx(first["offsets"])
    for key, value in kept.state_dict().items():
        assert torch.equal(value, start[key]), key


def test_rollouts_resume_after_an_interruption_with_the_same_trees(tiny_stack, tmp_path, monkeypatch):
    acc = Accelerator(cpu=True)
    full = rollout_stage(tiny_stack, tmp_path / "a", PROMPTS, SMALL_TREES, None, 1.0, None, acc)
    real = trees_module.grow_trees

    def one_batch_then_crash(*args, **kw):
        yield next(real(*args, **kw))
        raise KeyboardInterrupt

    monkeypatch.setattr("mavis_core.training.value_iterations.grow_trees", one_batch_then_crash)
    with pytest.raises(KeyboardInterrupt):
        rollout_stage(tiny_stack, tmp_path / "b", PROMPTS, SMALL_TREES, None, 1.0, None, acc)
    assert not (tmp_path / "b" / "done").exists()
    monkeypatch.setattr("mavis_core.training.value_iterations.grow_trees", real)
    resumed = rollout_stage(tiny_stack, tmp_path / "b", PROMPTS, SMALL_TREES, None, 1.0, None, acc)
    assert_same_trees(resumed, full)
    with pytest.raises(ValueError, match="other settings"):
        rollout_stage(tiny_stack, tmp_path / "b", PROMPTS[:2], SMALL_TREES, None, 1.0, None, acc)


def values_config(tiny_dir: Path, work: Path, stack: str = "stack-sep.toml", **fields) -> TrainValuesConfig:
    """A quick train-values run on the tiny stack's PROMPTS."""
    prompts = work.parent / "prompts.json"
    prompts.write_text(json.dumps(PROMPTS))
    return TrainValuesConfig(stack=tiny_dir / stack, work=work, quick=True, prompts=prompts, **fields)


def test_a_stack_naming_models_not_trained_yet_can_train_them(tiny_dir, tmp_path):
    names = ("helpful", "harmless", "humor")
    write_stack(tiny_dir, "stack-to-train.toml", {n: f"values-to-train/{n}" for n in names})  # no such folders
    train_values(values_config(tiny_dir, tmp_path / "work", objective="humor", iterations=1,
                               out=tiny_dir / "values-to-train" / "humor", stack="stack-to-train.toml"))
    assert (tiny_dir / "values-to-train" / "humor" / "model.safetensors").exists()
    assert not list(tiny_dir.glob(".stack-to-train.training-*.toml"))  # the temporary copy is gone


def test_objective_or_fused_must_be_given_once(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        train_values(values_config(tiny_dir, tmp_path / "w"))
    with pytest.raises(ValueError, match="not in this stack"):
        train_values(values_config(tiny_dir, tmp_path / "w", objective="wit"))


def test_fused_value_model_trains_two_iterations_and_loads_in_a_stack(tiny_dir, tmp_path):
    out = tiny_dir / "values" / "trained-fused"
    reports = train_values(values_config(tiny_dir, tmp_path / "work", fused=True, out=out))
    assert [r["iteration"] for r in reports] == [0, 1]
    assert set(reports[1]["eval"]) == {"helpful", "harmless", "humor"}
    assert (tmp_path / "work" / "fused" / "iter1" / "trees-humor" / "done").exists()  # one tree set per head
    for r in reports:  # each stage's wall time, as the run that finished it recorded it (the build's metrics)
        assert r["minutes"]["rollouts"] >= 0 and r["minutes"]["training"] >= 0
    stack = load_stack(write_stack(tiny_dir, "stack-trained.toml", {n: "values/trained-fused" for n in
                                                                    ("helpful", "harmless", "humor")}),
                       device=torch.device("cpu"))
    cfg = DecodeConfig(method="mavis", weights={"humor": 1.0}, beta=5.0, max_new_tokens=6)
    assert generate_batch(stack, ["hello there"], cfg)[0].events
    vm = load_value_model(stack, out)
    assert vm.heads == [0, 1, 2]
    # Rerunning finds every stage done and gives the same reports.
    assert train_values(values_config(tiny_dir, tmp_path / "work", fused=True, out=out)) == reports


def test_later_iterations_start_from_the_previous_best_unless_told_otherwise(tiny_dir, tmp_path, monkeypatch):
    started: list[Path] = []
    real, stack = value_training.warm_value_model, load_stack(tiny_dir / "stack-sep.toml")

    def spy(base, folder, labels):
        started.append(folder)
        model = real(base, folder, labels)
        saved = load_value_model(stack, folder).model.state_dict()
        for key, value in model.state_dict().items():  # the very weights iteration 0 kept as its best
            if key in saved:
                assert torch.equal(value.float(), saved[key].float()), key
        assert any(p.requires_grad for p in model.parameters())
        return model

    monkeypatch.setattr(value_iterations, "warm_value_model", spy)
    humor = dict(objective="humor", out=tmp_path / "out")
    train_values(values_config(tiny_dir, tmp_path / "warm", **humor))
    assert started == [tmp_path / "warm" / "humor" / "iter0" / "best"]
    train_values(values_config(tiny_dir, tmp_path / "cold", **humor, warm_start=False))
    assert len(started) == 1  # --cold-start: iteration 1 starts from the base with a zero head
    with pytest.raises(ValueError, match="not this run's previous iteration"):
        real(stack.base, started[0], ["helpful"])


def test_start_from_takes_a_saved_model_as_iteration_0_and_goes_on_from_it(tiny_dir, tmp_path, monkeypatch):
    stack = load_stack(tiny_dir / "stack-sep.toml")
    first = tmp_path / "first"
    train_values(values_config(tiny_dir, tmp_path / "w0", objective="humor", iterations=1, out=first))
    started, guides = [], []
    real_warm, real_rollout = value_iterations.warm_value_model, value_iterations.rollout_stage

    def spy_warm(base, folder, labels):
        started.append(folder)
        return real_warm(base, folder, labels)

    def spy_rollout(stack, folder, prompts, tree_cfg, guide, beta, value_model, accelerator):
        guides.append((guide, value_model.path if value_model else None))
        return real_rollout(stack, folder, prompts, tree_cfg, guide, beta, value_model, accelerator)

    monkeypatch.setattr(value_iterations, "warm_value_model", spy_warm)
    monkeypatch.setattr(value_iterations, "rollout_stage", spy_rollout)
    work = tmp_path / "w1"
    reports = train_values(values_config(tiny_dir, work, objective="humor", start_from=first, out=tmp_path / "out"))
    assert reports[0] == {"iteration": 0, "start_from": str(first)} and reports[1]["iteration"] == 1
    assert guides == [("humor", str(first))]  # no base trees: only iteration 1's, guided by the saved model
    assert started == [first] and not (work / "humor" / "iter0").exists()
    assert load_value_model(stack, tmp_path / "out").heads == [stack.objectives.index("humor")]
    with pytest.raises(ValueError, match="heads"):
        train_values(values_config(tiny_dir, tmp_path / "w2", objective="helpful", start_from=first))
    with pytest.raises(ValueError, match="iterations >= 2"):
        train_values(values_config(tiny_dir, tmp_path / "w3", objective="humor", iterations=1, start_from=first))


def test_a_trunk_value_model_goes_on_training_from_its_stored_adapter_and_heads(tmp_path):
    from test_value_models import LABELS, tiny_llama, trained

    from mavis_core.value_models import save_trunk, trained_weights

    base = tiny_llama()
    model = trained(base)
    save_trunk(model, tmp_path / "best", [0.0, 0.0])
    warm = value_training.warm_value_model(base, tmp_path / "best", LABELS)
    stored = trained_weights(model)
    assert all(torch.equal(v, stored[k]) for k, v in trained_weights(warm).items()) and set(stored) == set(
        trained_weights(warm))
    assert {n for n, p in warm.named_parameters() if p.requires_grad} == set(stored)  # LoRA and heads only


@pytest.mark.slow
def test_train_values_runs_as_two_processes_under_accelerate(tiny_dir, tmp_path):
    args = values_config(tiny_dir, tmp_path / "work", objective="humor", out=tmp_path / "out")
    # accelerate's --cpu launcher starts one process unless MPI is set up; its torchrun launcher starts two,
    # which join over gloo on a machine without CUDA (see train_values).
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "mavis_core", "train-values", *config_argv(args)]  # the command line the config stands for
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    shards = sorted((tmp_path / "work" / "iter0-base").glob("trees-*.jsonl"))
    assert [p.name for p in shards] == ["trees-0.jsonl", "trees-1.jsonl"]  # prompts split by process
    assert (tmp_path / "out" / "model.safetensors").exists()
    assert "humor iteration 1" in done.stdout


class CountE:
    """A reward a tiny value model can learn: how many times the reply uses the letter e."""

    def score(self, prompts, responses):
        return torch.tensor([float(r.count("e")) for r in responses])


@pytest.mark.slow
def test_trained_value_models_raise_the_objectives_reward_over_the_base(tiny_stack, tmp_path, monkeypatch):
    """End to end on a reward a tiny model can learn; about 30 s on one core."""
    monkeypatch.setitem(tiny_stack.rewards, "humor", CountE())
    words = "hello there how are you what did you eat tell me a joke about the weather weekend football".split()
    rng = random.Random(0)
    prompts = [" ".join(rng.sample(words, 4)) for _ in range(80)]
    trees = TreeConfig(root_children=4, inner_children=2, levels=3, max_new_tokens=12, prompts_per_batch=8)
    cfg = ValueTrainConfig(epochs=8, batch_size=16, lr=3e-3, beta=5.0, eval_max_new_tokens=12, val_fraction=0.2,
                           guided_prompts=32)
    _, reports = run_iterations(tiny_stack, Run("humor", ("humor",)), prompts[:64], prompts[64:], trees, cfg,
                                tmp_path, Accelerator(cpu=True))
    # Measured with seeds 0-2: base 0.1-0.3 e per reply; MAVIS 1.6-2.1 at iteration 0 and, started from it on
    # 32 guided trees, 3.4-4.2 at iteration 1.
    for report in reports:
        assert report["eval"]["humor"]["mavis_reward"] > report["eval"]["humor"]["base_reward"] + 0.5


def test_refusal_children_open_the_first_root_children_with_a_refusal_the_base_continues(tiny_stack):
    cfg = TreeConfig(root_children=3, inner_children=1, levels=1, max_new_tokens=20, refusal_children=1)
    for tree in grow(tiny_stack, PROMPTS[:2], cfg):
        first, *rest = tree.nodes[0].children
        opener = trees_module.refusal_opener_ids(tiny_stack, tree.index)
        assert tree.nodes[first].tokens[: len(opener)] == opener and len(tree.nodes[first].tokens) > len(opener)
        # the tiny tokenizer may spell an opener in more tokens than the reply's limit: then one more is sampled
        assert len(tree.path(first)) <= max(20, len(opener) + 1) and tree.nodes[first].rewards is not None
        assert all(tree.nodes[c].tokens[: len(opener)] != opener for c in rest)
    with pytest.raises(ValueError, match="refusal_children"):
        TreeConfig(root_children=2, refusal_children=3)


def test_guided_rollouts_never_force_a_refusal(tiny_stack, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(value_iterations, "grow_trees", lambda stack, pairs, cfg, d: seen.append(cfg) or iter(()))
    cfg = TreeConfig(root_children=2, levels=1, max_new_tokens=8, refusal_children=1)
    with pytest.raises(ValueError, match="holds 0 trees"):
        rollout_stage(tiny_stack, tmp_path / "g", PROMPTS[:1], cfg, "humor", 2.0, None, Accelerator(cpu=True))
    assert seen[0].refusal_children == 0
