"""Study files (``studies/NAME.toml``): what participants are told, which replies they see, what they answer.

`read_study` checks every field on load; an error names the file and the field, says what it got and what is
allowed. Names that depend on a stack (objectives, methods it can decode, a named prompt set) are checked when
the pool is built (`pool.build_pool`). The schema is documented in docs/studies.md.
"""

from __future__ import annotations

import itertools
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..config import METHODS, DecodeConfig, normalise_weights
from ..prompts import KINDS, UNTAGGED, Prompt, read_prompt_set

TASK_KINDS = ("ratings", "favourite", "pairwise")  # rate each reply per objective; pick one; vote on a pair
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a study name travels in a link (?study=NAME)
PARAM = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")  # the URL parameter that carries the participant id
DEFAULT_SCALE = ("1 (poor)", "2", "3", "4", "5 (excellent)")
SCALE_POINTS = (2, 10)
MAX_TRIALS = 200
MAX_SEEDS = 16
_TOP_KEYS = {"title", "instructions", "stack", "methods", "trials_per_participant", "participant_param",
             "completion_code", "redirect_url", "prompts", "weights", "settings", "task", "attention_checks", "serve"}
_SETTING_KEYS = {"beta", "top_k", "temperature", "max_new_tokens", "seeds"}
_PROMPT_KEYS = {"items", "file", "set", "kind", "count"}
SERVE = ("pool", "live")  # replies decoded before the study starts (study build), or as each trial is first shown
PROMPT_SETS = ("heldout", *KINDS)  # the stack's held-out prompts, or one kind's test split (mavis_core.prompts)


@dataclass(frozen=True)
class AttentionCheck:
    """A trial with a known answer, shown as trial number ``position``: a careful participant picks reply
    ``answer`` (1-based) as favourite, votes for it, or rates it highest on every objective."""

    position: int
    prompt: str
    replies: tuple[str, ...]
    answer: int


@dataclass(frozen=True)
class StudySettings:
    """Decoding settings of every pool cell; ``beta`` None takes the stack's. Seeds 0 … seeds − 1 per cell."""

    beta: float | None = None
    top_k: int = 15
    temperature: float = 1.0
    max_new_tokens: int = 48
    seeds: int = 1


@dataclass(frozen=True)
class StudyTask:
    """What a participant answers per trial: ``kinds`` ⊆ TASK_KINDS, rated ``objectives``, ``scale`` labels
    (rating r is label r − 1, so ratings run 1 … len(scale))."""

    kinds: tuple[str, ...]
    objectives: tuple[str, ...]
    scale: tuple[str, ...] = DEFAULT_SCALE


@dataclass(frozen=True)
class StudySpec:
    """A study file, checked. ``prompts`` is empty when ``prompt_set`` names a set resolved at build time (its
    first ``prompt_count`` prompts, or all);
    ``conditions`` are λ (objective -> weight, summing to 1); ``methods`` None means every method the stack can
    decode at every condition; ``serve`` is "pool" (replies decoded by ``study build``) or "live" (decoded by the
    app as each trial is first shown)."""

    name: str
    title: str
    instructions: str
    prompts: tuple[Prompt, ...]
    prompt_set: str | None
    conditions: tuple[dict[str, float], ...]
    methods: tuple[str, ...] | None
    settings: StudySettings
    task: StudyTask
    trials_per_participant: int
    attention_checks: tuple[AttentionCheck, ...] = ()
    completion_code: str | None = None
    redirect_url: str | None = None
    participant_param: str = "pid"
    stack: str = "assets/stack.toml"
    prompt_count: int | None = None
    serve: str = "pool"

    @property
    def objectives(self) -> list[str]:
        """Every objective named by a condition, in order of first appearance."""
        return list(dict.fromkeys(o for c in self.conditions for o in c))

    @property
    def total_trials(self) -> int:
        return self.trials_per_participant + len(self.attention_checks)

    def decode_config(self, method: str, weights: dict[str, float], seed: int, beta: float) -> DecodeConfig:
        s = self.settings
        return DecodeConfig(method=method, weights=weights, beta=beta, top_k=s.top_k, temperature=s.temperature,
                            max_new_tokens=s.max_new_tokens, seed=seed)


class StudyError(ValueError):
    """A study file that cannot be used; the message names the file and the field."""


def _fail(where: str, field: str, got: object, allowed: str) -> StudyError:
    return StudyError(f"{where}: {field}: got {got!r:.80}; allowed: {allowed}")


def _text(raw: dict, key: str, where: str, required: bool = True) -> str | None:
    value = raw.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, key, value, "a non-empty string")
    return value.strip()


def _int(raw: dict, key: str, where: str, low: int, high: int, default: int | None = None) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(where, key, value, f"an integer from {low} to {high}")
    return value


def _prompts(raw: object, where: str, root: Path) -> tuple[tuple[Prompt, ...], str | None, int | None]:
    """(prompts, named set, count) from ``[prompts]``: exactly one of ``items``, ``file`` and ``set``."""
    if not isinstance(raw, dict) or len(set(raw) & {"items", "file", "set"}) != 1 or set(raw) - _PROMPT_KEYS:
        raise _fail(where, "prompts", raw, "a [prompts] table with exactly one of items (a list), file (a path "
                                           f"beside the study file) or set (one of {list(PROMPT_SETS)}), an optional "
                                           "kind, and with set an optional count")
    kind = raw.get("kind", UNTAGGED)
    if kind not in (*KINDS, UNTAGGED):
        raise _fail(where, "prompts.kind", kind, f"one of {[*KINDS, UNTAGGED]}")
    if "set" in raw:
        if raw["set"] not in PROMPT_SETS:
            raise _fail(where, "prompts.set", raw["set"], f"one of {list(PROMPT_SETS)}")
        return (), raw["set"], _int(raw, "count", f"{where}: prompts", 1, 10_000) if "count" in raw else None
    if "count" in raw:
        raise _fail(where, "prompts.count", raw["count"], "count only with set (items and file are used whole)")
    if "file" in raw:
        path = root / str(raw["file"])
        if not path.is_file():
            raise _fail(where, "prompts.file", raw["file"], "a JSON list or a text file of prompts beside the study")
        return tuple(Prompt(p.text, kind) if p.kind == UNTAGGED else p for p in read_prompt_set(path)), None, None
    items = raw["items"]
    if not isinstance(items, list) or not items:
        raise _fail(where, "prompts.items", items, 'a non-empty list of strings or {text = "...", kind = "..."}')
    return tuple(_prompt(item, kind, where) for item in items), None, None


def _prompt(item: object, kind: str, where: str) -> Prompt:
    if isinstance(item, str) and item.strip():
        return Prompt(item.strip(), kind)
    if isinstance(item, dict) and set(item) <= {"text", "kind"} and isinstance(item.get("text"), str) \
            and item["text"].strip() and item.get("kind", kind) in (*KINDS, UNTAGGED):
        return Prompt(item["text"].strip(), item.get("kind", kind))
    raise _fail(where, "prompts.items", item, f'a non-empty string or {{text = "...", kind = "..."}} with a kind of '
                                              f"{[*KINDS, UNTAGGED]}")


def _condition(raw: object, where: str) -> dict[str, float]:
    ok = isinstance(raw, dict) and raw and all(isinstance(w, (int, float)) and not isinstance(w, bool)
                                               and math.isfinite(w) and w >= 0 for w in raw.values())
    if not ok or sum(raw.values()) <= 0:
        raise _fail(where, "weights.conditions", raw, "tables objective = weight >= 0, not all zero")
    return {o: round(w, 6) for o, w in normalise_weights(raw).items()}


def _conditions(raw: object, where: str) -> tuple[dict[str, float], ...]:
    """λ conditions from ``conditions`` (a list of tables) or ``objectives`` + ``grid_step`` (a simplex grid)."""
    if isinstance(raw, dict) and set(raw) == {"conditions"} and isinstance(raw["conditions"], list) \
            and raw["conditions"]:
        out = tuple(_condition(c, where) for c in raw["conditions"])
    elif isinstance(raw, dict) and set(raw) == {"objectives", "grid_step"}:
        out = _grid(raw["objectives"], raw["grid_step"], where)
    else:
        raise _fail(where, "weights", raw, "a [weights] table with conditions = [{helpful = 1, harmless = 0}, …] "
                                           "or objectives = [...] and grid_step = 0.25")
    keys = [tuple(sorted(c.items())) for c in out]
    if len(set(keys)) != len(keys):
        raise _fail(where, "weights.conditions", raw, "distinct conditions (after normalising to sum 1)")
    return out


def _grid(objectives: object, step: object, where: str) -> tuple[dict[str, float], ...]:
    if not isinstance(objectives, list) or len(objectives) < 2 or not all(isinstance(o, str) for o in objectives) \
            or len(set(objectives)) != len(objectives):
        raise _fail(where, "weights.objectives", objectives, "a list of two or more distinct objective names")
    n = round(1 / step) if isinstance(step, (int, float)) and 0 < step <= 0.5 else 0
    if n < 1 or abs(n * step - 1) > 1e-9:
        raise _fail(where, "weights.grid_step", step, "1/n for an integer n from 2 (0.5, 0.25, 0.2, …)")
    combos = [c for c in itertools.product(range(n + 1), repeat=len(objectives)) if sum(c) == n]
    return tuple({o: round(k / n, 6) for o, k in zip(objectives, c, strict=True)} for c in combos)


def _methods(raw: object, where: str) -> tuple[str, ...] | None:
    if raw is None or raw == "all":
        return None
    if not isinstance(raw, list) or len(raw) < 2 or len(set(raw)) != len(raw) or not set(raw) <= set(METHODS):
        raise _fail(where, "methods", raw, f'"all" or a list of two or more distinct methods of {list(METHODS)}')
    return tuple(raw)


def _settings(raw: object, where: str) -> StudySettings:
    if not isinstance(raw, dict) or set(raw) - _SETTING_KEYS:
        raise _fail(where, "settings", raw, f"a table with keys among {sorted(_SETTING_KEYS)}")
    settings = StudySettings(**{k: v for k, v in raw.items() if k != "seeds"},
                             seeds=_int(raw, "seeds", f"{where}: settings", 1, MAX_SEEDS, 1))
    try:  # DecodeConfig holds the one set of rules for these numbers
        DecodeConfig(weights={"x": 1.0}, beta=1.0 if settings.beta is None else settings.beta, top_k=settings.top_k,
                     temperature=settings.temperature, max_new_tokens=settings.max_new_tokens)
    except (ValueError, TypeError) as err:
        raise StudyError(f"{where}: settings: {err}") from None
    return settings


def _task(raw: object, objectives: list[str], where: str) -> StudyTask:
    if not isinstance(raw, dict) or set(raw) - {"kinds", "objectives", "scale"}:
        raise _fail(where, "task", raw, "a [task] table with kinds, and optional objectives and scale")
    kinds = raw.get("kinds")
    if not isinstance(kinds, list) or not kinds or len(set(kinds)) != len(kinds) or not set(kinds) <= set(TASK_KINDS):
        raise _fail(where, "task.kinds", kinds, f"a list of distinct kinds among {list(TASK_KINDS)}")
    rated = raw.get("objectives", objectives)
    if not isinstance(rated, list) or not rated or not all(isinstance(o, str) and o for o in rated):
        raise _fail(where, "task.objectives", rated, "a non-empty list of objective names")
    scale = raw.get("scale", list(DEFAULT_SCALE))
    low, high = SCALE_POINTS
    if not isinstance(scale, list) or not low <= len(scale) <= high or not all(isinstance(s, str) and s.strip()
                                                                               for s in scale):
        raise _fail(where, "task.scale", scale, f"a list of {low} to {high} labels, lowest first")
    return StudyTask(tuple(kinds), tuple(rated), tuple(s.strip() for s in scale))


def _checks(raw: object, task: StudyTask, total: int, where: str) -> tuple[AttentionCheck, ...]:
    if not isinstance(raw, list):
        raise _fail(where, "attention_checks", raw, "[[attention_checks]] tables")
    out = []
    for i, item in enumerate(raw):
        field = f"attention_checks[{i}]"
        if not isinstance(item, dict) or set(item) != {"position", "prompt", "replies", "answer"}:
            raise _fail(where, field, item, "a table with position, prompt, replies and answer")
        replies = item["replies"]
        pair_only = task.kinds == ("pairwise",)
        if not isinstance(replies, list) or not all(isinstance(r, str) and r.strip() for r in replies) \
                or not (len(replies) == 2 if pair_only else 2 <= len(replies) <= 8):
            raise _fail(where, f"{field}.replies", replies, "2 replies (a pairwise task), else 2 to 8 replies")
        out.append(AttentionCheck(_int(item, "position", f"{where}: {field}", 1, total), _text(item, "prompt", where),
                                  tuple(replies), _int(item, "answer", f"{where}: {field}", 1, len(replies))))
    if len({c.position for c in out}) != len(out):
        raise _fail(where, "attention_checks", [c.position for c in out], "distinct positions")
    return tuple(out)


def _completion(raw: dict, where: str) -> tuple[str | None, str | None]:
    code, url = _text(raw, "completion_code", where, False), _text(raw, "redirect_url", where, False)
    if url is not None and not re.fullmatch(r"https?://\S+", url):
        raise _fail(where, "redirect_url", url, "an http:// or https:// address without spaces")
    if code is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", code):
        raise _fail(where, "completion_code", code, "1 to 64 letters, digits, _ or -")
    return code, url


def study_path(name: object, folder: str | Path = "studies") -> Path:
    """The study file a link's ``?study=NAME`` means: ``folder/NAME.toml``. A name that is not 1 to 64 letters,
    digits, ``_`` or ``-`` (so never a path), or that names no study, is a ValueError in plain words.

    >>> study_path("demo").name
    'demo.toml'
    """
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError(f"study: got {str(name)[:40]!r}; allowed: a study name of 1 to 64 letters, digits, _ or -")
    path = Path(folder) / f"{name}.toml"
    if not path.is_file():
        raise ValueError(f"study: got {name!r}; there is no such study here (check the link)")
    return path


def read_study(path: str | Path) -> StudySpec:
    """Read and check a study file (docs/studies.md); StudyError (a ValueError) names the field at fault."""
    path = Path(path)
    where = str(path)
    if not NAME.fullmatch(path.stem):
        raise _fail(where, "file name", path.stem, "1 to 64 letters, digits, _ or - (the name goes in links)")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise StudyError(f"{where}: cannot be read as TOML: {err}") from None
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise _fail(where, unknown[0], raw[unknown[0]], f"keys among {sorted(_TOP_KEYS)}")
    prompts, prompt_set, prompt_count = _prompts(raw.get("prompts"), where, path.parent)
    conditions = _conditions(raw.get("weights"), where)
    objectives = list(dict.fromkeys(o for c in conditions for o in c))
    task = _task(raw.get("task"), objectives, where)
    trials = _int(raw, "trials_per_participant", where, 1, MAX_TRIALS)
    if prompts and trials > len(prompts):
        raise _fail(where, "trials_per_participant", trials, f"at most {len(prompts)}: a participant never sees a "
                                                             "prompt twice")
    param = raw.get("participant_param", "pid")
    if not isinstance(param, str) or not PARAM.fullmatch(param):
        raise _fail(where, "participant_param", param, "a URL parameter name: a letter or _, then up to 39 letters, "
                                                       "digits or _")
    code, url = _completion(raw, where)
    serve = raw.get("serve", "pool")
    if serve not in SERVE:
        raise _fail(where, "serve", serve, '"pool" (replies decoded before the study starts, by study build) or "live" '
                                           "(each trial's replies decoded by the app as it is first shown)")
    checks = raw.get("attention_checks", [])
    return StudySpec(
        name=path.stem, title=_text(raw, "title", where), instructions=_text(raw, "instructions", where),
        prompts=prompts, prompt_set=prompt_set, conditions=conditions, methods=_methods(raw.get("methods"), where),
        settings=_settings(raw.get("settings", {}), where), task=task, trials_per_participant=trials,
        attention_checks=_checks(checks, task, trials + len(checks) if isinstance(checks, list) else 0, where),
        completion_code=code, redirect_url=url, participant_param=param,
        stack=_text(raw, "stack", where, False) or "assets/stack.toml", prompt_count=prompt_count, serve=serve)
