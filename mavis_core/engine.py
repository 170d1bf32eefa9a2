"""What the app's callbacks call: input checks, side-by-side streaming, scoring, λ sweeps.

One `Engine` wraps one loaded `Stack` and is shared by every user of the app; it keeps no per-user state.
Every user mistake surfaces as a `ValueError` whose message a person can act on (the app shows it as
``gr.Error``); adjustments that let the request go on are returned as warning strings.
"""

from __future__ import annotations

import dataclasses
import math
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import prompts
from .config import (  # noqa: F401  (weight_grid: the app and tests import it here)
    METHODS,
    SEARCHES,
    DecodeConfig,
    normalise_weights,
    search_label,
    sweep_jobs,
    weight_grid,
)
from .decoding import Decode, Generation, TokenEvent, generate_batch
from .search import search
from .stack import Stack
from .sweep_plan import SEED_RANGE, SweepPlan, plan_sweep, prompt_pool

MAX_PROMPT_CHARS = 4000  # longer prompts are cut from the left before tokenizing (the tokenizer is O(n))
MAX_NEW_TOKENS = 256
BETA_RANGE = (0.0, 10.0)
TOP_K_RANGE = (1, 100)
TEMPERATURE_RANGE = (0.1, 2.0)
CANDIDATES_RANGE = (1, 16)  # best-of-N: N replies per method cost N times the sampling time
BEAMS_RANGE = (1, 8)
WEIGHT_RANGE = (0.0, 1.0)
ALLOWED_CONTROL = {"\n", "\r", "\t"}


@dataclass(frozen=True)
class Settings(DecodeConfig):
    """Decoding settings shared by every method of one request (``method`` is set per method by ``config``);
    ``Engine.settings`` builds them after checking each value against the app's limits."""

    def config(self, method: str) -> DecodeConfig:
        return dataclasses.replace(self, method=method)

    @property
    def search_label(self) -> str:
        """How the replies are chosen, for a column or a chart point: "sample", "best-of-4", "beam-4"."""
        return search_label(self.search, self.search_size)


@dataclass
class Reply:
    """One method's reply (its `Generation`, which grows while it decodes), then its reward per objective."""

    method: str
    gen: Generation = field(default_factory=lambda: Generation(prompt="", text=""))
    done: bool = False
    scores: dict[str, float] | None = None
    search: str = "sample"  # how it was chosen: Settings.search_label

    @property
    def events(self) -> list[TokenEvent]:
        return self.gen.events

    @property
    def text(self) -> str:
        return self.gen.text

    @property
    def kl(self) -> float:
        """Sequence estimate of KL(π ‖ π_ref) over the tokens shown: Σ_t log π − log π_ref."""
        return self.gen.kl


def _number(name: str, value: object, low: float, high: float, integer: bool = False) -> float:
    """``value`` as a number within [low, high]; a ValueError that names the allowed range otherwise."""
    def text(limit: float) -> str:  # as people write it: 2147483647, not 2.14748e+09
        return str(int(limit)) if math.isfinite(limit) and float(limit).is_integer() else f"{limit:g}"

    span = f"between {text(low)} and {text(high)}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number {span}, got {value!r:.60}")
    if integer and value != int(value):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be {span}, got {value!r}")
    return int(value) if integer else float(value)


def clean_prompt(prompt: object) -> tuple[str, list[str]]:
    """The prompt to decode and any warnings; ValueError for empty prompts or control characters.

    A long prompt is cut to its last MAX_PROMPT_CHARS characters first, so the checks below never scan more.
    """
    if prompt is not None and not isinstance(prompt, str):
        raise ValueError(f"The prompt must be text, got {type(prompt).__name__}.")
    warnings = []
    if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
        prompt = prompt[-MAX_PROMPT_CHARS:]
        warnings.append(f"The prompt was longer than {MAX_PROMPT_CHARS} characters; only its end was kept.")
    if prompt is None or not prompt.strip():
        raise ValueError("The prompt is empty: " + (f"its last {MAX_PROMPT_CHARS} characters, all the model would "
                                                    "read, are blank." if warnings else
                                                    "type a message for the assistant to reply to."))
    bad = sorted({c for c in prompt if unicodedata.category(c) in ("Cc", "Cs") and c not in ALLOWED_CONTROL})
    if any(unicodedata.category(c) == "Cs" for c in bad):
        # A lone UTF-16 surrogate (half a character, e.g. from a JSON "\\udcff") is no UTF-8 text: the tokenizer
        # fails on it with a TypeError, which the app could only show as a generic failure.
        raise ValueError("The prompt is not valid text: it contains half of a character (an unpaired "
                         "surrogate); remove it or paste the text again.")
    if bad:
        codes = ", ".join(f"U+{ord(c):04X}" for c in bad)
        raise ValueError(f"The prompt contains control characters ({codes}); remove them and try again.")
    return prompt, warnings


def _shown_path(ref: str) -> str:
    """``ref`` relative to the working folder when it is a file under it (shorter to read); else as it is."""
    try:
        return str(Path(ref).resolve().relative_to(Path.cwd()))
    except ValueError:
        return ref


def example_prompts(stack: Stack) -> list[str]:
    """The app's example prompts (`mavis_core.prompts.example_prompts`): the stack's own, else its held-out file."""
    return prompts.example_prompts(stack.spec.path, stack.spec.prompts)


def columns(stack: Stack) -> list[str]:
    """The Generate tab's methods, in the core's order: what the stack can decode at any λ (Prompted, the base with
    λ in its system prompt, on every stack); MORLHF only at the λ it was trained for, so in sweeps only."""
    return [m for m in METHODS if m != "morlhf" and stack.can_decode(m)]


class Engine:
    """A loaded stack plus the checks and loops the app needs; safe to share between users."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.objectives: list[str] = list(stack.objectives)
        self.methods: list[str] = columns(stack)
        # Sweeps add MORLHF (the policies fine-tuned for one exact preference) at the λ points it was trained for,
        # where the stack names such references; it is not a column of Generate (it has no policy for most λ).
        self.references: list[str] = ["morlhf"] if stack.spec.references and stack.can_decode("morlhf") else []
        self.examples = example_prompts(stack)
        # Half the context at most, so a reply always leaves room for the prompt.
        self.max_new_tokens = max(1, min(MAX_NEW_TOKENS, stack.context_length // 2))
        self.default_beta = _number("the stack's beta", stack.default_beta, *BETA_RANGE)

    @property
    def name(self) -> str:
        return self.stack.spec.name

    def parts(self) -> list[str]:
        """One line per loaded part (base, value models, policies, rewards), for the app's start-up."""
        spec, stack = self.stack.spec, self.stack
        dtype = str(stack.dtype).removeprefix("torch.")
        per = {o.name: o for o in spec.objectives}
        values = [k for k in self.objectives if per[k].value] or ["none (no MAVIS)"]
        policies = [k for k in self.objectives if per[k].policy] if stack.policies is not None else []
        return [f"base: {_shown_path(spec.base_model)} ({dtype} on {stack.device}, {stack.context_length} positions)",
                f"value models: {', '.join(values)}",
                f"policies: {', '.join(policies) or 'none (no MOD, RSoup)'}"
                + (f"; MORLHF references at {len(spec.references)} λ" if spec.references else "")
                + ("; the λ-conditioned policy" if stack.can_decode("conditioned") else ""),
                "rewards: " + ", ".join(f"{k} ({per[k].reward.kind})" for k in self.objectives)]

    @property
    def description(self) -> str:
        """The stack's one-line description of its base, for visitors (may be empty)."""
        return self.stack.spec.description

    def settings(self, weights: dict[str, float], beta: float, top_k: int, temperature: float,
                 max_new_tokens: int, seed: int, search: str = "sample", num_candidates: int = 4,
                 num_beams: int = 4) -> Settings:
        """Settings from raw UI / API values; ValueError naming the allowed range for anything outside it."""
        if search not in SEARCHES:
            raise ValueError(f"search must be one of {list(SEARCHES)}, got {search!r}")
        unknown = sorted(set(weights) - set(self.objectives))
        if unknown:
            raise ValueError(f"unknown objective(s) {unknown}; this stack has {self.objectives}")
        checked = {k: _number(f"the weight of {k}", weights.get(k, 0.0), *WEIGHT_RANGE) for k in self.objectives}
        if sum(checked.values()) <= 0:
            raise ValueError("All objective weights are zero: raise at least one slider above 0.")
        return Settings(
            weights=checked,
            beta=_number("beta", beta, *BETA_RANGE),
            top_k=_number("top-k", top_k, *TOP_K_RANGE, integer=True),
            temperature=_number("temperature", temperature, *TEMPERATURE_RANGE),
            max_new_tokens=_number("max new tokens", max_new_tokens, 1, self.max_new_tokens, integer=True),
            seed=_number("seed", seed, *SEED_RANGE, integer=True),
            search=search,
            num_candidates=_number("N (best-of-N samples)", num_candidates, *CANDIDATES_RANGE, integer=True),
            num_beams=_number("B (beams)", num_beams, *BEAMS_RANGE, integer=True),
        )

    def normalised(self, weights: dict[str, float]) -> dict[str, float]:
        """λ on the simplex; all zeros stay zeros (the UI shows that as a problem, not an exception). A weight
        that is no number in WEIGHT_RANGE (NaN, negative, text) is a ValueError, never a silent 0."""
        return normalise_weights({k: _number(f"the weight of {k}", w, *WEIGHT_RANGE) for k, w in weights.items()})

    def plan_sweep(self, prompt: str, methods: list[str], settings: Settings, pair: tuple[int, int] | None,
                   n_prompts: int, n_seeds: int) -> SweepPlan:
        """`sweep_plan.plan_sweep` on this stack: the typed prompt then its example prompts, MORLHF where the
        stack has references; ValueError for too many prompts or too much work."""
        prompts = prompt_pool(prompt, self.examples, n_prompts)
        return plan_sweep(self.objectives, settings, methods, prompts, n_seeds, pair, self.stack.morlhf_points)

    def check_methods(self, methods: list[str] | None) -> list[str]:
        """The ticked methods in the stack's order; ValueError for none, unknown ones, or anything but a list."""
        if methods is not None and not (isinstance(methods, list) and all(isinstance(m, str) for m in methods)):
            raise ValueError(f"methods must be a list of method names from {self.methods}, got {methods!r:.80}")
        if not methods:
            raise ValueError(f"No method selected: tick at least one of {', '.join(self.methods)}.")
        unknown = [m for m in methods if m not in self.methods]
        if unknown:
            raise ValueError(f"method(s) {unknown} are not available on this stack; available: {self.methods}")
        return [m for m in self.methods if m in methods]  # a fixed order, whatever order was ticked

    def prompt_warnings(self, prompt: str, max_new_tokens: int) -> list[str]:
        """A warning when the prompt does not fit the model's context and is cut from the left."""
        _, _, truncated = self.stack.encode([prompt], max_new_tokens)
        if truncated[0]:
            room = self.stack.context_length - max_new_tokens
            return [f"The prompt is longer than the model's context; only its last {room} tokens were used."]
        return []

    def stream(self, prompt: str, methods: list[str], settings: Settings) -> Iterator[list[Reply]]:
        """Decode every method side by side as rows of one batch; yields the replies after each step.

        Every column gets its token of a step from the same batched forward, so all first tokens arrive
        together. The last yield carries each reply's reward scores. A search (best-of-N, beam) cannot stream
        its winner before it ends, so then each method's winner appears whole, one method at a time.
        """
        if settings.search != "sample":
            yield from self._stream_searched(prompt, methods, settings)
            return
        cfgs = [settings.config(m) for m in methods]
        run = Decode(self.stack, [prompt] * len(cfgs), cfgs, [c.seed for c in cfgs])
        replies = [Reply(m, gen) for m, gen in zip(methods, run.generations, strict=True)]  # they grow as it runs
        for _ in run.steps():  # each step's tokens, shown while the next forward has not run yet
            yield replies
        for reply in replies:
            reply.done = True
        self.score(prompt, replies)
        yield replies

    def _stream_searched(self, prompt: str, methods: list[str], settings: Settings) -> Iterator[list[Reply]]:
        """``stream`` for a search: each method's winner in turn; the scores (its search's own) come last."""
        replies, scores = [Reply(m, search=settings.search_label) for m in methods], []
        for reply in replies:
            result = search(self.stack, prompt, settings.config(reply.method))
            reply.gen, reply.done = result.best, True
            scores.append(result.scores[result.index])
            if reply is not replies[-1]:
                yield replies
        for reply, score in zip(replies, scores, strict=True):
            reply.scores = score
        yield replies

    def reply(self, prompt: str, method: str, settings: Settings) -> Reply:
        """One method's whole reply under ``settings.search``; searched replies come with their scores."""
        cfg = settings.config(method)
        if settings.search == "sample":
            return Reply(method, generate_batch(self.stack, [prompt], cfg)[0], done=True)
        result = search(self.stack, prompt, cfg)
        return Reply(method, result.best, done=True, scores=result.scores[result.index],
                     search=settings.search_label)

    def score(self, prompt: str, replies: list[Reply]) -> None:
        """Fill in each reply's reward per objective, in one batch per reward model."""
        if not replies:
            return
        scores = self.stack.score([prompt] * len(replies), [r.text for r in replies])
        for i, reply in enumerate(replies):
            reply.scores = {k: float(v[i]) for k, v in scores.items()}

    def replies(self, prompt: str, methods: list[str], settings: Settings) -> list[Reply]:
        """Every method's whole reply, scored (no streaming)."""
        replies = [self.reply(prompt, method, settings) for method in methods]
        self.score(prompt, [r for r in replies if r.scores is None])
        return replies

    def warm_up(self) -> None:
        """One short reply per method, scored: first-call costs (kernels, lazy loads) are paid at
        start-up, not by the first user."""
        settings = Settings(weights=dict.fromkeys(self.objectives, 1.0), max_new_tokens=2)
        self.replies(self.examples[0] if self.examples else "hello", self.methods, settings)

    def sweep(self, prompt: str, methods: list[str], settings: Settings, grid: list[list[float]],
              on_step: Callable[[int, int, str], None] | None = None,
              on_point: Callable[[dict[str, float], Reply], None] | None = None,
              ) -> list[tuple[dict[str, float], Reply]]:
        """Each method over the λ grid (the base once: it ignores λ). Returns (weights, scored reply) pairs.

        Sampled sweeps decode every (method, λ) point as a row of one batch; ``on_step(t, max_new_tokens, text)``
        reports each step. Searches run point by point (``on_step(i, points, text)``). ``on_point(weights, reply)``
        gets each scored reply as soon as it is ready: a search's point by point, a sampled batch's at its end.
        """
        jobs = [(m, dict(zip(self.objectives, grid[0] if lam is None else lam, strict=True)))
                for m, lam in sweep_jobs(methods, grid, self.stack.morlhf_points)]
        if settings.search != "sample":
            out = []
            for i, (method, weights) in enumerate(jobs):
                if on_step is not None:
                    on_step(i, len(jobs), f"{method} λ=({', '.join(f'{w:.2f}' for w in weights.values())})")
                out.append((weights, self.reply(prompt, method, dataclasses.replace(settings, weights=weights))))
                if on_point is not None:
                    on_point(*out[-1])  # a searched reply comes scored by its search
            return out
        cfgs = [dataclasses.replace(settings, method=m, weights=w) for m, w in jobs]
        run = Decode(self.stack, [prompt] * len(cfgs), cfgs, [settings.seed] * len(cfgs))
        reported = -1
        for _ in run.steps():  # the last "step" only releases held-back text: not a step of its own
            if on_step is not None and run.t != reported:
                reported = run.t
                on_step(run.t, settings.max_new_tokens, f"token {run.t + 1} of {len(jobs)} replies side by side")
        out = [(w, Reply(m, g, done=True)) for (m, w), g in zip(jobs, run.generations, strict=True)]
        self.score(prompt, [r for _, r in out])
        for weights, reply in out:
            if on_point is not None:
                on_point(weights, reply)
        return out

