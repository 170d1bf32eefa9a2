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
- ``values``: `train_values` with VALUES (trunk value models, iteration 0) -> ``values/fused``.
- ``values-iter1``: `train_values` with VALUES_ITER1 started from ``values/fused`` (iteration 1, on trees
  rolled out by MAVIS guided by iteration 0) -> ``values/fused-iter1``, which ``stack-iter1.toml`` names; then
  `value_report` of it against iteration 0 on the same rows, written into its card.
- ``policies``: `train_policies` with POLICIES (a LoRA DPO policy per objective) -> ``policies/``.
- ``references``: `train_policies` with REFERENCES (helpful–humor MORLHF policies) -> ``references/``.
- ``conditioned``: `train_conditioned` with CONDITIONED (one LoRA policy conditioned on λ) -> ``conditioned/``; also
  the last of TINY_STEPS (TINY_CONDITIONED; a fresh ``--quick`` folder trains on the tiny stack).
- ``report``: `value_report` with REPORT on every held-out prompt × 4 seeds, written into the values' card.

The settings (VALUES, POLICIES, … in `mavis_core.training.build_default`) are the config dataclasses of the
``train-values`` / ``train-policies`` / ``value-report`` commands, called as functions, never through the CLI; the
manifest records the command line that rebuilds each step, derived from its config (`mavis_core.options`).

``--quick`` builds tiny versions of everything in seconds (for tests), never the shipped assets.
"""

from __future__ import annotations

from .build_default import (
    build_conditioned,
    build_wheel_base,
    build_wheel_policies,
    build_wheel_references,
    build_wheel_report,
    build_wheel_values,
    build_wheel_values_iter1,
)
from .build_steps import BuildConfig, build_base, build_data, build_rewards_step, build_tokenizer, wheel_stack
from .manifest import write_model_card

STEPS = TINY_STEPS = ("data", "tokenizer", "base", "rewards", "conditioned")
WHEEL_STEPS = ("base", "data", "rewards", "values", "values-iter1", "policies", "references", "conditioned", "report")


def parse_steps(steps: str, allowed: tuple[str, ...] = TINY_STEPS) -> list[str]:
    """``"all"`` or a comma-separated subset of ``allowed`` -> the steps to run, in pipeline order."""
    wanted = set(allowed) if steps == "all" else {s.strip() for s in steps.split(",") if s.strip()}
    unknown = sorted(wanted - set(allowed))
    if unknown or not wanted:
        raise ValueError(f"--steps {steps!r} names unknown step(s) {unknown}; allowed: {', '.join(allowed)} or all")
    return [s for s in allowed if s in wanted]


def build_assets(cfg: BuildConfig) -> None:
    """Run the requested build steps in order; the model card is regenerated after each."""
    if not cfg.quick and wheel_stack(cfg.out) is not None:
        builders = {"base": build_wheel_base, "data": build_data, "rewards": build_rewards_step,
                    "values": build_wheel_values, "values-iter1": build_wheel_values_iter1,
                    "policies": build_wheel_policies, "references": build_wheel_references,
                    "conditioned": build_conditioned, "report": build_wheel_report}
        steps = parse_steps(cfg.steps, WHEEL_STEPS)
    else:
        builders = {"data": build_data, "tokenizer": build_tokenizer, "base": build_base,
                    "rewards": build_rewards_step, "conditioned": build_conditioned}
        steps = parse_steps(cfg.steps)
    for step in steps:
        print(f"[build] {step} -> {cfg.out}", flush=True)
        builders[step](cfg)
        write_model_card(cfg.out)
