"""One LoRA policy conditioned on the weights λ (MOODPO-style online DPO): the ``train-conditioned`` command.

Each round draws λ for every training prompt on the simplex (a share of corners, each objective alone, the rest
Dirichlet; seeded), writes λ into the prompt's system prompt in words (`dialogue.weights_prompt`, the context the
"conditioned" method decodes from) and pairs the best with the worst of the prompt's replies by the weighted reward
Σ_m λ_m r_m. Round 0 weighs the base's shared replies (`policies.base_samples`: their stored per-objective rewards
let any λ be weighed without rescoring); every later round samples from the current conditioned policy on the
conditioned prompt (online). DPO is the per-objective policies' recipe (`dpo.train_dpo`, the base as the
reference, the same β), so the implicit KL penalty stays comparable with theirs and MAVIS's.

The adapter is saved as a plain peft folder (adapter ``conditioned``), which a stack names with
``[conditioned] policy = "FOLDER"``. Rounds (their λ, samples, adapter and stats) are kept in ``work`` and skipped
when present, so rerunning resumes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..config import DecodeConfig
from ..decoding import Decode
from ..dialogue import weights_prompt
from ..stack import CONDITIONED, Stack, pick_device
from .dpo import Pair, save_adapter, train_rounds
from .policies import (
    SAMPLE_ROWS,
    PolicyTrainConfig,
    TrainPoliciesConfig,
    base_samples,
    make_pairs,
    make_policy,
    policy_in_stack,
)
from .runs import TrainRunConfig
from .value_training import load_training_stack


@dataclass(frozen=True)
class ConditionedTrainConfig(TrainRunConfig, PolicyTrainConfig):
    """What one ``train-conditioned`` run trains, field for field its command-line options.

    Args:
        weights_per_prompt: λ drawn per training prompt and round (each one preference pair at most).
        dirichlet_alpha: concentration of the Dirichlet that λ is drawn from (1: uniform on the simplex).
        corner_share: share of the λ draws that are corners (one objective alone), so each objective's own
            preference is trained as MOD's and RSoup's policies are.
        rounds: 1 = offline DPO on the base's replies; more = online rounds sampled from the conditioned policy.
        base_samples: where round 0's base replies are kept and shared with ``train-policies`` (None: ``work``).
        The others are `TrainRunConfig`'s (stack, prompts, folders, seed, quick) and `PolicyTrainConfig`'s (the DPO
        recipe of the per-objective policies; an empty ``target_modules``: peft's default).
    """

    work: Path = Path("build/conditioned")
    out_dtype: str = "float32"
    rounds: int = 2
    weights_per_prompt: int = 2
    dirichlet_alpha: float = 1.0
    corner_share: float = 0.25
    base_samples: Path | None = None

    def __post_init__(self) -> None:
        PolicyTrainConfig.__post_init__(self)
        if self.weights_per_prompt < 1 or self.dirichlet_alpha <= 0 or not 0 <= self.corner_share <= 1:
            raise ValueError(f"weights_per_prompt must be >= 1, dirichlet_alpha > 0 and corner_share in [0, 1]; got "
                             f"{self.weights_per_prompt}, {self.dirichlet_alpha}, {self.corner_share}")

    dpo = TrainPoliciesConfig.dpo  # the per-objective policies' recipe from these fields (a tiny one when quick)


def draw_weights(n: int, objectives: int, seed: int, alpha: float = 1.0,
                 corner_share: float = 0.25) -> list[tuple[float, ...]]:
    """``n`` weights λ on the simplex in whole percents (the system prompt states them so): ⌈corner_share·n⌉
    corners, each objective alone in turn, the others Dirichlet(α), in a seeded random order.

    >>> lams = draw_weights(8, 3, seed=0, corner_share=0.5)
    >>> all(abs(sum(lam) - 1) < 1e-9 for lam in lams), sum(max(lam) == 1 for lam in lams) >= 4
    (True, True)
    """
    rng = np.random.default_rng(seed)
    corners = int(np.ceil(corner_share * n))
    draws = [np.eye(objectives)[i % objectives] for i in range(corners)]
    draws += list(rng.dirichlet([alpha] * objectives, size=n - corners))
    out = []
    for lam in (draws[i] for i in rng.permutation(n)):
        cents = np.floor(100 * lam).astype(int)
        cents[np.argmax(100 * lam - cents)] += 100 - cents.sum()  # what flooring lost goes to the weight it cut most
        out.append(tuple(float(c) / 100 for c in cents))
    return out


def round_weights(cfg: ConditionedTrainConfig, objectives: list[str], n_prompts: int,
                  round_: int) -> list[dict[str, float]]:
    """Round ``round_``'s λ, ``weights_per_prompt`` per prompt (prompt-major), as objective -> λ dicts."""
    seed = cfg.seed * 1_000_003 + round_
    lams = draw_weights(n_prompts * cfg.weights_per_prompt, len(objectives), seed, cfg.dirichlet_alpha,
                        cfg.corner_share)
    return [dict(zip(objectives, lam, strict=True)) for lam in lams]


def _decode(stack: Stack, jobs: list[tuple[str, DecodeConfig, int]], desc: str) -> list:
    """Every (prompt, settings, seed) job's reply, decoded as batches of lanes (`Decode`)."""
    gens = []
    for start in tqdm(range(0, len(jobs), SAMPLE_ROWS), desc=desc):
        run = Decode(stack, *map(list, zip(*jobs[start : start + SAMPLE_ROWS], strict=True)))
        for _ in run:
            pass
        gens += run.generations
    return gens


def _settings(cfg: PolicyTrainConfig, method: str, lam: dict[str, float]) -> DecodeConfig:
    return DecodeConfig(method=method, weights=lam, top_k=cfg.top_k, temperature=cfg.temperature,
                        max_new_tokens=cfg.max_new_tokens)


def sample_conditioned(stack: Stack, model, prompts: list[str], lams: list[dict[str, float]],
                       cfg: PolicyTrainConfig, round_: int) -> list[list[dict]]:
    """``samples_per_prompt`` replies to each (prompt, λ) from the conditioned policy ``model`` on the conditioned
    prompt (online), scored by every objective. Returns one group per (prompt, λ), each a list of dicts: prompt,
    text, finish_reason, rewards (objective -> reward)."""
    k = cfg.samples_per_prompt
    jobs = [(p, _settings(cfg, CONDITIONED, lam), cfg.seed * 1_000_003 + round_ * 100_003 + k * i + j)
            for i, (p, lam) in enumerate(zip(prompts, lams, strict=True)) for j in range(k)]
    with policy_in_stack(stack, model):
        gens = _decode(stack, jobs, f"conditioned samples (round {round_})")
    each = {m: r.tolist() for m, r in stack.score([p for p, _, _ in jobs], [g.text for g in gens]).items()}
    samples = [{"prompt": p, "text": g.text, "finish_reason": g.finish_reason,
                "rewards": {m: each[m][n] for m in stack.objectives}}
               for n, ((p, _, _), g) in enumerate(zip(jobs, gens, strict=True))]
    return [samples[n : n + k] for n in range(0, len(samples), k)]


def base_groups(stack: Stack, prompts: list[str], cfg: PolicyTrainConfig, shared: Path) -> list[list[dict]]:
    """Round 0: the base's shared replies to each prompt (`base_samples`, sampled once per folder for every policy),
    with every objective's stored reward. One group per prompt, as `sample_conditioned`'s."""
    per = {m: base_samples(stack, {m: 1.0}, prompts, cfg, shared) for m in stack.objectives}
    first = per[stack.objectives[0]]
    samples = [{"prompt": s["prompt"], "text": s["text"], "finish_reason": s["finish_reason"],
                "rewards": {m: per[m][n]["reward"] for m in stack.objectives}} for n, s in enumerate(first)]
    k = cfg.samples_per_prompt
    return [samples[n : n + k] for n in range(0, len(samples), k)]


def conditioned_pairs(stack: Stack, groups: list[list[dict]], lams: list[dict[str, float]],
                      min_margin: float) -> list[Pair]:
    """Best vs worst reply of each group by Σ_m λ_m r_m (its own λ), the prompt rendered with λ in its system prompt
    (`weights_prompt`), as the conditioned method decodes it; groups whose weighted rewards tie give none."""
    pairs = []
    for group, lam in zip(groups, lams, strict=True):
        weighed = [{**s, "reward": sum(w * s["rewards"][m] for m, w in lam.items())} for s in group]
        for pair in make_pairs(stack, weighed, len(group), min_margin):
            room = stack.context_length - max(len(pair.chosen_ids), len(pair.rejected_ids))
            prompt = stack.format.encode(group[0]["prompt"], weights_prompt(lam))[-room:]
            pairs.append(Pair(prompt, pair.chosen_ids, pair.rejected_ids))
    return pairs


def _round_groups(stack: Stack, model, prompts: list[str], lams: list[dict[str, float]],
                  cfg: ConditionedTrainConfig, round_: int, folder: Path) -> list[list[dict]]:
    """One round's groups, one per (prompt, λ): round 0's from the shared base replies, later rounds' sampled from
    the conditioned policy and kept in ``folder/round{r}-samples.json``."""
    if round_ == 0:
        groups = base_groups(stack, prompts, cfg.dpo(), cfg.base_samples or cfg.work)
        return [g for g in groups for _ in range(cfg.weights_per_prompt)]
    path = folder / f"round{round_}-samples.json"
    if not path.exists():
        rows = [p for p in prompts for _ in range(cfg.weights_per_prompt)]
        path.write_text(json.dumps(sample_conditioned(stack, model, rows, lams, cfg.dpo(), round_)))
    return json.loads(path.read_text())


EVAL_EQUAL = "equal"  # the report's name of equal weights


def eval_weights(objectives: list[str]) -> dict[str, dict[str, float]]:
    """The λ a conditioned policy is evaluated at: each objective alone, and equal weights (in whole percents).

    >>> eval_weights(["helpful", "humor"])["equal"]
    {'helpful': 0.5, 'humor': 0.5}
    """
    out = {m: {o: float(o == m) for o in objectives} for m in objectives}
    cents = [100 // len(objectives) + (i < 100 % len(objectives)) for i in range(len(objectives))]
    out[EVAL_EQUAL] = {o: c / 100 for o, c in zip(objectives, cents, strict=True)}
    return out


def evaluate_conditioned(stack: Stack, model, prompts: list[str], cfg: PolicyTrainConfig) -> dict:
    """Each objective's mean reward, the weighted reward and the mean sequence KL to π_ref on the plain prompt, on
    held-out prompts with the same seeds: the base once, Prompted and the conditioned policy at each λ of
    `eval_weights`. Keys ``base_KEY`` and ``NAME_METHOD_KEY`` (NAME an objective or "equal")."""
    seeds = [cfg.seed + i for i in range(len(prompts))]
    points = eval_weights(stack.objectives)
    runs = {"base": ("base", points[EVAL_EQUAL])}
    runs.update({f"{name}_{method}": (method, lam) for name, lam in points.items()
                 for method in ("prompted", CONDITIONED)})
    jobs = [(p, _settings(cfg, method, lam), s) for method, lam in runs.values() for p, s in zip(prompts, seeds,
                                                                                               strict=True)]
    with policy_in_stack(stack, model):
        gens = _decode(stack, jobs, "held-out replies")
    out = {}
    for n, (tag, (_, lam)) in enumerate(runs.items()):
        part = gens[n * len(prompts) : (n + 1) * len(prompts)]
        each = stack.score(prompts, [g.text for g in part])
        out.update({f"{tag}_{m}": float(r.mean()) for m, r in each.items()})
        out[f"{tag}_reward"] = float(sum(w * each[m] for m, w in lam.items()).mean())
        out[f"{tag}_kl"] = sum(g.kl for g in part) / len(part)
    return out


def train_conditioned_policy(stack: Stack, prompts: list[str], eval_prompts: list[str],
                             cfg: ConditionedTrainConfig, out: Path) -> dict:
    """Train (or resume) the λ-conditioned LoRA policy into ``out``; returns its report (each round's DPO stats and
    the held-out evaluation). Skipped when ``work/NAME/report.json`` and the adapter exist; finished rounds are
    not redone."""
    folder = cfg.work / out.name
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "report.json").exists() and (out / "adapter_config.json").exists():
        return json.loads((folder / "report.json").read_text())
    dpo = cfg.dpo()
    model = make_policy(stack, CONDITIONED, dpo)

    def pairs_of(r: int) -> list[Pair]:
        lams = round_weights(cfg, stack.objectives, len(prompts), r)
        pairs = conditioned_pairs(stack, _round_groups(stack, model, prompts, lams, cfg, r, folder), lams,
                                  dpo.min_margin)
        if not pairs:
            raise ValueError(f"no preference pairs in round {r}: every (prompt, λ)'s samples tie on weighted reward")
        return pairs

    rounds = train_rounds(model, CONDITIONED, folder, pairs_of, dpo, stack.tokenizer.pad_token_id)
    save_adapter(model, CONDITIONED, out, cfg.out_dtype)
    report = {"rounds": rounds, "eval": evaluate_conditioned(stack, model, eval_prompts, dpo)}
    (folder / "report.json").write_text(json.dumps(report, indent=1))
    return report


def train_conditioned(cfg: ConditionedTrainConfig) -> dict:
    """The ``train-conditioned`` command: the λ-conditioned LoRA adapter in ``cfg.out`` (None: STACK_DIR/conditioned).
    Returns its report."""
    stack = load_training_stack(cfg.stack, pick_device())
    prompts, eval_prompts = cfg.prompt_sets(stack)
    out = cfg.out or cfg.stack.parent / "conditioned"
    report = train_conditioned_policy(stack, prompts, eval_prompts, cfg, out)
    e = report["eval"]
    print(f"[train-conditioned] equal weights: reward base {e['base_reward']:.3f} -> prompted "
          f"{e['equal_prompted_reward']:.3f}, conditioned {e['equal_conditioned_reward']:.3f} (KL "
          f"{e['equal_conditioned_kl']:.2f}); adapter -> {out}", flush=True)
    return report
