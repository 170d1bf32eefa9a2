"""The sweep's handlers: check and plan it (`mavis_core.sweep_plan`), run its (prompt, seed) rounds on a thread of
their own, and stream its progress and its points, each at the mean of its replies, into the chart."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable

import gradio as gr

from mavis_core.engine import Reply, _number, clean_prompt
from mavis_core.plots import chart_point
from mavis_core.sweep_plan import SweepPlan

from . import text
from .api import Gone, quiet_check, user_errors
from .controls import SEARCH_DEFAULTS, SWEEP_MODES, SWEEP_PROMPTS_RANGE, SWEEP_SEEDS_RANGE, check_axes
from .replies import MAX_HISTORY, Replies
from .threads import THREADS, in_background

SWEEP_UPDATE_S = 2.0  # a running sweep sends its progress (and the chart, when points came) at most this often


@dataclasses.dataclass
class Progress:
    """A running sweep's replies so far per point key, and the (round, step, steps) it is on."""

    plan: SweepPlan
    start: int  # the id of its first chart point
    began: float = dataclasses.field(default_factory=time.monotonic)
    got: dict[tuple, list[Reply]] = dataclasses.field(default_factory=dict)
    where: tuple[int, int, int] = (0, -1, 1)
    fresh: bool = False  # points came since the chart was last sent

    def __post_init__(self) -> None:
        self.got = {key: [] for key in self.plan.keys}
        s = self.plan.settings
        self.where = (0, -1, s.max_new_tokens if s.search == "sample" else len(self.plan.keys))

    def add(self, kind: str, value: list) -> None:
        if kind == "point":
            self.got[value[0]].append(value[1])
            self.fresh = True
        else:
            self.where = tuple(value)

    @property
    def replies(self) -> int:
        return sum(len(v) for v in self.got.values())


class Sweep:
    """Handlers of the λ sweep; they share the chart with `Replies`."""

    def __init__(self, replies: Replies) -> None:
        self.replies, self.ctx, self.engine = replies, replies.ctx, replies.engine

    def plan(self, prompt, beta, top_k, temperature, max_new_tokens, seed, methods, mode, x, y, z, search,
             num_candidates, num_beams, prompts_per_point, seeds_per_point, warn: bool = False) -> SweepPlan:
        """A sweep's request checked and laid out in rounds; ValueError for anything wrong, too much work included.
        ``warn``: show gr.Warning for a prompt that was cut (the sweep itself; its browser check stays quiet)."""
        objectives = self.engine.objectives
        settings = self.replies.settings((1.0,) * len(objectives), beta, top_k, temperature, max_new_tokens, seed,
                                         (search, num_candidates, num_beams))
        methods = self.engine.check_methods(methods) + self.engine.references
        prompt = self.ctx.prompt(prompt, settings.max_new_tokens) if warn else clean_prompt(prompt)[0]
        if mode not in SWEEP_MODES:
            raise ValueError(f"sweep mode must be one of {list(SWEEP_MODES)}, got {mode!r}")
        check_axes(objectives, x, y, z)
        pair = (objectives.index(x), objectives.index(y)) if mode == SWEEP_MODES[0] else None
        n_prompts = _number("prompts per λ point", prompts_per_point, *SWEEP_PROMPTS_RANGE, integer=True)
        n_seeds = _number("seeds per λ point", seeds_per_point, *SWEEP_SEEDS_RANGE, integer=True)
        return self.engine.plan_sweep(prompt, methods, settings, pair, n_prompts, n_seeds)

    def check(self, *values) -> None:
        """The browser's check before a sweep: a mistake stops it, shown by `notice` beside the chart."""
        quiet_check(self.plan, *values)

    def notice(self, *values) -> str:
        """The sweep status beside the chart when the Sweep button is pressed: what is wrong, or what will run."""
        try:
            plan = self.plan(*values)
        except ValueError as err:
            return f"⚠️ **Not swept:** {err}"
        return f"**Sweep queued…**\n\n{plan.line}"

    def sweep(self, request: gr.Request, prompt, beta, top_k, temperature, max_new_tokens, seed, methods, mode, x,
              y, z, history, search=SEARCH_DEFAULTS[0], num_candidates=SEARCH_DEFAULTS[1],
              num_beams=SEARCH_DEFAULTS[2], prompts_per_point=1, seeds_per_point=1):
        """Every ticked method over a λ grid with the chosen search, each point from prompts × seeds (drawn at
        their mean with standard errors): yields the progress and the chart as points arrive, at most every
        SWEEP_UPDATE_S, then the whole. Stops at the next step once its client is gone or it is stopped."""
        with user_errors("sweep"):
            plan = self.plan(prompt, beta, top_k, temperature, max_new_tokens, seed, methods, mode, x, y, z, search,
                             num_candidates, num_beams, prompts_per_point, seeds_per_point, warn=True)
            run = Progress(plan, text.next_id(history))
            yield gr.skip(), gr.skip(), gr.skip(), text.sweep_progress(plan, 0, run.where)
            last = time.monotonic()
            for kind, *value in in_background(functools.partial(self._rounds, request, run), "sweep"):
                run.add(kind, value)
                if time.monotonic() - last >= SWEEP_UPDATE_S:
                    last = time.monotonic()
                    yield *self._update(run, history, (x, y, z)), text.sweep_progress(plan, run.replies, run.where)
            done = text.sweep_done(plan, run.replies, time.monotonic() - run.began)
            yield *self._chart(run, history, (x, y, z)), done

    def _rounds(self, request: gr.Request | None, run: Progress, report: Callable[..., None]) -> None:
        """The sweep's work (in a thread of its own, see `in_background`): one Engine.sweep per (prompt, seed)
        round; reports ("step", round, i, n) as it goes and ("point", key, reply) for each scored reply. Stops at
        the next step once its client is gone or Stop was pressed."""
        for r, (prompt, seed) in enumerate(run.plan.rounds):
            def on_step(i: int, n: int, _text: str, r: int = r) -> None:
                if self.ctx.gone(request, "sweep") or self.ctx.stopped_since(request, run.began):
                    raise Gone
                report("step", r, i, n)
                THREADS.apply()  # before the next step: another request may have started or ended

            def on_point(weights: dict[str, float], reply: Reply) -> None:
                report("point", (reply.method, *weights.values()), reply)

            with THREADS.decoding():
                self.engine.sweep(prompt, run.plan.methods, dataclasses.replace(run.plan.settings, seed=seed),
                                  run.plan.grid, on_step=on_step, on_point=on_point)

    def _update(self, run: Progress, history: list[dict], axes: tuple) -> list:
        """The chart, history and sample list when points came since the last update; else nothing new."""
        if not run.fresh:
            return [gr.skip()] * 3
        run.fresh = False
        return self._chart(run, history, axes)

    def _chart(self, run: Progress, history: list[dict], axes: tuple) -> list:
        """The chart, the history and the sample list with the sweep's points so far (each at its mean)."""
        objectives, (prompt, seed) = self.engine.objectives, run.plan.rounds[0]
        points = [chart_point(run.start + i, "sweep", prompt, replies, dict(zip(objectives, key[1:], strict=True)),
                              run.plan.settings.beta, seed)
                  for i, (key, replies) in enumerate(run.got.items()) if replies]
        history = (history + points)[-MAX_HISTORY:]
        return [self.replies.figure(history, *axes), history, gr.Dropdown(choices=text.sample_choices(history))]
