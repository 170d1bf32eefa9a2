"""Run every experiment and write the page (`run_results`), or re-render it from an earlier run's tables."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import pandas as pd

from ..config import METHODS
from ..evaluation import KIND_SEP
from ..experiments import (
    Prompts,
    ResultsConfig,
    page_methods,
    run_agreement,
    run_betas,
    run_next_iteration,
    run_pairs,
    run_references,
    run_searches,
    run_simplex,
    run_strengths,
    run_top_ks,
)
from ..prompts import KINDS
from ..stack import Stack
from .ablations import beta_section, search_section, top_k_section
from .baselines import conditioned_part, kinds_part, prompted_part
from .fronts import matched_section, pairs_section, simplex_section
from .kinds import kinds_of, kinds_section
from .models import agreement_section, iteration_section, references_section
from .report import Report
from .verdicts import summary, verdicts


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"




RUN_RECORD = "run.json"  # beside the tables: what made them (command, commit, settings, timings), for --from-tables
RAW_TABLES = {"pairs": "pairs.csv", "matched KL": "matched.csv", "simplex": "simplex.csv", "beta": "beta.csv",
              "top-k": "top_k.csv", "search": "search.csv", "value models": "value_agreement.csv",
              "references": "references.csv", "next iteration": "next_iteration.csv"}  # as each section writes it
OPTIONAL_TABLES = {"references", "next iteration"}  # sections a stack or a run may not have: no table, no section
SECTION_OPTIONS = {name.lower().replace(" ", "-"): name for name in RAW_TABLES}  # --remeasure's spelling of each
# what --remeasure may take from its own command line: every other setting is the recorded run's
REMEASURE_OWN = ("next_iteration", "images")
PARTIAL_RECORD = "run.partial.json"  # an interrupted run: its record and finished sections, for --resume


def _record_run(data: Path, record: dict) -> None:
    (data / RUN_RECORD).write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def read_run(data: Path) -> tuple[dict, ResultsConfig, dict[str, pd.DataFrame]]:
    """An earlier run's record, settings and measured tables, from ``data`` (what `run_results` wrote there)."""
    path = data / RUN_RECORD
    if not path.exists():
        raise ValueError(f"{path} not found: --from-tables re-renders the tables of an earlier run of `results` "
                         f"with this version (one that records {RUN_RECORD}); rerun `results` without it first")
    record = json.loads(path.read_text(encoding="utf-8"))
    known = {f.name for f in dataclasses.fields(ResultsConfig)}
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in record["settings"].items() if k in known}
    tables = {name: _read_table(data, name, path, bool(settings.get("next_iteration"))) for name in RAW_TABLES}
    return record, ResultsConfig(**settings), tables


def _read_table(data: Path, name: str, record: Path, next_iteration: bool) -> pd.DataFrame:
    """Section ``name``'s measured table as the run recorded in ``record`` wrote it to ``data``."""
    file = data / RAW_TABLES[name]
    if name == "next iteration" and not next_iteration:  # a leftover from another run
        return pd.DataFrame()
    if not file.exists() and name in OPTIONAL_TABLES:
        return pd.DataFrame()
    if not file.exists():
        raise ValueError(f"{file} not found: the run recorded in {record} wrote every section's table there")
    return pd.read_csv(file).drop(columns=["series"], errors="ignore")  # series: search's own


def _settings(rc: ResultsConfig) -> dict:
    """``rc`` as run.json records it (tuples as lists), to compare with a recorded run's settings."""
    return json.loads(json.dumps(dataclasses.asdict(rc)))


def _unfinished_run(data: Path, stack_path: str, rc: ResultsConfig) -> tuple[dict, dict[str, pd.DataFrame]]:
    """The record of the interrupted run in ``data`` that --resume goes on from, and its finished sections' tables;
    a clear error when there is none or it measured another stack or other settings."""
    path = data / PARTIAL_RECORD
    if not path.exists():
        raise ValueError(f"--resume: {path} not found: no interrupted run of `results` in {data} to go on from "
                         "(run without --resume to start one)")
    partial = json.loads(path.read_text(encoding="utf-8"))
    differ = sorted(k for k, v in _settings(rc).items() if partial["settings"].get(k) != v)
    if partial["stack"] != str(stack_path) or differ:
        what = ", ".join(differ) or f"stack {partial['stack']}"
        raise ValueError(f"--resume goes on with the interrupted run's stack and settings ({path}); these differ: "
                         f"{what}. Give the same options, or run without --resume to start again")
    return partial, {name: _read_table(data, name, path, bool(rc.next_iteration)) for name in partial["done"]}


def _stack_and_prompts(stack_path: str, rc: ResultsConfig) -> tuple[Stack, ResultsConfig, Prompts]:
    """The stack, ``rc`` with its β filled in, and the held-out prompts (tagged with their kinds where the
    held-out file tags them); a clear error for a stack results can't measure."""
    from ..prompts import heldout_prompt_set
    from ..stack import load_stack

    stack = load_stack(stack_path)
    prompts = heldout_prompt_set(stack_path, stack.spec.prompts)
    if not prompts:
        raise ValueError(f"stack {stack_path} has no held-out prompts (no 'prompts' and no eval_prompts.json)")
    missing = {"mavis", "mod"} - set(stack.methods)
    if missing:
        raise ValueError(f"results compare MAVIS with the fine-tuned policies; this stack lacks {sorted(missing)}")
    return stack, rc.for_stack(stack), prompts


def _machine(stack: Stack) -> str:
    import torch

    dtype = str(stack.dtype).removeprefix("torch.")
    return (f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, device {stack.device}, {dtype} weights")


def _prompt_source(stack: Stack, pairs: pd.DataFrame | None, prompts: Prompts, seeds: int) -> str:
    """Where the page's prompts come from and, where they carry kinds, how many of each: counted from the
    prompts, or for a re-render from section 1's table (the held-out file may have changed since the run)."""
    if pairs is not None:
        base = pairs[pairs.method == "base"].iloc[0]
        counts = {k: int(base[f"n{KIND_SEP}{k}"]) // seeds for k in kinds_of(pairs)}
    else:
        counts = {k: n for k in KINDS if (n := sum(p.kind == k for p in prompts))}
    if counts:
        return "`eval_prompts.json`: " + ", ".join(f"{n} {k}" for k, n in counts.items())
    return "`eval_prompts.json`, chitchat test split" if stack.spec.name == "embedded" else \
        "the stack's held-out prompts"


def _made_by(made: dict, run: dict) -> str:
    """The command, commit, date (and machine, where it differs from ``run``'s) that measured part of a page."""
    where = "" if made["machine"] == run["machine"] else f", on {made['machine']}"
    return f"`{made['command']}` (commit {made['commit']}, {made['date']}{where})"


def _header(run: dict, rerun_by: str | None, stack: Stack, rc: ResultsConfig, prompts: int, search_prompts: int,
            data: Path, source: str, methods: list[str]) -> list[str]:
    """The page's title and what made it: command, commit, stack, methods measured, prompts (from ``source``),
    decoding settings, machine."""
    embedded = stack.spec.name == "embedded"
    return ["# Results on the embedded stack" if embedded else f"# Results on the `{stack.spec.name}` stack", "",
            f"Generated by `{run['command']}` (commit {run['commit']}, {run['date']})"
            + "".join(f"; its {name} section measured again by {_made_by(r, run)}"
                      for name, r in run.get("remeasured", {}).items())
            + "".join(f"; resumed after an interruption by {_made_by(r, run)}" for r in run.get("resumed", []))
            + (f"; text re-rendered from its tables by `{rerun_by}` (commit {_git_commit()}, "
               f"{time.strftime('%Y-%m-%d')})" if rerun_by else "")
            + ". Do not edit by hand: rerun the command. Tables as CSV and interactive charts (HTML) are in "
            f"`{data.as_posix()}/`.", "",
            f"- Stack: `{run['stack']}` (objectives {', '.join(stack.objectives)}; methods "
            f"{', '.join(methods)}).",
            f"- Prompts: the first {prompts} held-out prompts ({source}) × seeds 0–{rc.seeds - 1}; "
            f"search: the first {search_prompts} × seeds "
            f"0–{rc.search_seeds - 1}.",
            f"- Decoding: top-k {rc.top_k}, temperature 1, at most {rc.max_new_tokens} new tokens, MAVIS β = "
            f"{rc.beta:g} unless a section varies it. Rewards are the stack's reward models' raw scores "
            "(scales differ between objectives). KL is Σ log π/π_ref over a reply, as the decoding core reports "
            "it.",
            f"- Machine: {run['machine']}.", ""]


def _pairs(report: Report, df: pd.DataFrame, stack: Stack, p: Prompts, rc: ResultsConfig) -> None:
    """Section 1, after the same sweep per prompt kind and its refusal rates (the page's first section)."""
    kinds_section(report, df, list(stack.objectives))
    pairs_section(report, df, stack, p, rc)


def _matched(report: Report, df: pd.DataFrame, stack: Stack, rc: ResultsConfig) -> None:
    """Section 2: MOD and RSoup at matched KL, then Prompted at its own KL and the conditioned policy."""
    matched_section(report, df, stack, rc)
    prompted_part(report, df, list(stack.objectives), rc.beta)
    conditioned_part(report, df, list(stack.objectives), rc.beta, "conditioned" in stack.methods)
    kinds_part(report, df, list(stack.objectives), rc.beta)


def _sections(report: Report, stack: Stack, rc: ResultsConfig, p: Prompts, sp: Prompts,
              tables: dict[str, pd.DataFrame] | None, remeasure: tuple[str, ...] = (),
              partial: dict | None = None) -> dict[str, float]:
    """Measure (or, given ``tables``, re-read all but the ``remeasure`` sections) and write every section in page
    order; returns each one's seconds. With ``partial`` (a run's record), each section measured is recorded in
    `PARTIAL_RECORD` as it ends, so an interrupted run can go on with --resume."""
    timings = {}
    for name, measure, write in (
            ("pairs", lambda: run_pairs(stack, p, rc), lambda df: _pairs(report, df, stack, p, rc)),
            ("matched KL", lambda: run_strengths(stack, p, rc, report.facts["pairs"]),
             lambda df: _matched(report, df, stack, rc)),
            ("simplex", lambda: run_simplex(stack, p, rc), lambda df: simplex_section(report, df, stack)),
            ("beta", lambda: run_betas(stack, p, rc), lambda df: beta_section(report, df, stack, rc)),
            ("top-k", lambda: run_top_ks(stack, p, rc), lambda df: top_k_section(report, df, stack, p, rc)),
            ("search", lambda: run_searches(stack, sp, rc), lambda df: search_section(report, df, stack, sp, rc)),
            ("value models", lambda: run_agreement(stack, p, rc), lambda df: agreement_section(report, df, p, rc)),
            ("references", lambda: run_references(stack, p, rc, report.facts["pairs"]),
             lambda df: references_section(report, df, stack, rc)),
            ("next iteration", lambda: run_next_iteration(stack, p, rc),
             lambda df: iteration_section(report, df, stack, rc))):
        t0 = time.perf_counter()
        df = tables[name] if tables is not None and name not in remeasure else measure()
        if name in OPTIONAL_TABLES and not len(df):  # not measured: no earlier run's table may stand for it
            (report.data / RAW_TABLES[name]).unlink(missing_ok=True)
        write(df)
        timings[name] = time.perf_counter() - t0
        print(f"[results] {name}: {timings[name]:.0f} s", flush=True)
        if partial is not None and name not in partial["done"]:
            partial["done"].append(name)
            partial["timings"][name] = timings[name]
            (report.data / PARTIAL_RECORD).write_text(json.dumps(partial, indent=1, ensure_ascii=False) + "\n",
                                                      encoding="utf-8")
    return timings


def _earlier_run(data: Path, rc: ResultsConfig, remeasure: tuple[str, ...]) -> tuple[dict, str, ResultsConfig,
                                                                                   dict[str, pd.DataFrame]]:
    """The record, stack, settings and tables of the run in ``data`` that --from-tables or --remeasure goes on
    from; ``rc`` gives only what those may change (`REMEASURE_OWN`)."""
    unknown = [name for name in remeasure if name not in RAW_TABLES]
    if unknown:
        raise ValueError(f"--remeasure {', '.join(unknown)}: no such section; sections: {', '.join(SECTION_OPTIONS)}")
    own = {name: getattr(rc, name) for name in REMEASURE_OWN}
    if remeasure and dataclasses.replace(rc, **{n: getattr(ResultsConfig(), n) for n in own}) != ResultsConfig():
        raise ValueError("--remeasure measures with the recorded run's settings (run.json in --data); of the others "
                         "only --next-iteration and --no-images may be given")
    record, recorded, tables = read_run(data)
    own["next_iteration"] = own["next_iteration"] if remeasure else None
    return record, record["stack"], dataclasses.replace(
        recorded, **{k: v for k, v in own.items() if v is not None}), tables


def _remeasured(run: dict, remeasure: tuple[str, ...], command: str, stack: Stack) -> dict:
    """``run``'s record with the command, commit, date and machine that measured the ``remeasure`` sections."""
    made = {"command": command, "commit": _git_commit(), "date": time.strftime("%Y-%m-%d"), "machine": _machine(stack)}
    return {**run, "remeasured": {**run.get("remeasured", {}), **dict.fromkeys(remeasure, made)}}


def _cost(record: dict | None, measured: dict[str, float], remeasure: tuple[str, ...],
          start: float) -> tuple[dict[str, float], float]:
    """Each section's seconds and the page's: this run's, or an earlier run's with the remeasured sections' new."""
    if not record:
        return measured, time.perf_counter() - start
    timings = {**record["timings"], **{name: measured[name] for name in remeasure}}
    return timings, record["total_s"] + sum(timings.values()) - sum(record["timings"].values())


def _measuring_run(data: Path, stack_path: str, rc: ResultsConfig, stack: Stack, command: str,
                   resume: bool) -> tuple[dict, dict[str, pd.DataFrame]]:
    """The record a measuring run keeps in `PARTIAL_RECORD` as its sections end (with ``resume``, the interrupted
    run's, saying who went on with it), and the tables of the sections already finished."""
    made = {"command": command, "commit": _git_commit(), "date": time.strftime("%Y-%m-%d"), "machine": _machine(stack)}
    if resume:
        partial, done = _unfinished_run(data, stack_path, rc)
        return {**partial, "resumed": [*partial.get("resumed", []), made]}, done
    (data / PARTIAL_RECORD).unlink(missing_ok=True)
    return {**made, "stack": str(stack_path), "settings": _settings(rc), "done": [], "timings": {}}, {}


def _page(report: Report, run: dict, stack: Stack, rc: ResultsConfig, prompts: Prompts, rerun_by: str | None,
          tables: dict[str, pd.DataFrame] | None, remeasure: tuple[str, ...], partial: dict | None) -> dict[str, float]:
    """Header, sections in page order, verdicts and summary into ``report``; each section's seconds."""
    main_prompts, search_prompts = prompts[:rc.prompts or None], prompts[:rc.search_prompts]
    recorded = tables if partial is None else None  # a re-render's or remeasure's tables: the run's prompts, methods
    source = _prompt_source(stack, recorded["pairs"] if recorded else None, main_prompts, rc.seeds)
    methods = [m for m in METHODS if m in set(recorded["pairs"].method)] if recorded else page_methods(stack)
    report.add(*_header(run, rerun_by, stack, rc, len(main_prompts), len(search_prompts), report.data, source,
                        methods))
    head = len(report.lines)
    measured = _sections(report, stack, rc, main_prompts, search_prompts, tables, remeasure, partial)
    report.lines[head:head] = verdicts(report.facts)
    report.add(*summary(report.facts, stack.objectives))
    return measured


def run_results(stack_path: str, out: Path, data: Path, rc: ResultsConfig, command: str,
                from_tables: bool = False, remeasure: tuple[str, ...] = (), resume: bool = False) -> Path:
    """Run every experiment and write ``out`` (markdown), ``out.parent/results/*.png`` and ``data/*.csv``.

    ``from_tables``: decode nothing; re-render the page (every table, figure and sentence) from the tables and
    record an earlier run left in ``data``, with this version's text. Its stack and settings are the run's.
    ``remeasure``: section names (`RAW_TABLES`' keys) to decode again with the earlier run's stack and settings
    (but for `REMEASURE_OWN`), the others re-read from its tables; run.json then says what measured them.
    ``resume``: go on with the interrupted run in ``data`` (same stack and settings): its finished sections are
    re-read from their tables, the others measured.
    """
    start = time.perf_counter()
    record, tables, partial = None, None, None
    if rc.next_iteration and not from_tables and not Path(rc.next_iteration).is_dir():
        raise ValueError(f"--next-iteration {rc.next_iteration}: no such value model folder")
    if from_tables or remeasure:
        record, stack_path, rc, tables = _earlier_run(data, rc, remeasure)
    stack, rc, prompts = _stack_and_prompts(stack_path, rc)
    data.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    if record:
        run = _remeasured(record, remeasure, command, stack) if remeasure else record
    else:
        partial, tables = _measuring_run(data, stack_path, rc, stack, command, resume)
        remeasure = tuple(name for name in RAW_TABLES if name not in tables)
        run = {k: v for k, v in partial.items() if k not in ("settings", "done", "timings")}
        before = sum(partial["timings"].values())  # the interrupted run's seconds on the sections it finished
    report = Report(out, data)
    measured = _page(report, run, stack, rc, prompts, command if from_tables else None, tables, remeasure, partial)
    timings, total = _cost(record, measured, remeasure, start)
    if partial is not None:
        timings, total = {name: partial["timings"][name] for name in measured}, total + before
    report.add("## Cost of this page", "", "Wall time of each section on the machine above: "
               + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items()) + f"; {total / 60:.1f} min in all.", "")
    report.write(rc.images)
    if not from_tables:
        _record_run(data, {**run, "settings": dataclasses.asdict(rc), "timings": timings, "total_s": total})
        (data / PARTIAL_RECORD).unlink(missing_ok=True)
    return out
