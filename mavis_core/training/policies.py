"""Baseline policies for MOD and RSoup: one LoRA adapter per objective, trained with DPO against that
objective's reward model on reward-ranked samples (Rafailov et al. 2023).

Per objective and round: sample ``samples_per_prompt`` replies per prompt (round 0 from the base; later
rounds, if any, from the current policy: online DPO), score them with the objective's reward model, pair the
best with the worst reply of each prompt, and minimise the DPO loss with the base as the reference. DPO
optimises the same KL-regularised objective max E[r] − β·KL(π ‖ π_ref) as PPO, with no value network and no
sampling inside the update, which is what fits on 2 CPU cores.

The DPO loss and loop are `dpo`'s, shared with the λ-conditioned policy.

A preference such as ``helpful=0.4,humor=0.6`` (``--preference``) trains the same way for the weighted reward
Σ λ_m r_m: the paper's policies fine-tuned for one exact preference, a reference for the Pareto chart.
`train_policies(TrainPoliciesConfig(...))` is the ``train-policies`` command.

Adapters are saved with ``save_pretrained`` (adapter_config.json + adapter_model.safetensors), so a stack's
``policy = "policies/NAME"`` loads them. Stages (samples per round, the finished adapter) are kept in
``--work`` and skipped when present, so rerunning resumes.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..config import DecodeConfig, normalise_weights, require_positive
from ..decoding import generate_batch
from ..dialogue import HUMAN
from ..options import parse_weights
from ..stack import Stack, pick_device
from .dpo import Pair, save_adapter, train_rounds
from .runs import QUICK_PROMPTS, TrainRunConfig
from .value_training import load_training_stack

SAMPLE_ROWS = 64  # replies generated per batch while sampling


@dataclass(frozen=True)
class PolicyTrainConfig:
    """Settings of the DPO baseline policies.

    Args:
        dpo_beta: β of DPO, the strength of the implicit KL penalty (larger: closer to the base).
        min_margin: pairs whose rewards differ by no more than this are dropped (ties teach nothing).
        rounds: 1 = offline DPO on base samples; more = online DPO, each round sampling from the current policy.
        refusal_samples: of each prompt's base samples (round 0), how many open with a refusal opener that the
            base continues (`trees.refusal_opener_ids`, in turn): the base never refuses by itself, so without
            them no pair could prefer a refusal and no policy could learn one.
        lora_alpha: LoRA's alpha; None: twice the rank.
        target_modules: LoRA targets; None uses peft's default for the architecture (GPT-2: c_attn).
    """

    num_prompts: int = 128
    samples_per_prompt: int = 4
    max_new_tokens: int = 48
    top_k: int = DecodeConfig.default("top_k")
    temperature: float = 1.0
    dpo_beta: float = 0.1
    lr: float = 5e-4
    epochs: int = 2
    batch_size: int = 8
    lora_r: int = 8
    lora_alpha: int | None = None
    target_modules: tuple[str, ...] | None = ("c_attn", "c_fc")
    min_margin: float = 0.0
    rounds: int = 1
    refusal_samples: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples_per_prompt < 2:
            raise ValueError(f"samples_per_prompt must be >= 2 to form pairs, got {self.samples_per_prompt}")
        if not 0 <= self.refusal_samples < self.samples_per_prompt:
            raise ValueError(f"refusal_samples must be in 0..samples_per_prompt - 1 ({self.samples_per_prompt - 1}), "
                             f"got {self.refusal_samples}")
        require_positive(self, "epochs", "batch_size", "rounds", "lora_r")
        if self.dpo_beta <= 0:
            raise ValueError(f"dpo_beta must be > 0, got {self.dpo_beta}")


def reply_ids(tokenizer, text: str, finish_reason: str) -> list[int]:
    """Token ids of a sampled reply and of how it ended (eos, or the start of a new human turn)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if finish_reason == "eos":
        ids.append(tokenizer.eos_token_id)
    elif finish_reason == "stop":
        ids += tokenizer(HUMAN, add_special_tokens=False)["input_ids"]
    return ids


@contextlib.contextmanager
def policy_in_stack(stack: Stack, model) -> Iterator[Stack]:
    """Temporarily make ``model`` (a peft model whose adapters are named by objective) the stack's policies."""
    saved = stack.policies
    stack.policies = model
    try:
        yield stack
    finally:
        stack.policies = saved


def adapter_name(weights: dict[str, float]) -> str:
    """The peft adapter name a policy trains under: its (first) objective.

    MOD with λ one-hot on that name samples from the adapter alone, which is how the training loop samples
    (online rounds) and evaluates; an exact-preference policy borrows its first objective's name for that.
    """
    return next(iter(weights))


def weighted_rewards(stack: Stack, weights: dict[str, float], prompts: list[str],
                     replies: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Σ_m λ_m r_m and each r_m, for n (prompt, reply) pairs: (n,) and objective -> (n,)."""
    each = {m: stack.rewards[m].score(prompts, replies) for m in weights}
    return sum(w * each[m] for m, w in weights.items()), each


def _sample(stack: Stack, weights: dict[str, float], prompts: list[str], cfg: PolicyTrainConfig, round_: int,
            policy=None) -> tuple[list[str], list]:
    """``samples_per_prompt`` replies per prompt from the base or (online) ``policy``: (rows, generations)."""
    rows = [p for p in prompts for _ in range(cfg.samples_per_prompt)]
    seeds = [cfg.seed * 1_000_003 + round_ * 100_003 + i for i in range(len(rows))]
    decode_cfg = DecodeConfig(method="base" if policy is None else "mod", weights={adapter_name(weights): 1.0},
                              top_k=cfg.top_k, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)
    forced = [policy is None and i % cfg.samples_per_prompt >= cfg.samples_per_prompt - cfg.refusal_samples
              for i in range(len(rows))]  # the last refusal_samples of each prompt's base samples
    gens: list = [None] * len(rows)
    with policy_in_stack(stack, policy) if policy is not None else contextlib.nullcontext():
        for opened in (False, True):
            index = [i for i, f in enumerate(forced) if f == opened]
            for start in tqdm(range(0, len(index), SAMPLE_ROWS), desc=f"samples (round {round_}"
                              + (", refusal-opened)" if opened else ")"), disable=not index):
                part = index[start : start + SAMPLE_ROWS]
                made = (_refusal_opened(stack, [rows[i] for i in part], [seeds[i] for i in part], decode_cfg)
                        if opened else generate_batch(stack, [rows[i] for i in part], decode_cfg,
                                                      [seeds[i] for i in part]))
                for i, g in zip(part, made, strict=True):
                    gens[i] = g
    return rows, gens


@dataclass
class OpenedReply:
    """A base reply whose first tokens were a forced refusal opener (what `_sample` uses of a generation)."""

    text: str
    finish_reason: str


def _refusal_opened(stack: Stack, prompts: list[str], seeds: list[int], cfg: DecodeConfig) -> list[OpenedReply]:
    """Replies that open with a refusal opener (the k-th row the k-th opener, in turn; seeded per row) and go on
    as ``cfg`` samples; the opener counts towards ``cfg.max_new_tokens``."""
    from .trees import continue_batch, refusal_opener_ids

    openers = [refusal_opener_ids(stack, seed) for seed in seeds]
    room = stack.context_length - cfg.max_new_tokens
    heads = [stack.format.encode(p)[-room:] for p in prompts]
    chunks = continue_batch(stack, [h + o for h, o in zip(heads, openers, strict=True)], [len(h) for h in heads],
                            [max(1, cfg.max_new_tokens - len(o)) for o in openers], cfg, seeds, cfg.max_new_tokens)
    out = []
    for opener, chunk in zip(openers, chunks, strict=True):
        ids = opener + chunk.tokens
        reason = ("length" if not chunk.finished else "eos" if ids[-1] in stack.format.stop_ids else "stop")
        out.append(OpenedReply(stack.format.reply_text(ids), reason))
    return out


def sample_replies(stack: Stack, weights: dict[str, float], prompts: list[str], cfg: PolicyTrainConfig,
                   round_: int, policy=None) -> list[dict]:
    """``samples_per_prompt`` replies per prompt scored by Σ λ_m r_m, from the base or (online) ``policy``.

    Returns one dict per reply (prompt order, then sample order): prompt, text, finish_reason, reward.
    """
    rows, gens = _sample(stack, weights, prompts, cfg, round_, policy)
    rewards, _ = weighted_rewards(stack, weights, rows, [g.text for g in gens])  # (n,)
    return [{"prompt": p, "text": g.text, "finish_reason": g.finish_reason, "reward": float(r)}
            for p, g, r in zip(rows, gens, rewards, strict=True)]


def base_samples(stack: Stack, weights: dict[str, float], prompts: list[str], cfg: PolicyTrainConfig,
                 work: Path) -> list[dict]:
    """Round 0's samples (`sample_replies` from the base), drawn once per ``work`` folder and shared.

    The base's replies do not depend on the weights, only their rewards' weighting does: every policy trained
    on the same prompts with the same sampling settings (a build's 3 objectives and 4 references) reads one
    ``base-samples-KEY.json`` holding each objective's reward, instead of sampling and scoring them again.
    """
    spec = stack.spec  # what writes and scores the replies: another stack in the same folder gets its own file
    settings = dict(prompts=prompts, seed=cfg.seed, samples_per_prompt=cfg.samples_per_prompt, top_k=cfg.top_k,
                    **({"refusal_samples": cfg.refusal_samples} if cfg.refusal_samples else {}),
                    temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, dtype=str(stack.dtype),
                    base=[str(spec.base_model), str(spec.base_source), str(spec.tokenizer), spec.prompt_format,
                          spec.system_prompt], rewards=[[o.name, str(o.reward)] for o in spec.objectives])
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = work / f"base-samples-{key}.json"
    if path.exists():
        shared = json.loads(path.read_text())
    else:
        rows, gens = _sample(stack, weights, prompts, cfg, 0)
        texts = [g.text for g in gens]
        each = {m: r.tolist() for m, r in stack.score(rows, texts).items()}  # every objective, one batch each
        shared = [{"prompt": p, "text": g.text, "finish_reason": g.finish_reason,
                   "rewards": {m: each[m][i] for m in stack.objectives}}
                  for i, (p, g) in enumerate(zip(rows, gens, strict=True))]
        work.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(shared))
    # Σ λ_m r_m in float32 as `weighted_rewards` sums it (the same pairs as sampling for this policy alone)
    rewards = sum(w * torch.tensor([s["rewards"][m] for s in shared]) for m, w in weights.items())
    return [{"prompt": s["prompt"], "text": s["text"], "finish_reason": s["finish_reason"], "reward": float(r)}
            for s, r in zip(shared, rewards, strict=True)]


def make_pairs(stack: Stack, samples: list[dict], k: int, min_margin: float) -> list[Pair]:
    """Best vs worst reply of each prompt's ``k`` samples, when their rewards differ by more than ``min_margin``."""
    pairs = []
    for start in range(0, len(samples), k):
        group = sorted(samples[start : start + k], key=lambda s: s["reward"])
        worst, best = group[0], group[-1]
        if best["reward"] - worst["reward"] <= min_margin:
            continue
        chosen = reply_ids(stack.tokenizer, best["text"], best["finish_reason"])
        rejected = reply_ids(stack.tokenizer, worst["text"], worst["finish_reason"])
        room = stack.context_length - max(len(chosen), len(rejected))
        prompt = stack.format.encode(best["prompt"])[-room:]
        pairs.append(Pair(prompt, chosen, rejected))
    return pairs


def make_policy(stack: Stack, objective: str, cfg: PolicyTrainConfig):
    """A float32 copy of the base with a fresh LoRA adapter named ``objective`` (B = 0: starts as the base)."""
    from peft import LoraConfig, get_peft_model

    base = copy.deepcopy(stack.base).float()
    config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha or 2 * cfg.lora_r, lora_dropout=0.0,
                        target_modules=list(cfg.target_modules) if cfg.target_modules else None,
                        fan_in_fan_out=base.config.model_type == "gpt2")  # GPT-2 stores Conv1D weights transposed
    torch.manual_seed(cfg.seed)
    return get_peft_model(base, config, adapter_name=objective)


def evaluate_policy(stack: Stack, weights: dict[str, float], model, prompts: list[str],
                    cfg: PolicyTrainConfig) -> dict:
    """Mean (weighted) reward, each objective's mean reward and mean KL to the base on held-out prompts, for
    the base and for the policy (sampled alone: MOD with λ one-hot on its adapter), with the same seeds."""
    seeds = [cfg.seed + i for i in range(len(prompts))]
    out = {}
    with policy_in_stack(stack, model):
        for method, name in (("base", "base"), ("mod", "policy")):
            decode_cfg = DecodeConfig(method=method, weights={adapter_name(weights): 1.0}, top_k=cfg.top_k,
                                      temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)
            gens = generate_batch(stack, prompts, decode_cfg, seeds)
            total, each = weighted_rewards(stack, weights, prompts, [g.text for g in gens])
            out[f"{name}_reward"] = float(total.mean())
            out[f"{name}_kl"] = sum(g.kl for g in gens) / len(gens)
            if len(weights) > 1:
                out.update({f"{name}_{m}": float(r.mean()) for m, r in each.items()})
    return out


def _round_samples(stack: Stack, weights: dict[str, float], prompts: list[str], cfg: PolicyTrainConfig,
                   round_: int, model, folder: Path, shared: Path) -> list[dict]:
    """The samples of one round, cached in ``folder/round{r}-samples.json`` (round 0's base replies in
    ``shared``)."""
    path = folder / f"round{round_}-samples.json"
    if path.exists():
        return json.loads(path.read_text())
    samples = (base_samples(stack, weights, prompts, cfg, shared) if round_ == 0
               else sample_replies(stack, weights, prompts, cfg, round_, model))
    path.write_text(json.dumps(samples))
    return samples


def train_policy(stack: Stack, weights: dict[str, float], prompts: list[str], eval_prompts: list[str],
                 cfg: PolicyTrainConfig, work: Path, out: Path, out_dtype: str = "float32",
                 base_samples_dir: Path | None = None) -> dict:
    """Train (or resume) the LoRA policy for reward Σ λ_m r_m into ``out``; returns its report.

    ``weights`` = {objective: 1} gives an objective's baseline policy; several weights an exact-preference
    policy. Skipped when ``work/NAME/report.json`` and the adapter exist; finished rounds are not redone.
    Round 0's base replies are shared through ``base_samples_dir`` (default ``work``; `base_samples`).
    """
    folder = work / out.name
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "report.json").exists() and (out / "adapter_config.json").exists():
        return json.loads((folder / "report.json").read_text())
    objective = adapter_name(weights)
    model = make_policy(stack, objective, cfg)

    def pairs_of(r: int) -> list[Pair]:
        pairs = make_pairs(stack, _round_samples(stack, weights, prompts, cfg, r, model, folder,
                                                 base_samples_dir or work),
                           cfg.samples_per_prompt, cfg.min_margin)
        if not pairs:
            raise ValueError(f"no preference pairs for {out.name!r}: every prompt's samples tie on reward")
        return pairs

    rounds = train_rounds(model, objective, folder, pairs_of, cfg, stack.tokenizer.pad_token_id)
    save_adapter(model, objective, out, out_dtype)
    report = {"weights": weights, "rounds": rounds, "eval": evaluate_policy(stack, weights, model, eval_prompts, cfg)}
    (folder / "report.json").write_text(json.dumps(report, indent=1))
    return report


# ---- the train-policies command ---------------------------------------------------------------------------

QUICK = {"num_prompts": QUICK_PROMPTS, "samples_per_prompt": 2, "max_new_tokens": 12, "epochs": 1, "batch_size": 4}


@dataclass(frozen=True)
class TrainPoliciesConfig(TrainRunConfig, PolicyTrainConfig):
    """What one ``train-policies`` run trains, field for field its command-line options (`config_argv`).

    Args:
        objectives: objectives to train a policy for (empty: all of them, unless ``preference`` is given).
        preference: exact preferences such as "helpful=0.4,humor=0.6", each trained for the reward Σ λ_m r_m
            (the paper's MORLHF references) into ``out/helpful0.4-humor0.6`` (``out`` None: STACK_DIR/policies).
        base_samples: where round 0's base replies are kept and shared between runs (None: ``work``).
        The others are `TrainRunConfig`'s (stack, prompts, folders, seed, quick) and `PolicyTrainConfig`'s (the DPO
        recipe of every policy; an empty ``target_modules``: peft's default).
    """

    work: Path = Path("build/policies")
    out_dtype: str = "float32"
    objectives: tuple[str, ...] = ()
    preference: tuple[str, ...] = field(default=(), metadata={"repeat": True})
    base_samples: Path | None = None

    def dpo(self) -> PolicyTrainConfig:
        """The DPO recipe of every policy this run trains (a tiny one when ``quick``)."""
        recipe = {f.name: getattr(self, f.name) for f in fields(PolicyTrainConfig)}
        return PolicyTrainConfig(**{**recipe, "target_modules": self.target_modules or None,
                                    **(QUICK if self.quick else {})})


def parse_preference(text: str, objectives: list[str]) -> dict[str, float]:
    """'helpful=0.4,humor=0.6' -> {'helpful': 0.4, 'humor': 0.6}: `parse_weights`, normalised to sum to 1 and
    stricter (named objectives only, none negative, not all zero; zeros dropped).

    >>> parse_preference("helpful=1,humor=3", ["helpful", "humor"])
    {'helpful': 0.25, 'humor': 0.75}
    """
    try:
        weights = parse_weights(text, objectives) if text.strip() else {}
    except ValueError:
        weights = {}
    if not weights or any(name not in objectives or w < 0 for name, w in weights.items()):
        raise ValueError(f"--preference must look like helpful=0.4,humor=0.6 with objectives of {objectives} "
                         f"and weights >= 0; got {text!r}")
    if sum(weights.values()) <= 0:
        raise ValueError(f"--preference weights must not all be zero; got {text!r}")
    return {name: w for name, w in normalise_weights(weights).items() if w > 0}


def policy_targets(cfg: TrainPoliciesConfig, objectives: list[str]) -> dict[str, dict[str, float]]:
    """Folder name -> reward weights of every policy to train: objectives (one-hot) and exact preferences."""
    unknown = sorted(set(cfg.objectives) - set(objectives))
    if unknown:
        raise ValueError(f"objective(s) {unknown} are not in this stack; it has {objectives}")
    targets = {name: {name: 1.0} for name in cfg.objectives or ([] if cfg.preference else objectives)}
    for text in cfg.preference:
        weights = parse_preference(text, objectives)
        targets["-".join(f"{m}{w:.3g}" for m, w in weights.items())] = weights
    return targets


def train_policies(cfg: TrainPoliciesConfig) -> dict[str, dict]:
    """A DPO LoRA adapter per objective (and per preference) in ``cfg.out/NAME``. Returns the reports, by folder
    name."""
    stack = load_training_stack(cfg.stack, pick_device())
    targets = policy_targets(cfg, stack.objectives)
    dpo = cfg.dpo()
    prompts, eval_prompts = cfg.prompt_sets(stack)
    out = cfg.out or cfg.stack.parent / "policies"
    reports = {}
    for name, weights in targets.items():
        reports[name] = train_policy(stack, weights, prompts, eval_prompts, dpo, cfg.work,
                                     out / name, cfg.out_dtype, cfg.base_samples)
        e = reports[name]["eval"]
        print(f"[train-policies] {name}: reward base {e['base_reward']:.3f} -> policy {e['policy_reward']:.3f}, "
              f"KL {e['policy_kl']:.2f} (base {e['base_kl']:.2f}); adapter -> {out / name}", flush=True)
    return reports
