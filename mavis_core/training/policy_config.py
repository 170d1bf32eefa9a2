"""Settings of the baseline policies: `PolicyTrainConfig` (the DPO recipe of one policy) and `TrainPoliciesConfig`
(one ``train-policies`` run: which policies, from which stack and prompts, into which folders)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import DecodeConfig


@dataclass(frozen=True)
class PolicyTrainConfig:
    """Settings of the DPO baseline policies.

    Args:
        dpo_beta: β of DPO, the strength of the implicit KL penalty (larger: closer to the base).
        min_margin: pairs whose rewards differ by no more than this are dropped (ties teach nothing).
        rounds: 1 = offline DPO on base samples; more = online DPO, each round sampling from the current policy.
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
    lora_alpha: int = 16
    target_modules: tuple[str, ...] | None = ("c_attn", "c_fc")
    min_margin: float = 0.0
    rounds: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples_per_prompt < 2:
            raise ValueError(f"samples_per_prompt must be >= 2 to form pairs, got {self.samples_per_prompt}")
        if min(self.epochs, self.batch_size, self.rounds, self.lora_r) < 1 or self.dpo_beta <= 0:
            raise ValueError(f"epochs, batch_size, rounds, lora_r must be >= 1 and dpo_beta > 0, got {self}")



QUICK = {"num_prompts": 6, "samples_per_prompt": 2, "max_new_tokens": 12, "epochs": 1, "batch_size": 4}
QUICK_EVAL_PROMPTS = 3
_DPO = PolicyTrainConfig()


@dataclass(frozen=True)
class TrainPoliciesConfig:
    """What one ``train-policies`` run trains, field for field its command-line options (`config_argv`).

    Args:
        stack: stack TOML naming the base, tokenizer and reward models.
        objectives: objectives to train a policy for (empty: all of them, unless ``preference`` is given).
        preference: exact preferences such as "helpful=0.4,humor=0.6", each trained for the reward Σ λ_m r_m
            (the paper's MORLHF references) into ``out/helpful0.4-humor0.6``.
        out: adapters folder, one per policy (None: STACK_DIR/policies). work: resumable scratch folder.
        base_samples: where round 0's base replies are kept and shared between runs (None: ``work``).
        prompts / eval_prompts: prompt files (None: chitchat train-split openers / the stack's held-out prompts);
            the first ``num_eval_prompts`` held-out prompts evaluate each policy.
        target_modules: LoRA targets (GPT-2: c_attn, c_fc; Llama: e.g. q_proj, v_proj); empty: peft's default.
        out_dtype: dtype of the saved adapters. quick: tiny data, a smoke test in seconds.
        The other fields are `PolicyTrainConfig`'s; the LoRA alpha is twice the rank.
    """

    stack: Path = Path("assets/stack.toml")
    objectives: tuple[str, ...] = ()
    preference: tuple[str, ...] = field(default=(), metadata={"repeat": True})
    out: Path | None = None
    work: Path = Path("build/policies")
    base_samples: Path | None = None
    prompts: Path | None = None
    num_prompts: int = _DPO.num_prompts
    eval_prompts: Path | None = None
    num_eval_prompts: int = 32
    samples_per_prompt: int = _DPO.samples_per_prompt
    dpo_beta: float = _DPO.dpo_beta
    rounds: int = _DPO.rounds
    epochs: int = _DPO.epochs
    lr: float = _DPO.lr
    lora_r: int = _DPO.lora_r
    target_modules: tuple[str, ...] = _DPO.target_modules
    max_new_tokens: int = _DPO.max_new_tokens
    out_dtype: str = "float32"
    seed: int = _DPO.seed
    quick: bool = False

    def dpo(self) -> PolicyTrainConfig:
        """The DPO settings of every policy this run trains."""
        cfg = dict(num_prompts=self.num_prompts, samples_per_prompt=self.samples_per_prompt, dpo_beta=self.dpo_beta,
                   rounds=self.rounds, epochs=self.epochs, lr=self.lr, lora_r=self.lora_r, lora_alpha=2 * self.lora_r,
                   target_modules=self.target_modules or None, max_new_tokens=self.max_new_tokens, seed=self.seed)
        return PolicyTrainConfig(**{**cfg, **(QUICK if self.quick else {})})


def parse_preference(text: str, objectives: list[str]) -> dict[str, float]:
    """'helpful=0.4,humor=0.6' -> {'helpful': 0.4, 'humor': 0.6}, normalised to sum to 1.

    >>> parse_preference("helpful=1,humor=3", ["helpful", "humor"])
    {'helpful': 0.25, 'humor': 0.75}
    """
    weights = {}
    for part in text.split(","):
        name, sep, value = (x.strip() for x in part.partition("="))
        try:
            weights[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or name not in objectives or weights[name] < 0:
            raise ValueError(f"--preference must look like helpful=0.4,humor=0.6 with objectives of {objectives} "
                             f"and weights >= 0; got {text!r}")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"--preference weights must not all be zero; got {text!r}")
    return {name: w / total for name, w in weights.items() if w > 0}


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
