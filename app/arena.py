"""The arena tab: two methods drawn at random reply blind, a rater votes; the admin sees a Bradley–Terry
leaderboard and exports the votes. Layout, wiring and thin handlers (drawing a pair: `app.trials`)."""

from __future__ import annotations

import functools
import random

import gradio as gr

from mavis_core.arena import VOTES

from . import text
from .admin import ADMIN_TOKEN_ENV
from .api import QUIET, cleared_once_saved, listen, spent, user_errors, wire_in_place
from .guard import MODEL_WORK
from .trials import TrialHandlers, count_trial, decode_trial, draw_trial

WAITING = "Press **New pair** to see two replies."
WORDS = {"A": "A is better", "B": "B is better", "tie": "Tie: equally good", "both bad": "Both are bad"}


class Arena(TrialHandlers):
    """Handlers of the arena tab."""

    def new(self, request: gr.Request, participant: str, prompt: str,
            progress=gr.Progress()):  # noqa: B008 - gradio's way of asking for a progress bar
        """A blinded pair: two methods drawn at random reply to one prompt under random weights, as A and B."""
        with user_errors("arena_new"):
            if len(self.engine.methods) < 2:
                raise ValueError(f"The arena compares two methods; this stack has only {self.engine.methods}.")
            progress(0, desc="Generating the replies…")
            rng = random.SystemRandom()
            prompt, lam, raw, settings = draw_trial(self.ctx, prompt, rng)
            count_trial(self.ctx, request)
            pair = rng.sample(self.engine.methods, 2)  # add_arena_trial shuffles their slots again
            replies = decode_trial(self.ctx, request, prompt, pair, settings, progress, "arena_new")
            trial = self.ctx.study.add_arena_trial((participant or "").strip()[:100] or "anonymous", prompt, lam,
                                                   settings.seed, raw, replies, rng=rng)
            task = "Vote for the reply that better serves this weighted mix."
            return [trial.id, text.trial_header(prompt, lam, task), *trial.texts, None]

    def vote(self, trial_id: str | None, vote: str | None):
        """Save the vote on the pair shown (A, B, tie or both bad), once: the pair is then gone from the session."""
        with user_errors("arena_vote"):
            if not trial_id:
                raise ValueError("No pair to vote on yet: press 'New pair' first.")
            if not vote:
                raise ValueError("vote: pick one of A, B, tie or both bad first.")
            self.ctx.study.add_vote(trial_id, vote)
            return None, "Thank you — vote saved. Press **New pair** for the next one."

    def leaderboard(self, request: gr.Request, token: str):
        """Per method: Bradley–Terry strength, its 95 % bootstrap interval and vote counts (admin only)."""
        return self.ctx.admin.call("arena_leaderboard", request, token, self.ctx.study.arena_leaderboard)

    def export_csv(self, request: gr.Request, token: str) -> str:
        """Every arena vote with its trial as CSV."""
        return self.ctx.admin.export("arena_export_csv", request, token, self.ctx.study.export_arena_csv,
                                     "arena_votes.csv")

    def export_jsonl(self, request: gr.Request, token: str) -> str:
        """Preference pairs (prompt, chosen, rejected, and the weights they were judged under) as JSON Lines."""
        return self.ctx.admin.export("arena_export_jsonl", request, token, self.ctx.study.export_preferences,
                                     "arena_preferences.jsonl")


def arena_tab(handlers: Arena) -> None:
    """Lay out the arena tab and wire its events."""
    gr.Markdown("Two assistants, drawn at random, reply to the same message; you are not told which is which. "
                "Vote for the reply that better serves the trial's weights (how much each objective counts), call "
                "it a tie, or say both are bad.")
    c = {"trial_id": gr.State(None)}
    with gr.Row():
        c["participant"] = gr.Textbox(label="Participant id (optional)", max_length=100, elem_id="arena-participant")
        c["prompt"] = gr.Textbox(label="Prompt (leave empty for a random example)", elem_id="arena-prompt")
        c["new"] = gr.Button("New pair", variant="primary", elem_id="arena-new")
    c["header"] = gr.Markdown(WAITING, elem_id="arena-header")
    with gr.Row(equal_height=True):
        c["texts"] = [gr.Textbox(label=f"Reply {slot}", lines=8, interactive=False, elem_id=f"arena-{slot}",
                                 min_width=300) for slot in ("A", "B")]  # min_width: one above the other on a phone
    c["vote"] = gr.Radio([(WORDS[v], v) for v in VOTES], label="Your vote", elem_id="arena-vote")
    c["submit"] = gr.Button("Submit vote", elem_id="arena-submit")
    c["submit_notice"] = gr.Markdown("", elem_id="arena-notice", elem_classes="notice")
    c["status"] = gr.Markdown("", elem_id="arena-status")
    c |= _admin_layout()
    _wire(handlers, c)


def _admin_layout() -> dict:
    c = {}
    with gr.Accordion("Leaderboard (admin)", open=False, elem_id="arena-admin"):
        c["token"] = gr.Textbox(label=f"Admin token for the leaderboard ({ADMIN_TOKEN_ENV})", type="password",
                                elem_id="arena-token")
        with gr.Row():
            c["show"] = gr.Button("Show leaderboard", elem_id="arena-show")
            c["export_csv"] = gr.Button("Export votes CSV", elem_id="arena-export-csv")
            c["export_jsonl"] = gr.Button("Export preference JSONL", elem_id="arena-export-jsonl")
        c["admin_notice"] = gr.Markdown("", elem_id="arena-admin-notice", elem_classes="notice")
        gr.Markdown("**strength**: Bradley–Terry, P(i beats j) = s_i / (s_i + s_j), summing to 1 (a tie is half a "
                    "win to each; *both bad* is counted, not fitted) · **low–high**: 95 % interval over 200 "
                    "bootstrap resamples of the votes · **votes**: every vote the method was in.")
        c["board"] = gr.Dataframe(label="Leaderboard per method", interactive=False, elem_id="arena-board")
        with gr.Row():
            c["csv"] = gr.File(label="Votes CSV (a single-use link: export again to download again)",
                               elem_id="arena-csv", min_width=300)
            c["jsonl"] = gr.File(label="Preference pairs, JSONL for DPO (prompt, chosen, rejected, weights; "
                                       "single-use link)",
                                 elem_id="arena-jsonl", min_width=300)
    return c


def _wire(handlers: Arena, c: dict) -> None:
    asked = [c["participant"], c["prompt"]]
    c["new"].click(lambda: ("", ""), outputs=[c["status"], c["submit_notice"]], **QUIET)
    c["new"].click(**listen(handlers.check, asked, "check_study"), api_visibility="private", show_progress="hidden",
                   concurrency_limit=None).success(
        **listen(handlers.new, asked, "arena_new"), outputs=[c["trial_id"], c["header"], *c["texts"], c["vote"]],
        api_name="arena_new", show_progress_on=c["header"], **MODEL_WORK)
    wire_in_place(c["submit"], handlers.vote, [c["trial_id"], c["vote"]], [c["trial_id"], c["status"]],
                  c["submit_notice"], "arena_vote").then(
        functools.partial(cleared_once_saved, [WAITING, "", "", None]), inputs=c["trial_id"],
        outputs=[c["header"], *c["texts"], c["vote"]], **QUIET)
    notice = c["admin_notice"]
    wire_in_place(c["show"], handlers.leaderboard, [c["token"]], [c["board"]], notice, "arena_leaderboard")
    wire_in_place(c["export_csv"], handlers.export_csv, [c["token"]], [c["csv"]], notice, "arena_export_csv")
    wire_in_place(c["export_jsonl"], handlers.export_jsonl, [c["token"]], [c["jsonl"]], notice, "arena_export_jsonl")
    for file in (c["csv"], c["jsonl"]):
        file.download(spent, outputs=[file, notice], **QUIET)
