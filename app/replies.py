"""The Generate tab's handlers for the replies and the chart: each reads its inputs, calls mavis_core and
formats the outputs (the layout and wiring are in `app.generate`, the sweep's handlers in `app.sweep`)."""

from __future__ import annotations

import html
import random
import time

import gradio as gr

from mavis_core.config import METHOD_NAMES
from mavis_core.engine import SEED_RANGE, Reply, Settings, clean_prompt
from mavis_core.plots import chart_point, explanation_html, pareto_figure, token_explanation
from mavis_core.sweep_plan import check_work

from . import text
from .api import problem, quiet_check, user_errors
from .context import Context
from .controls import NO_Z, SEARCH_DEFAULTS, check_axes, settings_from_query, share_keys, split_search
from .threads import streamed

STREAM_INTERVAL_S = 0.05  # at most ~20 UI updates a second while streaming
MAX_HISTORY = 400  # samples kept per user for the chart
GENERATING_NOTE = "Generating… every reply appears here token by token once it is done."
STOPPED_NOTE = "Stopped before the first token: Generate again to see the replies here."
STOPPED_CAPTION = ("before the replies were done: each column's tokens up to where it stopped (not scored, so not on "
                   "the chart). Generate again for whole replies.")


class Replies:
    """Handlers of Generate, the per-token view and the chart. Those that take ``request`` get it from gradio:
    it names the session, and lets a long request stop once its client is gone."""

    def __init__(self, ctx: Context) -> None:
        self.ctx, self.engine = ctx, ctx.engine

    def settings(self, weights: tuple, beta, top_k, temperature, max_new_tokens, seed,
                 search: tuple = SEARCH_DEFAULTS) -> Settings:
        """Checked settings from the sliders' raw values (one weight per objective, in order)."""
        if len(weights) != len(self.engine.objectives):
            raise ValueError(f"expected {len(self.engine.objectives)} weights, got {len(weights)}")
        return self.engine.settings(dict(zip(self.engine.objectives, weights, strict=True)), beta, top_k,
                                    temperature, max_new_tokens, seed, *search)

    def _request(self, prompt, beta, top_k, temperature, max_new_tokens, seed, methods, x, y, z, *rest,
                 warn: bool = False) -> tuple[str, list[str], Settings]:
        """A generate request checked: (prompt, methods, settings); ``warn``: gr.Warning for a prompt that was cut."""
        weights, search = split_search(rest, len(self.engine.objectives))
        settings = self.settings(weights, beta, top_k, temperature, max_new_tokens, seed, search)
        methods = self.engine.check_methods(methods)
        check_work(len(methods), settings)
        check_axes(self.engine.objectives, x, y, z)
        return self.ctx.prompt(prompt, settings.max_new_tokens) if warn else clean_prompt(prompt)[0], methods, settings

    def normalise(self, *weights: float) -> str:
        with user_errors("normalise"):
            if len(weights) != len(self.engine.objectives):
                raise ValueError(f"expected {len(self.engine.objectives)} weights, got {len(weights)}")
            return text.lambda_line(self.engine.normalised(dict(zip(self.engine.objectives, weights, strict=True))))

    def check(self, *values) -> None:
        """The browser's check before a generate: a mistake stops it there and `notice` shows it under the button,
        in place of toasts that pile up (the endpoint checks again, for API callers)."""
        quiet_check(self._request, *values)

    def notice(self, *values) -> str:
        """The line under Generate: what is wrong with the request, or nothing."""
        message = problem(self._request, *values)
        return f"⚠️ {message}" if message else ""

    def axes_notice(self, x: str, y: str, z: str) -> str:
        """The line under the axis menus: why the chart was not redrawn, or nothing."""
        message = problem(check_axes, self.engine.objectives, x, y, z)
        return f"⚠️ {message}; the chart keeps its last axes." if message else ""

    def check_axes(self, x: str, y: str, z: str) -> None:
        """The browser's check before a redraw: axes refused stop it, quietly (`axes_notice` says why)."""
        quiet_check(check_axes, self.engine.objectives, x, y, z)

    def generate(self, request: gr.Request, prompt, beta, top_k, temperature, max_new_tokens, seed, methods, x, y,
                 z, history, *rest):
        """Stream every ticked method side by side; then add the scored replies to the chart. ``rest``: one weight
        per objective, then optionally search, N and B. A client that disconnects stops it. The last output is the
        session's replies while they grow (None once they are scored), for the per-token view of a Stop."""
        with user_errors("generate"):
            prompt, methods, settings = self._request(prompt, beta, top_k, temperature, max_new_tokens, seed,
                                                      methods, x, y, z, *rest, warn=True)
            yield self._columns([Reply(m, search=settings.search_label) for m in methods], settings.seed) + [
                explanation_html({}, self.engine.objectives, note=GENERATING_NOTE), *[gr.skip()] * 3,
                *self._under_columns(methods, settings), None]
            last = 0.0
            for replies in streamed(lambda: self.engine.stream(prompt, methods, settings), "generate"):
                done = replies[0].scores is not None
                if done or time.monotonic() - last >= STREAM_INTERVAL_S:
                    last = time.monotonic()
                    finish = (self._finish(replies, prompt, settings, (x, y, z), history)
                              + self._under_columns(methods, settings) + [None]) if done else [
                        *[gr.skip()] * 7, replies]
                    yield self._columns(replies, settings.seed) + finish

    def _columns(self, replies: list[Reply], seed: int) -> list:
        """Every column's text, then every column's stats line (empty and "not selected" for unticked ones)."""
        by_method = {r.method: r for r in replies}
        texts = [by_method[m].text if m in by_method else "" for m in self.engine.methods]
        return texts + [text.stats(by_method.get(m), self.engine.objectives, seed) for m in self.engine.methods]

    def _under_columns(self, methods: list[str], settings: Settings) -> list:
        """Under the columns: a note when two columns are the same by construction, the replay button, its seed."""
        note = text.same_by_construction(methods, self.engine.normalised(settings.weights), settings.strength)
        return [note, gr.update(value=f"↻ Replay seed {settings.seed}", visible=True), settings.seed]

    def _finish(self, replies: list[Reply], prompt: str, settings: Settings, axes: tuple, history: list) -> list:
        """The per-token view, the chart, the history and the sample list once the replies are scored."""
        lam, start = self.engine.normalised(settings.weights), text.next_id(history)
        new = [chart_point(start + i, "generate", prompt, [r], lam, settings.beta, settings.seed)
               for i, r in enumerate(replies)]
        history = (history + new)[-MAX_HISTORY:]
        explanation = explanation_html({r.method: token_explanation(r.events) for r in replies},
                                       self.engine.objectives, METHOD_NAMES)
        newest = next((s["id"] for s in new if s["method"] == "mavis"), new[0]["id"])  # MAVIS is the one to read
        return [explanation, self.figure(history, *axes), history,
                gr.Dropdown(choices=text.sample_choices(history), value=newest)]

    def figure(self, history: list[dict], x: str, y: str, z: str = NO_Z):
        """The Pareto chart of ``history``: 2-D, or 3-D when ``z`` names a third objective."""
        check_axes(self.engine.objectives, x, y, z)
        return pareto_figure(history, x, y, self.engine.methods + self.engine.references, z=None if z == NO_Z else z)

    def redraw(self, x: str, y: str, z: str, history: list[dict]):
        with user_errors("redraw"):
            return self.figure(history, x, y, z)

    def clear(self, x: str, y: str, z: str):
        with user_errors("clear"):
            return self.figure([], x, y, z), [], gr.Dropdown(choices=[], value=None), ""

    def show_sample(self, sample_id, history: list[dict]) -> str:
        """The chosen sample's details. Wired with preprocess=False, unchecked: the dropdown's choices change per
        session, so the id is checked here against this user's own chart."""
        with user_errors("show_sample"):
            if sample_id is not None and (isinstance(sample_id, bool) or not isinstance(sample_id, int)):
                raise ValueError(f"sample_id must be the number of a sample on your chart, got {sample_id!r:.60}")
        match = [s for s in history if s["id"] == sample_id]
        return text.sample_details(match[0], history) if match else ""

    def restore(self, request: gr.Request) -> list:
        """On page load: the controls a share link (the page's query string) sets, in `share_keys` order then
        "new seed each time"; what the link does not set, or sets wrongly, keeps its default."""
        values = settings_from_query(dict(getattr(request, "query_params", None) or {}), self.engine)
        return [values.get(key, gr.skip()) for key in [*share_keys(self.engine.objectives), "new_seed"]]

    def stopped(self, request: gr.Request, status: str, explanation: str, partial: list[Reply] | None,
                *stats: str) -> list:
        """Stop pressed: a running sweep stops at its next step and its status says where (its points so far stay
        on the chart); each running column says it stopped and after how many tokens, keeping its text, and the
        per-token view shows those tokens (``partial``: the replies as the generation last streamed them)."""
        self.ctx.press_stop(request)
        waiting = isinstance(explanation, str) and GENERATING_NOTE in explanation
        view = self.stopped_view(partial, stats) if waiting else gr.skip()
        return [text.sweep_stopped(status) or gr.skip(), view, *[text.stopped(line) for line in stats]]

    def stopped_view(self, partial: list[Reply] | None, stats: tuple[str, ...]) -> str:
        """The per-token view of a stopped generation: each running column's tokens, as many as its stats line
        counts (the decode may have taken a step more before it stopped), under a line that says it stopped."""
        by_method = {r.method: r for r in partial} if isinstance(partial, list) else {}
        columns, titles = {}, {}
        for m, line in zip(self.engine.methods, stats, strict=False):
            tokens = text.running_tokens(line)
            if m in by_method and tokens:
                columns[m] = token_explanation(by_method[m].events[:tokens])
                titles[m] = f"{METHOD_NAMES.get(m, m)} · {text.stopped_after(tokens)}"
        if not columns:
            return explanation_html({}, self.engine.objectives, note=STOPPED_NOTE)
        return (f'<div class="tv-stopped"><b>Stopped</b> {html.escape(STOPPED_CAPTION)}</div>'
                + explanation_html(columns, self.engine.objectives, titles))


def pick_point(point: str, history: list[dict]):
    """A click on a chart point ("<sample id>:<click time>", written into the hidden box by the page script):
    the "Show sample" list moves to that sample; anything but a sample on this chart is ignored."""
    ids = {s["id"] for s in history}
    sample = point.split(":")[0].strip() if isinstance(point, str) else ""
    if not (sample.isdigit() and len(sample) < 12 and int(sample) in ids):
        return gr.skip()
    return gr.update(value=int(sample))  # the list's choices stay as they are


def new_seed(fresh: bool):
    """The seed for the next Generate: a fresh random one when "new seed each time" is ticked."""
    return random.SystemRandom().randint(*SEED_RANGE) if fresh is True else gr.skip()


def replay_seed(seed: int | None):
    """The replay button: the seed of the replies shown goes into the seed box and "new seed each time" is
    unticked, so the Generate that follows (static/replay.js) gives the same replies."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        return gr.skip(), gr.skip()
    return seed, False
