"""Drawing and decoding a blinded trial (the study tab's and the arena's): a prompt, random weights from the
simplex grid, a random seed, every method's reply side by side. The study engineer's study files replace
`draw_trial`; it stays here, apart from the tabs' layout, until then."""

from __future__ import annotations

import math
import random

import gradio as gr

from mavis_core.engine import SEED_RANGE, Settings, clean_prompt, weight_grid

from .api import Gone, address, user_errors
from .context import Context
from .threads import streamed

STUDY_SETTINGS = {"top_k": 15, "temperature": 1.0, "max_new_tokens": 64}  # and the stack's β (Engine.default_beta)
TRIALS_PER_SESSION = (3, 60.0)  # study trials per session per minute: a person reads and rates for longer than that
TRIALS_PER_ADDRESS = (60, 600.0)  # study trials per client address per 10 minutes (a lab behind one address: raise)
def count_trial(ctx: Context, request: gr.Request | None) -> None:
    """ValueError when this session or address started too many trials lately (one script cannot stuff the
    ballot); otherwise the trial is counted."""
    keys = [(f"session {getattr(request, 'session_hash', None)}", TRIALS_PER_SESSION, "this session"),
            (f"address {address(request)}", TRIALS_PER_ADDRESS, "your address")]
    for key, limit, who in keys:
        wait = ctx.trials.wait(key, limit)
        if wait:
            raise ValueError(f"{limit[0]} trials were started from {who} in the last {limit[1]:.0f} s, the most "
                             f"allowed; rate the one shown and try again in {math.ceil(wait)} s.")
    for key, _, _ in keys:
        ctx.trials.add(key)


def draw_trial(ctx: Context, prompt: str, rng: random.Random) -> tuple[str, dict[str, float], dict, Settings]:
    """A trial's prompt (the one typed, else a random example), random weights from the simplex grid, a random
    seed and the fixed STUDY_SETTINGS: (prompt, λ, settings as stored, Settings)."""
    engine = ctx.engine
    if not (prompt or "").strip() and engine.examples:
        prompt = rng.choice(engine.examples)
    lam = dict(zip(engine.objectives, rng.choice(weight_grid(len(engine.objectives))), strict=True))
    raw = {"beta": engine.default_beta, **STUDY_SETTINGS,
           "max_new_tokens": min(STUDY_SETTINGS["max_new_tokens"], engine.max_new_tokens)}
    settings = engine.settings(lam, seed=rng.randint(*SEED_RANGE), **raw)
    return ctx.prompt(prompt, settings.max_new_tokens), lam, raw, settings


def decode_trial(ctx: Context, request: gr.Request | None, prompt: str, methods: list[str], settings: Settings,
                 progress: gr.Progress, endpoint: str) -> dict[str, str]:
    """method -> reply text, decoded side by side as one batch on a thread of its own; one progress bar counts
    the tokens. Stops once the client is gone."""
    for replies in streamed(lambda: ctx.engine.stream(prompt, methods, settings), endpoint):
        if ctx.gone(request, endpoint):
            raise Gone
        progress((max(len(r.events) for r in replies), settings.max_new_tokens),
                 desc="Generating the replies…", unit="tokens")
    return {r.method: r.text for r in replies}


class TrialHandlers:
    """What the study's and the arena's handlers share: the context, and the browser's check of a typed prompt."""

    def __init__(self, ctx: Context) -> None:
        self.ctx, self.engine = ctx, ctx.engine

    def check(self, participant: str, prompt: str) -> None:
        """A typed prompt that cannot be used is refused; an empty one is fine where there are examples to draw."""
        with user_errors("check_study"):
            if (prompt or "").strip() or not self.engine.examples:
                clean_prompt(prompt)
