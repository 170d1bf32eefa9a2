"""The user-study tab: its layout, its wiring, and its thin handlers (a trial is drawn and decoded by
`app.trials`, stored by `mavis_core.study`)."""

from __future__ import annotations

import functools
import random

import gradio as gr

from mavis_core.study import RATING_RANGE, SLOTS

from . import text
from .admin import ADMIN_TOKEN_ENV
from .api import QUIET, cleared_once_saved, listen, spent, user_errors, wire_in_place
from .guard import MODEL_WORK
from .trials import TrialHandlers, count_trial, decode_trial, draw_trial

WAITING = "Press **New trial** to see the replies."
TASK = ("Rate every reply on each objective by itself (1 = poor, 5 = excellent); pick as favourite the reply that "
        "best serves this weighted mix.")


class Study(TrialHandlers):
    """Handlers of the study tab."""

    def new(self, request: gr.Request, participant: str, prompt: str,
            progress=gr.Progress()):  # noqa: B008 - gradio's way of asking for a progress bar
        """A blinded trial: every method replies to one prompt under random weights, in a shuffled order."""
        with user_errors("study_new"):
            progress(0, desc="Generating the replies…")
            prompt, lam, raw, settings = draw_trial(self.ctx, prompt, random.SystemRandom())
            count_trial(self.ctx, request)
            replies = decode_trial(self.ctx, request, prompt, self.engine.methods, settings, progress, "study_new")
            trial = self.ctx.study.add_trial((participant or "").strip()[:100] or "anonymous", prompt, lam,
                                             settings.seed, raw, replies)
            blank = [None] * (len(trial.texts) * len(self.engine.objectives) + 1)
            return [trial.id, text.trial_header(prompt, lam, TASK), *trial.texts, *blank]

    def submit(self, trial_id: str | None, favourite: str | None, *ratings):
        """Save one trial's ratings (slot × objective, in the order shown) and favourite, at once."""
        with user_errors("study_submit"):
            if not trial_id:
                raise ValueError("No trial to rate yet: press 'New trial' first.")
            n = len(self.engine.objectives)
            per_slot = {s: dict(zip(self.engine.objectives, ratings[i * n:(i + 1) * n], strict=True))
                        for i, s in enumerate(SLOTS[:len(ratings) // n])}
            self.ctx.study.add_ratings(trial_id, per_slot, favourite or "")
            return None, "Thank you — saved. Press **New trial** for the next one."

    def results(self, request: gr.Request, token: str):
        return self.ctx.admin.call("study_results", request, token, self.ctx.study.results)

    def export(self, request: gr.Request, token: str) -> str:
        """The ratings CSV."""
        return self.ctx.admin.export("study_export", request, token, self.ctx.study.export_csv, "study_ratings.csv")


def study_tab(handlers: Study) -> None:
    """Lay out the study tab and wire its events."""
    gr.Markdown("Each trial shows the replies of several assistants to one message, in a random order, without "
                "saying which is which. Rate every reply on each objective by itself (1 = poor, 5 = excellent), "
                "then pick as favourite the reply that best serves the trial's weights (how much each objective "
                "counts).")
    c = _trial_layout(handlers.engine.methods, handlers.engine.objectives)
    c |= _admin_layout()
    _wire(handlers, c)


def _trial_layout(methods: list[str], objectives: list[str]) -> dict:
    """The trial's inputs, header, one column per slot (its reply and its ratings), favourite and submit."""
    c = {"texts": [], "ratings": [], "trial_id": gr.State(None)}
    with gr.Row():
        c["participant"] = gr.Textbox(label="Participant id (optional)", max_length=100, elem_id="participant")
        c["prompt"] = gr.Textbox(label="Prompt (leave empty for a random example)", elem_id="study-prompt")
        c["new"] = gr.Button("New trial", variant="primary", elem_id="study-new")
    c["header"] = gr.Markdown(WAITING, elem_id="study-header")
    slots = list(SLOTS[:len(methods)])
    with gr.Row(equal_height=False):
        for slot in slots:
            with gr.Column(min_width=200):
                c["texts"].append(gr.Textbox(label=f"Reply {slot}", lines=6, interactive=False,
                                             elem_id=f"study-reply-{slot}"))
                c["ratings"] += [gr.Radio(list(range(RATING_RANGE[0], RATING_RANGE[1] + 1)), label=f"{slot}: {k}",
                                          elem_id=f"rate-{slot}-{k}", elem_classes="rating") for k in objectives]
    c["favourite"] = gr.Radio(slots, label="Favourite reply", elem_id="favourite")
    c["submit"] = gr.Button("Submit ratings", elem_id="study-submit")
    c["submit_notice"] = gr.Markdown("", elem_id="study-notice", elem_classes="notice")  # what is missing
    c["status"] = gr.Markdown("", elem_id="study-status")
    return c


def _admin_layout() -> dict:
    c = {}
    with gr.Accordion("Results (admin)", open=False):
        gr.Markdown("A study run from a study file (`studies/NAME.toml`, participants arriving by link) has its "
                    "own researcher's view: [open it](?researcher=) and name the study.")
        c["token"] = gr.Textbox(label=f"Admin token ({ADMIN_TOKEN_ENV})", type="password")
        with gr.Row():
            c["show"] = gr.Button("Show per-method means")
            c["export"] = gr.Button("Export CSV")
        c["admin_notice"] = gr.Markdown("", elem_id="study-admin-notice", elem_classes="notice")
        c["results"] = gr.Dataframe(label="Per-method results", interactive=False)
        c["csv"] = gr.File(label="Ratings CSV (a single-use link: export again to download again)")
    return c


def _wire(handlers: Study, c: dict) -> None:
    texts, ratings, asked = c["texts"], c["ratings"], [c["participant"], c["prompt"]]
    c["new"].click(lambda: ("", ""), outputs=[c["status"], c["submit_notice"]], **QUIET)
    # One progress bar per trial, on the header: gradio would otherwise draw one on every output.
    c["new"].click(**listen(handlers.check, asked, "check_study"), api_visibility="private", show_progress="hidden",
                   concurrency_limit=None).success(
        **listen(handlers.new, asked, "study_new"), outputs=[c["trial_id"], c["header"], *texts, *ratings,
                                                             c["favourite"]],
        api_name="study_new", show_progress_on=c["header"], **MODEL_WORK)
    # A saved trial clears the form (replies, ratings, favourite), so nothing stale invites a second submit; a
    # refused one keeps it, with the reason under the button.
    blank = [WAITING, *[""] * len(texts), *[None] * (len(ratings) + 1)]
    wire_in_place(c["submit"], handlers.submit, [c["trial_id"], c["favourite"], *ratings],
                  [c["trial_id"], c["status"]], c["submit_notice"], "study_submit").then(
        functools.partial(cleared_once_saved, blank), inputs=c["trial_id"],
        outputs=[c["header"], *texts, *ratings, c["favourite"]], **QUIET)
    wire_in_place(c["show"], handlers.results, [c["token"]], [c["results"]], c["admin_notice"], "study_results")
    wire_in_place(c["export"], handlers.export, [c["token"]], [c["csv"]], c["admin_notice"], "study_export")
    c["csv"].download(spent, outputs=[c["csv"], c["admin_notice"]], **QUIET)
