"""The Generate tab: its layout (prompt and settings on the left, the reply columns, the per-token view and the
Pareto chart with its sweep on the right) and its wiring to the handlers of `app.replies` and `app.sweep`."""

from __future__ import annotations

import functools

import gradio as gr

from mavis_core.config import METHOD_NAMES, DecodeConfig
from mavis_core.engine import (
    BEAMS_RANGE,
    BETA_RANGE,
    CANDIDATES_RANGE,
    SEED_RANGE,
    TEMPERATURE_RANGE,
    TOP_K_RANGE,
    Engine,
)
from mavis_core.plots import explanation_html

from .api import QUIET, listen
from .controls import (
    NO_Z,
    SEARCH_CHOICES,
    SEARCH_DEFAULTS,
    SWEEP_MODES,
    SWEEP_PROMPTS_RANGE,
    SWEEP_SEEDS_RANGE,
    presets,
    share_keys,
)
from .guard import MODEL_WORK
from .page import COPY_JS, share_js, static
from .replies import Replies, new_seed, pick_point, replay_seed
from .sweep import Sweep


def _controls(engine: Engine, actions: Replies) -> dict:
    """The left column: prompt, Generate and Stop; then objective weights, methods, decoding settings."""
    c = {}
    with gr.Column(elem_id="gen-top"):  # on a phone the replies come right after this (see CSS)
        c["prompt"] = gr.Textbox(label="Prompt", lines=3, placeholder="Say something to the assistant…",
                                 elem_id="prompt", value=engine.examples[0] if engine.examples else "")
        with gr.Row():
            c["go"] = gr.Button("Generate", variant="primary", elem_id="generate", scale=3, min_width=0)
            c["stop"] = gr.Button("Stop", variant="stop", elem_id="stop", scale=1, min_width=0)
        c["notice"] = gr.Markdown("", elem_id="notice")  # what is wrong with the last Generate, if anything
    with gr.Column(elem_id="gen-settings"):
        _settings_controls(engine, actions, c)
    return c


def _settings_controls(engine: Engine, actions: Replies, c: dict) -> None:
    """Under the prompt: objective weights with presets, methods, link, examples, decoding settings (into ``c``)."""
    objectives = engine.objectives
    # Equal raw weights to start; only their ratios matter, and the normalised λ is shown below them.
    c["sliders"] = [gr.Slider(0, 1, value=0.5, step=0.05, label=f"weight: {k}", elem_id=f"weight-{k}")
                    for k in objectives]
    with gr.Row():
        buttons = {name: (gr.Button(name, size="sm", elem_id=f"preset-{name.split()[0]}", min_width=0), weights)
                   for name, weights in presets(objectives).items()}
    c["lambda"] = gr.Markdown(actions.normalise(*[0.5] * len(objectives)), elem_id="lambda")
    for button, weights in buttons.values():
        button.click(functools.partial(list, weights), outputs=c["sliders"], api_visibility="private",
                     queue=False, show_progress="hidden")
    c["methods"] = gr.CheckboxGroup(engine.methods, value=engine.methods, label="Methods", elem_id="methods")
    c["copy"] = gr.Button("Copy link", size="sm", elem_id="copy-link", variant="secondary")
    if engine.examples:
        with gr.Accordion("Example prompts", open=False):
            gr.Examples(examples=[[p] for p in engine.examples], inputs=[c["prompt"]], label=None)
    with gr.Accordion("Decoding settings", open=False):
        _decoding_controls(engine, c)


def _decoding_controls(engine: Engine, c: dict) -> None:
    """β, top-k, temperature, length, seed and search: they apply to every method (into ``c``)."""
    c["beta"] = gr.Slider(*BETA_RANGE, value=engine.default_beta, step=0.1,
                          label="β (MAVIS tilt strength)",
                          info="how hard MAVIS pushes towards the weighted objectives; 0 = the base model")
    c["top_k"] = gr.Slider(*TOP_K_RANGE, value=DecodeConfig.default("top_k"), step=1, label="top-k",
                           info="every method samples from its k most likely next tokens")
    c["temperature"] = gr.Slider(*TEMPERATURE_RANGE, value=DecodeConfig.default("temperature"), step=0.05,
                                 label="temperature", info="below 1: safer, more repetitive; above 1: wilder")
    c["max_new"] = gr.Slider(1, engine.max_new_tokens, value=min(DecodeConfig.default("max_new_tokens"),
                                                                 engine.max_new_tokens),
                             step=1, label="max new tokens", info="reply length limit")
    with gr.Row(equal_height=True):
        c["seed"] = gr.Number(0, precision=0, minimum=SEED_RANGE[0], maximum=SEED_RANGE[1], label="seed",
                              info="same seed + prompt + settings = the same replies", elem_id="seed",
                              min_width=120)
        c["new_seed"] = gr.Checkbox(True, label="new seed each time", elem_id="new-seed", min_width=120,
                                    info="untick to replay the seed shown on a reply")
    c["search"] = gr.Radio(SEARCH_CHOICES, value=SEARCH_DEFAULTS[0], label="search (every ticked method)",
                           elem_id="search",
                           info="best-of-N keeps the best of N samples by λ-weighted reward; beam search "
                                "keeps B beams ranked by log-prob (+ β·λ·values for MAVIS)")
    c["num_candidates"] = gr.Slider(*CANDIDATES_RANGE, value=SEARCH_DEFAULTS[1], step=1,
                                    label="N (best-of-N samples)", elem_id="num-candidates")
    c["num_beams"] = gr.Slider(*BEAMS_RANGE, value=SEARCH_DEFAULTS[2], step=1, label="B (beams)",
                               elem_id="num-beams")


OBJECTIVE_INFO = {
    "helpful": "reward: does the reply do what was asked? A refusal scores low (a ranker's logit, about −5 … +5)",
    "harmless": "reward: does the reply refuse or redirect a harmful request, and insult no one? (a gated ranker's "
                "score; on a harmless request refusing earns nothing)",
    "humor": "reward: log-odds that the reply is a joke (about −7 … +5)",
}
PROFANITY_INFO = "reward: log-odds that the reply is not offensive (about −7 … +7)"  # the tiny stack's harmless
KL_NOTE = ("**KL**: Σ log π − log π_ref over the reply, how far a method moved from the base model (nats; even the "
           "base shows some: the cost of sampling from its top-k only).")


def _replies_and_chart(engine: Engine, actions: Replies) -> dict:
    """The right column: one streaming column per method; then the per-token view, the Pareto chart."""
    # partial: the replies while they stream (the per-token view shows them if Stop is pressed); last_seed: the
    # seed of the replies shown, for the replay button.
    c = {"texts": [], "stats": [], "last_seed": gr.State(None), "partial": gr.State(None)}
    with gr.Column(elem_id="gen-replies"):
        with gr.Row(equal_height=True, elem_id="reply-row"):  # a grid of equal columns (see static/style.css)
            for m in engine.methods:
                with gr.Column(min_width=180, elem_id=f"col-{m}"):
                    c["texts"].append(gr.Textbox(label=METHOD_NAMES.get(m, m), lines=7, max_lines=14,
                                                 interactive=False, elem_id=f"reply-{m}", elem_classes="reply",
                                                 autoscroll=False))
                    c["stats"].append(gr.Markdown("", elem_id=f"stats-{m}"))
        with gr.Row(equal_height=False, elem_id="under-replies"):
            # One click sets the seed of the replies shown, unticks "new seed each time" and generates again.
            c["replay"] = gr.Button("Replay", size="sm", elem_id="replay", visible=False, scale=0, min_width=160)
            c["columns_note"] = gr.Markdown("", elem_id="columns-note")
    with gr.Column(elem_id="gen-chart"):
        _chart_controls(engine, actions, c)
    return c


def _chart_controls(engine: Engine, actions: Replies, c: dict) -> None:
    """Under the replies: the reward scales, the per-token view, the Pareto chart and its sweep (into ``c``)."""
    objectives = engine.objectives
    kinds = {o.name: o.reward.kind for o in engine.stack.spec.objectives}
    info = {k: PROFANITY_INFO if kinds.get(k) == "profanity" else OBJECTIVE_INFO.get(k) for k in objectives}
    scales = " · ".join(f"**{k}** {info[k]}" for k in objectives if info[k])
    gr.Markdown(f"{scales}  \n{KL_NOTE}" if scales else KL_NOTE, elem_id="kl-note")
    with gr.Accordion("Per-token view", open=True, elem_id="token-view"):
        c["explain"] = gr.HTML(explanation_html({}, objectives), elem_id="explain")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            # The sweep's check, its progress and its summary: right above the chart it fills.
            c["sweep_status"] = gr.Markdown("", elem_id="sweep-status")
            c["plot"] = gr.Plot(actions.figure([], objectives[0], objectives[-1]), label="Pareto chart",
                                elem_id="pareto")
            c["details"] = gr.Markdown("", elem_id="details")
        with gr.Column(scale=1, min_width=220):
            c["x"] = gr.Dropdown(objectives, value=objectives[0], label="x axis", elem_id="x-axis")
            c["y"] = gr.Dropdown(objectives, value=objectives[-1], label="y axis", elem_id="y-axis")
            c["z"] = gr.Dropdown([NO_Z, *objectives], value=NO_Z, label="z axis (3-D view)", elem_id="z-axis",
                                 visible=len(objectives) > 2)
            c["axes_notice"] = gr.Markdown("", elem_id="axes-notice")
            c["mode"] = gr.Radio(list(SWEEP_MODES), value=SWEEP_MODES[0], label="Sweep over", elem_id="sweep-mode",
                                 info="λ from y alone to x alone, or a simplex grid; the other settings stay as set")
            c["sweep_prompts"] = gr.Slider(SWEEP_PROMPTS_RANGE[0], min(SWEEP_PROMPTS_RANGE[1],
                                                                       1 + len(engine.examples)),
                                           value=1, step=1, label="prompts per λ point", elem_id="sweep-prompts",
                                           info="the typed one, then examples")
            c["sweep_seeds"] = gr.Slider(*SWEEP_SEEDS_RANGE, value=1, step=1, label="seeds per λ point",
                                         elem_id="sweep-seeds", info="a point: their mean ± standard error")
            c["sweep"] = gr.Button("Sweep λ grid", elem_id="sweep")
            c["clear"] = gr.Button("Clear chart", variant="secondary", elem_id="clear")
            c["sample"] = gr.Dropdown([], value=None, label="Show sample (or click a point)",
                                      elem_id="sample")
            # Filled by PAGE_JS when a chart point is clicked; in the page, but never shown.
            c["point"] = gr.Textbox("", visible="hidden", elem_id="point-pick", label="clicked point")




def generate_tab(replies: Replies, sweep: Sweep, demo: gr.Blocks) -> None:
    """Lay out the Generate tab and wire its events."""
    engine = replies.engine
    with gr.Row(equal_height=False, elem_id="gen-row"):
        with gr.Column(scale=1, min_width=280, elem_id="gen-side"):
            c = _controls(engine, replies)
        with gr.Column(scale=3, elem_id="gen-main"):
            c |= _replies_and_chart(engine, replies)
    c["history"] = gr.State([])
    c["settings"] = [c["prompt"], c["beta"], c["top_k"], c["temperature"], c["max_new"], c["seed"], c["methods"]]
    c["search_inputs"] = [c["search"], c["num_candidates"], c["num_beams"]]  # after the sliders: optional for API
    c["axes"] = [c["x"], c["y"], c["z"]]
    gr.on([s.change for s in c["sliders"]], **listen(replies.normalise, c["sliders"], "normalise"),
          outputs=c["lambda"], api_name="normalise", show_progress="hidden", queue=False)
    generating = _wire_generate(replies, c)
    _wire_chart(replies, c)
    _wire_share_link(replies, c, demo)
    sweeping = _wire_sweep(sweep, c)
    # One Stop for whatever this tab is running: the generation (with its search) and the sweep.
    c["stop"].click(replies.stopped, inputs=[c["sweep_status"], c["explain"], c["partial"], *c["stats"]],
                    outputs=[c["sweep_status"], c["explain"], *c["stats"]], cancels=[generating, sweeping], **QUIET)


def _wire_generate(replies: Replies, c: dict):
    """Generate: a fresh seed (when ticked), the browser's check with its notice line, then the stream."""
    # With "new seed each time" ticked, a fresh seed goes into the seed box first, where the check and generate
    # read it (API callers pass their own seed to /generate).
    c["replay"].click(replay_seed, inputs=c["last_seed"], outputs=[c["seed"], c["new_seed"]], **QUIET).then(
        None, js=static("replay.js"), api_visibility="private", queue=False)
    rolled = gr.on([c["go"].click, c["prompt"].submit], new_seed, inputs=c["new_seed"], outputs=c["seed"],
                   api_visibility="private", show_progress="hidden", queue=False, preprocess=False)
    checks = [*c["settings"], *c["axes"], *c["sliders"], *c["search_inputs"]]  # generate's inputs, less the history
    rolled.then(**listen(replies.notice, checks, "notice"), outputs=c["notice"], **QUIET)
    # The checks go through the queue (gradio 6 shows no error toast for queue=False events) without a limit.
    return rolled.success(**listen(replies.check, checks, "check"),
                          api_visibility="private", show_progress="hidden", concurrency_limit=None).success(
        **listen(replies.generate, [*c["settings"], *c["axes"], c["history"], *c["sliders"], *c["search_inputs"]],
                 "generate"),
        outputs=[*c["texts"], *c["stats"], c["explain"], c["plot"], c["history"], c["sample"], c["columns_note"],
                 c["replay"], c["last_seed"], c["partial"]], api_name="generate", **MODEL_WORK)


def _wire_chart(replies: Replies, c: dict) -> None:
    """Axes (two the same are refused in the line under them; the chart stays), clear, and picking a sample."""
    axes, changed, history = c["axes"], [c["x"].change, c["y"].change, c["z"].change], c["history"]
    gr.on(changed, **listen(replies.axes_notice, axes, "axes_notice"), outputs=c["axes_notice"], **QUIET)
    gr.on(changed, **listen(replies.check_axes, axes, "check_axes"), api_visibility="private",
          show_progress="hidden", concurrency_limit=None).success(
        **listen(replies.redraw, [*axes, history], "redraw"), outputs=c["plot"], api_name="redraw")
    c["clear"].click(**listen(replies.clear, axes, "clear"),
                     outputs=[c["plot"], history, c["sample"], c["details"]], api_name="clear")
    c["sample"].change(replies.show_sample, inputs=[c["sample"], history], outputs=c["details"],
                       api_name="show_sample", preprocess=False)
    c["point"].change(pick_point, inputs=[c["point"], history], outputs=c["sample"], preprocess=False,
                      **QUIET)


def _wire_share_link(replies: Replies, c: dict, demo: gr.Blocks) -> None:
    """The share link: the query string follows these controls (in share_keys order) and sets them on load."""
    shared = [c["prompt"], *c["sliders"], c["beta"], c["top_k"], c["temperature"], c["max_new"], c["seed"],
              c["methods"], *c["search_inputs"]]
    follow = {"fn": None, "inputs": shared, "js": share_js(share_keys(replies.engine.objectives)), **QUIET}
    gr.on([s.change for s in shared], **follow)
    # After the restore, the address bar is rewritten once: clipped values and dropped junk then show there too.
    demo.load(replies.restore, outputs=[*shared, c["new_seed"]], api_visibility="private",
              show_progress="hidden").then(**follow)
    c["copy"].click(None, js=COPY_JS, api_visibility="private", queue=False)


def _wire_sweep(sweep: Sweep, c: dict):
    """The sweep: its check writes what will run (or what is wrong) beside the chart; the sweep then streams its
    progress there and its points into the chart, which stays in view (no progress overlay on it)."""
    per_point = [c["sweep_prompts"], c["sweep_seeds"]]  # last: optional for API callers (guard.API_OPTIONAL)
    checks = [*c["settings"], c["mode"], *c["axes"], *c["search_inputs"], *per_point]
    c["sweep"].click(**listen(sweep.notice, checks, "sweep_notice"), outputs=c["sweep_status"], **QUIET)
    return c["sweep"].click(**listen(sweep.check, checks, "check_sweep"), api_visibility="private",
                            concurrency_limit=None, show_progress="hidden").success(
        **listen(sweep.sweep, [*c["settings"], c["mode"], *c["axes"], c["history"], *c["search_inputs"], *per_point],
                 "sweep"),
        outputs=[c["plot"], c["history"], c["sample"], c["sweep_status"]], api_name="sweep", show_progress="minimal",
        show_progress_on=[c["sweep_status"]], **MODEL_WORK)
