"""`python -m mavis_core study build`: decode every reply a study can show before it starts, into its database.

A *cell* is (prompt, λ condition, method, seed). Cells decode as rows of the batched core (`decoding.Decode`),
a batch at a time, each batch scored by the stack's reward models and committed with its KL, so an interrupted
build resumes where it stopped. The base ignores λ, so its reply is decoded once per (prompt, seed) and stored
under every condition. Serving a trial afterwards reads rows only: no model is loaded or called.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..config import METHODS
from ..prompts import Prompt, heldout_prompt_set, prompt_set
from .spec import StudySpec, read_study
from .store import opened

DEFAULT_STUDY_DB = "study.db"  # the app's default too (`--study-db`, $MAVIS_STUDY_DB)


def default_study_db() -> str:
    return os.environ.get("MAVIS_STUDY_DB") or DEFAULT_STUDY_DB


@dataclass(frozen=True)
class BuildConfig:
    """``study build``'s settings: the study file, the database, the stack (None: the study file's ``stack``),
    and how many replies decode as rows of one batch."""

    study: str | Path
    study_db: str | Path = field(default_factory=default_study_db)
    stack: str | Path | None = None
    batch_rows: int = 32
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.batch_rows, bool) or not isinstance(self.batch_rows, int) or self.batch_rows < 1:
            raise ValueError(f"batch_rows: got {self.batch_rows!r}; allowed: an integer >= 1")


@dataclass(frozen=True)
class Pool:
    """What a study's pool holds, as stored: its prompts, λ conditions (objective -> weight), methods, β."""

    study: str
    prompts: tuple[Prompt, ...]
    conditions: tuple[dict[str, float], ...]
    methods: tuple[str, ...]
    beta: float
    stack: str
    built: str | None = None

    def cells(self, seeds: int) -> list[tuple[int, int, str, int]]:
        """Every (prompt, condition, method, seed) the study can show."""
        return [(p, c, m, s) for p in range(len(self.prompts)) for c in range(len(self.conditions))
                for m in self.methods for s in range(seeds)]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def study_prompts(spec: StudySpec, stack_path: str | Path, stack_prompts: tuple[str, ...]) -> tuple[Prompt, ...]:
    """The study's prompts: its own, or a named set (`spec.PROMPT_SETS`: the stack's held-out prompts, or one
    kind's test split) cut to its first ``prompt_count``."""
    if not spec.prompt_set:
        return spec.prompts
    if spec.prompt_set == "heldout":
        named = heldout_prompt_set(stack_path, stack_prompts)
    else:
        named = prompt_set(spec.prompt_set, "test")
    return tuple(named[: spec.prompt_count])


def _methods(spec: StudySpec, stack) -> tuple[str, ...]:
    """The study's methods, each checked against the stack at every condition (MORLHF needs a policy per λ);
    "all": every method of METHODS the stack can decode at every condition."""
    def decodable(method: str) -> bool:
        if not stack.can_decode(method):
            return False
        if method == "morlhf":
            points = [[c.get(o, 0.0) for o in stack.objectives] for c in spec.conditions]
            return all(any(all(abs(a - b) < 1e-4 for a, b in zip(lam, pt, strict=True)) for pt in stack.morlhf_points)
                       for lam in points)
        return True

    if spec.methods is None:
        return tuple(m for m in METHODS if decodable(m))
    bad = [m for m in spec.methods if not decodable(m)]
    if bad:
        raise ValueError(f"study {spec.name!r}: methods: {bad} cannot decode on this stack at every condition; "
                         f"allowed: {[m for m in METHODS if decodable(m)]}")
    return spec.methods


def layout(spec: StudySpec, stack, stack_path: str | Path) -> Pool:
    """The pool a study needs on ``stack``; ValueError when it names objectives or methods the stack lacks."""
    named = set(spec.objectives) | set(spec.task.objectives)
    unknown = sorted(named - set(stack.objectives))
    if unknown:
        raise ValueError(f"study {spec.name!r}: weights / task.objectives: got {unknown}; allowed: the stack's "
                         f"objectives {stack.objectives}")
    prompts = study_prompts(spec, stack_path, tuple(stack.spec.prompts))
    if len(prompts) < spec.trials_per_participant:
        raise ValueError(f"study {spec.name!r}: trials_per_participant: got {spec.trials_per_participant}; allowed: "
                         f"at most its {len(prompts)} prompts (a participant never sees a prompt twice)")
    beta = stack.beta_or_default(spec.settings.beta)
    return Pool(spec.name, prompts, spec.conditions, _methods(spec, stack), beta, str(stack_path))


def _fingerprint(pool: Pool, spec: StudySpec) -> str:
    what = {"prompts": [asdict(p) for p in pool.prompts], "conditions": pool.conditions, "methods": pool.methods,
            "beta": pool.beta, "stack": pool.stack, "settings": asdict(spec.settings)}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def register(db: sqlite3.Connection, pool: Pool, spec: StudySpec, where: str) -> None:
    """Record the pool's layout, or check that the one stored is the same (a resumed build)."""
    fingerprint = _fingerprint(pool, spec)
    row = db.execute("SELECT fingerprint FROM study_pools WHERE study = ?", (pool.study,)).fetchone()
    if row is not None and row[0] != fingerprint:
        raise ValueError(f"{where} already holds a pool for study {pool.study!r} built from other prompts, "
                         "conditions, methods, settings or stack; allowed: the same study file and stack, or a new "
                         "--study-db (or rename the study file)")
    if row is None:
        db.execute("INSERT INTO study_pools VALUES (?, ?, ?, NULL, ?, ?, ?, ?, ?)",
                   (pool.study, fingerprint, _now(), pool.stack, json.dumps([asdict(p) for p in pool.prompts]),
                    json.dumps(pool.conditions), json.dumps(pool.methods), pool.beta))


def read_pool(db: sqlite3.Connection, study: str) -> Pool | None:
    """The stored pool of ``study``, or None when it was never built."""
    row = db.execute("SELECT prompts, conditions, methods, beta, stack, built FROM study_pools WHERE study = ?",
                     (study,)).fetchone()
    if row is None:
        return None
    prompts = tuple(Prompt(**p) for p in json.loads(row[0]))
    return Pool(study, prompts, tuple(json.loads(row[1])), tuple(json.loads(row[2])), row[3], row[4], row[5])


def _missing(db: sqlite3.Connection, pool: Pool, seeds: int) -> list[tuple[int, int, str, int]]:
    have = set(db.execute("SELECT prompt, condition, method, seed FROM study_replies WHERE study = ?", (pool.study,)))
    return [cell for cell in pool.cells(seeds) if cell not in have]


def _decode(stack, spec: StudySpec, pool: Pool, keys: list[tuple[int, int, str, int]]) -> dict[tuple, tuple]:
    """Decode cells ``keys`` as rows of one batch and score them: key -> (text, tokens, KL, finish, rewards)."""
    from ..decoding import Decode

    prompts = [pool.prompts[p].text for p, _, _, _ in keys]
    cfgs = [spec.decode_config(m, pool.conditions[c], s, pool.beta) for _, c, m, s in keys]
    run = Decode(stack, prompts, cfgs, [s for *_, s in keys])
    for _ in run:
        pass
    texts = [g.text for g in run.generations]
    scores = stack.score(prompts, texts)  # objective -> (n,)
    return {key: (g.text, len(g.events), float(g.kl), g.finish_reason,
                  json.dumps({o: float(v[i]) for o, v in scores.items()}))
            for i, (key, g) in enumerate(zip(keys, run.generations, strict=True))}


def _store(path: str | Path, pool: Pool, cells: list[tuple[int, int, str, int]], replies: dict[tuple, tuple]) -> None:
    rows = [(pool.study, p, c, m, s, *replies[(p, 0 if m == "base" else c, m, s)]) for p, c, m, s in cells]
    with opened(path) as db:
        db.executemany("INSERT OR IGNORE INTO study_replies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def decode_cells(stack, spec: StudySpec, pool: Pool, path: str | Path, cells: list[tuple[int, int, str, int]]) -> int:
    """Decode, score and store those of ``cells`` that ``path`` lacks, as rows of one batch (a live study's trial:
    `StudySessions`); the base's reply is decoded at condition 0, or taken from there when stored. Returns the
    number of replies decoded."""
    with opened(path) as db:
        have = set(db.execute("SELECT prompt, condition, method, seed FROM study_replies WHERE study = ?",
                              (pool.study,)))
        todo = [cell for cell in cells if cell not in have]
        keys = list(dict.fromkeys((p, 0 if m == "base" else c, m, s) for p, c, m, s in todo))
        stored = {key: db.execute("SELECT text, tokens, kl, finish, rewards FROM study_replies WHERE study = ? AND "
                                  "prompt = ? AND condition = ? AND method = ? AND seed = ?",
                                  (pool.study, *key)).fetchone() for key in keys if key in have}
    fresh = [key for key in keys if key not in stored]
    replies = {**stored, **(_decode(stack, spec, pool, fresh) if fresh else {})}
    _store(path, pool, todo, replies)
    return len(fresh)


def build_pool(cfg: BuildConfig, stack=None) -> Pool:
    """Decode and score every cell of the study ``cfg.study`` not yet in ``cfg.study_db``; return the pool.

    ``stack``: an already loaded stack (else the one ``cfg.stack`` or the study file names is loaded). A build
    that finds every cell stored decodes nothing and calls no model.
    """
    from tqdm.auto import tqdm

    spec = read_study(cfg.study)
    stack_path = cfg.stack or spec.stack
    if stack is None:
        from ..stack import load_stack

        stack = load_stack(stack_path)
    pool = layout(spec, stack, stack_path)
    with opened(cfg.study_db) as db:
        register(db, pool, spec, str(cfg.study_db))
        todo = _missing(db, pool, spec.settings.seeds)
    # the base ignores λ: one decode per (prompt, seed), stored under every condition
    keys = list(dict.fromkeys((p, 0 if m == "base" else c, m, s) for p, c, m, s in todo))
    with tqdm(total=len(todo), desc=f"study {spec.name}: replies", unit="reply", disable=not cfg.progress) as bar:
        for start in range(0, len(keys), cfg.batch_rows):
            batch = keys[start : start + cfg.batch_rows]
            replies = _decode(stack, spec, pool, batch)
            cells = [cell for cell in todo if (cell[0], 0 if cell[2] == "base" else cell[1], *cell[2:]) in replies]
            _store(cfg.study_db, pool, cells, replies)
            bar.update(len(cells))
    with opened(cfg.study_db) as db:
        db.execute("UPDATE study_pools SET built = ? WHERE study = ? AND built IS NULL", (_now(), pool.study))
        return read_pool(db, pool.study)
