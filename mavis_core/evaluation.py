"""Sweeps over λ and what they say: one tidy table per sweep, Pareto fronts, hypervolumes, weight checks.

`python -m mavis_core sweep --stack assets/stack.toml --pair helpful,harmless` runs every method over the λ grid
of `config.weight_grid`, decoding the (prompt × seed) rows of several λ points of a method as one batch, and
writes one row per (method, λ) to a CSV: the normalised weights (``w_<objective>``), mean rewards
(``r_<objective>``), mean KL to the base, mean reply length and tokens/s. ``--search sample,best_of_n,beam`` adds
test-time search as another axis: each search is a *series* of its own (``mavis``, ``mavis best-of-4``,
``mavis beam-4``) with its own front.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .config import METHODS, SEARCHES, DecodeConfig, search_kind, search_label, sweep_jobs, weight_grid
from .decoding import Decode
from .pareto import hypervolume, non_dominated
from .prompts import UNTAGGED, Prompt, heldout_prompts
from .refusals import refusal_rate
from .search import search_batch
from .stack import Stack
from .sweep_plan import mean_and_se, seed_schedule

WEIGHT_PREFIX = "w_"
REWARD_PREFIX = "r_"
SE_PREFIX = "se_"
LANES_PER_BATCH = 96  # replies decoded as one batch in a sampling sweep (λ points × prompts × seeds)
REFERENCE_MARGIN = 0.1  # hypervolume reference: min over all methods minus this share of the observed range
KIND_SEP = "@"  # "r_helpful@harmful": a column measured over one prompt kind's replies only


def kind_column(column: str, kind: str) -> str:
    """The name of ``column`` measured over the replies to prompts of ``kind`` only.

    >>> kind_column("r_helpful", "harmful")
    'r_helpful@harmful'
    """
    return f"{column}{KIND_SEP}{kind}"


def table_kinds(df: pd.DataFrame) -> list[str]:
    """The prompt kinds a sweep table has columns for (`kind_column`), in the order they first appear."""
    return list(dict.fromkeys(c.split(KIND_SEP, 1)[1] for c in df.columns if KIND_SEP in c))


def kind_view(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    """``df`` as if only the prompts of ``kind`` had been swept: each ``COLUMN@kind`` in place of ``COLUMN``,
    every other kind's columns dropped, so every function that reads a sweep table reads one kind's."""
    own = {c: c.split(KIND_SEP, 1)[0] for c in df.columns if c.endswith(f"{KIND_SEP}{kind}")}
    if not own:
        raise ValueError(f"this table has no columns for prompt kind {kind!r}; it has {table_kinds(df) or 'none'}")
    plain = df[[c for c in df.columns if KIND_SEP not in c]].copy()
    for column, name in own.items():
        plain[name] = df[column]
    return plain


def _rows(prompts: list[str], seeds: list[int]) -> tuple[list[str], list[int]]:
    """Every prompt with every seed, prompt-major: row i·S + s is prompt i with seed s."""
    pairs = list(itertools.product(prompts, seeds))
    return [p for p, _ in pairs], [s for _, s in pairs]


def _searched_point(stack: Stack, prompts: list[str], seeds: list[int], cfg: DecodeConfig,
                    kind_of: dict[str, str] | None = None) -> dict[str, float]:
    """One (method, λ) cell of a search, its replies prompt-major like `_rows`. Best-of-N: one batched search per
    seed of `seed_schedule` from ``seeds[0]`` (spaced by N), so different seeds never share a candidate: the app's
    sweep uses the same schedule. Beam search has no randomness: each prompt is searched once, whatever ``seeds``
    holds."""
    start = time.perf_counter()
    if cfg.search == "beam":
        row_prompts, gens = list(prompts), [r.best for r in search_batch(stack, prompts, cfg)]
    else:
        schedule = seed_schedule(seeds[0], len(seeds), cfg.search, cfg.num_candidates)
        per_seed = [search_batch(stack, prompts, dataclasses.replace(cfg, seed=s)) for s in schedule]
        row_prompts = _rows(prompts, seeds)[0]
        gens = [per_seed[j][i].best for i in range(len(prompts)) for j in range(len(seeds))]
    # generation and the search's own scoring of its candidates only: scoring the winners is the evaluator's cost
    seconds = time.perf_counter() - start
    tokens = sum(len(g.events) for g in gens)
    return _summary(stack, row_prompts, gens, seconds, tokens / seconds if seconds > 0 else float("nan"), kind_of)


def _means(scores: dict[str, np.ndarray], gens: list) -> dict[str, float]:
    """Mean rewards, their standard errors, KL, length, refusal share and count of some replies."""
    means, errors = mean_and_se(scores)
    out = {f"{REWARD_PREFIX}{name}": value for name, value in means.items()}
    # standard errors, so a reading of the table can tell a real gap between methods from seed noise
    out.update({f"{SE_PREFIX}{name}": value for name, value in errors.items()})
    out.update(kl=float(np.mean([g.kl for g in gens])), tokens=float(np.mean([len(g.events) for g in gens])),
               refusal=refusal_rate([g.text for g in gens]), n=len(gens))
    return out


def _summary(stack: Stack, row_prompts: list[str], gens: list, seconds: float, tokens_per_s: float,
             kind_of: dict[str, str] | None = None) -> dict:
    """A cell's table entries from its replies: mean rewards and their standard errors, KL, length, refusal
    share (`refusals.is_refusal`), cost; and the same over each prompt kind of ``kind_of`` (`kind_column`)."""
    scores = stack.score(row_prompts, [g.text for g in gens])
    scores = {name: values.detach().float().cpu().numpy() for name, values in scores.items()}  # may be on a GPU
    whole = _means(scores, gens)
    out = {k: v for k, v in whole.items() if k not in ("refusal", "n")}  # the columns' order before refusals
    out.update(tokens_per_s=tokens_per_s, seconds=seconds, seconds_per_reply=seconds / len(gens), n=whole["n"],
               refusal=whole["refusal"])
    kinds = [(kind_of or {}).get(p, UNTAGGED) for p in row_prompts]
    for kind in dict.fromkeys(kinds) if set(kinds) != {UNTAGGED} else ():
        at = [i for i, k in enumerate(kinds) if k == kind]
        part = _means({name: v[at] for name, v in scores.items()}, [gens[i] for i in at])
        out.update({kind_column(name, kind): value for name, value in part.items()})
    return out


def _sampled_points(stack: Stack, prompts: list[str], seeds: list[int], cfgs: list[DecodeConfig],
                    kind_of: dict[str, str] | None = None) -> list[dict[str, float]]:
    """Several sampling cells decoded as one batch (`Decode`): every (prompt, seed) row of every cell is a lane.

    Each reply is what the cell's own batch gives (lanes do not interact). The batch's generation time is shared
    out by replies: each cell's ``seconds`` is its share, and ``tokens_per_s`` is the whole batch's throughput."""
    row_prompts, row_seeds = _rows(prompts, seeds)
    start = time.perf_counter()
    run = Decode(stack, row_prompts * len(cfgs), [c for c in cfgs for _ in row_prompts], row_seeds * len(cfgs))
    for _ in run:
        pass
    seconds = time.perf_counter() - start
    gens, n = run.generations, len(row_prompts)
    tokens_per_s = sum(len(g.events) for g in gens) / seconds if seconds > 0 else float("nan")
    return [_summary(stack, row_prompts, gens[j * n:(j + 1) * n], seconds * n / len(gens), tokens_per_s, kind_of)
            for j in range(len(cfgs))]


def _settings(cfg: DecodeConfig) -> dict[str, float | str]:
    """The decoding settings a row was made with, so tables from β, top-k or search sweeps simply concatenate."""
    return {"beta": cfg.beta, "strength": cfg.strength, "top_k": cfg.top_k, "temperature": cfg.temperature,
            "max_new_tokens": cfg.max_new_tokens, "search": cfg.search,
            "search_size": cfg.search_size}


def series_of(df: pd.DataFrame) -> pd.Series:
    """Each row's series: its method, followed by its search when that is not plain sampling ("mavis beam-4").

    Fronts, hypervolumes and Spearman correlations are per series, so a search is compared as a method of its own.
    """
    if "search" not in df.columns:
        return df["method"].astype(str)
    labels = [search_label(s, n) if isinstance(s, str) and s != "sample" else "" for s, n in
              zip(df["search"], df.get("search_size", pd.Series(1, index=df.index)), strict=True)]
    return pd.Series([f"{m} {lab}" if lab else str(m) for m, lab in zip(df["method"], labels, strict=True)],
                     index=df.index)


def _cells(stack: Stack, methods: list[str], grid: list[list[float]],
           base_cfg: DecodeConfig) -> list[tuple[DecodeConfig, dict]]:
    """Each (method, λ) job of a sweep (`sweep_jobs`) as its DecodeConfig and the start of its table row."""
    cells = []
    for method, lam in sweep_jobs(methods, grid, stack.morlhf_points):
        # the base's λ is irrelevant but DecodeConfig needs one: equal weights
        weights = dict(zip(stack.objectives, lam if lam is not None else [1.0] * len(stack.objectives), strict=True))
        cfg = dataclasses.replace(base_cfg, method=method, weights=weights)
        norm = cfg.normalised(stack.objectives) if lam is not None else [float("nan")] * len(stack.objectives)
        cells.append((cfg, {"method": method, **{f"{WEIGHT_PREFIX}{o}": w
                                                 for o, w in zip(stack.objectives, norm, strict=True)}}))
    return cells


def _texts_and_kinds(prompts: list[str] | list[Prompt]) -> tuple[list[str], dict[str, str]]:
    """The prompts' texts, and each tagged prompt's kind by its text (empty for plain strings)."""
    kinds = {p.text: p.kind for p in prompts if isinstance(p, Prompt)}
    return [p.text if isinstance(p, Prompt) else p for p in prompts], kinds


def sweep(stack: Stack, prompts: list[str] | list[Prompt], seeds: list[int], methods: list[str],
          weight_grid: list[list[float]], base_cfg: DecodeConfig,
          lanes_per_batch: int = LANES_PER_BATCH) -> pd.DataFrame:
    """Run each method at each λ of ``weight_grid`` over all prompts × seeds; one row per (method, λ).

    Columns: method, ``w_<objective>`` (normalised λ; NaN for the base, which runs once since it ignores λ),
    ``r_<objective>`` (mean reward), ``se_<objective>`` (its standard error over the n replies), kl (mean of
    `Generation.kl`; not zero for the base, whose top-k and temperature already move it off π_ref), tokens (mean reply
    length), tokens_per_s (all replies' tokens over the batch's generation time: throughput, not one reply's speed),
    seconds (generation wall time), seconds_per_reply (seconds / n: what a search costs per reply), n (replies
    averaged), refusal (share of replies `refusals.is_refusal` counts), with tagged prompts (`Prompt`) the same per kind
    as ``COLUMN@kind`` (`kind_view`), then the settings used (beta, strength, top_k, temperature, max_new_tokens,
    search, search_size: 1 for sampling, N for best-of-N, B for beam). ``base_cfg`` gives every other decoding setting,
    its search included; its method and weights are replaced. Sampled λ points of one method decode together, up to
    ``lanes_per_batch`` replies a batch (see `_sampled_points` for what their timings then mean). Best-of-N and beam
    winners are kept whole (see `_searched_point`; beam search ignores the seeds, so n is the number of prompts).
    """
    if not prompts or not seeds:
        raise ValueError("a sweep needs at least one prompt and one seed")
    prompts, kind_of = _texts_and_kinds(prompts)
    unknown = [m for m in methods if not stack.can_decode(m)]
    if unknown:
        raise ValueError(f"method(s) {unknown} can't run on this stack; it has {stack.methods}")
    cells = _cells(stack, methods, weight_grid, base_cfg)
    # several λ points of one method as one batch: on 2 CPU cores 8 points of 12 replies take 0.44x the time of
    # one point a batch (benchmarks/sweep_speed.py); a method's points stay together so its throughput is its own
    per_batch = max(1, lanes_per_batch // (len(prompts) * len(seeds)))
    records: list[dict] = []
    with tqdm(total=len(cells), desc="sweep", unit="point") as bar:
        for (_, search), group in itertools.groupby(cells, key=lambda cell: (cell[0].method, cell[0].search)):
            group = list(group)
            size = per_batch if search == "sample" else 1
            for chunk in (group[i:i + size] for i in range(0, len(group), size)):
                cfgs = [cfg for cfg, _ in chunk]
                points = (_sampled_points(stack, prompts, seeds, cfgs, kind_of) if search == "sample"
                          else [_searched_point(stack, prompts, seeds, cfgs[0], kind_of)])
                records += [{**record, **point, **_settings(cfg)}
                            for (cfg, record), point in zip(chunk, points, strict=True)]
                bar.update(len(chunk))
    return pd.DataFrame.from_records(records)


def pareto_front(df: pd.DataFrame, objectives: list[str]) -> pd.DataFrame:
    """Each series' (`series_of`) non-dominated rows on the mean rewards of ``objectives`` (all maximised)."""
    cols = [f"{REWARD_PREFIX}{o}" for o in objectives]
    parts = [group[non_dominated(group[cols].to_numpy(dtype=float))]
             for _, group in df.groupby(series_of(df), sort=False)]
    return pd.concat(parts) if parts else df.iloc[:0]


def reference_point(df: pd.DataFrame, objectives: list[str], margin: float = REFERENCE_MARGIN) -> list[float]:
    """Per-objective minimum over all methods minus ``margin`` × its range (× 1 if every row ties), so every
    method's worst point still adds some area and methods share one reference."""
    ref = []
    for o in objectives:
        values = df[f"{REWARD_PREFIX}{o}"].astype(float)
        spread = values.max() - values.min()
        ref.append(float(values.min() - margin * (spread if spread > 0 else 1.0)))
    return ref


def hypervolumes(df: pd.DataFrame, objectives: list[str], reference: list[float] | None = None) -> pd.DataFrame:
    """Each series' hypervolume on two objectives: columns method (the series, see `series_of`), x, y (the
    objectives), hypervolume and ref_x, ref_y (the reference point used), so tables for several pairs stack
    without empty cells."""
    if len(objectives) != 2:
        raise ValueError(f"hypervolume is computed for two objectives, got {objectives}")
    ref = reference if reference is not None else reference_point(df, objectives)
    cols = [f"{REWARD_PREFIX}{o}" for o in objectives]
    rows = [{"method": m, "x": objectives[0], "y": objectives[1],
             "hypervolume": hypervolume(g[cols].to_numpy(dtype=float), (ref[0], ref[1])),
             "ref_x": ref[0], "ref_y": ref[1]}
            for m, g in df.groupby(series_of(df), sort=False)]
    return pd.DataFrame(rows)


def weight_spearman(df: pd.DataFrame) -> pd.DataFrame:
    """Per series (`series_of`) and objective: Spearman correlation between the objective's weight and its mean
    reward.

    Objectives whose weight never varies within a method (the base; the third objective of a pair sweep) are
    left out: a correlation with a constant is undefined, not zero.
    """
    rows = []
    objectives = [c[len(WEIGHT_PREFIX):] for c in df.columns if c.startswith(WEIGHT_PREFIX)]
    for method, group in df.groupby(series_of(df), sort=False):
        for o in objectives:
            w, r = group[f"{WEIGHT_PREFIX}{o}"].astype(float), group[f"{REWARD_PREFIX}{o}"].astype(float)
            if w.nunique(dropna=True) < 2:
                continue
            rows.append({"method": method, "objective": o, "spearman": float(w.corr(r, method="spearman")),
                         "points": int(w.notna().sum())})
    return pd.DataFrame(rows, columns=["method", "objective", "spearman", "points"])


def _lambda_text(row: pd.Series) -> str:
    weights = {c[len(WEIGHT_PREFIX):]: row[c] for c in row.index if c.startswith(WEIGHT_PREFIX)}
    if all(pd.isna(w) for w in weights.values()):
        return "λ: none (base)"
    return "λ: " + ", ".join(f"{k} {w:.2f}" for k, w in weights.items() if w > 0)


# Line style of a series by its search (its marker is the app chart's, `plots.SEARCH_SYMBOLS`), so searched fronts
# read as variants of their method's colour.
SEARCH_DASHES = {"sample": "solid", "best_of_n": "dash", "beam": "dot"}


def front_figure(df: pd.DataFrame, x: str, y: str, reference: list[float] | None = None, title: str | None = None):
    """Each series' sweep points (faint) and Pareto front (line) on objectives ``x`` and ``y``, plus the
    hypervolume reference point, so a reader sees what the hypervolume was measured from. Colour is the method;
    marker and dash are the search (`plots.SEARCH_SYMBOLS`, `SEARCH_DASHES`)."""
    import plotly.graph_objects as go

    from .plots import METHOD_COLOURS, SEARCH_SYMBOLS

    cols = [f"{REWARD_PREFIX}{x}", f"{REWARD_PREFIX}{y}"]
    front = pareto_front(df, [x, y])
    front_series = series_of(front)
    fig = go.Figure()
    for name, group in df.groupby(series_of(df), sort=False):
        method = str(group["method"].iloc[0])
        search = group["search"].iloc[0] if "search" in group.columns else "sample"
        known = search if search in SEARCH_DASHES else "sample"
        symbol, dash = SEARCH_SYMBOLS[search_kind(search_label(known, 1))], SEARCH_DASHES[known]
        colour = METHOD_COLOURS.get(method, "#111827")
        hover = [f"<b>{name}</b><br>{_lambda_text(r)}<br>{x} {r[cols[0]]:.3f} · {y} {r[cols[1]]:.3f}"
                 f" · KL {r['kl']:.2f}" for _, r in group.iterrows()]
        fig.add_trace(go.Scatter(x=group[cols[0]], y=group[cols[1]], mode="markers", name=f"{name} λ points",
                                 marker=dict(color=colour, size=7, symbol=symbol), opacity=0.4, hovertext=hover,
                                 hoverinfo="text", legendgroup=name))
        best = front[front_series == name].sort_values(cols[0])
        fig.add_trace(go.Scatter(x=best[cols[0]], y=best[cols[1]], mode="lines+markers", name=f"{name} front",
                                 marker=dict(color=colour, size=8, symbol=symbol),
                                 line=dict(color=colour, width=2, dash=dash), legendgroup=name, hoverinfo="skip"))
    if reference is not None:
        fig.add_trace(go.Scatter(x=[reference[0]], y=[reference[1]], mode="markers", name="hypervolume reference",
                                 marker=dict(symbol="x", color="#6b7280", size=10)))
    fig.update_layout(xaxis_title=f"mean {x} reward", yaxis_title=f"mean {y} reward", template="plotly_white",
                      legend=dict(orientation="h", y=-0.2), margin=dict(l=50, r=20, t=40 if title else 30, b=50),
                      title=title)
    return fig


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", default="assets/stack.toml", help="stack TOML file (default assets/stack.toml)")
    grid = parser.add_mutually_exclusive_group()
    grid.add_argument("--pair", default="", help="two objectives, e.g. helpful,harmless: 11 λ points between them "
                                                 "(default: the stack's first two objectives); 'all': every pair's "
                                                 "points in one table")
    grid.add_argument("--simplex", action="store_true", help="a 1/4 grid over the simplex of all objectives")
    parser.add_argument("--methods", default="", help=f"comma-separated, from {','.join(METHODS)} "
                                                      "(default: every steering method the stack supports; "
                                                      "morlhf runs only at the λ its policies were trained for)")
    parser.add_argument("--prompts", type=int, default=0, help="use the first N held-out prompts (default: all)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..S-1 per prompt (default 1)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--beta", type=float, help="MAVIS tilt strength (default: the stack's beta, else "
                        f"{DecodeConfig.default('beta'):g})")
    parser.add_argument("--top-k", type=int, default=DecodeConfig.default("top_k"))
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--search", default="sample",
                        help="comma-separated searches to sweep, from sample,best_of_n,beam (default sample); "
                             "each is a series of its own on the fronts")
    parser.add_argument("--num-candidates", type=int, default=4, help="N for best_of_n (default 4)")
    parser.add_argument("--num-beams", type=int, default=4, help="B for beam (default 4)")
    parser.add_argument("--out", default="results/sweep.csv",
                        help="CSV to write (default results/sweep.csv); hypervolumes, Spearman and front plots "
                             "(HTML) go beside it")


def _grid(args: argparse.Namespace, objectives: list[str]) -> tuple[list[list[float]], list[str]]:
    """The λ grid and the objectives it sweeps (two for --pair, all for --simplex)."""
    if args.simplex:
        return weight_grid(len(objectives)), list(objectives)
    if args.pair.strip() == "all":
        return all_pairs_grid(len(objectives)), list(objectives)
    pair = [p.strip() for p in args.pair.split(",") if p.strip()] if args.pair else list(objectives[:2])
    unknown = [p for p in pair if p not in objectives]
    if len(pair) != 2 or unknown:
        raise ValueError(f"--pair needs two of this stack's objectives {objectives}, got {args.pair!r}")
    return weight_grid(len(objectives), axes=(objectives.index(pair[0]), objectives.index(pair[1]))), pair


def all_pairs_grid(n_objectives: int) -> list[list[float]]:
    """Every pair's λ points, each once: the corners (one objective alone) are shared between pairs."""
    seen: dict[tuple[float, ...], list[float]] = {}
    for axes in itertools.combinations(range(n_objectives), 2):
        for lam in weight_grid(n_objectives, axes=axes):
            seen.setdefault(tuple(lam), lam)
    return list(seen.values())


def _methods(text: str, available: list[str], extra: list[str] = ()) -> list[str]:
    """``--methods``: every steering method of the stack by default; ``extra`` ones (MORLHF) when named."""
    methods = [m.strip() for m in text.split(",") if m.strip()] if text else list(available)
    unknown = [m for m in methods if m not in [*available, *extra]]
    if unknown or not methods:
        raise ValueError(f"--methods must be some of {[*available, *extra]} for this stack, got {text!r}")
    return methods


def _searches(text: str) -> list[str]:
    searches = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in searches if s not in SEARCHES]
    if unknown or not searches:
        raise ValueError(f"--search must be some of {','.join(SEARCHES)}, got {text!r}")
    return list(dict.fromkeys(searches))


def _prompts(stack: Stack, count: int) -> list[str]:
    prompts = heldout_prompts(stack.spec.path, stack.spec.prompts)
    if not prompts:
        raise ValueError(f"stack {stack.spec.path} has no held-out prompts (no 'prompts' and no eval_prompts.json)")
    if count < 0:
        raise ValueError(f"--prompts must be >= 0, got {count}")
    return prompts[:count] if count else prompts


def summarise(df: pd.DataFrame, swept: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hypervolume of every pair of swept objectives (shared reference per pair) and the Spearman table."""
    volumes = pd.concat([hypervolumes(df, list(pair)) for pair in itertools.combinations(swept, 2)],
                        ignore_index=True)
    return volumes, weight_spearman(df)


def run_sweep(args: argparse.Namespace) -> None:
    from .stack import load_stack

    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    searches = _searches(args.search)
    stack = load_stack(args.stack)
    grid, swept = _grid(args, stack.objectives)
    extra = ["morlhf"] if stack.can_decode("morlhf") else []  # named only: it runs only where it was trained
    extra.append("prompted")  # named only until the app shows it as a column (issue 30)
    prompts, methods = _prompts(stack, args.prompts), _methods(args.methods, stack.methods, extra)
    parts, beta = [], stack.beta_or_default(args.beta)
    for search in searches:
        cfg = DecodeConfig(weights=dict.fromkeys(stack.objectives, 1.0), beta=beta, top_k=args.top_k,
                           temperature=args.temperature, max_new_tokens=args.max_new_tokens, search=search,
                           num_candidates=args.num_candidates, num_beams=args.num_beams)
        # beside a search, sampling is timed one λ point a batch as each search is, so their seconds compare
        lanes = 1 if len(searches) > 1 else LANES_PER_BATCH
        parts.append(sweep(stack, prompts, list(range(args.seeds)), methods, grid, cfg, lanes_per_batch=lanes))
    df = pd.concat(parts, ignore_index=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    volumes, spearman = summarise(df, swept)
    volumes.to_csv(out.with_name(f"{out.stem}_hypervolume.csv"), index=False)
    spearman.to_csv(out.with_name(f"{out.stem}_spearman.csv"), index=False)
    for _, row in volumes.drop_duplicates(["x", "y"]).iterrows():
        # plotly.js from its CDN keeps each page small; the numbers are in the CSVs for offline reading
        front_figure(df, row.x, row.y, [row.ref_x, row.ref_y]).write_html(
            out.with_name(f"{out.stem}_{row.x}_{row.y}.html"), include_plotlyjs="cdn")
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.precision", 4):
        print(f"wrote {out} ({len(df)} rows)\n\nhypervolume (reference: min over all methods minus "
              f"{REFERENCE_MARGIN:g} × range, per objective)\n{volumes.to_string(index=False)}\n\n"
              f"Spearman(weight, mean reward)\n{spearman.to_string(index=False)}")
