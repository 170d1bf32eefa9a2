"""MAVIS demo: steer a language model between objectives at inference time, live.

    python app.py [--stack PATH] [--host HOST] [--port PORT] [--study-db PATH]

This file only lays out the UI and wires events; the work happens in mavis_core (engine, study, plots).
Every action is a named API endpoint (see the "Use via API" link, or gradio_client).
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gradio as gr

from mavis_core.engine import (
    BEAMS_RANGE,
    BETA_RANGE,
    CANDIDATES_RANGE,
    SEED_RANGE,
    TEMPERATURE_RANGE,
    TOP_K_RANGE,
    Engine,
    Reply,
    Settings,
    clean_prompt,
    weight_grid,
)
from mavis_core.plots import explanation_html, pareto_figure, token_explanation
from mavis_core.study import RATING_RANGE, StudyDB, token_ok

DEFAULT_STACK = "assets/stack.toml"
DEFAULT_STUDY_DB = "study.db"
ADMIN_TOKEN_ENV = "MAVIS_ADMIN_TOKEN"
CONCURRENCY = 2  # requests decoding at once; more only slows everyone down on a 2-vCPU Space
MAX_QUEUE = 64  # waiting requests beyond this are turned away at once rather than left to time out
STREAM_INTERVAL_S = 0.05  # at most ~20 UI updates a second while streaming
MAX_HISTORY = 400  # samples kept per user for the chart
STUDY_SETTINGS = {"beta": 1.0, "top_k": 15, "temperature": 1.0, "max_new_tokens": 64}
METHOD_TITLES = {"base": "Base", "mavis": "MAVIS", "mod": "MOD", "rsoup": "RSoup"}
NO_Z = "none (2-D)"
SEARCH_CHOICES = [("sample", "sample"), ("best-of-N", "best_of_n"), ("beam search", "beam")]
SEARCH_DEFAULTS = ("sample", 4, 4)  # search, N, B: what API callers that leave them out get
SWEEP_MODES = ("chart axes (11 λ points)", "all objectives (simplex grid)")
CSS = """
.reply textarea { font-size: 15px !important; }
#details { padding: 4px 8px; }
.rating .wrap { gap: 4px !important; flex-wrap: nowrap !important; }
.rating label { padding: 4px 8px !important; min-width: 0 !important; }
"""


@contextmanager
def user_errors() -> Iterator[None]:
    """Show a ValueError from mavis_core as a plain gr.Error (a modal), never a stack trace."""
    try:
        yield
    except ValueError as err:
        raise gr.Error(str(err), print_exception=False) from None


def _stats(reply: Reply | None, objectives: list[str]) -> str:
    if reply is None:
        return "*not selected*"
    if reply.scores is None:
        return f"*{reply.search}: {'done, scoring' if reply.done else 'generating'}… {len(reply.events)} tokens*"
    cells = " · ".join(f"{k} **{reply.scores[k]:+.3f}**" for k in objectives)
    return f"*{reply.search}* · {cells} · KL **{reply.kl:.2f}** · {len(reply.events)} tokens"


def _samples(replies: list[Reply], prompt: str, settings: Settings, source: str, start: int,
             weights: list[dict[str, float]] | None = None) -> list[dict]:
    """Chart samples (plain dicts, see mavis_core.plots) for scored replies."""
    total = sum(settings.weights.values())
    lam = {k: v / total for k, v in settings.weights.items()}
    return [{"id": start + i, "source": source, "method": r.method, "prompt": prompt, "text": r.text,
             "weights": weights[i] if weights else lam, "beta": settings.beta, "seed": settings.seed,
             "scores": r.scores, "kl": r.kl, "search": r.search} for i, r in enumerate(replies)]


def _sample_choices(history: list[dict]) -> list[tuple[str, int]]:
    return [(f"#{s['id']} {s['method']} ({s['source']}, {s.get('search', 'sample')}) λ "
             + ", ".join(f"{v:.2f}" for v in s["weights"].values()), s["id"]) for s in reversed(history)]


def _next_id(history: list[dict]) -> int:
    return history[-1]["id"] + 1 if history else 1


class Actions:
    """The event handlers: each turns UI / API values into mavis_core calls and back into UI values."""

    def __init__(self, engine: Engine, study: StudyDB, admin_token: str | None) -> None:
        self.engine, self.study, self.admin_token = engine, study, admin_token

    def _settings(self, weights: tuple, beta, top_k, temperature, max_new_tokens, seed,
                  search: tuple = SEARCH_DEFAULTS) -> Settings:
        if len(weights) != len(self.engine.objectives):
            raise ValueError(f"expected {len(self.engine.objectives)} weights, got {len(weights)}")
        return self.engine.settings(dict(zip(self.engine.objectives, weights, strict=True)), beta, top_k,
                                    temperature, max_new_tokens, seed, *search)

    def _split(self, values: tuple) -> tuple[tuple, tuple]:
        """The trailing inputs of generate / check: one weight per objective, then search, N, B (optional, so
        API callers from before search existed keep working)."""
        n = len(self.engine.objectives)
        weights, search = values[:n], values[n:]
        if len(search) > len(SEARCH_DEFAULTS):
            raise ValueError(f"expected {n} weights then search, N and B; got {len(values)} values")
        return weights, tuple(search) + SEARCH_DEFAULTS[len(search):]

    def _prompt(self, prompt: str, max_new_tokens: int) -> str:
        prompt, warnings = clean_prompt(prompt)
        for message in warnings + self.engine.prompt_warnings(prompt, max_new_tokens):
            gr.Warning(message)
        return prompt

    def normalise(self, *weights: float) -> str:
        if len(weights) != len(self.engine.objectives):
            raise gr.Error(f"expected {len(self.engine.objectives)} weights, got {len(weights)}")
        lam = self.engine.normalised(dict(zip(self.engine.objectives, weights, strict=True)))
        if not any(lam.values()):
            return "**λ = all zero** — raise at least one slider"
        return "**normalised λ:** " + " · ".join(f"{k} {v:.2f}" for k, v in lam.items())

    def check(self, prompt, beta, top_k, temperature, max_new_tokens, seed, methods, *rest) -> None:
        """The browser's quick check before generate / sweep: a mistake then shows only as an error toast,
        instead of an error badge over every output (the endpoints themselves check again, for API callers)."""
        with user_errors():
            weights, search = self._split(rest)
            self._settings(weights or (1.0,) * len(self.engine.objectives), beta, top_k, temperature,
                           max_new_tokens, seed, search)
            self.engine.check_methods(methods)
            clean_prompt(prompt)

    def check_study(self, participant: str, prompt: str) -> None:
        with user_errors():
            if (prompt or "").strip() or not self.engine.examples:
                clean_prompt(prompt)

    def generate(self, prompt, beta, top_k, temperature, max_new_tokens, seed, methods, x, y, z, history,
                 *rest):
        """Stream every ticked method side by side; then add the scored replies to the chart.

        ``rest``: one weight per objective, then optionally search ("sample", "best_of_n", "beam"), N and B.
        """
        with user_errors():
            weights, search = self._split(rest)
            settings = self._settings(weights, beta, top_k, temperature, max_new_tokens, seed, search)
            methods = self.engine.check_methods(methods)
            prompt = self._prompt(prompt, settings.max_new_tokens)
            last = 0.0
            for replies in self.engine.stream(prompt, methods, settings):
                done = replies[0].scores is not None
                if done or time.monotonic() - last >= STREAM_INTERVAL_S:
                    last = time.monotonic()
                    yield self._columns(replies) + ([gr.skip()] * 4 if not done else self._finish(
                        replies, prompt, settings, (x, y, z), history))

    def _columns(self, replies: list[Reply]) -> list:
        by_method = {r.method: r for r in replies}
        texts = [by_method[m].text if m in by_method else "" for m in self.engine.methods]
        stats = [_stats(by_method.get(m), self.engine.objectives) for m in self.engine.methods]
        return texts + stats

    def _finish(self, replies, prompt, settings, axes, history) -> list:
        history = (history + _samples(replies, prompt, settings, "generate", _next_id(history)))[-MAX_HISTORY:]
        mavis = [r for r in replies if r.method == "mavis"]
        explanation = explanation_html(token_explanation(mavis[0].events if mavis else [], self.engine.objectives),
                                       self.engine.objectives)
        new = history[-len(replies):]
        newest = next((x["id"] for x in new if x["method"] == "mavis"), new[0]["id"])  # MAVIS is the one to read
        return [explanation, self._figure(history, *axes), history,
                gr.Dropdown(choices=_sample_choices(history), value=newest)]

    def _figure(self, history: list[dict], x: str, y: str, z: str = NO_Z):
        """The Pareto chart of ``history``: 2-D, or 3-D when ``z`` names a third objective."""
        if not {x, y} <= set(self.engine.objectives) or z not in (NO_Z, *self.engine.objectives):
            raise ValueError(f"chart axes must be objectives of this stack: {self.engine.objectives}")
        return pareto_figure(history, x, y, self.engine.methods, z=None if z == NO_Z else z)

    def redraw(self, x: str, y: str, z: str, history: list[dict]):
        with user_errors():
            return self._figure(history, x, y, z)

    def clear(self, x: str, y: str, z: str):
        with user_errors():
            return self._figure([], x, y, z), [], gr.Dropdown(choices=[], value=None), ""

    def show_sample(self, sample_id, history: list[dict]) -> str:
        """The chosen sample's text, weights and scores (plotly clicks do not reach the server in gr.Plot)."""
        match = [s for s in history if s["id"] == sample_id]
        if not match:
            return ""
        s = match[0]
        scores = " · ".join(f"{k} **{v:+.3f}**" for k, v in s["scores"].items())
        weights = " · ".join(f"{k} {v:.2f}" for k, v in s["weights"].items())
        quoted = "\n".join("> " + line for line in (s["text"] or "(empty reply)").splitlines())
        return (f"**#{s['id']} {s['method']}** ({s['source']}, {s.get('search', 'sample')}) · λ: {weights} · "
                f"β {s['beta']} · seed {s['seed']}"
                f"\n\n{scores} · KL **{s['kl']:.2f}**\n\n**Prompt:** {s['prompt']}\n\n{quoted}")

    def sweep(self, prompt, beta, top_k, temperature, max_new_tokens, seed, methods, mode, x, y, z, history,
              search=SEARCH_DEFAULTS[0], num_candidates=SEARCH_DEFAULTS[1], num_beams=SEARCH_DEFAULTS[2],
              progress=gr.Progress()):  # noqa: B008 - gradio finds its progress tracker by this default
        """Every ticked method over a λ grid, with the chosen search; the points join the chart as each
        method's front."""
        with user_errors():
            objectives = self.engine.objectives
            settings = self._settings((1.0,) * len(objectives), beta, top_k, temperature, max_new_tokens, seed,
                                      (search, num_candidates, num_beams))
            methods = self.engine.check_methods(methods)
            prompt = self._prompt(prompt, settings.max_new_tokens)
            if mode not in SWEEP_MODES:
                raise ValueError(f"sweep mode must be one of {list(SWEEP_MODES)}, got {mode!r}")
            pair = (objectives.index(x), objectives.index(y)) if mode == SWEEP_MODES[0] else None
            grid = weight_grid(len(objectives), axes=pair)
            start = time.monotonic()
            out = self.engine.sweep(prompt, methods, settings, grid,
                                    on_step=lambda i, n, desc: progress((i, n), desc=desc, unit="steps"))
            replies, weights = [r for _, r in out], [w for w, _ in out]
            history = (history + _samples(replies, prompt, settings, "sweep", _next_id(history), weights))
            history = history[-MAX_HISTORY:]
            how = "" if settings.search == "sample" else f", each by {settings.search_label}"
            status = f"Swept {len(out)} replies ({len(grid)} λ points){how} in {time.monotonic() - start:.1f} s."
            return self._figure(history, x, y, z), history, gr.Dropdown(choices=_sample_choices(history)), status

    def study_new(self, participant: str, prompt: str, progress=gr.Progress()):  # noqa: B008 - as in sweep
        """A blinded trial: every method replies to one prompt under random weights, in a shuffled order."""
        with user_errors():
            progress(0, desc="Generating the replies…")
            rng = random.SystemRandom()
            if not (prompt or "").strip() and self.engine.examples:
                prompt = rng.choice(self.engine.examples)
            lam = dict(zip(self.engine.objectives, rng.choice(weight_grid(len(self.engine.objectives))), strict=True))
            raw = {**STUDY_SETTINGS,
                   "max_new_tokens": min(STUDY_SETTINGS["max_new_tokens"], self.engine.max_new_tokens)}
            settings = self.engine.settings(lam, seed=rng.randint(*SEED_RANGE), **raw)
            prompt = self._prompt(prompt, settings.max_new_tokens)
            replies = self.engine.replies(prompt, self.engine.methods, settings)
            trial = self.study.add_trial((participant or "").strip()[:100] or "anonymous", prompt, lam, settings.seed,
                                         raw, {r.method: r.text for r in replies})
            weights = " · ".join(f"{k} {v:.2f}" for k, v in lam.items())
            header = f"**Prompt:** {prompt}\n\n**Weights:** {weights} — rate each reply on every objective."
            return [trial.id, header] + trial.texts + [None] * (len(trial.texts) * len(self.engine.objectives) + 1)

    def study_submit(self, trial_id: str | None, favourite: str | None, *ratings):
        """Save one trial's ratings (slot × objective, in the order shown) and favourite, at once."""
        with user_errors():
            if not trial_id:
                raise ValueError("No trial to rate yet: press 'New trial' first.")
            n_obj = len(self.engine.objectives)
            slots = [chr(ord("A") + i) for i in range(len(ratings) // n_obj)]
            per_slot = {s: dict(zip(self.engine.objectives, ratings[i * n_obj:(i + 1) * n_obj], strict=True))
                        for i, s in enumerate(slots)}
            self.study.add_ratings(trial_id, per_slot, favourite or "")
            return None, "Thank you — saved. Press **New trial** for the next one."

    def _admin(self, token: str) -> None:
        if not self.admin_token:
            raise ValueError(f"Study results are disabled: set {ADMIN_TOKEN_ENV} on the server to enable them.")
        if not token_ok(token, self.admin_token):
            raise ValueError("Wrong admin token.")

    def study_results(self, token: str):
        with user_errors():
            self._admin(token)
            return self.study.results()

    def study_export(self, token: str) -> str:
        with user_errors():
            self._admin(token)
            out = Path(tempfile.mkdtemp(prefix="mavis-study-")) / "study_ratings.csv"
            return str(self.study.export_csv(out))


def _controls(engine: Engine, actions: Actions) -> dict:
    """The left column: prompt, objective weights, methods, decoding settings."""
    objectives, c = engine.objectives, {}
    c["prompt"] = gr.Textbox(label="Prompt", lines=3, placeholder="Say something to the assistant…",
                             elem_id="prompt", value=engine.examples[0] if engine.examples else "")
    if engine.examples:
        gr.Examples(examples=[[p] for p in engine.examples], inputs=[c["prompt"]], label="Example prompts")
    # Equal raw weights to start; only their ratios matter, and the normalised λ is shown below them.
    c["sliders"] = [gr.Slider(0, 1, value=0.5, step=0.05, label=f"weight: {k}", elem_id=f"weight-{k}")
                    for k in objectives]
    c["lambda"] = gr.Markdown(actions.normalise(*[0.5] * len(objectives)), elem_id="lambda")
    c["methods"] = gr.CheckboxGroup(engine.methods, value=engine.methods, label="Methods", elem_id="methods")
    c["go"] = gr.Button("Generate", variant="primary", elem_id="generate")
    with gr.Accordion("Decoding settings", open=True):
        c["beta"] = gr.Slider(*BETA_RANGE, value=1.0, step=0.1, label="β (MAVIS tilt strength)")
        c["top_k"] = gr.Slider(*TOP_K_RANGE, value=15, step=1, label="top-k")
        c["temperature"] = gr.Slider(*TEMPERATURE_RANGE, value=1.0, step=0.05, label="temperature")
        c["max_new"] = gr.Slider(1, engine.max_new_tokens, value=min(64, engine.max_new_tokens), step=1,
                                 label="max new tokens")
        c["seed"] = gr.Number(0, precision=0, minimum=SEED_RANGE[0], maximum=SEED_RANGE[1], label="seed")
        c["search"] = gr.Radio(SEARCH_CHOICES, value=SEARCH_DEFAULTS[0], label="search (every ticked method)",
                               elem_id="search",
                               info="best-of-N keeps the best of N samples by λ-weighted reward; beam search "
                                    "keeps B beams ranked by log-prob (+ β·λ·values for MAVIS)")
        c["num_candidates"] = gr.Slider(*CANDIDATES_RANGE, value=SEARCH_DEFAULTS[1], step=1,
                                        label="N (best-of-N samples)", elem_id="num-candidates")
        c["num_beams"] = gr.Slider(*BEAMS_RANGE, value=SEARCH_DEFAULTS[2], step=1, label="B (beams)",
                                   elem_id="num-beams")
    return c


def _replies_and_chart(engine: Engine, actions: Actions) -> dict:
    """The right column: one streaming column per method, the MAVIS explanation, the Pareto chart."""
    objectives, c = engine.objectives, {"texts": [], "stats": []}
    with gr.Row(equal_height=True):
        for m in engine.methods:
            with gr.Column(min_width=180, elem_id=f"col-{m}"):
                c["texts"].append(gr.Textbox(label=METHOD_TITLES.get(m, m), lines=7, max_lines=14, interactive=False,
                                             elem_id=f"reply-{m}", elem_classes="reply", autoscroll=False))
                c["stats"].append(gr.Markdown("", elem_id=f"stats-{m}"))
    with gr.Accordion("MAVIS per-token explanation", open=True):
        c["explain"] = gr.HTML(explanation_html([], objectives), elem_id="explain")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            c["plot"] = gr.Plot(actions._figure([], objectives[0], objectives[-1]), label="Pareto chart",
                                elem_id="pareto")
            c["details"] = gr.Markdown("", elem_id="details")
        with gr.Column(scale=1, min_width=220):
            c["x"] = gr.Dropdown(objectives, value=objectives[0], label="x axis", elem_id="x-axis")
            c["y"] = gr.Dropdown(objectives, value=objectives[-1], label="y axis", elem_id="y-axis")
            c["z"] = gr.Dropdown([NO_Z, *objectives], value=NO_Z, label="z axis (3-D view)", elem_id="z-axis",
                                 visible=len(objectives) > 2)
            c["mode"] = gr.Radio(list(SWEEP_MODES), value=SWEEP_MODES[0], label="Sweep over")
            c["sweep"] = gr.Button("Sweep λ grid", elem_id="sweep")
            c["clear"] = gr.Button("Clear chart", variant="secondary", elem_id="clear")
            c["sweep_status"] = gr.Markdown("", elem_id="sweep-status")
            c["sample"] = gr.Dropdown([], value=None, label="Show sample (hover a point for its #)",
                                      elem_id="sample")
    return c


def _generate_tab(engine: Engine, actions: Actions) -> None:
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=280):
            c = _controls(engine, actions)
        with gr.Column(scale=3):
            c |= _replies_and_chart(engine, actions)
    history = gr.State([])
    settings = [c["prompt"], c["beta"], c["top_k"], c["temperature"], c["max_new"], c["seed"], c["methods"]]
    gr.on([s.change for s in c["sliders"]], actions.normalise, inputs=c["sliders"], outputs=c["lambda"],
          api_name="normalise", show_progress="hidden", queue=False)
    # The checks go through the queue (gradio 6 shows no error toast for queue=False events) without a limit.
    search = [c["search"], c["num_candidates"], c["num_beams"]]  # after the sliders: optional for API callers
    gr.on([c["go"].click, c["prompt"].submit], actions.check, inputs=[*settings, *c["sliders"], *search],
          api_visibility="private", show_progress="hidden", concurrency_limit=None).success(
        actions.generate, inputs=[*settings, c["x"], c["y"], c["z"], history, *c["sliders"], *search],
        outputs=[*c["texts"], *c["stats"], c["explain"], c["plot"], history, c["sample"]], api_name="generate")
    gr.on([c["x"].change, c["y"].change, c["z"].change], actions.redraw, inputs=[c["x"], c["y"], c["z"], history],
          outputs=c["plot"],
          api_name="redraw")
    c["clear"].click(actions.clear, inputs=[c["x"], c["y"], c["z"]],
                     outputs=[c["plot"], history, c["sample"], c["details"]],
                     api_name="clear")
    c["sample"].change(actions.show_sample, inputs=[c["sample"], history], outputs=c["details"],
                       api_name="show_sample")
    c["sweep"].click(actions.check, inputs=settings, api_visibility="private", concurrency_limit=None,
                     show_progress="hidden").success(
        actions.sweep, inputs=[*settings, c["mode"], c["x"], c["y"], c["z"], history, *search],
        outputs=[c["plot"], history, c["sample"], c["sweep_status"]], api_name="sweep",
        concurrency_limit=1, concurrency_id="sweep")  # one sweep at a time: it can keep both cores busy for minutes


def _study_tab(engine: Engine, actions: Actions) -> None:
    gr.Markdown("Each trial shows the replies of several assistants in a random order, without saying which is "
                "which. Rate every reply on each objective (1 = poor, 5 = excellent) and pick your favourite.")
    with gr.Row():
        participant = gr.Textbox(label="Participant id (optional)", max_length=100, elem_id="participant")
        study_prompt = gr.Textbox(label="Prompt (leave empty for a random example)", elem_id="study-prompt")
        new_button = gr.Button("New trial", variant="primary", elem_id="study-new")
    header = gr.Markdown("")
    trial_id = gr.State(None)
    slots = [chr(ord("A") + i) for i in range(len(engine.methods))]
    texts, ratings = [], []
    with gr.Row(equal_height=False):
        for slot in slots:
            with gr.Column(min_width=200):
                texts.append(gr.Textbox(label=f"Reply {slot}", lines=6, interactive=False))
                ratings += [gr.Radio(list(range(RATING_RANGE[0], RATING_RANGE[1] + 1)), label=f"{slot}: {k}",
                                     elem_id=f"rate-{slot}-{k}", elem_classes="rating") for k in engine.objectives]
    favourite = gr.Radio(slots, label="Favourite reply", elem_id="favourite")
    submit = gr.Button("Submit ratings", elem_id="study-submit")
    status = gr.Markdown("")
    with gr.Accordion("Results (admin)", open=False):
        token = gr.Textbox(label=f"Admin token ({ADMIN_TOKEN_ENV})", type="password")
        with gr.Row():
            show = gr.Button("Show per-method means")
            export = gr.Button("Export CSV")
        results = gr.Dataframe(label="Per-method results", interactive=False)
        csv_file = gr.File(label="Ratings CSV")
    new_button.click(actions.check_study, inputs=[participant, study_prompt], api_visibility="private",
                     show_progress="hidden", concurrency_limit=None).success(
        actions.study_new, inputs=[participant, study_prompt],
        outputs=[trial_id, header, *texts, *ratings, favourite], api_name="study_new")
    submit.click(actions.study_submit, inputs=[trial_id, favourite, *ratings], outputs=[trial_id, status],
                 api_name="study_submit")
    show.click(actions.study_results, inputs=token, outputs=results, api_name="study_results")
    export.click(actions.study_export, inputs=token, outputs=csv_file, api_name="study_export")


def build_demo(engine: Engine, study_db: str | Path = DEFAULT_STUDY_DB, admin_token: str | None = None) -> gr.Blocks:
    """The whole app on one loaded engine; ``admin_token`` defaults to the MAVIS_ADMIN_TOKEN variable."""
    actions = Actions(engine, StudyDB(study_db), admin_token or os.environ.get(ADMIN_TOKEN_ENV))
    with gr.Blocks(title="MAVIS demo") as demo:
        about = f"{engine.description} · " if engine.description else ""
        gr.Markdown(f"## MAVIS — steer a language model between objectives at inference time\n"
                    f"{about}Stack **{engine.name}** · objectives: {', '.join(engine.objectives)} · "
                    f"methods: {', '.join(engine.methods)}. Move the sliders, press **Generate**, and watch each "
                    f"method's reply land on the Pareto chart.")
        with gr.Tab("Generate", id="generate"):
            _generate_tab(engine, actions)
        with gr.Tab("User study", id="study"):
            _study_tab(engine, actions)
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=MAX_QUEUE)
    return demo


def load_engine(path: str) -> Engine:
    """Load the stack once; SystemExit with one plain line (no traceback) if it cannot be used."""
    from mavis_core import load_stack  # imported here so `python app.py --help` stays instant

    if path == DEFAULT_STACK and not Path(path).exists():
        raise SystemExit(f"error: no stack at {DEFAULT_STACK} yet (the embedded stack is not built); pick one with "
                         f"--stack PATH or MAVIS_STACK=PATH, e.g. --stack stacks/hh-rlhf.toml")
    try:
        return Engine(load_stack(path))
    except Exception as err:  # noqa: BLE001 - any loading failure ends in one readable line
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SystemExit(f"error: cannot load stack {path}: {first_line}") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="MAVIS demo: steer a language model between objectives.")
    parser.add_argument("--stack", default=os.environ.get("MAVIS_STACK", DEFAULT_STACK),
                        help=f"stack TOML file (default: $MAVIS_STACK or {DEFAULT_STACK})")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--study-db", default=os.environ.get("MAVIS_STUDY_DB", DEFAULT_STUDY_DB),
                        help=f"SQLite file for user-study ratings (default: $MAVIS_STUDY_DB or {DEFAULT_STUDY_DB})")
    args = parser.parse_args(argv)
    engine = load_engine(args.stack)
    engine.warm_up()
    build_demo(engine, args.study_db).launch(server_name=args.host, server_port=args.port, css=CSS)


if __name__ == "__main__":
    main()
