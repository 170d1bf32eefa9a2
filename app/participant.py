"""The participant's view of a study: a link ``?study=NAME&PARAM=ID`` (PARAM is the study file's
``participant_param``; ``pid`` works too) shows that study only: its title and instructions, then the
participant's blinded trials one after another with their progress, then the completion code. Trials are served
from the study's pool by `mavis_core.study.StudySessions` (no model runs here), or, for a study file that says
``serve = "live"``, decoded with the app's stack as each is first shown; a reload resumes, a finished participant
sees their code again at once. Without ``study`` in the link the page is the explorer, as it always was.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import gradio as gr

from mavis_core.study import SLOTS, Completion, ShownTrial, StudySessions, check_pid, study_path

from .api import LOG, QUIET, address, shown_in_place, user_errors
from .context import Context

STARTS_PER_ADDRESS = (60, 600.0)  # study starts (and resumes) per client address per 10 min: no script enrols
# pids by the hundred to skew the balance (a lab behind one address may need it raised)
MAX_OBJECTIVES = 4  # rating rows laid out per reply; a study rating more objectives is refused in plain words
VOTE_CHOICES = [("A is better", "A"), ("B is better", "B"), ("Both equally good", "tie"),  # arena.VOTES
                ("Both bad", "both bad")]
TO_TOP = ("() => { if (!document.querySelector('#participant-notice').innerText.trim()) "
          "document.querySelector('#participant').scrollIntoView(); }")  # the next trial starts at its top
# Run in the browser as the page loads: a study link never shows the explorer (its methods' names), not even while
# the server's answer, which swaps the views, is on its way.
HIDE_EXPLORER = ("() => { const q = new URLSearchParams(window.location.search); if (q.has('study') || "
                 "q.has('researcher')) { document.querySelector('#explorer').style.display = 'none'; "
                 "document.title = 'Study'; } }")  # the tab's title too: "MAVIS demo" is no participant's business
# Every participant action shares one group of its own, never waiting behind decoding: a pool trial is milliseconds
# of SQLite, which takes one writer at a time, so a few workers keep it busy and more would only wait on its lock.
SERVED = {"concurrency_id": "study_pool", "concurrency_limit": 4}
# A live study's wait, in plain words (an emoji showed as a box where the browser lacks the font)
WRITING = "The assistants are writing the replies; this takes a few seconds…"
BROKEN_LINK = ("⚠️ **This study link does not work**: {reason}.\n\nPlease check the link you were given, or write to "
               "the researcher who sent it.")


class Participant:
    """Handlers of the participant view; per-user data (study name, pid, the trial shown) lives in gr.State.

    Args:
        ctx: the shared context (its study database holds the pools and the answers).
        studies: the folder of study files that ``?study=NAME`` names.
    """

    def __init__(self, ctx: Context, studies: str | Path) -> None:
        self.ctx, self.studies = ctx, Path(studies)
        self._open: dict[str, tuple[float, StudySessions]] = {}  # name -> (file mtime, sessions)
        self._lock = threading.Lock()

    def sessions(self, name: object) -> StudySessions:
        """The sessions of study ``name``, opened once per version of its file. A ValueError in words a participant
        can read (the technical reason, which names server paths, goes to the log)."""
        path = study_path(name, self.studies)
        stamp = path.stat().st_mtime
        with self._lock:
            cached = self._open.get(path.stem)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            try:
                sessions = StudySessions(path, self.ctx.study.path, stack=getattr(self.ctx.engine, "stack", None))
            except ValueError as err:
                LOG.warning("study %s cannot take participants: %s", path.stem, err)
                raise ValueError(f"study {path.stem!r} is not open for participants yet") from None
            if len(sessions.spec.task.objectives) > MAX_OBJECTIVES:
                raise ValueError(f"study {path.stem!r} rates {len(sessions.spec.task.objectives)} objectives; this "
                                 f"page shows at most {MAX_OBJECTIVES}")
            self._open[path.stem] = (stamp, sessions)
            return sessions

    def start(self, study: str, pid: str, request: gr.Request | None = None) -> dict:
        """Start or resume ``pid`` in ``study``: their current trial, or their completion (`as_json`)."""
        with user_errors("participant_start"):
            sessions, pid = self.sessions(study), check_pid(pid)
            key = f"study start {address(request)}"
            wait = self.ctx.trials.wait(key, STARTS_PER_ADDRESS)
            if wait:
                raise ValueError(f"{STARTS_PER_ADDRESS[0]} study starts came from your address in the last "
                                 f"{STARTS_PER_ADDRESS[1] / 60:.0f} minutes, the most allowed; try again in "
                                 f"{math.ceil(wait / 60)} min.")
            self.ctx.trials.add(key)
            return as_json(sessions.start(pid))

    def submit(self, study: str, pid: str, position: int, answer: dict) -> dict:
        """Store ``pid``'s ``answer`` to trial ``position`` ({"ratings": {slot: {objective: 1…}}, "favourite": slot}
        or {"vote": ...}, as the trial's ``asks`` say); returns what comes next (`as_json`)."""
        with user_errors("participant_submit"):
            if isinstance(position, float) and position.is_integer():
                position = int(position)  # JSON clients may send 3.0
            return as_json(self.sessions(study).submit(check_pid(pid), position, answer))

    def route(self, request: gr.Request) -> list:
        """On page load: with ``?study=`` in the link, the study's first screen in place of the explorer (or what
        is wrong with the link); a participant who already finished sees their completion code at once, one who
        left midway a Continue button; with ``?researcher``, the researcher's view; otherwise nothing changes.
        Outputs in `route_outputs` order."""
        params = dict(getattr(request, "query_params", None) or {})
        if "researcher" in params:
            return [gr.update(visible=False), gr.update(visible=False), gr.update(visible=True),
                    params["researcher"][:64], *[gr.skip()] * 7]
        if "study" not in params:
            return [gr.skip()] * 11
        done, start = None, gr.update(visible=False)
        try:
            sessions = self.sessions(params["study"])
            param = sessions.spec.participant_param
            pid = params.get(param) or params.get("pid")
            if not pid:
                raise ValueError(f"it carries no participant id (its {param}=… part is missing)")
            state = {"study": sessions.spec.name, "pid": check_pid(pid)}
            title, intro = f"## {sessions.spec.title}", sessions.spec.instructions
            where = sessions.peek(state["pid"])  # read only: opening the link enrols nobody
            if isinstance(where, Completion):
                done = as_json(where)
            else:
                label = "Start" if where is None else f"Continue (trial {where} of {sessions.spec.total_trials})"
                start = gr.update(visible=True, value=label)
        except ValueError as err:
            state, title, intro = None, "", BROKEN_LINK.format(reason=err)
        return [gr.update(visible=False), gr.update(visible=True), gr.update(visible=False), gr.skip(), state, title,
                "" if done else intro, start, intro if state else "", gr.update(visible=done is not None),
                completion_text(done) if done else ""]

    def waiting(self, state: dict | None) -> str:
        """The notice while Start or Submit runs: for a study that decodes live, that the replies are being
        written (seconds); for a pool study nothing (the next trial comes at once)."""
        try:
            live = bool(state) and self.sessions(state["study"]).spec.serve == "live"
        except ValueError:
            live = False
        return WRITING if live else gr.skip()

    def open_trials(self, state: dict | None, request: gr.Request | None = None) -> list:
        """Start pressed: the participant's current trial (a return resumes), or their completion."""
        if not state:
            raise gr.Error("Open the study from the link you were given.", print_exception=False)
        return trial_view(state, self.start(state["study"], state["pid"], request))

    def answer(self, state: dict | None, favourite: str | None, vote: str | None, *ratings) -> list:
        """Submit pressed: the answer from the inputs shown, stored; the next trial or the completion."""
        if not state or "position" not in state:
            raise gr.Error("Open the study from the link you were given.", print_exception=False)
        with user_errors("participant_answer"):
            answer = collect_answer(state, favourite, vote, list(ratings))
        return trial_view(state, self.submit(state["study"], state["pid"], state["position"], answer))


def as_json(shown: ShownTrial | Completion) -> dict:
    """What the participant may see of a trial or completion, as JSON: never the methods, weights or pid."""
    if isinstance(shown, Completion):
        return {"study": shown.study, "progress": shown.progress, "done": True, "completion_code": shown.code,
                "redirect_url": shown.redirect_url}
    return {"study": shown.study, "progress": shown.progress, "done": False, "position": shown.position,
            "total": shown.total, "prompt": shown.prompt, "replies": dict(zip(shown.slots, shown.texts, strict=True)),
            "asks": list(shown.asks), "objectives": list(shown.objectives), "scale": list(shown.scale)}


def collect_answer(state: dict, favourite: str | None, vote: str | None, ratings: list) -> dict:
    """The answer to the trial in ``state`` from the page's inputs (``ratings``: MAX_OBJECTIVES per slot, slot
    by slot); a ValueError listing what is still missing."""
    answer, missing = {}, []
    if "ratings" in state["asks"]:
        answer["ratings"] = {s: {o: ratings[i * MAX_OBJECTIVES + j] for j, o in enumerate(state["objectives"])}
                             for i, s in enumerate(state["slots"])}
        missing += [f"{o} of reply {s}" for s, per in answer["ratings"].items() for o, v in per.items() if v is None]
    if "favourite" in state["asks"]:
        answer["favourite"] = favourite
        missing += ["your favourite reply"] * (favourite is None)
    if "vote" in state["asks"]:
        answer["vote"] = vote
        missing += ["which reply is better"] * (vote is None)
    if missing:
        more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        raise ValueError(f"Please answer every question first; still missing: {', '.join(missing[:4])}{more}.")
    return answer


def completion_text(done: dict) -> str:
    """The last screen: the completion code to copy, and the way back to the recruiting site."""
    lines = [f"## Thank you!\n\nYou have answered all {done['progress'].split(' of ')[-1]} trials."]
    if done["completion_code"]:
        lines.append(f"Your completion code: <code id='completion-code'>{done['completion_code']}</code>")
    if done["redirect_url"]:
        lines.append(f"[Return to the study site to finish]({done['redirect_url']})")
    if not done["completion_code"] and not done["redirect_url"]:
        lines.append("You may close this page.")
    return "\n\n".join(lines)


def trial_view(state: dict, shown: dict) -> list:
    """The page's outputs (in `view_outputs` order) showing ``shown`` (`as_json`): a trial's prompt, its replies
    under their letters and the inputs it asks for, all blank; or the completion screen."""
    if shown["done"]:
        hidden = [gr.update(visible=False)] * (len(SLOTS) * (2 + MAX_OBJECTIVES) + 2)
        return [{**state, "position": None}, gr.update(visible=False), gr.update(visible=False),
                gr.update(visible=True), "", "", *hidden, completion_text(shown)]
    slots, objectives, rate = list(shown["replies"]), shown["objectives"], "ratings" in shown["asks"]
    scale = [(label, i + 1) for i, label in enumerate(shown["scale"])]
    columns = [gr.update(visible=s in slots) for s in SLOTS]
    replies = [gr.update(value=shown["replies"].get(s, ""), visible=s in slots) for s in SLOTS]
    radios = [gr.update(visible=rate and s in slots and j < len(objectives), value=None, choices=scale,
                        label=objectives[j] if j < len(objectives) else "")
              for s in SLOTS for j in range(MAX_OBJECTIVES)]
    favourite = gr.update(visible="favourite" in shown["asks"], choices=slots, value=None)
    vote = gr.update(visible="vote" in shown["asks"], value=None)
    header = f"**Trial {shown['progress']}**: {_task_line(shown['asks'])}"
    state = {**state, "position": shown["position"], "slots": slots, "objectives": objectives, "asks": shown["asks"]}
    return [state, gr.update(visible=False), gr.update(visible=True), gr.update(visible=False), header,
            shown["prompt"], *columns, *replies, *radios, favourite, vote, ""]


def _task_line(asks: list[str]) -> str:
    if "vote" in asks:
        return "read the message and the two replies, then say which reply is better."
    parts = ["rate every reply on each question"] * ("ratings" in asks) + ["pick your favourite"] * (
        "favourite" in asks)
    return f"read the message and the replies, then {' and '.join(parts)}."


def _layout() -> dict:
    """The participant column (hidden until a study link opens it): the first screen, the trial, the end."""
    c = {"state": gr.State(None), "columns": [], "replies": [], "radios": []}
    with gr.Column(visible=False, elem_id="participant") as c["view"]:
        with gr.Column(elem_id="participant-intro") as c["intro"]:
            c["title"] = gr.Markdown("", elem_id="participant-title")
            c["instructions"] = gr.Markdown("", elem_id="participant-instructions")
            c["start"] = gr.Button("Start", variant="primary", visible=False, elem_id="participant-start")
        with gr.Column(visible=False, elem_id="participant-trial") as c["trial"]:
            c["header"] = gr.Markdown("", elem_id="participant-progress")
            with gr.Accordion("Instructions", open=False):
                c["reminder"] = gr.Markdown("", elem_id="participant-reminder")
            c["prompt"] = gr.Textbox(label="The message sent to the assistant", interactive=False, lines=2,
                                     elem_id="participant-prompt")
            with gr.Row(equal_height=False, elem_id="participant-replies"):
                for slot in SLOTS:
                    with gr.Column(min_width=240, visible=False, elem_classes="participant-slot") as column:
                        c["columns"].append(column)
                        c["replies"].append(gr.Textbox(label=f"Reply {slot}", lines=6, interactive=False,
                                                       elem_id=f"participant-reply-{slot}"))
                        c["radios"] += [gr.Radio([], label="", visible=False, elem_id=f"participant-rate-{slot}-{j}",
                                                 elem_classes="participant-rating") for j in range(MAX_OBJECTIVES)]
            c["favourite"] = gr.Radio([], label="Your favourite reply", visible=False, elem_id="participant-favourite")
            c["vote"] = gr.Radio(VOTE_CHOICES, label="Which reply is better?", visible=False,
                                 elem_id="participant-vote")
            c["submit"] = gr.Button("Submit and continue", variant="primary", elem_id="participant-submit")
        with gr.Column(visible=False, elem_id="participant-done") as c["done"]:
            c["completion"] = gr.Markdown("", elem_id="participant-completion")
        c["notice"] = gr.Markdown("", elem_id="participant-notice", elem_classes="notice")  # what Start/Submit refused
    return c


def view_outputs(c: dict) -> list:
    """The components `trial_view` fills, in its order."""
    return [c["state"], c["intro"], c["trial"], c["done"], c["header"], c["prompt"], *c["columns"], *c["replies"],
            *c["radios"], c["favourite"], c["vote"], c["completion"]]


def route_outputs(c: dict, explorer: gr.Column, researcher: tuple[gr.Column, gr.Textbox]) -> list:
    """The components `Participant.route` fills on page load, in its order."""
    return [explorer, c["view"], researcher[0], researcher[1], c["state"], c["title"], c["instructions"], c["start"],
            c["reminder"], c["done"], c["completion"]]


def participant_view(handlers: Participant, demo: gr.Blocks, explorer: gr.Column,
                     researcher: tuple[gr.Column, gr.Textbox]) -> None:
    """Lay out the participant view and wire it: the page load picks the view the link asks for; Start and
    Submit are the page's; ``participant_start`` and ``participant_submit`` are the API's (JSON in, JSON out)."""
    c = _layout()
    demo.load(None, js=HIDE_EXPLORER, **QUIET)
    demo.load(handlers.route, outputs=route_outputs(c, explorer, researcher), **QUIET)
    outputs = view_outputs(c)
    # A live study's participant reads that the replies are on their way (the answer replaces the line); a pool's
    # sees its next trial at once and no line.
    c["start"].click(handlers.waiting, inputs=c["state"], outputs=c["notice"], **QUIET).then(
        shown_in_place(handlers.open_trials, len(outputs)), inputs=c["state"], outputs=[*outputs, c["notice"]],
        api_visibility="private", show_progress="hidden", **SERVED)
    c["submit"].click(handlers.waiting, inputs=c["state"], outputs=c["notice"], **QUIET).then(
        shown_in_place(handlers.answer, len(outputs)), inputs=[c["state"], c["favourite"], c["vote"], *c["radios"]],
        outputs=[*outputs, c["notice"]], preprocess=False, api_visibility="private", show_progress="hidden",
        **SERVED).then(None, js=TO_TOP, **QUIET)
    with gr.Row(visible=False):  # the API's inputs: the page never shows them
        api = [gr.Textbox(label="study"), gr.Textbox(label="pid"), gr.Number(label="position", precision=0),
               gr.JSON(label="answer")]
        out = gr.JSON(label="shown")
    gr.Button(visible=False).click(handlers.start, inputs=api[:2], outputs=out, api_name="participant_start",
                                   preprocess=False, **SERVED)
    gr.Button(visible=False).click(handlers.submit, inputs=api, outputs=out, api_name="participant_submit",
                                   preprocess=False, **SERVED)
