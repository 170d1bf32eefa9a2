"""``python -m mavis_core build``: rebuild an embedded stack's trained artifacts from registry data.

Two pipelines, picked by the stack file in ``--out``: a stack whose ``[base]`` is a wheel-shipped model
(the default ``assets/``, SmolLM2-135M-Instruct) runs WHEEL_STEPS; any other folder (``assets/tiny``, or a
fresh ``--quick`` folder) runs TINY_STEPS. Each step records its artifacts in ``OUT/manifest.json`` and
regenerates ``OUT/MODEL_CARD.md``; every step is seeded and resumable from ``--work``.

TINY_STEPS (the 3 M-parameter GPT-2 stack, trained from scratch):

- ``data``: split chitchat-dataset by conversation; writes the held-out ``eval_prompts.json``.
- ``tokenizer``: byte-level BPE on the train split -> ``tokenizer/``.
- ``base``: GPT-2 language model on the train split -> ``base/`` (resumable from ``--work``).
- ``rewards``: reward models, see `mavis_core.training.rewards.build_rewards`.

WHEEL_STEPS (the default stack; the base is not trained, only fetched):

- ``base``: fetch, check and convert the base (`mavis_core.sources`); record its source, licence and samples.
- ``data``, ``rewards``: as above (the reward heads do not depend on the base).
- ``values``: ``train-values`` with VALUES_ARGS (trunk value models, iteration 0) -> ``values/fused``.
- ``values-iter1``: ``train-values --start-from values/fused`` with VALUES_ITER1_ARGS (iteration 1, on trees
  rolled out by MAVIS guided by iteration 0) -> ``values/fused-iter1``, which ``stack-iter1.toml`` names; then
  ``value-report`` of it against iteration 0 on the same rows, written into its card.
- ``policies``: ``train-policies`` with POLICIES_ARGS (a LoRA DPO policy per objective) -> ``policies/``.
- ``references``: ``train-policies --preference`` with REFERENCES_ARGS (helpful–humor MORLHF policies) ->
  ``references/``.
- ``report``: ``value-report`` on every held-out prompt × 4 seeds, written into the values' card.

``--quick`` builds tiny versions of everything in seconds (for tests), never the shipped assets.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import time
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..dialogue import format_dialogue
from . import base, data, tokenizer
from .manifest import record_artifact, write_model_card

STEPS = TINY_STEPS = ("data", "tokenizer", "base", "rewards")
WHEEL_STEPS = ("base", "data", "rewards", "values", "values-iter1", "policies", "references", "report")


def with_options(argv: tuple[str, ...], values: dict[str, str]) -> tuple[str, ...]:
    """``argv`` with the values of some of its ``--option value`` pairs replaced (each option must be there)."""
    missing = set(values) - set(argv)
    if missing:
        raise ValueError(f"options not in the command: {sorted(missing)}")
    return tuple(values.get(argv[i - 1], a) if i and argv[i - 1] in values else a for i, a in enumerate(argv))


# The default stack's training settings (docs/training.md says why). The values step is iteration 0 alone (the
# default stack's model); iteration 1 is its own step (values-iter1) so that it goes on from the model the stack
# ships. Both train on dense targets (every reply position, not only a node's end) from 4 replies to each of
# 2,048 prompts: on the held-out trees that doubled the sibling agreement the 128-prompt, 3-level trees gave.
VALUES_ARGS = ("--fused", "--kind", "trunk", "--layers", "4", "--lora-r", "16", "--num-prompts", "2048",
               "--guided-prompts", "512", "--prompts-per-batch", "16", "--levels", "1", "--root-children", "4",
               "--inner-children", "1", "--max-new-tokens", "48", "--dense", "--epochs", "4", "--lr", "0.001",
               "--iterations", "1", "--beta", "4.0", "--num-eval-prompts", "32")
# Iteration 1 (what assets/stack-iter1.toml ships): 4 MAVIS-guided replies to each of the first 512 training prompts
# per objective at the stack's beta, from iteration 0's weights (--start-from, so iteration 0 is not redone).
VALUES_ITER1_ARGS = with_options(VALUES_ARGS, {"--iterations": "2"})
POLICIES_ARGS = ("--target-modules", "q_proj,v_proj,o_proj,down_proj", "--lora-r", "8", "--num-prompts", "128",
                 "--samples-per-prompt", "4", "--rounds", "1", "--epochs", "2", "--dpo-beta", "0.1",
                 "--max-new-tokens", "48", "--out-dtype", "float16")
# The exact-preference (MORLHF) references on helpful-humor: the policies' recipe at rank 4, so the four fit in
# assets/'s 30 MB (at rank 8 they would take 9.7 MB and the folder 31 MB).
REFERENCE_WEIGHTS = ((0.2, 0.8), (0.4, 0.6), (0.6, 0.4), (0.8, 0.2))
REFERENCES_ARGS = (*with_options(POLICIES_ARGS, {"--lora-r": "4"}),
                   *(a for h, u in REFERENCE_WEIGHTS for a in ("--preference", f"helpful={h},humor={u}")))
REPORT_ARGS = ("--seeds", "4", "--betas", "1,2,4", "--max-new-tokens", "32")
VALUES_ITER1_REPORT_ARGS = with_options(REPORT_ARGS, {"--betas": "2,4"})  # the betas iteration 1 was compared at
EVAL_PROMPTS = "eval_prompts.json"
N_EVAL_PROMPTS = 50
N_SAMPLES = 10
SAMPLE_TOP_K = 15
# --quick: a sliver of the corpus and a vocabulary just big enough to round-trip it.
QUICK_CONVERSATIONS, QUICK_VOCAB = 50, 400


def add_build_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``build`` options to ``parser`` (a subcommand parser of the CLI)."""
    parser.add_argument("--steps", default="all",
                        help=f"comma-separated subset of {','.join(WHEEL_STEPS)} (a wheel-shipped base, the default "
                        f"stack) or {','.join(TINY_STEPS)} (the tiny stack), or 'all' (default)")
    parser.add_argument("--out", type=Path, default=Path("assets"), help="assets folder to write (default assets)")
    parser.add_argument("--work", type=Path, default=Path("build"),
                        help="scratch folder for checkpoints; rerun to resume (default build)")
    parser.add_argument("--seed", type=int, default=0, help="seed of splits, initialisation and sampling")
    parser.add_argument("--quick", action="store_true", help="tiny data and models: a smoke test in seconds")
    return parser


def parse_steps(steps: str, allowed: tuple[str, ...] = TINY_STEPS) -> list[str]:
    """``"all"`` or a comma-separated subset of ``allowed`` -> the steps to run, in pipeline order."""
    wanted = set(allowed) if steps == "all" else {s.strip() for s in steps.split(",") if s.strip()}
    unknown = sorted(wanted - set(allowed))
    if unknown or not wanted:
        raise ValueError(f"--steps {steps!r} names unknown step(s) {unknown}; allowed: {', '.join(allowed)} or all")
    return [s for s in allowed if s in wanted]


def wheel_stack(out: Path):
    """The spec of ``out/stack.toml`` when its base is a wheel-shipped model, else None (the tiny pipeline)."""
    from ..config import read_stack_spec

    path = out / "stack.toml"
    if not path.exists():
        return None
    spec = read_stack_spec(path)
    return spec if spec.base_source is not None else None


def step_command(args: argparse.Namespace, step: str) -> str:
    """The command line that rebuilds one step, as recorded in the manifest."""
    cmd = ["python", "-m", "mavis_core", "build", "--steps", step, "--out", str(args.out),
           "--work", str(args.work), "--seed", str(args.seed)]
    return shlex.join(cmd + (["--quick"] if args.quick else []))


def _conversations(split: str, args: argparse.Namespace) -> list[list[str]]:
    convs = data.load_conversations(split, args.seed)
    return convs[:QUICK_CONVERSATIONS] if args.quick else convs


def _texts(split: str, args: argparse.Namespace) -> list[str]:
    return [format_dialogue(turns) for turns in _conversations(split, args)]


def build_data(args: argparse.Namespace) -> None:
    """Split statistics, and the held-out prompts sweeps and the app draw from."""
    metrics = {}
    for split in data.SPLITS:
        convs = _conversations(split, args)
        metrics[f"{split}_conversations"] = len(convs)
        metrics[f"{split}_turns"] = sum(map(len, convs))
    prompts = data.eval_prompts(N_EVAL_PROMPTS, args.seed)
    path = args.out / EVAL_PROMPTS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(prompts, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    card = (
        "Conversations are split 90/5/5 **by conversation** (sorted ids, seeded shuffle), so no test "
        "dialogue is seen in training. Turns are the consecutive messages of one sender; the first "
        "speaker is the Human. `eval_prompts.json`: distinct opening human turns of test conversations "
        "(4-30 words, platform chatter such as \"anyone there?\" removed), questions first."
    )
    record_artifact(args.out, "data", [path], source=data.DATA_SOURCE["name"], licence=data.DATA_SOURCE["licence"],
                    command=step_command(args, "data"), seed=args.seed, metrics=metrics, card=card)


def build_tokenizer(args: argparse.Namespace) -> None:
    """Train the byte-level BPE on the train split and check it round-trips validation dialogues."""
    max_length = (base.QUICK_CONFIG if args.quick else base.BaseTrainConfig()).n_positions
    tok = tokenizer.train_tokenizer(_texts("train", args), QUICK_VOCAB if args.quick else 4096, max_length)
    val = _conversations("validation", args)
    for turns in val:
        tokenizer.check_round_trip(tok, turns)
    n_chars = sum(len(format_dialogue(t)) for t in val)
    n_tokens = len(base.encode_texts(tok, [format_dialogue(t) for t in val]))
    files = tokenizer.save_tokenizer(tok, args.out / "tokenizer")
    metrics = {"vocab_size": len(tok), "validation_chars_per_token": round(n_chars / n_tokens, 3)}
    card = (
        f"Byte-level BPE (`tokenizers`), {len(tok)} tokens; `{tokenizer.EOS}` (id {tok.eos_token_id}) is "
        "bos, eos and pad. Every validation dialogue decodes back to exactly its HH text."
    )
    record_artifact(args.out, "tokenizer", files, source=f"{data.DATA_SOURCE['name']}, train split",
                    licence=data.DATA_SOURCE["licence"], command=step_command(args, "tokenizer"),
                    seed=args.seed, metrics=metrics, card=card)


def _base_config(args: argparse.Namespace) -> base.BaseTrainConfig:
    return replace(base.QUICK_CONFIG if args.quick else base.BaseTrainConfig(), seed=args.seed)


def _samples_markdown(prompts: list[str], replies: list[str]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ") or "*(empty)*"

    rows = [f"| {cell(p)} | {cell(r)} |" for p, r in zip(prompts, replies, strict=True)]
    return "\n".join(["| held-out prompt | sampled reply |", "|---|---|", *rows])


def build_base(args: argparse.Namespace) -> None:
    """Train the base LM, ship it as fp16, and report the shipped weights' validation perplexity."""
    cfg = _base_config(args)
    tok = AutoTokenizer.from_pretrained(args.out / "tokenizer")
    train_tokens = base.encode_texts(tok, _texts("train", args))  # (n_train,)
    val_tokens = base.encode_texts(tok, _texts("validation", args))  # (n_val,)
    start = time.time()
    model = base.train_base(tok, train_tokens, val_tokens, cfg, args.work / "base")
    minutes = (time.time() - start) / 60
    files = base.save_base(model, args.out / "base")
    # Evaluate what ships: the fp16 file, loaded the way a stack loads it.
    shipped = AutoModelForCausalLM.from_pretrained(args.out / "base", dtype=torch.float32).to(model.device)
    val_loss = base.evaluate(shipped, val_tokens, cfg.n_positions)
    prompts = data.eval_prompts(2 if args.quick else N_SAMPLES, args.seed)
    replies = base.sample_replies(shipped, tok, prompts, seed=args.seed, top_k=SAMPLE_TOP_K,
                                  max_new_tokens=8 if args.quick else 48)
    metrics = {
        "parameters": sum(p.numel() for p in shipped.parameters()),
        "validation_loss": round(val_loss, 4), "validation_perplexity": round(math.exp(val_loss), 2),
        "train_tokens": len(train_tokens), "steps": cfg.steps,
        "epochs": round(cfg.steps * cfg.batch_size * cfg.n_positions / len(train_tokens), 2),
        "train_minutes_last_run": round(minutes, 1), "device": str(model.device),
    }
    card = (
        f"GPT-2 architecture: {cfg.n_layer} layers, {cfg.n_embd} wide, {cfg.n_head} heads, context "
        f"{cfg.n_positions}, tied embeddings; trained on every train conversation as "
        "`format_dialogue(turns) + <|endoftext|>`, packed, random windows of the context length; AdamW "
        f"(lr {cfg.lr}, warmup {cfg.warmup}, cosine to lr/10), batch {cfg.batch_size}x{cfg.n_positions} "
        "tokens. Stored as fp16 safetensors. Validation perplexity is per token on the validation split, "
        "computed from the stored fp16 weights.\n\n"
        f"Replies to held-out prompts (top-k {SAMPLE_TOP_K} sampling, seed {args.seed}, cut at the next turn):\n\n"
        + _samples_markdown(prompts, replies)
    )
    record_artifact(args.out, "base", files, source=f"{data.DATA_SOURCE['name']}, train split",
                    licence=data.DATA_SOURCE["licence"], command=step_command(args, "base"),
                    seed=args.seed, metrics=metrics, card=card)


def build_rewards_step(args: argparse.Namespace) -> None:
    # Imported here: the reward step pulls in sentence-transformers and scikit-learn, the others do not.
    from .rewards import build_rewards

    build_rewards(args.out, args.work, args.seed, args.quick)


def run_build(args: argparse.Namespace) -> None:
    """Run the requested build steps in order; the model card is regenerated after each."""
    if not args.quick and wheel_stack(args.out) is not None:
        from .build_wheel import WHEEL_BUILDERS

        builders = WHEEL_BUILDERS
        steps = parse_steps(args.steps, WHEEL_STEPS)
    else:
        builders = {"data": build_data, "tokenizer": build_tokenizer, "base": build_base,
                    "rewards": build_rewards_step}
        steps = parse_steps(args.steps)
    for step in steps:
        print(f"[build] {step} -> {args.out}", flush=True)
        builders[step](args)
        write_model_card(args.out)



